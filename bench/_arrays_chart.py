"""The PNG chart of bench/arrays.py: per workload and size, NumPy's time over gpuport's (bars, log scale; above 1:
gpuport is faster), for gpuport's default runtime (auto) and pinned to the GPU.
    python _arrays_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    rows = doc["rows"]
    names = [f"{r['workload']}\n{r['size']:,}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(9, 0.75 * len(rows) + 3), 5.5), dpi=110)
    for j, (label, key) in enumerate((("gpuport auto", "gpuport_auto_ms"), ("gpuport webgpu (lavapipe)",
                                                                           "gpuport_webgpu_ms"))):
        xs = [i + (j - 0.5) * 0.4 for i in range(len(rows))]
        ax.bar(xs, [r["numpy_ms"] / r[key] for r in rows], 0.4, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("NumPy time / gpuport time (above 1: gpuport faster)")
    f = doc["fusion"]
    ax.set_title(f"gpuport.xp vs NumPy, same machine ({doc.get('when', '')}); 8 fused arithmetic functions on 1M "
                 f"elements: {f['arithmetic_over_one']:.2f}x one function's device time (with sin, sqrt and a "
                 f"division: {f['chain_over_one']:.2f}x)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
