"""The host buffers of arrays that died, kept for the next host result of the same size.

A host-placed element-wise function writes its result into fresh memory, and natively the C allocator maps memory of
128 KiB and more anew for each array and unmaps it at its free, so every result pays a page fault per page it
writes: most of an element-wise chain's time at a million elements (docs/arrays.md, "Natively: the host's fresh
memory").
NumPy saves some of it by writing a sum into its operand's temporary (temporary elision), which the namespace's
arrays, holding their values inside stores, never get. So a store that dies gives its host buffer here when nothing
else can see that memory, and the next result of that many bytes is written into it (a ufunc's `out=`).

"Nothing else can see it" is read from reference counts: the buffer's owning array must be held by the dying store's
view of it alone, and that view by the store alone (any NumPy view, DLPack export or memoryview of the values holds
one of the two). The counts a sole holder shows are measured once here with the same code, so an interpreter that
counts otherwise (or not at all) only turns the pool off. In Pyodide the pool is off: WebAssembly's allocator hands
freed memory back without a fault, and a page keeps its memory small.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..platform import IN_PYODIDE

MIN_BYTES = 128 * 1024          # below glibc's mmap threshold results come from the heap's free lists already
MAX_BUFFERS = 4                 # a chain reuses one or two; more would hold memory nobody asks for
MAX_BYTES = 128 * 1024 * 1024   # at most this much kept (two 16M-element float32 results)

_free: "OrderedDict[int, list[np.ndarray]]" = OrderedDict()   # nbytes -> owning arrays, the oldest size first
_held = [0, 0]   # buffers, bytes
_lock = threading.RLock()   # a store may die on any thread; re-entrant, as a death may happen inside a take


def _counts(holder: Any) -> tuple[int, int]:
    """References to holder.host and to the array owning its memory, as this function reads them."""
    return sys.getrefcount(holder.host), sys.getrefcount(holder.host.base)


def _owner(host: Any) -> np.ndarray | None:
    """The array that allocated host's memory, where NumPy did (None: not ours to reuse)."""
    if type(host) is not np.ndarray:
        return None
    owner = host if host.base is None else host.base
    return owner if type(owner) is np.ndarray and owner.base is None and owner.flags.owndata else None


class _Holder:
    __slots__ = ("host",)


def _sole_counts() -> tuple[int, int] | None:
    """What _counts reads where a holder is its values' only one (None: the pool stays off)."""
    if IN_PYODIDE or not hasattr(sys, "getrefcount"):
        return None
    probe = _Holder()
    probe.host = np.empty(4, np.float32).reshape(-1)[:]   # a view, and its base held by that view alone
    counts = _counts(probe)
    return counts if min(counts) >= 1 else None


_SOLE = _sole_counts()


def give(store: Any) -> None:
    """Keep a dying store's host buffer where nothing else refers to its memory (called by Store.__del__)."""
    if _SOLE is None or _owner(store.host) is None:
        return
    # counted through the store, no local holding the arrays (it would be one more reference); taken after
    sole = _counts(store)[0] == _SOLE[0] if store.host.base is None else _counts(store) == _SOLE
    if not sole:
        return
    owner = store.host if store.host.base is None else store.host.base
    nbytes = owner.nbytes
    if nbytes > MAX_BYTES:
        return
    with _lock:
        while _held[0] >= MAX_BUFFERS or _held[1] + nbytes > MAX_BYTES:
            size, owners = next(iter(_free.items()))
            owners.pop(0)
            if not owners:
                del _free[size]
            _held[0] -= 1
            _held[1] -= size
        _free.setdefault(nbytes, []).append(owner)
        _free.move_to_end(nbytes)
        _held[0] += 1
        _held[1] += nbytes


def take(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """A C-contiguous array of `shape` and `dtype` over a kept buffer of exactly its size, or None."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return None
    with _lock:
        owners = _free.get(nbytes)
        if not owners:
            return None
        owner = owners.pop()
        if not owners:
            del _free[nbytes]
        _held[0] -= 1
        _held[1] -= nbytes
    return owner.reshape(-1).view(np.uint8).view(dtype).reshape(shape)


def held() -> tuple[int, int]:
    """(buffers, bytes) the pool keeps now."""
    return _held[0], _held[1]


def clear() -> None:
    """Let go of every kept buffer (their memory goes back to the allocator)."""
    with _lock:
        _free.clear()
        _held[0] = _held[1] = 0
