"""The standard's element-wise functions, each made from its entry in the table (exprs.py): the dtypes it accepts,
type promotion and broadcasting, Python scalars beside arrays (2024.12), then where placement puts the call: on the
device a lazy expression node (evaluated, fused with the rest of its chain, when something needs its values), on the
host the table's NumPy twin.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ..runtime import Runtime
from . import dtypes as D
from . import hostpool
from .codegen import CAST
from .core import Array, adopt, fit, host_array, lazy, node, now, place, ran, runtime_of, scalar
from .exprs import TABLE
from .graph import Node, Op

Scalar = (bool, int, float, complex)
_ARGUMENTS = (Array, *Scalar)   # what a function of the table takes

# the dtypes each function accepts (the standard's "should have a ... data type"), by category
CATEGORIES = {
    "numeric": ("numeric",), "floating": ("real floating", "complex floating"), "real floating": ("real floating",),
    "real": ("integral", "real floating"), "integer": ("integral",), "integer or bool": ("integral", "bool"),
    "bool": ("bool",), "any": ("bool", "numeric"), "complex": ("complex floating",),
}


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The standard's broadcast of shapes (ValueError where they do not broadcast)."""
    if all(s == shapes[0] for s in shapes):
        return tuple(shapes[0]) if shapes else ()
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def cast_node(n: Node, dtype: np.dtype) -> Node:
    return n if n.dtype == dtype else Op(CAST, (n,), dtype)


# each function's category (what the tests draw its dtypes from)
ACCEPTS: dict[str, str] = {"clip": "real", "where": "any"}


@functools.cache
def _check(name: str, dtype: np.dtype, category: str) -> None:
    if not D.isdtype(dtype, CATEGORIES[category]):
        raise TypeError(f"{name} takes arrays of a {category} data type, not {dtype}")


def apply(name: str, args: tuple[Any, ...], category: str, out: np.dtype | None = None,
          dtype: np.dtype | None = None, condition: bool = False) -> Array:
    """Call the table's `name` on arrays and scalars: promoted to one dtype (or `dtype`), broadcast, placed.
    `out`: the result's dtype where it is not the operands' (comparisons: bool); `condition`: the first argument
    is a bool condition and keeps its dtype (where)."""
    t0 = now()
    arrays = [a for a in args if isinstance(a, Array)]
    if not arrays:
        raise TypeError(f"{name}: at least one argument must be an array of gpuport.xp")
    for a in args:
        if not isinstance(a, _ARGUMENTS):
            raise TypeError(f"{name}: arguments must be arrays or Python scalars, got {type(a).__name__}")
    rt = runtime_of(*arrays)
    dtype = D.check_held(dtype or D.result_type(*args), rt)
    if dtype.kind in "iu" and (name == "divide" or category in ("floating", "real floating")):
        # integers where the standard asks for floats ("should"): it leaves the result to the library, and code
        # written for NumPy (scikit-learn's) takes a square root of integers; they compute as the default float
        dtype = D.DEFAULT_FLOAT
    _check(name, dtype, category)
    result_dtype = out or dtype
    shape = broadcast_shapes(*(a.shape for a in arrays))
    decision = place(rt, name, arrays, shape)
    kinds = [D.bool_ if condition and i == 0 else dtype for i in range(len(args))]
    if decision.on_host:
        values = [np.asarray(host_array(a, name), dtype=k) if isinstance(a, Array) else np.asarray(scalar(a, k).value, k)
                  for a, k in zip(args, kinds)]
        y = _on_host(rt, name, values, shape, result_dtype)
    else:
        fit(rt, arrays)
        nodes = [cast_node(node(a, shape), k) if isinstance(a, Array) else scalar(a, k) for a, k in zip(args, kinds)]
        y = lazy(rt, Op(name, tuple(nodes), result_dtype), shape, 1 + sum(a._fused for a in arrays))
    ran(rt, name, decision, t0, arrays)
    return y


def _on_host(rt: Runtime, name: str, values: list[np.ndarray], shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """The table's NumPy twin on host values: a ufunc whose own result dtype is `dtype` writes into a kept buffer
    of a dead array where one of the size is free (hostpool), anything else into fresh memory."""
    fn = TABLE[name].host
    natural = _natural(fn, tuple(v.dtype for v in values)) if isinstance(fn, np.ufunc) else None
    out = hostpool.take(shape, dtype) if natural == dtype else None
    with np.errstate(all="ignore"):
        if out is not None:
            fn(*values, out=out)
            return adopt(rt, out, dtype, owned=True)
        result = np.asarray(fn(*values)).astype(dtype, copy=False)
    return adopt(rt, result if result.shape == shape else np.broadcast_to(result, shape), dtype)


@functools.cache
def _natural(fn: np.ufunc, dtypes: tuple[np.dtype, ...]) -> np.dtype | None:
    """The dtype a ufunc gives operands of these dtypes by itself (its out= must be of it: the same loop, the same
    values)."""
    return np.dtype(fn.resolve_dtypes((*dtypes, *(None,) * fn.nout))[-1]) if fn.nout == 1 else None


def _unary(name: str, category: str, out: np.dtype | None = None) -> Callable[[Array], Array]:
    ACCEPTS[name] = category

    def fn(x: Array, /) -> Array:
        if not isinstance(x, Array):
            raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
        return apply(name, (x,), category, out)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"The standard's element-wise `{name}` (arrays of a {category} data type)."
    return fn


def _binary(name: str, category: str, out: np.dtype | None = None) -> Callable[[Any, Any], Array]:
    ACCEPTS[name] = category

    def fn(x1: Any, x2: Any, /) -> Array:
        return apply(name, (x1, x2), category, out)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"The standard's element-wise `{name}` of two arrays, or an array and a Python scalar "
                  f"({category} data types; broadcast, promoted).")
    return fn


_B = D.bool_
abs = _unary("abs", "numeric")
acos, acosh, asin, asinh, atan, atanh = (_unary(n, "floating") for n in ("acos", "acosh", "asin", "asinh", "atan",
                                                                         "atanh"))
cos, cosh, exp, expm1, log, log1p = (_unary(n, "floating") for n in ("cos", "cosh", "exp", "expm1", "log", "log1p"))
log2, log10, sin, sinh, sqrt, tan, tanh = (_unary(n, "floating") for n in ("log2", "log10", "sin", "sinh", "sqrt",
                                                                           "tan", "tanh"))
reciprocal = _unary("reciprocal", "floating")
ceil, floor, trunc = (_unary(n, "real") for n in ("ceil", "floor", "trunc"))
round = _unary("round", "numeric")
negative, positive, square, sign = (_unary(n, "numeric") for n in ("negative", "positive", "square", "sign"))
conj, real = _unary("conj", "numeric"), _unary("real", "numeric")
imag = _unary("imag", "complex")
isfinite, isinf, isnan = (_unary(n, "numeric", _B) for n in ("isfinite", "isinf", "isnan"))
signbit = _unary("signbit", "real floating", _B)
logical_not = _unary("logical_not", "bool")
bitwise_invert = _unary("bitwise_invert", "integer or bool")

add, subtract, multiply, pow = (_binary(n, "numeric") for n in ("add", "subtract", "multiply", "pow"))
divide = _binary("divide", "numeric")   # integers divide as the default float (implementation-defined)
floor_divide, remainder, maximum, minimum = (_binary(n, "real") for n in ("floor_divide", "remainder", "maximum",
                                                                          "minimum"))
atan2, copysign, hypot, logaddexp, nextafter = (_binary(n, "real floating") for n in ("atan2", "copysign", "hypot",
                                                                                       "logaddexp", "nextafter"))
bitwise_and, bitwise_or, bitwise_xor = (_binary(n, "integer or bool") for n in ("bitwise_and", "bitwise_or",
                                                                                "bitwise_xor"))
bitwise_left_shift, bitwise_right_shift = (_binary(n, "integer") for n in ("bitwise_left_shift",
                                                                           "bitwise_right_shift"))
logical_and, logical_or, logical_xor = (_binary(n, "bool") for n in ("logical_and", "logical_or", "logical_xor"))
equal, not_equal = _binary("equal", "any", _B), _binary("not_equal", "any", _B)
less, less_equal, greater, greater_equal = (_binary(n, "real", _B) for n in ("less", "less_equal", "greater",
                                                                             "greater_equal"))


def clip(x: Array, /, min: Any = None, max: Any = None) -> Array:
    """x limited to [min, max] element-wise (either bound may be None, a Python scalar or an array of x's dtype,
    broadcast with x); NaN in any of them gives NaN."""
    if not isinstance(x, Array):
        raise TypeError(f"clip takes an array of gpuport.xp, got {type(x).__name__}")
    for what, bound in (("min", min), ("max", max)):
        if isinstance(bound, Array) and bound.dtype != x.dtype:
            raise TypeError(f"clip: {what} has dtype {bound.dtype}; the standard defines clip for bounds of x's "
                            f"dtype ({x.dtype})")
    info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
    lo = min if min is not None else (info.min if info else -np.inf)
    hi = max if max is not None else (info.max if info else np.inf)
    if info is not None:   # a Python bound beyond the dtype clips nothing there
        lo = info.min if not isinstance(lo, Array) and lo < info.min else lo
        hi = info.max if not isinstance(hi, Array) and hi > info.max else hi
    return apply("clip", (x, lo, hi), "real", dtype=x.dtype)   # bounds broadcast with x


def where(condition: Array, x1: Any, x2: Any, /) -> Array:
    """x1 where condition is True, else x2 (arrays or Python scalars, broadcast and promoted)."""
    if not isinstance(condition, Array) or condition.dtype != D.bool_:
        raise TypeError("where: condition must be a bool array of gpuport.xp")
    values = [v for v in (x1, x2) if isinstance(v, Array)]
    if values:
        dtype = D.result_type(*values, *[v for v in (x1, x2) if not isinstance(v, Array)])
    else:
        dtype = _scalar_pair_dtype(x1, x2)
    return apply("where", (condition, x1, x2), "any", dtype=dtype, condition=True)


def _scalar_pair_dtype(a: Any, b: Any) -> np.dtype:
    """The dtype two Python scalars take in where() (the defaults of their kinds)."""
    kinds = {type(a), type(b)}
    if kinds == {bool}:
        return D.bool_
    if bool in kinds:
        raise TypeError("where: a Python bool and a number do not mix")
    if complex in kinds:
        return D.complex64
    return D.DEFAULT_FLOAT if float in kinds else D.DEFAULT_INT


def astype(x: Array, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Array:
    """x converted to `dtype` (NumPy's conversions; integers wrap); copy=False returns x itself where it already
    has that dtype."""
    if not isinstance(x, Array):
        raise TypeError(f"astype takes an array of gpuport.xp, got {type(x).__name__}")
    rt = runtime_of(x, device=device)
    dt = D.check_held(D.dtype_of(dtype), rt)
    if x.dtype.kind == "c" and dt.kind != "c":
        raise TypeError(f"astype: {x.dtype} to {dt} drops the imaginary part: take xp.real first")
    if dt == x.dtype and not copy:
        return x
    t0 = now()
    decision = place(rt, "astype", [x], x.shape)
    if decision.on_host:
        with np.errstate(all="ignore"):
            y = adopt(rt, np.asarray(host_array(x, "astype")).astype(dt), dt)
    else:
        y = lazy(rt, Op(CAST, (node(x, x.shape),), dt), x.shape, 1 + x._fused)
    ran(rt, "astype", decision, t0, [x])
    return y
