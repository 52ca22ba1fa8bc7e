"""Host kernels: the cpu tier's fast float32 implementations of the ops that dominate a model (matmul,
gelu, quick_gelu, softmax, layer_norm, attention, l2_normalize; Whisper's conv1d and stft_power as products on the host
matmul, log_mel vectorised), used wherever an op runs on the host (the cpu
backend, auto's host placement, a step down to the host). The NumPy references (references.py) stay the
oracle: simple and exact; these trade their float64 steps for float32, in-place work and BLAS-shaped
layouts, and are checked against them like every GPU kernel (tests/host/test_native_kernels.py natively,
tests/wasm_cases.py in Node and the pages, and Hypothesis on the cpu backend).

Where float32 could overflow a row (a norm or a variance of values beyond ~1e19), that row is recomputed
by the reference, so no finite input loses its answer. Ops without a fast version run their reference.

In a page whose WebAssembly SIMD kernels are linked (wasm_kernels.available()), matmul, gelu, softmax,
layer_norm and attention run there instead: Pyodide's NumPy has no BLAS (~1 GFLOP/s), the kernels run
10-20x faster on MiniLM's shapes (bench/wasm_kernels.py). Natively the same C sources built for this
machine (native_kernels, `make setup`) take the calls where they beat NumPy and its BLAS
(bench/host_kernels.py; see _native_takes); GPUPORT_HOST_KERNELS=numpy turns them off. `KERNELS` is the
one table that decides, built once at import; `matmul`, `gelu`, ... and `run` are its entries. The kernels
handle finite float32 inputs;
a call whose result is not all finite (infinities, NaNs, an overflowing sum) is redone by the NumPy
kernel, which owns the IEEE edge cases, and layer_norm's inputs whose float32 variance could overflow
(or whose eps is below 1e-12, where an underflowing variance matters) go to NumPy from the start.

Whole layers (an encoder layer, a quantized model's llama blocks and head) take every core there is: natively
the library's own threads (blas_threads() of them); in a cross-origin isolated page the threaded WebAssembly
build on its pool of workers (wasm_threads, which copies into a memory of its own, small beside a layer's
work), else the one-thread build. `layers()` is that one choice.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Hashable, Sequence

import numpy as np

from ..platform import IN_PYODIDE
from . import native_kernels, wasm_kernels, wasm_threads
from .references import (
    LOG_MEL_FLOOR,
    LOG_MEL_RANGE,
    DecoderLayer,
    EncoderLayer,
    conv1d_out_len,
    greedy_ref,
    hann_window,
    l2_normalize_ref,
    layer_norm_ref,
    stft_frames,
)
from .simd_ops import SimdKernels, immutable

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


def quick_gelu_np(x: np.ndarray) -> np.ndarray:
    """QuickGELU, x sigmoid(1.702 x), in float32 with e = exp(-|1.702 x|) <= 1 (no overflow): sigmoid is
    1 / (1 + e) for x >= 0 and e / (1 + e) below, as the C kernel computes it."""
    x32 = np.asarray(x, dtype=_F32)
    e = np.exp(-np.abs(x32 * _F32(1.702)))
    r = np.reciprocal(e + _F32(1))
    return x32 * np.where(x32 >= 0, r, e * r)


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
    d = x - x[..., :1]   # deviations from the first value: a constant row's are exactly 0 (rowwise.c says why)
    d -= d.mean(axis=-1, keepdims=True)
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
                 num_heads: int, causal: bool = False) -> np.ndarray:
    """Scores per head as BLAS matmuls over contiguous (batch, head, seq, dim) copies, normalised by the
    host's softmax (the SIMD kernel where it is linked: NumPy's exp is the slow part here). Small problems
    go as one batched matmul (fewer calls); large ones head by head, so each (Sq, Sk) score block is
    normalised while it is still in cache. `causal`: query i sees keys 0..i (-inf above the diagonal)."""
    batch, sq, hidden = q.shape
    sk, d = k.shape[1], hidden // num_heads

    def heads(t: np.ndarray, s: int) -> np.ndarray:
        return np.ascontiguousarray(t.reshape(batch, s, num_heads, d).transpose(0, 2, 1, 3))

    upper = np.triu(np.ones((sq, sk), bool), 1) if causal else None
    qh, kh, vh = heads(q, sq) * _F32(1.0 / math.sqrt(d)), heads(k, sk), heads(v, sk)
    if sq * sk <= _BLOCK // 16:
        scores = qh @ np.swapaxes(kh, -1, -2)
        if upper is not None:
            scores[..., upper] = -np.inf
        probs = softmax(scores, mask[:, None, None, :] if mask is not None else None)
        out = probs @ vh
    else:
        out = np.empty((batch, num_heads, sq, d), _F32)
        for b in range(batch):
            for h in range(num_heads):
                scores = qh[b, h] @ kh[b, h].T
                if upper is not None:
                    scores[upper] = -np.inf
                np.matmul(softmax(scores, None if mask is None else mask[b]), vh[b, h], out=out[b, h])
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(batch, sq, hidden)


def _patch_overflow(out: np.ndarray, x: np.ndarray, stat: np.ndarray,
                    ref: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Rows of finite x whose float32 statistic is not finite: recomputed by `ref`."""
    bad = ~np.isfinite(stat[..., 0]) & np.isfinite(x).all(axis=-1)
    if bad.any():
        out[bad] = ref(x[bad])
    return out


NUMPY: dict[str, Callable[..., np.ndarray]] = {
    "matmul": matmul_np, "gelu": gelu_np, "quick_gelu": quick_gelu_np, "softmax": softmax_np,
    "layer_norm": layer_norm_np, "attention": attention_np, "l2_normalize": l2_normalize_np,
}

_F32_MAX = float(np.finfo(np.float32).max)
ENV = "GPUPORT_HOST_KERNELS"   # "numpy": NumPy's kernels even where SIMD kernels are linked (comparisons)


# Below these sizes NumPy wins in a page: a call into WebAssembly costs tens of microseconds (argument
# checks, the JS crossing), NumPy's loops on a few hundred elements less. Where they cross is measured by
# bench/wasm_kernels.py (bench/results/wasm_kernels.json).
_WASM_MIN_MACS = 16384          # matmul: m * k * n
_WASM_MIN_ELEMENTS = 256        # the row-wise ops: elements of x

# Natively NumPy has BLAS (OpenBLAS) and the C kernels are built for this CPU (their vectors its full
# width). bench/host_kernels.py measures both on MiniLM's shapes at 1 and 2 BLAS threads
# (bench/results/host_kernels_<threads>t.json): against a read-only weight packed once, the C matmul beats
# a one-thread BLAS from 2 rows (on one row BLAS's gemv wins); while the BLAS runs gemm on several cores
# it wins beyond about 24 rows; the C row-wise kernels and attention win at every size measured.
_NATIVE_MATMUL_MIN_ROWS = 2        # a read-only (packed, cached) 2-D weight and bias
_NATIVE_MATMUL_MAX_ROWS_MT = 24    # the most rows the C matmul takes while the BLAS has several threads


def blas_threads() -> int:
    """The threads NumPy's BLAS runs a product on: what its environment tells it (OPENBLAS_NUM_THREADS,
    OMP_NUM_THREADS, MKL_NUM_THREADS), else the CPUs this process may use (OpenBLAS's default); 1 in a page.
    The host's budget of threads: the kernels' own encoder layer uses as many."""
    if IN_PYODIDE:
        return 1
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _stats_fit(x: np.ndarray, kwargs: dict[str, Any]) -> bool:
    """layer_norm's float32 statistics cannot overflow (a row's sum of squared deviations is at most 4 n
    times the sum of squares of x) and its eps dominates any underflow (the NumPy kernel's reasoning)."""
    if kwargs.get("eps", 1e-5) < 1e-12 or x.dtype != _F32 or x.ndim == 0:
        return False
    flat = x.reshape(-1)
    squares = float(np.dot(flat, flat))
    return squares * 4 * max(x.shape[-1], 1) < _F32_MAX


def _wasm_takes(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the WebAssembly kernel should give this call's answer: big enough to pay for the crossing,
    and for layer_norm statistics that fit float32."""
    x = np.asarray(args[0])
    if op == "matmul":
        b = np.shape(args[1])
        n = b[-2] if kwargs.get("transpose_b") and len(b) >= 2 else b[-1] if b else 1
        return x.size * n >= _WASM_MIN_MACS
    if x.size < _WASM_MIN_ELEMENTS:
        return op == "attention"   # its NumPy path is several batched products: wasm wins from 1x2 tokens
    return op != "layer_norm" or _stats_fit(x, kwargs)


def _native_takes(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the native C kernel should give this call's answer (measurements above): every row-wise op
    and attention (layer_norm where its float32 statistics fit); matmul against a weight packed once from
    2 rows (on one row BLAS's gemv wins), and while the BLAS has several threads only up to
    _NATIVE_MATMUL_MAX_ROWS_MT rows (beyond, its gemm on every core wins)."""
    if op == "matmul":
        x, b, bias = np.asarray(args[0]), args[1], args[2] if len(args) > 2 else kwargs.get("bias")
        rows = x.size // x.shape[-1] if x.ndim >= 2 and x.shape[-1] else 0
        if rows < _NATIVE_MATMUL_MIN_ROWS or (rows > _NATIVE_MATMUL_MAX_ROWS_MT and _BLAS_THREADS > 1):
            return False
        return np.ndim(b) == 2 and immutable(b) and immutable(bias)
    return op != "layer_norm" or _stats_fit(np.asarray(args[0]), kwargs)


# Calls per op and engine since import (what hostops.calls() reports): where host work really ran.
_CALLS: dict[str, dict[str, int]] = {op: {} for op in (*NUMPY, "encoder_layer", "decoder_layers", "greedy")}


def _via(op: str, engine: SimdKernels, takes: Callable[[str, tuple[Any, ...], dict[str, Any]], bool]
         ) -> Callable[..., np.ndarray]:
    """The op on the engine's SIMD kernel, with the NumPy kernel where that one owns the answer."""
    fast, fallback, tally = engine.ops[op], NUMPY[op], _CALLS[op]
    name, linked = engine.name, engine.available

    def kernel(*args: Any, **kwargs: Any) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            if linked() and takes(op, args, kwargs):
                out = fast(*args, **kwargs)
                if np.isfinite(out.sum()):   # one pass; any inf or NaN anywhere makes it non-finite
                    tally[name] = tally.get(name, 0) + 1
                    return out
            tally["numpy"] = tally.get("numpy", 0) + 1
            return fallback(*args, **kwargs)

    kernel.__name__ = kernel.__qualname__ = f"{op}_{name.replace('-', '_')}"
    kernel.__doc__ = f"{op} on the {name} SIMD kernel; NumPy for what it cannot take or does better."
    return kernel


def _engine() -> tuple[SimdKernels | None, Callable[[str, tuple[Any, ...], dict[str, Any]], bool], str]:
    """The SIMD kernels that run host ops here, the rule for which calls they take, and why NumPy's run
    everything when there are none. A page's kernels are linked later, when gpuport.open() registers the
    JS half (backends/jsmodules.py): until then, and wherever linking fails, their ops answer on NumPy."""
    if os.environ.get(ENV, "").lower() == "numpy":
        return None, _native_takes, f"{ENV}=numpy"
    if IN_PYODIDE:
        return wasm_kernels.ENGINE, _wasm_takes, ""
    return (native_kernels.ENGINE if native_kernels.available() else None), _native_takes, native_kernels.reason()


def _linked() -> SimdKernels | None:
    """The SIMD kernels, when they are linked now."""
    return _ENGINE if _ENGINE is not None and _ENGINE.available() else None


def _select() -> dict[str, Callable[..., np.ndarray]]:
    """Each op's host kernel here: the SIMD kernels where they are linked (via their routing rule), else
    NumPy."""
    if _ENGINE is None:
        return dict(NUMPY)
    return {op: (_via(op, _ENGINE, _TAKES) if op in _ENGINE.ops else fn) for op, fn in NUMPY.items()}


_BLAS_THREADS = blas_threads()   # read once, as the BLAS reads its environment once when it loads
_ENGINE, _TAKES, _REASON = _engine()
KERNELS = _select()
matmul, gelu, quick_gelu, softmax = KERNELS["matmul"], KERNELS["gelu"], KERNELS["quick_gelu"], KERNELS["softmax"]
layer_norm, attention, l2_normalize = KERNELS["layer_norm"], KERNELS["attention"], KERNELS["l2_normalize"]



# -- Whisper's front end and convolutions: products on the host's matmul (the SIMD kernels or BLAS) -----------

def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
           padding: int = 0) -> np.ndarray:
    """x (T, C_in) by weight (C_out, C_in, K), zero-padded: im2col as a strided view of the padded x, laid
    out (T_out, C_in * K) as the weight's own (C_out, C_in * K) rows (no copy of the weight), then one
    matmul with the bias. A fused activation follows as its own host kernel (OpSpec.run_host)."""
    cout, cin, k = weight.shape
    return matmul(conv1d_columns(x, k, stride=stride, padding=padding), weight.reshape(cout, cin * k), bias,
                  transpose_b=True)


def conv1d_columns(x: np.ndarray, k: int, *, stride: int = 1, padding: int = 0) -> np.ndarray:
    """conv1d's im2col: x (T, C_in) zero-padded, as rows (T_out, C_in * K) laid out as a (C_out, C_in, K) weight's
    own rows, so the convolution is one product with the weight reshaped (C_out, C_in * K)."""
    t, cin = x.shape
    xp = np.zeros((t + 2 * padding, cin), _F32)
    xp[padding:padding + t] = x
    t_out = conv1d_out_len(t, k, stride, padding)
    return np.lib.stride_tricks.as_strided(xp, (t_out, cin, k), (stride * xp.strides[0], xp.strides[1], xp.strides[0]),
                                           writeable=False).reshape(t_out, cin * k)   # the reshape copies


def patchify(pixels: np.ndarray, *, patch: int) -> np.ndarray:
    """references.patchify_ref written into one float32 output: each image's patches laid out as rows by one strided
    copy (no intermediate), row 0 left zero (the class token's slot)."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    out = np.zeros((b, 1 + gh * gw, c * patch * patch), _F32)
    view = np.asarray(pixels, _F32)[:, :, :gh * patch, :gw * patch].reshape(b, c, gh, patch, gw, patch)
    out[:, 1:].reshape(b, gh, gw, c, patch, patch)[...] = view.transpose(0, 2, 4, 1, 3, 5)
    return out


# n_fft -> (window, basis) in float32, computed in float64: the DFT as a matmul's weight. Read-only, so the
# SIMD matmul packs each basis once; a few sizes are kept (Whisper uses one).
_DFT_BASES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def dft_basis(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """The periodic Hann window (n_fft,) and the real DFT's basis (n_fft, 2 * (n_fft // 2 + 1)): cos then -sin
    of 2 pi (n k mod n_fft) / n_fft, the angle's index reduced exactly in integers before float64 trigonometry."""
    hit = _DFT_BASES.get(n_fft)
    if hit is None:
        m = (np.arange(n_fft)[:, None] * np.arange(n_fft // 2 + 1)[None, :]) % n_fft
        angle = (2 * np.pi / n_fft) * m
        window, basis = hann_window(n_fft).astype(_F32), np.concatenate([np.cos(angle), -np.sin(angle)], axis=1).astype(_F32)
        window.flags.writeable = basis.flags.writeable = False
        if len(_DFT_BASES) >= 4:
            _DFT_BASES.pop(next(iter(_DFT_BASES)))
        hit = _DFT_BASES[n_fft] = (window, basis)
    return hit


def stft_power(signal: np.ndarray, table: np.ndarray | None = None, *, n_fft: int, hop: int,
               frames: int | None = None) -> np.ndarray:
    """|rfft(frame * hann)|^2 per frame as one matmul: the windowed frames (a strided view of the signal
    times the window) @ the cached cos/sin basis, then re^2 + im^2. `table` (the GPU kernel's twiddles) is
    not needed here."""
    window, basis = dft_basis(n_fft)
    frames = stft_frames(signal, n_fft, hop, frames)
    sig = np.ascontiguousarray(signal, _F32)
    view = np.lib.stride_tricks.as_strided(sig, (frames, n_fft), (hop * sig.strides[0], sig.strides[0]), writeable=False)
    spec = matmul(view * window, basis)
    bins = n_fft // 2 + 1
    re, im = spec[:, :bins], spec[:, bins:]
    out = np.square(re)
    out += np.square(im)
    return out


def log_mel(mel: np.ndarray, *, start: int = 0, rows: int | None = None, end: int | None = None) -> np.ndarray:
    """Whisper's log scaling (references.log_mel_ref) in float32: the floor from the largest mel value (log10
    is monotonic, so log10 of the max is the max of the log10s), then only the rows the window keeps."""
    f, n = mel.shape
    rows = f - start if rows is None else rows
    end = f if end is None else end
    out = np.zeros((rows, n), _F32)
    valid = max(0, min(rows, end - start))
    if valid:
        floor = np.log10(np.maximum(mel.max(), _F32(LOG_MEL_FLOOR))) - _F32(LOG_MEL_RANGE)
        logs = np.log10(np.maximum(mel[start:start + valid], _F32(LOG_MEL_FLOOR)))
        np.maximum(logs, floor, out=logs)
        logs += _F32(4)
        np.multiply(logs, _F32(0.25), out=out[:valid])
    return out


def _layer_takes(x: np.ndarray, layer: EncoderLayer) -> bool:
    """Whether the SIMD kernels run a whole encoder layer: in a page where they take its products; natively
    from 2 rows (the layer's products are the C kernel's from there at one thread, and the layer spreads
    over the library's own threads rather than the BLAS's). The weights must be read-only (packed once)."""
    if IN_PYODIDE:
        return _wasm_takes("matmul", (x, layer.wqkv, layer.bqkv), {"transpose_b": True})
    return (x.size // max(x.shape[-1], 1) >= _NATIVE_MATMUL_MIN_ROWS
            and all(immutable(w) for w in (layer.wqkv, layer.bqkv, layer.wo, layer.bo, layer.wi, layer.bi,
                                           layer.wo2, layer.bo2)))


def layers() -> tuple[SimdKernels, int] | None:
    """The SIMD kernels that run whole layers here, and on how many threads: the page's pool where it started
    (wasm_threads; its workers and this thread), else the linked kernels on blas_threads() (1 in a page); None
    where no kernels are linked. The pool takes every size: a short encoder layer splits its products by the
    weights' columns (hostkernels/encoder.c), so each thread streams its share of them (bench/page_threads.py, one
    sentence on 2 cores: 1.3-1.5x the one-thread build)."""
    if IN_PYODIDE and wasm_threads.available() and _ENGINE is wasm_kernels.ENGINE:
        return wasm_threads.ENGINE, wasm_threads.threads()
    engine = _linked()
    return None if engine is None else (engine, _BLAS_THREADS)


def paced(kind: Hashable) -> ContextManager[None]:
    """A model call's layers (`kind`: what they are and their size): in a page, on the pool's workers or on this
    thread alone, as the pool decides from what such calls took each way (wasm_threads.PoolKernels.call)."""
    return wasm_threads.ENGINE.call(kind) if IN_PYODIDE else nullcontext()


def layer_threads() -> dict[str, Any]:
    """What layers() chose, for reports: {"engine", "threads"}, plus "reason" where a page runs them on one
    thread (not cross-origin isolated, threads: 1, no workers), "asleep": what calls begun with the pool's
    workers asleep took woken and alone (PoolKernels.paced), and "last_call": how the latest model call ran (its
    workers awake already, woken, or this thread alone)."""
    chosen = layers()
    report: dict[str, Any] = {"engine": "numpy" if chosen is None else chosen[0].name,
                              "threads": 1 if chosen is None else chosen[1]}
    if IN_PYODIDE and not wasm_threads.available():
        report["reason"] = wasm_threads.reason()
    elif IN_PYODIDE:
        report["asleep"] = wasm_threads.ENGINE.paced()
        report["last_call"] = wasm_threads.ENGINE.last_way
    return report


def encoder_layers(x: np.ndarray, stack: Sequence[EncoderLayer], mask: np.ndarray | None = None, *, num_heads: int,
                   eps: float, causal: bool = False, lengths: np.ndarray | None = None,
                   keep: str | None = None, prefix: int = 0) -> np.ndarray:
    """x (B, S, H) through the layers of `stack` in turn (encoder_layer each): where the SIMD kernels take them, one
    kernel call per layer on x kept in the kernels' memory (in a page no copy and no Python between two layers but
    the call); a run with statistics or values that are not finite is redone layer by layer by encoder_layer.
    `keep` ("first" or "last"): only each sequence's first or last row is wanted, (sequences, H): the kernels make
    no other row of the last layer past its QKV product. `prefix` (with `lengths`, causal): x's first `prefix` rows
    begin every sequence, and the kernels make them once (SimdKernels.encoder_layers); op by op each sequence gets
    its own copy of them."""
    rows = x.size // max(x.shape[-1], 1)
    with paced(("encoder", x.shape[-1], len(stack), rows.bit_length())):   # rows by powers of two
        out = _fused_layers(x, stack, mask, num_heads=num_heads, eps=eps, causal=causal, lengths=lengths, keep=keep,
                            prefix=prefix)
    if out is not None:
        return out
    if prefix:
        x, lengths = _unshared(x, lengths, prefix)
    for layer in stack:
        x = encoder_layer(x, layer, mask, num_heads=num_heads, eps=eps, causal=causal, lengths=lengths)
    if keep is None:
        return _reshared(x, lengths, prefix) if prefix else x
    flat = x.reshape(-1, x.shape[-1])
    ends = np.cumsum(lengths) if lengths is not None else np.arange(1, x.shape[0] + 1) * x.shape[1]
    sizes = np.asarray(lengths) if lengths is not None else np.full(x.shape[0], x.shape[1])
    return flat[ends - 1 if keep == "last" else ends - sizes]


def _unshared(x: np.ndarray, lengths: Any, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences after a shared prefix (encoder_layers) as sequences of their own, each with a copy of it."""
    flat = x.reshape(-1, x.shape[-1])
    ends = prefix + np.cumsum(lengths)
    parts = [np.concatenate([flat[:prefix], flat[e - n:e]]) for e, n in zip(ends, lengths)]
    return np.concatenate(parts)[None], np.asarray(lengths, np.int32) + prefix


def _reshared(x: np.ndarray, lengths: np.ndarray, prefix: int) -> np.ndarray:
    """_unshared's layout back: the first sequence's prefix rows, then every sequence's own rows."""
    flat = x.reshape(-1, x.shape[-1])
    starts = np.cumsum(lengths) - lengths
    return np.concatenate([flat[:prefix], *(flat[s + prefix:s + n] for s, n in zip(starts, lengths))])[None]


def _fused_layers(x: np.ndarray, stack: Sequence[EncoderLayer], mask: np.ndarray | None, **kw: Any) -> np.ndarray | None:
    """x through `stack` in the SIMD kernels (layers()), or None where they do not take every layer (_layer_takes)
    or a result is not finite."""
    chosen = layers()
    if chosen is None or kw["eps"] < 1e-12 or not all(_layer_takes(x, layer) for layer in stack):
        return None
    engine, threads = chosen
    with np.errstate(over="ignore", invalid="ignore"):
        out, bad = engine.encoder_layers(x, stack, mask, threads=threads, **kw)
        if bad or not np.isfinite(out.sum()):
            return None
    tally = _CALLS["encoder_layer"]
    tally[engine.name] = tally.get(engine.name, 0) + len(stack)
    return out


def encoder_layer(x: np.ndarray, layer: EncoderLayer, mask: np.ndarray | None = None, *, num_heads: int,
                  eps: float, causal: bool = False, lengths: np.ndarray | None = None) -> np.ndarray:
    """x (B, S, H) through one transformer encoder layer (references.EncoderLayer: post- or pre-norm, GELU or
    QuickGELU; reference: references.encoder_layer_ref), `causal` attention or not: in one SIMD kernel call where
    they take it (_layer_takes; in a page a call per op would cost more than the arithmetic of a short sentence;
    natively on blas_threads() threads of the kernels' own), else op by op with the host kernels above. A fused
    result with statistics or values that are not finite is redone op by op, where NumPy owns the IEEE edge
    cases. `lengths`: x (1, T, H) holds sequences of those lengths one after another (a batch without padding:
    each attends within itself; no mask)."""
    out = _fused_layers(x, (layer,), mask, num_heads=num_heads, eps=eps, causal=causal, lengths=lengths)
    if out is not None:
        return out
    tally = _CALLS["encoder_layer"]
    tally["ops"] = tally.get("ops", 0) + 1
    batch, seq, h = x.shape
    x = x.reshape(batch * seq, h)
    act = quick_gelu if layer.activation == "quick_gelu" else gelu

    def attention_of(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        if lengths is None:
            return attention(q, k, v, mask, num_heads=num_heads, causal=causal)
        bounds = np.cumsum([0, *lengths])
        return np.concatenate([attention(q[:, a:b], k[:, a:b], v[:, a:b], num_heads=num_heads, causal=causal)
                               for a, b in zip(bounds[:-1], bounds[1:])], axis=1)

    def attend(y: np.ndarray) -> np.ndarray:
        qkv = matmul(y, layer.wqkv, layer.bqkv, transpose_b=True)
        q, k, v = (qkv[:, i * h:(i + 1) * h].reshape(batch, seq, h) for i in range(3))   # views: read in place
        a = attention_of(q, k, v).reshape(batch * seq, h)
        return matmul(a, layer.wo, layer.bo, transpose_b=True)

    def ffn(y: np.ndarray) -> np.ndarray:
        return matmul(act(matmul(y, layer.wi, layer.bi, transpose_b=True)), layer.wo2, layer.bo2, transpose_b=True)

    if layer.pre_norm:
        x = x + attend(layer_norm(x, layer.ln1_g, layer.ln1_b, eps=eps))
        x += ffn(layer_norm(x, layer.ln2_g, layer.ln2_b, eps=eps))
        return x.reshape(batch, seq, h)
    o = attend(x)
    o += x
    x = layer_norm(o, layer.ln1_g, layer.ln1_b, eps=eps)
    o = ffn(x)
    o += x
    return layer_norm(o, layer.ln2_g, layer.ln2_b, eps=eps).reshape(batch, seq, h)


def decoder_layers(x: np.ndarray, start: int, layers_: list[DecoderLayer], k_caches: list[np.ndarray],
                   v_caches: list[np.ndarray], cross: list[tuple[np.ndarray, np.ndarray]], *, num_heads: int,
                   eps: float) -> np.ndarray:
    """x (T, H) at positions start.. through pre-norm decoder layers in turn (references.DecoderLayer; reference:
    decoder_layer_ref), layer i's keys and values written to rows start.. of k_caches[i], v_caches[i], its
    cross-attention over cross[i] = (keys, values): one SIMD kernel call per layer on layers()'s threads where they
    are linked (a decode step's ~15 ops a layer cost more in Python than their arithmetic, and one row's products
    split by columns over the threads), else op by op. A fused result that is not finite is redone op by op."""
    tally, chosen = _CALLS["decoder_layers"], layers()
    if chosen is not None and eps >= 1e-12 and all(immutable(w) for L in layers_ for w in (L.wqkv, L.wi, L.wo2)):
        engine, threads = chosen
        out = np.array(x, dtype=np.float32, order="C")
        with np.errstate(over="ignore", invalid="ignore"):
            engine.decoder_layers(out, start, layers_, k_caches, v_caches, cross, num_heads=num_heads, eps=eps,
                                  threads=threads)
        if np.isfinite(out.sum()):
            tally[engine.name] = tally.get(engine.name, 0) + 1
            return out
        for cache in (*k_caches, *v_caches):   # rewritten below: a copy of them elsewhere is stale
            engine.rows_changed(cache)
    tally["ops"] = tally.get("ops", 0) + 1
    t, h = x.shape
    x = np.array(x, dtype=np.float32)
    for L, kc, vc, (xk, xv) in zip(layers_, k_caches, v_caches, cross):
        qkv = matmul(layer_norm(x, L.ln1_g, L.ln1_b, eps=eps), L.wqkv, L.bqkv, transpose_b=True)
        kc[start:start + t], vc[start:start + t] = qkv[:, h:2 * h], qkv[:, 2 * h:]
        causal = np.triu(np.full((t, start + t), -np.inf, np.float32), start + 1) if t > 1 else None
        a = _causal_attention(qkv[:, :h], kc[:start + t], vc[:start + t], causal, num_heads)
        x += matmul(a, L.wo, L.bo, transpose_b=True)
        q = matmul(layer_norm(x, L.lnx_g, L.lnx_b, eps=eps), L.wxq, L.bxq, transpose_b=True)
        x += matmul(attention(q[None], xk[None], xv[None], num_heads=num_heads)[0], L.wxo, L.bxo, transpose_b=True)
        f = gelu(matmul(layer_norm(x, L.ln2_g, L.ln2_b, eps=eps), L.wi, L.bi, transpose_b=True))
        x += matmul(f, L.wo2, L.bo2, transpose_b=True)
    return x


def _causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: np.ndarray | None,
                      num_heads: int) -> np.ndarray:
    """q (T, H) over keys and values (S, H), row t seeing the keys up to S - T + t (causal: that additive (T, S)
    mask, or None for one row): per row, attention with the mask's row as its key mask."""
    if causal is None:
        return attention(q[None], k[None], v[None], num_heads=num_heads)[0]
    return np.concatenate([attention(q[None, i:i + 1], k[None], v[None], causal[i:i + 1], num_heads=num_heads)[0]
                           for i in range(q.shape[0])])


def greedy(logits: np.ndarray, bias: np.ndarray | None = None) -> tuple[int, float]:
    """The greedy choice over `logits` (n,) plus an additive `bias` (0 or -inf: suppressed tokens): the index of the
    largest and its log-probability (references.greedy_ref), in one pass of the SIMD kernels where they are linked
    (a decoder's vocabulary is tens of thousands of logits, every token); the reference for NaNs and infinities."""
    engine, tally = _linked(), _CALLS["greedy"]
    found = engine.greedy(logits, bias) if engine is not None else None
    name = "numpy" if found is None else engine.name   # type: ignore[union-attr]
    tally[name] = tally.get(name, 0) + 1
    return greedy_ref(logits, bias) if found is None else found


def project(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (M, K) @ w^T for a large read-only weight w (N, K) (a decoder's vocabulary) and few rows: split by the
    weight's columns over layers()'s threads, each streaming its share; matmul where that cannot run."""
    chosen = layers()
    if chosen is None or not immutable(w) or x.ndim != 2:
        return matmul(x, w, transpose_b=True)
    engine, threads = chosen
    ran("project", engine.name)
    return engine.matmul_threads(x, w, threads=threads)


def project_q8(x: np.ndarray, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x (K,) @ W^T for W (N, K) as int8 rows times their scales, on layers()'s threads (approximate: vocab.VocabGreedy
    bounds it); NumPy where no kernels are linked."""
    chosen = layers()
    if chosen is None:
        return (w.astype(np.float32) @ np.asarray(x, np.float32)) * scale
    engine, threads = chosen
    ran("project_q8", engine.name)
    return engine.project_q8(x, w, scale, threads=threads)


def resample_image(rgb: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int], resample: int,
                   table: np.ndarray, *, vertical_first: bool = False) -> tuple[np.ndarray, str] | None:
    """An image's model input made by the SIMD kernels on layers()'s threads (SimdKernels.resample_image: Pillow's
    resize to the bit, the window cropped, each byte through `table`), and the engine's name; None where no kernels
    are linked (the caller resizes with Pillow)."""
    chosen = layers()
    if chosen is None:
        return None
    engine, threads = chosen
    ran("resample_image", engine.name)
    return (engine.resample_image(rgb, size, window, resample, table, vertical_first=vertical_first, threads=threads),
            engine.name)


def product(a: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """a @ w^T (+ bias) inside a model forward whose layers run on the kernels' own threads (encoder_layer): the SIMD
    kernel whenever kernels are linked, at any size (its packed weight cached), on layers()'s threads split by the
    weight's columns, never the BLAS, whose threads spin on after a product and take the cores from the layers that
    follow (CLIP's patch embedding before 12 layers on 2 threads: 70 -> 39 ms a layer stack; Whisper's convolutions,
    1500-3000 rows: 1.7-1.9x one thread, measured); the host's matmul where none are linked."""
    chosen = layers()
    if chosen is not None and immutable(w) and immutable(bias) and a.ndim == 2 and a.shape[0] > 0:
        engine, threads = chosen
        tally = _CALLS["matmul"]
        tally[engine.name] = tally.get(engine.name, 0) + 1
        if threads > 1:
            return engine.matmul_threads(a, w, bias, threads=threads)
        return engine.matmul(a, w, bias, transpose_b=True)
    return matmul(a, w, bias, transpose_b=True)


def ran(op: str, engine: str) -> None:
    """Count a call of `op` that a model ran on `engine` itself (a fused llama block), for calls()."""
    tally = _CALLS.setdefault(op, {})
    tally[engine] = tally.get(engine, 0) + 1


def backend_name() -> str:
    """What runs the host kernels: "wasm" (WebAssembly SIMD, in a page), "native-simd" (the same C kernels
    built natively) or "numpy". With SIMD kernels, each call may still go to NumPy by size (see
    engines() and calls()); whole layers may run on "wasm-threads" (layers())."""
    engine = _linked()
    return "numpy" if engine is None else engine.name


def reason() -> str:
    """Why the host kernels are NumPy's ("" when SIMD kernels are linked)."""
    if _linked() is not None:
        return ""
    return _REASON if _ENGINE is None else _ENGINE.reason()


def engines() -> dict[str, str]:
    """Per op, the engine its calls are routed to: backend_name() for the ops the SIMD kernels have
    (size and IEEE rules may still hand a call to NumPy), "numpy" for the rest."""
    name = backend_name()
    return {op: (name if fn is not NUMPY[op] else "numpy") for op, fn in KERNELS.items()}


def calls() -> dict[str, dict[str, int]]:
    """Per op, how many host calls each engine answered in this process (ops not called are left out)."""
    return {op: dict(t) for op, t in _CALLS.items() if t}
