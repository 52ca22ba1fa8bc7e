"""Selection cost per op natively: BackendSelector.select_backend through the runtime's auto placement
(workload lookup + decision), against one tiny NumPy op measured in the same run. Target: < 20 us.

    python bench/selector.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpuport as gp  # noqa: E402
from _harness import write_result  # noqa: E402
from gpuport.types import OpCall  # noqa: E402


def per_call(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    rt = gp.open_sync(backend="auto")
    try:
        auto = rt.placement.auto
        r = np.random.default_rng(0)
        calls = {
            "add 64": OpCall("add", ("a", "b"), [rt.tensor(r.random(64, np.float32))] * 2, (64,), {}),
            "matmul 256": OpCall("matmul", ("a", "b", "bias"), [rt.tensor(r.random((256, 256), np.float32))] * 2
                                 + [None], (256, 256), {"transpose_b": False}),
            "gelu 128x384": OpCall("gelu", ("x",), [rt.tensor(r.random((128, 384), np.float32))], (128, 384), {}),
        }
        # warm: measurements complete (the steady state: decisions from measured means)
        for call in calls.values():
            for _ in range(20):
                w, _ = auto.workload(call)
                for b in ("webgpu", "cpu"):
                    auto.selector.record(w, b, 1e-3 if b == "webgpu" else 1e-4)
        results = {}
        for name, call in calls.items():
            results[name] = per_call(lambda c=call: auto.place(c), 20000) * 1e6
        raw_sel = auto.selector
        w = auto.workload(calls["matmul 256"])[0]
        results["select_backend only"] = per_call(lambda: raw_sel.select_backend(w), 20000) * 1e6
        tiny = np.ones(4, np.float32)
        numpy_us = per_call(lambda: np.add(tiny, tiny), 20000) * 1e6
        worst = max(v for k, v in results.items() if k != "select_backend only")
        for k, v in results.items():
            print(f"selection {k:22s} {v:6.2f} us  ({v / numpy_us:5.1f}x one tiny NumPy add)")
        print(f"tiny NumPy add          {numpy_us:6.2f} us")
        print(f"worst per-op selection  {worst:6.2f} us  target < 20 us: {'PASS' if worst < 20 else 'FAIL'}")
        path = write_result("selector", {"selection_us": {k: round(v, 3) for k, v in results.items()},
                                         "tiny_numpy_add_us": round(numpy_us, 3),
                                         "ratio_to_numpy_add": round(worst / numpy_us, 2),
                                         "worst_us": round(worst, 3), "target_us": 20, "pass": worst < 20})
        print("wrote", path)
    finally:
        rt.close()


if __name__ == "__main__":
    main()
