"""Reductions, statistics, cumulative sums and products, utilities, searching, sorting and sets against NumPy on both
backends: over any axes, of views and of fused chains, the standard's result dtypes, NaN propagating, and the long
rows the reduce kernel splits in two passes.

Tolerances: a float32 sum of n terms in another order than NumPy's pairwise one errs by at most ~n u sum|x| (u =
2**-24); these draw n <= 256 values of |x| <= 100, so rtol 1e-4 of the sum of |x| bounds every float reduction's
error (mean, var, std: the same bound scaled by their own arithmetic); integer ones are exact (wrapping). A float
product holding a zero beside factors that overflow float32 together is 0 or NaN by the order of its products: not
compared."""

from __future__ import annotations

import numpy as np
import pytest
from gpuport import xp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from oracle import assert_same

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [np.dtype(t) for t in (np.int8, np.uint8, np.int32, np.uint32, np.float32)]


def _close(got, want, scale, what=""):
    got = np.asarray(got)
    assert got.shape == np.shape(want) and got.dtype == np.asarray(want).dtype, (what, got.dtype, np.asarray(want).dtype)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale + 1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@SETTINGS
@given(data=st.data())
def test_reductions_over_any_axes_match_numpy(rt, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    elements = st.floats(-100, 100, width=32) if dtype.kind == "f" else None
    v = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
                             elements=elements))
    axis = data.draw(st.one_of(st.none(), st.integers(0, v.ndim - 1),
                               st.sets(st.integers(0, v.ndim - 1), min_size=1).map(tuple)))
    keep = data.draw(st.booleans())
    a = xp.asarray(v)
    scale = float(np.abs(v.astype(np.float64)).sum()) + 1
    out = {"i": np.int32, "u": np.uint32, "f": np.float32}[dtype.kind]
    with np.errstate(all="ignore"):
        _close(xp.sum(a, axis=axis, keepdims=keep), np.sum(v, axis=axis, keepdims=keep, dtype=out), scale, "sum")
        want = np.prod(v, axis=axis, keepdims=keep, dtype=out)
        got = np.asarray(xp.prod(a, axis=axis, keepdims=keep))
        if dtype.kind == "f":
            # a zero beside factors whose product passes float32's range: the order decides between 0 and 0 * inf
            # (NaN), and both are right; such elements are not compared
            nonzero = np.where(v == 0, 1.0, np.abs(v.astype(np.float64)))
            free = (v == 0).any(axis=axis, keepdims=keep) & (
                np.prod(nonzero, axis=axis, keepdims=keep) > np.finfo(np.float32).max)
            got = np.where(free, want, got).astype(got.dtype)
        _close(got, want, float(np.abs(np.prod(v.astype(np.float64), axis=axis)).max(initial=1)), "prod")
        _close(xp.max(a, axis=axis, keepdims=keep), np.max(v, axis=axis, keepdims=keep), 1, "max")
        _close(xp.min(a, axis=axis, keepdims=keep), np.min(v, axis=axis, keepdims=keep), 1, "min")
        _close(xp.any(a, axis=axis, keepdims=keep), np.any(v, axis=axis, keepdims=keep), 1, "any")
        _close(xp.all(a, axis=axis, keepdims=keep), np.all(v, axis=axis, keepdims=keep), 1, "all")
        _close(xp.count_nonzero(a, axis=axis, keepdims=keep),
               np.count_nonzero(v, axis=axis, keepdims=keep).astype(np.int32), 1, "count_nonzero")
        if dtype.kind == "f":
            _close(xp.mean(a, axis=axis, keepdims=keep), np.mean(v, axis=axis, keepdims=keep), scale / v.size, "mean")
            _close(xp.var(a, axis=axis, keepdims=keep, correction=1),
                   np.var(v, axis=axis, keepdims=keep, ddof=1), scale * scale / v.size, "var")
            _close(xp.std(a, axis=axis, keepdims=keep), np.std(v, axis=axis, keepdims=keep), scale, "std")


def test_reductions_of_fused_chains_and_views_and_nan(rt):
    v = np.random.default_rng(5).standard_normal((7, 300)).astype(np.float32)
    a = xp.asarray(v)
    _close(xp.sum(xp.exp(a[:, ::3]) * 2, axis=1), np.sum(np.exp(v[:, ::3]) * 2, axis=1), 5000, "fused")
    w = v.copy()
    w[2, 5] = np.nan
    assert_same(np.asarray(xp.max(xp.asarray(w), axis=1)), np.max(w, axis=1))
    assert_same(np.asarray(xp.argmax(xp.asarray(w), axis=1)), np.argmax(w, axis=1).astype(np.int32))
    assert np.isnan(float(xp.mean(xp.asarray(w))))
    assert np.isnan(float(xp.mean(xp.zeros((0,)))))
    with pytest.raises(ValueError):
        xp.max(xp.zeros((3, 0)), axis=1)
    with pytest.raises(TypeError):
        xp.mean(xp.asarray([1, 2]))
    with pytest.raises(TypeError):
        xp.sum(xp.asarray([True, False]))


def test_long_rows_reduce_in_two_passes(rt):
    v = np.random.default_rng(6).standard_normal(100_003).astype(np.float32)
    v[71_234] = 9.0
    a = xp.asarray(v)
    _close(xp.sum(a), np.sum(v), np.abs(v).sum(), "sum")
    assert int(xp.argmax(a)) == 71_234 and float(xp.max(a)) == 9.0
    assert int(xp.count_nonzero(a > 0)) == int((v > 0).sum())


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float32])
def test_cumulative_sums_and_products(rt, dtype):
    v = (np.random.default_rng(7).integers(-3, 4, (5, 600)) % (256 if dtype == np.uint16 else 1000)).astype(dtype)
    a = xp.asarray(v)
    out = {np.int8: np.int32, np.uint16: np.uint32, np.float32: np.float32}[dtype]
    with np.errstate(all="ignore"):
        _close(xp.cumulative_sum(a, axis=1), np.cumsum(v, axis=1, dtype=out), 3000, "cumsum")
        _close(xp.cumulative_sum(a, axis=0, include_initial=True),
               np.concatenate([np.zeros((1, 600), out), np.cumsum(v, axis=0, dtype=out)]), 30, "initial")
        small = a[:, :6]
        _close(xp.cumulative_prod(small, axis=1), np.cumprod(v[:, :6], axis=1, dtype=out), 1000, "cumprod")
    with pytest.raises(ValueError):
        xp.cumulative_sum(a)


def test_diff(rt):
    v = np.random.default_rng(8).integers(-9, 9, (4, 6)).astype(np.int16)
    a = xp.asarray(v)
    assert_same(np.asarray(xp.diff(a)), np.diff(v))
    assert_same(np.asarray(xp.diff(a, axis=0, n=2)), np.diff(v, axis=0, n=2))
    p = xp.asarray(np.ones((4, 1), np.int16))
    ones = np.ones((4, 1), np.int16)
    assert_same(np.asarray(xp.diff(a, prepend=p, append=p)), np.diff(v, prepend=ones, append=ones))


@SETTINGS
@given(v=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
                    elements=st.sampled_from([np.nan, -0.0, 0.0, 1.0, -2.0, 3.5, np.inf, -np.inf])),
       descending=st.booleans())
def test_sort_and_argsort_are_stable_with_nan_last(rt, v, descending):
    a = xp.asarray(v)
    order = np.argsort(v, axis=-1, kind="stable") if not descending else \
        v.shape[-1] - 1 - np.flip(np.argsort(np.flip(v, -1), axis=-1, kind="stable"), -1)
    assert_same(np.asarray(xp.argsort(a, descending=descending)), order.astype(np.int32))
    want = np.sort(v, axis=-1) if not descending else np.flip(np.sort(v, axis=-1), -1)
    got = np.asarray(xp.sort(a, descending=descending))
    np.testing.assert_array_equal(got, want)
    if v.ndim == 2:
        assert_same(np.asarray(xp.argsort(a, axis=0)), np.argsort(v, axis=0, kind="stable").astype(np.int32))


def test_argmax_argmin_searchsorted_nonzero(rt):
    v = np.array([[3, 7, 7, -1], [0, 0, 2, 2]], np.int16)
    a = xp.asarray(v)
    assert_same(np.asarray(xp.argmax(a, axis=1)), np.argmax(v, 1).astype(np.int32))
    assert_same(np.asarray(xp.argmin(a, axis=0, keepdims=True)), np.argmin(v, 0, keepdims=True).astype(np.int32))
    assert int(xp.argmax(a)) == int(np.argmax(v))
    s = np.array([-np.inf, -1.0, 0.0, 0.0, 2.5, np.nan], np.float32)
    q = np.array([[0.0, -0.0, 3.0], [np.nan, -5.0, 2.5]], np.float32)
    for side in ("left", "right"):
        assert_same(np.asarray(xp.searchsorted(xp.asarray(s), xp.asarray(q), side=side)),
                    np.searchsorted(s, q, side=side).astype(np.int32))
    perm = np.array([3, 0, 2, 1], np.int32)
    assert_same(np.asarray(xp.searchsorted(xp.asarray(s[:4][perm]), xp.asarray(q), sorter=xp.asarray(np.argsort(s[:4][perm]).astype(np.int32)))),
                np.searchsorted(s[:4], q).astype(np.int32))
    for got, want in zip(xp.nonzero(a), np.nonzero(v)):
        assert_same(np.asarray(got), want.astype(np.int32))
    with pytest.raises(ValueError):
        xp.nonzero(xp.asarray(1))


def test_unique_functions_match_numpy_with_each_nan_distinct(rt):
    v = np.array([[3.0, np.nan, 1.0], [3.0, -0.0, 0.0], [np.nan, 1.0, 7.0]], np.float32)
    a = xp.asarray(v)
    vals, idx, inv, counts = np.unique(v.ravel(), return_index=True, return_inverse=True, return_counts=True,
                                       equal_nan=False)
    u = xp.unique_all(a)
    np.testing.assert_array_equal(np.asarray(u.values), vals)
    assert_same(np.asarray(u.indices), idx.astype(np.int32))
    assert_same(np.asarray(u.inverse_indices), inv.reshape(v.shape).astype(np.int32))
    assert_same(np.asarray(u.counts), counts.astype(np.int32))
    c = xp.unique_counts(xp.asarray(np.array([5, 5, 1, 5], np.uint8)))
    assert_same(np.asarray(c.values), np.array([1, 5], np.uint8))
    assert_same(np.asarray(c.counts), np.array([1, 3], np.int32))
    i = xp.unique_inverse(xp.asarray(np.array([True, False, True])))
    assert_same(np.asarray(i.inverse_indices), np.array([1, 0, 1], np.int32))
    assert xp.unique_values(xp.zeros((0,))).shape == (0,)
