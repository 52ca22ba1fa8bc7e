"""Kernel: a user's own WGSL entry point, compiled on the runtime's device and dispatched over its tensors."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import wgsl
from .errors import GpuValidationError, LimitExceeded
from .kernels import pack_uniforms
from .lineage import Lost
from .pipelines import PipelineSpec
from .tensor import Tensor

if TYPE_CHECKING:
    from .runtime import Runtime


class Kernel:
    """A compiled user WGSL entry point (`rt.kernel(...)`)."""

    def __init__(self, rt: "Runtime", spec: PipelineSpec) -> None:
        self.runtime = rt
        self.spec = spec
        self._check_workgroup_memory()
        self.pipeline = rt.device.compile(spec)
        self._generation = rt.generation
        self.layout = wgsl.bindings(spec.source)    # None: not readable, the device checks alone
        self._written = wgsl.written_bindings(spec.source)

    def _check_workgroup_memory(self) -> None:
        """What a browser refuses, natively too (wgpu-native does not enforce this limit)."""
        limit = self.runtime.device.limits.get("maxComputeWorkgroupStorageSize")
        found = wgsl.workgroup_bytes(self.spec.source, self.spec.constants_dict)
        if limit is not None and found is not None and found[0] > limit:
            raise LimitExceeded("maxComputeWorkgroupStorageSize", limit, found[0],
                                f"kernel {self.spec.label!r}: workgroup variables {', '.join(found[1])}")

    def dispatch(self, workgroups: Sequence[int] | int, *tensors: Tensor,
                 uniforms: bytes | np.ndarray | Sequence[int | float] | None = None) -> None:
        """Queue one dispatch: tensors bind to @group(0) @binding(0..n-1), uniforms (if any) to @binding(n).

        `uniforms` is raw bytes, a NumPy array (its bytes), or numbers (int -> u32, float -> f32).
        """
        rt = self.runtime
        rt.check_open()
        wg = _workgroups(workgroups)
        owned = [rt.own(t, f"tensor {i}") for i, t in enumerate(tensors)]
        for i, t in enumerate(owned):
            if t.blocked:
                raise LimitExceeded("maxStorageBufferBindingSize", rt.limits["maxStorageBufferBindingSize"],
                                    t.nbytes, f"tensor {i} (shape {t.shape}, stored as {len(t.handle)} blocks "
                                    "under this runtime's budget; a user kernel binds whole buffers)")
        ubytes = uniform_bytes(uniforms)
        self._check_bindings(owned, ubytes is not None)
        with rt.lock:
            self._queue(wg, owned, ubytes)

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
                if owned[j].handle is a.handle and "rw" in (storage[i].kind, storage[j].kind):
                    raise GpuValidationError(f"kernel {label!r}: tensors {i} and {j} are the same buffer and one "
                                             "binding is read_write (WebGPU forbids a writable buffer bound twice)")

    def _queue(self, wg: tuple[int, ...], owned: list[Tensor], ubytes: bytes | None) -> None:
        rt = self.runtime
        for i, t in enumerate(owned):
            t.usable()
            if t.on_host:
                rt.memory.to_device(t)
            if self._written is None or i in self._written:
                # the kernel may write it: neither its host copy nor its lineage describes it any more
                t.host = None
                t.recipe = Lost(f"written by the user kernel {self.spec.label!r}")

        def run() -> None:
            if rt.lost:
                rt.recovery.recover()
            if self._generation != rt.generation:   # a new device since the last dispatch
                self.pipeline = rt.device.compile(self.spec)
                self._generation = rt.generation
            for t in owned:
                t.usable()
            rt.device.dispatch(self.pipeline, wg, [t.handle for t in owned], ubytes)

        rt.recovery.call(run, "dispatch")


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
