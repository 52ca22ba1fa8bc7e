"""gpuport: the same WGSL compute kernels on browser WebGPU (Pyodide), native WebGPU (wgpu-py) and NumPy.

    rt = await gpuport.open()            # or gpuport.open_sync() natively
    y = rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w)))
    print(rt.backend, rt.tier, await y.read())
"""

from __future__ import annotations

from . import models
from ._version import __version__
from .backends import Backend, available
from .backends.capabilities import Capabilities
from .engine.fallback import FallbackManager, create_optimal_fallback_strategy
from .errors import (
                     AudioError,
                     BackendUnavailable,
                     BatchFailed,
                     CompileMessage,
                     ContextLengthExceeded,
                     DeviceLost,
                     GpuportError,
                     GpuTimeout,
                     GpuValidationError,
                     JsHalfMismatch,
                     LimitExceeded,
                     LoadError,
                     NoAnswer,
                     OutOfMemory,
                     ReferenceFailed,
                     ReferenceMismatch,
                     RuntimeClosed,
                     ShaderCompileError,
                     SyncReadUnavailable,
                     TensorLost,
                     UnsupportedDType,
                     UnsupportedFeature,
)
from .kernel import Kernel
from .platform import IN_PYODIDE
from .runtime import Runtime, open, open_sync
from .tensor.tensor import Tensor

__all__ = [
    "AudioError", "Backend", "BackendUnavailable", "BatchFailed", "Capabilities", "CompileMessage", "ContextLengthExceeded",
    "DeviceLost", "FallbackManager",
    "GpuTimeout", "GpuValidationError", "GpuportError", "IN_PYODIDE", "JsHalfMismatch", "Kernel", "LimitExceeded", "LoadError",
    "NoAnswer", "OutOfMemory", "ReferenceFailed", "ReferenceMismatch", "Runtime", "RuntimeClosed", "ShaderCompileError",
    "SyncReadUnavailable", "Tensor", "TensorLost", "UnsupportedDType", "UnsupportedFeature",
    "__version__", "available", "create_optimal_fallback_strategy", "models", "open", "open_sync",
]
