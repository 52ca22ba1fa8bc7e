"""NumPy as the oracle of the namespace's tests: values drawn per dtype (the special floating-point values included),
the standard's departures from NumPy, and comparisons that check NaN, infinities and signed zeros exactly.

Tolerances on the GPU (float32; u = 2**-24): WGSL bounds its built-ins' accuracy (WGSL spec, "Floating Point
Accuracy"): + - * and comparisons are correctly rounded: exact, as NumPy's; division and sqrt 2.5 ULP; exp, exp2 3 +
2|x| ULP; log, log2 3 ULP (2**-21 absolute in [0.5, 2]); sin and cos 2**-11 absolute in [-pi, pi] (larger arguments
are reduced exactly first: exprs.xp_reduce); atan, atan2 4096 ULP; everything else is inherited from the formula
that computes it. So: exact functions are compared exactly, the
rest with rtol 1e-3 and atol 1e-5 on inputs in the domains drawn below (4096 ULP is 2.4e-4 relative; the
inherited formulas compound a few such errors); float16 with its own epsilon in place of float32's. floor_divide is
exact where its quotient is below 2^24; past it every float32 is an integer and the floor is the rounded quotient,
which WGSL's division gives to 2.5 ULP (an H200: 3e38 // -7 read one ULP from NumPy's), so there divide's tolerance.

WGSL lets a device flush subnormal results to zero, and NVIDIA's Vulkan driver does (an H100: 1e-45 * 1 read 0,
1 / 3e38 read 0). Where the runtime's device flushes (`flushes_subnormals`, probed once per runtime and set by the rt
fixture), a result NumPy gives as a nonzero subnormal may read as a zero; everything else is compared as above.
"""

from __future__ import annotations

import numpy as np
from gpuport import xp
from gpuport.xp.elementwise import ACCEPTS
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

TINY = float(np.finfo(np.float32).tiny)
_FLUSH = {"on": False}


def flushes_subnormals(rt) -> bool:
    """Whether `rt` flushes a subnormal float32 result to zero (WGSL allows it): 1e-38 * 0.5 reads 0."""
    return float(np.asarray(xp.asarray(np.array([1e-38], np.float32), device=rt) * 0.5)[0]) == 0.0


def expect_flushing(on: bool) -> None:
    """Accept a zero where NumPy's result is a nonzero subnormal (the rt fixture: the runtime's device flushes)."""
    _FLUSH["on"] = on


HELD = [np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.float32)]
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.5, 1e-30, 3e38, -7.0, 10.0],
                    np.float32)
EXACT = {"abs", "add", "subtract", "multiply", "negative", "positive", "square", "sign", "maximum", "minimum", "clip",
         "ceil", "floor", "trunc", "round", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
         "isnan", "isinf", "isfinite", "signbit", "logical_and", "logical_or", "logical_xor", "logical_not",
         "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_invert", "bitwise_left_shift", "bitwise_right_shift",
         "copysign", "nextafter", "conj", "real", "where", "remainder", "floor_divide"}
NUMPY_NAMES = {"acos": "arccos", "acosh": "arccosh", "asin": "arcsin", "asinh": "arcsinh", "atan": "arctan",
               "atanh": "arctanh", "atan2": "arctan2", "pow": "power", "bitwise_invert": "invert",
               "bitwise_left_shift": "left_shift", "bitwise_right_shift": "right_shift", "divide": "true_divide"}
CATEGORIES = {
    "numeric": lambda d: d.kind in "iuf", "floating": lambda d: d.kind == "f", "real floating": lambda d: d.kind == "f",
    "real": lambda d: d.kind in "iuf", "integer": lambda d: d.kind in "iu", "integer or bool": lambda d: d.kind in "iub",
    "bool": lambda d: d.kind == "b", "any": lambda d: True, "complex": lambda d: False,
}


def dtypes_of(category: str) -> list[np.dtype]:
    return [d for d in HELD if CATEGORIES[category](d)]


def elements(dtype: np.dtype, name: str = "") -> st.SearchStrategy:
    """Values of `dtype` for function `name`: the whole range of integers (so overflow wraps), floats within the
    domain where the result is not overflowing or chaotic in float32, shifts by less than twice the width."""
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if name.startswith("bitwise_") and "shift" in name:
            return st.integers(0, 2 * info.bits)
        if name == "pow":
            return st.integers(max(info.min, -3), min(info.max, 9))
        return st.integers(int(info.min), int(info.max))
    bound = {"tan": 1.5, "exp": 80.0, "expm1": 80.0, "sinh": 80.0, "cosh": 80.0,
             "pow": 8.0}.get(name, 1e6)
    return st.floats(-bound, bound, width=32, allow_subnormal=False)


def numpy_of(name: str):
    return getattr(np, NUMPY_NAMES.get(name, name))


def floats_integers(name: str) -> bool:
    """Functions the standard asks floats of, which compute integers as the default float (float32)."""
    return name == "divide" or ACCEPTS.get(name) in ("floating", "real floating")


def expected(name: str, *args: np.ndarray) -> np.ndarray:
    """NumPy's answer, with the standard's where it departs: floor division by an infinity or zero is floor(a / b);
    integers to negative powers truncate 1 / a**|b|; sign(+-0) is +0; integers given to a float function compute
    as float32 (NumPy would widen them to float64)."""
    if floats_integers(name):
        args = tuple(a.astype(np.float32) if a.dtype.kind in "iu" else a for a in args)
    with np.errstate(all="ignore"):
        if name == "floor_divide" and args[0].dtype.kind == "f":
            a, b = args
            out = np.floor_divide(a, b)
            odd = (~np.isfinite(a) | ~np.isfinite(b) | (b == 0)) & ~np.isnan(a) & ~np.isnan(b)
            return np.where(odd, np.floor(a / b), out).astype(a.dtype)
        if name == "pow" and args[0].dtype.kind in "iu" and args[1].dtype.kind == "i":
            a, b = args
            unit = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 1, -1, 1), 0))
            return np.where(b < 0, unit, np.power(a, np.where(b < 0, 0, b))).astype(a.dtype)
        if name == "sign" and args[0].dtype.kind == "f":
            return np.where(args[0] == 0, np.zeros((), args[0].dtype), np.sign(args[0]))
        if name == "clip":
            return np.minimum(np.maximum(args[0], args[1]), args[2])
        if name == "where":
            return np.where(*args)
        return numpy_of(name)(*args)


def assert_same(got: np.ndarray, want: np.ndarray, rtol: float = 0.0, atol: float = 0.0, what: str = "") -> None:
    """Shapes and dtypes equal; NaN where NaN, infinities equal, zeros of the same sign (exact comparisons); finite
    values within atol + rtol * |want|."""
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind != "f":
        bad = got != want
        assert not bad.any(), f"{what}: {int(bad.sum())} differ, e.g. got {got[bad][:5]} want {want[bad][:5]}"
        return
    g, w = got.astype(np.float64), want.astype(np.float64)
    if _FLUSH["on"]:
        g = np.where((g == 0) & (w != 0) & (np.abs(w) < TINY), w, g)
    assert np.array_equal(np.isnan(g), np.isnan(w)), f"{what}: NaN where not expected: got {got} want {want}"
    inf = np.isinf(w)
    assert np.array_equal(g[inf], w[inf]), f"{what}: infinities differ: got {g[inf]} want {w[inf]}"
    finite = np.isfinite(w)
    if rtol == 0 and atol == 0:
        zeros = finite & (w == 0)
        assert np.array_equal(np.signbit(g[zeros]), np.signbit(w[zeros])), f"{what}: signed zeros differ"
    err = np.abs(g[finite] - w[finite])
    bound = atol + rtol * np.abs(w[finite])
    assert (err <= bound).all(), f"{what}: max error {err.max():.3g} beyond atol {atol} + rtol {rtol}; " \
                                 f"got {got[finite][err > bound][:5]} want {want[finite][err > bound][:5]}"


def tolerance(name: str, dtype: np.dtype, backend: str) -> tuple[float, float]:
    """(rtol, atol) for `name` on `backend` (see the module docstring)."""
    if floats_integers(name) and dtype.kind in "iu":
        dtype = np.dtype(np.float32)
    if backend == "cpu" or name in EXACT or dtype.kind != "f":
        return 0.0, 0.0
    scale = 1.0 if dtype == np.float32 else float(np.finfo(np.float16).eps / np.finfo(np.float32).eps)
    if name in ("divide", "reciprocal", "sqrt", "hypot"):
        return 3e-7 * scale, 0.0
    return 1e-3 * min(scale, 8.0), 1e-5 * scale


def shapes(min_dims: int = 0, max_dims: int = 3) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=5)
