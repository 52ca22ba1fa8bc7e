"""bench/generate.py's chart (run by the bench venv's Python, which has matplotlib): per place (native, each
browser), each system's median decode tokens/s and time to first token."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.load(open(sys.argv[1]))
places = [p for p, r in data["results"].items() if "summary" in r]
fig, axes = plt.subplots(2, len(places), figsize=(5 * len(places), 7), squeeze=False)
for col, place in enumerate(places):
    rows = {k: v for k, v in data["results"][place]["summary"].items() if "error" not in v}
    names = list(rows)
    colors = ["#1a73e8" if n == "gpuport" else "#9aa0a6" for n in names]
    for row, (metric, label) in enumerate((("decode_tps", "decode tokens/s (higher is better)"),
                                           ("ttft_s", "time to first token, s (lower is better)"))):
        ax = axes[row][col]
        ax.barh(names, [rows[n][metric] for n in names], color=colors)
        ax.set_title(f"{place}: {label}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
fig.suptitle(f"SmolLM2-135M-Instruct Q4_1: {data['new_tokens']} greedy tokens, medians of {data['runs']} runs", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
