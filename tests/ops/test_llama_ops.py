"""The llama ops (rt.ops.rms_norm, rope, swiglu, kv_attention, q_linear, q_embedding) on webgpu (lavapipe) and cpu
against their float64 references (gpuport.ops.kernels), on awkward shapes; the partitioned KV cache strategy; errors.

Bounds (u = 2**-24; each doubled where the reference's own final rounding adds one more u):
- rms_norm: an n-term sum of squares (relative error <= n*u, halved by the square root), then mean, +eps, sqrt,
  reciprocal, two products: |err| <= (n + 16) * u * |ref|.
- rope: two products and a sum per output: |err| <= 4u * (|a| + |b|) * (|cos| + |sin|).
- swiglu: WGSL's exp is within 3 + 2|x| ulp (the spec's bound for exp(x)); through 1/(1 + e) that error is at most
  relative; a division and two products: |err| <= 2 * (2|g| + 8) * u * |ref|. A device may flush a subnormal
  exp(-|g|) to 0 (WGSL allows it; NVIDIA's Vulkan driver does, for |g| > 87.3): at most 2^-126 lost from e, so
  |g * up| * 2^-126 more.
- kv_attention: a score's error is (D + 2)u * scale * sum|q_j k_j| (a D-term dot product); probabilities
  err <= 2*max score error + exp's (3 + 2|x|)u + S*u for the sum; the output sum_j p_j v_j adds S*u:
  |err| <= 2 * (2*e_s + (3 + 2*max|s - m|)u + 2*S*u) * max|v|.
- q_linear, q_embedding: tests/host/test_quant_kernels.py's bounds (Higham's for the K-term dot product; the gather is
  exact).
"""

from __future__ import annotations

import gpuport as gp
import numpy as np
import pytest
from gpuport.host.quant import QuantMatrix
from gpuport.models.kv_cache import DeviceKVCache
from gpuport.ops.opspecs import reference
from quant_bounds import abs_weights, check_bound
from smollm2 import random_blocks

U = 2.0 ** -24


@pytest.fixture(scope="module", params=["webgpu", "cpu"])
def rt(request):
    r = gp.open_sync(backend=request.param)
    yield r
    r.close()


def within(got: np.ndarray, want: np.ndarray, bound: np.ndarray, what: str) -> None:
    assert got.shape == want.shape and got.dtype == np.float32, (what, got.shape, want.shape, got.dtype)
    err = np.abs(got.astype(np.float64) - want)
    bad = ~(err <= bound)
    assert not bad.any(), f"{what}: {int(bad.sum())} of {err.size} outside the bound; worst err {err.max():.3g}"


@pytest.mark.parametrize("shape", [(1, 1), (3, 77), (5, 576), (2, 4097), (70, 64)])
def test_rms_norm(rt, shape):
    r = np.random.default_rng(1)
    x = (r.standard_normal(shape) * 30).astype(np.float32)
    w = r.standard_normal(shape[-1]).astype(np.float32)
    got = rt.ops.rms_norm(rt.tensor(x), rt.tensor(w), 1e-5).numpy()
    want = reference("rms_norm", [x, w], {"eps": 1e-5}).astype(np.float64)
    within(got, want, (shape[-1] + 16) * U * np.abs(want) + 1e-37, f"rms_norm {shape}")


@pytest.mark.parametrize("t,heads,d", [(1, 1, 2), (3, 9, 64), (7, 3, 64), (5, 2, 6), (300, 3, 64)])
def test_rope(rt, t, heads, d):
    r = np.random.default_rng(2)
    x = r.standard_normal((t, heads * d)).astype(np.float32)
    ang = r.uniform(-50, 50, (t, d // 2)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    got = rt.ops.rope(rt.tensor(x), rt.tensor(cos), rt.tensor(sin), heads).numpy()
    want = reference("rope", [x, cos, sin], {"num_heads": heads}).astype(np.float64)
    pairs = np.abs(x.reshape(t, heads, d // 2, 2)).astype(np.float64)
    scale = (pairs[..., 0] + pairs[..., 1]) * (np.abs(cos) + np.abs(sin))[:, None]   # covers |ac|+|bs|, |bc|+|as|
    within(got, want, 4 * U * np.repeat(scale, 2, axis=-1).reshape(t, heads * d) + 1e-37, f"rope {t}x{heads}x{d}")


@pytest.mark.parametrize("n", [1, 255, 257, 1536 * 7])
def test_swiglu(rt, n):
    r = np.random.default_rng(3)
    g = (r.standard_normal(n) * 8).astype(np.float32)
    if n > 4:
        g[:4] = [-200.0, 200.0, 0.0, -88.5]   # exp overflow (the -0 limit), a huge gate, zero
    up = r.standard_normal(n).astype(np.float32)
    got = rt.ops.swiglu(rt.tensor(g), rt.tensor(up)).numpy()
    want = reference("swiglu", [g, up], {}).astype(np.float64)
    flushed = np.abs(g.astype(np.float64) * up) * 2.0 ** -126
    within(got, want, 2 * (2 * np.abs(g) + 8) * U * np.abs(want) + flushed + 1e-37, f"swiglu {n}")


def attention_bound(q, k, v, start, heads, kv_heads):
    """The stated kv_attention bound, per output row/head (broadcast over D)."""
    t, width = q.shape
    d = width // heads
    s = start + t
    qh = q.reshape(t, heads, d).astype(np.float64)
    kh = k[:s].reshape(s, kv_heads, d).astype(np.float64)
    kv = np.repeat(kh, heads // kv_heads, axis=1)                         # (S, H, D)
    scale = 1 / np.sqrt(d)
    sabs = np.einsum("thd,shd->ths", np.abs(qh), np.abs(kv)) * scale
    scores = np.einsum("thd,shd->ths", qh, kv) * scale
    e_s = (d + 2) * U * sabs.max(axis=-1)
    spread = scores.max(axis=-1) - scores.min(axis=-1)
    per = 2 * (2 * e_s + (3 + 2 * spread) * U + 2 * s * U) * np.abs(v[:s]).max()
    return np.repeat(per[..., None], d, axis=-1).reshape(t, width)


@pytest.mark.parametrize("t,start,cap,heads,kv_heads,d", [(1, 0, 1, 1, 1, 1), (1, 99, 130, 9, 3, 64),
                                                            (7, 3, 10, 9, 3, 64), (70, 0, 70, 4, 2, 16),
                                                            (5, 60, 65, 6, 6, 256), (1, 500, 501, 3, 1, 33)])
def test_kv_attention(rt, t, start, cap, heads, kv_heads, d):
    r = np.random.default_rng(4)
    q = r.standard_normal((t, heads * d)).astype(np.float32)
    k = r.standard_normal((cap, kv_heads * d)).astype(np.float32)
    v = r.standard_normal((cap, kv_heads * d)).astype(np.float32)
    k[start + t:] = np.nan   # rows past the last position are never read
    got = rt.ops.kv_attention(rt.tensor(q), rt.tensor(k), rt.tensor(v), heads, kv_heads, start).numpy()
    want = reference("kv_attention", [q, k, v, None], dict(start=start, num_heads=heads, num_kv_heads=kv_heads))
    within(got, want.astype(np.float64), attention_bound(q, k, v, start, heads, kv_heads),
           f"kv_attention t{t} start{start} h{heads}/{kv_heads} d{d}")


@pytest.mark.parametrize("block", [1, 5, 64])
def test_partitioned_kv_cache(block):
    """A cache in fixed-size blocks (appended in place across block boundaries) gives the contiguous answer; the
    planner serves it by partitioned_kv, one dispatch per block holding visible rows."""
    rt = gp.open_sync(backend="webgpu")
    r = np.random.default_rng(5)
    heads, kv_heads, d, steps = 9, 3, 64, [7, 1, 1, 60, 1]
    total = sum(steps)
    ks = r.standard_normal((total, kv_heads * d)).astype(np.float32)
    vs = r.standard_normal((total, kv_heads * d)).astype(np.float32)
    cache = DeviceKVCache(rt, 2, kv_heads * d, total, block=block)
    pos = 0
    for n in steps:
        q = r.standard_normal((n, heads * d)).astype(np.float32)
        cache.reserve(n)
        kc, vc = cache.append(1, rt.tensor(ks[pos:pos + n]), rt.tensor(vs[pos:pos + n]))
        assert kc.blocked and vc.blocked
        rt.fallback.reset_metrics()
        got = rt.ops.kv_attention(rt.tensor(q), kc, vc, heads, kv_heads, pos).numpy()
        m = rt.fallback.get_performance_metrics()
        assert m["strategies"] == {"partitioned_kv": 1} and m["kv_blocks"] == -(-(pos + n) // block), m
        want = reference("kv_attention", [q, ks, vs, None], dict(start=pos, num_heads=heads, num_kv_heads=kv_heads))
        within(got, want.astype(np.float64), attention_bound(q, ks, vs, pos, heads, kv_heads), f"block {block} @{pos}")
        cache.length = pos = pos + n
    assert cache.nbytes == 2 * 2 * -(-total // block) * block * kv_heads * d * 4
    with pytest.raises(gp.ContextLengthExceeded, match=f"{total + 1} positions exceed the context length of {total}"):
        cache.reserve(1)
    cache.free()
    assert cache.nbytes == 0
    rt.close()


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
@pytest.mark.parametrize("t,n,k", [(1, 1, 32), (1, 67, 96), (3, 576, 576), (9, 192, 1536), (1, 49, 544)])
def test_q_linear(rt, kind, t, n, k):
    r = np.random.default_rng(6)
    raw = random_blocks(kind, n, k, r)
    w = QuantMatrix(raw, kind, (n, k))
    words = np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)]).view(np.uint32)
    x = r.standard_normal((t, k)).astype(np.float32)
    wt, xt = rt.tensor(words), rt.tensor(x)
    scale = np.abs(x) @ abs_weights(w).T
    dense = w.dense().astype(np.float64)
    if kind == "Q4_1" or t == 1:
        got = rt.ops.q_linear(xt, wt, kind, (n, k)).numpy()
        check_bound(got, (x.astype(np.float64) @ dense.T).astype(np.float32), scale, k, what=f"{kind} {t}x{n}x{k}")
    row = t - 1
    got = rt.ops.q_linear(xt, wt, kind, (n, k), row=row).numpy()
    check_bound(got, (x[row:row + 1].astype(np.float64) @ dense.T).astype(np.float32), scale[row:row + 1], k,
                what=f"{kind} row {row}")


def test_q_embedding(rt):
    r = np.random.default_rng(7)
    raw = random_blocks("Q8_0", 101, 96, r)   # 3 blocks a row: rows start on 2-byte boundaries
    words = np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)]).view(np.uint32)
    table = QuantMatrix(raw, "Q8_0", (101, 96))
    ids = np.array([[100, 0, 7], [3, 3, 55]], np.int32)
    got = rt.ops.q_embedding(rt.tensor(ids), rt.tensor(words), "Q8_0", (101, 96)).numpy()
    assert np.array_equal(got, table.rows(ids.ravel()).reshape(2, 3, 96))


def test_errors_name_what_is_wrong(rt):
    ops = rt.ops
    x = rt.tensor(np.zeros((2, 64), np.float32))
    with pytest.raises(ValueError, match=r"weight shape \(63,\) must be \(64,\)"):
        ops.rms_norm(x, rt.tensor(np.ones(63, np.float32)))
    with pytest.raises(ValueError, match=r"cos \(2, 16\) and sin \(2, 16\) must both be \(T, D/2\) = \(2, 32\)"):
        ops.rope(x, rt.tensor(np.ones((2, 16), np.float32)), rt.tensor(np.ones((2, 16), np.float32)), 1)
    with pytest.raises(ValueError, match="do not fit the cache's 2 rows"):
        ops.kv_attention(x, x, x, 1, 1, start=1)
    with pytest.raises(ValueError, match="num_heads=3 is not a multiple of num_kv_heads=2"):
        ops.kv_attention(x, x, x, 3, 2, start=0)
    w = rt.tensor(np.zeros(10, np.uint32))
    with pytest.raises(ValueError, match=r"a Q4_1 \(2, 64\) weight is 20 u32 words"):
        ops.q_linear(x, w, "Q4_1", (2, 64))
    with pytest.raises(TypeError, match="'Q5_K' is not one of"):
        ops.q_linear(x, w, "Q5_K", (2, 64))
    q8 = rt.tensor(np.zeros(17, np.uint32))
    with pytest.raises(ValueError, match="a Q8_0 weight multiplies one row at a time"):
        ops.q_linear(x, rt.tensor(np.zeros(34, np.uint32)), "Q8_0", (2, 64))
    with pytest.raises(IndexError, match="id 2 is outside the table's 2 rows"):
        ops.q_embedding(rt.tensor(np.array([2], np.int32)), rt.tensor(np.zeros(17, np.uint32)), "Q8_0", (2, 32))
    with pytest.raises(TypeError, match="ids must be int32 or uint32"):
        ops.q_embedding(x, q8, "Q8_0", (1, 32))
