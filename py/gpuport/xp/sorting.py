"""The standard's sorting functions, stable always: the sort kernel (kernels.sort, bitonic over (key, position)
pairs, the position breaking ties) orders each row's positions; argsort is a view of them and sort gathers the
values at them, lazily. Descending inverts the keys, not the positions, so equal values keep their order."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes as D
from . import kernels as K
from .core import Array, adopt, dispatched, fit, host_array, lazy, now, place, ran
from .graph import Expr, Gather, Index, Load, Op, View, contiguous_strides
from .manipulation import normalize_axis, permute_dims
from .statistics import reduce_rows


def _array(x: Any, name: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} needs an array of at least one axis")
    if not D.isdtype(x.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{name} takes a real or bool array, not {x.dtype}")
    return x


def host_argsort(v: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """NumPy's stable argsort; descending keeps equal values in order (positions of the flipped array, mirrored)."""
    if not descending:
        return np.argsort(v, axis=axis, kind="stable")
    n = v.shape[axis]
    return n - 1 - np.flip(np.argsort(np.flip(v, axis=axis), axis=axis, kind="stable"), axis=axis)


def ordered(x: Array, axis: int, descending: bool) -> tuple[Array, Expr, tuple[int, ...], tuple[int, ...]]:
    """The positions that sort each lane of x along `axis` (with that axis moved last: int32, a view of the sort
    kernel's output), the moved expression, the moved shape and the permutation that moved it."""
    rt = x.device
    moved = tuple(a for a in range(x.ndim) if a != axis) + (axis,)
    fit(rt, [x], spare=1)   # the sorted values gather x at the positions' store
    expr, rows, length = reduce_rows(x, (axis,), lambda n: n)
    store, padded = K.sort(rt, expr, rows, length, descending)
    shape = tuple(x.shape[a] for a in moved)
    lead = contiguous_strides(shape[:-1])
    positions = Array(rt, View(store, 0, shape, tuple(s * padded for s in lead) + (1,)))
    return positions, expr, shape, moved


def _sort(name: str, x: Array, axis: int, descending: bool, values: bool) -> Array:
    x = _array(x, name)
    axis = normalize_axis(axis, x.ndim)
    rt = x.device
    t0, before = now(), dispatched(rt)
    decision = place(rt, name, [x], x.shape)
    if decision.on_host:
        v = host_array(x, name)
        if values:   # equal values are indistinguishable: NumPy's sort, reversed for descending (NaN first then)
            ordered_values = np.sort(v, axis=axis)
            y = adopt(rt, np.flip(ordered_values, axis) if descending else ordered_values, x.dtype)
        else:
            y = adopt(rt, host_argsort(v, axis, descending).astype(np.int32), D.int32)
    else:
        positions, expr, shape, moved = ordered(x, axis, descending)
        if values:
            length = shape[-1]
            row = Index(0, tuple(s * length for s in contiguous_strides(shape[:-1])) + (0,))
            at = Op("add", (row, Load(positions._data)), D.int32)
            result = lazy(rt, Gather(Expr(expr.root, shape), at), shape, 1)
        else:
            result = positions
        y = permute_dims(result, tuple(int(i) for i in np.argsort(moved)))
    ran(rt, name, decision, t0, [x], dispatched(rt) - before)
    return y


def sort(x: Array, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Array:
    """x sorted along `axis` (NaN last ascending, first descending); always stable."""
    return _sort("sort", x, axis, descending, True)


def argsort(x: Array, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Array:
    """The int32 positions that sort x along `axis`; always stable (equal values keep their order, descending too)."""
    return _sort("argsort", x, axis, descending, False)
