"""gpuport's SIMD kernels against their NumPy references, written once for both builds of hostkernels/*.c:
the WebAssembly one (gpuport.host.wasm_kernels) in Pyodide under Node (tests/host/test_wasm_node.py) and in every
browser lane's page (e2e/test_page_wasm.py), and the native one (gpuport.host.native_kernels, bound with
`use`) by tests/host/test_native_kernels.py. Cases in WASM_ONLY check the page's routing and run only there.

Shapes are chosen to hit every edge of the kernels: 1 and 1x1, sizes that are not multiples of the 4-wide
vectors, the 4-row tiles or the 8-column panels, batched and broadcast operands, MiniLM's own shapes and
a large 256x384x1536 product. Tolerances are those of tests/cases.py, justified there (Higham's bound for
matmul, atol 1e-6 for gelu, rtol 1e-5 / atol 1e-6 for softmax, n*u-scaled for layer_norm, rtol 1e-4 /
atol 2e-5 sqrt(d) for attention).

The matmul bound holds for any summation order, so also for the native build's FMAs and blocking.

`run(name)` fails (never skips) when the kernels are unavailable, with the reason the page gave.
"""

from __future__ import annotations

import dataclasses
import math
from types import ModuleType
from typing import Any, Callable

import numpy as np
from cases import U, close
from gpuport.host import hostops as H
from gpuport.host import references as K
from gpuport.host import wasm_kernels as W
from gpuport.host.quant import QuantMatrix, matmul_ref, q8_matmul_ref, quantize
from gpuport.models import llama_ref as LR
from gpuport.ops.opspecs import OPS

CASES: dict[str, Callable[[], None]] = {}
WASM_ONLY = {"wasm_hostops_dispatches_to_the_kernels"}
# Cases about kernels that share NumPy's memory (not wasm_threads, which copies into its pool's).
IN_PLACE = {"wasm_kernels_work_in_place_on_numpy_memory"}
# The threads the whole-layer cases ask for: the native library's pool and the page's (wasm_threads) run them
# on two, the one-thread WebAssembly builds ignore it; the answers must not depend on it.
THREADS = 2


def use(engine: ModuleType) -> ModuleType:
    """Run the cases on `engine` (wasm_kernels, wasm_threads or native_kernels: the same API); returns the
    previous one."""
    global W
    previous, W = W, engine
    return previous


def case(fn: Callable[[], None]) -> Callable[[], None]:
    CASES[fn.__name__] = fn
    return fn


def run(name: str) -> dict:
    """Run case `name` on the current engine; returns the kernel calls it made there (the coverage matrix's proof)."""
    assert W.available(), f"{W.__name__} unavailable: {W.reason()}"
    before = dict(W.ENGINE.calls)
    CASES[name]()
    return {k: n - before.get(k, 0) for k, n in W.ENGINE.calls.items() if n > before.get(k, 0)}


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _uniform(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return r.uniform(-1, 1, shape).astype(np.float32)


def check_matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *, transpose_b: bool = False,
                 what: str = "") -> None:
    got = W.matmul(a, b, bias, transpose_b=transpose_b)
    want = K.matmul_ref(a, b, bias, transpose_b=transpose_b)
    bb = np.swapaxes(b, -1, -2) if transpose_b else b
    k = a.shape[-1]
    bound = 2 * (k + 1) * U * (np.abs(a) @ np.abs(bb) + (0 if bias is None else np.abs(bias))) + 1e-30
    close(got, want, atol=bound, what=what or f"matmul {a.shape} {b.shape} tb={transpose_b}")


# -- matmul -----------------------------------------------------------------------------------------

@case
def wasm_matmul_tile_edges() -> None:
    # every leftover-row count after the register tiles' rows (4 in WebAssembly and with AVX2, 8 with AVX-512: simd.h
    # MR; past 12 rows WebAssembly's 6-row tiles first, then 4, then the rest: MR_WIDE) against panel widths around
    # the panel's columns (8, 16 or 32: NR), both layouts; k within one chunk (the chunks' edges:
    # wasm_matmul_k_in_chunks), the shortest and an odd one
    r = rng(1)
    for m in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23):
        for n in (1, 3, 4, 5, 8, 9, 15, 17, 31, 33):
            for k in (1, 13):
                a, bias = _uniform(r, (m, k)), _uniform(r, (n,))
                check_matmul(a, _uniform(r, (k, n)), bias, what=f"matmul {m}x{k}x{n}")
                check_matmul(a, _uniform(r, (n, k)), None, transpose_b=True, what=f"matmul {m}x{k}x{n}^T")


@case
def wasm_matmul_k_in_chunks() -> None:
    # 5..12 rows (two or three tiles) take a full panel's k in chunks of 32 in WebAssembly (simd.h KC): every row's
    # sum keeps its order, so each row equals, to the bit, that row alone (one tile over all of k); k on and off
    # the chunk boundary, a panel full and one partial, both layouts, with a bias and without
    r = rng(5)
    for m in (5, 7, 8, 12, 13):
        for k in (33, 64, 65, 100):
            for n in (8, 9, 17):
                a, b, bias = _uniform(r, (m, k)), _uniform(r, (k, n)), _uniform(r, (n,))
                for bb, tb, bi in ((b, False, bias), (np.ascontiguousarray(b.T), True, None)):
                    check_matmul(a, bb, bi, transpose_b=tb, what=f"matmul {m}x{k}x{n} tb={tb}")
                    whole = W.matmul(a, bb, bi, transpose_b=tb)
                    alone = np.concatenate([W.matmul(a[i:i + 1], bb, bi, transpose_b=tb) for i in range(m)])
                    assert np.array_equal(whole, alone), (m, k, n, tb, np.abs(whole - alone).max())


@case
def wasm_matmul_rows_alone() -> None:
    # a row's output does not depend on the tile it fell in (6, 4 or fewer rows), nor on k taken in blocks past 192
    # steps (simd.h, matmul.c KB): each row of a product equals, to the bit, the same row multiplied alone
    r = rng(6)
    for m, k, n in ((13, 40, 17), (19, 64, 8), (23, 200, 9), (50, 385, 33), (97, 96, 16)):
        a, b, bias = _uniform(r, (m, k)), _uniform(r, (n, k)), _uniform(r, (n,))
        whole = W.matmul(a, b, bias, transpose_b=True)
        check_matmul(a, b, bias, transpose_b=True, what=f"matmul {m}x{k}x{n}^T")
        alone = np.concatenate([W.matmul(a[i:i + 1], b, bias, transpose_b=True) for i in range(m)])
        assert np.array_equal(whole, alone), (m, k, n, np.abs(whole - alone).max())


@case
def wasm_matmul_1x1() -> None:
    r = rng(2)
    check_matmul(_uniform(r, (1, 1)), _uniform(r, (1, 1)))
    check_matmul(_uniform(r, (1, 1)), _uniform(r, (1, 1)), _uniform(r, (1,)), transpose_b=True)


@case
def wasm_matmul_odd_sizes() -> None:
    r = rng(3)
    check_matmul(_uniform(r, (7, 13)), _uniform(r, (13, 5)))
    check_matmul(_uniform(r, (37, 129)), _uniform(r, (129, 65)), _uniform(r, (65,)))
    check_matmul(_uniform(r, (37, 129)), _uniform(r, (65, 129)), _uniform(r, (65,)), transpose_b=True)
    # k in three uneven blocks (past 192 steps and 3 tiles' rows), the last panel one column wide
    check_matmul(_uniform(r, (37, 385)), _uniform(r, (65, 385)), _uniform(r, (65,)), transpose_b=True)


@case
def wasm_matmul_batched_and_broadcast() -> None:
    r = rng(4)
    check_matmul(_uniform(r, (3, 17, 33)), _uniform(r, (33, 19)), _uniform(r, (19,)))
    check_matmul(_uniform(r, (3, 17, 33)), _uniform(r, (3, 33, 19)))
    check_matmul(_uniform(r, (2, 3, 9, 40)), _uniform(r, (2, 3, 11, 40)), transpose_b=True)
    check_matmul(_uniform(r, (17, 33)), _uniform(r, (3, 33, 19)), _uniform(r, (19,)))       # A shared (stride 0)
    check_matmul(_uniform(r, (2, 1, 5, 7)), _uniform(r, (1, 3, 4, 7)), transpose_b=True)    # both broadcast


@case
def wasm_matmul_minilm_shapes() -> None:
    r = rng(5)
    for m in (12, 96):
        for k, n in ((384, 384), (384, 1536), (1536, 384)):
            check_matmul(_uniform(r, (1, m, k)), _uniform(r, (n, k)), _uniform(r, (n,)), transpose_b=True)


@case
def wasm_matmul_large() -> None:
    r = rng(6)
    check_matmul(_uniform(r, (256, 384)), _uniform(r, (384, 1536)), _uniform(r, (1536,)))
    check_matmul(_uniform(r, (256, 1536)), _uniform(r, (384, 1536)), _uniform(r, (384,)), transpose_b=True)


@case
def wasm_matmul_inputs_outside_the_kernel_layout() -> None:
    r = rng(7)
    a, b = _uniform(r, (9, 6)), _uniform(r, (6, 11))
    check_matmul(a, b, _uniform(r, (9, 11)), what="matrix bias")             # added after the kernel
    check_matmul(a, b, _uniform(r, (1, 11)), what="row bias")
    close(W.matmul(a[0], b), K.matmul_ref(a[0], b), atol=1e-6, what="1-D a")  # the reference's path
    check_matmul(np.asfortranarray(a), b[:, ::2], what="non-contiguous operands")
    got = W.matmul(a.astype(np.float64), b)
    assert got.dtype == np.float32, got.dtype
    try:
        W.matmul(a, _uniform(r, (5, 11)))
    except ValueError as exc:
        assert "(9, 6)" in str(exc) and "(5, 11)" in str(exc), exc
    else:
        raise AssertionError("matmul of (9, 6) by (5, 11) did not raise")


@case
def wasm_matmul_caches_read_only_weights() -> None:
    r = rng(8)
    w, bias = _uniform(r, (48, 40)), _uniform(r, (48,))
    w.flags.writeable = False
    bias.flags.writeable = False
    W.clear_cache()
    for m in (3, 12):
        check_matmul(_uniform(r, (m, 40)), w, bias, transpose_b=True, what=f"cached weight, {m} rows")
    assert len(W._PACKED) == 1, "the read-only weight was packed more than once"
    other = _uniform(r, (48,))  # a new bias is a new packed matrix, never the stale one
    other.flags.writeable = False
    check_matmul(_uniform(r, (5, 40)), w, other, transpose_b=True, what="cached weight, new bias")
    writable = _uniform(r, (48, 40))
    check_matmul(_uniform(r, (5, 40)), writable, transpose_b=True, what="writable weight")
    writable[:] = 0.5  # mutable weights are packed on every call: the change shows
    check_matmul(_uniform(r, (5, 40)), writable, transpose_b=True, what="writable weight after a change")
    view = writable.view()  # read-only itself, but a view of memory that can still change: never cached
    view.flags.writeable = False
    check_matmul(_uniform(r, (5, 40)), view, transpose_b=True, what="read-only view of a writable weight")
    from_bytes = np.frombuffer(bytearray(w.tobytes()), np.float32).reshape(48, 40)
    from_bytes.flags.writeable = False
    check_matmul(_uniform(r, (5, 40)), from_bytes, transpose_b=True, what="read-only view of a bytearray")
    assert len(W._PACKED) == 2, len(W._PACKED)
    # as the safetensors loader makes them: float32 with an explicit native byte order, a dtype equal to
    # np.float32 but not it (np.ascontiguousarray(..., np.float32) copies those in Pyodide's NumPy)
    loaded = [np.frombuffer(x.tobytes(), "<f4").reshape(x.shape).astype(np.dtype("<f4").newbyteorder("="))
              for x in (_uniform(r, (48, 40)), _uniform(r, (48,)))]
    for x in loaded:
        x.flags.writeable = False
    for m in (3, 12):
        check_matmul(_uniform(r, (m, 40)), *loaded, transpose_b=True, what=f"loaded weight and bias, {m} rows")
    assert len(W._PACKED) == 3, f"a loaded weight and bias were not packed once: {len(W._PACKED) - 2} entries"
    del w, other, loaded
    assert not W._PACKED, "packed copies outlived their weights"


# -- row-wise ---------------------------------------------------------------------------------------

_ROW_SHAPES = [(1,), (1, 1), (3,), (7, 13), (37, 129), (3, 17, 33), (5, 1000), (2, 12, 384), (12, 1536)]


@case
def wasm_gelu() -> None:
    r = rng(9)
    for shape in _ROW_SHAPES:
        x = (r.standard_normal(shape) * 3).astype(np.float32)
        close(W.gelu(x), K.gelu_ref(x), atol=1e-6, what=f"gelu {shape}")
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 9.0, -9.0, 12.25, -12.25, 40.0, -40.0, 3e4, -3e4, 1e30,
                  -1e30], np.float32)
    close(W.gelu(x), K.gelu_ref(x), atol=1e-6, what="gelu extremes")


@case
def wasm_quick_gelu() -> None:
    r = rng(19)
    for shape in _ROW_SHAPES:
        x = (r.standard_normal(shape) * 3).astype(np.float32)
        close(W.quick_gelu(x), K.quick_gelu_ref(x), rtol=4e-6, atol=1e-7, what=f"quick_gelu {shape}")
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 40.0, -40.0, 60.0, -60.0, 3e4, -3e4, 1e30, -1e30], np.float32)
    close(W.quick_gelu(x), K.quick_gelu_ref(x), rtol=4e-6, atol=1e-7, what="quick_gelu extremes")


@case
def wasm_softmax() -> None:
    r = rng(10)
    for shape in _ROW_SHAPES:
        x = (r.standard_normal(shape) * 4).astype(np.float32)
        row = np.where(r.random(shape[-1:]) < 0.3, -1e9, 0).astype(np.float32)
        full = np.where(r.random(shape) < 0.2, -1e4, 0).astype(np.float32)
        for mask, what in ((None, "no mask"), (row, "row mask"), (full, "full mask")):
            close(W.softmax(x, mask), K.softmax_ref(x, mask), rtol=1e-5, atol=1e-6, what=f"softmax {what} {shape}")


@case
def wasm_softmax_broadcast_masks() -> None:
    r = rng(11)
    x = (r.standard_normal((2, 3, 5, 7)) * 4).astype(np.float32)
    for mshape in ((2, 1, 1, 7), (3, 1, 7), (1, 3, 5, 7), (5, 7), (2, 3, 1, 7), (2, 1, 5, 7), (2, 3, 5, 1)):
        mask = np.where(r.random(mshape) < 0.3, -1e9, r.standard_normal(mshape)).astype(np.float32)
        close(W.softmax(x, mask), K.softmax_ref(x, mask), rtol=1e-5, atol=1e-6, what=f"softmax mask {mshape}")
    mask = np.zeros((4, 7), np.float32)  # a mask with more rows than x: the result takes the broadcast shape
    close(W.softmax(x[0, 0, 0], mask), K.softmax_ref(x[0, 0, 0], mask), rtol=1e-5, atol=1e-6, what="wide mask")


@case
def wasm_softmax_masked_keys_are_exactly_zero() -> None:
    x = np.linspace(-3, 3, 2 * 11, dtype=np.float32).reshape(2, 11)
    mask = np.zeros(11, np.float32)
    mask[[0, 4, 9, 10]] = -1e9
    got = W.softmax(x, mask)
    assert (got[:, [0, 4, 9, 10]] == 0).all(), got
    close(got.sum(axis=-1), np.ones(2, np.float32), atol=1e-6, what="softmax rows sum to 1")


@case
def wasm_layer_norm() -> None:
    r = rng(12)
    for shape in _ROW_SHAPES:
        n = shape[-1]
        x = (r.standard_normal(shape) * 2 + 1).astype(np.float32)
        g, b = r.standard_normal(n).astype(np.float32), r.standard_normal(n).astype(np.float32)
        for eps in (1e-5, 1e-12):
            close(W.layer_norm(x, g, b, eps=eps), K.layer_norm_ref(x, g, b, eps=eps),
                  atol=1e-5 + 8 * n * U * (np.abs(g) + 1), rtol=1e-5, what=f"layer_norm {shape} eps={eps}")


# -- attention --------------------------------------------------------------------------------------

_ATTENTION = [(1, 1, 1, 1, 1, False), (1, 7, 13, 1, 5, True), (2, 17, 33, 3, 11, True), (2, 12, 12, 12, 32, True),
              (1, 5, 300, 2, 64, True), (1, 3, 70, 1, 256, False), (8, 16, 16, 12, 32, True),
              (1, 256, 256, 12, 32, True), (3, 9, 4, 2, 8, False)]


@case
def wasm_attention() -> None:
    r = rng(13)
    for b, sq, sk, heads, d, use_mask in _ATTENTION:
        q = r.standard_normal((b, sq, heads * d)).astype(np.float32)
        k = r.standard_normal((b, sk, heads * d)).astype(np.float32)
        v = r.standard_normal((b, sk, heads * d)).astype(np.float32)
        mask = None
        if use_mask:
            valid = r.integers(1, sk + 1, b)
            mask = np.where(np.arange(sk)[None, :] < valid[:, None], 0.0, -1e9).astype(np.float32)
        close(W.attention(q, k, v, mask, num_heads=heads), K.attention_ref(q, k, v, mask, num_heads=heads),
              rtol=1e-4, atol=2e-5 * math.sqrt(d), what=f"attention b{b} sq{sq} sk{sk} h{heads} d{d} mask={use_mask}")


@case
def wasm_attention_causal() -> None:
    # a text tower's self-attention: query i sees keys 0..i (with and without a padding mask beside it)
    r = rng(20)
    for b, s, heads, d in ((1, 1, 1, 4), (2, 7, 2, 8), (3, 77, 8, 64), (1, 13, 3, 5)):
        q, k, v = (r.standard_normal((b, s, heads * d)).astype(np.float32) for _ in range(3))
        for mask in (None, np.where(np.arange(s)[None, :] < r.integers(1, s + 1, b)[:, None], 0.0, -1e9)
                     .astype(np.float32)):
            close(W.attention(q, k, v, mask, num_heads=heads, causal=True),
                  K.attention_ref(q, k, v, mask, num_heads=heads, causal=True), rtol=1e-4, atol=2e-5 * math.sqrt(d),
                  what=f"causal attention b{b} s{s} h{heads} d{d} mask={mask is not None}")


@case
def wasm_attention_reads_fused_qkv_views_in_place() -> None:
    # q, k and v as the column blocks of one (B, S, 3H) product (MiniLM's fused QKV): rows 3H apart. The
    # kernel reads them where they lie; the answer is the reference's on contiguous copies.
    r = rng(18)
    for b, s, heads, d in ((1, 12, 12, 32), (3, 9, 2, 8), (2, 1, 3, 5)):
        h = heads * d
        qkv = r.standard_normal((b, s, 3 * h)).astype(np.float32)
        q, k, v = qkv[..., :h], qkv[..., h:2 * h], qkv[..., 2 * h:]
        mask = np.where(np.arange(s)[None, :] < r.integers(1, s + 1, b)[:, None], 0.0, -1e9).astype(np.float32)
        close(W.attention(q, k, v, mask, num_heads=heads),
              K.attention_ref(*(np.ascontiguousarray(t) for t in (q, k, v)), mask, num_heads=heads), rtol=1e-4,
              atol=2e-5 * math.sqrt(d), what=f"attention on QKV views b{b} s{s} h{heads} d{d}")


# -- the host path: gpuport.host.hostops hands these ops to the kernels ----------------------------------

def _frozen(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


@case
def wasm_hostops_dispatches_to_the_kernels() -> None:
    # What every op placed on the host runs in a page (the cpu backend, auto's host side, MiniLM's fused
    # forward): the kernels, above the sizes where NumPy wins the call (hostops._WASM_MIN_*), else NumPy.
    assert H.backend_name() == "wasm", H.backend_name()
    for op in W.OPS:
        assert H.KERNELS[op].__name__ == f"{op}_wasm", (op, H.KERNELS[op])
        assert getattr(H, op) is H.KERNELS[op], op
    r = rng(14)
    w, bias = _frozen(_uniform(r, (1152, 384))), _frozen(_uniform(r, (1152,)))
    W.clear_cache()
    for m in (1, 12, 40):
        a = _uniform(r, (m, 384))
        got = OPS["matmul"].run_host([a, w, bias], {"transpose_b": True})
        want = K.matmul_ref(a, w, bias, transpose_b=True)
        close(got, want, atol=2 * 385 * U * (np.abs(a) @ np.abs(w.T) + np.abs(bias)), what=f"hostops matmul {m} rows")
    assert len(W._PACKED) == 1, "hostops.matmul did not reach the kernel's packed-weight cache"
    small_a, small_b = _uniform(r, (3, 5)), _uniform(r, (5, 4))   # 60 multiply-adds: NumPy's
    close(H.matmul(small_a, small_b), K.matmul_ref(small_a, small_b), atol=1e-6, what="hostops small matmul")
    for shape in ((3, 5), (37, 129), (12, 1536)):
        x = (r.standard_normal(shape) * 3).astype(np.float32)
        close(OPS["gelu"].run_host([x], {}), K.gelu_ref(x), atol=1e-6, what=f"hostops gelu {shape}")
        mask = np.where(r.random(shape[-1:]) < 0.3, -1e9, 0).astype(np.float32)
        close(OPS["softmax"].run_host([x, mask], {}), K.softmax_ref(x, mask), rtol=1e-5, atol=1e-6,
              what=f"hostops softmax {shape}")
        g, b = r.standard_normal(shape[-1]).astype(np.float32), r.standard_normal(shape[-1]).astype(np.float32)
        close(OPS["layer_norm"].run_host([x, g, b], {"eps": 1e-12}), K.layer_norm_ref(x, g, b, eps=1e-12),
              atol=1e-5 + 8 * shape[-1] * U * (np.abs(g) + 1), rtol=1e-5, what=f"hostops layer_norm {shape}")
    for bsz, s, heads, d in ((1, 2, 12, 32), (8, 12, 12, 32), (1, 70, 2, 16)):
        q, k, v = (r.standard_normal((bsz, s, heads * d)).astype(np.float32) for _ in range(3))
        mask = np.where(np.arange(s)[None, :] < r.integers(1, s + 1, bsz)[:, None], 0.0, -1e9).astype(np.float32)
        close(OPS["attention"].run_host([q, k, v, mask], {"num_heads": heads}),
              K.attention_ref(q, k, v, mask, num_heads=heads), rtol=1e-4, atol=2e-5 * math.sqrt(d),
              what=f"hostops attention b{bsz} s{s} h{heads}")


def _same_specials(got: np.ndarray, want: np.ndarray, what: str, **tol: float) -> None:
    """NaNs and infinities where `want` has them; everything else within `tol`."""
    special = ~np.isfinite(want)
    assert (np.isnan(got) == np.isnan(want)).all(), f"{what}: NaNs differ: got {got}, want {want}"
    assert (got[special & ~np.isnan(want)] == want[special & ~np.isnan(want)]).all(), f"{what}: infinities differ"
    close(np.where(special, 0, got).astype(np.float32), np.where(special, 0, want).astype(np.float32), what=what,
          **tol)


@case
def wasm_hostops_ieee_edges_are_numpys() -> None:
    # Inputs the kernels do not own (infinities, NaNs, float32 statistics that overflow, eps ~ 0) get the
    # NumPy kernel's answer, as off the page: the host path gives one answer whatever runs it.
    r = rng(15)
    x = np.array([-np.inf, np.inf, np.nan, 0.0, 1.5, -1.5, 3e38, -3e38] * 40, np.float32)
    got = H.gelu(x)
    _same_specials(got, H.NUMPY["gelu"](x), "gelu with infinities and NaN", atol=1e-6)
    assert got[0] == 0 and got[1] == np.inf, got[:2]
    g, b = r.standard_normal(384).astype(np.float32), r.standard_normal(384).astype(np.float32)
    big = (r.standard_normal((4, 384)) * 1e19).astype(np.float32)   # squares overflow float32
    close(H.layer_norm(big, g, b, eps=1e-12), K.layer_norm_ref(big, g, b, eps=1e-12),
          atol=1e-5 + 8 * 384 * U * (np.abs(g) + 1), rtol=1e-5, what="layer_norm of values near 1e19")
    flat = np.full((3, 384), 0.25, np.float32)
    flat[:, 0] += np.float32(2 ** -22)
    close(H.layer_norm(flat, g, b, eps=0.0), K.layer_norm_ref(flat, g, b, eps=0.0),
          atol=1e-5 + 8 * 384 * U * (np.abs(g) + 1), rtol=1e-5, what="layer_norm eps=0 on a near-constant row")
    scores = r.standard_normal((2, 300)).astype(np.float32)
    dead = np.zeros((2, 300), np.float32)
    dead[1] = -np.inf                                         # a row with every key masked: NaN, as NumPy
    _same_specials(H.softmax(scores, dead), H.NUMPY["softmax"](scores, dead), "softmax of a fully masked row",
                   rtol=1e-5, atol=1e-6)
    a, w = _uniform(r, (20, 384)), _uniform(r, (384, 64))
    a[3, 7] = np.inf
    _same_specials(H.matmul(a, w), H.NUMPY["matmul"](a, w), "matmul with an infinite input", rtol=1e-5, atol=1e-5)


# -- a whole encoder layer in one call ------------------------------------------------------------

def _encoder_layer(r: np.random.Generator, h: int, f: int, **kind: Any) -> K.EncoderLayer:
    """Read-only weights at a trained model's scale (products of O(1) activations stay O(1)); `kind`: pre_norm,
    activation (references.EncoderLayer)."""
    def w(*shape: int) -> np.ndarray:
        return _frozen((r.standard_normal(shape) * 0.05).astype(np.float32))

    def gamma(n: int) -> np.ndarray:
        return _frozen((1 + 0.1 * r.standard_normal(n)).astype(np.float32))

    return K.EncoderLayer(wqkv=w(3 * h, h), bqkv=w(3 * h), wo=w(h, h), bo=w(h), ln1_g=gamma(h), ln1_b=w(h),
                          wi=w(f, h), bi=w(f), wo2=w(h, f), bo2=w(h), ln2_g=gamma(h), ln2_b=w(h), **kind)


# (batch, seq, hidden, heads, ffn): 1 token; widths off the 4-wide vectors, 4-row tiles and 8-column panels;
# MiniLM's own layer on a short sentence and on a padded batch. Tolerance: the outputs are layer-normed
# rows (O(1)); each of the layer's products errs by at most K u sum|a||b| (Higham, K <= 1536 here: ~1e-4 of
# its scale), the normalisation divides that by the row's deviation (O(1) for these rows): atol 2e-4.
# Measured 6e-6 at MiniLM's shape natively, 1e-7 on the small ones.
_ENCODER = [(1, 1, 8, 2, 12), (2, 5, 12, 3, 20), (3, 7, 16, 4, 24), (1, 12, 384, 12, 1536), (4, 33, 384, 12, 1536)]


@case
def wasm_encoder_layer() -> None:
    r = rng(16)
    for b, s, h, heads, f in _ENCODER:
        layer = _encoder_layer(r, h, f)
        x = r.standard_normal((b, s, h)).astype(np.float32)
        mask = np.zeros((b, s), np.float32)
        mask[-1, s // 2 + 1:] = -1e9                     # the last sequence padded
        got, bad = W.ENGINE.encoder_layer(x, layer, mask, num_heads=heads, eps=1e-12, threads=THREADS)
        assert bad == 0, (b, s, h, bad)
        close(got, K.encoder_layer_ref(x, layer, mask, num_heads=heads, eps=1e-12), atol=2e-4,
              what=f"encoder layer b{b} s{s} h{h} heads{heads} f{f}")
        again, _ = W.ENGINE.encoder_layer(x, layer, None, num_heads=heads, eps=1e-12, threads=THREADS)
        close(again, K.encoder_layer_ref(x, layer, None, num_heads=heads, eps=1e-12), atol=2e-4,
              what=f"encoder layer b{b} s{s} h{h} without a mask")


# CLIP's and ViT's towers: pre-norm, QuickGELU or GELU, the text tower causal. The residual stream is not normalised
# (x grows by each block's output): tolerance relative to its scale, the products' K u sum|a||b| as above.
_PRE_NORM = [(1, 1, 8, 2, 12, "quick_gelu", True), (2, 7, 16, 4, 24, "gelu", False),
             (2, 50, 768, 12, 3072, "quick_gelu", False), (3, 20, 512, 8, 2048, "quick_gelu", True)]


@case
def wasm_encoder_layer_pre_norm() -> None:
    r = rng(22)
    for b, s, h, heads, f, act, causal in _PRE_NORM:
        layer = _encoder_layer(r, h, f, pre_norm=True, activation=act)
        x = (r.standard_normal((b, s, h)) * 2).astype(np.float32)
        got, bad = W.ENGINE.encoder_layer(x, layer, None, num_heads=heads, eps=1e-5, causal=causal, threads=THREADS)
        assert bad == 0, (b, s, h, bad)
        want = K.encoder_layer_ref(x, layer, None, num_heads=heads, eps=1e-5, causal=causal)
        close(got, want, atol=2e-4 * float(np.abs(want).max()), what=f"pre-norm layer b{b} s{s} h{h} {act} causal={causal}")
        if causal:   # a later token never changes an earlier one's output
            head, _ = W.ENGINE.encoder_layer(np.ascontiguousarray(x[:, :s // 2 + 1]), layer, None, num_heads=heads,
                                             eps=1e-5, causal=True, threads=THREADS)
            close(head, got[:, :s // 2 + 1], atol=2e-4 * float(np.abs(want).max()), what="causal prefix")


# A batch without padding (`lengths`: sequences one after another, each attending within itself): CLIP's text
# tower, causal and pre-norm, and a post-norm layer; one batch past encoder.c's COLUMN_ROWS (1024 rows: split by
# rows). Each sequence must get what it gets alone and what its rows get in a padded batch.
_RAGGED = [((1,), 8, 2, 12, True), ((3, 1, 5), 16, 4, 24, True), ((7, 8, 9, 8, 8, 6, 11), 64, 4, 96, True),
           ((2, 9), 16, 2, 24, False), ((600, 450), 16, 2, 24, True)]


@case
def wasm_encoder_layer_without_padding() -> None:
    r = rng(31)
    for lengths, h, heads, f, pre_norm in _RAGGED:
        layer = _encoder_layer(r, h, f, pre_norm=pre_norm, activation="quick_gelu" if pre_norm else "gelu")
        x = r.standard_normal((1, sum(lengths), h)).astype(np.float32)
        ls = np.array(lengths, np.int32)
        got, bad = W.ENGINE.encoder_layer(x, layer, None, num_heads=heads, eps=1e-5, causal=pre_norm,
                                          threads=THREADS, lengths=ls)
        want = K.encoder_layer_ref(x, layer, num_heads=heads, eps=1e-5, causal=pre_norm, lengths=lengths)
        scale = float(np.abs(want).max())
        assert bad == 0 and got.shape == x.shape, (lengths, bad, got.shape)
        close(got, want, atol=2e-4 * scale, what=f"encoder layer without padding {lengths} h{h}")
        padded = np.zeros((len(lengths), max(lengths), h), np.float32)
        mask = np.full(padded.shape[:2], -1e9, np.float32)
        bounds = np.cumsum([0, *lengths])
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            padded[i, :b - a], mask[i, :b - a] = x[0, a:b], 0
        rows, _ = W.ENGINE.encoder_layer(padded, layer, None if pre_norm else mask, num_heads=heads, eps=1e-5,
                                         causal=pre_norm, threads=THREADS)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            close(got[0, a:b], rows[i, :b - a], atol=1e-6 * scale, what=f"sequence {i} of {lengths}, padded")
    try:
        W.ENGINE.encoder_layer(np.zeros((1, 5, 8), np.float32), _encoder_layer(r, 8, 12), None, num_heads=2, eps=1e-5,
                               lengths=np.array([2, 2], np.int32))
    except ValueError as exc:
        assert "add up to" in str(exc), exc
    else:
        raise AssertionError("lengths that do not add up to x's rows were taken")


@case
def wasm_encoder_layer_checks_every_call_against_its_layer() -> None:
    # A layer's weights are checked and packed on its first call only (a page would pay the checks on every
    # layer of every sentence); a later x of another width, or other heads, is still refused, not read past
    # the packed panels. Writable weights are refused, never packed and then changed under the cache.
    r = rng(18)
    layer = _encoder_layer(r, 16, 24)
    x = r.standard_normal((1, 5, 16)).astype(np.float32)
    close(W.ENGINE.encoder_layer(x, layer, None, num_heads=4, eps=1e-12)[0],
          K.encoder_layer_ref(x, layer, None, num_heads=4, eps=1e-12), atol=2e-4, what="encoder layer, first call")
    for wrong, heads in ((r.standard_normal((1, 5, 24)).astype(np.float32), 4), (x, 3)):
        try:
            W.ENGINE.encoder_layer(wrong, layer, None, num_heads=heads, eps=1e-12)
        except ValueError as e:
            assert "do not fit together" in str(e), e
        else:
            raise AssertionError(f"x {wrong.shape} with {heads} heads was taken by a layer of width 16")
    writable = dataclasses.replace(layer, wo=layer.wo.copy())
    try:
        W.ENGINE.encoder_layer(x, writable, None, num_heads=4, eps=1e-12)
    except ValueError as e:
        assert "read-only" in str(e), e
    else:
        raise AssertionError("a writable weight was packed")


@case
def wasm_encoder_layer_hands_float32_overflow_to_numpy() -> None:
    # Squares of 1e20 overflow float32: the kernel flags the rows, and hostops redoes the layer op by op,
    # where layer_norm's statistics go to NumPy: the reference's answer, never the kernel's beta-only rows.
    # Q, K and V weights of zero keep the huge row out of the attention scores (which would overflow to NaN
    # in any float format): it reaches the first layer norm through the residual alone.
    r = rng(17)
    layer = dataclasses.replace(_encoder_layer(r, 64, 96), wqkv=_frozen(np.zeros((192, 64), np.float32)))
    x = r.standard_normal((1, 3, 64)).astype(np.float32)   # 3 rows of 64: big enough for the kernels natively and in a page
    x[0, 1] *= np.float32(1e20)
    _, bad = W.ENGINE.encoder_layer(x, layer, None, num_heads=4, eps=1e-12)
    assert bad >= 1, bad
    before = H.calls().get("encoder_layer", {}).get("ops", 0)
    got = H.encoder_layer(x, layer, None, num_heads=4, eps=1e-12)
    assert H.calls()["encoder_layer"]["ops"] == before + 1, H.calls()
    close(got, K.encoder_layer_ref(x, layer, None, num_heads=4, eps=1e-12), atol=2e-4, what="encoder layer at 1e20")
    fine = r.standard_normal((1, 3, 64)).astype(np.float32)
    engine = H.layers()[0].name   # what hostops runs whole layers on here: the page's pool where it has one
    before = H.calls()["encoder_layer"].get(engine, 0)
    close(H.encoder_layer(fine, layer, None, num_heads=4, eps=1e-12),
          K.encoder_layer_ref(fine, layer, None, num_heads=4, eps=1e-12), atol=2e-4, what="hostops encoder layer")
    assert H.calls()["encoder_layer"][engine] == before + 1, H.calls()



@case
def wasm_encoder_layers_keep_x_between_layers() -> None:
    # A stack in one pass (x copied into the kernels' memory once, one call per layer) gives each layer's answer in
    # turn to the bit (the same kernels on the same numbers), with a mask and without padding. A layer whose
    # statistics overflow stops the pass; hostops then redoes the stack layer by layer: that one op by op (the
    # reference's answer), the others fused.
    r = rng(32)
    stack = [_encoder_layer(r, 24, 40, pre_norm=True, activation="quick_gelu") for _ in range(3)]
    x = r.standard_normal((2, 5, 24)).astype(np.float32)
    mask = np.zeros((2, 5), np.float32)
    mask[1, 3:] = -1e9
    ls = np.array([2, 5, 3], np.int32)
    flat = r.standard_normal((1, 10, 24)).astype(np.float32)
    for inp, m, lengths in ((x, mask, None), (flat, None, ls)):
        want = inp
        for L in stack:
            want, bad = W.ENGINE.encoder_layer(want, L, m, num_heads=2, eps=1e-5, threads=THREADS, lengths=lengths)
            assert bad == 0
        got, bad = W.ENGINE.encoder_layers(inp, stack, m, num_heads=2, eps=1e-5, threads=THREADS, lengths=lengths)
        assert bad == 0 and np.array_equal(got, want), float(np.abs(got - want).max())
        assert np.array_equal(H.encoder_layers(inp, stack, m, num_heads=2, eps=1e-5, lengths=lengths), want)
    huge = dataclasses.replace(_encoder_layer(r, 64, 96), wqkv=_frozen(np.zeros((192, 64), np.float32)))
    stack = [huge, _encoder_layer(r, 64, 96), _encoder_layer(r, 64, 96)]
    x = r.standard_normal((1, 3, 64)).astype(np.float32)
    x[0, 1] *= np.float32(1e20)   # as in the case above: the first layer's norm overflows in float32
    _, bad = W.ENGINE.encoder_layers(x, stack, None, num_heads=4, eps=1e-12)
    assert bad >= 1, bad
    engine = H.layers()[0].name
    before = dict(H.calls().get("encoder_layer", {}))
    got = H.encoder_layers(x, stack, None, num_heads=4, eps=1e-12)
    after = H.calls()["encoder_layer"]
    assert after.get("ops", 0) == before.get("ops", 0) + 1 and after[engine] == before.get(engine, 0) + 2, after
    want = x
    for L in stack:
        want = K.encoder_layer_ref(want, L, None, num_heads=4, eps=1e-12)
    close(got, want, atol=2e-4, what="a stack whose first layer overflows")


@case
def wasm_encoder_layers_keep_one_row_per_sequence() -> None:
    # keep="first" or "last" (a tower reading its class token or its pooled end-of-text): the last layer makes only
    # those rows past its QKV product, and they are the full stack's rows: pre- and post-norm, causal or not, a
    # padded batch and sequences without padding, a batch past encoder.c's COLUMN_ROWS. The same kernels on the same
    # numbers (one query against the keys it sees, as in the full layer): atol 1e-5 of the rows' scale.
    r = rng(33)
    for pre_norm, causal, lengths, h in ((True, True, (2, 5, 1, 4), 24), (True, False, None, 24),
                                         (False, False, (3, 7), 32), (True, True, (600, 450), 16)):
        act = "quick_gelu" if pre_norm else "gelu"
        stack = [_encoder_layer(r, h, 40, pre_norm=pre_norm, activation=act) for _ in range(2)]
        ls = None if lengths is None else np.array(lengths, np.int32)
        x = r.standard_normal((3, 6, h) if ls is None else (1, int(ls.sum()), h)).astype(np.float32)
        full, bad = W.ENGINE.encoder_layers(x, stack, None, num_heads=2, eps=1e-5, causal=causal, threads=THREADS,
                                            lengths=ls)
        assert bad == 0
        rows = full.reshape(-1, h)
        ends = np.arange(1, 4) * 6 if ls is None else np.cumsum(ls)
        sizes = np.full(3, 6) if ls is None else ls
        scale = float(np.abs(rows).max())
        for keep, at in (("first", ends - sizes), ("last", ends - 1)):
            got, bad = W.ENGINE.encoder_layers(x, stack, None, num_heads=2, eps=1e-5, causal=causal, threads=THREADS,
                                               lengths=ls, keep=keep)
            assert bad == 0 and got.shape == (len(sizes), h), got.shape
            close(got, rows[at], atol=1e-5 * scale, what=f"keep {keep}, {lengths}, pre_norm={pre_norm}")
            close(H.encoder_layers(x, stack, None, num_heads=2, eps=1e-5, causal=causal, lengths=ls, keep=keep),
                  rows[at], atol=1e-5 * scale, what=f"hostops keep {keep}, {lengths}")
    # where the fused pass fails (an overflowing first layer) hostops runs the stack layer by layer and then picks
    huge = dataclasses.replace(_encoder_layer(r, 64, 96), wqkv=_frozen(np.zeros((192, 64), np.float32)))
    stack = [huge, _encoder_layer(r, 64, 96)]
    x = r.standard_normal((2, 3, 64)).astype(np.float32)
    x[0, 1] *= np.float32(1e20)
    want = x
    for L in stack:
        want = K.encoder_layer_ref(want, L, None, num_heads=4, eps=1e-12)
    close(H.encoder_layers(x, stack, None, num_heads=4, eps=1e-12, keep="last"), want[:, -1], atol=2e-4,
          what="keep after a layer redone op by op")

@case
def wasm_encoder_layers_share_a_prefix() -> None:
    # Causal sequences that begin alike (a text tower's first token, a zero-shot template's words): with prefix=P the
    # kernels make x's first P rows once and every sequence after them sees them as its own first rows: pre- and
    # post-norm, a column-form batch and one past encoder.c's COLUMN_ROWS (the row form), one row after the prefix
    # and many. Each sequence's queries meet the same keys in the same order as with its own copy of the prefix;
    # the prefix's own rows are made against its keys alone, where a copy's softmax also sums the masked keys'
    # zeros, which moves the 4-lane WebAssembly sums' order: rows within 1e-6 of their scale (a few float32 ulps
    # through two layers; measured 1.4e-8 of the scale in Node, equal to the bit natively).
    r = rng(34)
    for pre_norm, prefix, lengths, h in ((True, 3, (2, 1, 4), 24), (False, 1, (5, 3), 32), (True, 5, (600, 450), 16)):
        act = "quick_gelu" if pre_norm else "gelu"
        stack = [_encoder_layer(r, h, 40, pre_norm=pre_norm, activation=act) for _ in range(2)]
        ls = np.array(lengths, np.int32)
        start = r.standard_normal((prefix, h)).astype(np.float32)
        own = [r.standard_normal((n, h)).astype(np.float32) for n in lengths]
        shared = np.concatenate([start, *own])[None]
        copies = np.concatenate([np.concatenate([start, rows]) for rows in own])[None]
        kw: dict[str, Any] = dict(num_heads=2, eps=1e-5, causal=True, threads=THREADS)
        full, bad = W.ENGINE.encoder_layers(copies, stack, None, lengths=ls + prefix, **kw)
        got, bad2 = W.ENGINE.encoder_layers(shared, stack, None, lengths=ls, prefix=prefix, **kw)
        assert bad == bad2 == 0
        ends = np.cumsum(ls + prefix)
        want = np.concatenate([full[0, :prefix], *(full[0, e - n:e] for e, n in zip(ends, ls))])
        scale = float(np.abs(want).max())
        close(got[0], want, atol=1e-6 * scale, what=f"shared prefix {prefix}, {lengths}")
        last, bad = W.ENGINE.encoder_layers(shared, stack, None, lengths=ls, prefix=prefix, keep="last", **kw)
        assert bad == 0 and last.shape == (len(ls), h)
        close(last, full[0, ends - 1], atol=1e-6 * scale, what=f"shared prefix {prefix}, kept rows")
        close(last, got[0, prefix + np.cumsum(ls) - 1], atol=1e-6 * scale, what="kept rows against the full pass")
        del kw["threads"]
        assert np.array_equal(H.encoder_layers(shared, stack, None, lengths=ls, prefix=prefix, keep="last", **kw), last)
    with np.testing.assert_raises(ValueError):   # a shared prefix needs causal attention
        W.ENGINE.encoder_layers(shared, stack, None, num_heads=2, eps=1e-5, lengths=ls, prefix=prefix)
    with np.testing.assert_raises(ValueError):   # lengths that miss the prefix's rows
        W.ENGINE.encoder_layers(shared, stack, None, num_heads=2, eps=1e-5, causal=True, lengths=ls + 1,
                                prefix=prefix)
    # where the fused pass fails (an overflowing first layer) hostops gives each sequence its own copy of the prefix
    # and runs the stack op by op: the reference's rows, in the shared layout
    huge = dataclasses.replace(_encoder_layer(r, 64, 96), wqkv=_frozen(np.zeros((192, 64), np.float32)))
    stack = [huge, _encoder_layer(r, 64, 96)]
    x = r.standard_normal((1, 2 + 3 + 1, 64)).astype(np.float32)
    x[0, 3] *= np.float32(1e20)
    ls = np.array([3, 1], np.int32)
    copies = np.concatenate([x[0, :2], x[0, 2:5], x[0, :2], x[0, 5:]])[None]
    want = copies
    for L in stack:
        want = K.encoder_layer_ref(want, L, None, num_heads=4, eps=1e-12, causal=True, lengths=ls + 2)
    got = H.encoder_layers(x, stack, None, num_heads=4, eps=1e-12, causal=True, lengths=ls, prefix=2)
    close(got[0], np.concatenate([want[0, :2], want[0, 2:5], want[0, 7:]]), atol=2e-4,
          what="a shared prefix redone op by op")
    close(H.encoder_layers(x, stack, None, num_heads=4, eps=1e-12, causal=True, lengths=ls, prefix=2, keep="last"),
          want[0, [4, 7]], atol=2e-4, what="a shared prefix's kept rows, op by op")


# -- quantized products and a whole llama block (hostkernels/quant.c, llama.c) ------------------------

def _qweight(r: np.random.Generator, kind: str, n: int, k: int) -> QuantMatrix:
    """An (n, k) weight at a trained model's scale, quantized by ggml's reference quantizer."""
    return QuantMatrix(quantize((r.standard_normal((n, k)) * 0.05).astype(np.float32), kind), kind, (n, k))


# (M rows, N, K): one row and one block; N off every vector width and off the parallel parts; K of 1, 3, 5
# blocks; SmolLM2's shapes for a decode step and a 40-token prompt; a large head-like product.
_Q_SHAPES = [(1, 1, 32), (1, 7, 64), (2, 5, 96), (3, 33, 160), (1, 192, 576), (40, 64, 576), (5, 576, 1536),
             (1, 4099, 576)]


@case
def wasm_q_matmul_integer_dots() -> None:
    # The quantized product is the reference's exactly up to float32 rounding: the activations are quantized
    # the same way and every block's integer sum is exact, so the only difference is the order of the scaled
    # sums, which quant.q8_matmul_ref bounds ((nb + 8) roundings on the sum of the terms' magnitudes).
    r = rng(21)
    for kind in ("Q4_1", "Q8_0"):
        for m, n, k in _Q_SHAPES:
            w, x = _qweight(r, kind, n, k), r.standard_normal((m, k)).astype(np.float32)
            got = W.q_matmul(x, w.raw, kind, (n, k), threads=THREADS)
            want, bound = q8_matmul_ref(x, w)
            close(got, want, atol=bound + 1e-30, what=f"q_matmul {kind} {m}x{n}x{k}")
            # and what 8-bit activations cost against the float product: below 2% of the output's scale here
            exact = matmul_ref(x, w)
            assert np.abs(got - exact).max() <= 0.02 * np.abs(exact).max() + 1e-6, (kind, m, n, k)


@case
def wasm_q_matmul_every_half_scale() -> None:
    # Q4_1's block scale d and offset m are halves, which the WebAssembly builds convert by their own arithmetic
    # (f16(): no F16C there) and the native build by F16C, two at once: every finite half (zeros, subnormals,
    # negatives, 65504) as a block's d and as another's m, against the reference's NumPy float16, within its bound.
    # Rows of 2 and 3 blocks (the native loop's paired blocks and its odd one); 1, 3 and 6 activation rows (one
    # row, three rows together, four together and two).
    r = rng(24)
    bits = np.arange(1 << 16, dtype=np.uint16)
    finite = bits[np.isfinite(bits.view(np.float16))]
    for blocks in (2, 3):
        halves = np.concatenate([finite, r.permutation(finite)])
        halves = np.concatenate([halves, finite[: -len(halves) % (2 * blocks)]]).reshape(-1, blocks, 2)
        raw = np.concatenate([halves.view(np.uint8), r.integers(0, 256, (len(halves), blocks, 16), dtype=np.uint8)],
                             axis=2)
        n, k = len(halves), blocks * 32
        w = QuantMatrix(raw.reshape(-1), "Q4_1", (n, k))
        for m in (1, 3, 6):
            x = r.standard_normal((m, k)).astype(np.float32)
            want, bound = q8_matmul_ref(x, w)
            close(W.q_matmul(x, w.raw, "Q4_1", (n, k), threads=THREADS), want, atol=bound + 1e-30,
                  what=f"every half, {blocks} blocks, {m} rows")


@case
def wasm_q_matmul_non_finite_inputs_give_nan() -> None:
    # A NaN or an infinity in an activation block makes that row's every output NaN (never a finite wrong
    # answer); the other rows are untouched.
    r = rng(22)
    for kind in ("Q4_1", "Q8_0"):
        w = _qweight(r, kind, 9, 64)
        for bad in (np.nan, np.inf, -np.inf):
            x = r.standard_normal((3, 64)).astype(np.float32)
            x[1, 40] = bad
            got = W.q_matmul(x, w.raw, kind, (9, 64))
            assert np.isnan(got[1]).all(), (kind, bad, got[1])
            close(got[[0, 2]], q8_matmul_ref(x[[0, 2]], w)[0], atol=1e-5, what=f"rows beside a {bad}")


@case
def wasm_q_matmul_rejects_what_it_cannot_take() -> None:
    r = rng(23)
    w = _qweight(r, "Q4_1", 4, 64)
    x = r.standard_normal((2, 64)).astype(np.float32)
    for args, what in [((x[:, :48], w.raw, "Q4_1", (4, 48)), "a multiple of 32"),
                       ((x, w.raw[:-1], "Q4_1", (4, 64)), "bytes"),
                       ((x, w.raw, "F16", (4, 64)), "Q4_1 or Q8_0"),
                       ((x[0], w.raw, "Q4_1", (4, 64)), "needs x")]:
        try:
            W.q_matmul(*args)
        except ValueError as exc:
            assert what in str(exc), (what, exc)
        else:
            raise AssertionError(f"q_matmul took {what!r}")


def _qlayer(r: np.random.Generator, dim: int, heads: int, kv_heads: int, ffn: int) -> LR.Layer:
    hd = dim // heads

    def gamma() -> np.ndarray:
        return (1 + 0.1 * r.standard_normal(dim)).astype(np.float32)

    return LR.Layer(gamma(), _qweight(r, "Q4_1", dim, dim), _qweight(r, "Q4_1", kv_heads * hd, dim),
                    _qweight(r, "Q4_1", kv_heads * hd, dim), _qweight(r, "Q4_1", dim, dim), gamma(),
                    _qweight(r, "Q4_1", ffn, dim), _qweight(r, "Q4_1", ffn, dim), _qweight(r, "Q4_1", dim, ffn))


# (dim, heads, kv_heads, ffn, positions per call, blocks per call): one head and one block; two grouped-head blocks with
# a prompt then decode steps; 5 positions over a single kv head; two of SmolLM2's blocks, a 40-token prompt and two steps.
_LLAMA = [(32, 1, 1, 32, (1,), 1), (64, 4, 2, 96, (3, 1, 1), 2), (128, 4, 1, 224, (5, 2), 1),
          (576, 9, 3, 1536, (40, 1, 1), 2)]


@case
def wasm_llama_layers() -> None:
    # Each block against llama_ref.block on the same input (the kernel's output of the block before), with the same
    # 8-bit products (q8_matmul_ref). Both compute in float32, so the keys, values and outputs agree to rounding
    # (measured <= 3e-6 on O(1)-O(10) values: 1e-5 of the scale), except where a rounding difference moves an
    # activation across a step of its 8-bit grid: that moves the products it enters by one step's worth, and
    # through attention every later row (measured up to 0.052 on values up to 8.9, in 1-3 of the 40 rows of the
    # prompt). So: the median output within 1e-5 of the scale, every output within 1% of it. Fed the reference's
    # own outputs instead, a second block inherits those flips in whole rows (its median error 1e-3 of the scale
    # with one BLAS, 1e-6 with another). Then all blocks in one call give exactly what one call per block gives,
    # caches included. The kernels' caches are views of one (blocks, rows, width) array, as a model's are.
    r = rng(24)
    for dim, heads, kvh, ffn, steps, n in _LLAMA:
        layers, hd = [_qlayer(r, dim, heads, kvh, ffn) for _ in range(n)], dim // heads
        config = LR.LlamaConfig(n, dim, heads, kvh, ffn, 100, 1e-5, 10000.0, sum(steps))
        cache = LR.KVCache(config, sum(steps))
        kc, vc, kc1, vc1 = (np.zeros((n, sum(steps), kvh * hd), np.float32) for _ in range(4))
        blocks = [W.llama_block((m.attn_norm, m.ffn_norm), tuple(w.raw for w in (m.wq, m.wk, m.wv, m.wo, m.w_gate, m.w_up,
                                m.w_down)), "Q4_1", heads=heads, kv_heads=kvh, eps=1e-5) for m in layers]
        for t in steps:
            start = cache.length
            x = r.standard_normal((t, dim)).astype(np.float32)
            cos, sin = LR.rope_angles(np.arange(start, start + t), hd, 10000.0)
            what = f"{n} llama blocks dim {dim} heads {heads}/{kvh} ffn {ffn}, {t} at {start}"
            one = x.copy()
            for i, layer in enumerate(layers):
                want = LR.block(one, layer, i, cache, cos, sin, config, linear=lambda a, w: q8_matmul_ref(a, w)[0])
                W.llama_layers(one, start, cos, sin, [blocks[i]], [kc1[i]], [vc1[i]], threads=THREADS)
                rows = start + t
                for a, b in [(one, want), (kc1[i, :rows], cache.k[i, :rows].reshape(rows, -1)),
                             (vc1[i, :rows], cache.v[i, :rows].reshape(rows, -1))]:
                    scale = float(np.abs(b).max())
                    err = np.abs(a - b)
                    assert np.median(err) <= 1e-5 * scale and err.max() <= 0.01 * scale, \
                        f"{what}, block {i}: max error {err.max():.3g} on a scale of {scale:.3g}"
            cache.length = start + t
            got = x.copy()
            W.llama_layers(got, start, cos, sin, blocks, list(kc), list(vc), threads=THREADS)
            assert np.array_equal(got, one) and np.array_equal(kc, kc1) and np.array_equal(vc, vc1), \
                f"{what}: one call for all blocks differs from one call per block"


@case
def wasm_llama_layers_reject_what_does_not_fit() -> None:
    r = rng(25)
    layer = _qlayer(r, 64, 4, 2, 96)
    weights = tuple(m.raw for m in (layer.wq, layer.wk, layer.wv, layer.wo, layer.w_gate, layer.w_up, layer.w_down))
    norms = (layer.attn_norm, layer.ffn_norm)
    for kwargs in (dict(heads=3, kv_heads=1), dict(heads=4, kv_heads=3)):
        try:
            W.llama_block(norms, weights, "Q4_1", eps=1e-5, **kwargs)
        except ValueError as exc:
            assert "do not fit together" in str(exc), exc
        else:
            raise AssertionError(f"llama_block took {kwargs}")
    block = W.llama_block(norms, weights, "Q4_1", heads=4, kv_heads=2, eps=1e-5)
    x = r.standard_normal((2, 64)).astype(np.float32)
    cos, sin = LR.rope_angles(np.arange(2), 16, 10000.0)
    small, room = np.zeros((1, 32), np.float32), np.zeros((2, 32), np.float32)   # room for 1 of the 2 positions; for both
    m = _qlayer(r, 32, 1, 1, 32)   # a block of another width: blocks called together share theirs
    other = W.llama_block((m.attn_norm, m.ffn_norm), tuple(w.raw for w in (m.wq, m.wk, m.wv, m.wo, m.w_gate, m.w_up,
                          m.w_down)), "Q4_1", heads=1, kv_heads=1, eps=1e-5)
    for args in ((x, 0, cos, sin, [block], [small], [small]), (x[:, :32].copy(), 0, cos, sin, [block], [room], [room]),
                 (x, 0, cos, sin, [block, block], [room], [room]), (x, 0, cos, sin, [], [], []),
                 (x, 0, cos, sin, [block, other], [room, room], [room, room])):
        try:
            W.llama_layers(*args)
        except ValueError as exc:
            assert "do not fit" in str(exc), exc
        else:
            raise AssertionError(f"llama_layers took {[getattr(a, 'shape', a) for a in args]}")


# -- a decoder's step: whole pre-norm decoder layers, the vocabulary's product, the greedy choice -----------------

def _decoder_layer(r: np.random.Generator, h: int, f: int) -> K.DecoderLayer:
    """Read-only weights at a trained model's scale, as _encoder_layer's."""
    def w(*shape: int) -> np.ndarray:
        return _frozen((r.standard_normal(shape) * 0.05).astype(np.float32))

    def gamma(n: int) -> np.ndarray:
        return _frozen((1 + 0.1 * r.standard_normal(n)).astype(np.float32))

    return K.DecoderLayer(ln1_g=gamma(h), ln1_b=w(h), wqkv=w(3 * h, h), bqkv=w(3 * h), wo=w(h, h), bo=w(h),
                          lnx_g=gamma(h), lnx_b=w(h), wxq=w(h, h), bxq=w(h), wxo=w(h, h), bxo=w(h), ln2_g=gamma(h),
                          ln2_b=w(h), wi=w(f, h), bi=w(f), wo2=w(h, f), bo2=w(h))


# (hidden, heads, ffn, encoder rows, steps: new rows per call): one row and one key; widths off the vectors and the
# panels; Whisper tiny's layer (384 wide, 6 heads, 1500 encoder rows) with its 2-token prompt then single steps.
_DECODER = [(8, 2, 12, 1, (1, 1)), (12, 3, 20, 7, (2, 1, 3)), (20, 4, 28, 13, (3, 1)), (384, 6, 1536, 1500, (2, 1, 1))]


@case
def wasm_decoder_layers() -> None:
    # Two layers per call against decoder_layer_ref layer by layer, the caches carried across calls. Tolerance: the
    # rows are O(1) residual sums; each product errs by at most K u sum|a||b| (K <= 1536: ~1e-4 of its scale) and the
    # kernel's float32 attention differs from the float64 reference's by rounding: atol 2e-4 on values and caches.
    r = rng(31)
    for h, heads, f, enc, steps in _DECODER:
        layers = [_decoder_layer(r, h, f) for _ in range(2)]
        cross = [(_frozen(r.standard_normal((enc, h)).astype(np.float32)),
                  _frozen(r.standard_normal((enc, h)).astype(np.float32))) for _ in layers]
        rows = sum(steps)
        kc, vc, kr, vr = (np.zeros((2, rows + 1, h), np.float32) for _ in range(4))
        start = 0
        for t in steps:
            x = r.standard_normal((t, h)).astype(np.float32)
            want = x
            for i, layer in enumerate(layers):
                want = K.decoder_layer_ref(want, layer, kr[i], vr[i], start, *cross[i], num_heads=heads, eps=1e-5)
            got = x.copy()
            W.ENGINE.decoder_layers(got, start, layers, list(kc), list(vc), cross, num_heads=heads, eps=1e-5,
                                    threads=THREADS)
            what = f"decoder layers h{h} heads{heads} f{f} enc{enc}: {t} at {start}"
            close(got, want, atol=2e-4, what=what)
            close(kc[:, :start + t], kr[:, :start + t], atol=2e-4, what=what + " (keys)")
            close(vc[:, :start + t], vr[:, :start + t], atol=2e-4, what=what + " (values)")
            assert not kc[:, start + t:].any(), f"{what}: rows past the new ones written"
            start += t


@case
def wasm_decoder_layers_reject_what_does_not_fit() -> None:
    r = rng(32)
    layer = _decoder_layer(r, 16, 24)
    cross = [(_frozen(np.zeros((5, 16), np.float32)), _frozen(np.zeros((5, 16), np.float32)))]
    room, small = np.zeros((3, 16), np.float32), np.zeros((1, 16), np.float32)
    x = r.standard_normal((2, 16)).astype(np.float32)
    for args, heads in (((x, 0, [layer], [small], [small], cross), 4), ((x, 0, [layer], [room], [room], cross), 3),
                        ((x[:, :12].copy(), 0, [layer], [room], [room], cross), 4),
                        ((x, 0, [layer, layer], [room], [room], cross), 4)):
        try:
            W.ENGINE.decoder_layers(*args, num_heads=heads, eps=1e-5)
        except ValueError as exc:
            assert "do not fit" in str(exc), exc
        else:
            raise AssertionError(f"decoder_layers took {[getattr(a, 'shape', a) for a in args]} with {heads} heads")
    writable = dataclasses.replace(layer, wi=np.array(layer.wi))
    try:
        W.ENGINE.decoder_layers(x, 0, [writable], [room], [room], cross, num_heads=4, eps=1e-5)
    except ValueError as exc:
        assert "read-only" in str(exc), exc
    else:
        raise AssertionError("decoder_layers packed a writable weight")


@case
def wasm_matmul_threads() -> None:
    # A few rows against a large read-only weight, its column panels shared over the threads: Higham's bound, as
    # matmul's. Shapes: one of everything; off the panels; a 7-row block; a vocabulary-sized weight's 2 rows.
    r = rng(33)
    for m, k, n in ((1, 1, 1), (1, 7, 9), (7, 33, 70), (2, 384, 5001)):
        a, w, bias = _uniform(r, (m, k)), _frozen(_uniform(r, (n, k))), _frozen(_uniform(r, (n,)))
        for b in (None, bias):
            got = W.ENGINE.matmul_threads(a, w, b, threads=THREADS)
            bound = 2 * (k + 1) * U * (np.abs(a) @ np.abs(w.T) + (0 if b is None else np.abs(b))) + 1e-30
            close(got, K.matmul_ref(a, w, b, transpose_b=True), atol=bound, what=f"matmul_threads {m}x{k}x{n}")


@case
def wasm_project_q8() -> None:
    # A vocabulary's logits from its int8 copy: the kernel's sums against float64 ones of the same int8 rows times
    # their scales, within Higham's bound, 2 (K + 2) u s_j sum |x_i q_ji| (any order, and the scale's product).
    # Shapes: one of everything; K off the vectors (4-lane, 8 and 16 natively) and their four-accumulator runs; N off
    # the threads' parts; Whisper's width; every int8 value, -128 and 127 included.
    r = rng(35)
    for k, n in ((1, 1), (7, 5), (33, 70), (65, 3), (384, 4099)):
        x = _uniform(r, (k,))
        q = _frozen(r.integers(-128, 128, (n, k)).astype(np.int8))
        scale = _frozen(r.uniform(1e-3, 1, n).astype(np.float32))
        got = W.ENGINE.project_q8(x, q, scale, threads=THREADS)
        w64, x64 = q.astype(np.float64) * scale[:, None], x.astype(np.float64)
        bound = 2 * (k + 2) * U * (np.abs(w64) @ np.abs(x64)) + 1e-30
        close(got, (w64 @ x64).astype(np.float32), atol=bound, what=f"project_q8 {k}x{n}")
    ok_q, ok_s = _frozen(np.zeros((3, 4), np.int8)), _frozen(np.ones(3, np.float32))
    for q, scale, x in ((_frozen(np.zeros((3, 4), np.float32)), ok_s, np.zeros(4, np.float32)),   # not int8
                        (ok_q, ok_s, np.zeros(3, np.float32)),                                     # x of 3 for K 4
                        (ok_q, _frozen(np.ones(4, np.float32)), np.zeros(4, np.float32))):         # 4 scales, 3 rows
        try:
            W.ENGINE.project_q8(x, q, scale)
        except ValueError as exc:
            assert "project_q8" in str(exc), exc
        else:
            raise AssertionError(f"project_q8 took {q.dtype} {q.shape}, {scale.shape} scales, x {x.shape}")


@case
def wasm_greedy() -> None:
    # The token is the reference's (the first of equals); its log-probability within 1e-5 (float32 exp, ~1 ulp,
    # summed in double). NaN, +inf and an all -inf row are the reference's to decide: the kernel says None.
    r = rng(34)
    for n in (1, 7, 51864):
        z = (r.standard_normal(n) * 4).astype(np.float32)
        bias = np.zeros(n, np.float32)
        bias[r.integers(0, n, n // 3)] = -np.inf
        bias[int(np.argmax(z))] = -np.inf if n > 1 else 0.0   # the largest logit suppressed
        for b in (None, _frozen(bias)):
            tok, logprob = W.ENGINE.greedy(z, b)
            want_tok, want_lp = K.greedy_ref(z, b)
            assert tok == want_tok and abs(logprob - want_lp) <= 1e-5, (n, tok, want_tok, logprob, want_lp)
    ties = np.array([1.0, 3.0, 3.0, -2.0], np.float32)
    assert W.ENGINE.greedy(ties)[0] == 1 == K.greedy_ref(ties)[0]
    for bad in ([0.0, np.nan, 1.0], [0.0, np.inf], [-np.inf, -np.inf]):
        assert W.ENGINE.greedy(np.array(bad, np.float32)) is None, bad
    assert H.greedy(np.array([0.0, np.nan], np.float32))[0] == K.greedy_ref(np.array([0.0, np.nan], np.float32))[0]


def _cropped_through(resized: np.ndarray, window: tuple[int, int, int, int], table: np.ndarray) -> np.ndarray:
    """The window of a resized image, zero bytes outside it, each byte through its channel's table row."""
    x0, y0, cw, ch = window
    h, w = resized.shape[:2]
    padded = np.zeros((ch, cw, 3), np.uint8)
    ys, xs = slice(max(0, y0), min(h, y0 + ch)), slice(max(0, x0), min(w, x0 + cw))
    if ys.stop > ys.start and xs.stop > xs.start:
        padded[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = resized[ys, xs]
    return np.stack([table[c][padded[..., c]] for c in range(3)])


@case
def wasm_resample_image() -> None:
    # Pillow's resize to the bit (references.resample_ref: its integer arithmetic, checked against Pillow itself in
    # tests/models/test_images.py), the crop and the table: exact equality, no tolerance. Shapes: 1x1 up to 224;
    # one row and one column; odd sizes off the 4-byte pixel loads; an axis that keeps its size; a large downscale
    # (27 taps); a crop inside, one padded on every side, one past the image on one side only; both filters and both
    # pass orders. The source's last pixel is read byte by byte (its 4-byte load would leave the buffer): a source
    # that ends at a page's end in WebAssembly would trap otherwise.
    r = rng(36)
    table = _frozen(r.uniform(-2, 2, (3, 256)).astype(np.float32))
    shapes = (((1, 1), (224, 224), (0, 0, 224, 224)), ((1, 9), (5, 3), (0, 0, 5, 3)),
              ((9, 1), (2, 7), (-3, -2, 8, 11)), ((7, 5), (7, 3), (0, 0, 7, 3)),
              ((151, 149), (224, 225), (0, 1, 224, 224)), ((300, 451), (336, 224), (56, 0, 224, 224)),
              ((1411, 1000), (224, 316), (0, 46, 224, 224)), ((60, 330), (224, 50), (-10, 3, 200, 40)),
              ((225, 223), (223, 225), (0, 0, 223, 225)))
    for (h, w), size, window in shapes:
        rgb = r.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for resample in (2, 3):
            for vertical_first in (False, True):
                got = W.ENGINE.resample_image(rgb, size, window, resample, table, vertical_first=vertical_first,
                                              threads=THREADS)
                resized = K.resample_ref(rgb, size, resample, vertical_first=vertical_first)
                want = _cropped_through(resized, window, table)
                assert got.shape == want.shape and np.array_equal(got, want), ((h, w), size, window, resample,
                                                                              vertical_first)
    rgb = np.zeros((4, 4, 3), np.uint8)
    for bad in ((rgb.astype(np.float32), (2, 2), 3, table), (rgb[..., :2], (2, 2), 3, table),
                (rgb, (0, 2), 3, table), (rgb, (2, 2), 1, table), (rgb, (2, 2), 3, table[:2])):
        try:
            W.ENGINE.resample_image(bad[0], bad[1], (0, 0, 2, 2), bad[2], bad[3])
        except ValueError as exc:
            assert "resample_image" in str(exc), exc
        else:
            raise AssertionError(f"resample_image took {bad[0].dtype} {bad[0].shape} to {bad[1]}, filter {bad[2]}")


# -- the module itself ------------------------------------------------------------------------------

@case
def wasm_kernels_work_in_place_on_numpy_memory() -> None:
    # Zero-copy: the kernel gets a NumPy buffer's address and writes through it, so the kernels and NumPy
    # share one linear memory (Pyodide's).
    x = np.linspace(-4, 4, 37, dtype=np.float32)
    want = K.gelu_ref(x)
    address = x.__array_interface__["data"][0]
    W.ENGINE.lib.gp_gelu(address, address, x.size)
    close(x, want, atol=1e-6, what="gelu in place")


@case
def wasm_reports_abi_and_reason() -> None:
    assert W.reason() == "", W.reason()
    assert int(W.ENGINE.lib.gp_abi()) == W.ABI
