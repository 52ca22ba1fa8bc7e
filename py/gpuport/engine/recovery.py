"""Recovery: classify GPU failures into gpuport's typed errors, and keep the work going.

Every runtime owns one `RecoveryManager` (`rt.recovery`). What it does, per failure:

  device lost     request a new device (same limits), rebuild the pipelines the old one had (the runtime's
                  pipeline cache outlives the device), then restore every live tensor:
                  - made from host data (`rt.tensor(array)`, Tensor.host): uploaded again;
                  - computed by ops: REPLAYED from its lineage (each op output records the op, its
                    attributes and its inputs' lineage down to host arrays; no GPU handles are kept, so
                    intermediates are still freed). Replay is deterministic: same kernels, same inputs;
                  - anything else (rt.empty outputs of user kernels, tensors a user kernel wrote into,
                    lineage reaching such a tensor): it cannot be rebuilt, so it becomes a *lost* tensor
                    and every later use raises TensorLost (a DeviceLost) naming it. Never a silently wrong answer.
                  Then the failed call is retried. Natively all of this happens inside the failing call;
                  in a page a new device needs an await, so sync ops arriving while the device is lost are
                  recorded (their outputs are deferred) and the next `await tensor.read()` recovers first.
  out of memory   (an allocation the device refused, or one beyond the runtime's memory_budget)
                  1. flush, collect garbage and retry once (freed buffers are released at submit);
                  2. chunked: a host-backed tensor is stored as blocks of whole rows (tensor.Blocks) that
                     the fallback strategies serve (layer decomposition, tiling), when single large
                     buffers are what fails;
                  3. a lower tier: the tensor stays on the host (NumPy residency) and ops touching it run
                     the cpu strategy. The answer is the reference's.
  timeout         transient: retried with exponential backoff (base_delay_s * 2**attempt, bounded).
  validation, compile, unsupported feature: raised as their typed error (retrying cannot help).

`rt.recovery.stats()` counts device_losses, recoveries, failed_recoveries, restored_tensors,
replayed_tensors, lost_tensors, rebuilt_pipelines, retries, timeouts, oom_events, oom_chunked,
oom_lower_tier. `rt.recovery.inject(...)` is the fault-injection hook tests use.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..backends.auto import request_device
from ..errors import DeviceLost, GpuTimeout, OutOfMemory, TensorLost, classify
from ..platform import sync_wait
from ..tensor import storage
from ..tensor.lineage import Fresh, Leaf, Recipe, View, lost_reason
from ..tensor.storage import HostArray
from ..tensor.tensor import Tensor
from ..types import OpCall

if TYPE_CHECKING:
    from ..runtime import Runtime


@dataclass
class Fault:
    kind: str                    # "device_lost", "out_of_memory", "timeout"
    at: str                      # "submit", "read", "alloc"
    count: int = 1
    destroy: bool = True         # device_lost: really destroy the device (else only raise)
    min_bytes: int = 0           # alloc faults: only allocations of at least this many bytes
    fired: int = 0


@dataclass
class RecoveryConfig:
    max_retries: int = 3
    base_delay_s: float = 0.005
    max_delay_s: float = 0.25
    max_recoveries: int = 5       # device losses recovered per runtime before giving up (a dying GPU)


STAT_KEYS = ("device_losses", "recoveries", "failed_recoveries", "restored_tensors", "replayed_tensors",
             "lost_tensors", "rebuilt_pipelines", "retries", "timeouts", "oom_events", "oom_chunked",
             "oom_lower_tier", "deferred_ops")


class RecoveryManager:
    """Per runtime: retries, device-loss recovery, out-of-memory fallbacks, statistics."""

    def __init__(self, rt: "Runtime", config: RecoveryConfig | None = None) -> None:
        self.rt = rt
        self.config = config or RecoveryConfig()
        self.faults: list[Fault] = []
        self.events: list[dict[str, Any]] = []
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self.last_recovery_ms = 0.0
        self.lost: Exception | None = None   # what lost the device, until a new one is adopted

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["last_recovery_ms"] = round(self.last_recovery_ms, 2)
        out["events"] = [dict(e) for e in self.events[-10:]]
        return out

    def count(self, key: str, n: int = 1) -> None:
        """Bump one of STAT_KEYS."""
        self._stats[key] += n

    def event(self, kind: str, **detail: Any) -> None:
        """Note what happened (the last 50 are kept; stats() shows 10)."""
        self.events.append({"kind": kind, "t": round(time.time(), 3), **detail})
        del self.events[:-50]

    # -- fault injection (tests) -----------------------------------------------------------------
    def inject(self, kind: str, at: str = "submit", count: int = 1, destroy: bool = True,
               min_bytes: int = 0) -> None:
        """Make the next `count` backend calls at `at` ("submit", "read", "alloc") fail with `kind`
        ("device_lost": natively the wgpu device is really destroyed first unless destroy=False;
        "out_of_memory"; "timeout")."""
        if kind not in ("device_lost", "out_of_memory", "timeout") or at not in ("submit", "read", "alloc"):
            raise ValueError(f"inject: unknown fault {kind!r} at {at!r}")
        self.faults.append(Fault(kind, at, count, destroy, min_bytes))
        self.rt.device.fault = self._fault_hook

    def _fault_hook(self, at: str, nbytes: int = 0) -> None:
        for f in self.faults:
            if f.at == at and f.fired < f.count and nbytes >= f.min_bytes:
                f.fired += 1
                self.faults = [g for g in self.faults if g.fired < g.count]
                if f.kind == "device_lost":
                    if f.destroy:
                        self.rt.device.destroy_for_test()
                    raise DeviceLost(f"injected device loss at {at}")
                if f.kind == "out_of_memory":
                    raise OutOfMemory(f"injected out-of-memory allocating {nbytes:,} bytes")
                raise GpuTimeout(f"injected timeout at {at}")

    # -- retries: one mechanism for sync and async calls -----------------------------------------
    def _delay(self, attempt: int) -> float:
        return min(self.config.max_delay_s, self.config.base_delay_s * (2 ** attempt))

    def call(self, fn: Callable[[], Any], what: str, recover: bool = True) -> Any:
        """Run a sync device call: DeviceLost -> recover and retry (where the device can block);
        timeouts -> backoff. The first attempt costs one try block."""
        try:
            return fn()
        except Exception as raw:  # noqa: BLE001 - classified by _retry, re-raised when not recoverable
            return sync_wait(self._retry(fn, what, raw, blocking=True, recover=recover), what)

    async def call_async(self, fn: Callable[[], Any], what: str, blocking: bool = False) -> Any:
        """`call` for awaitables (reads): recovery may await a new device (the page). `blocking`: driven
        by sync_wait (tensor.numpy()), so backoff sleeps instead of awaiting."""
        if self.rt.lost:
            await self.recover_async()
        try:
            return await fn()
        except Exception as raw:  # noqa: BLE001
            return await self._retry(fn, what, raw, blocking=blocking, recover=True)

    async def _retry(self, fn: Callable[[], Any], what: str, raw: Exception, blocking: bool, recover: bool) -> Any:
        attempt = 0
        while True:
            exc = classify(raw, what)
            if attempt >= self.config.max_retries or isinstance(exc, TensorLost):
                raise exc
            if isinstance(exc, DeviceLost):
                self.on_lost(exc)
                if not recover or (blocking and not self.rt.device.can_block):
                    raise exc
                await self.recover_async()
            elif isinstance(exc, GpuTimeout):
                self._stats["timeouts"] += 1
                if blocking:
                    time.sleep(self._delay(attempt))
                else:
                    await asyncio.sleep(self._delay(attempt))
            elif exc is raw:
                raise exc
            else:
                raise exc from None
            self._stats["retries"] += 1
            attempt += 1
            try:
                result = fn()
                return await result if inspect.isawaitable(result) else result
            except Exception as again:  # noqa: BLE001
                raw = again

    # -- device loss -----------------------------------------------------------------------------
    def on_lost(self, exc: Exception) -> None:
        """The device is gone: note it once (several calls can notice the same loss)."""
        if self.lost is None:
            self._stats["device_losses"] += 1
            self.event("device_lost", error=str(exc)[:200])
        self.lost = exc

    def recover(self) -> None:
        """Natively: recover now (a new device, pipelines rebuilt, tensors restored or replayed)."""
        sync_wait(self.recover_async(), "device recovery")

    async def recover_async(self) -> None:
        """A new device (same limits), this runtime's pipelines rebuilt there, live tensors restored."""
        rt = self.rt
        if not rt.lost:
            return
        if self._stats["recoveries"] + self._stats["failed_recoveries"] >= self.config.max_recoveries:
            raise DeviceLost(f"the GPU device was lost {self._stats['device_losses']} times; not recovering again "
                             f"(max_recoveries={self.config.max_recoveries}): {self.lost}")
        t0 = time.perf_counter()
        try:
            device = await request_device(rt.open_limits)
        except Exception as exc:
            self._stats["failed_recoveries"] += 1
            raise DeviceLost(f"the GPU device was lost and a new one could not be opened: {exc}") from None
        old = rt.device
        try:
            old.close()
        except Exception:  # noqa: BLE001 - the old device is gone; closing it may fail, that is fine
            pass
        device.fault = old.fault
        rt.adopt(device)
        self.lost = None
        self._stats["recoveries"] += 1
        self._stats["rebuilt_pipelines"] += await rt.pipelines.rebuild(device)
        self._restore()
        self.last_recovery_ms = (time.perf_counter() - t0) * 1e3
        self.event("recovered", ms=round(self.last_recovery_ms, 1))

    def _restore(self) -> None:
        """Every live GPU tensor: uploaded from host values, replayed from lineage, or marked lost."""
        rt = self.rt
        live = [t for t in list(rt.memory.live) if not isinstance(t.storage, (HostArray, storage.Lost))]
        memo: dict[int, Tensor] = {}
        # host-backed first (replays read them), then op outputs
        live.sort(key=lambda t: 0 if t.recipe is None and t.host is not None else 1)
        for t in live:
            spec = t.lineage()
            reason = lost_reason(spec)
            if reason is not None:
                t.storage = storage.Lost(reason)
                rt.memory.live.discard(t)
                self._stats["lost_tensors"] += 1
                continue
            if isinstance(spec, Leaf):
                t.storage = rt.memory.alloc(t.shape, t.dtype, host=np.ascontiguousarray(spec.array).reshape(t.shape)).storage
                self._stats["restored_tensors"] += 1
            elif isinstance(spec, Fresh):
                t.storage = rt.memory.alloc(t.shape, t.dtype).storage
            else:
                t.storage = self._materialize(spec, memo).storage
                self._stats["replayed_tensors"] += 1

    def _materialize(self, spec: Any, memo: dict[int, Tensor]) -> Tensor:
        """A tensor on the current device for a lineage (iterative post-order; shared parts built once)."""
        rt = self.rt
        stack = [(spec, False)]
        while stack:
            s, ready = stack.pop()
            if s is None or id(s) in memo:
                continue
            if isinstance(s, Leaf):
                memo[id(s)] = rt.memory.alloc(s.array.shape, s.array.dtype, host=np.ascontiguousarray(s.array))
            elif isinstance(s, Fresh):
                memo[id(s)] = rt.memory.alloc(s.shape, s.dtype)
            elif isinstance(s, View):
                if ready:
                    memo[id(s)] = memo[id(s.source)].reshape(s.shape)
                else:
                    stack += [(s, True), (s.source, False)]
            elif isinstance(s, Recipe):
                if ready:
                    inputs = [None if i is None else memo[id(i)] for i in s.inputs]
                    out, _ = rt.executor.on_device(OpCall(s.op, s.names, inputs, s.out_shape, dict(s.attrs)))
                    out.recipe = s
                    memo[id(s)] = out
                else:
                    stack.append((s, True))
                    stack += [(i, False) for i in s.inputs if i is not None]
            else:
                raise DeviceLost(f"cannot rebuild a tensor: {getattr(s, 'reason', s)}")
        return memo[id(spec)]

    # -- out of memory ---------------------------------------------------------------------------
    def on_oom(self, exc: Exception, shape: tuple[int, ...], dtype: np.dtype, host: np.ndarray | None) -> Tensor:
        """An allocation failed: retry after releasing, then blocks (host data), then host residency."""
        rt = self.rt
        self._stats["oom_events"] += 1
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        self.event("out_of_memory", bytes=nbytes, error=str(exc)[:200])
        try:                                   # 1. release what Python dropped and retry once
            rt.device.flush()
            gc.collect()
            rt.device.flush()
            self._stats["retries"] += 1
            return rt.memory.alloc(shape, dtype, host=host, oom=False)
        except OutOfMemory:
            pass
        if host is not None and len(shape) >= 1 and nbytes >= 1024:   # 2. chunked
            unit = shape[-1] if len(shape) >= 2 and shape[-1] > 0 else 1
            size = nbytes // np.dtype(dtype).itemsize
            for parts in (4, 16):
                step = max(unit, (size // parts) // unit * unit)
                if step >= size:
                    continue
                bounds = list(range(0, size, step)) + [size]
                try:
                    t = rt.memory.alloc(shape, dtype, host=host, bounds=bounds, oom=False)
                    self._stats["oom_chunked"] += 1
                    self.event("oom_chunked", blocks=len(bounds) - 1)
                    return t
                except OutOfMemory:
                    continue
        if host is None:
            # an op output: the caller (the executor) runs the op on the host instead
            raise OutOfMemory(f"allocating {nbytes:,} bytes for a {dtype} tensor of shape {shape} failed even "
                              f"after releasing memory: {exc}")
        rt.placement.step_down(f"a {nbytes:,}-byte tensor", host_knows=True)   # 3. the host keeps it
        return Tensor(rt, HostArray(np.array(host, copy=True)), shape, dtype, None)
