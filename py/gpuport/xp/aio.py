"""The async twins of the namespace's synchronous reads: in a page, where the GPU cannot be waited on inside a
synchronous call, `await xp.read(x)` brings values back, and the functions whose output's size is data-dependent are
awaited here. Each runs the same coroutine as its synchronous form (reads.wait drives that one)."""

from __future__ import annotations

from typing import Any

from .core import Array, read
from .indexing import getitem_async
from .manipulation import repeat_async
from .searching import nonzero_async
from .sets import (UniqueAll, UniqueCounts, UniqueInverse, unique_all_async, unique_counts_async,
                   unique_inverse_async, unique_values_async)

__all__ = ["getitem", "nonzero", "read", "repeat", "unique_all", "unique_counts", "unique_inverse", "unique_values"]


async def nonzero(x: Array, /) -> tuple[Array, ...]:
    """xp.nonzero(x), awaited."""
    return await nonzero_async(x, False)


async def unique_all(x: Array, /) -> UniqueAll:
    """xp.unique_all(x), awaited."""
    return await unique_all_async(x, False)


async def unique_counts(x: Array, /) -> UniqueCounts:
    """xp.unique_counts(x), awaited."""
    return await unique_counts_async(x, False)


async def unique_inverse(x: Array, /) -> UniqueInverse:
    """xp.unique_inverse(x), awaited."""
    return await unique_inverse_async(x, False)


async def unique_values(x: Array, /) -> Array:
    """xp.unique_values(x), awaited."""
    return await unique_values_async(x, False)


async def getitem(x: Array, key: Any) -> Array:
    """x[key], a boolean mask's selection counted with an awaited read (any other key reads nothing)."""
    return await getitem_async(x, key, False)


async def repeat(x: Array, repeats: int | Array, /, *, axis: int | None = None) -> Array:
    """xp.repeat(x, repeats, axis=axis), awaited (counts given as an array are read back)."""
    return await repeat_async(x, repeats, axis, False)
