"""Tensor: an array of one runtime, its values where its storage (storage.py) says."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import SyncReadUnavailable
from ..platform import Waiting, run_now, sync_wait
from . import lineage
from .storage import Blocks, Deferred, Lost, Storage

if TYPE_CHECKING:
    from ..runtime import Runtime


class Tensor:
    """A device array. Ops queue work on it without waiting; `await read()` brings it back."""

    __slots__ = ("runtime", "storage", "shape", "dtype", "host", "recipe", "__weakref__")

    def __init__(self, rt: "Runtime", storage: Storage, shape: tuple[int, ...], dtype: np.dtype,
                 host: np.ndarray | None = None) -> None:
        self.runtime = rt
        self.storage = storage
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
        """The number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements (Python's exact product: np.prod costs microseconds per call in a page, and a
        forward's placement sums the sizes of a few hundred weights)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The size of its values in bytes."""
        return self.size * self.dtype.itemsize

    @property
    def blocked(self) -> bool:
        """True when the constrained tier stores this tensor as several buffers (storage.Blocks)."""
        return self.storage.blocked

    @property
    def blocks(self) -> Blocks:
        """Its blocks (TypeError where it is not stored as blocks)."""
        if not isinstance(self.storage, Blocks):
            raise TypeError(f"{self!r} is not stored as blocks")
        return self.storage

    @property
    def on_host(self) -> bool:
        """The host holds this tensor's values (and no device buffer does)."""
        return self.storage.on_host

    @property
    def buffer(self) -> Any:
        """The one device buffer a launch binds (TypeError for blocks, host values, a lost tensor)."""
        storage = self.storage
        if not storage.on_device or storage.blocked:
            raise TypeError(f"{self!r} has no single device buffer (its storage: {storage!r})")
        return storage.buffer   # type: ignore[attr-defined]

    def reshape(self, *shape: int | Sequence[int]) -> "Tensor":
        """The same data under another shape: a view (no copy, no dispatch), as GPU buffers are flat."""
        dims = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)) else shape
        dims = tuple(int(d) for d in dims)
        if math.prod(dims) != self.size:
            raise ValueError(f"cannot reshape a tensor of shape {self.shape} ({self.size} values) to {dims}")
        try:
            storage = self.storage.reshape(dims)
        except ValueError as exc:
            raise ValueError(f"cannot reshape {self.shape} to {dims}: {exc}") from None
        host = None if self.host is None else self.host.reshape(dims)
        view = Tensor(self.runtime, storage, dims, self.dtype, host)
        if self.recipe is not None:
            view.recipe = lineage.View(self.recipe, dims)
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
        """Blocking read: natively, and in a page where Python can wait for the GPU (JSPI: pyodide.ffi.can_run_sync());
        elsewhere it raises SyncReadUnavailable and `await read()` is the way."""
        rt = self.runtime
        rt.check_open()
        device = rt.device
        if device.can_block:
            return sync_wait(rt.memory.read(self, blocking=True), "tensor.numpy()")
        why = device.cannot_wait()
        if why is not None:
            # the same answer wherever the values happen to live (auto keeps some on the host)
            raise SyncReadUnavailable(f"the {rt.backend} backend cannot read back synchronously: {why}. Instead, "
                                      "use `await tensor.read()`")
        result = run_now(rt.memory.read(self))
        return device.wait(result) if isinstance(result, Waiting) else result

    def usable(self) -> None:
        """Raise TensorLost if this tensor died with its device and could not be rebuilt."""
        self.storage.check_usable(self.shape, self.dtype)

    def known_values(self) -> np.ndarray | None:
        """The values if the host already has them (made from an array, or on the cpu backend)."""
        return self.host if self.host is not None else self.storage.values()

    def lineage(self) -> Any:
        """How this tensor could be rebuilt on a new device: Leaf, Recipe, View, Fresh or Lost."""
        if self.recipe is not None:
            return self.recipe
        known = self.known_values()
        if known is not None:
            return lineage.Leaf(known)
        if isinstance(self.storage, Lost):
            return lineage.Lost(self.storage.reason)
        if isinstance(self.storage, Deferred):
            return lineage.Lost("made while the device was lost without values")
        return lineage.Lost(f"tensor {self.shape} {self.dtype} holds values only the device had (rt.empty or a user "
                    "kernel's output), with no host copy and no op lineage")

    def __repr__(self) -> str:
        blocks = f", blocks={len(self.blocks)}" if self.blocked else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.device!r}{blocks})"
