"""Op execution: where each validated op call runs (the device, or the host's NumPy reference), recovery
around it (a device loss retries the whole call on the new device, out of memory steps down to the
host), and the lineage that lets recovery replay its output."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from . import hostops
from .errors import DeviceLost, OutOfMemory, TensorLost
from .kernels import OpCall
from .lineage import DEFERRED, Lost, Recipe
from .platform import sync_wait
from .telemetry import Plan
from .tensor import Tensor

if TYPE_CHECKING:
    from .runtime import Runtime

HOST, DEVICE = "cpu", "webgpu"   # the placements (the selector's backend names)


class Executor:
    """Runs one runtime's op calls."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.last: tuple[str, Plan] = (DEVICE, Plan("native", ""))   # where the last call ran, and its plan

    def run(self, call: OpCall) -> Tensor:
        """Choose where (host residency, the selector in auto mode), run, record lineage."""
        rt = self.rt
        with rt.lock:
            if rt.profiler is None:
                return self._run(call)
            t0, before = time.perf_counter(), rt.device.stats["dispatches"]
            out = self._run(call)
            shapes = [t.shape for t in call.inputs if t is not None]
            rt.profiler.op(call.op, shapes, *self.last, t0, rt.device.stats["dispatches"] - before, out)
            return out

    def note(self, name: str, reason: str, t0: float) -> None:
        """A computation a model ran on the host itself (a fused forward), started at perf_counter() t0:
        counted and profiled like an op."""
        plan = Plan("cpu", reason)
        self.rt.fallback.telemetry.count(name, plan, t0)
        if self.rt.profiler is not None:
            self.rt.profiler.op(name, [], HOST, plan, t0, 0, None)

    def _run(self, call: OpCall) -> Tensor:
        rt = self.rt
        if rt.device.is_host:   # NumPy is this runtime's device: its kernels are the references
            return self.run_host(call, Plan("native", "cpu backend: the NumPy reference is this runtime's kernel"))
        for name, t in zip(call.names, call.inputs):
            if t is not None and isinstance(t.handle, Lost):
                raise TensorLost(f"{call.op}: input {name!r} (shape {t.shape}) was lost with its GPU device and "
                                 f"cannot be rebuilt: {t.handle.reason}")
        if rt.lost and not rt.device.can_block:
            return self._deferred(call)
        auto = rt.selector
        if self.place(call) == HOST:
            t0 = time.perf_counter()
            out = self.run_host(call, Plan("cpu", "selected" if auto is not None else "host-resident input"))
            if auto is not None:
                auto.selector.record(call.workload, HOST, time.perf_counter() - t0)
            return out
        timing = auto is not None and auto.should_time_gpu(call.workload)
        if timing:
            rt.flush()
            t0 = time.perf_counter()
        for t in call.inputs:
            if t is not None and t.on_host:
                try:
                    rt.memory.to_device(t)
                except OutOfMemory:
                    return self._oom_host(call)
        try:
            out = rt.recovery.call(lambda: self._run_device(call), call.op)
            if timing:
                self.sync(out)
                auto.selector.record(call.workload, DEVICE, time.perf_counter() - t0)
        except OutOfMemory:
            return self._oom_host(call)
        except DeviceLost:
            if rt.device.can_block or not rt.lost:
                raise
            return self._deferred(call)   # page: replayed when the runtime recovers
        out.recipe = Recipe.of(call)
        return out

    def _run_device(self, call: OpCall) -> Tensor:
        rt = self.rt
        for t in call.inputs:
            if t is not None:
                t.usable()   # a recovery just now may have found it unrebuildable
        rt.op_depth += 1
        try:
            out = rt.fallback.execute(call)
        finally:
            rt.op_depth -= 1
        self.last = (DEVICE, rt.fallback.last_plan)
        return out

    def _deferred(self, call: OpCall) -> Tensor:
        self.last = ("deferred", Plan("deferred", "the device is lost: replayed when the page recovers"))
        out = self.rt.memory.track(Tensor(self.rt, DEFERRED, call.out_shape, np.float32))
        out.recipe = Recipe.of(call)
        self.rt.recovery.count("deferred_ops")
        return out

    def place(self, call: OpCall) -> str:
        """HOST or DEVICE for this call: the selector's choice in auto mode; otherwise the device unless an
        input already lives on the host and the host knows every input's values."""
        if self.rt.selector is not None:
            return self.rt.selector.place(call)
        on_host = [t for t in call.inputs if t is not None and t.on_host]
        if on_host and all(t is None or t.known_values() is not None for t in call.inputs):
            return HOST
        return DEVICE

    def host_values(self, t: Tensor) -> np.ndarray | None:
        """t's values on the host: known, or (where the device can block) read back; None where only an
        await could get them."""
        known = t.known_values()
        if known is not None:
            return known
        if not self.rt.device.can_block:
            return None
        values = t.numpy()          # a move to the host: from now on known on both sides
        values.flags.writeable = False
        t.host = values
        return values

    def run_host(self, call: OpCall, plan: Plan) -> Tensor:
        """The op's host kernel (hostops: fast float32, else its reference); the result stays on the host."""
        t0 = time.perf_counter()
        arrays = [None if t is None else self.host_values(t) for t in call.inputs]
        if any(a is None and t is not None for a, t in zip(arrays, call.inputs)):
            raise DeviceLost(f"{call.op}: an input lives only on the GPU and this platform cannot read it back "
                             "synchronously")
        out = Tensor(self.rt, hostops.run(call.op, arrays, call.attrs).reshape(call.out_shape), call.out_shape,
                     np.float32)
        self.rt.fallback.telemetry.count(call.op, plan, t0)
        self.last = (HOST, plan)
        return out

    def _oom_host(self, call: OpCall) -> Tensor:
        rt = self.rt
        if not rt.device.can_block and not all(t is None or t.known_values() is not None for t in call.inputs):
            raise OutOfMemory(f"{call.op}: out of device memory, and its inputs live only on the GPU (a page "
                              "cannot read them back inside a synchronous op)")
        rt.recovery.count("oom_lower_tier")
        rt.recovery.event("oom_lower_tier", op=call.op)
        return self.run_host(call, Plan("cpu", "out of device memory: lower tier"))

    def sync(self, t: Tensor) -> None:
        """Wait until the device has run everything queued (natively): a 4-byte read of t."""
        h = t.handle.handles[-1] if t.blocked else t.handle
        if t.size and not isinstance(h, np.ndarray):
            self.rt.recovery.call(lambda: self._read_word(h, t.dtype), "read")

    def _read_word(self, handle: object, dtype: np.dtype) -> np.ndarray:
        return sync_wait(self.rt.device.download(handle, (1,), dtype))
