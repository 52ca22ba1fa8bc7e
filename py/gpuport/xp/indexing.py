"""Indexing: `x[key]`, `x[key] = value`, `take` and `take_along_axis`.

- Basic indexing (ints, slices, `...`, None) is a view, of a store or of a lazy expression.
- Integer array indexing (NumPy's rules: the index arrays broadcast together; their axes go where the first of them
  was when they are adjacent, first otherwise) and take/take_along_axis are a gather: x read at a flat index
  computed per element from the index arrays (negative indices count from the end), lazily.
- A boolean mask (the sole index) selects a data-dependent number of elements: its true positions are found on the
  device and their number read back (`await xp.aio.getitem(x, mask)` in a page), then it is integer indexing.
- `x[key] = value` writes in place, where the store lives: on the device a write kernel stores value's elements at
  the flat indices the key gives (lazy arrays that read the store are evaluated first, so they keep the values they
  were made from); on the host NumPy's assignment. Views of the store see the write, as NumPy's do.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import dtypes as D
from . import kernels as K
from .core import Array, adopt, concrete, fit, host_array, lazy, node, now, place, ran, scalar, values
from .elementwise import astype, broadcast_shapes, cast_node, where
from .graph import Const, Expr, Gather, Index, Node, Op, View, basic_index, contiguous_strides
from .manipulation import broadcast_to, normalize_axis, reshape, transformed
from .reads import wait
from .searching import nonzero_async, true_positions
from ..types import DEVICE, HOST, Decision


def _is_int(k: Any) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _is_mask(k: Any) -> bool:
    return isinstance(k, (bool, np.bool_)) or (isinstance(k, Array) and k.dtype == D.bool_)


def _check_key(key: Any) -> tuple[Any, ...]:
    key = tuple(_plain_slice(k) for k in (key if isinstance(key, tuple) else (key,)))
    for k in key:
        if not (k is None or k is Ellipsis or _is_int(k) or isinstance(k, slice) or isinstance(k, Array)
                or isinstance(k, (bool, np.bool_))):
            raise IndexError(f"an index is ints, slices, ..., None, or integer or boolean arrays; got {k!r}")
        if isinstance(k, Array) and k.dtype.kind not in "iub":
            raise IndexError(f"index arrays are of an integer or bool dtype, not {k.dtype}")
        if isinstance(k, slice) and k.step is not None and operator.index(k.step) == 0:
            raise ValueError("a slice step must not be 0")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index holds at most one ...")
    return key


def _plain_slice(k: Any) -> Any:
    """A slice with its bounds as Python ints (0-D integer arrays among them read through __index__)."""
    if not isinstance(k, slice):
        return k
    try:
        return slice(*(None if p is None else operator.index(p) for p in (k.start, k.stop, k.step)))
    except TypeError:
        raise IndexError(f"slice bounds are ints or None, got {k!r}") from None


def _expand(key: tuple[Any, ...], ndim: int) -> list[Any]:
    """The key without `...`: as many full slices in its place as the other entries leave axes."""
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if consumed > ndim:
        raise IndexError(f"too many indices ({consumed}) for an array of {ndim} axes")
    out: list[Any] = []
    for k in key:
        out.extend([slice(None)] * (ndim - consumed) if k is Ellipsis else [k])
    if not any(k is Ellipsis for k in key):
        out.extend([slice(None)] * (ndim - consumed))
    return out


def _bound(i: Any, n: int) -> int:
    i = operator.index(i)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
    return i % n


def getitem(x: Array, key: Any) -> Array:
    """x[key] (see the module docstring); a boolean mask's selection is counted by a synchronous read."""
    if any(_is_mask(k) for k in (key if isinstance(key, tuple) else (key,))):
        return wait(lambda blocking: getitem_async(x, key, blocking), x.device, "x[boolean mask]")
    return _select(x, _check_key(key))


async def getitem_async(x: Array, key: Any, blocking: bool) -> Array:
    """x[key], a boolean mask's true elements counted with an awaited read (`xp.aio.getitem`)."""
    key = _check_key(key)
    masks = [k for k in key if _is_mask(k)]
    if not masks:
        return _select(x, key)
    if len(key) - sum(k is Ellipsis for k in key) != 1:
        raise IndexError("a boolean array index must be the only index (besides ...)")
    return await mask_take(x, masks[0], blocking)


def _select(x: Array, key: tuple[Any, ...]) -> Array:
    comps = _expand(key, x.ndim)
    if any(isinstance(k, Array) for k in comps):
        return _take_advanced(x, comps)
    return transformed(x, basic_index(x.shape, _bounded(comps, x.shape)))


def _bounded(comps: list[Any], shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Basic index entries with their ints checked against their axes and made non-negative."""
    out, axis = [], 0
    for k in comps:
        if k is not None:
            k = _bound(k, shape[axis]) if _is_int(k) else k
            axis += 1
        out.append(k)
    return tuple(out)


async def mask_take(x: Array, mask: Any, blocking: bool) -> Array:
    """x[mask] for a boolean mask over x's leading axes (a 0-D one, or a Python bool, adds an axis of 1 or 0)."""
    if not isinstance(mask, Array) or mask.ndim == 0:
        keep = bool(mask) if not isinstance(mask, Array) else bool((await values(mask, blocking))[()])
        grown = transformed(x, basic_index(x.shape, (None,)))
        return grown if keep else transformed(grown, basic_index(grown.shape, (slice(0, 0),)))
    _check_mask(mask, x)
    if mask.size == 0:   # an axis of 0 in the mask selects nothing, whatever x's axis holds
        return reshape(transformed(x, basic_index(x.shape, (slice(0, 0),))), (0,) + x.shape[mask.ndim:])
    decision = place(x.device, "getitem", [x, mask], (x.size,))
    flat, _ = await true_positions(mask, blocking, decision.on_host)
    rest = x.shape[mask.ndim:]
    merged = reshape(x, (math.prod(mask.shape),) + rest)   # the mask's axes as one
    return _take_advanced(merged, [flat] + [slice(None)] * len(rest))


def _check_mask(mask: Array, x: Array) -> None:
    """A mask's axes each match x's leading ones, or are 0 (selecting nothing)."""
    if mask.ndim > x.ndim or any(m not in (n, 0) for m, n in zip(mask.shape, x.shape)):
        raise IndexError(f"boolean index of shape {mask.shape} does not match the array's leading axes {x.shape}")


def _plan(comps: list[Any], shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, tuple[int, ...], list[Any]]:
    """Integer array indexing laid out: the output shape, where the broadcast index axes start in it, their shape,
    and per axis of x what reads it: ("slice", output axis, start, step), ("int", i) or ("array", index, size)."""
    adv = [i for i, k in enumerate(comps) if isinstance(k, Array) or _is_int(k)]
    index_shape = broadcast_shapes(*(k.shape for k in comps if isinstance(k, Array)))
    adjacent = adv == list(range(adv[0], adv[-1] + 1))
    dims: list[int] = []
    axes: list[Any] = []
    at, axis = 0, 0
    for i, k in enumerate(comps):
        if k is None:
            dims.append(1)
            continue
        n = shape[axis]
        axis += 1
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            axes.append(["slice", len(dims), start, step])
            dims.append(len(range(start, stop, step)))
            continue
        if adjacent and i == adv[0]:
            at = len(dims)
        axes.append(("int", _bound(k, n)) if _is_int(k) else ("array", k, n))
    for entry in axes:   # the index axes go in at `at`: the slices' output axes there and after move along
        if entry[0] == "slice" and entry[1] >= at:
            entry[1] += len(index_shape)
    dims[at:at] = index_shape
    return tuple(dims), at, index_shape, axes


def _axis_nodes(shape: tuple[int, ...], at: int, index_shape: tuple[int, ...], axes: list[Any]) -> list[Node]:
    """Per axis of x, the int32 index it reads for each output element (a node over the output shape)."""
    nodes: list[Node] = []
    for entry in axes:
        if entry[0] == "slice":
            _, dim, start, step = entry
            nodes.append(Index(start, tuple(step if j == dim else 0 for j in range(len(shape)))))
        elif entry[0] == "int":
            nodes.append(Const(entry[1], D.int32))
        else:
            nodes.append(_index_node(entry[1], entry[2], shape, at, index_shape))
    return nodes


def _index_node(k: Array, n: int, out_shape: tuple[int, ...], at: int, index_shape: tuple[int, ...]) -> Node:
    """An index array broadcast to the index shape and laid at its place in the output, negatives wrapped."""
    full = broadcast_to(k, index_shape)
    lay = (None,) * at + (slice(None),) * len(index_shape) + (None,) * (len(out_shape) - at - len(index_shape))
    placed = transformed(full, basic_index(index_shape, lay))
    return _wrapped(cast_node(node(placed, out_shape), D.int32), n)


def _wrapped(i: Node, n: int) -> Node:
    negative = Op("less", (i, Const(0, D.int32)), D.bool_)
    return Op("where", (negative, Op("add", (i, Const(n, D.int32)), D.int32), i), D.int32)


def _flat(nodes: list[Node], strides: tuple[int, ...], offset: int) -> Node:
    total: Node = Const(offset, D.int32)
    for n, s in zip(nodes, strides):
        total = Op("add", (total, Op("multiply", (n, Const(s, D.int32)), D.int32)), D.int32)
    return total


def _take_advanced(x: Array, comps: list[Any]) -> Array:
    rt = x.device
    arrays = [k for k in comps if isinstance(k, Array)]
    out_shape, at, index_shape, axes = _plan(comps, x.shape)
    t0 = now()
    decision = place(rt, "getitem", [x, *arrays], out_shape)
    if decision.on_host:
        key = tuple(np.asarray(host_array(k, "x[index arrays]")) if isinstance(k, Array) else k for k in comps)
        y = adopt(rt, np.asarray(host_array(x, "x[index arrays]"))[key], x.dtype)
    else:
        fit(rt, [x, *arrays])
        flat = _flat(_axis_nodes(out_shape, at, index_shape, axes), contiguous_strides(x.shape), 0)
        src = x._data if isinstance(x._data, Expr) else Expr(node(x, x.shape), x.shape)
        y = lazy(rt, Gather(src, flat), out_shape, 1 + x._fused)
    ran(rt, "getitem", decision, t0, [x, *arrays])
    return y


def take(x: Array, indices: Array, /, *, axis: int | None = None) -> Array:
    """x's elements (or slices along `axis`) at the 1-D integer `indices` (negative ones count from the end)."""
    if not isinstance(x, Array) or not isinstance(indices, Array):
        raise TypeError("take takes arrays of gpuport.xp")
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError("take: indices must be a 1-D integer array")
    if axis is None:
        if x.ndim != 1:
            raise ValueError("take: axis is required for an array of more than one axis")
        axis = 0
    axis = normalize_axis(axis, x.ndim)
    return _take_advanced(x, [slice(None)] * axis + [indices] + [slice(None)] * (x.ndim - axis - 1))


def take_along_axis(x: Array, indices: Array, /, *, axis: int = -1) -> Array:
    """x's elements at `indices` along `axis`: indices has x's rank and broadcasts with x off that axis."""
    if not isinstance(x, Array) or not isinstance(indices, Array):
        raise TypeError("take_along_axis takes arrays of gpuport.xp")
    if indices.ndim != x.ndim or indices.dtype.kind not in "iu":
        raise ValueError("take_along_axis: indices must be an integer array of x's rank")
    axis = normalize_axis(axis, x.ndim)
    off = [n for a, n in enumerate(x.shape) if a != axis]
    shape = list(broadcast_shapes(tuple(off), tuple(n for a, n in enumerate(indices.shape) if a != axis)))
    shape.insert(axis, indices.shape[axis])
    shape = tuple(shape)
    rt = x.device
    t0 = now()
    decision = place(rt, "take_along_axis", [x, indices], shape)
    if decision.on_host:
        xb = np.broadcast_to(host_array(x, "take_along_axis"), shape[:axis] + (x.shape[axis],) + shape[axis + 1:])
        y = adopt(rt, np.take_along_axis(xb, np.broadcast_to(host_array(indices, "take_along_axis"), shape), axis),
                  x.dtype)
    else:
        fit(rt, [x, indices])
        src_shape = shape[:axis] + (x.shape[axis],) + shape[axis + 1:]
        xs = broadcast_to(x, src_shape)
        i = cast_node(node(broadcast_to(indices, shape), shape), D.int32)
        n = x.shape[axis]
        i = _wrapped(i, n)
        coords = [i if a == axis else Index(0, tuple(1 if b == a else 0 for b in range(len(shape))))
                  for a in range(len(shape))]
        src = xs._data if isinstance(xs._data, Expr) else Expr(node(xs, src_shape), src_shape)
        y = lazy(rt, Gather(src, _flat(coords, contiguous_strides(src_shape), 0)), shape, 1 + x._fused)
    ran(rt, "take_along_axis", decision, t0, [x, indices])
    return y


# -- x[key] = value --------------------------------------------------------------------------------------------

def _value_dtype(x: Array, value: Any) -> None:
    if isinstance(value, Array):
        if not D.can_cast(value.dtype, x.dtype):
            raise TypeError(f"x[...] = value: a {value.dtype} value does not fit a {x.dtype} array")
    elif isinstance(value, (bool, int, float, complex)):
        D.scalar_dtype(value, x.dtype)
        scalar(value, x.dtype)
    else:
        raise TypeError(f"x[...] = value takes an array of gpuport.xp or a Python scalar, got {type(value).__name__}")


def setitem(x: Array, key: Any, value: Any) -> None:
    """x[key] = value, in place (see the module docstring)."""
    _value_dtype(x, value)
    key = _check_key(key)
    view = concrete(x)
    masks = [k for k in key if _is_mask(k)]
    if not masks:
        _write(x, view, key, value)
        return
    if len(key) - sum(k is Ellipsis for k in key) != 1:
        raise IndexError("a boolean array index must be the only index (besides ...)")
    mask = masks[0]
    if not isinstance(mask, Array) or mask.ndim == 0:
        if wait(lambda blocking: _truth(mask, blocking), x.device, "x[bool] = value"):
            _write(x, view, (...,), value)
        return
    _check_mask(mask, x)
    if mask.size == 0:
        return
    if not isinstance(value, Array) or value.size == 1:   # one value: x = where(mask, value, x), no count needed
        spread = transformed(mask, basic_index(mask.shape, (slice(None),) * mask.ndim + (None,) * (x.ndim - mask.ndim)))
        value = value if not isinstance(value, Array) else astype(reshape(value, ()), x.dtype)
        _write(x, view, (...,), where(broadcast_to(spread, x.shape), value, Array(x.device, view)))
        return
    coords = wait(lambda blocking: nonzero_async(mask, blocking), x.device, "x[boolean mask] = values")
    _write(x, view, coords, value)


async def _truth(mask: Any, blocking: bool) -> bool:
    return bool(mask) if not isinstance(mask, Array) else bool((await values(mask, blocking))[()])


def _write(x: Array, view: View, key: Any, value: Any) -> None:
    """Write value at view[key] where the store lives (counted as xp.setitem there)."""
    rt = x.device
    store = view.store
    t0 = now()
    for dependent in store.dependents():   # lazy arrays keep the values they were made from
        if isinstance(dependent._data, Expr):
            concrete(dependent)
    if store.tensor is None:
        key_np = tuple(np.asarray(host_array(k, "x[...] = value")) if isinstance(k, Array) else k
                       for k in (key if isinstance(key, tuple) else (key,)))
        new = np.asarray(host_array(value, "x[...] = value")) if isinstance(value, Array) else value
        view.host_array(writeable=True)[key_np] = new
        store.tensor = None   # computing the values may have uploaded the store: that copy is stale now
        rt.placement.ran("xp.setitem", Decision(HOST, "cpu", "the array's store is on the host"), t0, [x.shape])
        return
    comps = _expand(_check_key(key), len(view.shape))
    fit(rt, [k for k in comps if isinstance(k, Array)] + ([value] if isinstance(value, Array) else []), spare=1)
    if any(isinstance(k, Array) for k in comps):
        out_shape, at, index_shape, axes = _plan(comps, view.shape)
        target = Expr(_flat(_axis_nodes(out_shape, at, index_shape, axes), view.strides, view.offset), out_shape)
    else:
        part = transformed(Array(rt, view), basic_index(view.shape, _bounded(comps, view.shape)))._data
        out_shape, target = part.shape, K.view_target(part)
    if isinstance(value, Array):
        value = broadcast_to(value, out_shape)
        reads = value._data.stores() if isinstance(value._data, Expr) else [value._data.store]
        if any(s is store for s in reads):   # the store is bound read_write: read the value from a copy
            value = Array(rt, concrete(lazy(rt, node(value, out_shape), out_shape, 1)))
        src = Expr(cast_node(node(value, out_shape), store.dtype), out_shape)
    else:
        src = Expr(scalar(value, store.dtype), out_shape)
    K.write(rt, src, target, store)
    rt.placement.ran("xp.setitem", Decision(DEVICE, "native", "the array's store is on the device"), t0, [x.shape])
