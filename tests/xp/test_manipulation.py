"""Manipulation functions against NumPy on both backends: the views (no store copied: the result reads the same
store), and the lazy gathers and concatenations, of stores and of lazy expressions alike."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from gpuport import xp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from conftest import runtime
from oracle import assert_same

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _pair(values, lazy):
    """The array and its NumPy twin; `lazy`: as a lazy expression on the device (x * 1)."""
    a = xp.asarray(values)
    return (a * 1 if lazy else a), values


@pytest.mark.parametrize("lazy", [False, True])
@SETTINGS
@given(data=st.data())
def test_views_match_numpy(rt, lazy, data):
    values = data.draw(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
                                  elements=st.floats(-100, 100, width=32)))
    a, v = _pair(values, lazy)
    perm = data.draw(st.permutations(range(v.ndim)))
    assert_same(np.asarray(xp.permute_dims(a, tuple(perm))), np.transpose(v, perm))
    axis = data.draw(st.integers(-v.ndim, v.ndim - 1))
    assert_same(np.asarray(xp.flip(a, axis=axis)), np.flip(v, axis))
    assert_same(np.asarray(xp.flip(a)), np.flip(v))
    assert_same(np.asarray(xp.expand_dims(a, axis=axis)), np.expand_dims(v, axis))
    assert_same(np.asarray(xp.moveaxis(a, 0, -1)), np.moveaxis(v, 0, -1))
    assert_same(np.asarray(xp.reshape(a, (-1,))), v.reshape(-1))
    assert_same(np.asarray(xp.reshape(xp.permute_dims(a, tuple(perm)), (-1,))), np.transpose(v, perm).reshape(-1))
    target = (2,) + v.shape
    assert_same(np.asarray(xp.broadcast_to(a, target)), np.broadcast_to(v, target))
    if v.ndim >= 2:
        assert_same(np.asarray(xp.matrix_transpose(a)), np.swapaxes(v, -1, -2))
    for i, part in enumerate(xp.unstack(a, axis=0)):
        assert_same(np.asarray(part), v[i])


def test_views_share_the_store_and_reshape_copies_only_when_strides_need(rt):
    a = xp.asarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    for view in (a.T if a.ndim == 2 else xp.permute_dims(a, (2, 1, 0)), xp.flip(a, axis=1), a[:, 1:, ::2],
                 xp.expand_dims(a, axis=0), xp.squeeze(a[:1], axis=0), xp.reshape(a, (6, 4))):
        assert view._data.store is a._data.store
    with pytest.raises(ValueError, match="copy"):
        xp.reshape(xp.permute_dims(a, (2, 1, 0)), (24,), copy=False)
    assert xp.reshape(xp.permute_dims(a, (2, 1, 0)), (24,))._data.store is not a._data.store
    with pytest.raises(ValueError):
        xp.squeeze(a, axis=1)
    with pytest.raises(ValueError):
        xp.reshape(a, (5, 5))


def test_a_host_copy_of_strided_values_is_made_once():
    """On the host, reshape's and asarray(copy=True)'s copy of a transposed view is one row-major array (NumPy's
    copy keeps a transpose's layout, which was then copied again to be row-major: twice the result's memory)."""
    xp.use(runtime("cpu"))
    v = np.random.default_rng(3).random((512, 300), dtype=np.float32)
    a = xp.asarray(v)
    for make, want in ((lambda: xp.reshape(a.T, (-1,)), v.T.reshape(-1)), (lambda: xp.asarray(a.T, copy=True), v.T),
                       (lambda: xp.reshape(a.T, (300, 512), copy=True), v.T)):
        tracemalloc.start()   # NumPy reports its allocations there
        y = make()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1.5 * v.nbytes, peak
        assert_same(np.asarray(y), want)


@pytest.mark.parametrize("lazy", [False, True])
def test_concat_stack_roll_tile_repeat(rt, lazy):
    r = np.random.default_rng(11)
    v1, v2 = r.integers(-50, 50, (3, 4)).astype(np.int16), r.integers(-50, 50, (2, 4)).astype(np.int8)
    a1, _ = _pair(v1, lazy)
    a2, _ = _pair(v2, lazy)
    assert_same(np.asarray(xp.concat([a1, a2])), np.concatenate([v1, v2.astype(np.int16)]))
    assert_same(np.asarray(xp.concat([a1, a1, a1], axis=1)), np.concatenate([v1, v1, v1], 1))
    assert_same(np.asarray(xp.concat([a1, a2], axis=None)), np.concatenate([v1.ravel(), v2.ravel().astype(np.int16)]))
    many = [xp.asarray(v1 + i) for i in range(9)]    # more stores than one kernel binds: joined in groups
    assert_same(np.asarray(xp.concat(many, axis=0)), np.concatenate([v1 + i for i in range(9)]))
    assert_same(np.asarray(xp.stack([a1, a1 * 2], axis=1)), np.stack([v1, v1 * 2], 1))
    for shift, axis in ((1, 0), (-3, 1), ((1, 2), (0, 1)), (5, None)):
        assert_same(np.asarray(xp.roll(a1, shift, axis=axis)), np.roll(v1, shift, axis))
    assert_same(np.asarray(xp.tile(a1, (2, 1, 3))), np.tile(v1, (2, 1, 3)))
    assert_same(np.asarray(xp.repeat(a1, 2, axis=1)), np.repeat(v1, 2, 1))
    counts = xp.asarray(np.array([0, 2, 1], np.int32))
    assert_same(np.asarray(xp.repeat(a1, counts, axis=0)), np.repeat(v1, [0, 2, 1], 0))
    assert_same(np.asarray(xp.repeat(a1, 3)), np.repeat(v1, 3))
    b1, b2 = xp.broadcast_arrays(a1, xp.asarray(np.arange(4, dtype=np.int16)))
    assert b1.shape == b2.shape == (3, 4)
