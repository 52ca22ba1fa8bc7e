"""The PNG chart of bench/kernels.py: each kernel's fraction of its lane's FMA peak (bars, log scale), one group
of bars per kernel, one bar per lane.   python _kernels_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    lanes = doc["lanes"]
    names = [r["name"] for r in lanes[0]["rows"] if r["group"] != "roof"] if lanes else []
    if not names:
        print("no kernels to chart")
        return 1
    fig, ax = plt.subplots(figsize=(max(9, 0.7 * len(names) + 3), 5.5), dpi=110)
    width = 0.8 / len(lanes)
    for j, lane in enumerate(lanes):
        by_name = {r["name"]: r for r in lane["rows"]}
        xs = [i + (j - (len(lanes) - 1) / 2) * width for i in range(len(names))]
        ys = [by_name.get(n, {}).get("fma_fraction", float("nan")) for n in names]
        ax.bar(xs, ys, width, label=f"{lane['lane']} (FMA peak {lane['fma_gflops']:.1f} GFLOP/s)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GFLOP/s / same-run FMA peak")
    ax.set_title(f"gpuport kernels as a fraction of the device's FMA peak ({doc.get('when', '')})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
