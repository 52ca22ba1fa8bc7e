"""Runtime: one open backend, its tier, and the factories for tensors, ops and kernels."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .backends import DTYPES, Backend
from .capabilities import resolve_tier, detect_tier
from .errors import RuntimeClosed
from .kernels import Launch, pack_uniforms
from .tensor import Tensor


class Runtime:
    """An open device. Create it with `await gpuport.open()` or `gpuport.open_sync()`."""

    def __init__(self, device: Backend, tier: str | None = None, note: str | None = None) -> None:
        from .ops import Ops
        self._device = device
        self.detected_tier = detect_tier(device.name, device.features, device.limits)
        self.tier = resolve_tier(self.detected_tier, tier)
        self._note = note
        self._closed = False
        self.ops = Ops(self)

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
            "limits": dict(self._device.limits),
            "platform": "pyodide" if IN_PYODIDE else "native",
            "browser": getattr(self._device, "browser", None),
        }
        if self._note:
            info["note"] = self._note
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
        return Tensor(self, self._device.upload(host), host.shape, host.dtype, host)

    def empty(self, shape: Sequence[int] | int, dtype: str | np.dtype = "float32") -> Tensor:
        """An uninitialised tensor, for outputs of ops and kernels."""
        self._check_open()
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        dt = np.dtype(dtype)
        if dt not in DTYPES:
            raise TypeError(f"gpuport tensors are float32, int32 or uint32, got {dt}")
        return Tensor(self, self._device.alloc(shape, dt), shape, dt)

    # -- kernels -----------------------------------------------------------------------------------
    def kernel(self, source: str, entry_point: str = "main",
               constants: dict[str, float] | None = None) -> "Kernel":
        """Compile a user's WGSL compute shader (errors raise ShaderCompileError with line:column)."""
        self._check_open()
        return Kernel(self, self._device.compile(source, entry_point, constants, None, label=entry_point))

    def report(self, format: str = "dict") -> dict[str, Any] | str:
        """The compatibility report (`gpuport doctor`): "dict", "json" or "markdown"."""
        from .report import build_report, render
        data = build_report(self.info())
        return data if format == "dict" else render(data, format)

    def flush(self) -> None:
        """Submit queued dispatches now (reads do this themselves)."""
        self._check_open()
        self._device.flush()

    def close(self) -> None:
        """Release the device. Tensors of this runtime become unusable."""
        if not self._closed:
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

    def _launch(self, launch: Launch) -> Tensor:
        self._check_open()
        if launch.output.size:
            self._device.run(launch)
        return launch.output


class Kernel:
    """A compiled user WGSL entry point."""

    def __init__(self, rt: Runtime, pipeline: Any) -> None:
        self._rt = rt
        self.pipeline = pipeline

    def dispatch(self, workgroups: Sequence[int] | int, *tensors: Tensor,
                 uniforms: bytes | np.ndarray | Sequence[int | float] | None = None) -> None:
        """Queue one dispatch: tensors bind to @group(0) @binding(0..n-1), uniforms (if any) to @binding(n).

        `uniforms` is raw bytes, a NumPy array (its bytes), or numbers (int -> u32, float -> f32).
        """
        self._rt._check_open()
        wg = (int(workgroups),) if isinstance(workgroups, (int, np.integer)) else tuple(int(w) for w in workgroups)
        if not 1 <= len(wg) <= 3:
            raise ValueError(f"workgroups must have 1 to 3 dimensions, got {wg}")
        handles = [self._rt._own(t, f"tensor {i}").handle for i, t in enumerate(tensors)]
        self._rt._device.dispatch(self.pipeline, wg, handles, _uniform_bytes(uniforms))


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
