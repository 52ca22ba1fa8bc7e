"""The PNG chart of bench/page_threads.py: per browser, MiniLM's 256-token host forward and a SmolLM2 decode step,
MiniLM's whole embed call of the same text,
each as the one-thread build's time / the configuration's (bars; higher is faster, the line at 1.0 is the
one-thread build). A bar is the median of the runs, the black tick on it the worst run (bench/_runs.py's rows under
"across_runs"); a document of one run (no "across_runs") draws that run's medians.
   python _threads_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUILD = "one-thread build"
PANELS = (("embed_256", "embed_s", "MiniLM embed, 256 tokens (tokenizing included)"),
          ("forward_256", "forward_s", "MiniLM host forward, 256 tokens"),
          ("decode_step", "decode_step_s", "SmolLM2 decode step"))


def bars(doc: dict) -> tuple[list[str], list[str], dict, int]:
    """(browsers, configs, {(browser, config, case): (median, worst)}, runs), each as speed against the one-thread
    build (whose own bar, 1.0, is the line)."""
    section = doc.get("across_runs")
    if section is None:   # one run, the old document
        browsers = list(doc["browsers"])
        configs = [c for c in doc["browsers"][browsers[0]]["medians"] if c != BUILD]
        out = {}
        for b in browsers:
            med = doc["browsers"][b]["medians"]
            for c in configs:
                for case, key, _ in PANELS:
                    out[b, c, case] = (med[BUILD][key] / med[c][key],) * 2
        return browsers, configs, out, 1
    rows = [r for r in section["rows"] if r["peer"] == BUILD]
    browsers = list(dict.fromkeys(r["group"] for r in rows))
    configs = list(dict.fromkeys(r["system"] for r in rows))
    return browsers, configs, {(r["group"], r["system"], r["case"]): (r["median"], r["worst"]) for r in rows}, \
        section["runs"]


with open(sys.argv[1]) as f:
    doc = json.load(f)
browsers, configs, values, runs = bars(doc)
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, (case, _, title) in zip(axes, PANELS):
    width = 0.8 / len(configs)
    for j, name in enumerate(configs):
        xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(browsers))]
        ys = [values.get((b, name, case), (float("nan"),) * 2) for b in browsers]
        ax.bar(xs, [y[0] for y in ys], width, label=name)
        if runs > 1:
            ax.scatter(xs, [y[1] for y in ys], marker="_", s=120, color="black", zorder=3,
                       label=f"worst of {runs} runs" if j == 0 else None)
        for x, (med, worst) in zip(xs, ys):
            ax.annotate(f"{med:.2f}x" if runs == 1 else f"{med:.2f}x ({worst:.2f}x)", (x, max(med, worst)),
                        ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(browsers)))
    ax.set_xticklabels(browsers)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("speed vs the one-thread build")
axes[0].legend(fontsize=8)
said = "medians, same run" if runs == 1 else f"median of {runs} runs, worst in brackets and ticked"
fig.suptitle(f"gpuport's page: host kernels on a pool of workers ({doc['reps']} reps; {said})", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(f"wrote {sys.argv[2]}")
