"""The PNG of bench/startup.py (run with the bench venv's python, which has matplotlib): per browser and
visit (cold, warm), gpuport's time to the first embedding as a bar stacked by stage, beside
transformers.js's bar.   python startup_chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = {"pyodide_ms": "Pyodide", "packages_ms": "NumPy + wheel", "open_ms": "open",
          "load_ms": "model load", "embed_ms": "first embedding"}


def main(results_path: str, out_path: str) -> int:
    results = json.load(open(results_path))["results"]
    groups = [(browser, state, results[browser][state]) for browser in ("chromium", "firefox") if browser in results
              for state in ("cold", "warm")]
    if not groups:
        print("no browser results to chart")
        return 1
    fig, ax = plt.subplots(figsize=(2.2 * len(groups) + 3, 5.5), dpi=110)
    for i, (_, _, r) in enumerate(groups):
        bottom = 0.0
        for j, (key, label) in enumerate(STAGES.items()):
            value = r["gpuport_stages_ms"][key] / 1e3
            ax.bar(i - 0.2, value, 0.38, bottom=bottom, color=f"C{j}", label=label if i == 0 else None)
            bottom += value
        # what the stages leave out (driver and page script between them) to the measured total
        rest = max(r["gpuport_ms"] / 1e3 - bottom, 0.0)
        ax.bar(i - 0.2, rest, 0.38, bottom=bottom, color="lightgray", label="other" if i == 0 else None)
        ax.bar(i + 0.2, r["transformers_js_ms"] / 1e3, 0.38, color="black", label="transformers.js" if i == 0 else None)
        ax.text(i, max(r["gpuport_ms"], r["transformers_js_ms"]) / 1e3 * 1.02,
                f"{r['gpuport_over_transformers_js']:.2f}x", ha="center", fontsize=9)
    ax.set_xticks(range(len(groups)), [f"{b}\n{s}" for b, s, _ in groups])
    ax.set_ylabel("seconds from navigation to the first embedding")
    ax.set_title("MiniLM, one sentence: gpuport (stacked by stage) beside transformers.js (wasm)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"chart: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
