"""Calibration for backend="auto": the rates of the host (NumPy) and of the device, measured in a few
milliseconds at open, or seeded from the adapter where timing the device would need awaits."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .kernels import OpCall, reference
from .platform import sync_wait
from .selector import BackendCosts

if TYPE_CHECKING:
    from .runtime import Runtime


def _best(fn: Callable[[], Any], repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)


def calibrate_host() -> BackendCosts:
    """NumPy's matmul FLOP rate, bandwidth and per-call overhead."""
    a = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    a @ a   # BLAS threads start here, not in the timing
    flops = 2 * 128 ** 3 / _best(lambda: a @ a, 7)
    big = np.ones(1 << 18, np.float32)
    bw = 3 * big.nbytes / _best(lambda: big + big, 5)
    tiny = np.ones(4, np.float32)
    overhead = _best(lambda: reference("scale", [tiny], {"a": 2.0, "b": 0.0}), 20) + 6e-6   # + the runtime's path
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=math.inf, overhead_s=overhead)


def seeded_device(adapter: dict[str, Any]) -> BackendCosts:
    """A device model without measuring: software adapters (SwiftShader, lavapipe) run matmul at ~1 GFLOP/s."""
    if adapter.get("is_fallback"):
        return BackendCosts(flops_per_s=1e9, bytes_per_s=2e9, transfer_bytes_per_s=1e9, overhead_s=2e-3)
    return BackendCosts(flops_per_s=2e12, bytes_per_s=2e11, transfer_bytes_per_s=8e9, overhead_s=1e-4)


def calibrate_device(rt: "Runtime") -> BackendCosts:
    """A few dispatches and reads on a device that can block (two pipelines: scale, matmul)."""
    dev, memory = rt.device, rt.memory
    n = 1 << 17
    host = np.ones(n, np.float32)

    def read(handle: Any, shape: tuple[int, ...]) -> np.ndarray:
        return sync_wait(dev.download(handle, shape, np.dtype(np.float32)))

    def upload_read() -> None:
        read(memory.alloc_raw((n,), np.float32, host).handle, (n,))

    def op(name: str, ins: list[Any], shape: tuple[int, ...], **attrs: Any) -> Any:
        return rt.fallback.execute(OpCall(name, tuple("abc"[:len(ins)]), ins, shape, attrs))

    x = memory.alloc_raw((n,), np.float32, host)
    t4 = memory.alloc_raw((4,), np.float32, host[:4].copy())
    read(op("scale", [t4], (4,), a=1.0, b=0.0).handle, (4,))     # compile outside the timings
    transfer = 2 * host.nbytes / _best(upload_read, 2)
    overhead = _best(lambda: read(op("scale", [t4], (4,), a=1.0, b=0.0).handle, (4,)), 3)
    big = _best(lambda: read(op("scale", [x], (n,), a=1.0, b=0.0).handle, (1,)), 2)
    bw = 2 * host.nbytes / max(big - overhead, 1e-6)
    m = 96
    a = memory.alloc_raw((m, m), np.float32, np.ones((m, m), np.float32))

    def mm() -> None:
        read(op("matmul", [a, a, None], (m, m), transpose_b=False).handle, (1,))

    mm()
    flops = 2 * m ** 3 / max(_best(mm, 2) - overhead, 1e-6)
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=transfer, overhead_s=overhead)
