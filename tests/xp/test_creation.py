"""Creation functions against NumPy, on both backends: dtype inference, copies, constants, ranges, eye, linspace,
meshgrid, tril/triu, DLPack both ways."""

from __future__ import annotations

import numpy as np
import pytest
from gpuport import xp
from oracle import assert_same


def test_asarray_infers_the_standards_default_dtypes_and_copies_as_asked(rt):
    assert xp.asarray(True).dtype == xp.bool and xp.asarray(3).dtype == xp.int32
    assert xp.asarray([1.5, 2]).dtype == xp.float32 and xp.asarray([[1, 2], [3, 4]]).shape == (2, 2)
    with pytest.raises(OverflowError):
        xp.asarray(2 ** 40)
    values = np.arange(6, dtype=np.float32)
    shared = xp.asarray(values, copy=False)
    shared[0] = 42.0
    assert values[0] == 42.0                     # copy=False shares NumPy's memory
    copied = xp.asarray(values, copy=True)
    copied[1] = -1.0
    assert values[1] == 1.0
    a = xp.asarray([1, 2, 3])
    assert xp.asarray(a) is a and xp.asarray(a, copy=True) is not a
    with pytest.raises(ValueError):
        xp.asarray(a, dtype=xp.int8, copy=False)
    assert_same(np.asarray(xp.asarray(a, dtype=xp.int8)), np.array([1, 2, 3], np.int8))


def test_constants_and_likes(rt):
    assert_same(np.asarray(xp.zeros((2, 3))), np.zeros((2, 3), np.float32))
    assert_same(np.asarray(xp.ones(4, dtype=xp.uint8)), np.ones(4, np.uint8))
    assert_same(np.asarray(xp.full((2,), 7)), np.full(2, 7, np.int32))
    assert_same(np.asarray(xp.full((2,), True)), np.full(2, True))
    x = xp.asarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    assert_same(np.asarray(xp.full_like(x, -3)), np.full((2, 3), -3, np.int16))
    assert_same(np.asarray(xp.zeros_like(x, dtype=xp.float32)), np.zeros((2, 3), np.float32))
    assert_same(np.asarray(xp.ones_like(x)), np.ones((2, 3), np.int16))
    assert xp.empty((0, 3)).shape == (0, 3) and xp.empty_like(x).dtype == xp.int16
    with pytest.raises(TypeError):
        xp.full(3, 1.5, dtype=xp.int32)


def test_ranges_eye_linspace_meshgrid(rt):
    assert_same(np.asarray(xp.arange(5)), np.arange(5, dtype=np.int32))
    assert_same(np.asarray(xp.arange(1.0, 2.0, 0.25)), np.arange(1.0, 2.0, 0.25).astype(np.float32))
    assert_same(np.asarray(xp.arange(10, 0, -3, dtype=xp.int8)), np.arange(10, 0, -3, dtype=np.int8))
    assert_same(np.asarray(xp.eye(3, 4, k=1)), np.eye(3, 4, k=1, dtype=np.float32))
    assert_same(np.asarray(xp.linspace(0, 1, 5, endpoint=False)), np.linspace(0, 1, 5, endpoint=False).astype(np.float32))
    for indexing in ("xy", "ij"):
        got = xp.meshgrid(xp.arange(3), xp.arange(4), xp.arange(2), indexing=indexing)
        want = np.meshgrid(np.arange(3), np.arange(4), np.arange(2), indexing=indexing)
        for g, w in zip(got, want):
            assert_same(np.asarray(g), w.astype(np.int32))


@pytest.mark.parametrize("k", [-2, 0, 1])
def test_tril_triu_on_stacks(rt, k):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 10
    assert_same(np.asarray(xp.tril(xp.asarray(x), k=k)), np.tril(x, k))
    assert_same(np.asarray(xp.triu(xp.asarray(x), k=k)), np.triu(x, k))


def test_dlpack_both_ways(rt):
    x = np.arange(12, dtype=np.int16).reshape(3, 4)
    a = xp.from_dlpack(x)
    assert_same(np.asarray(a), x)
    back = np.from_dlpack(a * 2)
    assert_same(back, x * 2)
    assert a.__dlpack_device__() == (1, 0)
