"""The PNG of bench/startup.py (run with the bench venv's python, which has matplotlib): per browser and
visit (cold, warm), gpuport's time to the first result as a bar stacked by stage, beside the peer's bar: MiniLM's
first embedding against transformers.js, and SmolLM2's first token against wllama (at its default threads, and
asked for 2).   python startup_chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = {"pyodide_ms": "Pyodide", "packages_ms": "NumPy + wheel", "open_ms": "open",
          "load_ms": "model load", "embed_ms": "first result"}
# (results key, title, the peers' bars: (key in the group, label))
PANELS = [(None, "MiniLM, one sentence: the first embedding", [("transformers_js_ms", "transformers.js (wasm)")]),
          ("smollm2", "SmolLM2-135M: the first token",
           [("wllama_ms", "wllama (its default threads)"), ("wllama_2t_ms", "wllama, 2 threads")])]


def panel(ax, groups, peers, title) -> None:
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
        for k, (key, label) in enumerate(peers):
            if r[key] is None:   # not run, or no visit of the peer answered (bench/startup.py keeps why)
                said = "not\nrun" if key in r.get("not_run", []) else "no\nanswer"
                ax.text(x + (k + 1) * width, 0.05, said, ha="center", fontsize=7)
                continue
            ax.bar(x + (k + 1) * width, r[key] / 1e3, width, color=("black", "dimgray")[k],
                   label=label if i == 0 else None)
            ax.text(x + (k + 1) * width, r[key] / 1e3 * 1.01, f"{r['gpuport_ms'] / r[key]:.2f}x", ha="center",
                    fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{b}\n{s}" for b, s, _ in groups])
    ax.set_ylabel("seconds from navigation")
    ax.set_title(f"{title}: gpuport (stacked by stage) beside the peer; ratio gpuport / peer", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def main(results_path: str, out_path: str) -> int:
    results = json.load(open(results_path))["results"]
    panels = []
    for key, title, peers in PANELS:
        source = results if key is None else results.get(key, {})
        groups = [(browser, state, source[browser][state]) for browser in ("chromium", "firefox") if browser in source
                  for state in ("cold", "warm")]
        if groups:
            panels.append((groups, peers, title))
    if not panels:
        print("no browser results to chart")
        return 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 5 * len(panels)), dpi=110, squeeze=False)
    for ax, (groups, peers, title) in zip(axes[:, 0], panels):
        panel(ax, groups, peers, title)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"chart: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
