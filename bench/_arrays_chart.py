"""The PNG chart of bench/arrays.py: per workload and size, NumPy's time over gpuport's (bars, log scale; above 1:
gpuport is faster), for gpuport's default runtime (auto) and pinned to the GPU. Natively one run; for the page half
(arrays_page.json) one panel per browser, each bar the median of the runs with the worst run ticked.
    python _arrays_chart.py RESULTS.json OUT.png   (needs matplotlib)"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = (("gpuport auto", "gpuport_auto_ms"), ("gpuport webgpu", "gpuport_webgpu_ms"))


def _bars(ax, names, series, title):
    """series: (label, medians, worsts or None) per system."""
    for j, (label, medians, worsts) in enumerate(series):
        xs = [i + (j - 0.5) * 0.4 for i in range(len(names))]
        ax.bar(xs, medians, 0.4, label=label)
        if worsts is not None:
            ax.scatter(xs, worsts, marker="_", color="black", s=60, zorder=3,
                       label="worst run" if j == len(series) - 1 else None)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("NumPy time / gpuport time (above 1: gpuport faster)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)


def native(doc, out_path):
    rows = doc["rows"]
    names = [f"{r['workload']}\n{r['size']:,}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(9, 0.75 * len(rows) + 3), 5.5), dpi=110)
    f = doc["fusion"]
    _bars(ax, names, [(label.replace("webgpu", "webgpu (lavapipe)"), [r["numpy_ms"] / r[key] for r in rows], None)
                      for label, key in SYSTEMS],
          f"gpuport.xp vs NumPy, same machine ({doc.get('when', '')}); 8 fused arithmetic functions on 1M "
          f"elements: {f['arithmetic_over_one']:.2f}x one function's device time (with sin, sqrt and a "
          f"division: {f['chain_over_one']:.2f}x)")
    fig.tight_layout()
    fig.savefig(out_path)


def page(doc, out_path):
    rows = doc["across_runs"]["rows"]
    browsers = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(len(browsers), 1, figsize=(11, 4.5 * len(browsers)), dpi=110, squeeze=False)
    for ax, browser in zip(axes[:, 0], browsers):
        cases = list(dict.fromkeys(r["case"] for r in rows if r["group"] == browser))
        series = []
        for label, _ in SYSTEMS:
            mine = {r["case"]: r for r in rows if r["group"] == browser and r["system"] == label}
            series.append((label, [mine[c]["median"] for c in cases], [mine[c]["worst"] for c in cases]))
        _bars(ax, cases, series, f"gpuport.xp vs Pyodide's NumPy in the same page, {browser} "
              f"({doc['across_runs']['runs']} runs, {doc.get('when', '')}): median of the runs, worst ticked")
    fig.tight_layout()
    fig.savefig(out_path)


def main(results_path: str, out_path: str) -> int:
    doc = json.load(open(results_path))
    (page if "across_runs" in doc else native)(doc, out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
