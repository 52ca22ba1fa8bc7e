"""The ops users call as `rt.ops.<name>(...)`: check shapes and dtypes, then hand the call to the
runtime's executor (execution.py), which places it on the device (the planner's kernel or strategy) or
on the host (the NumPy reference).

Every op returns a new Tensor at once; the work is queued on the backend and runs when read.
"""

from __future__ import annotations

import math
import operator
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np

from ..host.quant import row_bytes
from ..host.references import ACTIVATIONS, check_ids, conv1d_out_len, dft_table
from ..tensor.tensor import Tensor
from ..types import OpCall
from .kernels import ATTENTION_MAX_HEAD_DIM

if TYPE_CHECKING:
    from ..runtime import Runtime

F32 = np.dtype(np.float32)
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.uint32))
U32 = np.dtype(np.uint32)
QUANT_KINDS = ("Q4_1", "Q8_0")


class Ops:
    """The built-in kernels of one runtime."""

    def __init__(self, rt: "Runtime") -> None:
        self._rt = rt
        self._dft_tables: dict[int, Tensor] = {}   # n_fft -> stft_power's twiddle table, built once

    # -- helpers -----------------------------------------------------------------------------------
    def _f32(self, t: object, op: str, what: str) -> Tensor:
        t = self._rt.own(t, f"{op}: {what}")
        if t.dtype != F32:
            raise TypeError(f"{op}: {what} must be float32, got {t.dtype}")
        return t

    def _run(self, op: str, names: tuple[str, ...], inputs: list[Tensor | None], out_shape: tuple[int, ...],
             **attrs: object) -> Tensor:
        """Validated call -> the runtime's executor."""
        self._rt.check_open()
        return self._rt.executor.run(OpCall(op, names, inputs, tuple(out_shape), dict(attrs)))

    @staticmethod
    def _number(value: object, op: str, what: str, minimum: float | None = None) -> float:
        """A finite real argument (TypeError / ValueError naming the op and the argument otherwise)."""
        if not isinstance(value, Real) or isinstance(value, bool):
            raise TypeError(f"{op}: {what} must be a real number, got {value!r} ({type(value).__name__})")
        try:
            v = float(value)
        except OverflowError:        # an int beyond any float
            v = math.inf
        if not math.isfinite(v) or abs(v) > F32_MAX or (minimum is not None and v < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""   # kernels take it as a float32
            raise ValueError(f"{op}: {what} must be finite{bound} and within float32 (|{what}| <= 3.4e38), "
                             f"got {value!r}"[:200])
        return v

    @staticmethod
    def _count(value: object, op: str, what: str, minimum: int = 0) -> int:
        """An integer argument >= minimum (TypeError / ValueError naming the op and the argument otherwise)."""
        if isinstance(value, bool):
            raise TypeError(f"{op}: {what} must be an int, got a bool")
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"{op}: {what} must be an int, got {value!r} ({type(value).__name__})") from None
        if v < minimum:
            raise ValueError(f"{op}: {what} must be >= {minimum}, got {v}")
        return v

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
        return self._run(name, ("a", "b"), [a, b], a.shape)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """a + b; the smaller operand broadcasts over the leading axes of the larger."""
        return self._binary("add", a, b)

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        """a * b; the smaller operand broadcasts over the leading axes of the larger."""
        return self._binary("mul", a, b)

    def scale(self, x: Tensor, a: float = 1.0, b: float = 0.0) -> Tensor:
        """x * a + b."""
        x = self._f32(x, "scale", "x")
        a, b = self._number(a, "scale", "a"), self._number(b, "scale", "b")
        return self._run("scale", ("x",), [x], x.shape, a=a, b=b)

    def quick_gelu(self, x: Tensor) -> Tensor:
        """QuickGELU, x sigmoid(1.702 x): CLIP's activation."""
        x = self._f32(x, "quick_gelu", "x")
        return self._run("quick_gelu", ("x",), [x], x.shape)

    def gelu(self, x: Tensor) -> Tensor:
        """Exact (erf) GELU, as BERT and PyTorch's default."""
        x = self._f32(x, "gelu", "x")
        return self._run("gelu", ("x",), [x], x.shape)

    # -- matmul ------------------------------------------------------------------------------------
    def matmul(self, a: Tensor, b: Tensor, bias: Tensor | None = None, transpose_b: bool = False,
               activation: str | None = None) -> Tensor:
        """a @ b (or a @ b.T), plus a bias row, then `activation` ("gelu": exact GELU, fused into the
        matmul's epilogue where the device's register-blocked kernel serves the call). a: (..., M, K);
        b: (K, N), (N, K), or batched like a."""
        a, b = self._f32(a, "matmul", "a"), self._f32(b, "matmul", "b")
        if not isinstance(transpose_b, (bool, np.bool_)):
            raise TypeError(f"matmul: transpose_b must be a bool, got {transpose_b!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"matmul: activation must be one of {ACTIVATIONS}, got {activation!r}")
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
        fused = {"activation": activation} if activation else {}   # absent: the plain matmul's attributes
        return self._run("matmul", ("a", "b", "bias"), [a, b, bias], batch_shape + (m, n),
                         transpose_b=bool(transpose_b), **fused)

    # -- row-wise ----------------------------------------------------------------------------------
    def softmax(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Softmax over the last axis; `mask` is added first (shape x.shape, or x.shape[-1:] shared by rows)."""
        x = self._f32(x, "softmax", "x")
        rows, n = self._rows(x, "softmax")
        if mask is not None:
            mask = self._f32(mask, "softmax", "mask")
            if mask.shape != x.shape and mask.shape != (n,):
                raise ValueError(f"softmax: mask shape {mask.shape} must be {x.shape} or ({n},)")
        return self._run("softmax", ("x", "mask"), [x, mask], x.shape)

    def layer_norm(self, x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5,
                   residual: Tensor | None = None) -> Tensor:
        """LayerNorm over the last axis with weight `gamma` and bias `beta` (biased variance), of
        x + `residual` where one is given (added in the same kernel: a transformer's residual and norm)."""
        x = self._f32(x, "layer_norm", "x")
        rows, n = self._rows(x, "layer_norm")
        for name, t in (("gamma", gamma), ("beta", beta)):
            t = self._f32(t, "layer_norm", name)
            if t.shape != (n,):
                raise ValueError(f"layer_norm: {name} shape {t.shape} must be ({n},) to match x {x.shape}")
        if residual is not None:
            residual = self._f32(residual, "layer_norm", "residual")
            if residual.shape != x.shape:
                raise ValueError(f"layer_norm: residual shape {residual.shape} must be x's {x.shape}")
        eps = self._number(eps, "layer_norm", "eps", minimum=0.0)
        return self._run("layer_norm", ("x", "gamma", "beta", "residual"), [x, gamma, beta, residual], x.shape,
                         eps=eps)

    def _reduce(self, name: str, x: Tensor) -> Tensor:
        x = self._f32(x, name, "x")
        self._rows(x, name)
        return self._run(name, ("x",), [x], x.shape[:-1])

    def sum(self, x: Tensor) -> Tensor:
        """Sum over the last axis."""
        return self._reduce("sum", x)

    def mean(self, x: Tensor) -> Tensor:
        """Mean over the last axis."""
        return self._reduce("mean", x)

    def l2_normalize(self, x: Tensor) -> Tensor:
        """x / max(||x||, 1e-12) over the last axis."""
        x = self._f32(x, "l2_normalize", "x")
        self._rows(x, "l2_normalize")
        return self._run("l2_normalize", ("x",), [x], x.shape)

    # -- model ops ---------------------------------------------------------------------------------
    def embedding(self, ids: Tensor, table: Tensor) -> Tensor:
        """Rows of `table` (vocab, hidden) gathered by integer `ids` of any shape."""
        ids = self._rt.own(ids, "embedding: ids")
        if ids.dtype not in INDEX_DTYPES:
            raise TypeError(f"embedding: ids must be int32 or uint32, got {ids.dtype}")
        table = self._f32(table, "embedding", "table")
        if table.ndim != 2:
            raise ValueError(f"embedding: table must be (vocab, hidden), got {table.shape}")
        vocab, hidden = table.shape
        known = ids.known_values()
        if known is not None:
            check_ids(known, vocab, "embedding")
        return self._run("embedding", ("ids", "table"), [ids, table], ids.shape + (hidden,))

    def attention(self, q: Tensor, k: Tensor, v: Tensor, num_heads: int, mask: Tensor | None = None,
                  causal: bool = False) -> Tensor:
        """softmax(QK^T / sqrt(d) + mask) V per head. q: (B, Sq, H*d); k, v: (B, Sk, H*d); mask: (B, Sk) additive;
        `causal`: query i sees keys 0..i only (a text tower's self-attention)."""
        q, k, v = (self._f32(t, "attention", name) for t, name in ((q, "q"), (k, "k"), (v, "v")))
        if q.ndim != 3 or k.ndim != 3 or v.shape != k.shape:
            raise ValueError(f"attention: q must be (B, Sq, H*d) and k, v the same (B, Sk, H*d); "
                             f"got q {q.shape}, k {k.shape}, v {v.shape}")
        batch, sq, hidden = q.shape
        if k.shape[0] != batch or k.shape[2] != hidden:
            raise ValueError(f"attention: q {q.shape} and k {k.shape} differ in batch or width")
        if isinstance(num_heads, bool):
            raise TypeError("attention: num_heads must be an int, got a bool")
        try:
            num_heads = operator.index(num_heads)
        except TypeError:
            raise TypeError(f"attention: num_heads must be an int, got {num_heads!r} "
                            f"({type(num_heads).__name__})") from None
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
        if not isinstance(causal, bool):
            raise TypeError(f"attention: causal must be a bool, got {causal!r}")
        # absent unless set: a plain call keeps the attributes (and pipelines) it always had
        flag = {"causal": True} if causal else {}
        return self._run("attention", ("q", "k", "v", "mask"), [q, k, v, mask], q.shape, num_heads=num_heads, **flag)

    def patchify(self, pixels: Tensor, patch: int) -> Tensor:
        """A stride-equals-kernel convolution's input as rows (im2col): pixels (B, C, H, W) -> (B, 1 + N, C P P), N =
        (H / P)(W / P) patches in row-major order, each row in the conv weight's (C, P, P) order, row 0 of each image
        zeros (a class token's slot). The convolution is then `matmul(rows, weight.reshape(C_out, C P P),
        transpose_b=True)`: a vision transformer's patch embedding."""
        pixels = self._f32(pixels, "patchify", "pixels")
        patch = self._count(patch, "patchify", "patch", minimum=1)
        if pixels.ndim != 4:
            raise ValueError(f"patchify: pixels must be (B, C, H, W), got {pixels.shape}")
        batch, channels, height, width = pixels.shape
        if height % patch or width % patch:
            raise ValueError(f"patchify: {height} x {width} pixels are not whole {patch} x {patch} patches")
        n = (height // patch) * (width // patch)
        return self._run("patchify", ("pixels",), [pixels], (batch, 1 + n, channels * patch * patch), patch=patch)

    def mean_pool(self, x: Tensor, mask: Tensor) -> Tensor:
        """Masked mean over the sequence axis: x (B, S, H), mask (B, S) of 0/1 -> (B, H)."""
        x, mask = self._f32(x, "mean_pool", "x"), self._f32(mask, "mean_pool", "mask")
        if x.ndim != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"mean_pool: x must be (B, S, H) and mask (B, S); got x {x.shape}, mask {mask.shape}")
        batch, seq, hidden = x.shape
        return self._run("mean_pool", ("x", "mask"), [x, mask], (batch, hidden))

    # -- Whisper's audio front end and convolutions ---------------------------------------------------
    def conv1d(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: int = 0,
               activation: str | None = None) -> Tensor:
        """1-D convolution over time of x (T, C_in), time-major as every activation, by weight (C_out, C_in, K)
        (PyTorch's layout, as checkpoints store it), zero-padded by `padding` steps on both sides: (T_out,
        C_out) with T_out = (T + 2 padding - K) // stride + 1, plus `bias` (C_out,), then `activation`
        ("gelu": exact GELU, fused into the kernel's epilogue)."""
        x, weight = self._f32(x, "conv1d", "x"), self._f32(weight, "conv1d", "weight")
        if x.ndim != 2:
            raise ValueError(f"conv1d: x must be (T, C_in), time-major, got shape {x.shape}")
        if weight.ndim != 3:
            raise ValueError(f"conv1d: weight must be (C_out, C_in, K), got shape {weight.shape}")
        (t, cin), (cout, wcin, k) = x.shape, weight.shape
        if wcin != cin:
            raise ValueError(f"conv1d: weight {weight.shape} expects C_in={wcin} channels, x {x.shape} has {cin}")
        if t < 1 or cin < 1 or k < 1:
            raise ValueError(f"conv1d: needs T >= 1, C_in >= 1 and K >= 1, got x {x.shape}, weight {weight.shape}")
        stride = self._count(stride, "conv1d", "stride", 1)
        padding = self._count(padding, "conv1d", "padding", 0)
        if activation not in ACTIVATIONS:
            raise ValueError(f"conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if k > t + 2 * padding:
            raise ValueError(f"conv1d: kernel width K={k} exceeds the padded input's T + 2*padding = "
                             f"{t} + 2*{padding} = {t + 2 * padding} steps")
        if bias is not None:
            bias = self._f32(bias, "conv1d", "bias")
            if bias.shape != (cout,):
                raise ValueError(f"conv1d: bias shape {bias.shape} must be ({cout},) for C_out={cout}")
        fused = {"activation": activation} if activation else {}   # absent: the plain convolution's attributes
        return self._run("conv1d", ("x", "weight", "bias"), [x, weight, bias],
                         (conv1d_out_len(t, k, stride, padding), cout), stride=stride, padding=padding, **fused)

    def stft_power(self, signal: Tensor, n_fft: int = 400, hop: int = 160, frames: int | None = None) -> Tensor:
        """|rfft(signal[f*hop : f*hop + n_fft] * hann)|^2 per frame: (frames, n_fft // 2 + 1), the periodic
        Hann window (Whisper's STFT power). `signal` (N,) is already padded (Whisper reflects n_fft/2 samples
        on each side); `frames` defaults to every whole frame, 1 + (N - n_fft) // hop, and may be fewer."""
        signal = self._f32(signal, "stft_power", "signal")
        if signal.ndim != 1:
            raise ValueError(f"stft_power: signal must be one axis of samples (N,), got shape {signal.shape}")
        n_fft = self._count(n_fft, "stft_power", "n_fft", 1)
        hop = self._count(hop, "stft_power", "hop", 1)
        n = signal.shape[0]
        if n < n_fft:
            raise ValueError(f"stft_power: a signal of {n} samples is shorter than one frame of n_fft={n_fft}")
        most = 1 + (n - n_fft) // hop
        frames = most if frames is None else self._count(frames, "stft_power", "frames", 1)
        if frames > most:
            raise ValueError(f"stft_power: frames={frames} exceeds the {most} whole frames of n_fft={n_fft}, "
                             f"hop={hop} in {n} samples")
        table = self._dft_tables.get(n_fft)
        if table is None:
            table = self._dft_tables[n_fft] = self._rt.tensor(dft_table(n_fft))
        return self._run("stft_power", ("signal", "table"), [signal, table], (frames, n_fft // 2 + 1), n_fft=n_fft,
                         hop=hop, frames=frames)

    def log_mel(self, mel: Tensor, start: int = 0, rows: int | None = None, end: int | None = None) -> Tensor:
        """Whisper's log scaling of mel power (F, n_mels): L = log10(max(mel, 1e-10)) floored at max(L) - 8
        (the max over all F rows), then (L + 4) / 4: rows [start, start + rows) of that, each row at or past
        `end` zero (a 30 s window zero-padded, as faster-whisper pads its features). Defaults: rows to the
        end of mel, end = F."""
        mel = self._f32(mel, "log_mel", "mel")
        if mel.ndim != 2 or 0 in mel.shape:
            raise ValueError(f"log_mel: mel must be (F, n_mels) with at least one row and one mel, got {mel.shape}")
        f, n_mels = mel.shape
        start = self._count(start, "log_mel", "start", 0)
        if start >= f:
            raise ValueError(f"log_mel: start={start} is past mel's last row (it has F={f} rows)")
        rows = f - start if rows is None else self._count(rows, "log_mel", "rows", 1)
        end = f if end is None else self._count(end, "log_mel", "end", 0)
        if end > f:
            raise ValueError(f"log_mel: end={end} is past mel's F={f} rows")
        if end < start:
            raise ValueError(f"log_mel: end={end} is before start={start}")
        return self._run("log_mel", ("mel",), [mel], (rows, n_mels), start=start, rows=rows, end=end)

    # -- llama ops ---------------------------------------------------------------------------------
    def rms_norm(self, x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
        """RMSNorm over the last axis: weight * x / sqrt(mean(x^2) + eps)."""
        x, weight = self._f32(x, "rms_norm", "x"), self._f32(weight, "rms_norm", "weight")
        rows, n = self._rows(x, "rms_norm")
        if weight.shape != (n,):
            raise ValueError(f"rms_norm: weight shape {weight.shape} must be ({n},) to match x {x.shape}")
        eps = self._number(eps, "rms_norm", "eps", minimum=0.0)
        return self._run("rms_norm", ("x", "weight"), [x, weight], x.shape, eps=eps)

    def rope(self, x: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> Tensor:
        """Rotary embedding on the GGUF layout: adjacent pairs (2i, 2i+1) of each head of x (T, heads*D) rotated
        by row t's cos/sin (T, D/2)."""
        x, cos, sin = (self._f32(t, "rope", n) for t, n in ((x, "x"), (cos, "cos"), (sin, "sin")))
        heads = self._count(num_heads, "rope", "num_heads", 1)
        if x.ndim != 2 or x.shape[1] % (2 * heads):
            raise ValueError(f"rope: x must be (T, heads*D) with an even D for num_heads={heads}, got {x.shape}")
        want = (x.shape[0], x.shape[1] // heads // 2)
        if cos.shape != want or sin.shape != want:
            raise ValueError(f"rope: cos {cos.shape} and sin {sin.shape} must both be (T, D/2) = {want}")
        return self._run("rope", ("x", "cos", "sin"), [x, cos, sin], x.shape, num_heads=heads)

    def swiglu(self, gate: Tensor, up: Tensor) -> Tensor:
        """silu(gate) * up, elementwise (the llama feed-forward's gate)."""
        gate, up = self._f32(gate, "swiglu", "gate"), self._f32(up, "swiglu", "up")
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {gate.shape} and up {up.shape} differ")
        return self._run("swiglu", ("gate", "up"), [gate, up], gate.shape)

    def kv_attention(self, q: Tensor, k: Tensor, v: Tensor, num_heads: int, num_kv_heads: int,
                     start: int) -> Tensor:
        """Causal grouped-query attention over a KV cache: q (T, H*D), already rotated, at positions
        start..start+T-1; k, v (S, Hkv*D) cache rows (S >= start+T; rows past start+T-1 are not read). The
        cache may be stored as blocks (the partitioned KV cache): one dispatch per block."""
        q, k, v = (self._f32(t, "kv_attention", n) for t, n in ((q, "q"), (k, "k"), (v, "v")))
        heads = self._count(num_heads, "kv_attention", "num_heads", 1)
        kv_heads = self._count(num_kv_heads, "kv_attention", "num_kv_heads", 1)
        start = self._count(start, "kv_attention", "start")
        if heads % kv_heads:
            raise ValueError(f"kv_attention: num_heads={heads} is not a multiple of num_kv_heads={kv_heads}")
        if q.ndim != 2 or q.shape[1] % heads or k.ndim != 2 or v.shape != k.shape:
            raise ValueError(f"kv_attention: q must be (T, H*D) and k, v the same (S, Hkv*D); got q {q.shape}, "
                             f"k {k.shape}, v {v.shape}")
        d = q.shape[1] // heads
        if k.shape[1] != kv_heads * d:
            raise ValueError(f"kv_attention: k width {k.shape[1]} is not num_kv_heads*D = {kv_heads}*{d}")
        if d > 4 * 64:
            raise ValueError(f"kv_attention: head_dim {d} exceeds the kernel's 256")
        if start + q.shape[0] > k.shape[0]:
            raise ValueError(f"kv_attention: positions up to {start + q.shape[0]} do not fit the cache's "
                             f"{k.shape[0]} rows")
        return self._run("kv_attention", ("q", "k", "v", "state"), [q, k, v, None], q.shape, num_heads=heads,
                         num_kv_heads=kv_heads, start=start)

    def _quant_weight(self, w: Tensor, kind: str, shape: tuple[int, int], op: str) -> tuple[int, int]:
        w = self._rt.own(w, f"{op}: w")
        if kind not in QUANT_KINDS:
            raise TypeError(f"{op}: weight type {kind!r} is not one of {QUANT_KINDS}")
        n, k = (self._count(s, op, "shape", 1) for s in shape)
        words = -(-n * row_bytes(kind, k) // 4)
        if w.dtype != U32 or w.size != words:
            raise ValueError(f"{op}: a {kind} {(n, k)} weight is {words} u32 words of stored blocks, got "
                             f"{w.dtype} {w.shape}")
        return n, k

    def q_linear(self, x: Tensor, w: Tensor, kind: str, shape: tuple[int, int], row: int | None = None) -> Tensor:
        """x (T, K) @ W^T for a quantized (N, K) weight W kept as its stored blocks (u32 words): (T, N).
        `row`: only that row of x, (1, N) (the tied head on the last position). One row: the dequantizing
        matvec; a prompt of Q4_1: the dequantizing matmul."""
        x = self._f32(x, "q_linear", "x")
        n, k = self._quant_weight(w, kind, shape, "q_linear")
        if x.ndim != 2 or x.shape[1] != k:
            raise ValueError(f"q_linear: x must be (T, {k}) for a weight of shape {(n, k)}, got {x.shape}")
        if row is not None:
            row = self._count(row, "q_linear", "row")
            if row >= x.shape[0]:
                raise ValueError(f"q_linear: row {row} is outside x's {x.shape[0]} rows")
        elif x.shape[0] == 1:
            row = 0
        if row is not None:
            op = "q4_1_matvec" if kind == "Q4_1" else "q8_0_matvec"
            return self._run(op, ("w", "x"), [w, x], (1, n), n=n, k=k, row=row)
        if kind != "Q4_1":
            raise ValueError(f"q_linear: a {kind} weight multiplies one row at a time (pass row=), got x {x.shape}")
        return self._run("q4_1_matmul", ("w", "x"), [w, x], (x.shape[0], n), n=n, k=k)

    def q_embedding(self, ids: Tensor, table: Tensor, kind: str, shape: tuple[int, int]) -> Tensor:
        """Rows of a Q8_0 (vocab, D) table kept as its stored blocks, gathered by integer `ids`: ids.shape + (D,)."""
        ids = self._rt.own(ids, "q_embedding: ids")
        if ids.dtype not in INDEX_DTYPES:
            raise TypeError(f"q_embedding: ids must be int32 or uint32, got {ids.dtype}")
        if kind != "Q8_0":
            raise TypeError(f"q_embedding: the gather kernel reads Q8_0 tables, got {kind!r}")
        vocab, dim = self._quant_weight(table, kind, shape, "q_embedding")
        known = ids.known_values()
        if known is not None:
            check_ids(known, vocab, "q_embedding")
        return self._run("q8_0_embedding", ("w", "ids"), [table, ids], ids.shape + (dim,), n=vocab, k=dim)

    # -- sampling ----------------------------------------------------------------------------------
    def sample_token(self, logits: Tensor, seen: Tensor | None = None, *, temperature: float = 0.0, top_k: int = 0,
                     top_p: float = 1.0, repetition_penalty: float = 1.0, u: float = 0.0) -> Tensor:
        """The next token id from a language model's logits (1, V) or (V,), chosen where the logits are (so a
        decode step reads back 4 bytes, not V floats): a (1,) uint32 tensor. Hugging Face's order, as
        models.sampling.Sampler: `repetition_penalty` on the ids `seen` marks (uint32 (ceil(V/32),), bit i % 32
        of word i // 32 for id i: a logit > 0 divided by it, one <= 0 multiplied); then temperature 0: the argmax
        (its first index, a NaN counting as the max); else top-k (0: off), top-p (1: off) and the inverse CDF in
        id order at `u` in [0, 1), the host's seeded draw. references.sample_token_ref states the semantics."""
        op = "sample_token"
        logits = self._f32(logits, op, "logits")
        if logits.ndim not in (1, 2) or (logits.ndim == 2 and logits.shape[0] != 1) or logits.size == 0:
            raise ValueError(f"{op}: logits must be one row of V >= 1 values, (1, V) or (V,), got {logits.shape}")
        v = logits.shape[-1]
        temperature = self._number(temperature, op, "temperature", minimum=0.0)
        if 0 < temperature < F32_TINY:
            raise ValueError(f"{op}: temperature must be 0 (greedy) or at least float32's smallest normal "
                             f"{F32_TINY:.7g}, got {temperature!r}")
        top_k = self._count(top_k, op, "top_k", 0)
        top_p = self._number(top_p, op, "top_p")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"{op}: top_p must be in (0, 1] (1: off), got {top_p!r}")
        repetition_penalty = self._number(repetition_penalty, op, "repetition_penalty")
        if repetition_penalty < F32_TINY:
            raise ValueError(f"{op}: repetition_penalty must be > 0 (at least float32's smallest normal "
                             f"{F32_TINY:.7g}; 1: off), got {repetition_penalty!r}")
        u = self._number(u, op, "u", minimum=0.0)
        if u >= 1.0:
            raise ValueError(f"{op}: u must be a uniform draw in [0, 1), got {u!r}")
        if seen is not None:
            seen = self._rt.own(seen, f"{op}: seen")
            if seen.dtype != U32:
                raise TypeError(f"{op}: seen must be a uint32 bit mask, got {seen.dtype}")
            words = -(-v // 32)
            if seen.shape != (words,):
                raise ValueError(f"{op}: seen must be ({words},) uint32 words (a bit per id of V={v}), "
                                 f"got shape {seen.shape}")
        return self._run(op, ("logits", "seen"), [logits, seen], (1,), temperature=temperature, top_k=top_k,
                         top_p=top_p, repetition_penalty=repetition_penalty, u=u)


def _is_suffix(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    return len(small) <= len(big) and big[len(big) - len(small):] == small
