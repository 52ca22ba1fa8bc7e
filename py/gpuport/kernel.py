"""Kernel: a user's own WGSL entry point, compiled on the runtime's device and dispatched over its tensors;
with a NumPy twin (`reference=`, contract in kernel_reference.py) it runs wherever gpuport does.

Where a dispatch runs is placement's decision (`rt.placement.kernel`): the WGSL on the GPU; the reference on
the host where the WGSL cannot run there or should not (the cpu tier, auto pinned or limited to the host, a
page whose device is lost, a bound tensor the device has no room for). Each dispatch is counted where it ran
(`rt.info()["ran"]` and the telemetry as `kernel:<label>`, auto's selection counts, a profile).
"""

from __future__ import annotations

import operator
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import GpuValidationError, LimitExceeded, OutOfMemory, UnsupportedFeature
from .ops import wgsl
from .ops.kernel_reference import DEFAULT_ATOL, DEFAULT_RTOL, Reference, compare
from .ops.kernels import pack_uniforms
from .ops.pipelines import PipelineSpec
from .platform import sync_wait
from .tensor.lineage import Fresh, Lost
from .tensor.storage import HostArray
from .tensor.tensor import Tensor
from .types import DEVICE, HOST, Decision

if TYPE_CHECKING:
    from .runtime import Runtime

Uniforms = bytes | np.ndarray | Sequence[int | float] | None


class Kernel:
    """A compiled user WGSL entry point (`rt.kernel(...)`), with its NumPy reference if one was given."""

    def __init__(self, rt: "Runtime", spec: PipelineSpec, reference: Callable[..., Any] | None = None,
                 check: bool = False, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> None:
        self.runtime = rt
        self.spec = spec
        self.name = f"kernel:{spec.label}"
        self.layout = wgsl.bindings(spec.source)    # None: not readable, the device checks alone
        self._written = wgsl.written_bindings(spec.source)
        storage = None if self.layout is None else [b for b in self.layout if b.kind != "uniform"]
        self.reference = None if reference is None else Reference(reference, spec.label, storage)
        if check and self.reference is None:
            raise ValueError(f"kernel {spec.label!r}: check=True compares the GPU with the reference: pass reference=")
        if not (rtol >= 0 and atol >= 0):
            raise ValueError(f"kernel {spec.label!r}: rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
        self.check, self.rtol, self.atol = bool(check), float(rtol), float(atol)
        # dispatches per place: the WGSL on the GPU, the reference on the host, and GPU runs compared
        self.stats = {"gpu": 0, "reference": 0, "checked": 0}
        self._last_place: str | None = None
        self._check_workgroup_memory()
        self.pipeline = None
        if rt.device.is_host:
            if self.reference is None:
                raise UnsupportedFeature(
                    f"kernel {spec.label!r} (entry point {spec.entry_point!r}): WGSL kernels need a WebGPU "
                    f"backend and this runtime's backend is {rt.device.name!r} (tier {rt.tier!r}); pass "
                    "reference=fn to rt.kernel, a NumPy function that writes the read_write bindings in place "
                    "as the WGSL does, and this tier runs it instead")
        else:
            self.pipeline = rt.device.compile(spec)
        self._generation = rt.generation

    def _check_workgroup_memory(self) -> None:
        """What a browser refuses, natively too (wgpu-native does not enforce this limit)."""
        limit = self.runtime.device.limits.get("maxComputeWorkgroupStorageSize")
        found = wgsl.workgroup_bytes(self.spec.source, self.spec.constants_dict)
        if limit is not None and found is not None and found[0] > limit:
            raise LimitExceeded("maxComputeWorkgroupStorageSize", limit, found[0],
                                f"kernel {self.spec.label!r}: workgroup variables {', '.join(found[1])}")

    def dispatch(self, workgroups: Sequence[int] | int, *tensors: Tensor, uniforms: Uniforms = None) -> None:
        """Queue one dispatch: tensors bind to @group(0) @binding(0..n-1), uniforms (if any) to @binding(n).

        `uniforms` is raw bytes, a NumPy array (its bytes), or numbers (int -> u32, float -> f32); the
        reference gets it as given. With check=True (natively) this is `dispatch_checked`.
        """
        rt = self.runtime
        ready = self._for_device(workgroups, tensors, uniforms)
        if ready is None:
            return
        wg, owned, ubytes = ready
        if self.check:
            if not rt.device.can_block:
                raise UnsupportedFeature(f"kernel {self.spec.label!r}: check=True reads both answers back, which "
                                         "a page cannot do inside a synchronous dispatch: use `await "
                                         "kernel.dispatch_checked(...)`")
            sync_wait(self._checked(wg, owned, ubytes, uniforms, blocking=True), "kernel.dispatch(check=True)")
            return
        with rt.lock:
            self._run_device(wg, owned, ubytes, uniforms)

    async def dispatch_checked(self, workgroups: Sequence[int] | int, *tensors: Tensor,
                               uniforms: Uniforms = None) -> None:
        """Dispatch on the GPU and run the reference on copies of the same inputs; raise ReferenceMismatch
        naming the binding, the largest difference and where it is when a read_write binding differs
        beyond atol + rtol*|reference|. The tensors keep the GPU's answer. Awaits both answers, so it
        works in a page. Where the reference runs instead of the WGSL there is nothing to compare: the
        dispatch runs the reference once (`stats["checked"]` counts real comparisons)."""
        if self.reference is None:
            raise ValueError(f"kernel {self.spec.label!r}: dispatch_checked compares with the reference: pass "
                             "reference= to rt.kernel")
        ready = self._for_device(workgroups, tensors, uniforms)
        if ready is not None:
            await self._checked(*ready, uniforms, blocking=False)

    def _for_device(self, workgroups: Any, tensors: Sequence[Any], uniforms: Uniforms
                    ) -> tuple[tuple[int, ...], list[Tensor], bytes | None] | None:
        """The validated dispatch for the device, or None where the reference ran instead (an input lives
        only on the host)."""
        wg, owned, ubytes = self._prepare(workgroups, tensors, uniforms)
        rt = self.runtime
        with rt.lock:
            decision = rt.placement.kernel(self.reference is not None,
                                           lambda: self._host_arrays(owned, strict=False) is not None)
            if decision.where == HOST:
                self._run_reference(wg, owned, uniforms, decision)
                return None
        return wg, owned, ubytes

    def _prepare(self, workgroups: Any, tensors: Sequence[Any], uniforms: Uniforms
                 ) -> tuple[tuple[int, ...], list[Tensor], bytes | None]:
        rt = self.runtime
        rt.check_open()
        wg = _workgroups(workgroups)
        wg += (1,) * (3 - len(wg))
        owned = [rt.own(t, f"tensor {i}") for i, t in enumerate(tensors)]
        for i, t in enumerate(owned):
            if t.blocked:
                raise LimitExceeded("maxStorageBufferBindingSize", rt.limits["maxStorageBufferBindingSize"],
                                    t.nbytes, f"tensor {i} (shape {t.shape}, stored as {len(t.blocks)} blocks "
                                    "under this runtime's budget; a user kernel binds whole buffers)")
        ubytes = uniform_bytes(uniforms)
        self._check_bindings(owned, ubytes is not None)
        return wg, owned, ubytes
    def _check_bindings(self, owned: list[Tensor], has_uniforms: bool) -> None:
        """The dispatch against the shader's declared bindings, before anything is queued: a mismatch
        would otherwise fail the whole batch it lands in."""
        if self.layout is None:
            return
        label = self.spec.label
        storage = [b for b in self.layout if b.kind != "uniform"]
        uniform = [b for b in self.layout if b.kind == "uniform"]
        declared = ", ".join(f"@binding({b.index}) {b.name}: {b.kind}" for b in self.layout) or "none"
        if [b.index for b in storage] != list(range(len(storage))) or (uniform and uniform[0].index != len(storage)):
            raise GpuValidationError(f"kernel {label!r}: dispatch binds tensors to @binding(0..n-1) and uniforms to "
                                     f"@binding(n) of @group(0); the shader declares {declared}")
        if len(owned) != len(storage):
            raise GpuValidationError(f"kernel {label!r}: the shader declares {len(storage)} storage bindings "
                                     f"({declared}); the dispatch gave {len(owned)} tensors")
        if has_uniforms != bool(uniform):
            raise GpuValidationError(f"kernel {label!r}: " + ("uniforms given but the shader declares no uniform "
                                     "binding" if has_uniforms else f"the shader reads uniforms at "
                                     f"@binding({uniform[0].index}) ({uniform[0].name}): pass uniforms="))
        for i, a in enumerate(owned):
            for j in range(i + 1, len(owned)):
                if _same_memory(a, owned[j]) and "rw" in (storage[i].kind, storage[j].kind):
                    raise GpuValidationError(f"kernel {label!r}: tensors {i} and {j} are the same buffer and one "
                                             "binding is read_write (WebGPU forbids a writable buffer bound twice)")

    def _run_device(self, wg: tuple[int, ...], owned: list[Tensor], ubytes: bytes | None, uniforms: Uniforms) -> None:
        """The WGSL on the GPU; with a reference, the host where the device has no room for a bound tensor."""
        rt = self.runtime
        t0, before = time.perf_counter(), rt.device.stats["dispatches"]
        for t in owned:
            t.usable()
        try:
            for t in owned:
                if t.on_host:
                    rt.memory.to_device(t)
        except OutOfMemory:
            if self.reference is None or self._host_arrays(owned, strict=False) is None:
                raise
            self._run_reference(wg, owned, uniforms, rt.placement.step_down(self.name, True))
            return

        def run() -> None:
            if rt.lost:
                rt.recovery.recover()
            if self._generation != rt.generation:   # a new device since the last dispatch
                self.pipeline = rt.device.compile(self.spec)
                self._generation = rt.generation
            for t in owned:
                t.usable()
            rt.device.dispatch(self.pipeline, wg, [t.buffer for t in owned], ubytes)

        rt.recovery.call(run, "dispatch")
        for i, t in enumerate(owned):
            if self._writes(i):
                # the kernel may write it: neither its host copy nor its lineage describes it any more
                t.host = None
                t.recipe = Lost(f"written by the user kernel {self.spec.label!r}")
        self.stats["gpu"] += 1
        self._count(Decision(DEVICE, "native", "the kernel's WGSL on the device"), t0, owned,
                    rt.device.stats["dispatches"] - before)

    async def _checked(self, wg: tuple[int, ...], owned: list[Tensor], ubytes: bytes | None,
                       uniforms: Uniforms, blocking: bool) -> None:
        """`blocking`: driven by sync_wait (natively), so read retries sleep instead of awaiting."""
        rt = self.runtime
        assert self.reference is not None
        arrays = [await rt.memory.read(t, blocking) for t in owned]     # copies: the reference writes its own
        written = {i for i in range(len(owned)) if self._writes(i)}
        self.reference.run(_views(arrays, written), written, uniforms, wg)
        with rt.lock:
            self._run_device(wg, owned, ubytes, uniforms)
        if self._last_place != DEVICE:
            return   # it ran the reference after all (no room on the device, or no device): nothing to compare
        for i in sorted(written):
            compare(self.spec.label, i, self.reference.name_of(i), await rt.memory.read(owned[i], blocking), arrays[i],
                    self.rtol, self.atol)
        self.stats["checked"] += 1

    def _writes(self, i: int) -> bool:
        return self._written is None or i in self._written

    # -- the reference on the host -------------------------------------------------------------------
    def _host_arrays(self, owned: list[Tensor], strict: bool = True) -> list[np.ndarray] | None:
        """Each tensor's values on the host: known, zeros for a never-written rt.empty (WebGPU zeroes new
        buffers, NumPy's are zeros), or read back where the device can block. None (strict: an
        UnsupportedFeature naming the tensor) where only an await could get one."""
        rt = self.runtime
        out = []
        for i, t in enumerate(owned):
            values = t.known_values()
            if values is None and isinstance(t.recipe, Fresh):
                values = np.zeros(t.shape, t.dtype)
            if values is None and rt.device.can_block and not rt.lost and t.storage.on_device:
                values = rt.executor.host_values(t)
            if values is None:
                if strict:
                    raise UnsupportedFeature(f"kernel {self.spec.label!r}: tensor {i} (shape {t.shape}) lives only "
                                             "on the GPU and cannot be read back here to run the reference")
                return None
            out.append(values)
        return out

    def _run_reference(self, wg: tuple[int, ...], owned: list[Tensor], uniforms: Uniforms, decision: Decision) -> None:
        """The reference on the tensors' host values; the read_write bindings take what it wrote."""
        rt = self.runtime
        assert self.reference is not None
        t0 = time.perf_counter()
        for t in owned:
            t.usable()
        written = {i for i in range(len(owned)) if self._writes(i)}
        arrays = _views([np.array(a, copy=True) if i in written else a
                         for i, a in enumerate(self._host_arrays(owned) or [])], written)
        self.reference.run(arrays, written, uniforms, wg)
        for i in sorted(written):
            _commit(rt, owned[i], arrays[i])
        self.stats["reference"] += 1
        self._count(decision, t0, owned, 0)

    def _count(self, decision: Decision, t0: float, owned: list[Tensor], dispatches: int) -> None:
        self._last_place = decision.where
        self.runtime.placement.ran(self.name, decision, t0, [t.shape for t in owned], dispatches, selection=True)


def _views(arrays: list[np.ndarray], written: set[int]) -> list[np.ndarray]:
    """The written arrays as they are (writable copies), the others as read-only views."""
    out = []
    for i, a in enumerate(arrays):
        if i not in written:
            a = a.view()
            a.flags.writeable = False
        out.append(a)
    return out


def _commit(rt: "Runtime", t: Tensor, values: np.ndarray) -> None:
    """`values` become t's: written into its host array where it owns a writable one (so views of it see
    them, as views of a GPU buffer would), else the tensor now lives on the host with these values."""
    held = t.storage.values()
    if held is not None and held.flags.writeable:
        held[...] = values
    else:
        t.storage = HostArray(values)
        rt.memory.live.discard(t)
    t.host = None
    t.recipe = None   # the host holds the values: recovery has nothing to rebuild


def _same_memory(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are views of one buffer (device storage is shared by views) or one host array."""
    if a.on_host and b.on_host:
        return a.storage.values() is b.storage.values()
    return a.storage.on_device and a.storage is b.storage


def _workgroups(workgroups: Any) -> tuple[int, ...]:
    """1 to 3 non-negative integer workgroup counts (0 dispatches nothing, as in WebGPU)."""
    dims = list(workgroups) if isinstance(workgroups, (tuple, list)) else [workgroups]
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"workgroups must have 1 to 3 dimensions, got {tuple(dims)}")
    out = []
    for d in dims:
        try:
            n = operator.index(d)
        except TypeError:
            raise TypeError(f"workgroup counts must be integers, got {d!r} ({type(d).__name__}) in "
                            f"{tuple(dims)}") from None
        if n < 0:
            raise ValueError(f"workgroup counts must be >= 0, got {n} in {tuple(dims)}")
        out.append(n)
    return tuple(out)


def uniform_bytes(uniforms: bytes | np.ndarray | Sequence[int | float] | None) -> bytes | None:
    """Uniforms as bytes padded to 16 (raw bytes, an array's bytes, or numbers packed as u32/f32)."""
    if uniforms is None:
        return None
    if isinstance(uniforms, np.ndarray):
        data = uniforms.tobytes()
    elif isinstance(uniforms, (bytes, bytearray, memoryview)):
        data = bytes(uniforms)
    else:
        return pack_uniforms(*uniforms)
    return data + b"\0" * (-len(data) % 16)
