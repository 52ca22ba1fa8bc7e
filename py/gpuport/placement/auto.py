"""backend="auto": one runtime, two backends (the WebGPU device and the host), the BackendSelector choosing
per op call and per whole computation; the placement module (placement/__init__.py) asks it and nothing else does.

- Calibration at open (calibration.py): host FLOP rate, host bandwidth and per-call overhead; device
  per-dispatch cost, transfer bandwidth, bandwidth and matmul FLOP rate, measured with awaited reads (in a
  page too: `await gp.open()` can await). A fraction of a second the first time on an adapter, then reused
  from the persisted selector record (keyed by the pipeline scope). Ops in a page are synchronous, so
  there the device side keeps its calibration while the host side keeps learning from timed calls.
- Residency: `rt.tensor(array)` stays on the host until an op placed on the GPU needs it (then it is
  uploaded once and is known on both sides). Op outputs live where they were computed. Moving a tensor
  is counted in the selector's estimate; where the device cannot block (a page) a GPU-only tensor cannot
  move to the host inside a sync op, so such calls stay on the GPU.
- Learning: every host call is timed; a GPU call is timed (flush + a 4-byte read) only while its
  (op, size bucket) has fewer than `min_samples` measurements, which bounds the overhead.
- Persistence: measurements and calibration in $GPUPORT_CACHE/selector/<scope>.json natively,
  IndexedDB store "meta" key "selector:<scope>" in a page. GPUPORT_BACKEND / GPUPORT_DISABLE override.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..backends.io import RecordStore
from ..formats.records import RecordError, report_bad_record
from ..loading.stores import store_for
from ..ops.opspecs import flops
from ..types import DEVICE, HOST, OpCall
from .calibration import PROVISIONAL, calibrate_device, calibrate_host, provisional
from .selector import (
    BackendCosts,
    BackendSelector,
    SelectorConfig,
    WorkloadCharacteristics,
    read_record,
)

if TYPE_CHECKING:
    from .runtime import Runtime


class AutoSelection:
    """The selector plus what placement needs around it: workloads, timing, persistence."""

    def __init__(self, rt: "Runtime", costs: dict[str, BackendCosts], config: SelectorConfig | None = None,
                 calibration_ms: float = 0.0, calibrated: str = "measured") -> None:
        self.rt = rt
        self.selector = BackendSelector(costs, config)
        self.calibration_ms = calibration_ms
        self.calibrated = calibrated
        self.chosen: dict[str, dict[str, int]] = {}
        self.select_s = 0.0
        self.selections = 0
        self.store: RecordStore | None = None   # stores.store_for("selector"), set by attach
        self.ignored_record: str | None = None   # why the stored record was unusable (it was rewritten)
        self._workloads: dict[tuple[Any, ...], tuple[WorkloadCharacteristics, bool]] = {}
        self._wholes: dict[tuple[Any, ...], tuple[WorkloadCharacteristics, dict[str, list]]] = {}
        self.pin: str | None = None   # set by pinned(): every call goes there (counted as forced)
        self._warm: set[tuple[str, str]] = set()   # (computation, side) run once already: record_whole

    @property
    def host_only(self) -> bool:
        """Every call goes to the host: pinned there, or the device forced off (GPUPORT_BACKEND, GPUPORT_DISABLE)."""
        if self.pin is not None:
            return self.pin == HOST
        return self.selector.config.forced == HOST or DEVICE not in self.selector.backends

    @contextmanager
    def pinned(self, backend: str) -> Iterator[None]:
        """Place every call in the block on `backend` ("webgpu" or "cpu"): a comparison or a test of one
        side (the demo's parity column runs the GPU kernel even where the selector would pick the host)."""
        if backend not in self.selector.backends:
            raise ValueError(f"backend must be one of {self.selector.backends}, not {backend!r}")
        previous, self.pin = self.pin, backend
        try:
            yield
        finally:
            self.pin = previous

    # -- per op ---------------------------------------------------------------------------------------
    def workload(self, call: OpCall) -> tuple[WorkloadCharacteristics, bool]:
        """The call's workload; and whether the host can take it (False: a GPU-only input in a page)."""
        shapes, on = [], []
        for t in call.inputs:
            if t is None:
                continue
            shapes.append(t.shape)
            on.append(0 if t.on_host else (1 if t.host is not None else 2))
        key = (call.op, tuple(shapes), tuple(on), call.out_shape)
        found = self._workloads.get(key)
        if found is None:
            if len(self._workloads) > 4096:
                self._workloads.clear()
            found = self._workloads[key] = self._build(call.op, key[1], key[2], call.out_shape)
        return found

    def _build(self, op: str, shapes_t: tuple[tuple[int, ...], ...], where: tuple[int, ...],
               out_shape: tuple[int, ...]) -> tuple[WorkloadCharacteristics, bool]:
        on, sizes = [], []
        host_ok = True
        for shape, w in zip(shapes_t, where):
            nb = math.prod(shape) * 4
            if w == 0:            # host only: moving it to the GPU costs a transfer
                on.append("cpu")
                sizes.append(nb)
            elif w == 2:          # GPU only: moving it to the host costs a readback (impossible in a page)
                on.append("webgpu")
                sizes.append(nb)
                if not self.rt.device.can_block:
                    host_ok = False
            # w == 1: on the GPU and known on the host: free on either side
        out = math.prod(out_shape)
        nbytes = sum(math.prod(s) for s in shapes_t) * 4 + out * 4
        w = WorkloadCharacteristics(op, shapes_t, "float32", nbytes, flops(op, shapes_t), tuple(on),
                                    tuple(sizes))
        return w, host_ok

    def place(self, call: OpCall) -> str:
        """DEVICE or HOST for one op call (a GPU-only input in a page keeps it on the device)."""
        t0 = time.perf_counter()
        w, host_ok = self.workload(call)
        if self.pin is not None:
            # a GPU-only input in a page cannot come to the host inside a sync op: it stays on the GPU
            backend = self.pin if host_ok else "webgpu"
            self.selector.decisions["forced"] += 1
        else:
            backend = self.selector.select_backend(w, None if host_ok else "webgpu")
        self.select_s += time.perf_counter() - t0
        self.selections += 1
        self.note(call.op, backend)
        call.workload = w
        return backend

    def note(self, name: str, backend: str) -> None:
        """Count one choice of `backend` for `name` (info()'s "chosen" and "counts")."""
        per = self.chosen.setdefault(name, {})
        per[backend] = per.get(backend, 0) + 1

    def whole_costs(self, name: str, ops: Sequence[tuple[str, Sequence[tuple[int, ...]]]]) -> dict[str, float]:
        """Seconds per backend of a whole computation (a model's forward: these ops with these shapes, every
        operand resident, its result read back once): its measured mean once `record_whole` has one (the
        selector's rule: a measurement, slower or faster, outweighs the model), else the sum of its ops' plus the
        device's read round trip."""
        return self._costs(*self._whole(name, ops))

    def _costs(self, whole: WorkloadCharacteristics,
               parts: dict[str, list[tuple[WorkloadCharacteristics, float, int]]]) -> dict[str, float]:
        sel = self.selector
        costs = {}
        for b in sel.backends:
            if sel.samples(whole, b):
                costs[b] = sel.mean(whole, b)
            else:
                costs[b] = sel.costs[b].roundtrip_s + sum(n * (sel.mean(w, b) if sel.samples(w, b) else e)
                                                          for w, e, n in parts[b])
        return costs

    def prefers_host(self, name: str, ops: Sequence[tuple[str, Sequence[tuple[int, ...]]]],
                     upload: Callable[[], int] | None = None) -> bool:
        """Whether a whole computation (`whole_costs`, plus `upload()` bytes the device must receive first) is
        expected to finish sooner on the host; counted under `name` like an op (pinned or forced placement
        decides where there is one). Without the upload a page explored MiniLM's forward on the device with
        its 90 MB of weights still on the host: a warm visit's first embedding 57 ms -> 2.7 s."""
        def decide() -> str:
            whole, parts = self._whole(name, ops)
            costs = self._costs(whole, parts)
            if upload is not None and DEVICE in costs:
                costs[DEVICE] += upload() / self.selector.costs[DEVICE].transfer_bytes_per_s
            return self.selector.choose(whole, costs)
        return self._host_wins(name, decide)

    def prefers_host_overall(self, name: str, costs: Callable[[], dict[str, float]]) -> bool:
        """`prefers_host` for work made of several computations (a generation: its prompt's forward, then
        one per new token), from their summed `costs()`: nothing to explore, each part learns on its own."""
        return self._host_wins(name, lambda: min((c := costs()), key=c.__getitem__))

    def _host_wins(self, name: str, decide: Callable[[], str]) -> bool:
        t0 = time.perf_counter()
        backend = self.selector.config.forced or self.pin or decide()
        self.note(name, backend)
        self.select_s += time.perf_counter() - t0
        self.selections += 1
        return backend == "cpu"

    def record_whole(self, name: str, ops: Sequence[tuple[str, Sequence[tuple[int, ...]]]], backend: str,
                     seconds: float) -> None:
        """Learn from one timed whole computation (`prefers_host`'s), from its start to its result read; but not
        from the first of `name` on a side in this runtime, which pays what later ones do not (the weights packed
        for the kernels or uploaded, pipelines compiled, a page's pool joining): a page's first MiniLM forward took
        58-74 ms against ~10 after it, and once stored, that sample let the next visit explore the device for its
        first embedding (2 s on SwiftShader)."""
        if (name, backend) not in self._warm:
            self._warm.add((name, backend))
            return
        self.selector.record(self._whole(name, ops)[0], backend, seconds)

    def _whole(self, name: str, ops: Sequence[tuple[str, Sequence[tuple[int, ...]]]]
               ) -> tuple[WorkloadCharacteristics, dict[str, list[tuple[WorkloadCharacteristics, float, int]]]]:
        """The computation as one workload, and per backend its distinct ops' workloads (operands resident there)
        with the model's estimates and how many times it runs each (a model's layers repeat theirs: a page's
        first MiniLM embedding spent 7 ms of 52 making 144 workloads where 24 differ): made once per (name, ops,
        costs), as a model asks for every batch."""
        shapes_key = ops if isinstance(ops, tuple) else tuple((op, tuple(map(tuple, s))) for op, s in ops)
        key = (name, shapes_key, tuple(map(id, self.selector.costs.values())))
        found = self._wholes.get(key)
        if found is None:
            per_op = [(op, shapes, n, WorkloadCharacteristics.of(op, shapes))
                      for (op, shapes), n in Counter(key[1]).items()]
            whole = WorkloadCharacteristics(name, (), flops=sum(n * w.flops for *_, n, w in per_op),
                                            bytes=sum(n * w.bytes for *_, n, w in per_op))
            parts = {}
            for b in self.selector.backends:
                ws = [(WorkloadCharacteristics.of(op, shapes, [b] * len(shapes)), n) for op, shapes, n, _ in per_op]
                parts[b] = [(w, self.selector.estimate(w, b), n) for w, n in ws]
            if len(self._wholes) > 256:
                self._wholes.clear()
            found = self._wholes[key] = (whole, parts)
        return found

    def should_time_gpu(self, w: WorkloadCharacteristics) -> bool:
        return self.rt.device.can_block and self.selector.samples(w, "webgpu") < self.selector.config.min_samples

    # -- reporting ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        summary = self.selector.get_performance_summary()
        return {"mode": "auto", "backends": summary["backends"], "decisions": summary["decisions"],
                "chosen": {op: max(c, key=c.get) for op, c in self.chosen.items()},
                "counts": {op: dict(c) for op, c in self.chosen.items()},
                "calibration": {"source": self.calibrated, "ms": round(self.calibration_ms, 1),
                                "costs": summary["costs"]},
                "mean_select_us": round(self.select_s / self.selections * 1e6, 2) if self.selections else None,
                "forced": self.selector.config.forced, "disabled": list(self.selector.config.disabled),
                **({"ignored_record": self.ignored_record} if self.ignored_record else {})}

    # -- persistence ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.selector.to_dict())

    def save_soon(self) -> None:
        """Persist measurements and calibration (a file now natively, an IndexedDB write in a page); not
        while the costs are provisional (they were never measured)."""
        if self.store is not None and self.calibrated in ("measured", "stored"):
            self.store.save_soon(self.rt.pipelines.scope, self.to_json())

    async def calibrate(self) -> str:
        """Measure both sides now where the costs are provisional (open(calibrate="later")), then persist
        them; the calibration's source afterwards ("measured", or "stored" as it was; "measuring" while
        another call measures)."""
        if self.calibrated != PROVISIONAL:
            return self.calibrated
        self.calibrated = "measuring"   # a second caller meanwhile does not measure again
        t0 = time.perf_counter()
        try:
            costs = {"webgpu": await calibrate_device(self.rt), "cpu": await calibrate_host()}
        except BaseException:
            self.calibrated = PROVISIONAL
            raise
        self.selector.costs = costs
        self.calibration_ms = (time.perf_counter() - t0) * 1e3
        self.calibrated = "measured"
        self.save_soon()
        return self.calibrated


async def attach(rt: "Runtime", measure: bool = True) -> AutoSelection:
    """Stored calibration if there is one (per adapter), else measure both sides now and persist it (or,
    `measure` False, start on provisional costs until `AutoSelection.calibrate`); then restore the learned
    history. A stored record that is not entirely sound is ignored as a whole, reported once
    (records.RecordWarning) and rewritten."""
    store = store_for("selector")
    scope = rt.pipelines.scope
    text = await store.load(scope)
    t0 = time.perf_counter()
    costs, history, problem = None, None, None
    if text is not None:
        try:
            costs, history = read_record(text)
        except RecordError as exc:
            problem = str(exc)
            report_bad_record("selector", scope, problem)
    measured = costs is None and measure
    source = "measured" if measured else "stored" if costs is not None else PROVISIONAL
    if costs is None:
        costs = {"webgpu": await calibrate_device(rt), "cpu": await calibrate_host()} if measure else provisional()
    auto = AutoSelection(rt, costs, SelectorConfig.from_env(), (time.perf_counter() - t0) * 1e3, source)
    auto.store = store
    auto.ignored_record = problem
    if history is not None:
        auto.selector.load_dict(history)
    rt.placement.auto = auto
    if measured:
        auto.save_soon()
    return auto
