"""Runtime: one open backend, its tier, and the factories for tensors, ops and kernels."""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from .backends import DTYPES, Backend
from .capabilities import detect, effective_limits, resolve_tier
from .errors import DeviceLost, LimitExceeded, OutOfMemory, RuntimeClosed
from .kernels import Launch, pack_uniforms
from .tensor import Blocks, Tensor

PRECISIONS = ("f32", "f16")


class Runtime:
    """An open device. Create it with `await gpuport.open()` or `gpuport.open_sync()`."""

    def __init__(self, device: Backend, tier: str | None = None, note: str | None = None,
                 budget: dict[str, int] | None = None, precision: str = "f32",
                 fallback_config: dict[str, Any] | None = None, memory_budget: int | None = None,
                 open_limits: str = "default") -> None:
        from .fallback import FallbackManager
        from .ops import Ops
        from .recovery import RecoveryManager
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self._device = device
        self.capabilities = detect(device.name, device.features, device.limits, device.adapter_info,
                                   getattr(device, "browser", None))
        self.detected_tier = self.capabilities.tier
        self.tier = resolve_tier(self.detected_tier, tier)
        # The limits ops plan against: the device's, lowered by the constrained tier's budget, quirks and
        # the caller's `budget`. Where they are lower than the device's, tensors over the binding budget
        # are stored as blocks (tensor.Blocks) and the fallback manager's strategies serve them.
        self.limits = effective_limits(self.capabilities, self.tier, budget)
        self.budget = dict(budget or {})
        self._blocking = self.backend != "cpu" and (
            self.tier == "constrained" or bool(budget) or bool(self.capabilities.quirks.get("budget")))
        # f16 kernels are opt-in: they trade accuracy (stated per kernel) for speed and memory. Asked for on
        # a device without shader-f16 (or outside the full tier) they step down to f32, never raise.
        self.precision_requested = precision
        self.precision = "f16" if precision == "f16" and self.tier == "full" and self.capabilities.has_f16 else "f32"
        self._note = note
        self._closed = False
        self.fallback = FallbackManager(config=fallback_config, runtime=self)
        self.ops = Ops(self)
        # Recovery (recovery.py): live GPU tensors (restored after a device loss), the loss state, and a
        # device memory budget (bytes of live GPU tensors; beyond it an allocation is out of memory).
        self._live: "weakref.WeakSet[Tensor]" = weakref.WeakSet()
        self._lost = False
        self._lost_error: Exception | None = None
        self._generation = 0
        self._op_depth = 0
        self._open_limits = open_limits
        self.memory_budget = int(memory_budget) if memory_budget else None
        self.recovery = RecoveryManager(self)
        self.selector: Any = None        # a BackendSelector when opened with backend="auto"

    @property
    def backend(self) -> str:
        """"webgpu" or "cpu"."""
        return self._device.name

    def info(self) -> dict[str, Any]:
        """Backend, tier, adapter identity, features and limits, as plain data."""
        self._check_open()
        from .platform import IN_PYODIDE
        info = {
            "backend": self.backend,
            "tier": self.tier,
            "detected_tier": self.detected_tier,
            "adapter": dict(self._device.adapter_info),
            "features": sorted(self._device.features),
            "limits": dict(self.limits),
            "platform": "pyodide" if IN_PYODIDE else "native",
            "browser": getattr(self._device, "browser", None),
            "identity": self.capabilities.browser.as_dict() if self.capabilities.browser else None,
            "quirks": dict(self.capabilities.quirks),
            "tier_reasons": list(self.capabilities.reasons),
            "precision": self.precision,
            "strategies": self.fallback.strategies(),
        }
        if self.limits != dict(self._device.limits):
            info["device_limits"] = dict(self._device.limits)
            info["budget"] = {k: v for k, v in self.limits.items() if v != self._device.limits.get(k)}
        if self._blocking:
            info["over_budget_strategies"] = self.fallback.over_budget_strategies()
        if self.precision != self.precision_requested:
            info["precision_note"] = (f"precision {self.precision_requested!r} asked for; tier {self.tier!r} "
                                      f"{'has' if self.capabilities.has_f16 else 'lacks'} shader-f16: f32 kernels")
        if self._note:
            info["note"] = self._note
        if self.selector is not None:
            info["selection"] = self.selector.info()
        rs = self.recovery.stats()
        info["recovery"] = {k: v for k, v in rs.items() if k != "events"}
        return info

    # -- tensors -----------------------------------------------------------------------------------
    def tensor(self, array: Any, dtype: str | np.dtype | None = None) -> Tensor:
        """A device copy of `array` (float32, int32 or uint32; pass `dtype` to convert)."""
        self._check_open()
        arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
        if arr.dtype not in DTYPES:
            raise TypeError(f"gpuport tensors are float32, int32 or uint32, got {arr.dtype}: "
                            f"convert with .astype('float32') or pass dtype=")
        host = np.array(arr, order="C", copy=True)
        host.flags.writeable = False
        if self.selector is not None and not self._lost:
            # auto: it stays on the host until an op placed on the GPU needs it (uploaded once, then on both)
            return Tensor(self, host, host.shape, host.dtype, host)
        return self._alloc(host.shape, host.dtype, host=host)

    def empty(self, shape: Sequence[int] | int, dtype: str | np.dtype = "float32") -> Tensor:
        """An uninitialised tensor, for outputs of ops and kernels."""
        self._check_open()
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        dt = np.dtype(dtype)
        if dt not in DTYPES:
            raise TypeError(f"gpuport tensors are float32, int32 or uint32, got {dt}")
        t = self._alloc(shape, dt)
        if self.backend != "cpu":
            from .recovery import Fresh
            t._recipe = Fresh(shape, dt)
        return t

    # -- kernels -----------------------------------------------------------------------------------
    def kernel(self, source: str, entry_point: str = "main",
               constants: dict[str, float] | None = None) -> "Kernel":
        """Compile a user's WGSL compute shader (errors raise ShaderCompileError with line:column)."""
        self._check_open()
        from .pipelines import sha256
        # A label per source: a page learns of compile errors later, and forgets just that pipeline.
        label = f"{entry_point}@{sha256(source)[:8]}"
        return Kernel(self, self._device.compile(source, entry_point, constants, None, label=label),
                      (source, entry_point, constants, label))

    # -- pipelines -----------------------------------------------------------------------------------
    def _manifest_scope(self) -> str:
        from . import __version__
        from .pipelines import scope_key
        d = self._device
        return scope_key(d.adapter_info, getattr(d, "browser", None), d.features, __version__)

    def _attach_manifest(self, text: str | None, store: Any) -> None:
        """Adopt the stored manifest (corrupt, foreign or stale parts are dropped and rewritten)."""
        from .kernels import KERNELS, VARIANTS
        from .pipelines import PipelineManifest
        manifest = PipelineManifest.from_json(self._manifest_scope(), text)
        manifest.drop_stale({k.name: k.source for k in [*KERNELS.values(), *VARIANTS.values()]})
        manifest.loaded = len(manifest.entries)
        self._device.manifest, self._device.manifest_store = manifest, store
        self._device.save_manifest()

    async def _load_manifest(self) -> None:
        if self.backend == "cpu":
            return
        from .pipelines import store_for
        store = store_for("pipelines")
        self._attach_manifest(await store.load(self._manifest_scope()), store)

    def _load_manifest_sync(self) -> None:
        if self.backend == "cpu":
            return
        from .pipelines import store_for
        store = store_for("pipelines")
        self._attach_manifest(store.read(self._manifest_scope()), store)

    async def precompile(self, ops: Sequence[str] | None = None,
                         on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Create every pipeline the manifest remembers (or those of `ops`) plus each op's own, in
        first-use order, before they are needed. Ops called meanwhile run on NumPy where the host has
        their inputs, and move to the GPU as their pipelines resolve. Returns a report: pipelines
        (created now), from_manifest, already (existed), failed, ms, recorded_ms (their stored compile
        time: far above ms means the browser's shader cache was warm), order."""
        self._check_open()
        from .fallback import ALIASES
        from .kernels import KERNELS, VARIANTS
        t0 = time.perf_counter()
        report: dict[str, Any] = {"pipelines": 0, "from_manifest": 0, "already": 0, "failed": [], "ms": 0.0,
                                  "recorded_ms": 0.0, "order": []}
        if self.backend == "cpu":
            return report
        names = list(KERNELS) if ops is None else [ALIASES.get(o, o) for o in ops]
        unknown = [n for n in names if n not in KERNELS]
        if unknown:
            raise ValueError(f"precompile: unknown ops {unknown}; known: {sorted(KERNELS)}")
        op_of = {k.name: k.name for k in KERNELS.values()} | {k.name: op for (op, _), k in VARIANTS.items()}
        dev, manifest = self._device, self._device.manifest
        specs: dict[str, Any] = {}
        stored: set[str] = set()
        if manifest is not None:
            for entry in manifest.ordered():
                if ops is None or op_of.get(entry.label) in names:
                    specs[entry.key] = manifest.spec_of(entry)
                    stored.add(entry.key)
                    report["recorded_ms"] += entry.compile_ms
        from .backends import pipeline_key
        for op in names:
            for spec in self.fallback.pipeline_specs(op):
                specs.setdefault(pipeline_key(spec.source, spec.entry_point, spec.constants_dict, spec.bindings), spec)
        todo = [(k, s) for k, s in specs.items() if k not in dev.pipelines]
        report["already"] = len(specs) - len(todo)
        left: dict[str, int] = {}
        for _, spec in todo:
            op = op_of.get(spec.label)
            if op:
                left[op] = left.get(op, 0) + 1
        dev.precompiling = set(left)
        from_manifest = {k for k, _ in todo if k in stored}
        done = 0

        def on_done(spec: Any, ms: float, error: Exception | None) -> None:
            nonlocal done
            done += 1
            op = op_of.get(spec.label)
            if op in left:
                left[op] -= 1
                if not left[op]:
                    dev.precompiling.discard(op)
            if error is None:
                report["pipelines"] += 1
                report["order"].append(spec.label)
            else:
                report["failed"].append({"label": spec.label, "error": str(error)})
                dev.forget(spec.label)
            if on_progress is not None:
                on_progress({"stage": "compile", "done": done, "total": len(todo), "label": spec.label,
                             "ms": round(ms, 2), "error": None if error is None else str(error)})

        try:
            await dev.precompile([s for _, s in todo], on_done)
        finally:
            dev.precompiling = set()
        report["from_manifest"] = len(from_manifest) - sum(
            1 for f in report["failed"] for k in from_manifest if specs[k].label == f["label"])
        report["ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        report["recorded_ms"] = round(report["recorded_ms"], 2)
        dev.save_manifest()
        return report

    def report(self, format: str = "dict") -> dict[str, Any] | str:
        """The compatibility report (`gpuport doctor`): "dict", "json" or "markdown"."""
        from .report import build_report, render
        info = self.info()
        data = build_report(info, (info.get("selection") or {}).get("chosen") or None)
        return data if format == "dict" else render(data, format)

    def flush(self) -> None:
        """Submit queued dispatches now (reads do this themselves)."""
        self._check_open()
        if self.backend == "cpu" or (self._lost and not self.recovery.can_recover_sync()):
            return
        if self._lost:
            self.recovery.recover()
        self.recovery.call(self._device.flush, "flush")

    def close(self) -> None:
        """Release the device. Tensors of this runtime become unusable."""
        if not self._closed:
            if self.selector is not None:
                self.selector.save_soon()
            self._closed = True
            self._device.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"tier={self.tier!r}"
        return f"Runtime(backend={self.backend!r}, {state})"

    # -- internal ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("this gpuport runtime was closed; open a new one with gpuport.open()")

    def _own(self, t: Any, what: str) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} must be a gpuport Tensor (from rt.tensor/rt.empty), got {type(t).__name__}")
        if t._rt is not self:
            raise ValueError(f"{what} belongs to another runtime ({t._rt!r})")
        return t

    def _needs_blocks(self, nbytes: int) -> bool:
        """Whether a tensor of this size is stored as blocks (only under a budget, i.e. constrained)."""
        return self._blocking and nbytes > self.limits.get("maxStorageBufferBindingSize", nbytes)

    def _track(self, t: Tensor) -> Tensor:
        if self.backend != "cpu" and not isinstance(t.handle, np.ndarray):
            self._live.add(t)
        return t

    def _device_bytes(self) -> int:
        """Bytes of GPU buffers held by live tensors (views share their source's buffers)."""
        from .recovery import Deferred, LostHandle
        seen: set[int] = set()
        total = 0
        for t in list(self._live):
            h = t.handle
            if isinstance(h, (np.ndarray, LostHandle, Deferred)) or id(h) in seen:
                continue
            seen.add(id(h))
            total += t.nbytes
        return total

    def _alloc(self, shape: tuple[int, ...], dtype: np.dtype, host: np.ndarray | None = None,
               bounds: list[int] | None = None, oom: bool = True) -> Tensor:
        """A GPU tensor (tracked for recovery). Out of memory: recovery's ladder (retry, blocks, host)."""
        if self.backend == "cpu":
            return self._alloc_raw(shape, dtype, host, bounds)
        if self._lost and not self.recovery.can_recover_sync():
            from .recovery import DEFERRED   # a page waiting for its new device: built on recovery
            return self._track(Tensor(self, DEFERRED, shape, np.dtype(dtype), host))
        if self._lost and self._op_depth == 0:
            self.recovery.recover()
        try:
            if self.memory_budget is not None:
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                used = self._device_bytes()
                if used + nbytes > self.memory_budget:
                    raise OutOfMemory(f"allocating {nbytes:,} bytes would exceed the runtime's memory budget of "
                                      f"{self.memory_budget:,} bytes ({used:,} in use)")
            t = self.recovery.call(lambda: self._alloc_raw(shape, dtype, host, bounds), "allocation",
                                   recover=self._op_depth == 0)
        except OutOfMemory as exc:
            if not oom:
                raise
            t = self.recovery.on_oom(exc, tuple(int(s) for s in shape), np.dtype(dtype), host)
        return self._track(t)

    def _alloc_raw(self, shape: tuple[int, ...], dtype: np.dtype, host: np.ndarray | None = None,
                   bounds: list[int] | None = None) -> Tensor:
        """A tensor on the device: one buffer, or blocks of whole rows when it exceeds the binding budget."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        nbytes = size * dtype.itemsize
        if bounds is None and not self._needs_blocks(nbytes):
            handle = self._device.upload(host) if host is not None else self._device.alloc(shape, dtype)
            return Tensor(self, handle, shape, dtype, host)
        limit = min(self.limits.get("maxStorageBufferBindingSize", nbytes), self.limits.get("maxBufferSize", nbytes))
        if bounds is None:
            per = limit // dtype.itemsize
            unit = shape[-1] if len(shape) >= 2 and 0 < shape[-1] <= per else 1
            step = max(unit, per // unit * unit)
            bounds = list(range(0, size, step)) + [size]
        for s, e in zip(bounds, bounds[1:]):
            if (e - s) * dtype.itemsize > limit:
                raise LimitExceeded("maxStorageBufferBindingSize", limit, (e - s) * dtype.itemsize,
                                    f"a block of a {dtype} tensor of shape {tuple(shape)}")
        flat = host.reshape(-1) if host is not None else None
        handles = [self._device.upload(np.ascontiguousarray(flat[s:e])) if flat is not None
                   else self._device.alloc((e - s,), dtype) for s, e in zip(bounds, bounds[1:])]
        return Tensor(self, Blocks(bounds, handles), shape, dtype, host)

    # -- ops: placement, recovery, lineage ------------------------------------------------------------
    def _host_values(self, t: Tensor) -> np.ndarray | None:
        """t's values on the host: known, or (natively) read back; None where only an await could."""
        known = t.known_values()
        if known is not None:
            return known
        from .platform import IN_PYODIDE
        if IN_PYODIDE or self.backend == "cpu":
            return None
        values = t.numpy()          # a move to the host: from now on known on both sides
        values.flags.writeable = False
        t._host = values
        return values

    def _run_host(self, call: Any, why: str) -> Tensor:
        """The op's NumPy reference on the host; the result stays on the host (cpu residency)."""
        from .fallback import Plan
        from .kernels import KERNELS
        t0 = time.perf_counter()
        arrays = [None if t is None else self._host_values(t) for t in call.inputs]
        if any(a is None and t is not None for a, t in zip(arrays, call.inputs)):
            raise DeviceLost(f"{call.op}: an input lives only on the GPU and this platform cannot read it back "
                             "synchronously")
        result = np.ascontiguousarray(KERNELS[call.op].reference(*arrays, **call.attrs), dtype=np.float32)
        out = Tensor(self, result.reshape(call.out_shape), call.out_shape, np.float32)
        self.fallback._count(call.op, Plan("cpu", why), t0)
        return out

    def _to_device(self, t: Tensor) -> None:
        """Move a host-resident tensor onto the GPU (it keeps its host values: known_values still works)."""
        host = t.handle
        moved = self._alloc(t.shape, t.dtype, host=np.ascontiguousarray(host), oom=False)
        if isinstance(moved.handle, np.ndarray):
            raise OutOfMemory("no room on the device for a host-resident input")
        t.handle = moved.handle
        if t._host is None:
            t._host = host
        self._track(t)

    def _op(self, call: Any) -> Tensor:
        """Run one validated op call: choose where (host residency, the selector in auto mode), recover from
        device loss (retry the whole call on the new device), step down on out-of-memory, record lineage."""
        from .recovery import DEFERRED, LostHandle, TensorLost, recipe_of
        if self.backend == "cpu":
            return self.fallback._execute(call)
        for name, t in zip(call.names, call.inputs):
            if t is not None and isinstance(t.handle, LostHandle):
                raise TensorLost(f"{call.op}: input {name!r} (shape {t.shape}) was lost with its GPU device and "
                                 f"cannot be rebuilt: {t.handle.reason}")
        if self._lost and not self.recovery.can_recover_sync():
            out = self._track(Tensor(self, DEFERRED, call.out_shape, np.float32))
            out._recipe = recipe_of(call)
            self.recovery._stats["deferred_ops"] += 1
            return out
        target = self._place(call)
        auto = self.selector
        if target == "cpu":
            if auto is None:
                return self._run_host(call, "host-resident input")
            t0 = time.perf_counter()
            out = self._run_host(call, "selected")
            auto.selector.record(call.attrs_workload, "cpu", time.perf_counter() - t0)
            return out
        timing = auto is not None and auto.should_time_gpu(call.attrs_workload)
        if timing:
            self.flush()
            t0 = time.perf_counter()
        for t in call.inputs:
            if t is not None and isinstance(t.handle, np.ndarray):
                try:
                    self._to_device(t)
                except OutOfMemory:
                    return self._oom_host(call)

        def run() -> Tensor:
            for t in call.inputs:
                if t is not None:
                    t._usable()   # a recovery just now may have found it unrebuildable
            self._op_depth += 1
            try:
                return self.fallback._execute(call)
            finally:
                self._op_depth -= 1

        try:
            out = self.recovery.call(run, call.op)
            if timing:
                self._sync(out)
                auto.selector.record(call.attrs_workload, "webgpu", time.perf_counter() - t0)
        except OutOfMemory:
            return self._oom_host(call)
        except DeviceLost:
            if self.recovery.can_recover_sync() or not self._lost:
                raise
            out = self._track(Tensor(self, DEFERRED, call.out_shape, np.float32))   # page: replay on recovery
            self.recovery._stats["deferred_ops"] += 1
        out._recipe = recipe_of(call)
        return out

    def _sync(self, t: Tensor) -> None:
        """Wait until the device has run everything queued (natively): a 4-byte read of t."""
        h = t.handle.handles[-1] if t.blocked else t.handle
        if t.size and not isinstance(h, np.ndarray):
            self.recovery.call(lambda: self._device.download_sync(h, (1,), t.dtype), "read")

    def _oom_host(self, call: Any) -> Tensor:
        arrays_known = all(t is None or t.known_values() is not None for t in call.inputs)
        from .platform import IN_PYODIDE
        if not arrays_known and IN_PYODIDE:
            raise OutOfMemory(f"{call.op}: out of device memory, and its inputs live only on the GPU (a page "
                              "cannot read them back inside a synchronous op)")
        self.recovery._stats["oom_lower_tier"] += 1
        self.recovery._event("oom_lower_tier", op=call.op)
        return self._run_host(call, "out of device memory: lower tier")

    def _place(self, call: Any) -> str:
        """"webgpu" or "cpu" for this call (the selector in auto mode; else the GPU unless an input already
        lives on the host and every input's values are there)."""
        if self.selector is not None:
            return self.selector.place(call)
        on_host = [t for t in call.inputs if t is not None and isinstance(t.handle, np.ndarray)]
        if on_host and all(t is None or t.known_values() is not None for t in call.inputs):
            return "cpu"
        return "webgpu"

    def _reopen_sync(self) -> Backend:
        from .backends.native import NativeBackend
        return NativeBackend(self._open_limits)

    async def _reopen_async(self) -> Backend:
        from .platform import IN_PYODIDE
        if IN_PYODIDE:
            from .backends.browser import BrowserBackend
            return await BrowserBackend.create(self._open_limits)
        return self._reopen_sync()

    def _launch(self, launch: Launch) -> Tensor:
        self._check_open()
        if launch.output.size:
            self._device.run(launch)
        return launch.output


class Kernel:
    """A compiled user WGSL entry point."""

    def __init__(self, rt: Runtime, pipeline: Any, spec: tuple[Any, ...] | None = None) -> None:
        self._rt = rt
        self.pipeline = pipeline
        self._spec = spec
        self._generation = rt._generation
        self._written = _written_bindings(spec[0]) if spec else None

    def dispatch(self, workgroups: Sequence[int] | int, *tensors: Tensor,
                 uniforms: bytes | np.ndarray | Sequence[int | float] | None = None) -> None:
        """Queue one dispatch: tensors bind to @group(0) @binding(0..n-1), uniforms (if any) to @binding(n).

        `uniforms` is raw bytes, a NumPy array (its bytes), or numbers (int -> u32, float -> f32).
        """
        self._rt._check_open()
        wg = (int(workgroups),) if isinstance(workgroups, (int, np.integer)) else tuple(int(w) for w in workgroups)
        if not 1 <= len(wg) <= 3:
            raise ValueError(f"workgroups must have 1 to 3 dimensions, got {wg}")
        owned = [self._rt._own(t, f"tensor {i}") for i, t in enumerate(tensors)]
        for i, t in enumerate(owned):
            if t.blocked:
                raise LimitExceeded("maxStorageBufferBindingSize", self._rt.limits["maxStorageBufferBindingSize"],
                                    t.nbytes, f"tensor {i} (shape {t.shape}, stored as {len(t.handle)} blocks "
                                    "under this runtime's budget; a user kernel binds whole buffers)")
        rt = self._rt
        ubytes = _uniform_bytes(uniforms)
        if rt.backend == "cpu":
            rt._device.dispatch(self.pipeline, wg, [t.handle for t in owned], ubytes)
            return
        from .recovery import Unrecoverable
        for i, t in enumerate(owned):
            t._usable()
            if isinstance(t.handle, np.ndarray):
                rt._to_device(t)
            if self._written is None or i in self._written:
                # the kernel may write it: neither its host copy nor its lineage describes it any more
                t._host = None
                t._recipe = Unrecoverable(f"written by the user kernel {self._spec[3] if self._spec else ''!r}")

        def run() -> None:
            if rt._lost:
                rt.recovery.recover()
            if self._generation != rt._generation and self._spec:
                source, entry, constants, label = self._spec
                self.pipeline = rt._device.compile(source, entry, constants, None, label=label)
                self._generation = rt._generation
            for t in owned:
                t._usable()
            rt._device.dispatch(self.pipeline, wg, [t.handle for t in owned], ubytes)

        rt.recovery.call(run, "dispatch")


def _written_bindings(source: str) -> set[int] | None:
    """Binding indices a WGSL shader declares read_write (None: not parseable, assume all)."""
    import re
    found = set()
    for m in re.finditer(r"((?:@\w+\s*\(\s*\w+\s*\)\s*)+)var\s*<\s*storage\s*,\s*read_write\s*>", source):
        b = re.search(r"@binding\s*\(\s*(\d+)\s*\)", m.group(1))
        if b is None:
            return None
        found.add(int(b.group(1)))
    return found


def _uniform_bytes(uniforms: bytes | np.ndarray | Sequence[int | float] | None) -> bytes | None:
    if uniforms is None:
        return None
    if isinstance(uniforms, np.ndarray):
        data = uniforms.tobytes()
    elif isinstance(uniforms, (bytes, bytearray, memoryview)):
        data = bytes(uniforms)
    else:
        return pack_uniforms(*uniforms)
    return data + b"\0" * (-len(data) % 16)
