"""The host pool (xp/hostpool.py): a dead array's host buffer is written again by the next host result of its size,
never while anything can still see that memory, within its bounds, with the values NumPy gives without it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import runtime
from gpuport import xp
from gpuport.xp import hostpool

N = 1 << 18   # 256 KiB of int8 and more: above the pool's threshold for every dtype below


@pytest.fixture
def cpu():
    """The cpu tier (every call on the host) as the default runtime, over an empty pool."""
    xp.use(runtime("cpu"))
    hostpool.clear()
    yield
    hostpool.clear()


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _host_address(x: xp.Array) -> int:
    return _address(x._data.store.host)


def test_a_chain_reuses_the_buffers_of_its_dead_temporaries(cpu):
    v = np.random.default_rng(0).random(N, dtype=np.float32)
    x = xp.asarray(v)
    t = x * 2.0
    freed = _host_address(t)
    del t
    assert hostpool.held() == (1, N * 4)
    y = xp.sin(x)   # the next result of that size is written where the product was
    assert _host_address(y) == freed and hostpool.held() == (0, 0)
    np.testing.assert_array_equal(np.asarray(y), np.sin(v))
    chain = xp.sqrt(xp.abs(xp.sin(x * 2.0 + 1.0) - x / 3.0)) * 0.5
    f = np.float32
    np.testing.assert_array_equal(np.asarray(chain),
                                  np.sqrt(np.abs(np.sin(v * f(2) + f(1)) - v / f(3))) * f(0.5))


@pytest.mark.parametrize("dtype, make, pooled", [
    ("float16", lambda ns, a, b: ns.multiply(a, b), True),
    ("int8", lambda ns, a, b: a * b, True),                         # wraps, as NumPy's int8 product does
    ("int32", lambda ns, a, b: ns.floor_divide(a, b), False),       # not a ufunc here: never written into the pool
    ("float32", lambda ns, a, b: ns.less(a, b), True),              # a bool result
    ("float32", lambda ns, a, b: a + b[:1], True),                  # a broadcast operand
    ("uint16", lambda ns, a, b: ns.bitwise_xor(a, b), True),
])
def test_results_written_into_kept_buffers_equal_numpys(cpu, dtype, make, pooled):
    r = np.random.default_rng(1)
    raw = r.integers(-100, 100, size=(N, 2)) if dtype[0] in "iu" else r.standard_normal((N, 2))
    a_np, b_np = raw[:, 0].astype(dtype), raw[:, 1].astype(dtype)
    b_np[b_np == 0] = 1
    a, b = xp.asarray(a_np), xp.asarray(b_np)
    freed = set()
    for size in (N * a_np.itemsize, N):   # a dead array of the operands' size and one of a bool result's
        dead = xp.asarray(np.ones(size, np.uint8))
        freed.add(_host_address(dead))
        del dead
    expected = make(np, a_np, b_np)
    got = make(xp, a, b)
    assert (_host_address(got) in freed) is pooled
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_memory_anything_else_sees_is_never_reused(cpu):
    v = np.random.default_rng(2).random(N, dtype=np.float32)
    x = xp.asarray(v)
    exported = np.from_dlpack(x * 3.0)   # shares the result's host memory
    user = np.arange(N, dtype=np.float32)
    adopted = xp.asarray(user, copy=False)
    ro = (x + 1.0)._data.host_array()     # a read-only view the namespace hands to NumPy
    del adopted
    seen = {_address(a) for a in (exported, user, ro)}
    assert not seen & _kept()
    for _ in range(3):
        xp.sin(x) * 5.0                  # results that would land in a freed buffer of that size
    np.testing.assert_array_equal(exported, v * np.float32(3))
    np.testing.assert_array_equal(user, np.arange(N, dtype=np.float32))
    np.testing.assert_array_equal(ro, v + np.float32(1))


def _kept() -> set[int]:
    return {_address(owner) for owners in hostpool._free.values() for owner in owners}


def test_the_pool_keeps_within_its_bounds_and_skips_small_arrays(cpu, monkeypatch):
    monkeypatch.setattr(hostpool, "MAX_BYTES", 3 * N * 4)
    small = xp.asarray(np.ones(1000, np.float32))
    del small
    assert hostpool.held() == (0, 0)
    arrays = [xp.asarray(np.full(N, i, np.float32)) for i in range(6)]
    del arrays
    assert hostpool.held() == (3, 3 * N * 4)
    big = xp.asarray(np.ones(4 * N, np.float32))   # over MAX_BYTES alone: not kept
    del big
    assert hostpool.held() == (3, 3 * N * 4)
    monkeypatch.setattr(hostpool, "MAX_BYTES", 1 << 30)
    arrays = [xp.asarray(np.full(N, i, np.float32)) for i in range(6)]
    del arrays
    assert hostpool.held() == (hostpool.MAX_BUFFERS, hostpool.MAX_BUFFERS * N * 4)


def test_arrays_alive_at_exit_leave_quietly():
    script = ("import numpy as np\nfrom gpuport import xp\nimport gpuport as gp\n"
              "xp.use(gp.open_sync(backend='cpu'))\n"
              "kept = [xp.asarray(np.ones(1 << 16, np.float32)) * 2.0 for _ in range(3)]\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Exception ignored" not in done.stderr, done.stderr

