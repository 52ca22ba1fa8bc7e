"""The WebAssembly SIMD kernels (gpuport.wasm_kernels) against their NumPy references, written once: run in
Pyodide under Node (tests/test_wasm_node.py) and in every browser lane's page (e2e/test_page_wasm.py).

Shapes are chosen to hit every edge of the kernels: 1 and 1x1, sizes that are not multiples of the 4-wide
vectors, the 4-row tiles or the 8-column panels, batched and broadcast operands, MiniLM's own shapes and
a large 256x384x1536 product. Tolerances are those of tests/cases.py, justified there (Higham's bound for
matmul, atol 1e-6 for gelu, rtol 1e-5 / atol 1e-6 for softmax, n*u-scaled for layer_norm, rtol 1e-4 /
atol 2e-5 sqrt(d) for attention).

`run(name)` fails (never skips) when the kernels are unavailable, with the reason the page gave.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from cases import U, close

from gpuport import kernels as K
from gpuport import wasm_kernels as W

CASES: dict[str, Callable[[], None]] = {}


def case(fn: Callable[[], None]) -> Callable[[], None]:
    CASES[fn.__name__] = fn
    return fn


def run(name: str) -> None:
    assert W.available(), f"WebAssembly SIMD kernels unavailable: {W.reason()}"
    CASES[name]()


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
    # every leftover-row count (1..3 after 4-row tiles) against every panel width (1..8 columns), both layouts
    r = rng(1)
    for m in (1, 2, 3, 4, 5, 6, 7, 9):
        for n in (1, 2, 3, 4, 5, 7, 8, 9, 15, 17):
            for k in (1, 3, 8, 13):
                a, bias = _uniform(r, (m, k)), _uniform(r, (n,))
                check_matmul(a, _uniform(r, (k, n)), bias, what=f"matmul {m}x{k}x{n}")
                check_matmul(a, _uniform(r, (n, k)), None, transpose_b=True, what=f"matmul {m}x{k}x{n}^T")


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
    del w, other
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


# -- the module itself ------------------------------------------------------------------------------

@case
def wasm_kernels_work_in_place_on_numpy_memory() -> None:
    # Zero-copy: the kernel gets a NumPy buffer's address and writes through it, so the kernels and NumPy
    # share one linear memory (Pyodide's).
    x = np.linspace(-4, 4, 37, dtype=np.float32)
    want = K.gelu_ref(x)
    address = x.__array_interface__["data"][0]
    W._K.gp_gelu(address, address, x.size)
    close(x, want, atol=1e-6, what="gelu in place")


@case
def wasm_reports_abi_and_reason() -> None:
    assert W.reason() == "", W.reason()
    assert int(W._K.gp_abi()) == W.ABI
