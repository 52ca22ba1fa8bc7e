"""The PNG chart of bench/peers.py's (and bench/vision.py's) ratios (run with the bench venv's python, which has matplotlib):
one group of bars per lane, gpuport system and peer, one bar per case, log scale, the line at 1.0 where gpuport
catches up with its peer. Each bar is the median of the runs, the black tick on it the worst run (the lowest
ratio); a document of one run (no "across_runs") draws that run's ratios.   python chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def groups_of(doc: dict) -> tuple[list[tuple[str, str, dict]], int]:
    """([(lane, "system, vs peer", {case: (median, worst)})], runs): from "across_runs" (bench/_runs.py's rows), else
    from a single run's "ratios" (median = worst = its ratio)."""
    section = doc.get("across_runs")
    if section is None:
        return [(lane, system.removeprefix("gpuport-"), {c: (r["ratio"], r["ratio"]) for c, r in by_case.items()})
                for lane, systems in doc["ratios"].items() for system, by_case in systems.items()], 1
    groups: dict[tuple[str, str], dict] = {}
    for row in section["rows"]:
        name = f"{row['system'].removeprefix('gpuport-')}\nvs {row['peer']}"
        groups.setdefault((row["group"], name), {})[row["case"]] = (row["median"], row["worst"])
    return [(lane, name, by_case) for (lane, name), by_case in groups.items()], section["runs"]


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    cases = doc["cases"]
    groups, runs = groups_of(doc)
    if not groups:
        print("no ratios to chart")
        return 1
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups) + 2), 5.5), dpi=110)
    width = 0.8 / len(cases)
    for j, (case, title) in enumerate(cases.items()):
        xs = [i + (j - (len(cases) - 1) / 2) * width for i in range(len(groups))]
        meds = [g[2].get(case, (float("nan"),) * 2)[0] for g in groups]
        worst = [g[2].get(case, (float("nan"),) * 2)[1] for g in groups]
        ax.bar(xs, meds, width, label=title)
        if runs > 1:
            ax.scatter(xs, worst, marker="_", s=90, color="black", zorder=3,
                       label=f"worst of {runs} runs" if j == 0 else None)
        for x, y, w in zip(xs, meds, worst):
            if y == y:
                ax.annotate(f"{y:.2g}" if runs == 1 else f"{y:.2g}\n({w:.2g})", (x, max(y, w)), ha="center",
                            va="bottom", fontsize=6)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{lane}\n{name}" for lane, name, _ in groups], fontsize=7)
    ax.set_ylabel("peer time / gpuport time  (>1: gpuport faster)")
    runs_said = "the same run" if runs == 1 else f"the median of {runs} runs (in brackets and ticked: the worst run)"
    title = doc.get("title", "MiniLM-L6 embeddings, gpuport vs its peer\n"
                             "page: transformers.js's best device (tjs best) or the one named; native: "
                             "sentence-transformers at the same threads")
    ax.set_title(title.replace("\n", f" ({doc.get('when', '')}): {runs_said}\n", 1), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
