"""Calibration for backend="auto": the rates of the host (NumPy) and of the device, measured in a fraction
of a second at the first open on an adapter (then persisted). Written once as coroutines: natively every
await completes at once (sync_wait drives them), in a page the device's reads are awaited for real."""

from __future__ import annotations

import inspect
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np

from ..host import hostops
from ..ops.opspecs import OPS
from ..platform import within
from ..types import OpCall
from .selector import BackendCosts

if TYPE_CHECKING:
    from .runtime import Runtime


# A page's device calibration takes 0.8-2.2 s on the software adapters here. A read the browser never answered would
# hold the page's later background tasks for ever (the snapshot waits behind it): a Firefox page's snapshotStatus
# never settled in 3 of about 8 full suites, with the snapshot worker's own stall deadline never firing, so the
# wait was before the worker, where this is the one step that waits on the device. Past this, the calibration ends
# unmeasured (NoAnswer): at open in a page, open fails saying so; left to an idle moment, placement stays on the host.
CALIBRATE_WAIT_S = 60.0

PROVISIONAL = "provisional"   # the calibration's source while the costs are provisional()


def provisional() -> dict[str, BackendCosts]:
    """Costs for a runtime that has not measured yet (open(calibrate="later"): a page's first visit measures
    once it is idle, not before its first result): the device as slower than any host, so every call goes
    to the host, which is safe to run without knowing either side's rates."""
    unmeasured = BackendCosts(flops_per_s=1.0, bytes_per_s=1.0, transfer_bytes_per_s=1.0, overhead_s=1.0,
                              roundtrip_s=1.0)
    return {"webgpu": unmeasured, "cpu": BackendCosts(flops_per_s=1e10, bytes_per_s=1e10)}


async def _best(fn: Callable[[], Any], repeats: int = 3, window_s: float = 0.005) -> float:
    """Seconds per call of fn (awaited when it returns an awaitable): the fastest of `repeats` windows,
    each calling fn until at least `window_s` passed. Browsers coarsen the clock (Firefox to 1 ms): a
    sub-millisecond call timed alone reads as 0 or 1 ms."""
    best = math.inf
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            result = fn()
            if inspect.isawaitable(result):
                await result
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= window_s:
                break
        best = min(best, elapsed / calls)
    return max(best, 1e-9)


async def calibrate_host() -> BackendCosts:
    """The host kernels' matmul FLOP rate (hostops.matmul: BLAS natively, the WebAssembly SIMD kernels in a
    page, 10x NumPy's there), bandwidth and per-call overhead. The matmul is a linear layer's (a read-only
    weight in PyTorch's layout, bias fused), as the models call it."""
    rng = np.random.default_rng(0)
    m, k, n = 64, 256, 256
    x = rng.standard_normal((m, k)).astype(np.float32)
    w, bias = rng.standard_normal((n, k)).astype(np.float32), np.zeros(n, np.float32)
    w.flags.writeable = bias.flags.writeable = False

    def linear() -> np.ndarray:
        return hostops.matmul(x, w, bias, transpose_b=True)

    linear()   # BLAS threads start, the weight is packed, the engine compiles: not in the timing
    flops = 2 * m * k * n / await _best(linear)
    big = np.ones(1 << 18, np.float32)
    bw = 3 * big.nbytes / await _best(lambda: big + big)
    tiny = np.ones(4, np.float32)
    overhead = await _best(lambda: OPS["scale"].run_host([tiny], {"a": 2.0, "b": 0.0})) + 6e-6   # + the runtime
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=math.inf, overhead_s=overhead)


async def _above(run: Callable[[int], Awaitable[None]], floor: float, sizes: tuple[int, ...] = (8, 64, 256)
                 ) -> tuple[float, int]:
    """(seconds, k): the time of run(k) for the first k of `sizes` whose time exceeds twice `floor` (else the
    last). A page's read resolves at the browser's next poll (~100 ms in Firefox): work that fits inside one
    poll is invisible, so it is grown until it shows, in few steps (each costs a poll or more there)."""
    for k in sizes:
        t = await _best(lambda: run(k), 1)
        if t > 2 * floor:
            break
    return t, k


async def calibrate_device(rt: "Runtime") -> BackendCosts:
    """Dispatches and reads on the device (two pipelines: scale, matmul). The read round trip is measured
    apart from the per-dispatch cost (a page reads once per batch, not once per op), and each cost from
    enough work to stand out of that round trip."""
    with rt.pipelines.unrecorded():   # measuring is no placement: the next start builds none of this ahead
        if rt.device.can_block:   # natively every await completes at once
            return await _measure_device(rt)
        return await within(_measure_device(rt), CALIBRATE_WAIT_S,
                            "the device's calibration (its dispatches and reads)")


async def _measure_device(rt: "Runtime") -> BackendCosts:
    dev, memory = rt.device, rt.memory
    f32 = np.dtype(np.float32)
    n = 1 << 17
    host = np.ones(n, np.float32)

    def op(name: str, ins: list[Any], shape: tuple[int, ...], **attrs: Any) -> Any:
        return rt.executor.on_device(OpCall(name, tuple("abc"[:len(ins)]), ins, shape, attrs))[0]

    async def upload_read() -> None:
        await dev.download(memory.alloc_raw((n,), f32, host).buffer, (n,), f32)

    async def chain(length: int, x: Any, size: int) -> None:
        y = x
        for _ in range(length):
            y = op("scale", [y], (size,), a=1.0, b=0.0)
        await dev.download(y.buffer, (1,), f32)

    m = 96
    a = memory.alloc_raw((m, m), f32, np.ones((m, m), np.float32))

    async def matmuls(count: int) -> None:
        for _ in range(count):
            y = op("matmul", [a, a, None], (m, m), transpose_b=False)
        await dev.download(y.buffer, (1,), f32)

    x = memory.alloc_raw((n,), f32, host)
    t4 = memory.alloc_raw((4,), f32, host[:4].copy())
    await chain(1, t4, 4)                                   # compile outside the timings
    await matmuls(1)
    roundtrip = await _best(lambda: chain(1, t4, 4), 3)
    per_op = _beyond(roundtrip, *await _above(lambda k: chain(1 + k, t4, 4), roundtrip))
    transfer = 2 * host.nbytes / await _best(upload_read, 2)
    bw = 2 * host.nbytes / _beyond(roundtrip, *await _above(lambda k: chain(k, x, n), roundtrip))
    flops = 2 * m ** 3 / _beyond(roundtrip, *await _above(matmuls, roundtrip))
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=transfer, overhead_s=per_op,
                        roundtrip_s=roundtrip)


def _beyond(roundtrip: float, t: float, k: int) -> float:
    """Seconds per unit of k units of work whose run and read took t: what stands above the read's round trip, and
    at least half of t (all of the work's own time where it did not grow past two round trips, as _above tries).
    Each unit keeps its dispatch: a model's ops pay it too. Subtracting the dispatches' separately measured cost
    as well, from times a browser quantises to its polls, left nothing (or less) in pages: the 1 us floor then read
    SwiftShader as 14 TFLOP/s and Firefox's lavapipe as 450, and auto explored CLIP's image tower on SwiftShader."""
    return max(t - roundtrip, t / 2) / k
