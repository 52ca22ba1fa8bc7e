"""The standard's set functions (unique_all, unique_counts, unique_inverse, unique_values). Their outputs' length is
data-dependent: x is sorted (stably, so the first of equal values is the first occurrence), each run's start is
flagged (NaN never equals NaN, so each NaN is its own value, as the standard asks), the flags' running count numbers
the runs, and their total is read back (the one synchronous read, or awaited in `xp.aio`). Values, first
occurrences, counts and the inverse are then written or gathered on the device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import dtypes as D
from . import kernels as K
from .core import Array, adopt, dispatched, fit, lazy, now, place, ran, values
from .device import new_store
from .elementwise import cast_node
from .graph import Const, Expr, Gather, Index, Load, Op, View
from .manipulation import reshape
from .reads import wait
from .sorting import ordered


class UniqueAll(NamedTuple):
    """unique_all's result."""

    values: Array
    indices: Array
    inverse_indices: Array
    counts: Array


class UniqueCounts(NamedTuple):
    """unique_counts' result."""

    values: Array
    counts: Array


class UniqueInverse(NamedTuple):
    """unique_inverse's result."""

    values: Array
    inverse_indices: Array


def _host_unique(x: Array, v: np.ndarray) -> dict[str, Array]:
    rt = x.device
    vals, index, inverse, counts = np.unique(v.reshape(-1), return_index=True, return_inverse=True,
                                             return_counts=True, equal_nan=False)
    return {"values": adopt(rt, vals, x.dtype), "indices": adopt(rt, index.astype(np.int32), D.int32),
            "inverse_indices": adopt(rt, inverse.reshape(x.shape).astype(np.int32), D.int32),
            "counts": adopt(rt, counts.astype(np.int32), D.int32)}


async def unique_parts(x: Array, blocking: bool) -> dict[str, Array]:
    """values, indices (first occurrences), inverse_indices (x's shape) and counts, all int32 but the values."""
    if not isinstance(x, Array):
        raise TypeError(f"unique_* take an array of gpuport.xp, got {type(x).__name__}")
    rt = x.device
    t0, before = now(), dispatched(rt)
    decision = place(rt, "unique", [x], (x.size,))
    if decision.on_host:
        out = _host_unique(x, await values(x, blocking))
    else:
        out = await _device_unique(x, blocking)
    ran(rt, "unique", decision, t0, [x], dispatched(rt) - before)
    return out


async def _device_unique(x: Array, blocking: bool) -> dict[str, Array]:
    rt = x.device
    n = x.size
    flat = reshape(x, (n,))
    fit(rt, [flat], spare=2)   # the writes below read x's stores, the positions' and the running count's
    positions, expr, _, _ = ordered(flat, 0, False)
    pos = Load(positions._data)
    src = Expr(expr.root, (n,))
    sorted_ = Gather(src, pos)
    previous = Gather(src, Gather(Expr(pos, (n,)), Op("subtract", (Index(0, (1,)), Const(1, D.int32)), D.int32)))
    first = Op("logical_or", (Op("equal", (Index(0, (1,)), Const(0, D.int32)), D.bool_),
                              Op("not_equal", (sorted_, previous), D.bool_)), D.bool_)
    flags = Expr(cast_node(first, D.int32), (n,))
    running = K.scan(rt, flags, 1, n, "sum", D.int32, False)
    total = Array(rt, View.whole(K.reduce(rt, flags, 1, n, "sum")[0], ()))
    count = int((await values(total, blocking))[()]) if n else 0
    run = Op("subtract", (Load(View.whole(running, (n,))), Const(1, D.int32)), D.int32)
    target = Expr(Op("where", (first, run, Const(-1, D.int32)), D.int32), (n,))
    vals, starts = new_store(rt, x.dtype, count), new_store(rt, D.int32, count)
    K.write(rt, Expr(sorted_, (n,)), target, vals)
    K.write(rt, Expr(Index(0, (1,)), (n,)), target, starts)
    inverse = new_store(rt, D.int32, n)
    K.write(rt, Expr(run, (n,)), Expr(pos, (n,)), inverse)
    start = Load(View.whole(starts, (count,)))
    following = Op("where", (Op("less", (Index(1, (1,)), Const(count, D.int32)), D.bool_),
                             Gather(Expr(start, (count,)), Index(1, (1,))), Const(n, D.int32)), D.int32)
    counts = lazy(rt, Op("subtract", (following, start), D.int32), (count,), 1)
    indices = lazy(rt, Gather(Expr(pos, (n,)), start), (count,), 1)
    return {"values": Array(rt, View.whole(vals, (count,))), "indices": indices,
            "inverse_indices": Array(rt, View.whole(inverse, x.shape)), "counts": counts}


async def unique_all_async(x: Array, blocking: bool = False) -> UniqueAll:
    p = await unique_parts(x, blocking)
    return UniqueAll(p["values"], p["indices"], p["inverse_indices"], p["counts"])


async def unique_counts_async(x: Array, blocking: bool = False) -> UniqueCounts:
    p = await unique_parts(x, blocking)
    return UniqueCounts(p["values"], p["counts"])


async def unique_inverse_async(x: Array, blocking: bool = False) -> UniqueInverse:
    p = await unique_parts(x, blocking)
    return UniqueInverse(p["values"], p["inverse_indices"])


async def unique_values_async(x: Array, blocking: bool = False) -> Array:
    return (await unique_parts(x, blocking))["values"]


def _sync(fn: Any, x: Array, what: str) -> Any:
    if not isinstance(x, Array):
        raise TypeError(f"{what} takes an array of gpuport.xp, got {type(x).__name__}")
    return wait(lambda blocking: fn(x, blocking), x.device, f"{what}(x)")


def unique_all(x: Array, /) -> UniqueAll:
    """(values, indices of first occurrences, inverse_indices of x's shape, counts), values sorted; each NaN is
    distinct. Their number is read back (`await xp.aio.unique_all(x)` in a page)."""
    return _sync(unique_all_async, x, "unique_all")


def unique_counts(x: Array, /) -> UniqueCounts:
    """(values, counts), values sorted; each NaN is distinct. A synchronous read (`xp.aio.unique_counts`)."""
    return _sync(unique_counts_async, x, "unique_counts")


def unique_inverse(x: Array, /) -> UniqueInverse:
    """(values, inverse_indices of x's shape), values sorted. A synchronous read (`xp.aio.unique_inverse`)."""
    return _sync(unique_inverse_async, x, "unique_inverse")


def unique_values(x: Array, /) -> Array:
    """The distinct values, sorted; each NaN is distinct. A synchronous read (`xp.aio.unique_values`)."""
    return _sync(unique_values_async, x, "unique_values")

