"""Tensor: an array that lives on one runtime's backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from .runtime import Runtime


class Blocks:
    """A tensor stored as consecutive runs of its flat (row-major) elements, one buffer per run.

    The constrained tier stores a tensor this way when it exceeds the binding budget; the boundaries
    fall on whole rows of the last axis where a row fits. Ops plan per block (layer decomposition,
    tiled processing, chunked attention); a read concatenates the blocks.
    """

    __slots__ = ("bounds", "handles")

    def __init__(self, bounds: list[int], handles: list[Any]) -> None:
        assert len(bounds) == len(handles) + 1 and bounds[0] == 0
        self.bounds = tuple(int(b) for b in bounds)
        self.handles = list(handles)

    def __len__(self) -> int:
        return len(self.handles)

    def chunks(self):
        """(first element, end element, handle) per block."""
        for i, h in enumerate(self.handles):
            yield self.bounds[i], self.bounds[i + 1], h

    def aligned(self, unit: int) -> bool:
        """Every boundary falls on a multiple of `unit` elements (whole rows of that length)."""
        return unit > 0 and all(b % unit == 0 for b in self.bounds)

    def __repr__(self) -> str:
        return f"Blocks({len(self)} blocks, bounds={self.bounds[:4]}{'...' if len(self) > 3 else ''})"


class Tensor:
    """A device array. Ops queue work on it without waiting; `await read()` brings it back."""

    __slots__ = ("_rt", "handle", "shape", "dtype", "_host", "_recipe", "__weakref__")

    def __init__(self, rt: "Runtime", handle: Any, shape: tuple[int, ...], dtype: np.dtype,
                 host: np.ndarray | None = None) -> None:
        self._rt = rt
        self.handle = handle
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        # The host array it was made from (read-only), if any: lets ops check values such as ids
        # without a readback, and lets recovery restore the tensor after a device loss.
        self._host = host
        # How recovery rebuilds it after a device loss (recovery.Recipe/View/Fresh/Unrecoverable); None:
        # from `_host` (or lost when there is none).
        self._recipe: Any = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def blocked(self) -> bool:
        """True when the constrained tier stores this tensor as several buffers (see Blocks)."""
        return isinstance(self.handle, Blocks)

    @property
    def runtime(self) -> "Runtime":
        return self._rt

    def reshape(self, *shape: int | Sequence[int]) -> "Tensor":
        """The same data under another shape: a view (no copy, no dispatch), as GPU buffers are flat."""
        dims = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)) else shape
        dims = tuple(int(d) for d in dims)
        if int(np.prod(dims, dtype=np.int64)) != self.size:
            raise ValueError(f"cannot reshape a tensor of shape {self.shape} ({self.size} values) to {dims}")
        handle = self.handle
        if isinstance(handle, np.ndarray):
            handle = handle.reshape(dims)
        elif self.blocked and dims and not handle.aligned(dims[-1]):
            raise ValueError(f"cannot reshape {self.shape} to {dims}: its blocks (stored over the binding "
                             f"budget) do not hold whole rows of {dims[-1]}")
        host = None if self._host is None else self._host.reshape(dims)
        view = Tensor(self._rt, handle, dims, self.dtype, host)
        if self._recipe is not None:
            from .recovery import View
            view._recipe = View(self._recipe, dims)
        self._rt._track(view)
        return view

    @property
    def device(self) -> str:
        """Where the values live now: the runtime's GPU ("webgpu") or the host ("cpu")."""
        return "cpu" if isinstance(self.handle, np.ndarray) else self._rt.backend

    async def read(self) -> np.ndarray:
        """The values, once every queued op that writes them has run."""
        self._rt._check_open()
        return await self._rt.recovery.call_async(self._read_once, "read")

    def _usable(self) -> None:
        from .recovery import LostHandle, TensorLost
        if isinstance(self.handle, LostHandle):
            raise TensorLost(f"tensor of shape {self.shape} ({self.dtype}) was lost with its GPU device and cannot "
                             f"be rebuilt: {self.handle.reason}")

    async def _read_once(self) -> np.ndarray:
        self._usable()
        if isinstance(self.handle, np.ndarray):
            return self.handle.copy()
        if self.blocked:
            parts = [await self._rt._device.download(h, (e - s,), self.dtype) for s, e, h in self.handle.chunks()]
            return np.concatenate(parts).reshape(self.shape)
        return await self._rt._device.download(self.handle, self.shape, self.dtype)

    def numpy(self) -> np.ndarray:
        """Blocking read (native only; in a page use `await read()`)."""
        self._rt._check_open()
        from .platform import IN_PYODIDE
        if IN_PYODIDE and self._rt.backend != "cpu":
            # the same answer wherever the values happen to live (auto keeps some on the host)
            from .errors import UnsupportedFeature
            raise UnsupportedFeature("the webgpu backend here cannot read back synchronously: "
                                     "use `await tensor.read()`")
        return self._rt.recovery.call(self._numpy_once, "read")

    def _numpy_once(self) -> np.ndarray:
        self._usable()
        if isinstance(self.handle, np.ndarray):
            return self.handle.copy()
        if self.blocked:
            parts = [self._rt._device.download_sync(h, (e - s,), self.dtype) for s, e, h in self.handle.chunks()]
            return np.concatenate(parts).reshape(self.shape)
        return self._rt._device.download_sync(self.handle, self.shape, self.dtype)

    def known_values(self) -> np.ndarray | None:
        """The values if the host already has them (made from an array, or on the cpu backend)."""
        if self._host is not None:
            return self._host
        return self.handle if isinstance(self.handle, np.ndarray) else None

    def __repr__(self) -> str:
        blocks = f", blocks={len(self.handle)}" if self.blocked else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.device!r}{blocks})"
