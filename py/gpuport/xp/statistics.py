"""The standard's statistical and utility functions: reductions (sum, prod, max, min, mean, var, std, all, any),
cumulative sums and products, and diff. On the device a reduction is one dispatch of the reduce kernel over its input
expression with the reduced axes moved last (a view): a fused element-wise chain or a strided view is reduced without
a copy; the division of a mean, the centring of a variance and the cast to the result dtype stay lazy.
"""

from __future__ import annotations

import builtins
import math
import operator
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes as D
from . import kernels as K
from .core import Array, adopt, dispatched, fit, host_array, lazy, node, now, place, ran
from .elementwise import cast_node
from .graph import Const, Expr, Load, Node, Op, View, basic_index, permute
from .manipulation import concat, normalize_axes, normalize_axis, permute_dims, transformed

Axis = int | Sequence[int] | None


def _array(x: Any, name: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
    return x


def sum_dtype(dtype: np.dtype, given: Any, name: str) -> np.dtype:
    """The result dtype of sum, prod and the cumulative ones: `given`, else the default integer of the input's
    signedness for integers (int32, uint32), else the input's."""
    if given is not None:
        out = D.dtype_of(given)
        if not D.isdtype(out, "numeric"):
            raise TypeError(f"{name}: dtype must be numeric, not {out}")
        return out
    if not D.isdtype(dtype, "numeric"):
        raise TypeError(f"{name} takes an array of a numeric data type, not {dtype}")
    return {"i": D.int32, "u": D.uint32}.get(dtype.kind, dtype)


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    return tuple(1 if a in axes else n for a, n in enumerate(shape) if keepdims or a not in axes)


def reduce_rows(x: Array, axes: tuple[int, ...], prologue: Callable[[Node], Node]) -> tuple[Expr, int, int]:
    """x's values (through `prologue`) as rows over the kept axes, each the elements of the reduced ones."""
    root = prologue(node(x, x.shape))
    expr = Expr(root, x.shape)
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    t = permute(x.shape, kept + axes)
    rows = math.prod([x.shape[a] for a in kept])
    length = math.prod([x.shape[a] for a in axes])
    return t.expr(expr), rows, length


def reduction(name: str, x: Array, axis: Axis, keepdims: bool, op: str, out: np.dtype,
              host: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray],
              prologue: Callable[[Node], Node] = lambda n: n,
              finish: Callable[[Node, int], Node] | None = None) -> Array:
    """Reduce x over `axis` with `op`: the device's reduce kernel (then `finish(result node, count)`, lazily, and the
    cast to `out`), or `host` (NumPy) on the host."""
    x = _array(x, name)
    rt = x.device
    D.check_held(out, rt)
    axes = normalize_axes(axis, x.ndim)
    shape = _reduced_shape(x.shape, axes, keepdims)
    t0, before = now(), dispatched(rt)
    decision = place(rt, name, [x], shape)
    if decision.on_host:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # NumPy's mean of nothing says so; NaN says it here
            y = adopt(rt, np.asarray(host(host_array(x, name), axes, keepdims)).astype(out), out)
    else:
        fit(rt, [x])
        expr, rows, length = reduce_rows(x, axes, prologue)
        values, index = K.reduce(rt, expr, rows, length, op)
        kept = tuple(n for a, n in enumerate(x.shape) if a not in axes)
        store = index if index is not None else values
        result: Node = Load(View.whole(store, kept))
        if finish is not None:
            result = finish(result, length)
        result = cast_node(result, out)
        # the kernel's own output as it is, or lazily finished and cast (fused into whatever reads it)
        y = Array(rt, View.whole(store, kept)) if isinstance(result, Load) else lazy(rt, result, kept, 1)
        if keepdims:
            y = transformed(y, basic_index(kept, tuple(None if a in axes else slice(None) for a in range(x.ndim))))
    ran(rt, name, decision, t0, [x], dispatched(rt) - before)
    return y


def sum(x: Array, /, *, axis: Axis = None, dtype: Any = None, keepdims: bool = False) -> Array:
    """The sum over `axis` (all axes when None)."""
    out = sum_dtype(_array(x, "sum").dtype, dtype, "sum")
    return reduction("sum", x, axis, keepdims, "sum", out,
                     lambda v, a, k: np.sum(v, axis=a, dtype=out, keepdims=k), lambda n: cast_node(n, out))


def prod(x: Array, /, *, axis: Axis = None, dtype: Any = None, keepdims: bool = False) -> Array:
    """The product over `axis` (all axes when None)."""
    out = sum_dtype(_array(x, "prod").dtype, dtype, "prod")
    return reduction("prod", x, axis, keepdims, "prod", out,
                     lambda v, a, k: np.prod(v, axis=a, dtype=out, keepdims=k), lambda n: cast_node(n, out))


def _extreme(name: str, x: Array, axis: Axis, keepdims: bool) -> Array:
    x = _array(x, name)
    if not D.isdtype(x.dtype, ("integral", "real floating")):
        raise TypeError(f"{name} takes an array of a real data type, not {x.dtype}")
    axes = normalize_axes(axis, x.ndim)
    if builtins.any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{name} of an empty axis has no value")
    fn = np.max if name == "max" else np.min
    return reduction(name, x, axis, keepdims, name, x.dtype, lambda v, a, k: fn(v, axis=a, keepdims=k))


def max(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """The maximum over `axis` (NaN propagates; an empty axis raises ValueError)."""
    return _extreme("max", x, axis, keepdims)


def min(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """The minimum over `axis` (NaN propagates; an empty axis raises ValueError)."""
    return _extreme("min", x, axis, keepdims)


def _floating(x: Any, name: str) -> Array:
    x = _array(x, name)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} takes an array of a real floating-point data type, not {x.dtype}")
    return x


def mean(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """The arithmetic mean over `axis` (NaN for no elements); float16 accumulates in float32."""
    x = _floating(x, "mean")
    return reduction("mean", x, axis, keepdims, "sum", x.dtype,
                     lambda v, a, k: np.mean(v, axis=a, keepdims=k, dtype=np.float32),
                     finish=lambda n, count: Op("divide", (n, Const(float(count), D.float32)), D.float32))


def _variance(name: str, x: Array, axis: Axis, correction: int | float, keepdims: bool, root: bool) -> Array:
    x = _floating(x, name)
    rt = x.device
    axes = normalize_axes(axis, x.ndim)
    count = math.prod([x.shape[a] for a in axes])
    divisor = float(np.maximum(count - correction, 0))
    host_fn = np.std if root else np.var
    decision = place(rt, name, [x], _reduced_shape(x.shape, axes, keepdims))
    if decision.on_host:
        t0 = now()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # no degrees of freedom: NaN or inf says it
            values = host_fn(host_array(x, name), axis=axes, ddof=correction, keepdims=keepdims, dtype=np.float32)
        y = adopt(rt, np.asarray(values).astype(x.dtype), x.dtype)
        ran(rt, name, decision, t0, [x])
        return y
    centre = reduction("mean", x, axes, True, "sum", D.float32,
                       lambda v, a, k: np.mean(v, axis=a, keepdims=True, dtype=np.float32),
                       prologue=lambda n: cast_node(n, D.float32),
                       finish=lambda n, c: Op("divide", (n, Const(float(c), D.float32)), D.float32))

    def spread(n: Node) -> Node:
        d = Op("subtract", (cast_node(n, D.float32), node(centre, x.shape)), D.float32)
        return Op("multiply", (d, d), D.float32)

    def finish(n: Node, c: int) -> Node:
        v = Op("divide", (n, Const(divisor, D.float32)), D.float32)
        return Op("sqrt", (v,), D.float32) if root else v
    def host(v: np.ndarray, a: tuple[int, ...], k: bool) -> np.ndarray:
        return host_fn(v, axis=a, ddof=correction, keepdims=k, dtype=np.float32)
    return reduction(name, x, axes, keepdims, "sum", x.dtype, host, prologue=spread, finish=finish)


def var(x: Array, /, *, axis: Axis = None, correction: int | float = 0.0, keepdims: bool = False) -> Array:
    """The variance over `axis`, dividing by N - correction."""
    return _variance("var", x, axis, correction, keepdims, False)


def std(x: Array, /, *, axis: Axis = None, correction: int | float = 0.0, keepdims: bool = False) -> Array:
    """The standard deviation over `axis`, dividing by N - correction."""
    return _variance("std", x, axis, correction, keepdims, True)


def _truth(n: Node) -> Node:
    return n if n.dtype == D.bool_ else Op("not_equal", (n, Const(0, n.dtype)), D.bool_)


def all(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """Whether every element over `axis` is true (nonzero; NaN is true)."""
    return reduction("all", x, axis, keepdims, "all", D.bool_, lambda v, a, k: np.all(v, axis=a, keepdims=k), _truth)


def any(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """Whether any element over `axis` is true (nonzero; NaN is true)."""
    return reduction("any", x, axis, keepdims, "any", D.bool_, lambda v, a, k: np.any(v, axis=a, keepdims=k), _truth)


def count_nonzero(x: Array, /, *, axis: Axis = None, keepdims: bool = False) -> Array:
    """How many elements over `axis` are nonzero (the default index dtype)."""
    return reduction("count_nonzero", x, axis, keepdims, "sum", D.DEFAULT_INDEX,
                     lambda v, a, k: np.count_nonzero(v, axis=a, keepdims=k),
                     lambda n: cast_node(_truth(n), D.int32))


# -- cumulative sums and products ------------------------------------------------------------------------------

def _cumulative(name: str, op: str, x: Array, axis: int | None, dtype: Any, include_initial: bool) -> Array:
    x = _array(x, name)
    out = D.check_held(sum_dtype(x.dtype, dtype, name), x.device)
    if axis is None:
        if x.ndim > 1:
            raise ValueError(f"{name}: axis is required for an array of more than one axis")
        axis = 0
    if x.ndim == 0:
        raise ValueError(f"{name} needs an array of at least one axis")
    axis = normalize_axis(axis, x.ndim)
    rt = x.device
    shape = tuple(n + int(include_initial) if a == axis else n for a, n in enumerate(x.shape))
    t0, before = now(), dispatched(rt)
    decision = place(rt, name, [x], shape)
    if decision.on_host:
        fn = np.cumsum if op == "sum" else np.cumprod
        with np.errstate(all="ignore"):
            values = fn(host_array(x, name), axis=axis, dtype=out)
        if include_initial:
            first = np.full(x.shape[:axis] + (1,) + x.shape[axis + 1:], 0 if op == "sum" else 1, out)
            values = np.concatenate([first, values], axis=axis)
        y = adopt(rt, values, out)
    else:
        fit(rt, [x])
        moved = tuple(a for a in range(x.ndim) if a != axis) + (axis,)
        expr, rows, length = reduce_rows(x, (axis,), lambda n: cast_node(n, out))
        store = K.scan(rt, expr, rows, length, op, out, include_initial)
        lead = tuple(x.shape[a] for a in moved[:-1])
        laid = Array(rt, View.whole(store, lead + (shape[axis],)))
        y = permute_dims(laid, tuple(int(i) for i in np.argsort(moved)))
    ran(rt, name, decision, t0, [x], dispatched(rt) - before)
    return y


def cumulative_sum(x: Array, /, *, axis: int | None = None, dtype: Any = None,
                   include_initial: bool = False) -> Array:
    """The running sums along `axis` (required past one axis); include_initial puts a 0 first."""
    return _cumulative("cumulative_sum", "sum", x, axis, dtype, include_initial)


def cumulative_prod(x: Array, /, *, axis: int | None = None, dtype: Any = None,
                    include_initial: bool = False) -> Array:
    """The running products along `axis` (required past one axis); include_initial puts a 1 first."""
    return _cumulative("cumulative_prod", "prod", x, axis, dtype, include_initial)


def diff(x: Array, /, *, axis: int = -1, n: int = 1, prepend: Array | None = None,
         append: Array | None = None) -> Array:
    """The n-th forward difference along `axis` (of x with `prepend` and `append` joined to it): lazy."""
    x = _array(x, "diff")
    if not D.isdtype(x.dtype, "numeric"):
        raise TypeError(f"diff takes an array of a numeric data type, not {x.dtype}")
    n = operator.index(n)
    if n < 0:
        raise ValueError("diff: n must be >= 0")
    axis = normalize_axis(axis, x.ndim)
    parts = [p for p in (prepend, x, append) if p is not None]
    if len(parts) > 1:
        x = concat(parts, axis=axis)
    head = (slice(None),) * axis
    for _ in range(n):
        x = x[head + (slice(1, None),)] - x[head + (slice(None, -1),)]
    return x
