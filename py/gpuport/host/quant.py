"""ggml block quantization (Q4_1, Q8_0): exact NumPy dequantization and the references of the quantized kernels.

Blocks of 32 weights along a row (the K axis of an (N, K) matrix, as ggml stores weights), little-endian:
- Q4_1, 20 bytes: f16 d, f16 m, 16 bytes qs; element j < 16 is qs[j] & 0xF, element 16 + j is qs[j] >> 4;
  value = d*q + m (two f32 roundings, as ggml's C and gguf-py's NumPy compute it).
- Q8_0, 34 bytes: f16 d, 32 int8 q; value = d*q. 34 is not a multiple of 4: on the GPU a block starts on
  any 2-byte boundary and its bytes straddle u32 words.

The matvec/matmul references accumulate in float64 and round once: they are the exact result the f32 GPU
kernels are bounded against (tests/host/test_quant_kernels.py states the bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedFeature

QK = 32
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
SUPPORTED = ("F32", "F16", "Q4_1", "Q8_0")


def _bytes(raw: np.ndarray | bytes | memoryview) -> np.ndarray:
    """A flat uint8 view of `raw` (no copy)."""
    if isinstance(raw, np.ndarray):
        return np.ascontiguousarray(raw).view(np.uint8).ravel()
    return np.frombuffer(raw, dtype=np.uint8)


def _blocks(raw: np.ndarray | bytes | memoryview, kind: str) -> np.ndarray:
    a = _bytes(raw)
    size = BLOCK_BYTES[kind]
    if a.size % size:
        raise ValueError(f"{kind}: {a.size} bytes is not a whole number of {size}-byte blocks")
    return a.reshape(-1, size)


def _f16(pair: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 -> (n, 1) float32 from the little-endian f16 they hold."""
    return np.ascontiguousarray(pair).view("<f2").astype(np.float32)


def dequantize_q4_1(raw: np.ndarray | bytes | memoryview) -> np.ndarray:
    """Q4_1 blocks -> float32 values, flat, bit-identical to ggml's dequantize_row_q4_1."""
    b = _blocks(raw, "Q4_1")
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    qs = b[:, 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return ((d * q) + m).ravel()


def dequantize_q8_0(raw: np.ndarray | bytes | memoryview) -> np.ndarray:
    """Q8_0 blocks -> float32 values, flat, bit-identical to ggml's dequantize_row_q8_0."""
    b = _blocks(raw, "Q8_0")
    d = _f16(b[:, 0:2])
    q = b[:, 2:34].view(np.int8).astype(np.float32)
    return (q * d).ravel()


def quantize(dense: np.ndarray, kind: str) -> np.ndarray:
    """An (N, K) float matrix -> its stored `kind` bytes (uint8), rounding as ggml's reference quantizers
    (quantize_row_q4_1_ref, quantize_row_q8_0_ref) do. For weights of your own, and for the demo's samples."""
    x = np.asarray(dense, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % QK:
        raise ValueError(f"{kind}: quantize needs an (N, K) matrix with K a multiple of {QK}, got {x.shape}")
    b = x.reshape(-1, QK)
    if kind == "Q4_1":
        lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
        d = (hi - lo) / 15.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
        q = np.minimum(15, ((b - lo) * inv + 0.5).astype(np.int32)).astype(np.uint8)
        qs = q[:, :16] | (q[:, 16:] << 4)
        head = np.concatenate([d.astype("<f2").view(np.uint8), lo.astype("<f2").view(np.uint8)], axis=1)
    elif kind == "Q8_0":
        d = np.abs(b).max(axis=1, keepdims=True) / 127.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
        qs = np.round(b * inv).astype(np.int8).view(np.uint8)
        head = d.astype("<f2").view(np.uint8)
    else:
        raise UnsupportedFeature(f"quantize: ggml type {kind} is not one gpuport quantizes to (Q4_1, Q8_0)")
    return np.ascontiguousarray(np.concatenate([head, qs], axis=1)).ravel()


def as_words(raw: np.ndarray) -> np.ndarray:
    """Stored bytes as the u32 words a GPU buffer holds (zero-padded to a whole word): what q_linear and
    q_embedding take."""
    b = _bytes(raw)
    return np.concatenate([b, np.zeros(-b.size % 4, np.uint8)]).view(np.uint32)


def row_bytes(kind: str, k: int) -> int:
    """Bytes of one stored row of `k` elements."""
    if kind in BLOCK_BYTES:
        if k % QK:
            raise ValueError(f"{kind}: a row of {k} elements is not a whole number of {QK}-element blocks")
        return k // QK * BLOCK_BYTES[kind]
    return k * {"F32": 4, "F16": 2}[kind]


def dequantize(raw: np.ndarray | bytes | memoryview, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Stored bytes of a tensor of `kind` (a ggml type name) and NumPy `shape` -> float32 array."""
    if kind == "Q4_1":
        flat = dequantize_q4_1(raw)
    elif kind == "Q8_0":
        flat = dequantize_q8_0(raw)
    elif kind == "F32":
        flat = _bytes(raw).view("<f4").astype(np.float32)
    elif kind == "F16":
        flat = _bytes(raw).view("<f2").astype(np.float32)
    else:
        raise UnsupportedFeature(f"ggml type {kind} is not supported by gpuport (supported: {', '.join(SUPPORTED)})")
    return flat.reshape(shape)


@dataclass
class QuantMatrix:
    """A weight as ggml stores it: (N, K) rows quantized along K, `raw` its bytes (uint8)."""

    raw: np.ndarray
    kind: str
    shape: tuple[int, int]
    _dense: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in SUPPORTED:
            raise UnsupportedFeature(f"ggml type {self.kind} is not supported by gpuport "
                                     f"(supported: {', '.join(SUPPORTED)})")
        self.raw = _bytes(self.raw)
        n, k = self.shape
        want = n * row_bytes(self.kind, k)
        if self.raw.nbytes != want:
            raise ValueError(f"{self.kind} {self.shape} needs {want} bytes, got {self.raw.nbytes}")

    def dense(self) -> np.ndarray:
        """The dequantized (N, K) float32 matrix, computed once."""
        if self._dense is None:
            self._dense = dequantize(self.raw, self.kind, self.shape)
        return self._dense

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows `ids` only (an embedding gather reads a few rows of a large table)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        n, k = self.shape
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"row ids must lie in [0, {n}), got {ids.min()}..{ids.max()}")
        per_row = row_bytes(self.kind, k)
        picked = self.raw.reshape(n, per_row)[ids]
        return dequantize(picked, self.kind, (ids.size, k))


def matvec_ref(w: QuantMatrix, x: np.ndarray) -> np.ndarray:
    """y = W x for a quantized (N, K) W and x (K,): float64 accumulation, rounded once to float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (w.shape[1],):
        raise ValueError(f"matvec: x has shape {x.shape}, W {w.shape} needs ({w.shape[1]},)")
    return (w.dense().astype(np.float64) @ x.astype(np.float64)).astype(np.float32)


def matmul_ref(x: np.ndarray, w: QuantMatrix) -> np.ndarray:
    """Y = X W^T for a prompt X (M, K) and a quantized (N, K) W: float64 accumulation, rounded once."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"matmul: X has shape {x.shape}, W {w.shape} needs (M, {w.shape[1]})")
    return (x.astype(np.float64) @ w.dense().T.astype(np.float64)).astype(np.float32)


def quantize_q8_1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of x (M, K), K a multiple of 32, as the host kernels quantize activations (ggml's Q8_1): per block of
    32, d = max|x| / 127, q = round(x * 127 / max|x|) (ties to even) as int8, s = d * sum(q), all in float32.
    A block holding a NaN or an infinity gets d = s = NaN and q = 0 (its products are NaN). Returns q (M, K)
    int8, d and s (M, K / 32) float32."""
    b = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1, QK)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.abs(b).max(axis=2)
        finite = np.isfinite(b).all(axis=2)
        m = np.where(finite, m, np.float32(0))
        d = (m / np.float32(127)).astype(np.float32)
        inv = np.where(m != 0, np.float32(127) / np.where(m != 0, m, np.float32(1)), np.float32(0)).astype(np.float32)
        q = np.round(b * inv[:, :, None]).astype(np.int8)
    s = (d * q.astype(np.int32).sum(axis=2).astype(np.float32)).astype(np.float32)
    nan = np.float32(np.nan)
    return q.reshape(x.shape), np.where(finite, d, nan), np.where(finite, s, nan)


def _block_parts(w: QuantMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, K) integer weights q, block scales d and offsets m (N, K / 32) as float32 (m = 0 for Q8_0)."""
    n, k = w.shape
    b = _blocks(w.raw, w.kind).reshape(n, k // QK, -1)
    d = _f16(b[:, :, 0:2].reshape(-1, 2)).reshape(n, -1)
    if w.kind == "Q4_1":
        qs = b[:, :, 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int32)
        return q.reshape(n, k), d, _f16(b[:, :, 2:4].reshape(-1, 2)).reshape(n, -1)
    return b[:, :, 2:34].view(np.int8).astype(np.int32).reshape(n, k), d, np.zeros_like(d)


def q8_matmul_ref(x: np.ndarray, w: QuantMatrix) -> tuple[np.ndarray, np.ndarray]:
    """What the host kernels' quantized product computes, Y = X W^T with X quantized by quantize_q8_1: per
    block the exact integer sum of q_w q_x, scaled by d_w d_x, plus m_w s_x for Q4_1, accumulated in float64.
    Returns (Y as float32, a bound on the float32 rounding of the kernels' accumulation in any order and any
    split of a block's sum into vector lanes: (nb + 8) roundings of 2^-24 each, where nb = K / 32, on the sum of
    |d_w d_x| sum|q_w q_x| + |m_w s_x| over the blocks)."""
    if w.kind not in ("Q4_1", "Q8_0"):
        raise UnsupportedFeature(f"q8_matmul_ref: {w.kind} weights (the host kernels take Q4_1 and Q8_0)")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"q8_matmul: X has shape {x.shape}, W {w.shape} needs (M, {w.shape[1]})")
    n, k = w.shape
    xq, xd, xs = quantize_q8_1(x)
    wq, wd, wm = _block_parts(w)
    xb, wb = xq.reshape(len(x), -1, QK).astype(np.int64), wq.reshape(n, -1, QK).astype(np.int64)
    scale = wd[None].astype(np.float64) * xd[:, None].astype(np.float64)
    offset = wm[None].astype(np.float64) * xs[:, None].astype(np.float64)
    y = (scale * np.einsum("mbj,nbj->mnb", xb, wb) + offset).sum(axis=2)
    with np.errstate(invalid="ignore"):
        size = (np.abs(scale) * np.einsum("mbj,nbj->mnb", np.abs(xb), np.abs(wb)) + np.abs(offset)).sum(axis=2)
    return y.astype(np.float32), (k // QK + 8) * 2.0 ** -24 * size


def embedding_ref(table: QuantMatrix, ids: np.ndarray) -> np.ndarray:
    """Rows `ids` of a quantized (V, D) embedding table: (len(ids), D) float32, exact."""
    return table.rows(ids)


__all__ = ["BLOCK_BYTES", "QK", "QuantMatrix", "SUPPORTED", "as_words", "dequantize", "dequantize_q4_1",
           "dequantize_q8_0", "embedding_ref", "matmul_ref", "matvec_ref", "q8_matmul_ref", "quantize", "quantize_q8_1",
           "row_bytes"]
