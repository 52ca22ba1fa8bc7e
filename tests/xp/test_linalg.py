"""Products and the linalg extension against NumPy on both backends: matmul (float32 through rt.ops.matmul, the
other dtypes through the generated product; 1-D operands, broadcast stacks, transposed operands), tensordot, vecdot,
the device's norms, traces, diagonals, outer and cross, and the host factorisations, placed on the host and said so.

Tolerances: float32 products of K terms in another order than NumPy's: Higham's bound K u (|a| @ |b|), doubled;
the factorisations compare invariants (reconstruction, orthogonality) at 1e-4, LAPACK's float32 working precision."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from gpuport import xp
from conftest import runtime
from oracle import assert_same

U = 2.0 ** -24


def _product_close(got, a, b):
    want = np.matmul(a, b)
    bound = 2 * a.shape[-1] * U * np.matmul(np.abs(a), np.abs(b)) + 1e-6
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert (np.abs(got - want) <= bound).all(), np.abs(got - want).max()


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((7,), (7, 3)), ((5, 7), (7,)), ((2, 1, 5, 7), (3, 7, 4)),
                                   ((4, 6, 7), (7, 2)), ((7,), (7,))])
def test_matmul_shapes_and_broadcasting(rt, sa, sb):
    r = np.random.default_rng(9)
    a, b = r.standard_normal(sa).astype(np.float32), r.standard_normal(sb).astype(np.float32)
    _product_close(xp.asarray(a) @ xp.asarray(b), a, b)


def test_matmul_of_a_transpose_and_of_integers_and_the_device_ran_it(rt):
    r = np.random.default_rng(10)
    a, b = r.standard_normal((6, 5)).astype(np.float32), r.standard_normal((4, 5)).astype(np.float32)
    before = rt.info()["ran"].get("matmul", {}).get(rt.backend, 0)
    _product_close(xp.asarray(a) @ xp.asarray(b).T, a, b.T)
    if rt.backend == "webgpu":
        assert rt.info()["ran"]["matmul"]["webgpu"] == before + 1
    i, j = r.integers(-128, 127, (3, 40)).astype(np.int8), r.integers(-128, 127, (40, 2)).astype(np.int8)
    assert_same(np.asarray(xp.asarray(i) @ xp.asarray(j)), np.matmul(i, j))   # int8 wraps, as NumPy's
    u, w = r.integers(0, 9, (2, 3, 4)).astype(np.uint32), r.integers(0, 9, (4, 5)).astype(np.uint32)
    assert_same(np.asarray(xp.asarray(u) @ xp.asarray(w)), np.matmul(u, w))
    with pytest.raises(ValueError):
        xp.asarray(a) @ xp.asarray(a)


def test_tensordot_vecdot_outer_cross(rt):
    r = np.random.default_rng(12)
    a, b = r.standard_normal((3, 4, 5)).astype(np.float32), r.standard_normal((5, 4, 2)).astype(np.float32)
    want = np.tensordot(a, b, axes=([1, 2], [1, 0]))
    np.testing.assert_allclose(np.asarray(xp.tensordot(xp.asarray(a), xp.asarray(b), axes=([1, 2], [1, 0]))), want,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.tensordot(xp.asarray(a[0]), xp.asarray(a[0]).T, axes=1)), a[0] @ a[0].T,
                               rtol=1e-4, atol=1e-4)
    v = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    assert_same(np.asarray(xp.vecdot(xp.asarray(v), xp.asarray(v[1]))), (v * v[1]).sum(-1).astype(np.int32))
    assert_same(np.asarray(xp.linalg.outer(xp.asarray(v[0]), xp.asarray(v[1]))), np.outer(v[0], v[1]).astype(np.int32))
    assert_same(np.asarray(xp.linalg.cross(xp.asarray(v), xp.asarray(v[::-1]))), np.cross(v, v[::-1]))


def test_device_norms_traces_diagonals(rt):
    r = np.random.default_rng(13)
    m = r.standard_normal((2, 4, 5)).astype(np.float32)
    a = xp.asarray(m)
    for ord in (2, 1, np.inf, -np.inf, 0, 3):
        np.testing.assert_allclose(np.asarray(xp.linalg.vector_norm(a, axis=-1, ord=ord)),
                                   np.linalg.norm(m, ord=ord, axis=-1), rtol=1e-5, atol=1e-6)
    for ord in ("fro", 1, -1, np.inf, -np.inf, 2, "nuc"):
        np.testing.assert_allclose(np.asarray(xp.linalg.matrix_norm(a, ord=ord)), np.linalg.norm(m, ord=ord, axis=(-2, -1)),
                                   rtol=1e-4, atol=1e-5)
    for k in (-1, 0, 2):
        assert_same(np.asarray(xp.linalg.diagonal(a, offset=k)), np.diagonal(m, k, -2, -1))
        np.testing.assert_allclose(np.asarray(xp.linalg.trace(a, offset=k)), np.trace(m, k, -2, -1), rtol=1e-5, atol=1e-6)
    assert_same(np.asarray(xp.linalg.matrix_transpose(a)), np.swapaxes(m, -1, -2))


@pytest.mark.parametrize("shape", [(2000, 64), (3, 7), (1, 1), (2, 5, 4)])
def test_svd_equals_numpys_for_tall_wide_and_stacked_matrices(rt, shape):
    """SciPy's gesdd for a finite matrix (where installed), NumPy's for stacks: the same factorisation either way.
    Singular values to 1e-4 of the largest (float32 LAPACK, two builds of it); vectors up to their sign."""
    m = np.random.default_rng(15).standard_normal(shape).astype(np.float32)
    u, s, vh = (np.asarray(t) for t in xp.linalg.svd(xp.asarray(m), full_matrices=False))
    s_np = np.linalg.svd(m, compute_uv=False)
    assert u.shape[-1] == s.shape[-1] == vh.shape[-2] == min(shape[-2:]) and u.dtype == np.float32
    np.testing.assert_allclose(s, s_np, rtol=1e-4, atol=1e-4 * float(s_np.max()))
    np.testing.assert_allclose((u * s[..., None, :]) @ vh, m, atol=1e-4 * float(s_np.max()))
    full = xp.linalg.svd(xp.asarray(m))
    assert full.U.shape == shape[:-1] + (shape[-2],) and full.Vh.shape == shape[:-2] + (shape[-1],) * 2


def test_svd_of_what_is_not_finite_fails_as_numpys(rt):
    m = np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.svd(m)
    with pytest.raises(np.linalg.LinAlgError):
        xp.linalg.svd(xp.asarray(m))


def test_host_factorisations_are_placed_on_the_host_and_said_so(rt):
    r = np.random.default_rng(14)
    m = r.standard_normal((5, 4)).astype(np.float32)
    spd = (m.T @ m + 4 * np.eye(4)).astype(np.float32)
    a, s = xp.asarray(m), xp.asarray(spd)
    svds = rt.info()["ran"].get("xp.linalg.svd", {}).get("cpu", 0)   # the session's runtime ran others before
    u, sv, vh = xp.linalg.svd(a, full_matrices=False)
    np.testing.assert_allclose(np.asarray(u) * np.asarray(sv) @ np.asarray(vh), m, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.linalg.svdvals(a)), np.linalg.svd(m, compute_uv=False), rtol=1e-4)
    q, rr = xp.linalg.qr(a)
    np.testing.assert_allclose(np.asarray(q) @ np.asarray(rr), m, rtol=1e-4, atol=1e-4)
    w, vecs = xp.linalg.eigh(s)
    np.testing.assert_allclose(np.asarray(vecs) @ np.diag(np.asarray(w)) @ np.asarray(vecs).T, spd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.linalg.eigvalsh(s)), np.linalg.eigvalsh(spd), rtol=1e-4)
    c = np.asarray(xp.linalg.cholesky(s))
    np.testing.assert_allclose(c @ c.T, spd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.linalg.cholesky(s, upper=True)), c.T, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(xp.linalg.inv(s)) @ spd, np.eye(4), atol=1e-4)
    np.testing.assert_allclose(float(xp.linalg.det(s)), np.linalg.det(spd), rtol=1e-4)
    sign, logdet = xp.linalg.slogdet(s)
    assert float(sign) == 1.0 and abs(float(logdet) - np.linalg.slogdet(spd)[1]) < 1e-4
    b = r.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(spd @ np.asarray(xp.linalg.solve(s, xp.asarray(b))), b, atol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.linalg.pinv(a)), np.linalg.pinv(m), rtol=1e-3, atol=1e-4)
    assert int(xp.linalg.matrix_rank(a)) == 4
    np.testing.assert_allclose(np.asarray(xp.linalg.matrix_power(s, 3)), np.linalg.matrix_power(spd, 3), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(xp.linalg.matrix_power(s, -1)), np.linalg.inv(spd), rtol=1e-4, atol=1e-5)
    ran = rt.info()["ran"]
    assert ran["xp.linalg.svd"] == {"cpu": svds + 1}
    if rt.backend == "webgpu":
        assert rt.placement.last is not None and "matmul" in ran and ran["matmul"].get("webgpu", 0) >= 2


def test_a_host_float32_product_is_its_own_writable_array():
    """Under auto with the product on the host, the float32 result is the host kernel's output taken as it is (a copy
    of it took a second result's memory): writable in place, shared with no operand and no other product."""
    rt = runtime("auto")
    xp.use(rt)
    a = xp.asarray(np.ones((300, 300), np.float32))
    before = rt.info()["ran"].get("matmul", {}).get("cpu", 0)
    with rt.pinned("cpu"):
        tracemalloc.start()   # NumPy reports its allocations there: one result's, not a copy's besides
        c1 = a @ a
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        c2 = a @ a
    assert rt.info()["ran"]["matmul"]["cpu"] == before + 2
    assert peak < 1.5 * 300 * 300 * 4, peak
    c1[0, 0] = -1.0
    assert float(c1[0, 0]) == -1.0 and float(c2[0, 0]) == 300.0 and float(a[0, 0]) == 1.0
    assert not np.shares_memory(c1._data.store.host, c2._data.store.host)
