"""The ops users call as `rt.ops.<name>(...)`: check shapes and dtypes, then plan one kernel launch.

Every op returns a new Tensor at once; the work is queued on the backend and runs when read.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .kernels import ATTENTION_MAX_HEAD_DIM, ELEMENTWISE_WG, KERNELS, Launch, grid, pack_uniforms
from .tensor import Tensor

if TYPE_CHECKING:
    from .runtime import Runtime

F32 = np.dtype(np.float32)
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.uint32))


class Ops:
    """The built-in kernels of one runtime."""

    def __init__(self, rt: "Runtime") -> None:
        self._rt = rt

    # -- helpers -----------------------------------------------------------------------------------
    def _f32(self, t: object, op: str, what: str) -> Tensor:
        t = self._rt._own(t, f"{op}: {what}")
        if t.dtype != F32:
            raise TypeError(f"{op}: {what} must be float32, got {t.dtype}")
        return t

    def _grid(self, groups: int) -> tuple[int, int, int]:
        return grid(groups, self._rt._device.limits.get("maxComputeWorkgroupsPerDimension", 65535))

    def _flat(self, n: int) -> tuple[int, int, int]:
        return self._grid(math.ceil(n / ELEMENTWISE_WG))

    def _launch(self, name: str, inputs: list[Tensor | None], out: Tensor, workgroups: tuple[int, int, int],
                uniforms: bytes, constants: dict[str, float] | None = None, **params: object) -> Tensor:
        return self._rt._launch(Launch(KERNELS[name], inputs, out, workgroups, uniforms, constants or {}, params))

    @staticmethod
    def _rows(x: Tensor, op: str) -> tuple[int, int]:
        if x.ndim < 1:
            raise ValueError(f"{op}: needs at least one axis, got a scalar of shape {x.shape}")
        n = x.shape[-1]
        return (x.size // n if n else 0), n

    # -- elementwise -------------------------------------------------------------------------------
    def _binary(self, name: str, a: Tensor, b: Tensor) -> Tensor:
        a, b = self._f32(a, name, "a"), self._f32(b, name, "b")
        if not _is_suffix(b.shape, a.shape):
            if _is_suffix(a.shape, b.shape):
                a, b = b, a  # both ops commute
            else:
                raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast: the smaller must "
                                 "match the trailing axes of the larger")
        out = self._rt.empty(a.shape)
        return self._launch(name, [a, b], out, self._flat(a.size), pack_uniforms(a.size, max(b.size, 1)),
                            {"OP": 0 if name == "add" else 1})

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """a + b; the smaller operand broadcasts over the leading axes of the larger."""
        return self._binary("add", a, b)

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        """a * b; the smaller operand broadcasts over the leading axes of the larger."""
        return self._binary("mul", a, b)

    def scale(self, x: Tensor, a: float = 1.0, b: float = 0.0) -> Tensor:
        """x * a + b."""
        x = self._f32(x, "scale", "x")
        out = self._rt.empty(x.shape)
        return self._launch("scale", [x], out, self._flat(x.size), pack_uniforms(x.size, float(a), float(b)),
                            a=float(a), b=float(b))

    def gelu(self, x: Tensor) -> Tensor:
        """Exact (erf) GELU, as BERT and PyTorch's default."""
        x = self._f32(x, "gelu", "x")
        out = self._rt.empty(x.shape)
        return self._launch("gelu", [x], out, self._flat(x.size), pack_uniforms(x.size))

    # -- matmul ------------------------------------------------------------------------------------
    def matmul(self, a: Tensor, b: Tensor, bias: Tensor | None = None, transpose_b: bool = False) -> Tensor:
        """a @ b (or a @ b.T), plus a bias row. a: (..., M, K); b: (K, N), (N, K), or batched like a."""
        a, b = self._f32(a, "matmul", "a"), self._f32(b, "matmul", "b")
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands need at least 2 axes, got {a.shape} and {b.shape}")
        m, k = a.shape[-2:]
        n, kb = b.shape[-2:] if transpose_b else b.shape[-2:][::-1]
        if k != kb:
            bt = " (transposed)" if transpose_b else ""
            raise ValueError(f"matmul: inner dimensions differ: a {a.shape} has K={k}, b{bt} {b.shape} has K={kb}")
        batch_shape = a.shape[:-2]
        if b.ndim > 2 and b.shape[:-2] != batch_shape:
            raise ValueError(f"matmul: batch axes differ: a {a.shape} vs b {b.shape}")
        if bias is not None:
            bias = self._f32(bias, "matmul", "bias")
            if bias.shape != (n,):
                raise ValueError(f"matmul: bias shape {bias.shape} must be ({n},) for output width N={n}")
        batch = int(np.prod(batch_shape, dtype=np.int64))
        out = self._rt.empty(batch_shape + (m, n))
        uniforms = pack_uniforms(m, n, k, m * k, k * n if b.ndim > 2 else 0)
        return self._launch("matmul", [a, b, bias], out, (math.ceil(n / 64), math.ceil(m / 64), batch), uniforms,
                            {"TRANSPOSE_B": int(transpose_b), "HAS_BIAS": int(bias is not None)},
                            transpose_b=transpose_b)

    # -- row-wise ----------------------------------------------------------------------------------
    def softmax(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Softmax over the last axis; `mask` is added first (shape x.shape, or x.shape[-1:] shared by rows)."""
        x = self._f32(x, "softmax", "x")
        rows, n = self._rows(x, "softmax")
        stride = 0
        if mask is not None:
            mask = self._f32(mask, "softmax", "mask")
            if mask.shape == x.shape:
                stride = n
            elif mask.shape != (n,):
                raise ValueError(f"softmax: mask shape {mask.shape} must be {x.shape} or ({n},)")
        out = self._rt.empty(x.shape)
        return self._launch("softmax", [x, mask], out, self._grid(rows), pack_uniforms(rows, n, stride),
                            {"HAS_MASK": int(mask is not None)})

    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
        """LayerNorm over the last axis with weight `gamma` and bias `beta` (biased variance)."""
        x = self._f32(x, "layer_norm", "x")
        rows, n = self._rows(x, "layer_norm")
        for name, t in (("gamma", gamma), ("beta", beta)):
            t = self._f32(t, "layer_norm", name)
            if t.shape != (n,):
                raise ValueError(f"layer_norm: {name} shape {t.shape} must be ({n},) to match x {x.shape}")
        out = self._rt.empty(x.shape)
        return self._launch("layer_norm", [x, gamma, beta], out, self._grid(rows),
                            pack_uniforms(rows, n, float(eps)), eps=float(eps))

    def _reduce(self, name: str, x: Tensor) -> Tensor:
        x = self._f32(x, name, "x")
        rows, n = self._rows(x, name)
        out = self._rt.empty(x.shape[:-1])
        return self._launch(name, [x], out, self._grid(rows), pack_uniforms(rows, n), {"MEAN": int(name == "mean")})

    def sum(self, x: Tensor) -> Tensor:
        """Sum over the last axis."""
        return self._reduce("sum", x)

    def mean(self, x: Tensor) -> Tensor:
        """Mean over the last axis."""
        return self._reduce("mean", x)

    def l2_normalize(self, x: Tensor) -> Tensor:
        """x / max(||x||, 1e-12) over the last axis."""
        x = self._f32(x, "l2_normalize", "x")
        rows, n = self._rows(x, "l2_normalize")
        out = self._rt.empty(x.shape)
        return self._launch("l2_normalize", [x], out, self._grid(rows), pack_uniforms(rows, n))

    # -- model ops ---------------------------------------------------------------------------------
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        """Rows of `table` (vocab, hidden) gathered by integer `ids` of any shape."""
        ids = self._rt._own(ids, "embedding: ids")
        if ids.dtype not in INDEX_DTYPES:
            raise TypeError(f"embedding: ids must be int32 or uint32, got {ids.dtype}")
        table = self._f32(table, "embedding", "table")
        if table.ndim != 2:
            raise ValueError(f"embedding: table must be (vocab, hidden), got {table.shape}")
        vocab, hidden = table.shape
        known = ids.known_values()
        if known is not None and known.size:
            lo, hi = int(known.min()), int(known.max())
            if lo < 0 or hi >= vocab:
                bad = lo if lo < 0 else hi
                raise IndexError(f"embedding: id {bad} is outside the table's {vocab} rows")
        out = self._rt.empty(ids.shape + (hidden,))
        n = out.size
        return self._launch("embedding", [ids, table], out, self._flat(n), pack_uniforms(n, hidden, vocab))

    def attention(self, q: Tensor, k: Tensor, v: Tensor, num_heads: int, mask: Tensor | None = None) -> Tensor:
        """softmax(QK^T / sqrt(d) + mask) V per head. q: (B, Sq, H*d); k, v: (B, Sk, H*d); mask: (B, Sk) additive."""
        q, k, v = (self._f32(t, "attention", name) for t, name in ((q, "q"), (k, "k"), (v, "v")))
        if q.ndim != 3 or k.ndim != 3 or v.shape != k.shape:
            raise ValueError(f"attention: q must be (B, Sq, H*d) and k, v the same (B, Sk, H*d); "
                             f"got q {q.shape}, k {k.shape}, v {v.shape}")
        batch, sq, hidden = q.shape
        if k.shape[0] != batch or k.shape[2] != hidden:
            raise ValueError(f"attention: q {q.shape} and k {k.shape} differ in batch or width")
        if num_heads < 1 or hidden % num_heads:
            raise ValueError(f"attention: width {hidden} is not divisible by num_heads={num_heads}")
        head_dim = hidden // num_heads
        if head_dim > ATTENTION_MAX_HEAD_DIM:
            raise ValueError(f"attention: head_dim {head_dim} exceeds the kernel's {ATTENTION_MAX_HEAD_DIM}")
        sk = k.shape[1]
        if mask is not None:
            mask = self._f32(mask, "attention", "mask")
            if mask.shape != (batch, sk):
                raise ValueError(f"attention: mask shape {mask.shape} must be (batch, Sk) = {(batch, sk)}")
        out = self._rt.empty(q.shape)
        uniforms = pack_uniforms(sq, sk, num_heads, head_dim, 1.0 / math.sqrt(head_dim), sk)
        return self._launch("attention", [q, k, v, mask], out, (sq, num_heads, batch), uniforms,
                            {"HAS_MASK": int(mask is not None)}, num_heads=num_heads)

    def mean_pool(self, x: Tensor, mask: Tensor) -> Tensor:
        """Masked mean over the sequence axis: x (B, S, H), mask (B, S) of 0/1 -> (B, H)."""
        x, mask = self._f32(x, "mean_pool", "x"), self._f32(mask, "mean_pool", "mask")
        if x.ndim != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"mean_pool: x must be (B, S, H) and mask (B, S); got x {x.shape}, mask {mask.shape}")
        batch, seq, hidden = x.shape
        out = self._rt.empty((batch, hidden))
        return self._launch("mean_pool", [x, mask], out, self._flat(batch * hidden),
                            pack_uniforms(batch, seq, hidden))


def _is_suffix(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    return len(small) <= len(big) and big[len(big) - len(small):] == small
