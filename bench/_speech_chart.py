"""The PNG chart of bench/speech.py: left, faster-whisper's time / gpuport's at equal threads per clip (bars, log
scale, the line at 1.0 where gpuport catches up); right, the real-time factor of every system per clip (log scale),
the webgpu (lavapipe) call marked apart.   python _speech_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

PLAIN = FuncFormatter(lambda y, _: f"{y:g}")


def bars(ax, groups, series, value, fmt, rotation=0):
    """One group of bars per entry of `groups`, one bar per series (name, {group: row})."""
    width = 0.8 / max(1, len(series))
    for j, (name, rows) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ys = [value(rows.get(g)) for g in groups]
        ax.bar(xs, ys, width, label=name)
        for x, y in zip(xs, ys):
            if y == y:
                ax.annotate(fmt(y), (x, y), ha="center", va="bottom", fontsize=6, rotation=rotation)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))


def plain_ticks(ax):
    """Plain numbers on a log axis; the minor ticks labelled only where the axis spans less than a decade."""
    ax.yaxis.set_major_formatter(PLAIN)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(PLAIN if hi / lo < 10 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    clips = list(doc["results"])
    names = list(dict.fromkeys(n for c in clips for n in doc["results"][c]["systems"]))
    if not clips or not names:
        print("no results to chart")
        return 1
    nan = float("nan")
    labels = [f"{c}\n{doc['results'][c]['audio_s']:.1f} s" for c in clips]

    def rows(name):
        return {c: doc["results"][c]["systems"].get(name) for c in clips}

    fig, (left, right) = plt.subplots(1, 2, figsize=(max(12, 2.2 * len(clips) + 5), 5.8), dpi=110)
    gp = [n for n in names if n.startswith("gpuport")]
    bars(left, clips, [(f"{n.removeprefix('gpuport-')} vs fw-{n.rsplit('-', 1)[1]}", rows(n)) for n in gp],
         lambda r: (r or {}).get("fw_over_gpuport", nan), lambda y: f"{y:.2f}")
    left.axhline(1.0, color="black", linewidth=1)
    plain_ticks(left)
    left.set_xticklabels(labels, fontsize=8)
    left.set_ylabel("faster-whisper time / gpuport time  (>1: gpuport faster)")
    left.set_title("gpuport vs faster-whisper (float32) at equal threads", fontsize=9)
    left.legend(fontsize=7)

    bars(right, clips, [(n, rows(n)) for n in names], lambda r: (r or {}).get("rtf", nan), lambda y: f"{y:.2g}",
         rotation=90)
    w = doc.get("webgpu")
    if w and w["clip"] in clips:
        i = clips.index(w["clip"])
        right.scatter([i], [w["rtf"]], marker="*", s=140, color="crimson", zorder=5,
                      label=f"gpuport webgpu on lavapipe (software Vulkan), 1 call: RTF {w['rtf']:.1f}")
    plain_ticks(right)
    right.set_xticklabels(labels, fontsize=8)
    right.set_ylabel("real-time factor: processing s / audio s  (lower is better)")
    right.set_title("real-time factor per clip", fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(f"Whisper tiny.en natively, medians of {doc['reps']} interleaved repetitions "
                 f"({doc.get('when', '')}); tokens {'equal' if doc.get('tokens_match') else 'NOT equal'} to "
                 f"{doc.get('reference')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
