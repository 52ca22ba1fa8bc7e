"""The PNG of bench/startup.py (run with the bench venv's python, which has matplotlib): per browser and
visit (cold, warm), gpuport's time to the first result as a bar stacked by stage, beside the peer's bar: MiniLM's
first embedding against transformers.js, and SmolLM2's first token against wllama (at its default threads, and
asked for 2). The bars are the last run's (medians of its trials); where the document holds several runs
("across_runs", bench/_runs.py's rows), each ratio's label is the median and the worst (highest) of the runs instead
of the last run's ratio.   python startup_chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = {"pyodide_ms": "Pyodide", "packages_ms": "NumPy + wheel", "open_ms": "open",
          "load_ms": "model load", "embed_ms": "first result"}
# (results key, title, the case's name in the across-runs rows, the peers' bars: (key in the group, label, peer's
# name in the across-runs rows))
PANELS = [(None, "MiniLM, one sentence: the first embedding", "minilm",
           [("transformers_js_ms", "transformers.js (wasm)", "transformers.js")]),
          ("smollm2", "SmolLM2-135M: the first token", "smollm2",
           [("wllama_ms", "wllama (its default threads)", "wllama"), ("wllama_2t_ms", "wllama, 2 threads",
                                                                       "wllama, 2 threads")])]


def ratio_label(r: dict, key: str, across: dict | None) -> str:
    """The last run's ratio, or with several runs their median and worst ("0.62x med, 0.70x worst of 3")."""
    if across is None:
        return f"{r['gpuport_ms'] / r[key]:.2f}x"
    return f"{across['median']:.2f}x med\n{across['worst']:.2f}x worst of {sum(x is not None for x in across['ratios'])}"


def panel(ax, groups, peers, title, across) -> None:
    width = 0.8 / (1 + len(peers))
    for i, (_, _, r) in enumerate(groups):
        x = i - 0.4 + width / 2
        bottom = 0.0
        for j, (key, label) in enumerate(STAGES.items()):
            value = r["gpuport_stages_ms"][key] / 1e3
            ax.bar(x, value, width, bottom=bottom, color=f"C{j}", label=label if i == 0 else None)
            bottom += value
        # what the stages leave out (driver and page script between them) to the measured total
        rest = max(r["gpuport_ms"] / 1e3 - bottom, 0.0)
        ax.bar(x, rest, width, bottom=bottom, color="lightgray", label="other" if i == 0 else None)
        for k, (key, label, peer) in enumerate(peers):
            if r[key] is None:   # not run, or no visit of the peer answered (bench/startup.py keeps why)
                said = "not\nrun" if key in r.get("not_run", []) else "no\nanswer"
                ax.text(x + (k + 1) * width, 0.05, said, ha="center", fontsize=7)
                continue
            ax.bar(x + (k + 1) * width, r[key] / 1e3, width, color=("black", "dimgray")[k],
                   label=label if i == 0 else None)
            ax.text(x + (k + 1) * width, r[key] / 1e3 * 1.01, ratio_label(r, key, across(groups[i], peer)),
                    ha="center", fontsize=6)
    ax.set_xticks(range(len(groups)), [f"{b}\n{s}" for b, s, _ in groups])
    ax.set_ylabel("seconds from navigation")
    ax.set_title(f"{title}: gpuport (stacked by stage) beside the peer; ratio gpuport / peer", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    results = doc["runs"][-1]["results"] if "runs" in doc else doc["results"]
    rows = {(row["group"], row["case"], row["system"], row["peer"]): row
            for row in doc.get("across_runs", {}).get("rows", [])} if len(doc.get("runs", [])) > 1 else None
    panels = []
    for key, title, case, peers in PANELS:
        source = results if key is None else results.get(key, {})
        groups = [(browser, state, source[browser][state]) for browser in ("chromium", "firefox") if browser in source
                  for state in ("cold", "warm")]
        # group, peer -> its across-runs row (None: one run, label the ratio as before)
        across = (lambda g, peer, case=case: rows.get((g[0], f"{case} {g[1]}", "gpuport", peer))) if rows is not None \
            else (lambda g, peer: None)
        if groups:
            said = f" (bars: the last of {len(doc['runs'])} runs)" if rows is not None else ""
            panels.append((groups, peers, title + said, across))
    if not panels:
        print("no browser results to chart")
        return 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 5 * len(panels)), dpi=110, squeeze=False)
    for ax, (groups, peers, title, across) in zip(axes[:, 0], panels):
        panel(ax, groups, peers, title, across)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"chart: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
