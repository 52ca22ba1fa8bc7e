"""Q4_1 / Q8_0 dequantization bit-exact against ggml's own (PyPI `gguf`, test-only) on every tensor of the real
SmolLM2 file, the block layout checked by hand, and the matvec/matmul/embedding references."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gpuport.errors import UnsupportedFeature
from gpuport.host.quant import (
    QuantMatrix,
    as_words,
    dequantize,
    dequantize_q4_1,
    dequantize_q8_0,
    embedding_ref,
    matmul_ref,
    matvec_ref,
    quantize,
    row_bytes,
)
from smollm2 import gguf_file, random_blocks


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_every_real_tensor_bit_exact():
    f = gguf_file()
    for name, t in f.tensors.items():
        raw = f.raw(name)
        ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(t.ggml_type)).reshape(t.shape)
        mine = dequantize(raw, t.type_name, t.shape)
        assert mine.dtype == np.float32 and mine.shape == t.shape, name
        assert np.array_equal(_bits(mine), _bits(ref)), f"{name} ({t.type_name}) differs from ggml's dequantize"


def _q4_1_block(d: float, m: float, qs: np.ndarray) -> bytes:
    return np.float16(d).tobytes() + np.float16(m).tobytes() + qs.astype(np.uint8).tobytes()


def test_q4_1_block_layout_by_hand():
    """Low nibbles are elements 0..15, high nibbles 16..31; value = d*q + m."""
    j = np.arange(16)
    block = _q4_1_block(0.5, -2.0, j | ((15 - j) << 4))
    want = np.concatenate([j, 15 - j]) * 0.5 - 2.0
    assert dequantize_q4_1(block).tolist() == want.tolist()


def test_q8_0_block_layout_by_hand():
    q = np.arange(-128, 128, 8, dtype=np.int8)
    block = np.float16(0.25).tobytes() + q.tobytes()
    assert dequantize_q8_0(block).tolist() == (q.astype(np.float64) * 0.25).tolist()


def test_a_broken_nibble_order_is_caught():
    """The bit-exact comparison has teeth: swapping the nibble halves makes it fail on the real weights."""
    f = gguf_file()
    raw = f.raw("blk.0.attn_q.weight")
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    b = raw.reshape(-1, 20)
    swapped = np.concatenate([b[:, :4], ((b[:, 4:] & 0x0F) << 4) | (b[:, 4:] >> 4)], axis=1)
    assert not np.array_equal(_bits(dequantize_q4_1(swapped)), _bits(ref.ravel()))
    interleaved = dequantize_q4_1(raw).reshape(-1, 2, 16).transpose(0, 2, 1).ravel()  # q0 lo, q0 hi, q1 lo, ...
    assert not np.array_equal(_bits(interleaved), _bits(ref.ravel()))


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_references(kind):
    rng = np.random.default_rng(1)
    n, k = 7, 96
    w = QuantMatrix(random_blocks(kind, n, k, rng), kind, (n, k))
    dense = w.dense().astype(np.float64)
    x = rng.standard_normal(k).astype(np.float32)
    X = rng.standard_normal((5, k)).astype(np.float32)
    assert matvec_ref(w, x).dtype == np.float32
    np.testing.assert_array_equal(matvec_ref(w, x), (dense @ x).astype(np.float32))
    np.testing.assert_array_equal(matmul_ref(X, w), (X.astype(np.float64) @ dense.T).astype(np.float32))
    ids = np.array([6, 0, 0, 3])
    np.testing.assert_array_equal(embedding_ref(w, ids), w.dense()[ids])
    assert row_bytes(kind, k) * n == w.raw.nbytes


def test_real_embedding_rows_are_the_dense_rows():
    f = gguf_file()
    t = f.tensors["token_embd.weight"]
    table = QuantMatrix(f.raw(t.name), t.type_name, t.shape)
    ids = np.array([0, 1, 2, 49151, 12345])
    rows = f.raw(t.name).reshape(49152, 18 * 34)[ids]
    want = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType.Q8_0).reshape(5, 576)
    np.testing.assert_array_equal(embedding_ref(table, ids), want)


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_quantize_is_ggml_bit_for_bit(kind):
    """gpuport.host.quant.quantize against gguf-py's reference quantizer, on awkward blocks: all zeros (d = 0),
    constant, one huge value, tiny values, a single row and many."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((9, 160)) * 0.05).astype(np.float32)
    x[0, :32] = 0.0
    x[1, 32:64] = 3.0
    x[2, 64] = 1e4
    x[3] *= 1e-6
    want_type = getattr(gguf.GGMLQuantizationType, kind)
    for rows in (x, x[:1]):
        got = quantize(rows, kind)
        np.testing.assert_array_equal(got, gguf.quants.quantize(rows, want_type).ravel())
        # per 32-value block: half a quantization step, plus the f16 rounding of the scale (and Q4_1's min),
        # relative 2^-11 while normal, absolute 2^-24 (f16's subnormal spacing) times at most 127 below that
        blocks, back = rows.reshape(-1, 32), dequantize(got, kind, rows.shape).reshape(-1, 32)
        amax = np.abs(blocks).max(axis=1, keepdims=True)
        step = (np.ptp(blocks, axis=1, keepdims=True) / 15) if kind == "Q4_1" else amax / 127
        assert np.all(np.abs(back - blocks) <= 0.5 * step + 2.0**-10 * amax + 127 * 2.0**-24)
    words = as_words(quantize(x[:1], "Q8_0"))   # 170 bytes: padded to 43 words
    assert words.dtype == np.uint32 and words.size == 43


def test_errors():
    rng = np.random.default_rng(2)
    w = QuantMatrix(random_blocks("Q4_1", 2, 64, rng), "Q4_1", (2, 64))
    with pytest.raises(ValueError, match=r"\(64,\)"):
        matvec_ref(w, np.zeros(32, np.float32))
    with pytest.raises(ValueError, match=r"\(M, 64\)"):
        matmul_ref(np.zeros((3, 32), np.float32), w)
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        embedding_ref(w, np.array([2]))
    with pytest.raises(ValueError, match="needs 80 bytes"):
        QuantMatrix(np.zeros(60, np.uint8), "Q4_1", (2, 64))
    with pytest.raises(ValueError, match="whole number"):
        row_bytes("Q8_0", 48)
    with pytest.raises(ValueError, match="whole number"):
        dequantize_q8_0(np.zeros(35, np.uint8))
    with pytest.raises(UnsupportedFeature, match="Q4_K"):
        QuantMatrix(np.zeros(144, np.uint8), "Q4_K", (1, 256))
    with pytest.raises(ValueError, match=r"multiple of 32, got \(2, 48\)"):
        quantize(np.zeros((2, 48), np.float32), "Q8_0")
    with pytest.raises(UnsupportedFeature, match="Q4_K"):
        quantize(np.zeros((1, 32), np.float32), "Q4_K")
