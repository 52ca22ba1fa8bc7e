"""The PNG chart of bench/peers.py's (and bench/vision.py's) ratios (run with the bench venv's python, which has matplotlib):
one group of bars per lane and gpuport system, one bar per case, log scale, the line at 1.0 where gpuport
catches up with its peer.   python chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    cases = doc["cases"]
    groups = [(lane, system, by_case) for lane, systems in doc["ratios"].items() for system, by_case in systems.items()]
    if not groups:
        print("no ratios to chart")
        return 1
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups) + 2), 5.5), dpi=110)
    width = 0.8 / len(cases)
    for j, (case, title) in enumerate(cases.items()):
        xs = [i + (j - (len(cases) - 1) / 2) * width for i in range(len(groups))]
        ys = [g[2].get(case, {}).get("ratio", float("nan")) for g in groups]
        ax.bar(xs, ys, width, label=title)
        for x, y in zip(xs, ys):
            if y == y:
                ax.annotate(f"{y:.2g}", (x, y), ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{lane}\n{system.removeprefix('gpuport-')}" for lane, system, _ in groups], fontsize=8)
    ax.set_ylabel("peer time / gpuport time  (>1: gpuport faster)")
    title = doc.get("title", "MiniLM-L6 embeddings, gpuport vs its peer in the same run\n"
                             "page: transformers.js best device; native: sentence-transformers at the same threads")
    ax.set_title(title.replace("\n", f" ({doc.get('when', '')})\n", 1), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
