"""gpuport.xp against NumPy, natively, in one run: element-wise chains, reductions, matmul, sort and a PCA (scikit-
learn with array_api_dispatch) at several sizes, on gpuport's default runtime (backend="auto": each call placed where
it measured faster) and pinned to the GPU (backend="webgpu": lavapipe here), beside NumPy on the same machine; the
per-call cost of a small operation; and the fusion figure: 8-function element-wise chains on 1M elements are one
dispatch each, and their device time (timestamp queries) against one element-wise function's.

Each figure is the median of `--reps` runs after a warm-up (which compiles the pipelines): from the call to the result
in host memory (gpuport: evaluated and read back; a read waits for the device), so transfers count, as they do for a
user. JSON: bench/results/arrays.json; PNG: bench/results/arrays.png (matplotlib: this python's, else the bench
venv's). Heavy: run it under /tmp/gpuport-heavy.lock.

    python bench/arrays.py [--reps 5] [--quick]

The page half (--page): the same workloads (bench/_arrays_workloads.py, added to the page as a module) in gpuport's
own page of the dev server, per browser (Chromium on SwiftShader, Firefox on lavapipe): the page's runtime
(backend auto, calibrated at open) and one pinned to the GPU, against Pyodide's NumPy (and scikit-learn on it) in the
same page, the three timed in turn repetition by repetition; the reads wait for the GPU inside the call (JSPI), as
natively; and the per-call cost of a 4-element add. The page loads Pyodide's scikit-learn and SciPy from a
distribution assembled for the bench (.cache/bench/pyodide-arrays, each file checked against pyodide-lock.json) and
PyPI's array-api-compat from the wheel examples/jupyterlite/kernel-requirements.txt pins (`make setup` fetches it).
The whole comparison runs --runs times (default 3), each with freshly launched browsers; each run prints its table and
the end prints, per browser, workload and system, NumPy's time over gpuport's in every run, the worst run (the lowest)
and the median (bench/_runs.py; no target is stated). JSON: bench/results/arrays_page.json; PNG: arrays_page.png.

    flock /tmp/gpuport-heavy.lock .venv/bin/python bench/arrays.py --page [--browsers chromium,firefox] [--runs 3]
        [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

os.environ.setdefault("SCIPY_ARRAY_API", "1")   # scikit-learn's array API dispatch needs SciPy's

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gpuport as gp  # noqa: E402
from _harness import RESULTS, draw_chart, serve, write_result  # noqa: E402
from _runs import Key, across_runs, add_runs_argument  # noqa: E402
from _runs import report as run_report  # noqa: E402
from gpuport import xp  # noqa: E402
from gpuport.platform import sync_wait  # noqa: E402
from gpuport.xp.core import concrete  # noqa: E402
from _arrays_workloads import (arithmetic_np, arithmetic_xp, chain_np, chain_xp, median_ms,  # noqa: E402
                               per_call_overhead, workloads)

CHART = HERE / "_arrays_chart.py"
ROOT = HERE.parent
WORKLOADS = HERE / "_arrays_workloads.py"
PAGE_PYODIDE = ROOT / ".cache" / "bench" / "pyodide-arrays"
KERNEL_REQUIREMENTS = ROOT / "examples" / "jupyterlite" / "kernel-requirements.txt"
LITE_WHEELS = ROOT / ".cache" / "jupyterlite" / "wheels"
SYSTEMS = ("auto", "webgpu")
RATIO = "NumPy median / gpuport median in the same page, > 1.0: gpuport faster, the worst run is the lowest"
TARGETS = ()   # no stated goal for the page's arrays against its NumPy


def fusion(rt: gp.Runtime, n: int) -> dict[str, Any]:
    """Two 8-function chains on n elements (arithmetic: +, -, *, abs, max, min; and one with sin, sqrt and a
    division): the element-wise dispatches of each and the device's time for them (timestamp queries), against one
    function's (x * 2), and the sin chain against its 8 functions evaluated one dispatch each."""
    xp.use(rt)
    v = np.random.default_rng(1).random(n, dtype=np.float32)
    x = xp.asarray(v)
    stamps: list[float] = []

    def timer(labels: list[str], ms: list[float]) -> None:
        stamps.extend(t for label, t in zip(labels, ms) if label.startswith("xp_elementwise"))

    def measure(make: Callable[[], Any]) -> tuple[int, float]:
        """(element-wise dispatches of one evaluation, the device's milliseconds for them: the median of 9)"""
        make()
        sync_wait(rt.device.collect_timings())   # the first: compiles; its stamps are dropped
        before, totals = xp.stats(rt)["dispatches"]["elementwise"], []
        for _ in range(9):
            stamps.clear()
            make()
            sync_wait(rt.device.collect_timings())
            totals.append(sum(stamps))
        return (xp.stats(rt)["dispatches"]["elementwise"] - before) // 9, statistics.median(totals)

    rt.device.timer = timer
    try:
        one = measure(lambda: concrete(x * 2.0))
        arithmetic = measure(lambda: concrete(arithmetic_xp(x)))
        chain = measure(lambda: concrete(chain_xp(x)))
        steps = measure(lambda: _stepwise(x))
    finally:
        rt.device.timer = None
    # The chain ends in sqrt(|d|) * 0.5: near d = 0 its error is the square root of d's (a few ulp of sin, and the
    # cancellation in d), 1e-4 where d is 1e-8, which one of a few million elements reaches; squared, each value
    # is |d| / 4 and carries d's own error.
    np.testing.assert_allclose(np.asarray(chain_xp(x)) ** 2, chain_np(v) ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(arithmetic_xp(x)), arithmetic_np(v), rtol=1e-6, atol=1e-6)
    return {"elements": n, "one_function_dispatches": one[0], "one_function_device_ms": one[1],
            "arithmetic_dispatches": arithmetic[0], "arithmetic_device_ms": arithmetic[1],
            "arithmetic_over_one": arithmetic[1] / one[1],
            "chain_dispatches": chain[0], "chain_device_ms": chain[1], "chain_over_one": chain[1] / one[1],
            "stepwise_dispatches": steps[0], "stepwise_device_ms": steps[1]}


def _stepwise(x: Any) -> Any:
    """The chain with each of its 8 functions evaluated on its own (a dispatch each): what fusion saves."""
    third = x / 3.0
    concrete(third)
    y = x
    for step in (lambda t: t * 2.0, lambda t: t + 1.0, xp.sin, lambda t: t - third, xp.abs, xp.sqrt,
                 lambda t: t * 0.5):
        y = step(y)
        concrete(y)
    return y


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | size | NumPy ms | gpuport auto ms | gpuport webgpu ms | NumPy / auto | NumPy / webgpu |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['size']:,} | {r['numpy_ms']:.3f} | {r['gpuport_auto_ms']:.3f} | "
                     f"{r['gpuport_webgpu_ms']:.3f} | {r['numpy_ms'] / r['gpuport_auto_ms']:.2f} | "
                     f"{r['numpy_ms'] / r['gpuport_webgpu_ms']:.2f} |")
    return "\n".join(lines)


# -- the page half ---------------------------------------------------------------------------------------------

PAGE_SETUP = """
import base64, os
os.environ["SCIPY_ARRAY_API"] = "1"   # scikit-learn's array API dispatch needs SciPy's: set before either loads
import pyodide_js
await pyodide_js.loadPackage(["scikit-learn", "micropip"])
import micropip
with open({wheel_path!r}, "wb") as f:
    f.write(base64.b64decode({wheel!r}))
await micropip.install("emfs:" + {wheel_path!r})
import gpuport
import arrays_workloads as W
from gpuport import xp
rt_gpu = await gpuport.open(backend="webgpu")
RTS = {{"auto": rt, "webgpu": rt_gpu}}
WORK = {{(name, size): make for name, size, make in W.workloads({sizes!r}, {matmuls!r}, {pca_rows!r})}}
info = rt_gpu.info()
{{"auto": rt.info()["mode"], "adapter": info["adapter"], "browser": info["browser"], "work": [list(k) for k in WORK]}}
"""

PAGE_ROW = """
import numpy as np
_make = WORK[({name!r}, {size})]
_calls = {{"numpy": _make(np)}}
for _label, _rt in RTS.items():
    xp.use(_rt)   # the default device of the arrays _make uploads
    _calls[_label] = _make(xp)
W.interleaved_ms(_calls, {reps})
"""

PAGE_END = """
{"per_call": {label: W.per_call_overhead(r) for label, r in RTS.items()},
 "ran": {label: {k: v for k, v in r.info()["ran"].items() if k.startswith("xp.") or k == "matmul"}
         for label, r in RTS.items()}}
"""


def page_distribution() -> Path:
    """Pyodide with scikit-learn (SciPy, OpenBLAS, joblib, threadpoolctl) beside NumPy, for the page half only:
    the dev server's own distribution stays NumPy's."""
    from gpuport.site.distribution import DEFAULT_PACKAGES, ensure_distribution

    return ensure_distribution(ROOT, dest=PAGE_PYODIDE, packages=(*DEFAULT_PACKAGES, "scikit-learn"))


def array_api_compat_wheel() -> Path:
    """The array-api-compat wheel kernel-requirements.txt pins, from the JupyterLite build's wheels, its sha256
    checked."""
    pin = re.search(r"^array-api-compat==(\S+)\s+--hash=sha256:([0-9a-f]{64})", KERNEL_REQUIREMENTS.read_text(), re.M)
    if pin is None:
        raise SystemExit(f"{KERNEL_REQUIREMENTS} pins no array-api-compat")
    version, sha256 = pin.groups()
    for path in LITE_WHEELS.glob(f"array_api_compat-{version}-*.whl"):
        if hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return path
    raise SystemExit(f"no array_api_compat-{version} wheel with sha256 {sha256[:12]}... in {LITE_WHEELS}: run "
                     "`make setup` (examples/jupyterlite/build.py downloads it)")


def page_sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sizes": [10_000, 100_000], "matmuls": (128, 256), "pca_rows": (2000,)}
    return {"sizes": [10_000, 100_000, 1_000_000], "matmuls": (128, 256, 512), "pca_rows": (2000, 10000)}


def bench_page(pw, browser: str, url: str, reps: int, sizes: dict[str, Any], wheel: Path) -> dict[str, Any]:
    """One browser's rows, per-call costs and placements, in a freshly launched browser."""
    from page_minilm import launch

    b = launch(pw, browser)
    try:
        page = b.new_page()
        page.goto(f"{url}/test.html?precompile=off")
        page.wait_for_function("() => window.gpuportReady !== undefined", timeout=60_000)

        def py(src: str) -> Any:
            return page.evaluate("async (s) => (await window.gpuportReady).runPython(s)", src)

        page.evaluate("async ([s, f]) => (await window.gpuportReady).addModule('arrays_workloads', s, f)",
                      [WORKLOADS.read_text(encoding="utf-8"), "bench/_arrays_workloads.py"])
        info = py(PAGE_SETUP.format(wheel_path=f"/tmp/{wheel.name}", wheel=base64.b64encode(wheel.read_bytes()).decode(),
                                    **sizes))
        print(f"{browser}: auto runtime placing by {info['auto']}; adapter {info['adapter']}", flush=True)
        rows = []
        for name, size in info["work"]:
            ms = py(PAGE_ROW.format(name=name, size=size, reps=reps))
            rows.append({"workload": name, "size": size, "numpy_ms": ms["numpy"],
                         **{f"gpuport_{label}_ms": ms[label] for label in SYSTEMS}})
            print(f"  {browser:8} {name:14s} {size:>9,}  numpy {ms['numpy']:9.3f} ms  auto {ms['auto']:9.3f} ms  "
                  f"webgpu {ms['webgpu']:9.3f} ms", flush=True)
        return {"info": info, "rows": rows, **py(PAGE_END)}
    finally:
        b.close()


def page_ratios(browsers: Mapping[str, Mapping[str, Any]]) -> dict[Key, float]:
    """One run's ratios for bench/_runs.py: per browser, workload and gpuport system, NumPy's time over gpuport's."""
    return {(browser, f"{r['workload']} {r['size']:,}", f"gpuport {label}", "numpy"):
            round(r["numpy_ms"] / r[f"gpuport_{label}_ms"], 6)
            for browser, res in browsers.items() for r in res["rows"] for label in SYSTEMS}


def page_main(args: argparse.Namespace) -> int:
    from gpuport.site.server import create_app
    from playwright.sync_api import sync_playwright

    sizes, wheel = page_sizes(args.quick), array_api_compat_wheel()
    runs: list[dict[str, Any]] = []
    with serve(create_app, None, None, page_distribution(), what="dev server") as url, sync_playwright() as pw:
        for i in range(args.runs):
            print(f"run {i + 1} of {args.runs}", flush=True)
            browsers = {b: bench_page(pw, b, url, args.reps, sizes, wheel) for b in args.browsers.split(",")}
            runs.append({"browsers": browsers})
            for browser, res in browsers.items():
                print(f"\nrun {i + 1} of {args.runs}, {browser}:")
                print(table(res["rows"]))
                for label, o in res["per_call"].items():
                    print(f"per call ({browser}, {label}): a 4-element add builds in {o['build_us']:.1f} us, "
                          f"evaluates and reads back in {o['round_trip_us']:.1f} us; NumPy's add {o['numpy_us']:.2f} us")
            # written after every run: a later run that breaks leaves the earlier ones on disk
            section = across_runs([page_ratios(r["browsers"]) for r in runs], TARGETS, True, RATIO)
            path = write_result("arrays_page", {"reps": args.reps, "sizes": sizes, "runs": runs,
                                                "across_runs": section})
    print(draw_chart(CHART, path, RESULTS / "arrays_page.png"))
    print()
    print(run_report(section, prefix="x"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions")
    parser.add_argument("--page", action="store_true", help="the page half: in gpuport's page, per browser")
    parser.add_argument("--browsers", default="chromium,firefox", help="the page half's browsers")
    add_runs_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 3
    if args.page:
        return page_main(args)
    reps = args.reps
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rts = {"auto": gp.open_sync(), "webgpu": gp.open_sync(backend="webgpu")}
    try:
        rows = []
        for name, size, make in workloads(sizes):
            row: dict[str, Any] = {"workload": name, "size": size, "numpy_ms": median_ms(make(np), reps)}
            for label, rt in rts.items():
                xp.use(rt)
                row[f"gpuport_{label}_ms"] = median_ms(make(xp), reps)
            rows.append(row)
            print(f"{name:14s} {size:>9,}  numpy {row['numpy_ms']:9.3f} ms  auto {row['gpuport_auto_ms']:9.3f} ms  "
                  f"webgpu {row['gpuport_webgpu_ms']:9.3f} ms", flush=True)
        overhead = {label: per_call_overhead(rt) for label, rt in rts.items()}
        fused = fusion(rts["webgpu"], 1 << 20)
        ran = {label: {k: v for k, v in rt.info()["ran"].items() if k.startswith("xp.") or k == "matmul"}
               for label, rt in rts.items()}
        adapter = rts["webgpu"].info()["adapter"]
    finally:
        for rt in rts.values():
            rt.close()
    print(table(rows))
    for label, o in overhead.items():
        print(f"per call ({label}): a 4-element add builds in {o['build_us']:.1f} us, evaluates and reads back in "
              f"{o['round_trip_us']:.1f} us; NumPy's add {o['numpy_us']:.2f} us")
    f = fused
    print(f"fusion on {f['elements']:,} elements; one function (x * 2): {f['one_function_device_ms']:.3f} ms on the "
          f"device.\n  8 arithmetic functions: {f['arithmetic_dispatches']} dispatch, {f['arithmetic_device_ms']:.3f} ms "
          f"({f['arithmetic_over_one']:.2f}x one function; target <= 1.5x)\n  8 functions with sin, sqrt and a division: "
          f"{f['chain_dispatches']} dispatch, {f['chain_device_ms']:.3f} ms ({f['chain_over_one']:.2f}x); one dispatch "
          f"per function ({f['stepwise_dispatches']}): {f['stepwise_device_ms']:.3f} ms")
    path = write_result("arrays", {"rows": rows, "per_call": overhead, "fusion": fused, "ran": ran,
                                   "adapter": adapter, "reps": reps, "table": table(rows)})
    print(draw_chart(CHART, path, RESULTS / "arrays.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
