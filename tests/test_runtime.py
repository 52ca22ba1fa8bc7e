"""Runtime.tensor: a copy by default, or, asked (copy=False), the array itself where it can be."""

import gpuport as gp
import numpy as np
import pytest


@pytest.fixture(scope="module")
def rt():
    runtime = gp.open_sync(backend="auto")   # auto keeps a tensor on the host until an op on the GPU needs it
    yield runtime
    runtime.close()


def test_a_tensor_copies_its_array_unless_told_it_may_take_it(rt):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    copied = rt.tensor(a)
    a[0, 0] = 100.0   # the caller's array stays the caller's: the tensor does not change
    assert copied.numpy()[0, 0] == 0.0 and not np.shares_memory(copied.host, a) and a.flags.writeable

    taken = rt.tensor(a, copy=False)
    assert taken.host is a and not a.flags.writeable   # given up: read-only now
    np.testing.assert_array_equal(taken.numpy(), a)


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4).T, np.arange(5, dtype=np.float64)],
                         ids=["not-contiguous", "another-dtype"])
def test_an_array_it_cannot_take_is_copied(rt, array):
    t = rt.tensor(array, dtype="float32", copy=False)
    assert not np.shares_memory(t.host, array) and array.flags.writeable
    np.testing.assert_array_equal(t.numpy(), array.astype(np.float32))
