"""Op execution: each validated op call runs where placement decided (the device's strategies, or the host
kernels), with recovery around it (a device loss retries the whole call on the new device, out of memory
steps down to the host) and the lineage that lets recovery replay its output."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeviceLost, OutOfMemory, ShaderCompileError, TensorLost
from ..ops.opspecs import OPS
from ..platform import sync_wait
from ..tensor.lineage import Recipe
from ..tensor.storage import Deferred, HostArray, Lost
from ..tensor.tensor import Tensor
from ..types import DEVICE, HOST, Decision, OpCall
from .strategies import Strategies

if TYPE_CHECKING:
    from ..runtime import Runtime


class Executor:
    """Runs one runtime's op calls where `rt.placement` puts them."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.strategies = Strategies(rt, rt.placement.planner, rt.placement.telemetry)
        self.depth = 0   # device op calls in progress: an allocation inside one leaves device loss to the call

    def run(self, call: OpCall) -> Tensor:
        """Place, run, count, record lineage."""
        rt = self.rt
        with rt.lock:
            t0, before = time.perf_counter(), rt.device.stats["dispatches"]
            for name, t in zip(call.names, call.inputs):
                if t is not None and isinstance(t.storage, Lost):
                    raise TensorLost(f"{call.op}: input {name!r} (shape {t.shape}) was lost with its GPU device and "
                                     f"cannot be rebuilt: {t.storage.reason}")
            decision = rt.placement.decide(call)
            if decision.where == HOST:
                out = self.run_host(call)
                rt.placement.learn(call, HOST, time.perf_counter() - t0)
            elif decision.where == DEVICE:
                out, decision = self._on_device_placed(call, decision)
            else:
                out = self._deferred(call)
            if not out.on_host:
                out.recipe = Recipe.of(call)
            rt.placement.ran(call.op, decision, t0, [t.shape for t in call.inputs if t is not None],
                             rt.device.stats["dispatches"] - before, out)
            return out

    def _on_device_placed(self, call: OpCall, decision: Decision) -> tuple[Tensor, Decision]:
        """The call on the device, host inputs moved there first; timed for auto's learning while it
        lacks samples; a lower tier (the host) when the device has no room."""
        rt = self.rt
        timing = rt.placement.should_time(call)
        if timing:
            rt.flush()
        t0 = time.perf_counter()
        try:
            for t in call.inputs:
                if t is not None and t.on_host:
                    rt.memory.to_device(t)
            out, decision = rt.recovery.call(lambda: self.on_device(call, decision), call.op)
        except OutOfMemory:
            step = rt.placement.step_down(call.op, call.host_known)
            return self.run_host(call), step
        except DeviceLost:
            if rt.device.can_block or not rt.lost:
                raise
            return self._deferred(call), Decision("deferred", "deferred", "the device was lost during the call")
        if timing:
            self.sync(out)
            rt.placement.learn(call, DEVICE, time.perf_counter() - t0)
        return out, decision

    def on_device(self, call: OpCall, decision: Decision | None = None) -> tuple[Tensor, Decision]:
        """`call` on the device by `decision`'s strategy (the planner's when None: recovery's replay and
        calibration run device work by construction). An f16 shader the adapter advertises but cannot
        compile steps down to f32, remembered."""
        rt = self.rt
        planner = rt.placement.planner
        decision = decision or planner.plan(call)
        for t in call.inputs:
            if t is not None:
                t.usable()   # a recovery just now may have found it unrebuildable
        self.depth += 1
        try:
            try:
                return self.strategies.run(call, decision), decision
            except ShaderCompileError:
                if decision.strategy != "f16":
                    raise
                planner.f16_broken.add(call.op)
                decision = Decision(DEVICE, "native", "f16 shader failed to compile: f32")
                return self.strategies.run(call, decision), decision
        finally:
            self.depth -= 1

    def _deferred(self, call: OpCall) -> Tensor:
        out = self.rt.memory.track(Tensor(self.rt, Deferred(), call.out_shape, OPS[call.op].out_dtype))
        self.rt.recovery.count("deferred_ops")
        return out

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

    def run_host(self, call: OpCall) -> Tensor:
        """The op's host kernel (its spec's: fast float32, else its reference); the result stays on the host."""
        arrays = [None if t is None else self.host_values(t) for t in call.inputs]
        if any(a is None and t is not None for a, t in zip(arrays, call.inputs)):
            raise DeviceLost(f"{call.op}: an input lives only on the GPU and this platform cannot read it back "
                             "synchronously")
        spec = OPS[call.op]
        values = spec.run_host(arrays, call.attrs).reshape(call.out_shape)
        return Tensor(self.rt, HostArray(values), call.out_shape, spec.out_dtype)

    def sync(self, t: Tensor) -> None:
        """Wait until the device has run everything queued (natively): a 4-byte read of t."""
        if t.size and t.storage.on_device:
            last = t.blocks.buffers[-1] if t.blocked else t.buffer
            self.rt.recovery.call(lambda: self._read_word(last, t.dtype), "read")

    def _read_word(self, handle: object, dtype: np.dtype) -> np.ndarray:
        return sync_wait(self.rt.device.download(handle, (1,), dtype))
