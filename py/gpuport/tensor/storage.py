"""A tensor's storage: where its values live, as one of five kinds, each answering what callers ask of it.

- `Buffer`: one device buffer (what a launch binds).
- `Blocks`: consecutive runs of the flat (row-major) elements, one device buffer per run: the constrained tier
  stores a tensor this way when it exceeds the binding budget (boundaries on whole rows where a row fits);
  the block strategies plan per block and a read concatenates them.
- `HostArray`: the host holds the values (the cpu backend, auto's host residency, recovery's lower tier).
- `Lost`: the tensor died with its device and cannot be rebuilt; every use raises TensorLost naming why.
- `Deferred`: made while a page's device is lost; built when the next await recovers the device.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..errors import TensorLost


class Storage:
    """What every kind of storage answers; the kinds override what differs."""

    __slots__ = ()
    on_host = False      # the host holds the values (and no device buffer does)
    blocked = False      # stored as several device buffers
    on_device = False    # one device buffer or blocks

    def values(self) -> np.ndarray | None:
        """The values where the host holds them."""
        return None

    def chunks(self, size: int) -> Iterator[tuple[int, int, Any]]:
        """(first element, end element, device buffer) per device buffer of a tensor of `size` elements."""
        raise TypeError(f"{self!r} has no device buffers")

    def reshape(self, dims: tuple[int, ...]) -> "Storage":
        """The same storage seen under another shape (the caller checked the element count)."""
        return self

    def check_usable(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Raise TensorLost where the values are gone for good."""


class Buffer(Storage):
    """One device buffer."""

    on_device = True
    __slots__ = ("buffer", "__weakref__")   # memory.py releases its bytes when the last view of it goes

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def chunks(self, size: int) -> Iterator[tuple[int, int, Any]]:
        yield 0, size, self.buffer

    def __repr__(self) -> str:
        return "Buffer()"


class Blocks(Storage):
    """Consecutive runs of the flat elements, one device buffer per run (see the module docstring)."""

    on_device = True
    blocked = True
    __slots__ = ("bounds", "buffers", "__weakref__")

    def __init__(self, bounds: list[int], buffers: list[Any]) -> None:
        assert len(bounds) == len(buffers) + 1 and bounds[0] == 0
        self.bounds = tuple(int(b) for b in bounds)
        self.buffers = list(buffers)

    def __len__(self) -> int:
        return len(self.buffers)

    def chunks(self, size: int = 0) -> Iterator[tuple[int, int, Any]]:
        for i, b in enumerate(self.buffers):
            yield self.bounds[i], self.bounds[i + 1], b

    def aligned(self, unit: int) -> bool:
        """Every boundary falls on a multiple of `unit` elements (whole rows of that length)."""
        return unit > 0 and all(b % unit == 0 for b in self.bounds)

    def reshape(self, dims: tuple[int, ...]) -> Storage:
        if dims and not self.aligned(dims[-1]):
            raise ValueError(f"its blocks (stored over the binding budget) do not hold whole rows of {dims[-1]}")
        return self

    def __repr__(self) -> str:
        return f"Blocks({len(self)} blocks, bounds={self.bounds[:4]}{'...' if len(self) > 3 else ''})"


class HostArray(Storage):
    """The host holds the values."""

    on_host = True
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def values(self) -> np.ndarray | None:
        return self.array

    def reshape(self, dims: tuple[int, ...]) -> Storage:
        return HostArray(self.array.reshape(dims))

    def __repr__(self) -> str:
        return "HostArray()"


class Lost(Storage):
    """Died with its device and cannot be rebuilt, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def check_usable(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        raise TensorLost(f"tensor of shape {shape} ({dtype}) was lost with its GPU device and cannot be rebuilt: "
                         f"{self.reason}")

    def __repr__(self) -> str:
        return f"Lost({self.reason!r})"


class Deferred(Storage):
    """Made while a page's device is lost: built when the runtime recovers."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Deferred()"
