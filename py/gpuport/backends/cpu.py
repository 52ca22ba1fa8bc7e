"""The cpu backend: NumPy. The last tier, and the oracle for the others.

Its buffers are host arrays (`is_host`): the runtime runs each op's NumPy reference on them directly. It
has no pipelines: the protocol's pipeline members are the base class's no-ops, and WGSL raises
UnsupportedFeature naming the backend.
"""

from __future__ import annotations

import math
import platform

import numpy as np

from ..errors import OutOfMemory
from .base import Backend


class CPUBackend(Backend):
    """Handles are NumPy arrays; ops run eagerly (there is nothing to queue)."""

    name = "cpu"
    is_host = True

    def __init__(self) -> None:
        super().__init__()
        self.adapter_info = {
            "vendor": "numpy", "architecture": platform.machine(), "device": f"NumPy {np.__version__}",
            "description": f"NumPy {np.__version__} on {platform.python_implementation()} "
                           f"{platform.python_version()} ({platform.system() or 'wasm'})",
            "is_fallback": False,
        }
        self.features = frozenset()
        self.limits = {}

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        try:
            return np.zeros(shape, dtype)
        except MemoryError:
            raise OutOfMemory(f"the host cannot allocate a {np.dtype(dtype)} array of shape {shape} "
                              f"({math.prod(shape) * np.dtype(dtype).itemsize:,} bytes)") from None

    def upload(self, array: np.ndarray) -> np.ndarray:
        try:
            return array.copy()
        except MemoryError:
            raise OutOfMemory(f"the host cannot copy a {array.dtype} array of shape {array.shape}") from None

    async def download(self, handle: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return handle.copy()
