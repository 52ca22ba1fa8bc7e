"""Op registry: each op names its WGSL file in shaders/, its binding layout and its NumPy reference.

The references are the CPU tier and the oracle every GPU result is tested against; they compute in
float32 where the shaders do, so the two differ only by summation order and the erf polynomial.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import quant, wgsl
from .pipelines import PipelineSpec

# Binding kinds, in binding order: inputs, then the output, then (for kernels that can meet invalid data)
# the device's error buffer, then the uniforms.
READ, WRITE, ERROR, UNIFORM = "read", "rw", "error", "uniform"


@dataclass(frozen=True)
class KernelDef:
    """A built-in op: its shader file, bind group layout and NumPy reference."""

    name: str
    shader: str
    bindings: tuple[str, ...]
    reference: Callable[..., np.ndarray]
    entry_point: str = "main"

    @property
    def source(self) -> str:
        return shader_source(self.shader)

    @property
    def needs(self) -> tuple[int, int]:
        """What the kernel asks of the device, read from its WGSL: (invocations per workgroup at the
        default constants, bytes of workgroup memory)."""
        return _needs(self.shader)


@dataclass
class Launch:
    """One dispatch of a kernel over whole buffers: workgroups, uniforms and override constants."""

    kernel: KernelDef
    inputs: list[Any]            # Tensors or Parts (None where an optional input is absent)
    output: Any                  # Tensor or Part
    workgroups: tuple[int, int, int]
    uniforms: bytes
    constants: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> PipelineSpec:
        """The pipeline this launch needs."""
        k = self.kernel
        return PipelineSpec(k.name, k.source, k.entry_point,
                            tuple(sorted((n, float(v)) for n, v in self.constants.items())), k.bindings)


def shaders_dir() -> Path:
    """shaders/ inside an installed wheel, else the repository's shaders/ (editable install)."""
    inside = Path(__file__).parent / "shaders"
    return inside if inside.is_dir() else Path(__file__).resolve().parents[2] / "shaders"


@cache
def shader_source(name: str) -> str:
    return (shaders_dir() / name).read_text(encoding="utf-8")


@cache
def _needs(shader: str) -> tuple[int, int]:
    source = shader_source(shader)
    return wgsl.invocations(source) or ELEMENTWISE_WG, (wgsl.workgroup_bytes(source) or (0, []))[0]


def pack_uniforms(*fields: int | float) -> bytes:
    """Pack scalars as a WGSL uniform struct: Python int -> u32, float -> f32, padded to 16 bytes."""
    fmt = "".join("I" if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else "f" for v in fields)
    data = struct.pack("<" + fmt, *fields)
    return data + b"\0" * (-len(data) % 16)


def grid(groups: int, max_per_dim: int = 65535) -> tuple[int, int, int]:
    """Spread a 1-D workgroup count over x and y so no dimension exceeds the device limit."""
    if groups <= max_per_dim:
        return (max(groups, 1), 1, 1)
    return (max_per_dim, math.ceil(groups / max_per_dim), 1)


# --- NumPy references ----------------------------------------------------------------------------

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


def embedding_ref(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    idx = ids.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise IndexError(f"embedding: id {bad} is outside the table's {table.shape[0]} rows")
    return _f32(table[idx])


def attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
                  num_heads: int) -> np.ndarray:
    batch, sq, hidden = q.shape
    sk = k.shape[1]
    d = hidden // num_heads
    qh = q.reshape(batch, sq, num_heads, d).transpose(0, 2, 1, 3)
    kh = k.reshape(batch, sk, num_heads, d).transpose(0, 2, 1, 3)
    vh = v.reshape(batch, sk, num_heads, d).transpose(0, 2, 1, 3)
    scores = (qh @ kh.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d))
    if mask is not None:
        scores = scores + mask[:, None, None, :]
    probs = softmax_ref(scores)
    return _f32((probs @ vh).transpose(0, 2, 1, 3).reshape(batch, sq, hidden))


def mean_pool_ref(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return _f32((x * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9)))


def l2_normalize_ref(x: np.ndarray) -> np.ndarray:
    """x / max(||x||, 1e-12), the norm in float64 (no float32 row overflows it; the kernel scales rows)."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        norm = np.sqrt((x64 ** 2).sum(axis=-1, keepdims=True))
        return _f32(x64 / np.maximum(norm, 1e-12))


@dataclass(frozen=True)
class EncoderLayer:
    """One post-norm transformer encoder layer's weights (BERT's), host arrays in PyTorch's (out, in) layout,
    Q, K and V stacked into one (3H, H) weight so their products are one matmul: the unit the host runs a
    whole layer in (hostops.encoder_layer). Read-only arrays let the SIMD kernels pack each weight once."""

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


def encoder_layer_ref(x: np.ndarray, layer: EncoderLayer, mask: np.ndarray | None = None, *, num_heads: int,
                      eps: float) -> np.ndarray:
    """x (B, S, H) through one encoder layer (see EncoderLayer), composed of the single ops' references."""
    h = x.shape[-1]
    qkv = matmul_ref(x, layer.wqkv, layer.bqkv, transpose_b=True)
    a = attention_ref(qkv[..., :h], qkv[..., h:2 * h], qkv[..., 2 * h:], mask, num_heads=num_heads)
    x = layer_norm_ref(matmul_ref(a, layer.wo, layer.bo, transpose_b=True) + x, layer.ln1_g, layer.ln1_b, eps=eps)
    f = gelu_ref(matmul_ref(x, layer.wi, layer.bi, transpose_b=True))
    return layer_norm_ref(matmul_ref(f, layer.wo2, layer.bo2, transpose_b=True) + x, layer.ln2_g, layer.ln2_b,
                          eps=eps)


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
    if flat.size and (flat.min() < 0 or flat.max() >= n):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise IndexError(f"q8_0_embedding: id {bad} is outside the table's {n} rows")
    return quant.embedding_ref(_quant(w, "Q8_0", n, k), flat).reshape(np.shape(ids) + (k,))


_R, _W, _E, _U = READ, WRITE, ERROR, UNIFORM

KERNELS: dict[str, KernelDef] = {k.name: k for k in [
    KernelDef("add", "binary.wgsl", (_R, _R, _W, _U), add_ref),
    KernelDef("mul", "binary.wgsl", (_R, _R, _W, _U), mul_ref),
    KernelDef("scale", "scale.wgsl", (_R, _W, _U), scale_ref),
    KernelDef("gelu", "gelu.wgsl", (_R, _W, _U), gelu_ref),
    KernelDef("matmul", "matmul.wgsl", (_R, _R, _R, _W, _U), matmul_ref),
    KernelDef("softmax", "softmax.wgsl", (_R, _R, _W, _U), softmax_ref),
    KernelDef("layer_norm", "layer_norm.wgsl", (_R, _R, _R, _R, _W, _U), layer_norm_ref),
    KernelDef("sum", "reduce.wgsl", (_R, _W, _U), sum_ref),
    KernelDef("mean", "reduce.wgsl", (_R, _W, _U), mean_ref),
    KernelDef("embedding", "embedding.wgsl", (_R, _R, _W, _E, _U), embedding_ref),
    KernelDef("attention", "attention.wgsl", (_R, _R, _R, _R, _W, _U), attention_ref),
    KernelDef("mean_pool", "mean_pool.wgsl", (_R, _R, _W, _U), mean_pool_ref),
    KernelDef("l2_normalize", "l2_normalize.wgsl", (_R, _W, _U), l2_normalize_ref),
    # the llama ops: quantized weights bind as the u32 words of their stored blocks
    KernelDef("rms_norm", "rms_norm.wgsl", (_R, _R, _W, _U), rms_norm_ref),
    KernelDef("rope", "rope.wgsl", (_R, _R, _R, _W, _U), rope_ref),
    KernelDef("swiglu", "swiglu.wgsl", (_R, _R, _W, _U), swiglu_ref),
    KernelDef("kv_attention", "kv_attention.wgsl", (_R, _R, _R, _W, _W, _U), kv_attention_ref),
    KernelDef("q4_1_matvec", "q4_1_matvec.wgsl", (_R, _R, _W, _U), q4_1_matvec_ref),
    KernelDef("q8_0_matvec", "q8_0_matvec.wgsl", (_R, _R, _W, _U), q8_0_matvec_ref),
    KernelDef("q4_1_matmul", "q4_1_matmul.wgsl", (_R, _R, _W, _U), q4_1_matmul_ref),
    KernelDef("q8_0_embedding", "q8_0_embedding.wgsl", (_R, _R, _W, _U), q8_0_embedding_ref),
]}

def reference(op: str, arrays: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    """Run `op`'s NumPy reference: the cpu tier, and the oracle of every kernel (C-contiguous float32).
    Infinities and NaNs follow IEEE quietly, as on the GPU (no RuntimeWarnings)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.ascontiguousarray(KERNELS[op].reference(*arrays, **attrs), dtype=np.float32)


# Variant shaders of some ops: same bindings and reference, another WGSL file. Not ops themselves (KERNELS
# lists the ops); the fallback manager picks them: "f16" for the full tier, "small" for tight budgets.
VARIANTS: dict[tuple[str, str], KernelDef] = {
    ("matmul", "f16"): KernelDef("matmul_f16", "matmul_f16.wgsl", (_R, _R, _R, _W, _U), matmul_ref),
    ("gelu", "f16"): KernelDef("gelu_f16", "gelu_f16.wgsl", (_R, _W, _U), gelu_ref),
    ("softmax", "f16"): KernelDef("softmax_f16", "softmax_f16.wgsl", (_R, _R, _W, _U), softmax_ref),
    ("layer_norm", "f16"): KernelDef("layer_norm_f16", "layer_norm_f16.wgsl", (_R, _R, _R, _R, _W, _U),
                                         layer_norm_ref),
    # 8x8 invocations, 4 KiB of workgroup memory, strides and offsets: the simplified matmul and the block
    # kernel of layer decomposition.
    ("matmul", "small"): KernelDef("matmul_small", "matmul_small.wgsl", (_R, _R, _R, _W, _U), matmul_ref),
    # Register-blocked, barrier-free, vec4 loads (K, and N without transpose_b, multiples of 4): chosen per
    # adapter by measurement (tuning.py); "rb_tb16x8" is (transpose_b, 16 rows x 8 columns per invocation).
    **{("matmul", key): KernelDef(f"matmul_{key}", f"matmul_{key}.wgsl", (_R, _R, _R, _W, _U), matmul_ref)
       for key in ("rb_tb16x8", "rb_tb8x8", "rb_tb8x4", "rb_nb16x4", "rb_nb8x4", "rb_nb8x2")},
    ("q4_1_matvec", "f16"): KernelDef("q4_1_matvec_f16", "q4_1_matvec_f16.wgsl", (_R, _R, _W, _U), q4_1_matvec_ref),
    ("q8_0_matvec", "f16"): KernelDef("q8_0_matvec_f16", "q8_0_matvec_f16.wgsl", (_R, _R, _W, _U), q8_0_matvec_ref),
    ("q4_1_matmul", "f16"): KernelDef("q4_1_matmul_f16", "q4_1_matmul_f16.wgsl", (_R, _R, _W, _U), q4_1_matmul_ref),
    # kv_attention's companion: the in-place append of new rows to a KV cache buffer (not an op: it writes an
    # existing tensor; models/kv_cache.py launches it)
    ("kv_attention", "append"): KernelDef("kv_write", "kv_write.wgsl", (_R, _W, _U), _f32),
}
F16_OPS = frozenset(op for op, kind in VARIANTS if kind == "f16")


@dataclass(frozen=True)
class RegisterBlock:
    """A register-blocked matmul variant: its layout ("tb": B is (N, K); "nb": B is (K, N)), rows R and
    columns C (vec4 column groups for "nb") per invocation."""

    key: str
    layout: str
    rows: int
    cols: int

    @property
    def kernel(self) -> KernelDef:
        return VARIANTS[("matmul", self.key)]

    @property
    def cols_per_invocation(self) -> int:
        return self.cols if self.layout == "tb" else 4 * self.cols


RB_VARIANTS: dict[str, RegisterBlock] = {
    key: RegisterBlock(key, key[3:5], int(key[5:].split("x")[0]), int(key.split("x")[1]))
    for op, key in VARIANTS if key.startswith("rb_")}
# Measured fastest on lavapipe for MiniLM's shapes: what runs until tuning.py measured this adapter.
RB_DEFAULT = {"tb": "rb_tb16x8", "nb": "rb_nb16x4"}
RB_WG = 16

ELEMENTWISE_WG = 256
ATTENTION_MAX_HEAD_DIM = 256

# Op classes the planner and the seed's strategy table reason about.
ELEMENTWISE_OPS = frozenset({"add", "mul", "scale", "gelu"})
ROWWISE_OPS = frozenset({"softmax", "layer_norm", "sum", "mean", "l2_normalize"})
# `override WG` shaders
WG_OVERRIDE_OPS = frozenset({"add", "mul", "scale", "gelu", "embedding", "mean_pool", "rope", "swiglu"})
# Names the seed's callers use for ops.
ALIASES = {"attention_compute": "attention", "multi_head_attention": "attention", "linear": "matmul",
           "matmul_4bit": "matmul", "layernorm": "layer_norm", "layer_normalization": "layer_norm",
           "embedding_lookup": "embedding", "elementwise": "add", "shader_compilation": "shader"}
