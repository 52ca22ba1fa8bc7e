"""A pure NumPy llama forward on GGUF weights (SmolLM2-135M-Instruct): the numerical oracle of the GPU path.

One function per step, each the op a GPU kernel will mirror: `embed` (Q8_0 gather), `rms_norm`, `qlinear`
(matvec/matmul of a quantized weight), `rope`, `attention` (causal, grouped-query, over a KV cache),
`swiglu`; `block` and `LlamaRef.forward` chain them. float32 throughout, as Hugging Face runs the GGUF
(dequantized to float32); weights are dequantized once with gpuport.host.quant.

RoPE and the GGUF's Q/K permutation: llama.cpp's converter permutes the rows of attn_q/attn_k within each head
so that rotary pairs are adjacent, (2i, 2i+1) (llama.cpp's "normal" rope), where Hugging Face pairs (i, i+D/2)
(rotate_half) and un-permutes the weights when it loads a GGUF. The permutation maps GGUF row 2i+s of a head to
HF row i + s*D/2, so rotating adjacent pairs of the GGUF layout with the same angle pos * theta^(-2i/D) gives
HF's rotated q and k, permuted the same way within each head; attention only takes q.k dot products over a
head, which the permutation leaves unchanged. So the weights are used as stored (as the GPU kernels read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..errors import LoadError, UnsupportedFeature
from ..formats.gguf import GGUFFile
from ..host.quant import QuantMatrix, dequantize


@dataclass(frozen=True)
class LlamaConfig:
    """The hyper-parameters a llama GGUF states in its metadata."""

    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    eps: float
    rope_theta: float
    context_length: int

    @property
    def head_dim(self) -> int:
        """Per-head width (dim / n_heads)."""
        return self.dim // self.n_heads

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, object]) -> "LlamaConfig":
        arch = metadata.get("general.architecture")
        if arch != "llama":
            raise UnsupportedFeature(f"general.architecture {arch!r} is not 'llama'")

        def get(key: str, default: object = None) -> object:
            value = metadata.get(f"llama.{key}", default)
            if value is None:
                raise LoadError(f"GGUF metadata has no llama.{key}")
            return value

        n_heads = int(get("attention.head_count"))
        dim = int(get("embedding_length"))
        if int(get("rope.dimension_count", dim // n_heads)) != dim // n_heads:
            raise UnsupportedFeature("partial rotary embeddings (llama.rope.dimension_count < head dim)")
        if "llama.rope.scaling.type" in metadata:
            raise UnsupportedFeature(f"rope scaling {metadata['llama.rope.scaling.type']!r}")
        tokens = metadata.get("tokenizer.ggml.tokens")
        vocab = int(get("vocab_size", len(tokens) if tokens is not None else None))
        return cls(n_layers=int(get("block_count")), dim=dim, n_heads=n_heads,
                   n_kv_heads=int(get("attention.head_count_kv", n_heads)), ffn_dim=int(get("feed_forward_length")),
                   vocab_size=vocab, eps=float(get("attention.layer_norm_rms_epsilon")),
                   rope_theta=float(get("rope.freq_base", 10000.0)), context_length=int(get("context_length")))


@dataclass
class Layer:
    """One block's weights: RMSNorm vectors (float32) and quantized projections (GGUF names attn_*/ffn_*)."""

    attn_norm: np.ndarray
    wq: QuantMatrix
    wk: QuantMatrix
    wv: QuantMatrix
    wo: QuantMatrix
    ffn_norm: np.ndarray
    w_gate: QuantMatrix
    w_up: QuantMatrix
    w_down: QuantMatrix


@dataclass
class LlamaWeights:
    """Quantized matrices as stored (QuantMatrix, dequantized lazily) and float32 norm weights."""

    token_embd: QuantMatrix
    layers: list[Layer]
    output_norm: np.ndarray
    output: QuantMatrix   # token_embd itself when the head is tied (no output.weight)

    @classmethod
    def from_gguf(cls, f: GGUFFile, config: LlamaConfig) -> "LlamaWeights":
        def tensor(name: str) -> QuantMatrix:
            if name not in f.tensors:
                raise LoadError(f"{f.name}: no tensor {name!r}")
            t = f.tensors[name]
            return QuantMatrix(f.raw(name), t.type_name, t.shape)

        def vector(name: str) -> np.ndarray:
            if name not in f.tensors:
                raise LoadError(f"{f.name}: no tensor {name!r}")
            t = f.tensors[name]
            return dequantize(f.raw(name), t.type_name, t.shape)

        layers = [Layer(vector(f"blk.{i}.attn_norm.weight"), tensor(f"blk.{i}.attn_q.weight"),
                        tensor(f"blk.{i}.attn_k.weight"), tensor(f"blk.{i}.attn_v.weight"),
                        tensor(f"blk.{i}.attn_output.weight"), vector(f"blk.{i}.ffn_norm.weight"),
                        tensor(f"blk.{i}.ffn_gate.weight"), tensor(f"blk.{i}.ffn_up.weight"),
                        tensor(f"blk.{i}.ffn_down.weight")) for i in range(config.n_layers)]
        embd = tensor("token_embd.weight")
        head = tensor("output.weight") if "output.weight" in f.tensors else embd
        return cls(embd, layers, vector("output_norm.weight"), head)


class KVCache:
    """Keys (after RoPE) and values of every layer for positions 0..length-1."""

    def __init__(self, config: LlamaConfig, max_len: int) -> None:
        shape = (config.n_layers, max_len, config.n_kv_heads, config.head_dim)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.length = 0

    @property
    def capacity(self) -> int:
        """Positions the cache can hold."""
        return self.k.shape[1]


# --- the steps -------------------------------------------------------------------------------------------

def embed(table: QuantMatrix, ids: np.ndarray) -> np.ndarray:
    """(T,) token ids -> (T, dim) rows of the quantized embedding table."""
    return table.rows(ids)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, in float32 (as HF's LlamaRMSNorm)."""
    var = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True, dtype=np.float32)
    return (weight * (x * (np.float32(1.0) / np.sqrt(var + np.float32(eps))))).astype(np.float32)


def qlinear(x: np.ndarray, w: QuantMatrix) -> np.ndarray:
    """x (T, K) @ W^T for a quantized (N, K) weight: (T, N) float32 (one token: the decode matvec)."""
    return np.matmul(x, w.dense().T, dtype=np.float32)


def rope_angles(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape (T, head_dim/2) for pair i at each position: angle pos * theta^(-2i/head_dim), in
    float32 as HF computes them."""
    inv_freq = (np.float32(1.0) / np.power(np.float32(theta), np.arange(0, head_dim, 2, dtype=np.float32)
                                           / np.float32(head_dim))).astype(np.float32)
    ang = np.asarray(positions, np.float32)[:, None] * inv_freq[None, :]
    return np.cos(ang), np.sin(ang)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (2i, 2i+1) of x (T, heads, head_dim) by the angles of each position (GGUF layout)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = odd * c + even * s
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
    """Causal grouped-query attention: q (T, H, D) at positions start..start+T-1 over k, v (S, Hkv, D) for
    positions 0..S-1 (S = start + T); query head h reads kv head h // (H / Hkv). Returns (T, H, D)."""
    t, h, d = q.shape
    s, hkv, _ = k.shape
    group = h // hkv
    qg = q.reshape(t, hkv, group, d).transpose(1, 2, 0, 3)               # (Hkv, g, T, D)
    scores = np.matmul(qg, k.transpose(1, 2, 0)[:, None], dtype=np.float32) * np.float32(1.0 / np.sqrt(d))
    future = np.arange(s)[None, :] > (start + np.arange(t))[:, None]      # (T, S)
    scores = np.where(future, np.float32(-np.inf), scores)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True), dtype=np.float32)
    probs = scores / scores.sum(axis=-1, keepdims=True, dtype=np.float32)
    out = np.matmul(probs, v.transpose(1, 0, 2)[:, None], dtype=np.float32)   # (Hkv, g, T, D)
    return out.transpose(2, 0, 1, 3).reshape(t, h, d)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up."""
    return (gate / (np.float32(1.0) + np.exp(-gate, dtype=np.float32)) * up).astype(np.float32)


def block(x: np.ndarray, layer: Layer, index: int, cache: KVCache, cos: np.ndarray, sin: np.ndarray,
          config: LlamaConfig, linear: Callable[[np.ndarray, QuantMatrix], np.ndarray] = qlinear) -> np.ndarray:
    """One transformer block on x (T, dim) at positions cache.length.., writing its keys/values to the cache.
    `linear` computes the products (quant.q8_matmul_ref's first result: the host kernels' 8-bit activations)."""
    t, start = x.shape[0], cache.length
    hd = config.head_dim
    h = rms_norm(x, layer.attn_norm, config.eps)
    q = rope(linear(h, layer.wq).reshape(t, config.n_heads, hd), cos, sin)
    k = rope(linear(h, layer.wk).reshape(t, config.n_kv_heads, hd), cos, sin)
    cache.k[index, start:start + t] = k
    cache.v[index, start:start + t] = linear(h, layer.wv).reshape(t, config.n_kv_heads, hd)
    att = attention(q, cache.k[index, :start + t], cache.v[index, :start + t], start)
    x = x + linear(att.reshape(t, config.dim), layer.wo)
    h = rms_norm(x, layer.ffn_norm, config.eps)
    return x + linear(swiglu(linear(h, layer.w_gate), linear(h, layer.w_up)), layer.w_down)


class LlamaRef:
    """The model: `forward` for a prompt or one token, `generate_greedy` for a continuation."""

    def __init__(self, config: LlamaConfig, weights: LlamaWeights,
                 linear: Callable[[np.ndarray, QuantMatrix], np.ndarray] = qlinear) -> None:
        self.config, self.weights, self.linear = config, weights, linear   # linear: every product, the head too

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "LlamaRef":
        config = LlamaConfig.from_gguf(f.metadata)
        return cls(config, LlamaWeights.from_gguf(f, config))

    def new_cache(self, max_len: int) -> KVCache:
        """An empty KV cache for up to `max_len` positions."""
        return KVCache(self.config, max_len)

    def forward(self, ids: np.ndarray, cache: KVCache, all_logits: bool = False) -> np.ndarray:
        """Run tokens `ids` at positions cache.length.. and append them to the cache; the logits of the last
        token (vocab,), or of every token (T, vocab) with all_logits."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        t, start = ids.size, cache.length
        if start + t > cache.capacity:
            raise ValueError(f"{start + t} positions do not fit a KV cache of {cache.capacity}")
        cos, sin = rope_angles(np.arange(start, start + t), self.config.head_dim, self.config.rope_theta)
        x = embed(self.weights.token_embd, ids)
        for i, layer in enumerate(self.weights.layers):
            x = block(x, layer, i, cache, cos, sin, self.config, self.linear)
        cache.length = start + t
        x = rms_norm(x if all_logits else x[-1:], self.weights.output_norm, self.config.eps)
        logits = self.linear(x, self.weights.output)
        return logits if all_logits else logits[0]

    def generate_greedy(self, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
        """`steps` greedy tokens after `prompt` and the logits each was chosen from."""
        cache = self.new_cache(len(prompt) + steps)
        logits = self.forward(np.asarray(prompt), cache)
        out, seen = [], []
        for _ in range(steps):
            seen.append(logits)
            out.append(int(np.argmax(logits)))
            logits = self.forward(np.asarray(out[-1:]), cache)
        return out, seen


__all__ = ["KVCache", "Layer", "LlamaConfig", "LlamaRef", "LlamaWeights", "attention", "block", "embed", "qlinear",
           "rms_norm", "rope", "rope_angles", "swiglu"]
