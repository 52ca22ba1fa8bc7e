"""Recovery: classify GPU failures into gpuport's typed errors, and keep the work going.

Every runtime owns one `RecoveryManager` (`rt.recovery`). What it does, per failure:

  device lost     request a new device (same limits), rebuild the pipelines the old one had (the pipeline
                  cache and the manifest travel to the new device), then restore every live tensor:
                  - made from host data (`rt.tensor(array)`, Tensor._host): uploaded again;
                  - computed by ops: REPLAYED from its lineage (each op output records the op, its
                    attributes and its inputs' lineage down to host arrays; no GPU handles are kept, so
                    intermediates are still freed). Replay is deterministic: same kernels, same inputs;
                  - anything else (rt.empty outputs of user kernels, tensors a user kernel wrote into,
                    lineage reaching such a tensor): it cannot be rebuilt, so it becomes a *lost* tensor
                    and every later use raises DeviceLost naming it. Never a silently wrong answer.
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
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import (DeviceLost, GpuportError, GpuTimeout, GpuValidationError, OutOfMemory, ShaderCompileError,
                     UnsupportedFeature)

if TYPE_CHECKING:
    from .runtime import Runtime
    from .tensor import Tensor

_LOST_WORDS = ("device is lost", "device lost", "devicelost", "device was lost", "parent device is lost",
               "device has been lost", "instance dropped", "is destroyed", "device destroyed")
_OOM_WORDS = ("out of memory", "outofmemory", "out-of-memory", "allocation failed", "not enough memory",
              "failed to allocate")
_TIMEOUT_WORDS = ("timed out", "timeout", "time out")
_UNSUPPORTED_WORDS = ("not supported", "unsupported", "feature", "not enabled")


def classify(exc: BaseException, what: str = "") -> Exception:
    """The typed gpuport error for any failure a backend raised (typed errors pass through unchanged,
    except a validation error whose text says the device is lost, which becomes DeviceLost)."""
    text = str(exc)
    low = text.lower()
    where = f"{what}: " if what else ""
    if isinstance(exc, (DeviceLost, OutOfMemory, GpuTimeout, ShaderCompileError, UnsupportedFeature)):
        return exc  # already typed
    if any(w in low for w in _LOST_WORDS):
        return DeviceLost(f"{where}the GPU device was lost: {_first_line(text)}")
    if type(exc).__name__ in ("GPUOutOfMemoryError",) or any(w in low for w in _OOM_WORDS):
        return OutOfMemory(f"{where}{_first_line(text)}")
    if isinstance(exc, TimeoutError) or any(w in low for w in _TIMEOUT_WORDS):
        return GpuTimeout(f"{where}{_first_line(text)}")
    if isinstance(exc, GpuportError):
        return exc
    if type(exc).__name__ in ("GPUValidationError", "GPUPipelineError", "GPUInternalError"):
        if "shader" in low or "wgsl" in low:
            return ShaderCompileError(what or "shader", text)
        if any(w in low for w in _UNSUPPORTED_WORDS) and "missing" in low:
            return UnsupportedFeature(f"{where}{text}")
        return GpuValidationError(f"{where}{text}")
    return exc if isinstance(exc, Exception) else GpuportError(text)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-2:]) if lines else text


# -- lineage: how a tensor can be rebuilt ------------------------------------------------------------

class Leaf:
    """Host values (the array a tensor was made from, or a host-resident result)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class Recipe:
    """One op call over its inputs' lineage: enough to recompute an op output on a new device."""

    __slots__ = ("op", "names", "inputs", "out_shape", "attrs")

    def __init__(self, op: str, names: tuple[str, ...], inputs: list[Any], out_shape: tuple[int, ...],
                 attrs: dict[str, Any]) -> None:
        self.op, self.names, self.inputs, self.out_shape, self.attrs = op, names, inputs, out_shape, attrs


class View:
    """A reshape of another lineage."""

    __slots__ = ("source", "shape")

    def __init__(self, source: Any, shape: tuple[int, ...]) -> None:
        self.source, self.shape = source, shape


class Unrecoverable:
    """No way to rebuild: why (a user kernel wrote it, it was never given values...)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class TensorLost(DeviceLost):
    """This tensor's values died with the device and have no host copy or replayable lineage."""


class Fresh:
    """An uninitialised tensor (rt.empty) nobody wrote yet: a new allocation is as good as the old."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, dtype


class LostHandle:
    """The handle of a tensor that died with its device and cannot be rebuilt."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"LostHandle({self.reason!r})"


class Deferred:
    """The handle of a tensor made while the device is lost (page only): built when the runtime recovers."""

    __slots__ = ()


DEFERRED = Deferred()


def lineage(t: "Tensor") -> Any:
    """How `t` could be rebuilt: Leaf, Recipe, View or Unrecoverable."""
    if t._recipe is not None:
        return t._recipe
    if t._host is not None:
        return Leaf(t._host)
    if isinstance(t.handle, np.ndarray):
        return Leaf(t.handle)
    if isinstance(t.handle, LostHandle):
        return Unrecoverable(t.handle.reason)
    if t._recipe is None and isinstance(t.handle, Deferred):
        return Unrecoverable("made while the device was lost without values")
    return Unrecoverable(f"tensor {t.shape} {t.dtype} holds values only the device had (rt.empty or a user "
                         "kernel's output), with no host copy and no op lineage")


def recipe_of(call: Any) -> Recipe:
    return Recipe(call.op, call.names, [None if t is None else lineage(t) for t in call.inputs], call.out_shape,
                  dict(call.attrs))


def unrecoverable_reason(spec: Any) -> str | None:
    """Why a lineage cannot be replayed, or None when it can (iterative: lineages can be deep)."""
    stack, seen = [spec], set()
    while stack:
        s = stack.pop()
        if s is None or id(s) in seen:
            continue
        seen.add(id(s))
        if isinstance(s, Unrecoverable):
            return s.reason
        if isinstance(s, Recipe):
            stack.extend(s.inputs)
        elif isinstance(s, View):
            stack.append(s.source)
    return None


# -- the manager -------------------------------------------------------------------------------------

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


class RecoveryManager:
    """Per runtime: retries, device-loss recovery, out-of-memory fallbacks, statistics."""

    def __init__(self, rt: "Runtime", config: RecoveryConfig | None = None) -> None:
        self.rt = rt
        self.config = config or RecoveryConfig()
        self.faults: list[Fault] = []
        self.events: list[dict[str, Any]] = []
        self._stats = {k: 0 for k in ("device_losses", "recoveries", "failed_recoveries", "restored_tensors",
                                      "replayed_tensors", "lost_tensors", "rebuilt_pipelines", "retries",
                                      "timeouts", "oom_events", "oom_chunked", "oom_lower_tier",
                                      "deferred_ops")}
        self.last_recovery_ms = 0.0

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["last_recovery_ms"] = round(self.last_recovery_ms, 2)
        out["events"] = [dict(e) for e in self.events[-10:]]
        return out

    def _event(self, kind: str, **detail: Any) -> None:
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
        self.rt._device.fault = self._fault_hook

    def _fault_hook(self, at: str, nbytes: int = 0) -> None:
        for f in self.faults:
            if f.at == at and f.fired < f.count and nbytes >= f.min_bytes:
                f.fired += 1
                self.faults = [g for g in self.faults if g.fired < g.count]
                if f.kind == "device_lost":
                    if f.destroy:
                        self.rt._device.destroy_for_test()
                    raise DeviceLost(f"injected device loss at {at}")
                if f.kind == "out_of_memory":
                    raise OutOfMemory(f"injected out-of-memory allocating {nbytes:,} bytes")
                raise GpuTimeout(f"injected timeout at {at}")

    # -- transient retries -----------------------------------------------------------------------
    def _delay(self, attempt: int) -> float:
        return min(self.config.max_delay_s, self.config.base_delay_s * (2 ** attempt))

    def call(self, fn: Callable[[], Any], what: str, recover: bool = True) -> Any:
        """Run a sync device call: DeviceLost -> recover and retry (natively); timeouts -> backoff."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as raw:  # noqa: BLE001 - classified below, re-raised when not recoverable
                exc = classify(raw, what)
                if attempt >= self.config.max_retries or isinstance(exc, TensorLost):
                    raise exc
                if isinstance(exc, DeviceLost):
                    self.on_lost(exc)
                    if not recover or not self.can_recover_sync():
                        raise exc
                    self.recover()
                elif isinstance(exc, GpuTimeout):
                    self._stats["timeouts"] += 1
                    time.sleep(self._delay(attempt))
                else:
                    if exc is raw:
                        raise
                    raise exc from None
                self._stats["retries"] += 1
                attempt += 1

    async def call_async(self, fn: Callable[[], Any], what: str) -> Any:
        """`call` for awaitables (reads): recovery may await a new device (the page)."""
        attempt = 0
        while True:
            try:
                if self.rt._lost:
                    await self.recover_async()
                return await fn()
            except Exception as raw:  # noqa: BLE001
                exc = classify(raw, what)
                if attempt >= self.config.max_retries or isinstance(exc, TensorLost):
                    raise exc
                if isinstance(exc, DeviceLost):
                    if not self.rt._lost:
                        self.on_lost(exc)
                    await self.recover_async()
                elif isinstance(exc, GpuTimeout):
                    self._stats["timeouts"] += 1
                    await asyncio.sleep(self._delay(attempt))
                else:
                    if exc is raw:
                        raise
                    raise exc from None
                self._stats["retries"] += 1
                attempt += 1

    # -- device loss -----------------------------------------------------------------------------
    def can_recover_sync(self) -> bool:
        from .platform import IN_PYODIDE
        return not IN_PYODIDE

    def on_lost(self, exc: Exception) -> None:
        """The device is gone: note it once (several calls can notice the same loss)."""
        if not self.rt._lost:
            self._stats["device_losses"] += 1
            self._event("device_lost", error=str(exc)[:200])
        self.rt._lost = True
        self.rt._lost_error = exc

    def _check_budget(self) -> None:
        if self._stats["recoveries"] + self._stats["failed_recoveries"] >= self.config.max_recoveries:
            raise DeviceLost(f"the GPU device was lost {self._stats['device_losses']} times; not recovering again "
                             f"(max_recoveries={self.config.max_recoveries}): {self.rt._lost_error}")

    def recover(self) -> None:
        """Natively: a new device now, pipelines rebuilt, tensors restored or replayed."""
        if not self.rt._lost:
            return
        self._check_budget()
        t0 = time.perf_counter()
        try:
            device = self.rt._reopen_sync()
        except Exception as exc:
            self._stats["failed_recoveries"] += 1
            raise DeviceLost(f"the GPU device was lost and a new one could not be opened: {exc}") from None
        self._adopt(device, t0)
        self._rebuild_pipelines_sync(self._old_pipelines)
        self._restore()
        self.last_recovery_ms = (time.perf_counter() - t0) * 1e3
        self._event("recovered", ms=round(self.last_recovery_ms, 1))

    async def recover_async(self) -> None:
        """In a page: await a new device, precompile the old pipelines there, restore the tensors."""
        if not self.rt._lost:
            return
        self._check_budget()
        t0 = time.perf_counter()
        try:
            device = await self.rt._reopen_async()
        except Exception as exc:
            self._stats["failed_recoveries"] += 1
            raise DeviceLost(f"the GPU device was lost and a new one could not be opened: {exc}") from None
        self._adopt(device, t0)
        old = self._old_pipelines
        if old and hasattr(device, "precompile"):
            from .pipelines import PipelineSpec
            specs = [PipelineSpec(label, source, entry, tuple(sorted(consts.items())), bindings)
                     for source, entry, consts, bindings, label in old]
            done = []
            await device.precompile(specs, lambda spec, ms, err: done.append(err is None))
            self._stats["rebuilt_pipelines"] += sum(done)
        self._restore()
        self.last_recovery_ms = (time.perf_counter() - t0) * 1e3
        self._event("recovered", ms=round(self.last_recovery_ms, 1))

    def _adopt(self, device: Any, t0: float) -> None:
        rt = self.rt
        old = rt._device
        self._old_pipelines = [p.extra["spec"] for p in getattr(old, "_pipelines", {}).values() if "spec" in p.extra]
        device.manifest, device.manifest_store = getattr(old, "manifest", None), getattr(old, "manifest_store", None)
        device.fault = old.__dict__.get("fault")
        try:
            old._pending.clear()
            old.close()
        except Exception:  # noqa: BLE001 - the old device is gone; closing it may fail, that is fine
            pass
        rt._device = device
        rt._generation += 1
        rt._lost = False
        self._stats["recoveries"] += 1

    def _rebuild_pipelines_sync(self, specs: list[tuple[Any, ...]]) -> None:
        for source, entry, consts, bindings, label in specs:
            try:
                self.rt._device.compile(source, entry, consts, bindings, label)
                self._stats["rebuilt_pipelines"] += 1
            except GpuportError:
                pass  # it compiled before; if not now, the op that needs it raises its own error

    def _restore(self) -> None:
        """Every live GPU tensor: uploaded from host values, replayed from lineage, or marked lost."""
        rt = self.rt
        live = [t for t in list(rt._live) if not isinstance(t.handle, (np.ndarray, LostHandle))]
        memo: dict[int, "Tensor"] = {}
        # host-backed first (replays read them), then op outputs
        live.sort(key=lambda t: 0 if t._recipe is None and t._host is not None else 1)
        for t in live:
            spec = lineage(t)
            reason = unrecoverable_reason(spec)
            if reason is not None:
                t.handle = LostHandle(reason)
                rt._live.discard(t)
                self._stats["lost_tensors"] += 1
                continue
            if isinstance(spec, Leaf):
                t.handle = rt._alloc(t.shape, t.dtype, host=np.ascontiguousarray(spec.array).reshape(t.shape)).handle
                self._stats["restored_tensors"] += 1
            elif isinstance(spec, Fresh):
                t.handle = rt._alloc(t.shape, t.dtype).handle
            else:
                t.handle = self._materialize(spec, memo).handle
                self._stats["replayed_tensors"] += 1

    def _materialize(self, spec: Any, memo: dict[int, "Tensor"]) -> "Tensor":
        """A tensor on the current device for a lineage (iterative post-order; shared parts built once)."""
        from .fallback import OpCall
        rt = self.rt
        stack = [(spec, False)]
        while stack:
            s, ready = stack.pop()
            if s is None or id(s) in memo:
                continue
            if isinstance(s, Leaf):
                memo[id(s)] = rt._alloc(s.array.shape, s.array.dtype, host=np.ascontiguousarray(s.array))
            elif isinstance(s, Fresh):
                memo[id(s)] = rt._alloc(s.shape, s.dtype)
            elif isinstance(s, View):
                if ready:
                    memo[id(s)] = memo[id(s.source)].reshape(s.shape)
                else:
                    stack += [(s, True), (s.source, False)]
            elif isinstance(s, Recipe):
                if ready:
                    inputs = [None if i is None else memo[id(i)] for i in s.inputs]
                    out = rt.fallback._execute(OpCall(s.op, s.names, inputs, s.out_shape, dict(s.attrs)))
                    out._recipe = s
                    memo[id(s)] = out
                else:
                    stack.append((s, True))
                    stack += [(i, False) for i in s.inputs if i is not None]
            else:
                raise DeviceLost(f"cannot rebuild a tensor: {getattr(s, 'reason', s)}")
        return memo[id(spec)]

    # -- out of memory ---------------------------------------------------------------------------
    def on_oom(self, exc: Exception, shape: tuple[int, ...], dtype: np.dtype, host: np.ndarray | None) -> "Tensor":
        """An allocation failed: retry after releasing, then blocks (host data), then host residency."""
        from .tensor import Tensor
        rt = self.rt
        self._stats["oom_events"] += 1
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        self._event("out_of_memory", bytes=nbytes, error=str(exc)[:200])
        try:                                   # 1. release what Python dropped and retry once
            rt._device.flush()
            gc.collect()
            rt._device.flush()
            self._stats["retries"] += 1
            return rt._alloc(shape, dtype, host=host, oom=False)
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
                    t = rt._alloc(shape, dtype, host=host, bounds=bounds, oom=False)
                    self._stats["oom_chunked"] += 1
                    self._event("oom_chunked", blocks=len(bounds) - 1)
                    return t
                except OutOfMemory:
                    continue
        if host is None:
            # an op output: the caller (Runtime._op) runs the op on the host instead
            raise OutOfMemory(f"allocating {nbytes:,} bytes for a {dtype} tensor of shape {shape} failed even "
                              f"after releasing memory: {exc}")
        self._stats["oom_lower_tier"] += 1                         # 3. the host keeps it (cpu residency)
        self._event("oom_lower_tier", bytes=nbytes)
        return Tensor(rt, np.array(host, copy=True), shape, dtype, None)
