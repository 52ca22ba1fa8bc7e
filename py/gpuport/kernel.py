"""Kernel: a user's own WGSL entry point, compiled on the runtime's device and dispatched over its tensors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import LimitExceeded
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
        self.pipeline = rt.device.compile(spec)
        self._generation = rt.generation
        self._written = written_bindings(spec.source)

    def dispatch(self, workgroups: Sequence[int] | int, *tensors: Tensor,
                 uniforms: bytes | np.ndarray | Sequence[int | float] | None = None) -> None:
        """Queue one dispatch: tensors bind to @group(0) @binding(0..n-1), uniforms (if any) to @binding(n).

        `uniforms` is raw bytes, a NumPy array (its bytes), or numbers (int -> u32, float -> f32).
        """
        rt = self.runtime
        rt.check_open()
        wg = (int(workgroups),) if isinstance(workgroups, (int, np.integer)) else tuple(int(w) for w in workgroups)
        if not 1 <= len(wg) <= 3:
            raise ValueError(f"workgroups must have 1 to 3 dimensions, got {wg}")
        owned = [rt.own(t, f"tensor {i}") for i, t in enumerate(tensors)]
        for i, t in enumerate(owned):
            if t.blocked:
                raise LimitExceeded("maxStorageBufferBindingSize", rt.limits["maxStorageBufferBindingSize"],
                                    t.nbytes, f"tensor {i} (shape {t.shape}, stored as {len(t.handle)} blocks "
                                    "under this runtime's budget; a user kernel binds whole buffers)")
        ubytes = uniform_bytes(uniforms)
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


def written_bindings(source: str) -> set[int] | None:
    """Binding indices a WGSL shader declares read_write (None: not parseable, assume all)."""
    found = set()
    for m in re.finditer(r"((?:@\w+\s*\(\s*\w+\s*\)\s*)+)var\s*<\s*storage\s*,\s*read_write\s*>", source):
        b = re.search(r"@binding\s*\(\s*(\d+)\s*\)", m.group(1))
        if b is None:
            return None
        found.add(int(b.group(1)))
    return found


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
