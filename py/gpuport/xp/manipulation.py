"""The standard's manipulation functions. Those that move no element (permute_dims, expand_dims, squeeze, flip,
broadcast_to, moveaxis, unstack, and reshape where the strides allow) are views: of a store, or of a lazy expression
(every leaf transformed alike). The others are lazy expressions on the device: concat (and stack, roll) reads each
input through its own shifted view and selects by coordinate; tile and repeat read their input at a computed index
(a gather). None of them dispatches anything until its values are needed.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import numpy as np

from . import dtypes as D
from .core import Array, adopt, concrete, fit, host_array, lazy, node, now, place, ran, runtime_of, values
from .device import max_inputs
from .elementwise import cast_node
from .graph import (Const, Expr, Gather, Index, Load, Op, Transform, View, basic_index, broadcast,
                    contiguous_strides, leaf_strides, permute, reshape_strides)
from .graph import flip as flip_transform
from .graph import reshape as reshape_transform
from .reads import wait


def _array(x: Any, name: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
    return x


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise IndexError(f"{name} {axis} is out of range for an array of {ndim} axes")
    return axis % ndim


def normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Axes as sorted non-negative ints (None: all); ValueError for a repeated one."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = tuple(sorted(normalize_axis(a, ndim) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return out


def transformed(x: Array, t: Transform) -> Array:
    """x seen through a view transform: a view of its store, or its expression with every leaf transformed."""
    data = x._data
    return Array(x.device, t.view(data) if isinstance(data, View) else t.expr(data), x._fused)


def permute_dims(x: Array, /, axes: tuple[int, ...]) -> Array:
    """x with its axes in the order `axes` (a view)."""
    x = _array(x, "permute_dims")
    axes = tuple(normalize_axis(a, x.ndim) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute_dims: {axes} is not a permutation of {x.ndim} axes")
    return transformed(x, permute(x.shape, axes))


def matrix_transpose(x: Array, /) -> Array:
    """Each matrix of a stack transposed (a view)."""
    x = _array(x, "matrix_transpose")
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 axes, got shape {x.shape}")
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return transformed(x, permute(x.shape, axes))


def moveaxis(x: Array, source: int | tuple[int, ...], destination: int | tuple[int, ...], /) -> Array:
    """x with axes `source` moved to positions `destination` (a view)."""
    x = _array(x, "moveaxis")
    src = (source,) if isinstance(source, (int, np.integer)) else tuple(source)
    dst = (destination,) if isinstance(destination, (int, np.integer)) else tuple(destination)
    if len(src) != len(dst):
        raise ValueError("moveaxis: source and destination need as many axes")
    src = tuple(normalize_axis(a, x.ndim, "source") for a in src)
    dst = tuple(normalize_axis(a, x.ndim, "destination") for a in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError("moveaxis: repeated axis")
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transformed(x, permute(x.shape, tuple(order)))


def expand_dims(x: Array, /, axis: int = 0) -> Array:
    """x with a new axis of size 1 at `axis` (a view)."""
    x = _array(x, "expand_dims")
    axis = normalize_axis(axis, x.ndim + 1)
    key = (slice(None),) * axis + (None,)
    return transformed(x, basic_index(x.shape, key))


def squeeze(x: Array, /, axis: int | tuple[int, ...]) -> Array:
    """x without the axes `axis`, each of size 1 (a view)."""
    x = _array(x, "squeeze")
    axes = normalize_axes(axis, x.ndim)
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise ValueError(f"squeeze: axis {bad[0]} has size {x.shape[bad[0]]}, not 1")
    key = tuple(0 if a in axes else slice(None) for a in range(x.ndim))
    return transformed(x, basic_index(x.shape, key))


def flip(x: Array, /, *, axis: int | tuple[int, ...] | None = None) -> Array:
    """x reversed along `axis` (all axes when None; a view)."""
    x = _array(x, "flip")
    return transformed(x, flip_transform(x.shape, normalize_axes(axis, x.ndim)))


def broadcast_to(x: Array, /, shape: tuple[int, ...]) -> Array:
    """x broadcast to `shape` (a view: broadcast axes read the same elements)."""
    x = _array(x, "broadcast_to")
    shape = tuple(operator.index(s) for s in shape)
    try:
        return transformed(x, broadcast(x.shape, shape))
    except ValueError:
        raise ValueError(f"broadcast_to: shape {x.shape} does not broadcast to {shape}") from None


def broadcast_arrays(*arrays: Array) -> list[Array]:
    """The arrays broadcast to their common shape."""
    shapes = [_array(a, "broadcast_arrays").shape for a in arrays]
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"broadcast_arrays: shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return [broadcast_to(a, tuple(out)) for a in arrays]


def unstack(x: Array, /, *, axis: int = 0) -> tuple[Array, ...]:
    """The slices of x along `axis` (views)."""
    x = _array(x, "unstack")
    if x.ndim == 0:
        raise ValueError("unstack needs at least one axis")
    axis = normalize_axis(axis, x.ndim)
    return tuple(transformed(x, basic_index(x.shape, (slice(None),) * axis + (i,))) for i in range(x.shape[axis]))


def _target_shape(shape: Sequence[int], size: int) -> tuple[int, ...]:
    dims = [operator.index(d) for d in shape]
    if dims.count(-1) > 1:
        raise ValueError("reshape: at most one -1")
    if -1 in dims:
        known = math.prod([d for d in dims if d != -1])
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape {size} elements to {tuple(shape)}")
        dims[dims.index(-1)] = size // known
    if any(d < 0 for d in dims) or math.prod(dims) != size:
        raise ValueError(f"reshape: cannot reshape {size} elements to {tuple(shape)}")
    return tuple(dims)


def reshape(x: Array, /, shape: tuple[int, ...], *, copy: bool | None = None) -> Array:
    """x's elements (row-major) in `shape` (one -1 is inferred): a view where the strides allow, else a copy
    (copy=False then raises ValueError; copy=True always copies)."""
    x = _array(x, "reshape")
    new = _target_shape(shape if not isinstance(shape, (int, np.integer)) else (shape,), x.size)
    if copy:
        x = _copy(x)
    data = x._data
    if isinstance(data, View):
        strides = reshape_strides(data.shape, data.strides, new)
        if strides is not None:
            return Array(x.device, View(data.store, data.offset, new, strides))
    else:
        t = reshape_transform(data.shape, leaf_strides(data), new)
        if t is not None:
            return transformed(x, t)
    if copy is False:
        raise ValueError(f"reshape(copy=False): shape {x.shape} to {new} needs a copy of these strides")
    y = _copy(x)
    view = concrete(y)
    return Array(x.device, View(view.store, view.offset, new, contiguous_strides(new)))


def _copy(x: Array) -> Array:
    """A fresh array of x's values (lazy on the device)."""
    rt = x.device
    t0 = now()
    decision = place(rt, "copy", [x], x.shape)
    if decision.on_host:
        y = adopt(rt, np.array(host_array(x, "copy"), order="C", copy=True), x.dtype)
    else:
        y = lazy(rt, node(x, x.shape), x.shape, 1 + x._fused)
    ran(rt, "copy", decision, t0, [x])
    return y


# -- concat, stack, roll: each input through its own view, selected by coordinate ------------------------------------

def concat(arrays: tuple[Array, ...] | list[Array], /, *, axis: int | None = 0) -> Array:
    """The arrays joined along `axis` (flattened first when None), promoted to one dtype."""
    arrays = [_array(a, "concat") for a in arrays]
    if not arrays:
        raise ValueError("concat needs at least one array")
    rt = runtime_of(*arrays)
    dtype = D.check_held(D.result_type(*arrays), rt)
    if axis is None:
        arrays = [reshape(a, (-1,)) for a in arrays]
        axis = 0
    ndim = arrays[0].ndim
    if ndim == 0 or any(a.ndim != ndim for a in arrays):
        raise ValueError("concat: the arrays need the same number of axes, at least one")
    axis = normalize_axis(axis, ndim)
    for a in arrays:
        if any(a.shape[k] != arrays[0].shape[k] for k in range(ndim) if k != axis):
            raise ValueError(f"concat: shapes {[a.shape for a in arrays]} differ off axis {axis}")
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    shape = tuple(shape)
    t0 = now()
    decision = place(rt, "concat", arrays, shape)
    if decision.on_host:
        y = adopt(rt, np.concatenate([np.asarray(host_array(a, "concat"), dtype) for a in arrays], axis=axis), dtype)
    else:
        y = _concat_device(rt, arrays, axis, shape, dtype)
    ran(rt, "concat", decision, t0, arrays)
    return y


def _shifted(a: Array, axis: int, start: int, shape: tuple[int, ...], dtype: np.dtype):
    """a's node over the whole output shape, its coordinate along `axis` shifted by `start` (reads outside a's
    range are clamped and never selected)."""
    def fn(o: int, s: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        return o - start * s[axis], s
    t = Transform(shape, fn)
    data = a._data
    return cast_node(Load(t.view(data)) if isinstance(data, View) else t.expr(data).root, dtype)


def _concat_device(rt, arrays: list[Array], axis: int, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    groups: list[list[Array]] = [[]]
    for a in arrays:   # as many inputs per kernel as it may bind
        groups[-1].append(a)
        stores = {id(s) for g in groups[-1] for s in ([g._data.store] if isinstance(g._data, View)
                                                        else g._data.stores())}
        if len(stores) > max_inputs(rt) and len(groups[-1]) > 1:
            groups[-1].pop()
            groups.append([a])
    if len(groups) > 1:   # each group joined into a store of its own, then those joined
        parts = [Array(rt, concrete(_concat_device(rt, g, axis, _joined(g, axis), dtype))) for g in groups]
        return _concat_device(rt, parts, axis, shape, dtype)
    fit(rt, arrays)
    coord = Index(0, tuple(1 if k == axis else 0 for k in range(len(shape))))
    start = sum(a.shape[axis] for a in arrays[:-1])
    root = _shifted(arrays[-1], axis, start, shape, dtype)
    for a in reversed(arrays[:-1]):
        start -= a.shape[axis]
        end = start + a.shape[axis]
        inside = Op("less", (coord, Const(end, D.int32)), D.bool_)
        root = Op("where", (inside, _shifted(a, axis, start, shape, dtype), root), dtype)
    return lazy(rt, root, shape, 1 + sum(a._fused for a in arrays))


def _joined(arrays: list[Array], axis: int) -> tuple[int, ...]:
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    return tuple(shape)


def stack(arrays: tuple[Array, ...] | list[Array], /, *, axis: int = 0) -> Array:
    """The arrays (of one shape) joined along a new axis."""
    arrays = [_array(a, "stack") for a in arrays]
    if not arrays:
        raise ValueError("stack needs at least one array")
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"stack: shapes differ: {[a.shape for a in arrays]}")
    axis = normalize_axis(axis, arrays[0].ndim + 1)
    return concat([expand_dims(a, axis=axis) for a in arrays], axis=axis)


def roll(x: Array, /, shift: int | tuple[int, ...], *, axis: int | tuple[int, ...] | None = None) -> Array:
    """x's elements shifted by `shift` along `axis` (flattened when None), wrapping around."""
    x = _array(x, "roll")
    if axis is None:
        return reshape(roll(reshape(x, (-1,)), shift, axis=0), x.shape)
    shifts = (shift,) if isinstance(shift, (int, np.integer)) else tuple(shift)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(shifts) != len(axes):
        raise ValueError("roll: shift and axis need as many entries")
    for s, a in zip(shifts, axes):
        a = normalize_axis(a, x.ndim)
        n = x.shape[a]
        s = operator.index(s) % n if n else 0
        if s:
            head = (slice(None),) * a
            x = concat([x[head + (slice(n - s, None),)], x[head + (slice(0, n - s),)]], axis=a)
    return x


# -- tile and repeat: their input at a computed index (a gather) --------------------------------------------------

def _gather(name: str, x: Array, shape: tuple[int, ...], index, host_fn, extra: tuple[Array, ...] = ()) -> Array:
    rt = x.device
    t0 = now()
    decision = place(rt, name, [x], shape)
    if decision.on_host:
        y = adopt(rt, host_fn(host_array(x, name)), x.dtype)
    else:
        fit(rt, [x, *extra])
        src = x._data if isinstance(x._data, Expr) else Expr(node(x, x.shape), x.shape)
        y = lazy(rt, Gather(src, index), shape, 1 + x._fused)
    ran(rt, name, decision, t0, [x])
    return y


def _coordinate(shape: tuple[int, ...], axis: int) -> Index:
    return Index(0, tuple(1 if k == axis else 0 for k in range(len(shape))))


def tile(x: Array, repetitions: tuple[int, ...], /) -> Array:
    """x repeated `repetitions` times along each axis."""
    x = _array(x, "tile")
    reps = tuple(operator.index(r) for r in repetitions)
    if any(r < 0 for r in reps):
        raise ValueError("tile: repetitions must be >= 0")
    ndim = max(x.ndim, len(reps))
    src_shape = (1,) * (ndim - x.ndim) + x.shape
    reps = (1,) * (ndim - len(reps)) + reps
    shape = tuple(n * r for n, r in zip(src_shape, reps))
    xs = reshape(x, src_shape)
    strides = contiguous_strides(src_shape)
    terms = [Op("multiply", (Op("remainder", (_coordinate(shape, k), Const(max(n, 1), D.int32)), D.int32),
                             Const(s, D.int32)), D.int32) for k, (n, s) in enumerate(zip(src_shape, strides))]
    index = terms[0] if terms else Const(0, D.int32)
    for t in terms[1:]:
        index = Op("add", (index, t), D.int32)
    return _gather("tile", xs, shape, index, lambda v: np.tile(v, reps))


def repeat(x: Array, repeats: int | Array, /, *, axis: int | None = None) -> Array:
    """Each element of x repeated `repeats` times (an int, or one count per element along `axis`) along `axis`
    (x flattened when None). Counts given as an array make a data-dependent shape: they are read back (a
    synchronous read; `await xp.aio.repeat(...)` in a page)."""
    x = _array(x, "repeat")
    return wait(lambda blocking: repeat_async(x, repeats, axis, blocking), x.device, "repeat(counts as an array)")


async def repeat_async(x: Array, repeats: int | Array, axis: int | None, blocking: bool) -> Array:
    """repeat, with array counts awaited."""
    x = _array(x, "repeat")
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    axis = normalize_axis(axis, x.ndim)
    n = x.shape[axis]
    if isinstance(repeats, Array):
        if repeats.dtype.kind not in "iu":
            raise TypeError(f"repeat: counts must be integers, not {repeats.dtype}")
        counts = np.broadcast_to(np.asarray(await values(repeats, blocking), dtype=np.int64), (n,))
    else:
        counts = np.full(n, operator.index(repeats), dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("repeat: counts must be >= 0")
    source = np.repeat(np.arange(n, dtype=np.int32), counts)
    shape = x.shape[:axis] + (source.size,) + x.shape[axis + 1:]
    which = adopt(x.device, source, D.int32)
    strides = contiguous_strides(x.shape)
    along = Gather(Expr(node(which, which.shape), which.shape), _coordinate(shape, axis))
    terms = [Op("multiply", (along if k == axis else _coordinate(shape, k), Const(s, D.int32)), D.int32)
             for k, s in enumerate(strides)]
    index = terms[0]
    for t in terms[1:]:
        index = Op("add", (index, t), D.int32)
    return _gather("repeat", x, shape, index, lambda v: np.repeat(v, counts, axis=axis), (which,))
