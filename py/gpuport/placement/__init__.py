"""Placement: the one answer to "where does this run, by which strategy, and why" (a `Decision`), for all the
work a runtime does. Every caller asks `rt.placement`; nothing else consults the selector or the planner.

- op calls (`decide`): the cpu backend runs everything on the host; a page whose device is lost defers the
  call (replayed when the next await recovers the device); under backend="auto" the selector picks the
  device or the host per call (auto.py); on a fixed webgpu backend a call whose inputs already live on the
  host stays there when the host knows every input. On the device the planner picks the kernel or the
  strategy that fits the tier's limits (planner.py), or hands the call to the host where nothing on the
  device serves it and the host knows the values.
- user kernels (`kernel`): the WGSL on the device, or the kernel's NumPy reference on the host.
- whole computations of a model (`whole`, `generation`): one fused host forward, or op by op on the device.
- calls of the array namespace (`array`, `host_only`): gpuport.xp's functions, per call like op calls (auto's
  selector, or the one backend), and the functions the device has no kernel for (linalg's factorisations).
- out of memory (`step_down`): the host takes the work when it knows the values.

`ran` counts what actually ran where (telemetry, auto's selection counts, the profile, `counts()`, shown as
`rt.info()["ran"]`): tests assert from it that the device ran what they claim to test.

Layer: above loading/; imports every layer below it. Its runtime is a type-only back-reference.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ..errors import OutOfMemory
from ..types import DEFERRED, DEVICE, HOST, Decision, OpCall, Operand
from .auto import AutoSelection, attach
from .planner import STRATEGIES, Planner, over_budget_strategy
from .telemetry import Telemetry

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..tensor.tensor import Tensor

OpShapes = Sequence[tuple[str, Sequence[tuple[int, ...]]]]
CPU_BACKEND = Decision(HOST, "native", "cpu backend: the host kernels are this runtime's kernels")
# an array call's decisions, made once and shared as CPU_BACKEND is (the namespace asks on every call)
_PINNED_HOST, _SELECTED_HOST = Decision(HOST, "cpu", "pinned to the host"), Decision(HOST, "cpu", "selected")
_PINNED_DEVICE = Decision(DEVICE, "native", "pinned to the device")
_SELECTED_DEVICE = Decision(DEVICE, "native", "selected")
_WEBGPU_ARRAYS = Decision(DEVICE, "native", "the webgpu backend runs every array call on the device")


@functools.cache
def _names(n: int) -> tuple[str, ...]:
    """The input names of an array call of n operands."""
    return tuple(f"x{i}" for i in range(n))


class Placement:
    """Decides, for one runtime, where each piece of work runs; counts where it ran."""

    def __init__(self, rt: "Runtime", planner: Planner, telemetry: Telemetry) -> None:
        self.rt, self.planner, self.telemetry = rt, planner, telemetry
        self.auto: AutoSelection | None = None   # set by attach() when opened with backend="auto" on a device
        self._ran: dict[str, dict[str, int]] = {}
        self.last: Decision | None = None   # what the last counted work ran as

    @property
    def mode(self) -> str:
        """"auto" (per call, by measurement) or the one backend everything runs on."""
        return "auto" if self.auto is not None else self.rt.device.name

    @contextmanager
    def pinned(self, backend: str) -> Iterator[None]:
        """Everything in the block runs on `backend` ("webgpu" or "cpu") under auto; a fixed backend accepts
        only itself."""
        if self.auto is not None:
            with self.auto.pinned(backend):
                yield
            return
        if backend != self.rt.device.name:
            raise ValueError(f"this runtime runs every op on {self.rt.device.name!r}; open it with backend='auto' "
                             f"to place ops on {backend!r}")
        yield

    # -- op calls --------------------------------------------------------------------------------------
    def decide(self, call: OpCall) -> Decision:
        """Where `call` runs and by which strategy (raises LimitExceeded / UnsupportedFeature where nothing
        can run it)."""
        rt = self.rt
        if rt.device.is_host:
            return CPU_BACKEND
        if rt.lost and not rt.device.can_block:
            return Decision(DEFERRED, "deferred", "the device is lost: replayed when the page recovers")
        if self.auto is not None:
            if self.auto.place(call) == HOST:
                return Decision(HOST, "cpu", "pinned to the host" if self.auto.pin == HOST else "selected")
        elif any(t is not None and t.on_host for t in call.inputs) and call.host_known:
            return Decision(HOST, "cpu", "host-resident input")
        return self.planner.plan(call)

    def should_time(self, call: OpCall) -> bool:
        """Whether a device run of `call` is timed for auto's learning (it costs a flush and a read)."""
        return self.auto is not None and call.workload is not None and self.auto.should_time_gpu(call.workload)

    def learn(self, call: OpCall, where: str, seconds: float) -> None:
        """One timed run of `call` on `where`, for auto's selector."""
        if self.auto is not None and call.workload is not None:
            self.auto.selector.record(call.workload, where, seconds)

    # -- user kernels ----------------------------------------------------------------------------------
    def kernel(self, has_reference: bool, host_knows: Callable[[], bool]) -> Decision:
        """Where a user kernel's dispatch runs: its WGSL on the device, or its reference on the host where
        the WGSL cannot or should not run. `host_knows()`: the host has every bound tensor's values."""
        rt = self.rt
        if rt.device.is_host:
            return Decision(HOST, "native", "cpu backend: the kernel's NumPy reference")
        if has_reference:
            if self.auto is not None and self.auto.host_only:
                return Decision(HOST, "cpu", "pinned to the host (rt.pinned)" if self.auto.pin == HOST
                                else "selected: auto is limited to the host")
            if rt.lost and not rt.device.can_block and host_knows():
                return Decision(HOST, "cpu", "the device is lost: a page recovers it at the next await")
        # the selector has no cost model for arbitrary WGSL: auto otherwise keeps user kernels on the GPU
        return Decision(DEVICE, "native", "the kernel's WGSL on the device")

    # -- the array namespace (gpuport.xp) ---------------------------------------------------------------
    def array(self, name: str, operands: Sequence[Operand], out_shape: tuple[int, ...]) -> Decision:
        """Where one call of the array namespace runs: the cpu backend's NumPy; under auto the selector's
        side (a GPU-only operand in a page keeps it on the device); on a fixed webgpu backend the device."""
        rt = self.rt
        if rt.device.is_host:
            return CPU_BACKEND
        if self.auto is not None:
            call = OpCall(name, _names(len(operands)), list(operands), tuple(out_shape))
            if self.auto.place(call) == HOST:
                return _PINNED_HOST if self.auto.pin == HOST else _SELECTED_HOST
            return _PINNED_DEVICE if self.auto.pin == DEVICE else _SELECTED_DEVICE
        return _WEBGPU_ARRAYS

    def host_only(self, name: str, why: str) -> Decision:
        """A call of the array namespace the device has no kernel for (`why` says which): NumPy on the host, on
        every backend; counted as such when it runs."""
        if self.rt.device.is_host:
            return CPU_BACKEND
        return Decision(HOST, "cpu", f"{name} runs on the host: {why}")

    # -- whole computations of a model -----------------------------------------------------------------
    def whole(self, name: str, ops: OpShapes, host_can: bool = True,
              upload: Callable[[], int] | None = None) -> Decision:
        """Where a model runs one computation (`ops` with their shapes: a forward) as a whole: the cpu
        backend's host; never the host on a fixed webgpu backend; under auto the side expected to finish
        it sooner. `host_can`: the host has what it needs (every weight's values); `upload()`: bytes the
        device would have to receive first (weights only the host has), counted in its cost (asked only
        where the device is weighed: summing a model's tensors took 0.17 ms of a 1.3 ms MiniLM call)."""
        if self.rt.device.is_host:
            return CPU_BACKEND
        if self.auto is None or not host_can:
            return Decision(DEVICE, "native", "op by op on the device")
        if self.auto.prefers_host(name, ops, upload):
            return Decision(HOST, "cpu", "selected: fused host forward")
        return Decision(DEVICE, "native", "selected: op by op on the device")

    def generation(self, name: str, forward: str, prompt: OpShapes, step: OpShapes, new_tokens: int) -> Decision:
        """Where a generation runs (its cache lives there): under auto, the side expected to finish it all
        sooner: the `forward` over its `prompt` ops, then one over its `step` ops per further new token."""
        if self.rt.device.is_host:
            return CPU_BACKEND
        auto = self.auto
        if auto is None:
            return Decision(DEVICE, "native", "op by op on the device")

        def costs() -> dict[str, float]:
            first, each = auto.whole_costs(forward, prompt), auto.whole_costs(forward, step)
            return {b: first[b] + (new_tokens - 1) * each[b] for b in first}
        if auto.prefers_host_overall(name, costs):
            return Decision(HOST, "cpu", "selected: host forwards")
        return Decision(DEVICE, "native", "selected: device forwards")

    def learn_whole(self, name: str, ops: OpShapes, where: str, seconds: float) -> None:
        """One timed whole computation (start to result read), for auto's selector."""
        if self.auto is not None:
            self.auto.record_whole(name, ops, where, seconds)

    # -- out of memory ---------------------------------------------------------------------------------
    def step_down(self, what: str, host_knows: bool) -> Decision:
        """The device has no room for `what`: the host takes it where it knows the values (counted as
        recovery's lower tier); a page that cannot read the values back raises OutOfMemory."""
        if not host_knows and not self.rt.device.can_block:
            raise OutOfMemory(f"{what}: out of device memory, and its inputs live only on the GPU (a page "
                              "cannot read them back inside a synchronous call)")
        self.rt.recovery.count("oom_lower_tier")
        self.rt.recovery.event("oom_lower_tier", op=what)
        return Decision(HOST, "cpu", "out of device memory: lower tier")

    # -- what ran where --------------------------------------------------------------------------------
    def ran(self, name: str, decision: Decision, t0: float, shapes: Sequence[tuple[int, ...]] = (),
            dispatches: int = 0, out: Any = None, selection: bool = False) -> None:
        """`name` ran as `decision` says, started at perf_counter() t0: counted in `counts()`, the telemetry,
        the profile, and (`selection`: work auto did not place per call, a user kernel) auto's counts."""
        per = self._ran.setdefault(name, {})
        per[decision.where] = per.get(decision.where, 0) + 1
        self.last = decision
        if decision.where != DEFERRED:   # nothing ran yet: replayed (and counted) when the page recovers
            self.telemetry.count(name, decision, t0)
        if selection and self.auto is not None:
            self.auto.note(name, decision.where)
        if self.rt.profiler is not None:
            self.rt.profiler.op(name, list(shapes), decision, t0, dispatches, out)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per op, user kernel (`kernel:<label>`) or model computation: how many ran on each side."""
        return {name: dict(per) for name, per in self._ran.items()}

    def info(self) -> dict[str, Any] | None:
        """Auto's selection report, or None on a fixed backend."""
        return None if self.auto is None else self.auto.info()


class HostBytes:
    """A model's `upload` for `Placement.whole`: the bytes of its weights that only the host holds (what a device
    forward would upload first). Each weight's size is taken once and where it lives asked per call (a device forward
    uploads it, recovery restores it): summing the sizes of MiniLM's 101 weights per call took 0.17 ms of a page's
    10 ms sentence."""

    __slots__ = ("_sized",)

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self._sized = tuple((t, t.nbytes) for t in tensors)

    def __call__(self) -> int:
        return sum(n for t, n in self._sized if t.storage.on_host)


__all__ = ["CPU_BACKEND", "STRATEGIES", "AutoSelection", "Decision", "HostBytes", "Placement", "Planner", "attach",
           "over_budget_strategy"]
