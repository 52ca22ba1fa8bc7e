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
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("SCIPY_ARRAY_API", "1")   # scikit-learn's array API dispatch needs SciPy's

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gpuport as gp  # noqa: E402
from _harness import RESULTS, draw_chart, write_result  # noqa: E402
from gpuport import xp  # noqa: E402
from gpuport.platform import sync_wait  # noqa: E402
from gpuport.xp.core import concrete  # noqa: E402

CHART = HERE / "_arrays_chart.py"


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()   # warm-up: compiles what it needs
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def chain_np(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.abs(np.sin(x * np.float32(2) + np.float32(1)) - x / np.float32(3))) * np.float32(0.5)


def chain_xp(x: Any) -> Any:
    """8 element-wise functions: multiply, add, sin, divide, subtract, abs, sqrt, multiply."""
    return xp.sqrt(xp.abs(xp.sin(x * 2.0 + 1.0) - x / 3.0)) * 0.5


def arithmetic_xp(x: Any) -> Any:
    """8 arithmetic element-wise functions: multiply, add, multiply, subtract, abs, maximum, minimum, multiply."""
    return xp.minimum(xp.maximum(xp.abs(x * 2.0 + 1.0 - x * 0.25), 0.1), 5.0) * 0.5


def arithmetic_np(x: np.ndarray) -> np.ndarray:
    f = np.float32
    return np.minimum(np.maximum(np.abs(x * f(2) + f(1) - x * f(0.25)), f(0.1)), f(5)) * f(0.5)


def workloads(sizes: list[int]) -> list[tuple[str, int, Callable[[Any], Callable[[], Any]]]]:
    """(name, size, make) where make(namespace-ish) gives the timed call; sizes are element counts or n."""
    out = []
    r = np.random.default_rng(0)
    for n in sizes:
        v = r.random(n, dtype=np.float32)
        out.append(("chain of 8", n, lambda ns, v=v: _elementwise(ns, v)))
        out.append(("sum", n, lambda ns, v=v: _reduce(ns, v)))
        out.append(("sort", n, lambda ns, v=v: _sort(ns, v)))
    for m in (128, 256, 512):
        a = r.standard_normal((m, m)).astype(np.float32)
        out.append(("matmul", m, lambda ns, a=a: _matmul(ns, a)))
    for rows in (2000, 10000):
        data = r.standard_normal((rows, 64)).astype(np.float32) * np.linspace(4, 0.1, 64, dtype=np.float32)
        out.append(("PCA 64 -> 8", rows, lambda ns, d=data: _pca(ns, d)))
    return out


def _elementwise(ns: Any, v: np.ndarray) -> Callable[[], Any]:
    if ns is np:
        return lambda: chain_np(v)
    x = ns.asarray(v)
    return lambda: np.asarray(chain_xp(x))


def _reduce(ns: Any, v: np.ndarray) -> Callable[[], Any]:
    if ns is np:
        return lambda: float(np.sum(v))
    x = ns.asarray(v)
    return lambda: float(ns.sum(x))


def _sort(ns: Any, v: np.ndarray) -> Callable[[], Any]:
    if ns is np:
        return lambda: np.sort(v)
    x = ns.asarray(v)
    return lambda: np.asarray(ns.sort(x))


def _matmul(ns: Any, a: np.ndarray) -> Callable[[], Any]:
    if ns is np:
        return lambda: a @ a
    x = ns.asarray(a)
    return lambda: np.asarray(x @ x)


def _pca(ns: Any, d: np.ndarray) -> Callable[[], Any]:
    import sklearn
    from sklearn.decomposition import PCA

    if ns is np:
        return lambda: PCA(n_components=8, svd_solver="full").fit(d).transform(d)
    x = ns.asarray(d)

    def run() -> Any:
        with sklearn.config_context(array_api_dispatch=True):
            return np.asarray(PCA(n_components=8, svd_solver="full").fit(x).transform(x))
    return run


def per_call_overhead(rt: gp.Runtime, reps: int) -> dict[str, float]:
    """Microseconds per call of a 4-element add: building the lazy node, and the whole round trip (evaluate + read)."""
    xp.use(rt)
    a = xp.asarray(np.ones(4, np.float32))
    tiny = np.ones(4, np.float32)
    n = 2000

    def loop(fn: Callable[[], Any]) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6
    return {"build_us": loop(lambda: a + a), "round_trip_us": loop(lambda: np.asarray(a + a)),
            "numpy_us": loop(lambda: tiny + tiny)}


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
    np.testing.assert_allclose(np.asarray(chain_xp(x)), chain_np(v), rtol=1e-5, atol=1e-5)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.reps
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
        overhead = {label: per_call_overhead(rt, reps) for label, rt in rts.items()}
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
