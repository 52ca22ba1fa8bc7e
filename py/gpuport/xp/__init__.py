"""gpuport.xp: the array API standard (2024.12) on gpuport's runtime, to the letter, with its departures listed with
their reasons in `tests/xp/array-api-tests-xfails.txt` (the array-api-strict / CuPy way).

Named `xp` because that is what the standard and its users call a namespace: `xp = x.__array_namespace__()`,
scikit-learn's and SciPy's `xp` arguments, array-api-compat's `get_namespace`. Arrays live where the runtime puts
them: a runtime is the device (`xp.asarray(values, device=rt)`, `xp.use(rt)` for the default; natively one is opened
with backend="auto" on first need); the cpu tier is NumPy itself and `auto` places each call as rt.ops calls are.

    from gpuport import xp
    x = xp.asarray(np.random.rand(1000, 64).astype("float32"))
    y = xp.exp(x - xp.max(x, axis=1, keepdims=True))   # element-wise chains are lazy: one fused dispatch
    print(float(xp.sum(y)), xp.stats()["dispatches"])

On a GPU, element-wise functions build a lazy expression that one generated kernel evaluates when something needs
its values (codegen.py, from the one table in exprs.py); views are strides in that kernel, never copies; reductions,
scans, sorts, searches, writes and products are a few parameterised kernels (kernels.py) that read their input
through the same generated functions. Types WGSL cannot hold (float64, int64, uint64, complex) raise
gpuport.UnsupportedDType naming the dtype. Reads go through one function (reads.wait); each has an async twin:
`await xp.read(x)`, and `xp.aio` for the functions whose output's size is data-dependent.

Layer: above runtime, beside models; imports runtime and every layer below it.
"""

from __future__ import annotations

import math as _math
import sys as _sys

from ..runtime import Runtime as _Runtime
from . import aio, linalg
from . import dtypes as _D
from .core import Array, bind, default_runtime, read, use
from .creation import (arange, asarray, empty, empty_like, eye, from_dlpack, full, full_like, linspace, meshgrid, ones,
                       ones_like, tril, triu, zeros, zeros_like)
from .device import stats as _stats
from .dtypes import can_cast, finfo, iinfo, isdtype, result_type
from .elementwise import (abs, acos, acosh, add, asin, asinh, astype, atan, atan2, atanh, bitwise_and,
                          bitwise_invert, bitwise_left_shift, bitwise_or, bitwise_right_shift, bitwise_xor, ceil,
                          clip, conj, copysign, cos, cosh, divide, equal, exp, expm1, floor, floor_divide, greater,
                          greater_equal, hypot, imag, isfinite, isinf, isnan, less, less_equal, log, log1p, log2,
                          log10, logaddexp, logical_and, logical_not, logical_or, logical_xor, maximum, minimum,
                          multiply, negative, nextafter, not_equal, positive, pow, real, reciprocal, remainder, round,
                          sign, signbit, sin, sinh, sqrt, square, subtract, tan, tanh, trunc, where)
from .indexing import getitem, setitem, take, take_along_axis
from .info import __array_namespace_info__
from .linalg import matmul, tensordot, vecdot
from .manipulation import (broadcast_arrays, broadcast_to, concat, expand_dims, flip, matrix_transpose, moveaxis,
                           permute_dims, repeat, reshape, roll, squeeze, stack, tile, unstack)
from .searching import argmax, argmin, nonzero, searchsorted
from .sets import unique_all, unique_counts, unique_inverse, unique_values
from .sorting import argsort, sort
from .statistics import (all, any, count_nonzero, cumulative_prod, cumulative_sum, diff, max, mean, min, prod, std,
                         sum, var)

__array_api_version__ = "2024.12"

e, inf, nan, pi, newaxis = _math.e, _math.inf, _math.nan, _math.pi, None
bool, int8, int16, int32, int64 = _D.bool_, _D.int8, _D.int16, _D.int32, _D.int64
uint8, uint16, uint32, uint64 = _D.uint8, _D.uint16, _D.uint32, _D.uint64
float16, float32, float64, complex64, complex128 = _D.float16, _D.float32, _D.float64, _D.complex64, _D.complex128


def stats(device: _Runtime | None = None) -> dict[str, object]:
    """What the namespace dispatched on `device` (the default runtime when None): dispatches per kernel family, the
    element-wise functions fused into element-wise dispatches, and the generated pipelines compiled."""
    return _stats(device if device is not None else default_runtime()).as_dict()


__all__ = [
    "Array", "aio", "linalg", "read", "stats", "use", "__array_api_version__", "__array_namespace_info__",
    "e", "inf", "nan", "pi", "newaxis",
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
    "complex64", "complex128",
    "arange", "asarray", "empty", "empty_like", "eye", "from_dlpack", "full", "full_like", "linspace", "meshgrid",
    "ones", "ones_like", "tril", "triu", "zeros", "zeros_like",
    "astype", "can_cast", "finfo", "iinfo", "isdtype", "result_type",
    "abs", "acos", "acosh", "add", "asin", "asinh", "atan", "atan2", "atanh", "bitwise_and", "bitwise_invert",
    "bitwise_left_shift", "bitwise_or", "bitwise_right_shift", "bitwise_xor", "ceil", "clip", "conj", "copysign",
    "cos", "cosh", "divide", "equal", "exp", "expm1", "floor", "floor_divide", "greater", "greater_equal", "hypot",
    "imag", "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log1p", "log2", "log10", "logaddexp",
    "logical_and", "logical_not", "logical_or", "logical_xor", "maximum", "minimum", "multiply", "negative",
    "nextafter", "not_equal", "positive", "pow", "real", "reciprocal", "remainder", "round", "sign", "signbit", "sin",
    "sinh", "sqrt", "square", "subtract", "tan", "tanh", "trunc",
    "take", "take_along_axis", "matmul", "matrix_transpose", "tensordot", "vecdot",
    "broadcast_arrays", "broadcast_to", "concat", "expand_dims", "flip", "moveaxis", "permute_dims", "repeat",
    "reshape", "roll", "squeeze", "stack", "tile", "unstack",
    "argmax", "argmin", "count_nonzero", "nonzero", "searchsorted", "where",
    "unique_all", "unique_counts", "unique_inverse", "unique_values", "argsort", "sort",
    "cumulative_prod", "cumulative_sum", "max", "mean", "min", "prod", "std", "sum", "var", "all", "any", "diff",
]

# The array object's operators call these (core.bind: core cannot import the modules that import it).
bind(namespace=_sys.modules[__name__], getitem=getitem, setitem=setitem,
     **{name: globals()[name] for name in __all__ if callable(globals()[name]) and not isinstance(globals()[name], type)})
