"""Every element-wise function against NumPy (oracle.py), on the cpu and webgpu backends: drawn values of every dtype
it takes (integers over their whole range, so overflow wraps as NumPy's), broadcast shapes, strided views, Python
scalars beside arrays; the special floating-point values (NaN, infinities, signed zeros) exactly; the standard's
dtype rules as errors."""

from __future__ import annotations

import gpuport as gp
import numpy as np
import pytest
from gpuport import xp
from gpuport.xp.elementwise import ACCEPTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from oracle import SPECIALS, assert_same, dtypes_of, elements, expected, shapes, tolerance

UNARY = sorted(n for n in ACCEPTS if n not in ("clip", "where", "imag") and
               getattr(xp, n).__doc__.startswith("The standard's element-wise `" + n + "` (arrays"))
BINARY = sorted(n for n in ACCEPTS if n not in ("clip", "where", "imag") and n not in UNARY)
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", UNARY)
@SETTINGS
@given(data=st.data())
def test_unary_function_matches_numpy(rt, name, data):
    dtype = data.draw(st.sampled_from(dtypes_of(ACCEPTS[name])), label="dtype")
    values = data.draw(hnp.arrays(dtype, shapes(), elements=elements(dtype, name)), label="x")
    got = np.asarray(getattr(xp, name)(xp.asarray(values)))
    assert_same(got, expected(name, values), *tolerance(name, dtype, rt.backend), what=f"{name}({dtype})")


@pytest.mark.parametrize("name", BINARY)
@SETTINGS
@given(data=st.data())
def test_binary_function_broadcasts_and_matches_numpy(rt, name, data):
    dtype = data.draw(st.sampled_from(dtypes_of(ACCEPTS[name])), label="dtype")
    (sa, sb), _ = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4), label="shapes")
    a = data.draw(hnp.arrays(dtype, sa, elements=elements(dtype, name)), label="x1")
    b = data.draw(hnp.arrays(dtype, sb, elements=elements(dtype, name)), label="x2")
    got = np.asarray(getattr(xp, name)(xp.asarray(a), xp.asarray(b)))
    assert_same(got, expected(name, a, b), *tolerance(name, dtype, rt.backend), what=f"{name}({dtype})")


@pytest.mark.parametrize("name", ["add", "multiply", "subtract", "maximum", "less", "pow", "floor_divide", "divide"])
@SETTINGS
@given(data=st.data())
def test_python_scalars_take_the_arrays_dtype(rt, name, data):
    dtype = data.draw(st.sampled_from([d for d in dtypes_of(ACCEPTS[name]) if d.kind != "b"]), label="dtype")
    a = data.draw(hnp.arrays(dtype, shapes(max_dims=2), elements=elements(dtype, name)), label="x")
    value = data.draw(elements(dtype, name).filter(lambda v: v != 0 or name not in ("floor_divide",)), label="s")
    value = int(value) if dtype.kind in "iu" else float(value)
    fn = getattr(xp, name)
    for got, want in ((fn(xp.asarray(a), value), expected(name, a, np.asarray(value, dtype))),
                      (fn(value, xp.asarray(a)), expected(name, np.asarray(value, dtype), a))):
        assert_same(np.asarray(got), np.asarray(want).astype(np.asarray(want).dtype), *tolerance(name, dtype, rt.backend),
                    what=f"{name} with a scalar")


@pytest.mark.parametrize("name", ["add", "exp", "less", "bitwise_xor", "atan2", "where"])
def test_functions_read_strided_and_broadcast_views_without_copies(rt, name):
    r = np.random.default_rng(3)
    dtype = np.dtype(np.int32) if name == "bitwise_xor" else np.dtype(np.float32)
    base = (r.standard_normal((6, 9)) * 4).astype(dtype)
    other = (r.standard_normal((9,)) * 4).astype(dtype)
    x = xp.asarray(base)[1::2, ::-3]
    y = xp.asarray(other)[::-3]
    bx, by = base[1::2, ::-3], other[::-3]
    if name == "exp":
        got, want = xp.exp(x), np.exp(bx)
    elif name == "where":
        got, want = xp.where(x > 0, x, y), np.where(bx > 0, bx, by)
    else:
        got, want = getattr(xp, name)(x, y), expected(name, bx, np.broadcast_to(by, bx.shape))
    assert_same(np.asarray(got), want, *tolerance(name, dtype, rt.backend), what=name)


FLOAT_UNARY = [n for n in UNARY if np.dtype(np.float32) in dtypes_of(ACCEPTS[n])]
FLOAT_BINARY = [n for n in BINARY if np.dtype(np.float32) in dtypes_of(ACCEPTS[n])]


def _check_specials(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """NaN, infinities and zeros exactly (the standard's special cases), finite values within the tolerance."""
    assert_same(got, want, rtol, atol, what)
    zero = (want == 0) & (got == 0)
    assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero])), f"{what}: the sign of a zero differs"


@pytest.mark.parametrize("name", FLOAT_UNARY)
def test_unary_special_values_follow_the_standard(rt, name):
    got = np.asarray(getattr(xp, name)(xp.asarray(SPECIALS)))   # 3e38 too: sin, cos, tan reduce exactly
    _check_specials(got, expected(name, SPECIALS), *tolerance(name, np.dtype(np.float32), rt.backend), name)


@pytest.mark.parametrize("name", FLOAT_BINARY)
def test_binary_special_values_follow_the_standard(rt, name):
    a, b = np.meshgrid(SPECIALS, SPECIALS)
    got = np.asarray(getattr(xp, name)(xp.asarray(a), xp.asarray(b)))
    want = expected(name, a, b)
    if name == "floor_divide":   # a quotient past 2^24 is its rounded division: divide's tolerance (oracle's docstring)
        big = np.abs(want) >= 2.0 ** 24
        _check_specials(got[big], want[big], *tolerance("divide", np.dtype(np.float32), rt.backend), name)
        got, want = got[~big], want[~big]
    _check_specials(got, want, *tolerance(name, np.dtype(np.float32), rt.backend), name)


def test_clip_takes_scalars_arrays_and_none_and_propagates_nan(rt):
    x = np.array([-3.0, -1.0, 0.5, 2.0, np.nan, 7.0], np.float32)
    lo = np.array([-2.0, np.nan, 0.0, 0.0, 0.0, 0.0], np.float32)
    assert_same(np.asarray(xp.clip(xp.asarray(x), -1.0, 1.0)), np.clip(x, -1, 1))
    assert_same(np.asarray(xp.clip(xp.asarray(x), xp.asarray(lo), None)), np.maximum(x, lo))
    ints = np.array([-100, 0, 100], np.int8)
    assert_same(np.asarray(xp.clip(xp.asarray(ints), max=5)), np.minimum(ints, 5))
    assert_same(np.asarray(xp.clip(xp.asarray(ints), -1000, 1000)), ints)   # bounds beyond the dtype clip nothing


def test_the_standards_dtype_rules_raise(rt):
    i8, f32 = xp.asarray(np.array([1, 2], np.int8)), xp.asarray(np.array([1.0, 2.0], np.float32))
    assert xp.add(i8, f32).dtype == xp.float32 and (i8 + 1.5).dtype == xp.float32   # unspecified: the float
    with pytest.raises(TypeError, match="floating data type, not bool"):
        xp.sin(xp.asarray([True]))
    assert_same(np.asarray(xp.sqrt(i8)), np.sqrt(np.array([1, 2], np.float32)))   # integers: the default float
    assert_same(np.asarray(i8 / 2), np.array([0.5, 1.0], np.float32))
    with pytest.raises(TypeError, match="Python float"):
        xp.asarray([True]) + 1.5
    with pytest.raises(OverflowError, match="outside the range of int8"):
        i8 + 300
    with pytest.raises(TypeError, match="bool"):
        xp.logical_and(i8, i8)
    with pytest.raises(TypeError):
        xp.add(i8, "1")
    assert (xp.asarray(np.array([1], np.uint8)) + xp.asarray(np.array([1], np.int8))).dtype == xp.int16
    with pytest.raises(gp.UnsupportedDType, match="int64"):
        xp.asarray(np.array([1], np.uint32)) + xp.asarray(np.array([1], np.int32))


def test_astype_converts_as_numpy_does_and_copy_false_keeps_the_array(rt):
    x = np.array([-2.7, -0.5, 0.0, 1.5, 300.25, 1e9], np.float32)
    a = xp.asarray(x)
    for dt in ("int8", "uint8", "int32", "bool", "float32"):
        with np.errstate(invalid="ignore"):
            want = x.astype(dt)
        got = np.asarray(xp.astype(a, getattr(xp, dt)))
        if dt in ("int8", "uint8"):   # out of range: implementation-defined in the standard; in range: exact
            keep = (x > -129) & (x < 256) & (x >= (0 if dt == "uint8" else -129))
            got, want = got[keep & (x < (128 if dt == "int8" else 256))], want[keep & (x < (128 if dt == "int8" else 256))]
        assert_same(got, want, what=f"astype {dt}")
    assert xp.astype(a, xp.float32, copy=False) is a
    with pytest.raises(gp.UnsupportedDType, match="float64"):
        xp.astype(a, xp.float64)


def test_a_flushed_subnormal_passes_only_where_the_device_flushes():
    from oracle import expect_flushing
    want = np.array([3.3333333e-39, 1.0], np.float32)   # 1 / 3e38: NVIDIA's Vulkan driver reads 0
    got = np.array([0.0, 1.0], np.float32)
    try:
        expect_flushing(True)
        assert_same(got, want)
        with pytest.raises(AssertionError):
            assert_same(np.array([0.0, 0.0], np.float32), want)   # a normal result is never excused
        expect_flushing(False)
        with pytest.raises(AssertionError):
            assert_same(got, want)
    finally:
        expect_flushing(False)
