"""gpuport: the same WGSL compute kernels on browser WebGPU (Pyodide), native WebGPU (wgpu-py) and NumPy.

    rt = await gpuport.open()            # or gpuport.open_sync() natively
    y = rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w)))
    print(rt.backend, rt.tier, await y.read())
"""

from __future__ import annotations

from .backends import Backend, available
from .backends.cpu import CPUBackend
from .capabilities import Capabilities
from .fallback import FallbackManager, create_optimal_fallback_strategy
from .errors import (BackendUnavailable, CompileMessage, DeviceLost, GpuportError, GpuTimeout, GpuValidationError,
                     LimitExceeded, LoadError, OutOfMemory, RuntimeClosed, ShaderCompileError,
                     UnsupportedFeature)
from .platform import IN_PYODIDE
from .runtime import Kernel, Runtime
from .tensor import Tensor
from . import models  # noqa: E402  (gp.models.load)

__version__ = "0.1.0"

BACKENDS = ("auto", "webgpu", "cpu")


def _wants_webgpu(backend: str, tier: str | None) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "webgpu" and tier == "cpu":
        raise ValueError("backend='webgpu' with tier='cpu' is contradictory: pick one")
    return backend != "cpu" and tier != "cpu"


def _native(limits: str) -> Backend:
    from .backends.native import NativeBackend
    return NativeBackend(limits)


def _unavailable(backend: str, exc: BackendUnavailable) -> str:
    """An explicit backend="webgpu" fails loudly; "auto" steps down to NumPy and says why."""
    if backend == "webgpu":
        raise exc
    return f"webgpu unavailable: {exc}"


def _finish(gpu: Backend | None, tier: str | None, why: str | None, budget: dict[str, int] | None = None,
            precision: str = "f32", limits: str = "default", memory_budget: int | None = None) -> Runtime:
    device: Backend = gpu if gpu is not None else CPUBackend()
    try:
        rt = Runtime(device, tier, note=why, budget=budget, precision=precision, memory_budget=memory_budget,
                     open_limits=limits)
    except Exception:
        device.close()
        raise
    if rt.tier == "cpu" and device.name != "cpu":
        device.close()
        rt = Runtime(CPUBackend(), "cpu", note=f"tier {tier!r} requested", precision=precision)
    return rt


async def open(backend: str = "auto", tier: str | None = None, limits: str = "default",
               budget: dict[str, int] | None = None, precision: str = "f32",
               memory_budget: int | None = None) -> Runtime:
    """Open a runtime: WebGPU (the browser's in a page, wgpu-py natively) or NumPy.

    backend: "auto" (WebGPU when an adapter exists, else NumPy; with a device, each op goes to the GPU or
        NumPy as the BackendSelector chooses: see auto.py), "webgpu" (every op on the device; fail if
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
    """
    gpu, why = None, None
    if _wants_webgpu(backend, tier):
        try:
            if IN_PYODIDE:
                from .backends.browser import BrowserBackend
                gpu = await BrowserBackend.create(limits)
            else:
                gpu = _native(limits)
        except BackendUnavailable as exc:
            why = _unavailable(backend, exc)
    rt = _finish(gpu, tier, why, budget, precision, limits, memory_budget)
    await rt._load_manifest()
    if backend == "auto" and rt.backend == "webgpu":
        from .auto import attach_async
        await attach_async(rt)
    return rt


def open_sync(backend: str = "auto", tier: str | None = None, limits: str = "default",
              budget: dict[str, int] | None = None, precision: str = "f32",
              memory_budget: int | None = None) -> Runtime:
    """`open()` for native scripts that do not use asyncio. Not available in a page."""
    if IN_PYODIDE:
        raise UnsupportedFeature("in the browser use `await gpuport.open()`: WebGPU set-up is asynchronous")
    gpu, why = None, None
    if _wants_webgpu(backend, tier):
        try:
            gpu = _native(limits)
        except BackendUnavailable as exc:
            why = _unavailable(backend, exc)
    rt = _finish(gpu, tier, why, budget, precision, limits, memory_budget)
    rt._load_manifest_sync()
    if backend == "auto" and rt.backend == "webgpu":
        from .auto import attach_sync
        attach_sync(rt)
    return rt


__all__ = [
    "BackendUnavailable", "Capabilities", "CompileMessage", "FallbackManager", "create_optimal_fallback_strategy", "DeviceLost", "GpuTimeout", "GpuValidationError", "GpuportError", "IN_PYODIDE",
    "Kernel", "LimitExceeded", "LoadError", "OutOfMemory", "Runtime", "RuntimeClosed", "ShaderCompileError",
    "Tensor", "UnsupportedFeature", "available", "models", "open", "open_sync",
]
