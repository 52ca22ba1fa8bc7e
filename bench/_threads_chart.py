"""The PNG chart of bench/page_threads.py: per browser, MiniLM's 256-token host forward and a SmolLM2 decode step,
MiniLM's whole embed call of the same text,
each as the one-thread build's time / the configuration's (bars; higher is faster, the line at 1.0 is the
one-thread build).   python _threads_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

doc = json.load(open(sys.argv[1]))
browsers = list(doc["browsers"])
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, (key, title) in zip(axes, (("embed_s", "MiniLM embed, 256 tokens (tokenizing included)"),
                                   ("forward_s", "MiniLM host forward, 256 tokens"),
                                   ("decode_step_s", "SmolLM2 decode step"))):
    configs = list(doc["browsers"][browsers[0]]["medians"])
    width = 0.8 / len(configs)
    for j, name in enumerate(configs):
        xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(browsers))]
        ys = [doc["browsers"][b]["medians"]["one-thread build"][key] / doc["browsers"][b]["medians"][name][key]
              for b in browsers]
        ax.bar(xs, ys, width, label=name)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.2f}x", (x, y), ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(browsers)))
    ax.set_xticklabels(browsers)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("speed vs the one-thread build")
axes[0].legend(fontsize=8)
fig.suptitle(f"gpuport's page: host kernels on a pool of workers ({doc['reps']} reps, medians, same run)", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(f"wrote {sys.argv[2]}")
