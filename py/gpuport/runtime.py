"""Runtime: one open device, its tier and limits, and the collaborators that serve it (memory, pipelines,
planning and execution, recovery, backend selection). The factories users call: tensor, empty, kernel."""

from __future__ import annotations

import asyncio
import math
import operator
import threading
import time
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator, Sequence

import numpy as np

from ._version import __version__
from .backends.auto import host_device, prepare_page, request_device
from .backends.base import DTYPES, Backend
from .backends.capabilities import detect, effective_limits, resolve_tier
from .engine.execution import Executor
from .engine.fallback import FallbackManager
from .engine.memory import DeviceMemory
from .engine.pipeline_cache import PipelineCache
from .engine.profiler import Profile
from .engine.recovery import RecoveryManager
from .engine.report import build_report, render
from .engine.tuning import apply as apply_tuning
from .engine.tuning import tune_matmul
from .errors import BackendUnavailable, RuntimeClosed, UnsupportedFeature
from .host import hostops
from .kernel import Kernel
from .loading.stores import store_for
from .ops.api import Ops
from .ops.kernel_reference import DEFAULT_ATOL, DEFAULT_RTOL
from .ops.launches import Part, kv_write_launch
from .ops.pipelines import PipelineSpec, sha256
from .placement import Placement, Planner, attach
from .placement.telemetry import Telemetry
from .platform import IN_PYODIDE, sync_wait
from .tensor.lineage import Fresh, Leaf
from .tensor.storage import HostArray
from .tensor.tensor import Tensor

PRECISIONS = ("f32", "f16")
BACKENDS = ("auto", "webgpu", "cpu")
CALIBRATE = ("open", "later")


class Runtime:
    """An open device. Create it with `await gpuport.open()` or `gpuport.open_sync()`."""

    def __init__(self, device: Backend, tier: str | None = None, note: str | None = None,
                 budget: dict[str, int] | None = None, precision: str = "f32",
                 fallback_config: dict[str, Any] | None = None, memory_budget: int | None = None,
                 open_limits: str = "default") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.device = device
        self.capabilities = detect(device.name, device.features, device.limits, device.adapter_info, device.browser)
        self.detected_tier = self.capabilities.tier
        self.tier = resolve_tier(self.detected_tier, tier)
        # The limits ops plan against: the device's, lowered by the constrained tier's budget, quirks and
        # the caller's `budget`. Where they are lower than the device's, tensors over the binding budget
        # are stored as blocks (tensor.Blocks) and the fallback manager's strategies serve them.
        self.limits = effective_limits(self.capabilities, self.tier, budget)
        self.budget = dict(budget or {})
        # f16 kernels are opt-in: they trade accuracy (stated per kernel) for speed and memory. Asked for on
        # a device without shader-f16 (or outside the full tier) they step down to f32, never raise.
        self.precision_requested = precision
        self.precision = "f16" if precision == "f16" and self.tier == "full" and self.capabilities.has_f16 else "f32"
        self.note = note
        self.open_ms: dict[str, float] = {}   # set by open(): ms per step
        self.closed = False
        # Threads may share a runtime: recording, flushing and reading back (the device's pending batch,
        # its staging buffers, the live set, the selector's history) happen under this lock.
        self.lock = threading.RLock()
        self.generation = 0   # devices adopted after the first (recovery): a kernel recompiles on a new one
        self.open_limits = open_limits
        stores_blocks = self.tier == "constrained" or bool(budget) or bool(self.capabilities.quirks.get("budget"))
        self.memory = DeviceMemory(self, stores_blocks, int(memory_budget) if memory_budget else None)
        self.pipelines = PipelineCache(store_for("pipelines"), __version__)
        self.pipelines.attach(device)
        caps = self.capabilities
        planner = Planner(self.limits, caps.quirks, self.tier, self.precision, caps.has_f16, not device.is_host,
                          dict(fallback_config or {}), needs_blocks=self.memory.needs_blocks,
                          busy=lambda: self.pipelines.busy)
        self.placement = Placement(self, planner, Telemetry())
        self.fallback = FallbackManager(runtime=self)
        self.executor = Executor(self)
        self.recovery = RecoveryManager(self)
        self.ops = Ops(self)
        self.profiler: Profile | None = None   # while a `with rt.profile()` block is open

    @property
    def lost(self) -> bool:
        """The device is lost and no new one adopted yet (recovery.py)."""
        return self.recovery.lost is not None

    def adopt(self, device: Backend) -> None:
        """Make `device` this runtime's, in place of a lost one (recovery rebuilds pipelines and tensors)."""
        self.pipelines.attach(device)
        self.device = device
        self.generation += 1

    @property
    def backend(self) -> str:
        """The device: "webgpu" or "cpu" (under auto, the GPU device beside the host)."""
        return self.device.name

    @property
    def mode(self) -> str:
        """How work is placed: "auto" (per call, by measurement) or the one backend everything runs on."""
        return self.placement.mode

    @contextmanager
    def pinned(self, backend: str) -> Iterator[None]:
        """Run the ops of the block on `backend` ("webgpu" or "cpu") under auto, e.g. to compare the GPU
        kernel with NumPy where auto would pick NumPy; on a fixed backend only that backend is accepted."""
        self.check_open()
        with self.placement.pinned(backend):
            yield

    @property
    def binding_limit(self) -> int:
        """Bytes one buffer binding may hold here (the tier's budget included): what one weight may take."""
        return self.placement.planner.binding() if not self.device.is_host else 1 << 62

    def info(self) -> dict[str, Any]:
        """Backend, tier, adapter identity, features and limits, as plain data."""
        self.check_open()
        device = self.device
        info = {
            "version": __version__,
            "backend": self.backend,
            "mode": self.mode,
            "tier": self.tier,
            "detected_tier": self.detected_tier,
            "adapter": dict(device.adapter_info),
            # False: auto has not needed the device yet, and its adapter is the recorded one (backends/identity.py)
            "device_open": device.opened,
            "features": sorted(device.features),
            "limits": dict(self.limits),
            "platform": "pyodide" if IN_PYODIDE else "native",
            "browser": device.browser,
            "identity": self.capabilities.browser.as_dict() if self.capabilities.browser else None,
            "quirks": dict(self.capabilities.quirks),
            "tier_reasons": list(self.capabilities.reasons),
            "precision": self.precision,
            "strategies": self.placement.planner.strategies(),
            # what ran where: per op, user kernel (kernel:<label>) and model computation, host and device
            "ran": self.placement.counts(),
            # which WGSL kernels the device ran: dispatches per kernel (a built-in kernel or variant by its name,
            # matmul_rb_tb16x8 or softmax_f16; a user kernel as entry_point@hash of its source)
            "kernels": dict(self.pipelines.ran),
            # what runs ops placed on the host: "wasm", "native-simd" or "numpy"; per op, and counted per call
            "host_kernels": hostops.backend_name(),
            "host_kernels_by_op": hostops.engines(),
            "host_kernel_calls": hostops.calls(),
            # whole layers: on how many threads, and in a page that has one, why
            "host_threads": hostops.layer_threads(),
            # how long each step of gpuport.open() took (js_half: a page's JS modules, kernels and pool)
            "open_ms": dict(self.open_ms),
        }
        if hostops.reason():
            info["host_kernels_reason"] = hostops.reason()
        if self.limits != dict(device.limits):
            info["device_limits"] = dict(device.limits)
            info["budget"] = {k: v for k, v in self.limits.items() if v != device.limits.get(k)}
        if self.memory.stores_blocks:
            info["over_budget_strategies"] = self.placement.planner.over_budget_strategies()
        if self.precision != self.precision_requested:
            info["precision_note"] = (f"precision {self.precision_requested!r} asked for; tier {self.tier!r} "
                                      f"{'has' if self.capabilities.has_f16 else 'lacks'} shader-f16: f32 kernels")
        if self.note:
            info["note"] = self.note
        selection = self.placement.info()
        if selection is not None:
            info["selection"] = selection
        info["recovery"] = {k: v for k, v in self.recovery.stats().items() if k != "events"}
        return info

    # -- tensors -----------------------------------------------------------------------------------
    def tensor(self, array: Any, dtype: str | np.dtype | None = None, *, copy: bool = True) -> Tensor:
        """A device copy of `array` (float32, int32 or uint32; pass `dtype` to convert). copy=False: the tensor takes
        `array` itself where it can (a C-contiguous NumPy array of that dtype), made read-only: the caller gives it
        up (the model loader does, for arrays it made: no second copy of the weights)."""
        self.check_open()
        arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
        if arr.dtype not in DTYPES:
            raise TypeError(f"gpuport tensors are float32, int32 or uint32, got {arr.dtype}: "
                            f"convert with .astype('float32') or pass dtype=")
        host = arr if not copy and arr.flags.c_contiguous else np.array(arr, order="C", copy=True)
        host.flags.writeable = False
        if self.placement.auto is not None and not self.lost:
            # auto: it stays on the host until an op placed on the GPU needs it (uploaded once, then on both)
            return Tensor(self, HostArray(host), host.shape, host.dtype, host)
        with self.lock:
            return self.memory.alloc(host.shape, host.dtype, host=host)

    def empty(self, shape: Sequence[int] | int, dtype: str | np.dtype = "float32") -> Tensor:
        """An uninitialised tensor, for outputs of ops and kernels."""
        self.check_open()
        shape = _shape(shape)
        dt = np.dtype(dtype)
        if dt not in DTYPES:
            raise TypeError(f"gpuport tensors are float32, int32 or uint32, got {dt}")
        with self.lock:
            t = self.memory.alloc(shape, dt)
        t.recipe = Fresh(shape, dt)
        return t

    def weight(self, array: np.ndarray) -> Tensor:
        """A device copy of a model's weight that the host does not keep: under auto, using it on the host
        would cost a readback, so its ops stay on the device; recovery uploads it again from `array`."""
        with self.lock:
            t = self.memory.alloc(array.shape, array.dtype, host=array)
        t.host = None
        t.recipe = Leaf(array)
        return t

    def cache_buffer(self, size: int) -> Any:
        """A device buffer of `size` float32 values that recovery does not restore (a generation's KV cache
        dies with its device: the generation restarts)."""
        with self.lock:
            return self.device.alloc((size,), np.dtype(np.float32))

    def write_into(self, buffer: Any, src: Tensor, n: int, src_off: int, dst_off: int) -> None:
        """Copy `n` float32 values of `src` (from element src_off) into a `cache_buffer` (from dst_off), in
        place on the device (kv_write.wgsl at this device's elementwise workgroup size)."""
        planner = self.placement.planner
        with self.lock:
            if src.on_host:   # placement ran the op that made it on the host
                self.memory.to_device(src)
            self.device.run(kv_write_launch(src, Part(buffer, (dst_off + n,)), n, src_off, dst_off, wg=planner.wg(),
                                            max_groups=planner.limits.get("maxComputeWorkgroupsPerDimension", 65535)))

    def own(self, t: Any, what: str) -> Tensor:
        """`t` as a tensor of this runtime (TypeError / ValueError naming `what` otherwise)."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} must be a gpuport Tensor (from rt.tensor/rt.empty), got {type(t).__name__}")
        if t.runtime is not self:
            raise ValueError(f"{what} belongs to another runtime ({t.runtime!r})")
        return t

    # -- kernels -----------------------------------------------------------------------------------
    def kernel(self, source: str, entry_point: str = "main", constants: dict[str, float] | None = None,
               reference: Callable[..., None] | None = None, check: bool = False, rtol: float = DEFAULT_RTOL,
               atol: float = DEFAULT_ATOL) -> Kernel:
        """Compile a user's WGSL compute shader (errors raise ShaderCompileError with line:column).

        reference: its NumPy twin, `fn(*arrays, uniforms=..., workgroups=...)`: one array per storage
            binding in binding order (the read_write ones writable: fn writes them in place, as the WGSL
            does), `uniforms` as the dispatch was given them, `workgroups` the dispatch's (x, y, z). The
            cpu tier runs it instead of the WGSL (without it, rt.kernel raises UnsupportedFeature there);
            so does auto wherever the WGSL cannot run (kernel.py says where).
        check: every dispatch also runs the reference on copies of its inputs and raises ReferenceMismatch
            when a read_write binding differs by more than atol + rtol*|reference| (a debugging aid; in a
            page use `await kernel.dispatch_checked(...)`). Defaults justified in kernel_reference.py.
        """
        self.check_open()
        if not isinstance(source, str):
            raise TypeError(f"rt.kernel: source must be WGSL text (str), got {type(source).__name__}"
                            + (": decode it first, e.g. source.decode()" if isinstance(source, bytes) else ""))
        if not isinstance(entry_point, str):
            raise TypeError(f"rt.kernel: entry_point must be a str, got {type(entry_point).__name__}")
        try:
            consts = tuple(sorted((str(k), float(v)) for k, v in (constants or {}).items()))
        except (TypeError, ValueError, AttributeError):
            raise TypeError(f"rt.kernel: constants must map override names to numbers, got {constants!r}") from None
        # A label per source: a page learns of compile errors later, and forgets just that pipeline.
        spec = PipelineSpec(f"{entry_point}@{sha256(source)[:8]}", source, entry_point, consts, None)
        with self.lock:
            return Kernel(self, spec, reference, check, rtol, atol)

    async def precompile(self, ops: Sequence[str] | None = None,
                         on_progress: Callable[[dict[str, Any]], None] | None = None,
                         pause: Callable[[], Awaitable[Any]] | None = None) -> dict[str, Any]:
        """Create pipelines before they are needed, in first-use order: those of `ops` (what the manifest
        remembers of them and their own), or by default what placement will send to the device: on a fixed
        webgpu backend every op's, under backend="auto" the pipelines this adapter ran on the device before (the
        manifest: where placement sent work; on a software adapter the host wins and that is nothing to build).
        Ops called meanwhile run on NumPy where the host has their inputs, and move to the GPU as their pipelines
        resolve; `pause()` is awaited before each pipeline starts (a page's waits while a call runs). Returns a
        report: pipelines (created now), from_manifest, already (existed), failed, ms, recorded_ms (their stored
        compile time: far above ms means the browser's shader cache was warm), order, ops, and where matmul's
        variant was measured, tuning and tuned (the pipelines of a newly chosen variant, among `pipelines`)."""
        self.check_open()
        with self.lock:
            planner = self.placement.planner
            own = ops is not None or self.placement.auto is None
            report = await self.pipelines.precompile(self.device, planner, ops, on_progress, own, pause)
            # matmul's variant is measured once per adapter where matmul will run on the device
            if "matmul" in report["ops"] or own and (ops is None or "matmul" in ops or "linear" in ops):
                # which matmul variant is fastest here: measured once per adapter, kept in the manifest
                before = dict(planner.matmul_choice)
                report["tuning"] = await tune_matmul(self.device, planner, self.pipelines.manifest, pause=pause)
                if planner.matmul_choice != before:   # the chosen variants' other pipelines (bias), now
                    more = await self.pipelines.precompile(self.device, planner, ["matmul"], pause=pause)
                    report["pipelines"] += more["pipelines"]
                    report["tuned"] = more["pipelines"]
                self.pipelines.save()
            return report

    async def calibrate(self) -> str:
        """Measure the host and the device for backend="auto" now where open(calibrate="later") left the
        placement on provisional costs (every call on the host), and persist what was measured (a page's
        start() does this once it is idle). Returns the calibration's source: "measured", "stored" (there
        was a record), or "none" (not backend="auto")."""
        self.check_open()
        auto = self.placement.auto
        return "none" if auto is None else await auto.calibrate()

    def profile(self, sync: bool = False) -> Profile:
        """`with rt.profile() as prof:` ... `prof.report(format="json" | "html" | ...)`: per op where it ran
        and why, host and device time (timestamp queries where the adapter has them; `sync=True` waits for
        each device op natively otherwise), compile times, bytes moved, peak device memory."""
        self.check_open()
        return Profile(self, sync)

    def report(self, format: str = "dict") -> dict[str, Any] | str:
        """The compatibility report (`gpuport doctor`): "dict", "json" or "markdown"."""
        info = self.info()
        data = build_report(info)
        return data if format == "dict" else render(data, format)

    def flush(self) -> None:
        """Submit queued dispatches now (reads do this themselves)."""
        self.check_open()
        with self.lock:
            if self.lost:
                if not self.device.can_block:
                    return
                self.recovery.recover()
            self.recovery.call(self.device.flush, "flush")

    def close(self) -> None:
        """Release the device. Tensors of this runtime become unusable."""
        with self.lock:
            if not self.closed:
                if self.placement.auto is not None:
                    self.placement.auto.save_soon()
                self.closed = True
                self.device.close()

    def check_open(self) -> None:
        """Raise RuntimeClosed once the runtime is closed."""
        if self.closed:
            raise RuntimeClosed("this gpuport runtime was closed; open a new one with gpuport.open()")

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"tier={self.tier!r}"
        return f"Runtime(backend={self.backend!r}, {state})"


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    """A shape of non-negative integers whose element count fits in int64 (TypeError/ValueError naming it)."""
    dims = [shape] if isinstance(shape, (int, np.integer)) else list(shape)
    try:
        out = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise TypeError(f"shape dimensions must be integers, got {tuple(dims)!r}") from None
    if any(d < 0 for d in out):
        raise ValueError(f"negative dimension in shape {out}")
    if math.prod(out) >= 2 ** 63:
        raise ValueError(f"shape {out} has {math.prod(out):,} elements: more than int64 can count")
    return out


async def open(backend: str = "auto", tier: str | None = None, limits: str = "default",
               budget: dict[str, int] | None = None, precision: str = "f32",
               memory_budget: int | None = None, calibrate: str = "open") -> Runtime:
    """Open a runtime: WebGPU (the browser's in a page, wgpu-py natively) or NumPy.

    backend: "auto" (WebGPU when an adapter exists, else NumPy; with a device, each op goes to the GPU or
        NumPy as the BackendSelector chooses: see placement/auto.py), "webgpu" (every op on the device; fail if
        none) or "cpu".
    tier: force "full", "core", "constrained" or "cpu" (a tier the device lacks steps down).
    limits: "default" (WebGPU spec defaults, like a browser) or "adapter" (all the adapter offers).
    budget: limits to plan against, below the device's (e.g. {"maxStorageBufferBindingSize": 4 << 20});
        the constrained tier has a default one (capabilities.CONSTRAINED_BUDGET). Tensors over the
        binding budget are stored as blocks and served by the fallback strategies.
    precision: "f32" (default) or "f16": the full tier's f16 kernels (matmul, gelu, layer_norm, softmax;
        tolerances in tests/cases.py); without shader-f16 it steps down to f32.
    memory_budget: bytes of GPU memory this runtime may hold; beyond it allocations are out of memory
        and recovery steps down (blocks, then host residency). See recovery.py.
    calibrate: backend="auto" on an adapter without a stored calibration: "open" measures both sides now (a
        fraction of a second to seconds in a page); "later" starts with every call on the host and measures
        at `await rt.calibrate()` (start() in a page does so once the page is idle, after its first result).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if calibrate not in CALIBRATE:
        raise ValueError(f"calibrate must be one of {CALIBRATE}, not {calibrate!r}")
    if backend == "webgpu" and tier == "cpu":
        raise ValueError("backend='webgpu' with tier='cpu' is contradictory: pick one")
    steps: dict[str, float] = {}   # ms per step of this open, in rt.info()["open_ms"]: what a page's start waits on
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round((now - t) * 1e3, 1)
        t = now

    # a page's host kernels link while its device opens: the browser makes the device in another process (warm
    # visits: 7-60 ms of linking, 20-60 of the device, one after the other before)
    kernels = await prepare_page()
    step("js_half")
    device, note = None, None
    try:
        if backend != "cpu" and tier != "cpu":
            try:
                # auto opens the adapter only when placement first needs it (where its identity is stored):
                # work that stays on the host never loads the GPU driver
                device = await request_device(limits, store_for("adapter") if backend == "auto" else None)
            except BackendUnavailable as exc:
                if backend == "webgpu":   # asked for explicitly: fail loudly; auto steps down and says why
                    raise
                note = f"webgpu unavailable: {exc}"
        if kernels is not None:
            await kernels
    except BaseException:
        if device is not None:
            device.close()
        if kernels is not None:   # linked (or failed) before open() fails: never left running behind it
            await asyncio.gather(kernels, return_exceptions=True)
        raise
    device = device or host_device()
    step("device")
    try:
        rt = Runtime(device, tier, note=note, budget=budget, precision=precision, memory_budget=memory_budget,
                     open_limits=limits)
        step("runtime")
        await rt.pipelines.load()
        apply_tuning(rt.pipelines.manifest, rt.placement.planner)
        step("manifest")
        if backend == "auto" and not device.is_host:
            await attach(rt, measure=calibrate == "open")
            step("calibration")
    except BaseException:
        device.close()
        raise
    rt.open_ms = steps
    return rt


def open_sync(backend: str = "auto", tier: str | None = None, limits: str = "default",
              budget: dict[str, int] | None = None, precision: str = "f32",
              memory_budget: int | None = None, calibrate: str = "open") -> Runtime:
    """`open()` for native scripts that do not use asyncio. Not available in a page."""
    if IN_PYODIDE:
        raise UnsupportedFeature("in the browser use `await gpuport.open()`: WebGPU set-up is asynchronous")
    return sync_wait(open(backend, tier, limits, budget, precision, memory_budget, calibrate), "gpuport.open_sync()")
