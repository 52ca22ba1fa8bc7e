"""Tensor: an array that lives on one runtime's backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import TensorLost, UnsupportedFeature
from .lineage import Deferred, Leaf, Lost, View
from .platform import sync_wait

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

    __slots__ = ("runtime", "handle", "shape", "dtype", "host", "recipe", "__weakref__")

    def __init__(self, rt: "Runtime", handle: Any, shape: tuple[int, ...], dtype: np.dtype,
                 host: np.ndarray | None = None) -> None:
        self.runtime = rt
        # A device buffer, Blocks, a NumPy array (the host holds it), or lineage.Lost / DEFERRED.
        self.handle = handle
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        # The host's read-only copy of the values, if any: lets ops check values such as ids without a
        # readback, lets auto place ops on the host for free, and lets recovery restore the tensor.
        self.host = host
        # How recovery rebuilds it after a device loss (a lineage.Recipe/View/Fresh/Lost); None: from
        # `host` (or lost when there is none).
        self.recipe: Any = None

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
    def on_host(self) -> bool:
        """The host holds this tensor's values (and no device buffer does)."""
        return isinstance(self.handle, np.ndarray)

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
        host = None if self.host is None else self.host.reshape(dims)
        view = Tensor(self.runtime, handle, dims, self.dtype, host)
        if self.recipe is not None:
            view.recipe = View(self.recipe, dims)
        with self.runtime.lock:
            self.runtime.memory.track(view)
        return view

    @property
    def device(self) -> str:
        """Where the values live now: the runtime's GPU ("webgpu") or the host ("cpu")."""
        return "cpu" if self.on_host else self.runtime.backend

    async def read(self) -> np.ndarray:
        """The values, once every queued op that writes them has run."""
        self.runtime.check_open()
        return await self.runtime.memory.read(self)

    def numpy(self) -> np.ndarray:
        """Blocking read (native only; in a page use `await read()`)."""
        self.runtime.check_open()
        if not self.runtime.device.can_block:
            # the same answer wherever the values happen to live (auto keeps some on the host)
            raise UnsupportedFeature(f"the {self.runtime.backend} backend here cannot read back synchronously: "
                                     "use `await tensor.read()`")
        return sync_wait(self.runtime.memory.read(self, blocking=True), "tensor.numpy()")

    def usable(self) -> None:
        """Raise TensorLost if this tensor died with its device and could not be rebuilt."""
        if isinstance(self.handle, Lost):
            raise TensorLost(f"tensor of shape {self.shape} ({self.dtype}) was lost with its GPU device and cannot "
                             f"be rebuilt: {self.handle.reason}")

    def known_values(self) -> np.ndarray | None:
        """The values if the host already has them (made from an array, or on the cpu backend)."""
        if self.host is not None:
            return self.host
        return self.handle if isinstance(self.handle, np.ndarray) else None

    def lineage(self) -> Any:
        """How this tensor could be rebuilt on a new device: Leaf, Recipe, View, Fresh or Lost."""
        if self.recipe is not None:
            return self.recipe
        known = self.known_values()
        if known is not None:
            return Leaf(known)
        if isinstance(self.handle, Lost):
            return self.handle
        if isinstance(self.handle, Deferred):
            return Lost("made while the device was lost without values")
        return Lost(f"tensor {self.shape} {self.dtype} holds values only the device had (rt.empty or a user "
                    "kernel's output), with no host copy and no op lineage")

    def __repr__(self) -> str:
        blocks = f", blocks={len(self.handle)}" if self.blocked else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.device!r}{blocks})"
