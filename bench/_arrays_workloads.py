"""bench/arrays.py's workloads, written once against a namespace (NumPy, or gpuport.xp on the runtime `xp.use` made
the default): imported by arrays.py natively, and added as a module to the page, where its page half runs them
unchanged. Each `make(ns)` prepares the inputs (uploads included) and returns the timed call, which ends with the
result in host memory (gpuport: evaluated and read back; a read waits for the device)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
from gpuport import xp

Make = Callable[[Any], Callable[[], Any]]


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


def workloads(sizes: list[int], matmuls: tuple[int, ...] = (128, 256, 512),
              pca_rows: tuple[int, ...] = (2000, 10000)) -> list[tuple[str, int, Make]]:
    """(name, size, make): sizes are element counts, a square matmul's n, or a PCA's samples (of 64 features)."""
    out = []
    r = np.random.default_rng(0)
    for n in sizes:
        v = r.random(n, dtype=np.float32)
        out.append(("chain of 8", n, lambda ns, v=v: _elementwise(ns, v)))
        out.append(("sum", n, lambda ns, v=v: _reduce(ns, v)))
        out.append(("sort", n, lambda ns, v=v: _sort(ns, v)))
    for m in matmuls:
        a = r.standard_normal((m, m)).astype(np.float32)
        out.append(("matmul", m, lambda ns, a=a: _matmul(ns, a)))
    for rows in pca_rows:
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
    import sklearn   # scikit-learn only where a PCA is timed (the page loads it first)
    from sklearn.decomposition import PCA

    if ns is np:
        return lambda: PCA(n_components=8, svd_solver="full").fit(d).transform(d)
    x = ns.asarray(d)

    def run() -> Any:
        with sklearn.config_context(array_api_dispatch=True):
            return np.asarray(PCA(n_components=8, svd_solver="full").fit(x).transform(x))
    return run


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()   # warm-up: compiles what it needs
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_ms(calls: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """The median ms of each call, timed in turn repetition by repetition (the order rotating each time) after a
    warm-up of each: what runs beside them (a browser's other work) weighs on all of them alike."""
    for fn in calls.values():
        fn()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def per_call_overhead(rt: Any, budget_s: float = 1.0) -> dict[str, float]:
    """Microseconds per call of a 4-element add on `rt`: building the lazy node, and the whole round trip (evaluate
    and read back); NumPy's add beside them. Each is looped for about `budget_s` (a page's readback may take a
    browser's poll interval, ~100 ms in Firefox)."""
    a = xp.asarray(np.ones(4, np.float32), device=rt)
    tiny = np.ones(4, np.float32)

    def loop(fn: Callable[[], Any]) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while n < 5 or (n < 2000 and time.perf_counter() - t0 < budget_s):
            fn()
            n += 1
        return (time.perf_counter() - t0) / n * 1e6
    return {"build_us": loop(lambda: a + a), "round_trip_us": loop(lambda: np.asarray(a + a)),
            "numpy_us": loop(lambda: tiny + tiny)}
