"""The standard's searching functions: argmax and argmin (the reduce kernel carrying indices), searchsorted (a
binary search per element), and nonzero, whose output's length is data-dependent: the mask's running count (the
scan kernel) places each index, and its total is read back, through the one synchronous read or awaited in
`xp.aio.nonzero`. `where` and `count_nonzero` live with the element-wise functions and the reductions.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import dtypes as D
from . import kernels as K
from .core import NS, Array, adopt, dispatched, fit, host_array, lazy, node, now, place, ran, values
from .device import new_store
from .elementwise import cast_node, not_equal
from .graph import Const, Expr, Index, Load, Op, View, contiguous_strides
from .reads import wait
from .statistics import reduction


def _array(x: Any, name: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
    return x


def _arg(name: str, x: Array, axis: int | None, keepdims: bool) -> Array:
    x = _array(x, name)
    if not D.isdtype(x.dtype, ("integral", "real floating")):
        raise TypeError(f"{name} takes an array of a real data type, not {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{name} of an empty array has no answer")
    fn = np.argmax if name == "argmax" else np.argmin

    def host(v: np.ndarray, axes: tuple[int, ...], k: bool) -> np.ndarray:
        if axis is None:
            out = fn(v.reshape(-1))
            return np.reshape(out, (1,) * v.ndim) if k else out
        return fn(v, axis=axes[0], keepdims=k)
    return reduction(name, x, axis if axis is None else operator.index(axis), keepdims, name, D.DEFAULT_INDEX, host)


def argmax(x: Array, /, *, axis: int | None = None, keepdims: bool = False) -> Array:
    """The index of the largest value over `axis` (of the flattened array when None); the first of equal ones, NaN
    above everything."""
    return _arg("argmax", x, axis, keepdims)


def argmin(x: Array, /, *, axis: int | None = None, keepdims: bool = False) -> Array:
    """The index of the smallest value over `axis` (of the flattened array when None); the first of equal ones, NaN
    above everything."""
    return _arg("argmin", x, axis, keepdims)


def searchsorted(x1: Array, x2: Array, /, *, side: str = "left", sorter: Array | None = None) -> Array:
    """Where each element of x2 would go in the ascending 1-D x1 to keep it sorted ("left": before equal values,
    "right": after them); `sorter` sorts x1 first (indices, as argsort gives)."""
    x1, x2 = _array(x1, "searchsorted"), _array(x2, "searchsorted")
    if x1.ndim != 1:
        raise ValueError(f"searchsorted: x1 must be 1-D, got shape {x1.shape}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', not {side!r}")
    dtype = D.result_type(x1, x2)
    if not D.isdtype(dtype, ("integral", "real floating")):
        raise TypeError(f"searchsorted takes real arrays, not {dtype}")
    if sorter is not None:
        x1 = NS.take(x1, sorter)   # indexing imports this module: take is reached through the bound namespace
    rt = x1.device
    t0, before = now(), dispatched(rt)
    decision = place(rt, "searchsorted", [x1, x2], x2.shape)
    if decision.on_host:
        found = np.searchsorted(np.asarray(host_array(x1, "searchsorted"), dtype),
                                np.asarray(host_array(x2, "searchsorted"), dtype), side=side)
        y = adopt(rt, found.astype(np.int32), D.int32)
    else:
        fit(rt, [x1, x2])
        sorted_ = Expr(cast_node(node(x1, x1.shape), dtype), x1.shape)
        store = K.search(rt, sorted_, Expr(cast_node(node(x2, x2.shape), dtype), x2.shape), side == "right")
        y = Array(rt, View.whole(store, x2.shape))
    ran(rt, "searchsorted", decision, t0, [x1, x2], dispatched(rt) - before)
    return y


# -- nonzero: a data-dependent length ------------------------------------------------------------------------------

async def true_positions(mask: Array, blocking: bool, on_host: bool) -> tuple[Array, int]:
    """The flat (row-major) positions of a bool mask's true elements, in order, as an int32 array, and how many
    there are. On the device the mask's running count places each position and its total is read back (awaited)."""
    rt = mask.device
    if on_host:
        found = np.flatnonzero(await values(mask, blocking)).astype(np.int32)
        return adopt(rt, found, D.int32), int(found.size)
    n = mask.size
    fit(rt, [mask])
    flags = Expr(cast_node(node(mask, mask.shape), D.int32), mask.shape)
    running = K.scan(rt, flags, 1, n, "sum", D.int32, False)
    total = Array(rt, View.whole(K.reduce(rt, flags, 1, n, "sum")[0], ()))
    count = int((await values(total, blocking))[()])
    out = new_store(rt, D.int32, count)
    position = Op("subtract", (Load(View.whole(running, mask.shape)), Const(1, D.int32)), D.int32)
    target = Op("where", (node(mask, mask.shape), position, Const(-1, D.int32)), D.int32)
    K.write(rt, Expr(Index(0, contiguous_strides(mask.shape)), mask.shape), Expr(target, mask.shape), out)
    return Array(rt, View.whole(out, (count,))), count


async def nonzero_async(x: Array, blocking: bool = False) -> tuple[Array, ...]:
    """nonzero, awaited: its output's length is read back (`xp.aio.nonzero`)."""
    x = _array(x, "nonzero")
    if x.ndim == 0:
        raise ValueError("nonzero of a 0-D array: the standard asks for at least one axis")
    rt = x.device
    t0, before = now(), dispatched(rt)
    decision = place(rt, "nonzero", [x], (x.size,))
    mask = x if x.dtype == D.bool_ else not_equal(x, 0.0 if x.dtype.kind == "f" else 0)
    flat, count = await true_positions(mask, blocking, decision.on_host)
    out = []
    for n, s in zip(x.shape, contiguous_strides(x.shape)):
        coord = Op("remainder", (Op("floor_divide", (node(flat, flat.shape), Const(s, D.int32)), D.int32),
                                 Const(n if n > 1 else 1, D.int32)), D.int32)
        out.append(lazy(rt, coord, (count,), 1) if not decision.on_host else
                   adopt(rt, (np.asarray(host_array(flat, "nonzero")) // s) % (n if n > 1 else 1), D.int32))
    ran(rt, "nonzero", decision, t0, [x], dispatched(rt) - before)
    return tuple(out)


def nonzero(x: Array, /) -> tuple[Array, ...]:
    """The indices of x's nonzero elements, one int32 array per axis, in row-major order. Their number is read
    back: a synchronous read (`await xp.aio.nonzero(x)` in a page)."""
    x = _array(x, "nonzero")
    return wait(lambda blocking: nonzero_async(x, blocking), x.device, "nonzero(x)")
