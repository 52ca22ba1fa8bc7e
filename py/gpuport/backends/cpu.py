"""The cpu backend: NumPy runs each op's reference. The last tier, and the oracle for the others."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from ..kernels import Launch
from . import Backend


class CPUBackend(Backend):
    """Handles are NumPy arrays; ops run eagerly (there is nothing to queue)."""

    name = "cpu"

    def __init__(self) -> None:
        self.adapter_info = {
            "vendor": "numpy", "architecture": platform.machine(), "device": f"NumPy {np.__version__}",
            "description": f"NumPy {np.__version__} on {platform.python_implementation()} "
                           f"{platform.python_version()} ({platform.system() or 'wasm'})",
            "is_fallback": False,
        }
        self.features = frozenset()
        self.limits = {}

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def upload(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    async def download(self, handle: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return handle.copy()

    def download_sync(self, handle: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return handle.copy()

    def run(self, launch: Launch) -> None:
        arrays: list[Any] = [t.handle if t is not None else None for t in launch.inputs]
        result = launch.kernel.reference(*arrays, **launch.params)
        launch.output.handle[...] = result.reshape(launch.output.shape)
