"""The NumPy references of the built-in ops: the cpu tier's oracle, and what every GPU and host kernel is tested
against. They compute in float32 where the shaders do (float64 where a float32 intermediate could overflow, or
for the llama ops: rounded once), so kernels and references differ by summation order and the erf polynomial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import quant


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def add_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _f32(a + b)


def mul_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _f32(a * b)


def scale_ref(x: np.ndarray, *, a: float, b: float) -> np.ndarray:
    return _f32(x * np.float32(a) + np.float32(b))


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, under float32's ulp at 1).

    NumPy has no erf and math.erf is scalar-only: too slow for the CPU tier's GELU on real layers.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))


def gelu_ref(x: np.ndarray) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        y = 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))
    return _f32(np.where(x64 == -np.inf, 0.0, y))   # the limit, not -inf * 0


def quick_gelu_ref(x: np.ndarray) -> np.ndarray:
    """QuickGELU, x sigmoid(1.702 x) (CLIP's activation), in float64: x / (1 + exp(-1.702 x)), whose exp may
    overflow to inf for very negative x (the quotient is then -0, the limit)."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y = x64 / (1.0 + np.exp(-1.702 * x64))
    return _f32(np.where(x64 == -np.inf, 0.0, y))


# What matmul may apply after its bias (ops.matmul's `activation`): None, or exact GELU.
ACTIVATIONS = (None, "gelu")


def matmul_ref(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *,
               transpose_b: bool = False, activation: str | None = None) -> np.ndarray:
    bb = np.swapaxes(b, -1, -2) if transpose_b else b
    out = np.matmul(a, bb)
    if bias is not None:
        out = out + bias
    return gelu_ref(_f32(out)) if activation == "gelu" else _f32(out)


def softmax_ref(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Max-subtracted, as PyTorch: a NaN anywhere in a row, a +inf, or a row of -inf gives a NaN row."""
    z = x if mask is None else x + mask
    if z.shape[-1] == 0:
        return _f32(z)
    with np.errstate(invalid="ignore", over="ignore"):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return _f32(e / e.sum(axis=-1, keepdims=True))


def layer_norm_ref(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, residual: np.ndarray | None = None, *,
                   eps: float = 1e-5) -> np.ndarray:
    """Biased variance, in float64: no float32 input overflows it (the kernels scale rows instead). A
    residual is added to x first, in float32 (the one rounding the kernels make too)."""
    if residual is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            x = np.add(x, residual, dtype=np.float32)
    if x.shape[-1] == 0:
        return _f32(x)
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x64.mean(axis=-1, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
        return _f32((x64 - mean) / np.sqrt(var + eps) * gamma + beta)


def sum_ref(x: np.ndarray) -> np.ndarray:
    return _f32(x.sum(axis=-1))


def mean_ref(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return _f32(x.mean(axis=-1) if x.shape[-1] else np.full(x.shape[:-1], np.nan))


def check_ids(ids: np.ndarray, rows: int, op: str) -> None:
    """IndexError naming the first id of `ids` outside a table of `rows` rows (its smallest, or its largest)."""
    flat = np.asarray(ids).ravel()
    if flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= rows:
            raise IndexError(f"{op}: id {lo if lo < 0 else hi} is outside the table's {rows} rows")


def embedding_ref(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    check_ids(ids, table.shape[0], "embedding")
    return _f32(table[ids.astype(np.int64)])


def attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
                  num_heads: int, causal: bool = False) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + mask) v per head; `causal`: query i sees keys 0..i only."""
    batch, sq, hidden = q.shape
    sk = k.shape[1]
    d = hidden // num_heads
    qh = q.reshape(batch, sq, num_heads, d).transpose(0, 2, 1, 3)
    kh = k.reshape(batch, sk, num_heads, d).transpose(0, 2, 1, 3)
    vh = v.reshape(batch, sk, num_heads, d).transpose(0, 2, 1, 3)
    scores = (qh @ kh.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d))
    if mask is not None:
        scores = scores + mask[:, None, None, :]
    if causal:
        scores = np.where(np.arange(sk)[None, :] > np.arange(sq)[:, None], np.float32(-np.inf), scores)
    probs = softmax_ref(scores)
    return _f32((probs @ vh).transpose(0, 2, 1, 3).reshape(batch, sq, hidden))


def patchify_ref(pixels: np.ndarray, *, patch: int) -> np.ndarray:
    """A stride-equals-kernel convolution's input as rows (im2col): pixels (B, C, H, W) -> (B, 1 + N, C P P),
    N = (H / P)(W / P) patches in row-major order, each row the patch's values in the conv weight's (C, P, P)
    order; row 0 of each image is zeros, the class token's slot (the model adds its embedding there)."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    cols = np.asarray(pixels, np.float32)[:, :, :gh * patch, :gw * patch].reshape(b, c, gh, patch, gw, patch)
    rows = cols.transpose(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * patch * patch)
    return _f32(np.concatenate([np.zeros((b, 1, c * patch * patch), np.float32), rows], axis=1))


def mean_pool_ref(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return _f32((x * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9)))


def l2_normalize_ref(x: np.ndarray) -> np.ndarray:
    """x / max(||x||, 1e-12), the norm in float64 (no float32 row overflows it; the kernel scales rows)."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        norm = np.sqrt((x64 ** 2).sum(axis=-1, keepdims=True))
        return _f32(x64 / np.maximum(norm, 1e-12))



# --- Whisper's audio front end and its encoder's convolutions (float64, rounded once) ------------------------

def conv1d_out_len(t: int, k: int, stride: int, padding: int) -> int:
    """Output steps of a 1-D convolution: (T + 2 padding - K) // stride + 1."""
    return (t + 2 * padding - k) // stride + 1


def conv1d_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
               padding: int = 0, activation: str | None = None) -> np.ndarray:
    """x (T, C_in) time-major, weight (C_out, C_in, K) as PyTorch stores it, zero padding on both sides:
    out[t, o] = bias[o] + sum_{c,k} xpad[t*stride + k, c] * weight[o, c, k], accumulated in float64 (one
    BLAS product over the (c, k) pairs), then `activation` as matmul_ref applies it."""
    t, cin = x.shape
    cout, _, k = weight.shape
    xp = np.zeros((t + 2 * padding, cin), np.float64)
    xp[padding:padding + t] = x
    t_out = conv1d_out_len(t, k, stride, padding)
    cols = np.lib.stride_tricks.as_strided(xp, (t_out, cin, k), (stride * xp.strides[0], xp.strides[1], xp.strides[0]),
                                           writeable=False)
    out = np.tensordot(cols, np.asarray(weight, np.float64), axes=([1, 2], [1, 2]))
    if bias is not None:
        out = out + bias
    return gelu_ref(_f32(out)) if activation == "gelu" else _f32(out)


def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window of n_fft points in float64 (np.hanning(n_fft + 1)[:-1]), as Whisper's STFT."""
    return np.hanning(n_fft + 1)[:-1]


def dft_table(n_fft: int) -> np.ndarray:
    """stft_power's kernel input (n_fft, 4) float32, computed in float64 and rounded once: row m holds
    cos(2 pi m / n_fft), sin(2 pi m / n_fft), the Hann window's m-th point and 0. The kernel reduces each
    twiddle's angle index (k n) mod n_fft exactly in integers and looks it up here: no GPU cos/sin (their
    accuracy is loose on some GPUs)."""
    angle = (2 * np.pi / n_fft) * np.arange(n_fft)
    return _f32(np.stack([np.cos(angle), np.sin(angle), hann_window(n_fft), np.zeros(n_fft)], axis=1))


def stft_frames(signal: np.ndarray, n_fft: int, hop: int, frames: int | None = None) -> int:
    """The frames the STFT takes: given, else every whole frame, 1 + (N - n_fft) // hop."""
    return 1 + (signal.shape[0] - n_fft) // hop if frames is None else frames


def stft_power_ref(signal: np.ndarray, table: np.ndarray | None = None, *, n_fft: int, hop: int,
                   frames: int | None = None) -> np.ndarray:
    """|rfft(signal[f*hop : f*hop + n_fft] * hann)|^2 per frame in float64: (frames, n_fft // 2 + 1). `table` is
    the kernels' twiddle table (ops.stft_power builds it); the oracle takes np.fft's own."""
    frames = stft_frames(signal, n_fft, hop, frames)
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    spec = np.fft.rfft(np.asarray(signal, np.float64)[idx] * hann_window(n_fft), axis=-1)
    return _f32(spec.real ** 2 + spec.imag ** 2)


LOG_MEL_FLOOR = 1e-10   # Whisper clamps mel power here before log10
LOG_MEL_RANGE = 8.0     # and keeps 8 decades below the loudest value


def log_mel_ref(mel: np.ndarray, *, start: int = 0, rows: int | None = None, end: int | None = None) -> np.ndarray:
    """Whisper's log scaling of mel power (F, n_mels): L = log10(max(mel, 1e-10)), floored at max(L) - 8 over
    all F rows, then (L + 4) / 4; rows [start, start + rows) of it, those at or past `end` zero (a 30 s
    window zero-padded, as faster-whisper pads its features). In float64."""
    f = mel.shape[0]
    rows = f - start if rows is None else rows
    end = f if end is None else end
    logs = np.log10(np.maximum(np.asarray(mel, np.float64), LOG_MEL_FLOOR))
    scaled = (np.maximum(logs, logs.max() - LOG_MEL_RANGE) + 4.0) / 4.0
    out = np.zeros((rows, mel.shape[1]), np.float64)
    valid = max(0, min(rows, end - start))
    out[:valid] = scaled[start:start + valid]
    return _f32(out)

@dataclass(frozen=True)
class EncoderLayer:
    """One transformer encoder layer's weights, host arrays in PyTorch's (out, in) layout, Q, K and V stacked into
    one (3H, H) weight so their products are one matmul: the unit the host runs a whole layer in
    (hostops.encoder_layer). Read-only arrays let the SIMD kernels pack each weight once. Post-norm (BERT's:
    x = LN1(x + attention), x = LN2(x + ffn)) or `pre_norm` (CLIP's and ViT's: x += attention(LN1 x),
    x += ffn(LN2 x)); the FFN's `activation` is "gelu" (exact) or "quick_gelu" (CLIP's)."""

    wqkv: np.ndarray
    bqkv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    wi: np.ndarray
    bi: np.ndarray
    wo2: np.ndarray
    bo2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray
    pre_norm: bool = False
    activation: str = "gelu"


ENCODER_ACTIVATIONS = ("gelu", "quick_gelu")


def encoder_layer_ref(x: np.ndarray, layer: EncoderLayer, mask: np.ndarray | None = None, *, num_heads: int,
                      eps: float, causal: bool = False, lengths: Sequence[int] | None = None) -> np.ndarray:
    """x (B, S, H) through one encoder layer (see EncoderLayer), composed of the single ops' references; with
    `lengths`, x (1, T, H) holds sequences of those lengths one after another, each its own batch item."""
    if lengths is not None:
        bounds = np.cumsum([0, *lengths])
        return np.concatenate([encoder_layer_ref(x[:, a:b], layer, num_heads=num_heads, eps=eps, causal=causal)
                               for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    h = x.shape[-1]
    act = quick_gelu_ref if layer.activation == "quick_gelu" else gelu_ref

    def attend(y: np.ndarray) -> np.ndarray:
        qkv = matmul_ref(y, layer.wqkv, layer.bqkv, transpose_b=True)
        a = attention_ref(qkv[..., :h], qkv[..., h:2 * h], qkv[..., 2 * h:], mask, num_heads=num_heads, causal=causal)
        return matmul_ref(a, layer.wo, layer.bo, transpose_b=True)

    def ffn(y: np.ndarray) -> np.ndarray:
        return matmul_ref(act(matmul_ref(y, layer.wi, layer.bi, transpose_b=True)), layer.wo2, layer.bo2,
                          transpose_b=True)

    if layer.pre_norm:
        x = add_ref(x, attend(layer_norm_ref(x, layer.ln1_g, layer.ln1_b, eps=eps)))
        return add_ref(x, ffn(layer_norm_ref(x, layer.ln2_g, layer.ln2_b, eps=eps)))
    x = layer_norm_ref(attend(x) + x, layer.ln1_g, layer.ln1_b, eps=eps)
    return layer_norm_ref(ffn(x) + x, layer.ln2_g, layer.ln2_b, eps=eps)


@dataclass(frozen=True)
class DecoderLayer:
    """One pre-norm transformer decoder layer's weights (Whisper's), host arrays in PyTorch's (out, in) layout, Q, K
    and V of the self-attention stacked into one (3H, H) weight (a missing K bias is zeros): the unit a decode step
    runs in one kernel call (hostops.decoder_layers). Read-only arrays let the SIMD kernels pack each weight once."""

    ln1_g: np.ndarray
    ln1_b: np.ndarray
    wqkv: np.ndarray
    bqkv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    lnx_g: np.ndarray
    lnx_b: np.ndarray
    wxq: np.ndarray
    bxq: np.ndarray
    wxo: np.ndarray
    bxo: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray
    wi: np.ndarray
    bi: np.ndarray
    wo2: np.ndarray
    bo2: np.ndarray


def decoder_layer_ref(x: np.ndarray, layer: DecoderLayer, k_cache: np.ndarray, v_cache: np.ndarray, start: int,
                      xk: np.ndarray, xv: np.ndarray, *, num_heads: int, eps: float) -> np.ndarray:
    """x (T, H) at positions start.. through one decoder layer (see DecoderLayer), composed of the single ops'
    references: its keys and values written to rows start.. of k_cache, v_cache (capacity, H); the causal
    self-attention reads rows up to each position, the cross-attention every row of xk, xv (S_enc, H)."""
    t, h = x.shape
    y = layer_norm_ref(x, layer.ln1_g, layer.ln1_b, eps=eps)
    qkv = matmul_ref(y, layer.wqkv, layer.bqkv, transpose_b=True)
    k_cache[start:start + t], v_cache[start:start + t] = qkv[:, h:2 * h], qkv[:, 2 * h:]
    a = kv_attention_ref(qkv[:, :h], k_cache, v_cache, start=start, num_heads=num_heads, num_kv_heads=num_heads)
    x = add_ref(x, matmul_ref(a, layer.wo, layer.bo, transpose_b=True))
    q = matmul_ref(layer_norm_ref(x, layer.lnx_g, layer.lnx_b, eps=eps), layer.wxq, layer.bxq, transpose_b=True)
    a = attention_ref(q[None], xk[None], xv[None], num_heads=num_heads)[0]
    x = add_ref(x, matmul_ref(a, layer.wxo, layer.bxo, transpose_b=True))
    f = gelu_ref(matmul_ref(layer_norm_ref(x, layer.ln2_g, layer.ln2_b, eps=eps), layer.wi, layer.bi,
                            transpose_b=True))
    return add_ref(x, matmul_ref(f, layer.wo2, layer.bo2, transpose_b=True))


def greedy_ref(logits: np.ndarray, bias: np.ndarray | None = None) -> tuple[int, float]:
    """The greedy choice over `logits` (n,) plus an additive `bias` (0 or -inf for suppressed tokens): the index of
    the largest (the first of equals) and its log-probability, in float64."""
    z = np.asarray(logits, np.float64) + (0.0 if bias is None else np.asarray(bias, np.float64))
    tok = int(np.argmax(z))
    m = float(np.max(z))
    return tok, float(z[tok] - m - np.log(np.sum(np.exp(z - m))))


# --- images: Pillow's resampling (libImaging/Resample.c, 8 bits a channel), which the vision models' preprocessing
# must reproduce to the bit ---------------------------------------------------------------------------------------

BICUBIC, BILINEAR = 3, 2                          # Pillow's filters, as preprocessor_config.json names them
PILLOW_SUPPORT = {BILINEAR: 1.0, BICUBIC: 2.0}    # their supports, in source pixels at scale 1
PILLOW_PRECISION = 32 - 8 - 2                     # fractional bits of its fixed-point weights (PRECISION_BITS)


def _pillow_filter(resample: int, x: float) -> float:
    """Pillow's bilinear (triangle) and bicubic (a = -0.5) filters, in its own order of operations."""
    if x < 0.0:
        x = -x
    if resample == BILINEAR:
        return 1.0 - x if x < 1.0 else 0.0
    if x < 1.0:
        return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


def pillow_coefficients(in_size: int, out_size: int, resample: int) -> tuple[list[int], list[int], np.ndarray]:
    """Pillow's resampling weights along one axis (precompute_coeffs and normalize_coeffs_8bpc, in double
    precision as it computes them): per output pixel its first source pixel, how many it reads, and their weights
    in fixed point with PILLOW_PRECISION fractional bits."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = PILLOW_SUPPORT[resample] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    firsts, counts = [], []
    fixed = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_pillow_filter(resample, (x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in weights:
            ww += w
        for x, w in enumerate(weights):
            k = w / ww if ww != 0.0 else w
            one = 1 << PILLOW_PRECISION
            fixed[xx, x] = int(-0.5 + k * one) if k < 0 else int(0.5 + k * one)
        firsts.append(xmin)
        counts.append(xmax)
    return firsts, counts, fixed


def _resample_axis(x: np.ndarray, out_size: int, axis: int, resample: int) -> np.ndarray:
    firsts, _, fixed = pillow_coefficients(x.shape[axis], out_size, resample)
    index = np.minimum(np.asarray(firsts)[:, None] + np.arange(fixed.shape[1]), x.shape[axis] - 1)
    shape = [1] * x.ndim
    shape[axis] = out_size
    acc = np.full(x.shape[:axis] + (out_size,) + x.shape[axis + 1:], 1 << (PILLOW_PRECISION - 1), np.int64)
    for t in range(fixed.shape[1]):   # a tap past an output's count has weight 0
        acc += fixed[:, t].reshape(shape) * np.take(x, index[:, t], axis=axis).astype(np.int64)
    return np.clip(acc >> PILLOW_PRECISION, 0, 255).astype(np.uint8)


def resample_ref(rgb: np.ndarray, size: tuple[int, int], resample: int, *, vertical_first: bool = False
                 ) -> np.ndarray:
    """Pillow's Image.resize of an (h, w, channels) uint8 image to size = (width, height), to the bit: the
    horizontal pass first (the vertical one where `vertical_first`), each output the integer sum of Pillow's
    weights rounded and clipped to a byte, then the other pass over those bytes (an axis whose size stays is left as
    it is, which its weights would give too)."""
    passes = [(size[0], 1), (size[1], 0)]
    x = np.asarray(rgb, np.uint8)
    for out, axis in passes[::-1] if vertical_first else passes:
        if out != x.shape[axis]:
            x = _resample_axis(x, out, axis, resample)
    return x


# --- the llama ops' references (float64, rounded once: the oracle the f32 kernels are bounded against) ----------

def rms_norm_ref(x: np.ndarray, weight: np.ndarray, *, eps: float) -> np.ndarray:
    """w * x / sqrt(mean(x^2) + eps) over the last axis (RMSNorm, llama's norm)."""
    x64 = np.asarray(x, dtype=np.float64)
    if x.shape[-1] == 0:
        return _f32(x)
    return _f32(x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps) * weight)


def rope_ref(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, *, num_heads: int) -> np.ndarray:
    """Rotate adjacent pairs (2i, 2i+1) of each head of x (T, heads*D) by row t's cos/sin (T, D/2): the GGUF
    layout's rotary embedding (see models/llama_ref.py for why the pairs are adjacent)."""
    t, width = x.shape
    h = np.asarray(x, np.float64).reshape(t, num_heads, width // num_heads // 2, 2)
    c, s = np.asarray(cos, np.float64)[:, None, :], np.asarray(sin, np.float64)[:, None, :]
    out = np.stack([h[..., 0] * c - h[..., 1] * s, h[..., 1] * c + h[..., 0] * s], axis=-1)
    return _f32(out.reshape(t, width))


def swiglu_ref(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up."""
    g = np.asarray(gate, np.float64)
    with np.errstate(over="ignore"):
        return _f32(g / (1.0 + np.exp(-g)) * up)


def kv_attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, state: np.ndarray | None = None, *, start: int,
                     num_heads: int, num_kv_heads: int) -> np.ndarray:
    """Causal grouped-query attention: q (T, H*D) at positions start..start+T-1 over cache rows k, v (S, Hkv*D)
    (rows past start+T-1 are not read); query head h reads kv head h // (H / Hkv). `state` is the kernel's
    scratch between cache blocks, not an input of the result."""
    t, width = q.shape
    d = width // num_heads
    group = num_heads // num_kv_heads
    s = start + t
    qh = np.asarray(q, np.float64).reshape(t, num_kv_heads, group, d).transpose(1, 2, 0, 3)
    kh = np.asarray(k[:s], np.float64).reshape(s, num_kv_heads, d).transpose(1, 2, 0)[:, None]
    vh = np.asarray(v[:s], np.float64).reshape(s, num_kv_heads, d).transpose(1, 0, 2)[:, None]
    scores = (qh @ kh) / math.sqrt(d)                                          # (Hkv, g, T, S)
    scores[..., np.arange(s)[None, :] > (start + np.arange(t))[:, None]] = -np.inf
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    out = (p / p.sum(axis=-1, keepdims=True)) @ vh                             # (Hkv, g, T, D)
    return _f32(out.transpose(2, 0, 1, 3).reshape(t, width))


def _quant(words: np.ndarray, kind: str, n: int, k: int) -> quant.QuantMatrix:
    """The (n, k) weight a device buffer of u32 words holds (padded to a whole word)."""
    raw = np.ascontiguousarray(words).view(np.uint8).ravel()
    return quant.QuantMatrix(raw[:n * quant.row_bytes(kind, k)], kind, (n, k))


def q4_1_matvec_ref(w: np.ndarray, x: np.ndarray, *, n: int, k: int, row: int) -> np.ndarray:
    """W x[row] for a Q4_1 (n, k) weight stored as u32 words and x (T, k)."""
    return quant.matvec_ref(_quant(w, "Q4_1", n, k), np.asarray(x).reshape(-1, k)[row])


def q8_0_matvec_ref(w: np.ndarray, x: np.ndarray, *, n: int, k: int, row: int) -> np.ndarray:
    """W x[row] for a Q8_0 (n, k) weight stored as u32 words and x (T, k) (the tied head on the last position)."""
    return quant.matvec_ref(_quant(w, "Q8_0", n, k), np.asarray(x).reshape(-1, k)[row])


def q4_1_matmul_ref(w: np.ndarray, x: np.ndarray, *, n: int, k: int) -> np.ndarray:
    """X W^T for a Q4_1 (n, k) weight stored as u32 words and a prompt X (T, k)."""
    return quant.matmul_ref(np.asarray(x).reshape(-1, k), _quant(w, "Q4_1", n, k))


def q8_0_embedding_ref(w: np.ndarray, ids: np.ndarray, *, n: int, k: int) -> np.ndarray:
    """Rows `ids` of a Q8_0 (n, k) table stored as u32 words (exact: one f32 product per value, as ggml)."""
    flat = np.asarray(ids, np.int64).ravel()
    check_ids(flat, n, "q8_0_embedding")
    return quant.embedding_ref(_quant(w, "Q8_0", n, k), flat).reshape(np.shape(ids) + (k,))


# --- sampling: the next token id of a language model from its logits (float64) -------------------------------

def sample_token_scores(logits: np.ndarray, seen: np.ndarray | None = None, *,
                        repetition_penalty: float = 1.0) -> np.ndarray:
    """The logits (float64, flat) after the repetition penalty on the ids `seen` marks (uint32 words, bit i % 32
    of word i // 32 for id i): a seen logit > 0 divided by the penalty, one <= 0 multiplied (Hugging Face's)."""
    z = np.array(logits, dtype=np.float64).ravel()
    if seen is not None and repetition_penalty != 1.0:
        bits = np.unpackbits(np.ascontiguousarray(seen, np.uint32).view(np.uint8), bitorder="little")
        hit = bits[:z.size].astype(bool)
        with np.errstate(invalid="ignore"):
            z[hit] = np.where(z[hit] > 0, z[hit] / repetition_penalty, z[hit] * repetition_penalty)
    return z


def sample_token_weights(scores: np.ndarray, *, temperature: float, top_k: int = 0,
                         top_p: float = 1.0) -> np.ndarray:
    """The unnormalized probability of each id (float64) at temperature > 0: z = scores / temperature, ids below
    the top-k's k-th largest z at 0 (every id tied with it kept), exp(z - max(z)) for the rest, then top-p: ids
    below the boundary of the smallest prefix of the descending order whose mass reaches top_p at 0. Ids at the
    max weigh exactly 1 (so +inf logits share the mass and a row of -inf is uniform).
    Unlike models.sampling.Sampler's stable argsort, every id tied with top-p's boundary value is kept: the two
    differ only when exactly tied values straddle the boundary."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    if 0 < top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    top = z.max()
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        w = np.where(z == top, 1.0, np.exp(z - top))
    if top_p < 1.0:
        order = np.argsort(-z, kind="stable")
        mass = np.cumsum(w[order])
        keep = min(int(np.searchsorted(mass, top_p * mass[-1])) + 1, z.size)   # the smallest prefix reaching top_p
        w[z < z[order[keep - 1]]] = 0.0
    return w


def sample_token_ref(logits: np.ndarray, seen: np.ndarray | None = None, *, temperature: float = 0.0,
                     top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                     u: float = 0.0) -> np.ndarray:
    """The next token id as a (1,) uint32 array, in Hugging Face's order (models.sampling.Sampler's): the
    repetition penalty (sample_token_scores), then temperature 0: the argmax (the first index of the max, a NaN
    counting as the max); else the weights (sample_token_weights) and the inverse CDF in index order at u:
    the first id whose cumulative weight exceeds u * total (at most V - 1). A NaN score answers the first
    NaN's index at any temperature (no distribution exists)."""
    y = sample_token_scores(logits, seen, repetition_penalty=repetition_penalty)
    if temperature == 0 or np.isnan(y).any():
        return np.array([np.argmax(y)], np.uint32)
    cdf = np.cumsum(sample_token_weights(y, temperature=temperature, top_k=top_k, top_p=top_p))
    return np.array([min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), y.size - 1)], np.uint32)
