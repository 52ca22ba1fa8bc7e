"""The quantized WGSL kernels (shaders/q4_1_*.wgsl, q8_0_*.wgsl) natively (wgpu-py) against the NumPy references
of gpuport.host.quant, through the public user-kernel API, on awkward shapes, the model's shapes and its real tensors.

Tolerances (u = 2**-24, u_h = 2**-11; |W| below is the elementwise bound of a stored weight: |d|*q + |m| for
Q4_1, |d|*|q| for Q8_0, which is what the kernels actually multiply, since they compute d*sum(q*x) + m*sum(x)):
- matvec, matmul (f32): only the accumulation order differs from the float64 reference, which rounds once.
  Higham's bound for a K-term dot product, with two more roundings for the block scale and offset:
  |err| <= (K + 2) * u * (|W| @ |x|), doubled since the reference rounds too.
- matvec and matmul f16 variants: x and each dequantized weight are rounded to f16 and a half-block's 16-term dot product
  is formed in f16 (about 16 + 2 + 2 roundings of u_h), half-block sums in f32: |err| <= 24*u_h*(|W| @ |x|)
  plus the f32 bound.
- embedding: the same single f32 product d*q as ggml: bit-exact.
"""

from __future__ import annotations

from functools import cache

import gpuport as gp
import numpy as np
import pytest
from gpuport.host.quant import QuantMatrix, embedding_ref, matmul_ref, matvec_ref
from gpuport.ops.kernels import grid, shader_source
from quant_bounds import abs_weights, check_bound
from smollm2 import gguf_file, random_blocks

ROWS_PER_LANE_GROUP = 4


@pytest.fixture(scope="module")
def rt():
    r = gp.open_sync(backend="webgpu")
    yield r
    r.close()


@cache
def _kernel(rt, shader: str, lanes: int | None = None, source: str | None = None):
    constants = {"LANES": lanes} if lanes is not None else None
    return rt.kernel(source or shader_source(shader), entry_point="main", constants=constants)


def _words(raw: np.ndarray) -> np.ndarray:
    """Raw block bytes as u32 words (zero-padded to a whole word, as a GPU buffer holds them)."""
    b = np.ascontiguousarray(raw, dtype=np.uint8).ravel()
    return np.concatenate([b, np.zeros(-b.size % 4, np.uint8)]).view(np.uint32)


def run_matvec(rt, w: QuantMatrix, x: np.ndarray, *, f16: bool = False, lanes: int = 8, w_off: int = 0,
               x_off: int = 0, y_off: int = 0, source: str | None = None) -> np.ndarray:
    """y = W x on the GPU; w_off/x_off/y_off place W, x and y inside larger buffers (garbage around them)."""
    n, k = w.shape
    shader = f"{w.kind.lower()}_matvec{'_f16' if f16 else ''}.wgsl"
    kern = _kernel(rt, shader, lanes, source)
    words = np.concatenate([np.full(w_off, 0xDEADBEEF, np.uint32), _words(w.raw)])
    xs = np.concatenate([np.full(x_off, np.nan, np.float32), x]).astype(np.float32)
    y = rt.tensor(np.full(y_off + n + 3, -7.0, np.float32))
    groups = -(-n // (ROWS_PER_LANE_GROUP * 64 // lanes))
    kern.dispatch(grid(groups), rt.tensor(words), rt.tensor(xs), y, uniforms=[n, k, w_off, x_off, y_off, 0, 0, 0])
    out = y.numpy()
    assert (out[:y_off] == -7).all() and (out[y_off + n:] == -7).all(), "wrote outside y[y_off:y_off+N]"
    return out[y_off:y_off + n]


SHAPES = [(1, 32), (7, 96), (5, 544), (33, 64), (576, 576), (1536, 576), (576, 1536), (192, 576)]


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
def test_matvec_shapes(rt, kind, f16):
    rng = np.random.default_rng(10)
    for n, k in SHAPES:
        w = QuantMatrix(random_blocks(kind, n, k, rng), kind, (n, k))
        x = rng.standard_normal(k).astype(np.float32)
        got = run_matvec(rt, w, x, f16=f16)
        check_bound(got, matvec_ref(w, x), abs_weights(w) @ np.abs(x), k, f16=f16, what=f"{kind} {n}x{k}")


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_matvec_lanes_and_offsets(rt, kind):
    rng = np.random.default_rng(11)
    n, k = 13, 160   # 5 blocks a row: Q8_0 rows alternate between word-aligned and 2-byte-aligned starts
    w = QuantMatrix(random_blocks(kind, n, k, rng), kind, (n, k))
    x = rng.standard_normal(k).astype(np.float32)
    want, scale = matvec_ref(w, x), abs_weights(w) @ np.abs(x)
    for lanes in (1, 2, 8, 64):
        check_bound(run_matvec(rt, w, x, lanes=lanes), want, scale, k, what=f"{kind} LANES={lanes}")
    got = run_matvec(rt, w, x, w_off=5, x_off=8, y_off=3)
    check_bound(got, want, scale, k, what=f"{kind} with offsets")


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.7.ffn_up.weight",
                                  "blk.29.ffn_down.weight", "token_embd.weight"])
def test_matvec_real_tensors(rt, name):
    f = gguf_file()
    t = f.tensors[name]
    w = QuantMatrix(f.raw(name), t.type_name, t.shape)
    x = np.random.default_rng(12).standard_normal(t.shape[1]).astype(np.float32)
    got = run_matvec(rt, w, x)
    check_bound(got, matvec_ref(w, x), abs_weights(w) @ np.abs(x), t.shape[1], what=name)


def test_a_broken_kernel_fails_the_check(rt):
    """The bound has teeth: swapped nibble halves, or a Q8_0 kernel that ignores the 2-byte misalignment, fail."""
    rng = np.random.default_rng(13)
    w = QuantMatrix(random_blocks("Q4_1", 8, 64, rng), "Q4_1", (8, 64))
    x = rng.standard_normal(64).astype(np.float32)
    src = shader_source("q4_1_matvec.wgsl")
    broken = src.replace("vec4<u32>(0u, 8u, 16u, 24u)", "vec4<u32>(4u, 12u, 20u, 28u)", 1).replace(
        "let sh_hi = vec4<u32>(4u, 12u, 20u, 28u)", "let sh_hi = vec4<u32>(0u, 8u, 16u, 24u)", 1)
    assert broken != src
    with pytest.raises(AssertionError, match="outside the bound"):
        check_bound(run_matvec(rt, w, x, source=broken), matvec_ref(w, x), abs_weights(w) @ np.abs(x), 64)
    w8 = QuantMatrix(random_blocks("Q8_0", 8, 64, rng), "Q8_0", (8, 64))
    src8 = shader_source("q8_0_matvec.wgsl")
    broken8 = src8.replace("if ((s & 2u) == 0u) {", "if (false) {", 1)
    assert broken8 != src8
    with pytest.raises(AssertionError, match="outside the bound"):
        check_bound(run_matvec(rt, w8, x, source=broken8), matvec_ref(w8, x), abs_weights(w8) @ np.abs(x), 64)


def run_matmul(rt, w: QuantMatrix, X: np.ndarray, *, f16: bool = False, lanes: int = 4, w_off: int = 0,
               x_off: int = 0, y_off: int = 0) -> np.ndarray:
    m, k = X.shape
    n = w.shape[0]
    kern = _kernel(rt, f"q4_1_matmul{'_f16' if f16 else ''}.wgsl", lanes)
    words = np.concatenate([np.full(w_off, 0xDEADBEEF, np.uint32), _words(w.raw)])
    xs = np.concatenate([np.full(x_off, np.nan, np.float32), X.ravel()]).astype(np.float32)
    y = rt.tensor(np.full(y_off + m * n + 5, -7.0, np.float32))
    kern.dispatch((-(-n // (ROWS_PER_LANE_GROUP * 64 // lanes)), -(-m // 4), 1), rt.tensor(words), rt.tensor(xs), y,
                  uniforms=[m, n, k, w_off, x_off, y_off, 0, 0])
    out = y.numpy()
    assert (out[:y_off] == -7).all() and (out[y_off + m * n:] == -7).all(), "wrote outside Y"
    return out[y_off:y_off + m * n].reshape(m, n)


@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
def test_matmul_shapes(rt, f16):
    rng = np.random.default_rng(14)
    for m, n, k in [(1, 1, 32), (5, 7, 96), (33, 40, 64), (3, 576, 544), (17, 1536, 576), (9, 576, 1536),
                    (2, 192, 576)]:
        w = QuantMatrix(random_blocks("Q4_1", n, k, rng), "Q4_1", (n, k))
        X = rng.standard_normal((m, k)).astype(np.float32)
        check_bound(run_matmul(rt, w, X, f16=f16), matmul_ref(X, w), np.abs(X) @ abs_weights(w).T, k, f16=f16,
                    what=f"{m}x{n}x{k}")
    w = QuantMatrix(random_blocks("Q4_1", 7, 64, rng), "Q4_1", (7, 64))
    X = rng.standard_normal((3, 64)).astype(np.float32)
    want, scale = matmul_ref(X, w), np.abs(X) @ abs_weights(w).T
    check_bound(run_matmul(rt, w, X, f16=f16, w_off=10, x_off=4, y_off=2), want, scale, 64, f16=f16,
                what="with offsets")
    for lanes in (1, 16, 64):
        check_bound(run_matmul(rt, w, X, f16=f16, lanes=lanes), want, scale, 64, f16=f16, what=f"LANES={lanes}")


def test_matmul_real_tensor(rt):
    f = gguf_file()
    t = f.tensors["blk.3.ffn_gate.weight"]
    w = QuantMatrix(f.raw(t.name), t.type_name, t.shape)
    X = np.random.default_rng(15).standard_normal((11, 576)).astype(np.float32)
    check_bound(run_matmul(rt, w, X), matmul_ref(X, w), np.abs(X) @ abs_weights(w).T, 576, what=t.name)


def run_embedding(rt, table: QuantMatrix, ids: np.ndarray, *, w_off: int = 0, out_off: int = 0) -> np.ndarray:
    v, d = table.shape
    t = len(ids)
    words = np.concatenate([np.full(w_off, 0xDEADBEEF, np.uint32), _words(table.raw)])
    out = rt.tensor(np.full(out_off + t * d + 4, -7.0, np.float32))
    _kernel(rt, "q8_0_embedding.wgsl").dispatch(grid(-(-t * d // 4 // 64)), rt.tensor(words),
                                                rt.tensor(np.asarray(ids, np.uint32)), out,
                                                uniforms=[t, d, v, w_off, out_off, 0, 0, 0])
    res = out.numpy()
    assert (res[:out_off] == -7).all() and (res[out_off + t * d:] == -7).all(), "wrote outside out"
    return res[out_off:out_off + t * d].reshape(t, d)


def test_embedding_exact(rt):
    f = gguf_file()
    t = f.tensors["token_embd.weight"]
    table = QuantMatrix(f.raw(t.name), t.type_name, t.shape)
    ids = np.array([1, 0, 49151, 2, 2, 12345, 9, 31337], np.uint32)
    got = run_embedding(rt, table, ids)
    assert np.array_equal(got.view(np.uint32), embedding_ref(table, ids).view(np.uint32))
    rng = np.random.default_rng(16)
    small = QuantMatrix(random_blocks("Q8_0", 5, 96, rng), "Q8_0", (5, 96))   # 3 blocks a row: odd alignment
    ids = np.array([4, 0, 3, 1, 2, 7], np.uint32)   # 7 is out of range: zeros
    got = run_embedding(rt, small, ids, w_off=3, out_off=8)
    assert np.array_equal(got[:5], embedding_ref(small, ids[:5])) and (got[5] == 0).all()
