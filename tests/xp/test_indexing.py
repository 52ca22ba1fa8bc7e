"""Indexing against NumPy on both backends: basic indexing (views), integer arrays (NumPy's placement of the index
axes), boolean masks, take and take_along_axis, and writes in place: through views, by integer arrays, by masks, and
with lazy arrays made before the write keeping the values they were made from."""

from __future__ import annotations

import numpy as np
import pytest
from gpuport import xp
from hypothesis import HealthCheck, given, settings
from hypothesis.extra import numpy as hnp
from oracle import assert_same

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
V = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)


@SETTINGS
@given(idx=hnp.basic_indices((4, 5, 6), allow_newaxis=True, allow_ellipsis=True))
def test_basic_indexing_is_a_view_matching_numpy(rt, idx):
    a = xp.asarray(V)
    got = a[idx]
    assert_same(np.asarray(got), V[idx])
    assert_same(np.asarray((a * 2)[idx]), (V * 2)[idx])   # a lazy expression indexed: its leaves are
    if isinstance(got._data, type(a._data)):
        assert got._data.store is a._data.store


@pytest.mark.parametrize("key", [
    lambda i: (i,), lambda i: (i, 2), lambda i: (slice(None), i), lambda i: (0, slice(1, None), i),
    lambda i: (i, slice(None), i), lambda i: (Ellipsis, i), lambda i: (None, i, 1), lambda i: (i[:, None], i),
])
def test_integer_array_indexing_places_axes_as_numpy(rt, key):
    idx = np.array([[0, -1], [3, 2]], np.int32)
    a = xp.asarray(V)
    k_np = key(idx)
    k_xp = tuple(xp.asarray(k) if isinstance(k, np.ndarray) else k for k in k_np)
    assert_same(np.asarray(a[k_xp]), V[k_np])
    assert_same(np.asarray((a + 1)[k_xp]), (V + 1)[k_np])


def test_boolean_masks_select_as_numpy(rt):
    a = xp.asarray(V)
    m = V % 3 == 0
    assert_same(np.asarray(a[xp.asarray(m)]), V[m])
    m2 = V[:, :, 0] > 40
    assert_same(np.asarray(a[xp.asarray(m2)]), V[m2])
    assert_same(np.asarray(a[xp.asarray(V > 1000)]), V[V > 1000])
    assert a[True].shape == (1, 4, 5, 6) and a[False].shape == (0, 4, 5, 6)
    with pytest.raises(IndexError):
        a[xp.asarray(m2[:2])]


def test_take_and_take_along_axis(rt):
    a = xp.asarray(V)
    i = np.array([4, 0, -2], np.int32)
    assert_same(np.asarray(xp.take(a, xp.asarray(i), axis=1)), np.take(V, i, axis=1))
    assert_same(np.asarray(xp.take(xp.asarray(V[0, 0]), xp.asarray(i))), np.take(V[0, 0], i))
    order = np.argsort(-V, axis=2).astype(np.int32)
    assert_same(np.asarray(xp.take_along_axis(a, xp.asarray(order), axis=2)), np.take_along_axis(V, order, 2))
    with pytest.raises(ValueError):
        xp.take(a, xp.asarray(i))


def test_writes_in_place_through_views_arrays_and_masks(rt):
    v = V.copy()
    a = xp.asarray(v)
    view = a[1:3, ::2]
    before = a * 1                    # lazy, made before the writes: keeps the old values
    a[0] = 5.0
    v[0] = 5.0
    a[1:3, ::2, 0] = xp.asarray(np.array([-1.0, -2.0, -3.0], np.float32))
    v[1:3, ::2, 0] = [-1.0, -2.0, -3.0]
    assert_same(np.asarray(view), v[1:3, ::2])        # the view sees writes to its store
    idx = xp.asarray(np.array([3, 0], np.int32))
    a[idx, 1] = 9.0
    v[[3, 0], 1] = 9.0
    a[a > 100] = 0.0
    v[v > 100] = 0.0
    a[a == 9.0] = xp.asarray(np.arange(12, dtype=np.float32))
    v[v == 9.0] = np.arange(12, dtype=np.float32)
    assert_same(np.asarray(a), v)
    assert_same(np.asarray(before), V)
    a[...] = a[::-1]                  # the value reads the written store: read from a copy
    assert_same(np.asarray(a), v[::-1])
    ints = xp.asarray(np.zeros(3, np.int32))
    with pytest.raises(TypeError):
        ints[0] = xp.asarray(np.ones(1, np.float32))   # a float value does not fit an integer array
    with pytest.raises(IndexError):
        a[7]


def test_in_place_operators_keep_dtype_and_shape(rt):
    a = xp.asarray(np.arange(6, dtype=np.int8))
    view = a[::2]
    a += 120
    assert_same(np.asarray(a), (np.arange(6) + 120).astype(np.int8))   # wraps as NumPy's int8
    assert_same(np.asarray(view), ((np.arange(6) + 120).astype(np.int8))[::2])
    lazy = a * 2
    lazy -= 1
    assert_same(np.asarray(lazy), (((np.arange(6) + 120).astype(np.int8)) * 2 - 1).astype(np.int8))
    with pytest.raises(ValueError):
        a += xp.ones((2, 6), dtype=xp.int8)
