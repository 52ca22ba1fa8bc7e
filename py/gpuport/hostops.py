"""Host kernels: the cpu tier's fast float32 implementations of the ops that dominate a model (matmul,
gelu, softmax, layer_norm, attention, l2_normalize), used wherever an op runs on the host (the cpu
backend, auto's host placement, the cpu strategy). The NumPy references in kernels.py stay the oracle:
simple and exact; these trade their float64 steps for float32, in-place work and BLAS-shaped layouts, and
are checked against them like every GPU kernel (tests/test_hostops.py, and Hypothesis on the cpu backend).

Where float32 could overflow a row (a norm or a variance of values beyond ~1e19), that row is recomputed
by the reference, so no finite input loses its answer. Ops without a fast version run their reference.

In a page whose WebAssembly SIMD kernels are linked (wasm_kernels.available()), matmul, gelu, softmax,
layer_norm and attention run there instead: Pyodide's NumPy has no BLAS (~1 GFLOP/s), the kernels run
10-20x faster on MiniLM's shapes (bench/wasm_kernels.py). `KERNELS` is the one table that decides, built
once at import; `matmul`, `gelu`, ... and `run` are its entries. The kernels handle finite float32 inputs;
a call whose result is not all finite (infinities, NaNs, an overflowing sum) is redone by the NumPy
kernel, which owns the IEEE edge cases, and layer_norm's inputs whose float32 variance could overflow
(or whose eps is below 1e-12, where an underflowing variance matters) go to NumPy from the start.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import wasm_kernels
from .kernels import layer_norm_ref, l2_normalize_ref, reference

_F32 = np.float32
_BLOCK = 1 << 16          # elements an elementwise kernel works on at a time: a few blocks fit in L2
_ERF_P = _F32(0.3275911)
_ERF_A = tuple(_F32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))


def matmul_np(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *, transpose_b: bool = False
           ) -> np.ndarray:
    """BLAS on the operands as they lie (a transposed weight is a BLAS flag, not a copy); bias in place."""
    out = np.matmul(a, np.swapaxes(b, -1, -2) if transpose_b else b)
    if bias is not None:
        out += bias
    return out


def gelu_np(x: np.ndarray) -> np.ndarray:
    """Exact GELU with erf by Abramowitz & Stegun 7.1.26 evaluated in float32 (as the kernels do), in
    blocks that stay in cache: a dozen passes over a 64K-element block cost a third of those over a
    whole layer's activations."""
    flat = np.ascontiguousarray(x, dtype=_F32).reshape(-1)
    out = np.empty_like(flat)
    scratch = [np.empty(min(flat.size, _BLOCK), _F32) for _ in range(3)]
    for start in range(0, flat.size, _BLOCK):
        xs, ys = flat[start:start + _BLOCK], out[start:start + _BLOCK]
        z, a, t = (buf[:xs.size] for buf in scratch)
        np.multiply(xs, _F32(1 / math.sqrt(2)), out=z)
        np.abs(z, out=a)
        np.multiply(a, _ERF_P, out=t)
        t += 1
        np.reciprocal(t, out=t)
        np.multiply(t, _ERF_A[0], out=ys)
        for c in _ERF_A[1:]:
            ys += c
            ys *= t
        np.square(a, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)
        ys *= a                                   # q = 1 - erf(|z|)
        # 1 + erf(z) = 2 - q for z >= 0 and q for z < 0 (no cancellation where erf(z) is near -1)
        np.subtract(_F32(2), ys, out=t)
        np.copyto(ys, t, where=~np.signbit(z))
        ys *= _F32(0.5)                           # before x: 2 * x overflows for x near float32's max
        ys *= xs
    out[flat == -np.inf] = 0                      # the limit, not -inf * 0
    return out.reshape(x.shape)


def softmax_np(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Max-subtracted softmax on one float32 copy, in row blocks that stay in cache."""
    z = x + mask if mask is not None else np.array(x, dtype=_F32)
    if z.shape[-1] == 0:
        return z
    rows = z.reshape(-1, z.shape[-1])
    step = max(1, _BLOCK // z.shape[-1])
    for start in range(0, rows.shape[0], step):
        _softmax_rows(rows[start:start + step])
    return z


def _softmax_rows(z: np.ndarray) -> None:
    """Softmax over the last axis of a 2-D block, in place."""
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)


def layer_norm_np(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
    """Two passes in float32; rows whose statistics overflow or underflow float32 go to the float64
    reference (with eps >= 1e-12 the deviation is at least 1e-6: only eps ~ 0 meets the underflow)."""
    if x.shape[-1] == 0 or eps <= 0:   # eps = 0: a constant row is 0 / 0, which float32 rounding hides
        return layer_norm_ref(x, gamma, beta, eps=eps)
    d = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(np.square(d), axis=-1, keepdims=True)
    var += _F32(eps)
    np.sqrt(var, out=var)
    d /= var
    d *= gamma
    d += beta
    return _patch_overflow(d, x, np.where(var < _F32(1e-18), np.inf, var),
                           lambda rows: layer_norm_ref(rows, gamma, beta, eps=eps))


def l2_normalize_np(x: np.ndarray) -> np.ndarray:
    """x / max(||x||, 1e-12) in float32; rows whose squares overflow or vanish go to the reference."""
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    # squares that underflow only shrink a norm already below the 1e-12 clamp: the answer is unchanged
    return _patch_overflow(x / np.maximum(norm, _F32(1e-12)), x, norm, l2_normalize_ref)


def attention_np(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
              num_heads: int) -> np.ndarray:
    """Scores per head as BLAS matmuls over contiguous (batch, head, seq, dim) copies. Small problems go
    as one batched matmul (fewer calls); large ones head by head, so each (Sq, Sk) score block is
    normalised while it is still in cache."""
    batch, sq, hidden = q.shape
    sk, d = k.shape[1], hidden // num_heads

    def heads(t: np.ndarray, s: int) -> np.ndarray:
        return np.ascontiguousarray(t.reshape(batch, s, num_heads, d).transpose(0, 2, 1, 3))

    qh, kh, vh = heads(q, sq) * _F32(1.0 / math.sqrt(d)), heads(k, sk), heads(v, sk)
    if sq * sk <= _BLOCK // 16:
        probs = softmax_np(qh @ np.swapaxes(kh, -1, -2), mask[:, None, None, :] if mask is not None else None)
        out = probs @ vh
    else:
        out = np.empty((batch, num_heads, sq, d), _F32)
        for b in range(batch):
            for h in range(num_heads):
                scores = qh[b, h] @ kh[b, h].T
                if mask is not None:
                    scores += mask[b]
                _softmax_rows(scores)
                np.matmul(scores, vh[b, h], out=out[b, h])
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(batch, sq, hidden)


def _patch_overflow(out: np.ndarray, x: np.ndarray, stat: np.ndarray,
                    ref: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Rows of finite x whose float32 statistic is not finite: recomputed by `ref`."""
    bad = ~np.isfinite(stat[..., 0]) & np.isfinite(x).all(axis=-1)
    if bad.any():
        out[bad] = ref(x[bad])
    return out


NUMPY: dict[str, Callable[..., np.ndarray]] = {
    "matmul": matmul_np, "gelu": gelu_np, "softmax": softmax_np, "layer_norm": layer_norm_np,
    "attention": attention_np, "l2_normalize": l2_normalize_np,
}

_F32_MAX = float(np.finfo(np.float32).max)


# Below these sizes NumPy wins: a call into WebAssembly costs ~20-40 us (argument checks, the JS crossing),
# NumPy's loops on a few hundred elements less. Measured in Pyodide under Node (V8, as Chromium) with
# bench/wasm_kernels.py's method: matmul 8x8 weights, m=1..96: NumPy 7-40 us, wasm 22-45 us; equal at
# 256x8x8 (16K multiply-adds), wasm 1.4x at 1x384x384 (147K); softmax 3x5: NumPy 20 us, wasm 25 us.
_WASM_MIN_MACS = 16384          # matmul: m * k * n
_WASM_MIN_ELEMENTS = 256        # the row-wise ops: elements of x


def _wasm_takes(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the WebAssembly kernel should give this call's answer: big enough to pay for the crossing;
    and for layer_norm, float32 statistics that cannot overflow (a row's sum of squared deviations is at
    most 4 n times the sum of squares of x) and an eps that dominates any underflow (the NumPy kernel's
    reasoning)."""
    x = np.asarray(args[0])
    if op == "matmul":
        b = np.shape(args[1])
        n = b[-2] if kwargs.get("transpose_b") and len(b) >= 2 else b[-1] if b else 1
        return x.size * n >= _WASM_MIN_MACS
    if x.size < _WASM_MIN_ELEMENTS:
        return op == "attention"   # its NumPy path is several batched products: wasm wins from 1x2 tokens
    if op != "layer_norm":
        return True
    if kwargs.get("eps", 1e-5) < 1e-12 or x.dtype != _F32 or x.ndim == 0:
        return False
    flat = x.reshape(-1)
    squares = float(np.dot(flat, flat))
    return squares * 4 * max(x.shape[-1], 1) < _F32_MAX


def _via_wasm(op: str) -> Callable[..., np.ndarray]:
    """The op on the WebAssembly kernel, with the NumPy kernel where that one owns the answer."""
    fast, fallback = wasm_kernels.OPS[op], NUMPY[op]

    def kernel(*args: Any, **kwargs: Any) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            if _wasm_takes(op, args, kwargs):
                out = fast(*args, **kwargs)
                if np.isfinite(out.sum()):   # one pass; any inf or NaN anywhere makes it non-finite
                    return out
            return fallback(*args, **kwargs)

    kernel.__name__ = kernel.__qualname__ = f"{op}_wasm"
    kernel.__doc__ = f"{op} on the WebAssembly SIMD kernel (wasm_kernels.{op}); NumPy for what it cannot take."
    return kernel


def _select() -> dict[str, Callable[..., np.ndarray]]:
    """Each op's host kernel here: WebAssembly where it is linked, else NumPy."""
    if not wasm_kernels.available():
        return dict(NUMPY)
    return {op: (_via_wasm(op) if op in wasm_kernels.OPS else fn) for op, fn in NUMPY.items()}


KERNELS = _select()
matmul, gelu, softmax = KERNELS["matmul"], KERNELS["gelu"], KERNELS["softmax"]
layer_norm, attention, l2_normalize = KERNELS["layer_norm"], KERNELS["attention"], KERNELS["l2_normalize"]


def backend_name() -> str:
    """What runs the host kernels: "wasm" (WebAssembly SIMD, in a page) or "numpy"."""
    return "wasm" if KERNELS["matmul"] is not NUMPY["matmul"] else "numpy"


def run(op: str, arrays: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    """`op` on host arrays: its fast kernel where there is one, else its reference (C-contiguous float32;
    infinities and NaNs follow IEEE quietly)."""
    fast = KERNELS.get(op)
    if fast is None:
        return reference(op, arrays, attrs)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return np.ascontiguousarray(fast(*arrays, **attrs), dtype=_F32)
