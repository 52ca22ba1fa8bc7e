"""The PNG chart of bench/gpu.py: milliseconds per call (log scale) of every system, left MiniLM-L6's cases (gpuport
webgpu, cpu and auto; sentence-transformers on CUDA and the CPU), middle SmolLM2's decode tokens/s, right the array
namespace's workloads (NumPy, gpuport auto and webgpu, CuPy).   python _gpu_chart.py RESULTS.json OUT.png
(needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _speech_chart import bars, plain_ticks  # noqa: E402


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [4, 2, 6]})
    title = f"{doc['adapter'].get('device', '?')} ({doc['adapter'].get('backend_type', '?')}), {doc.get('cpus')} CPUs"
    minilm = doc.get("minilm", {}).get("cases", {})
    if minilm:
        cases = list(minilm)
        systems = list(next(iter(minilm.values()))["ms"])
        bars(axes[0], cases, [(s, {c: minilm[c]["ms"][s] for c in cases}) for s in systems],
             lambda v: float("nan") if v is None else v, lambda y: f"{y:.1f}", rotation=90)
        axes[0].set_xticklabels(cases, fontsize=8)
        axes[0].set_ylabel("ms per call (lower is better)")
        axes[0].set_title("MiniLM-L6 embeddings", fontsize=10)
        axes[0].legend(fontsize=7)
        plain_ticks(axes[0])
    llm = doc.get("llm", {}).get("results", {})
    if llm:
        names = list(llm) + (["transformers cuda"] if "cuda" in doc["llm"].get("transformers", {}) else [])
        rates = [llm[k]["decode_tokens_per_s"] for k in llm] + \
            ([doc["llm"]["transformers"]["cuda"]["decode_tokens_per_s"]] if len(names) > len(llm) else [])
        axes[1].bar(range(len(names)), rates, color="tab:green")
        for i, r in enumerate(rates):
            axes[1].annotate(f"{r:.0f}", (i, r), ha="center", va="bottom", fontsize=7)
        axes[1].set_yscale("log")
        axes[1].set_xticks(range(len(names)))
        axes[1].set_xticklabels(names, fontsize=7, rotation=30)
        axes[1].set_title("SmolLM2-135M decode, tokens/s (higher is better)", fontsize=10)
        plain_ticks(axes[1])
    rows = doc.get("arrays", {}).get("rows", [])
    if rows:
        groups = [f"{r['workload']}\n{r['size']:,}" for r in rows]
        keys = [k for k in ("numpy_ms", "gpuport_auto_ms", "gpuport_webgpu_ms", "cupy_ms") if any(k in r for r in rows)]
        bars(axes[2], groups, [(k[:-3], {g: r.get(k, float("nan")) for g, r in zip(groups, rows)}) for k in keys],
             lambda v: v, lambda y: f"{y:.2g}", rotation=90)
        axes[2].set_xticklabels(groups, fontsize=7)
        axes[2].set_title("gpuport.xp against NumPy and CuPy, ms per call", fontsize=10)
        axes[2].legend(fontsize=7)
        plain_ticks(axes[2])
    fig.suptitle(f"gpuport on a real GPU: {title}, {doc.get('when', '')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
