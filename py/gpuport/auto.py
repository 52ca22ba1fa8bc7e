"""backend="auto": one runtime, two backends (the WebGPU device and NumPy on the host), a BackendSelector
choosing per op call.

- Calibration at open (`calibrate_*`): host FLOP rate, host bandwidth and per-call overhead; device
  dispatch round trip, transfer bandwidth, bandwidth and matmul FLOP rate. Natively ~0.1-0.3 s the first
  time on an adapter, then reused from the persisted selector file (keyed by the pipeline scope). In a
  page the device side is seeded from the adapter (software or not) and learned from there: timing a
  GPU op in a page needs an await, so the page learns only the host side and keeps the device model.
- Residency: `rt.tensor(array)` stays on the host until an op placed on the GPU needs it (then it is
  uploaded once and is known on both sides). Op outputs live where they were computed. Moving a tensor
  is counted in the selector's estimate; in a page a GPU-only tensor cannot move to the host inside a
  sync op, so such calls stay on the GPU.
- Learning: every host call is timed; a GPU call is timed (flush + a 4-byte read) only while its
  (op, size bucket) has fewer than `min_samples` measurements, which bounds the overhead.
- Persistence: measurements and calibration in $GPUPORT_CACHE/selector/<scope>.json natively,
  IndexedDB store "meta" key "selector:<scope>" in a page. GPUPORT_BACKEND / GPUPORT_DISABLE override.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .selector import BackendCosts, BackendSelector, SelectorConfig, WorkloadCharacteristics, op_flops

if TYPE_CHECKING:
    from .runtime import Runtime


def _best(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)


def calibrate_host() -> BackendCosts:
    a = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    a @ a   # BLAS threads start here, not in the timing
    flops = 2 * 128 ** 3 / _best(lambda: a @ a, 7)
    big = np.ones(1 << 18, np.float32)
    bw = 3 * big.nbytes / _best(lambda: big + big, 5)
    tiny = np.ones(4, np.float32)
    from .kernels import KERNELS
    ref = KERNELS["scale"].reference
    overhead = _best(lambda: ref(tiny, a=2.0, b=0.0), 20) + 6e-6   # + the runtime's own path
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=math.inf, overhead_s=overhead)


def seeded_device(adapter: dict[str, Any]) -> BackendCosts:
    """A device model without measuring: software adapters are slow (DESIGN.md section 4)."""
    if adapter.get("is_fallback"):
        return BackendCosts(flops_per_s=1e9, bytes_per_s=2e9, transfer_bytes_per_s=1e9, overhead_s=2e-3)
    return BackendCosts(flops_per_s=2e12, bytes_per_s=2e11, transfer_bytes_per_s=8e9, overhead_s=1e-4)


def calibrate_device_sync(rt: "Runtime") -> BackendCosts:
    """Natively: a few dispatches and reads on the real device (two pipelines: scale, matmul)."""
    dev = rt._device
    n = 1 << 17
    host = np.ones(n, np.float32)

    def upload_read() -> None:
        t = rt._alloc_raw((n,), np.float32, host)
        dev.download_sync(t.handle, (n,), np.float32)

    from .fallback import OpCall

    def op(name: str, ins: list[Any], shape: tuple[int, ...], **attrs: Any) -> Any:
        return rt.fallback._execute(OpCall(name, tuple("abc"[:len(ins)]), ins, shape, attrs))

    x = rt._alloc_raw((n,), np.float32, host)
    t4 = rt._alloc_raw((4,), np.float32, host[:4].copy())
    op("scale", [t4], (4,), a=1.0, b=0.0).numpy()     # compile outside the timings
    transfer = 2 * host.nbytes / _best(upload_read, 2)
    overhead = _best(lambda: dev.download_sync(op("scale", [t4], (4,), a=1.0, b=0.0).handle, (4,), np.float32), 3)
    big = _best(lambda: dev.download_sync(op("scale", [x], (n,), a=1.0, b=0.0).handle, (1,), np.float32), 2)
    bw = 2 * host.nbytes / max(big - overhead, 1e-6)
    m = 96
    a = rt._alloc_raw((m, m), np.float32, np.ones((m, m), np.float32))
    mm = lambda: dev.download_sync(op("matmul", [a, a, None], (m, m), transpose_b=False).handle, (1,), np.float32)  # noqa: E731
    mm()
    flops = 2 * m ** 3 / max(_best(mm, 2) - overhead, 1e-6)
    return BackendCosts(flops_per_s=flops, bytes_per_s=bw, transfer_bytes_per_s=transfer, overhead_s=overhead)


class AutoPlacement:
    """The selector plus what the runtime needs around it: workloads, timing, persistence."""

    def __init__(self, rt: "Runtime", costs: dict[str, BackendCosts], config: SelectorConfig | None = None,
                 calibration_ms: float = 0.0, calibrated: str = "measured") -> None:
        self.rt = rt
        self.selector = BackendSelector(costs, config)
        self.calibration_ms = calibration_ms
        self.calibrated = calibrated
        self.chosen: dict[str, dict[str, int]] = {}
        self.select_s = 0.0
        self.selections = 0
        self.store: Any = None   # pipelines.store_for("selector"), set by attach
        self._workloads: dict[tuple[Any, ...], tuple[WorkloadCharacteristics, bool]] = {}

    # -- per op ---------------------------------------------------------------------------------------
    def workload(self, call: Any) -> tuple[WorkloadCharacteristics, bool]:
        """The call's workload; and whether the host can take it (False: a GPU-only input in a page)."""
        shapes, on = [], []
        for t in call.inputs:
            if t is None:
                continue
            shapes.append(t.shape)
            on.append(0 if type(t.handle) is np.ndarray else (1 if t._host is not None else 2))
        key = (call.op, tuple(shapes), tuple(on), call.out_shape)
        found = self._workloads.get(key)
        if found is None:
            if len(self._workloads) > 4096:
                self._workloads.clear()
            found = self._workloads[key] = self._build(call.op, key[1], key[2], call.out_shape)
        return found

    def _build(self, op: str, shapes_t: tuple[tuple[int, ...], ...], where: tuple[int, ...],
               out_shape: tuple[int, ...]) -> tuple[WorkloadCharacteristics, bool]:
        from .platform import IN_PYODIDE
        on, sizes = [], []
        host_ok = True
        for shape, w in zip(shapes_t, where):
            nb = int(np.prod(shape, dtype=np.int64)) * 4
            if w == 0:            # host only: moving it to the GPU costs a transfer
                on.append("cpu")
                sizes.append(nb)
            elif w == 2:          # GPU only: moving it to the host costs a readback (impossible in a page)
                on.append("webgpu")
                sizes.append(nb)
                if IN_PYODIDE:
                    host_ok = False
            # w == 1: on the GPU and known on the host: free on either side
        out = int(np.prod(out_shape, dtype=np.int64))
        nbytes = sum(int(np.prod(s, dtype=np.int64)) for s in shapes_t) * 4 + out * 4
        w = WorkloadCharacteristics(op, shapes_t, "float32", nbytes, op_flops(op, shapes_t), tuple(on),
                                    tuple(sizes))
        object.__setattr__(w, "_bucket", w.bucket)
        return w, host_ok

    def place(self, call: Any) -> str:
        t0 = time.perf_counter()
        w, host_ok = self.workload(call)
        backend = self.selector.select_backend(w, None if host_ok else "webgpu")
        self.select_s += time.perf_counter() - t0
        self.selections += 1
        per = self.chosen.setdefault(call.op, {})
        per[backend] = per.get(backend, 0) + 1
        call.attrs_workload = w
        return backend

    def should_time_gpu(self, w: WorkloadCharacteristics) -> bool:
        from .platform import IN_PYODIDE
        if IN_PYODIDE:
            return False
        st = self.selector._stats.get((w.op, w.bucket, "webgpu"))
        return st is None or st.count < self.selector.config.min_samples

    # -- reporting ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        summary = self.selector.get_performance_summary()
        return {"mode": "auto", "backends": summary["backends"], "decisions": summary["decisions"],
                "chosen": {op: max(c, key=c.get) for op, c in self.chosen.items()},
                "counts": {op: dict(c) for op, c in self.chosen.items()},
                "calibration": {"source": self.calibrated, "ms": round(self.calibration_ms, 1),
                                "costs": summary["costs"]},
                "mean_select_us": round(self.select_s / self.selections * 1e6, 2) if self.selections else None,
                "forced": self.selector.config.forced, "disabled": list(self.selector.config.disabled)}

    # -- persistence ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        data = self.selector.to_dict()
        data["costs"] = {b: vars(c) for b, c in self.selector.costs.items()}
        return json.dumps(data, default=lambda v: None if v == math.inf else v)

    def load_json(self, text: str | None) -> int:
        if not text:
            return 0
        try:
            data = json.loads(text)
        except ValueError:
            return 0
        return self.selector.load_dict(data)

    def save_soon(self) -> None:
        """Persist measurements and calibration (a file now natively, an IndexedDB write in a page)."""
        if self.store is not None:
            self.store.save_soon(self.rt._manifest_scope(), self.to_json())


def _stored_costs(text: str | None) -> dict[str, BackendCosts] | None:
    if not text:
        return None
    try:
        raw = json.loads(text).get("costs") or {}
        costs = {b: BackendCosts(**{k: (math.inf if v is None else float(v)) for k, v in c.items()})
                 for b, c in raw.items()}
        return costs if set(costs) == {"webgpu", "cpu"} else None
    except (ValueError, TypeError, AttributeError):
        return None


def _attach(rt: "Runtime", store: Any, text: str | None, device_costs: Any, source: str,
            save_measured: bool) -> AutoPlacement:
    """Stored calibration if there is one, else measure; then restore the learned history."""
    t0 = time.perf_counter()
    costs = _stored_costs(text)
    measured = costs is None
    if measured:
        costs = {"webgpu": device_costs(), "cpu": calibrate_host()}
    auto = AutoPlacement(rt, costs, SelectorConfig.from_env(), (time.perf_counter() - t0) * 1e3,
                         source if measured else "stored")
    auto.store = store
    auto.load_json(text)
    rt.selector = auto
    if measured and save_measured:
        auto.save_soon()
    return auto


def attach_sync(rt: "Runtime") -> AutoPlacement:
    """Natively: calibrate on the real device the first time on an adapter, persist at once."""
    from .pipelines import store_for
    store = store_for("selector")
    return _attach(rt, store, store.read(rt._manifest_scope()), lambda: calibrate_device_sync(rt),
                   "measured", save_measured=True)


async def attach_async(rt: "Runtime") -> AutoPlacement:
    """In a page the device side is seeded from the adapter (timing it would need awaits in ops)."""
    from .platform import IN_PYODIDE
    if not IN_PYODIDE:
        return attach_sync(rt)
    from .pipelines import store_for
    store = store_for("selector")
    return _attach(rt, store, await store.load(rt._manifest_scope()),
                   lambda: seeded_device(rt._device.adapter_info), "host measured, device seeded",
                   save_measured=False)
