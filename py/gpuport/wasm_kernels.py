"""The page's WebAssembly SIMD128 kernels (web/wasm/*.c), as drop-in replacements for kernels.py's NumPy
references: same signatures, float32 NumPy arrays in and out, one call into WebAssembly per op. Every op
placed on the host in a page reaches them through hostops.KERNELS (the one place that chooses them).

Page-only: the kernels live in Pyodide's own linear memory (web/wasm.js links them there and registers
the JS module `gpuport_wasm`), so they read and write NumPy buffers in place, by address. Anywhere else
(natively, or a page whose .wasm is missing or whose browser lacks SIMD128) `available()` is False and
`reason()` says why; calling an op then raises BackendUnavailable.

Weights: matmul packs B into column panels first. A B that is read-only all the way down (`writeable`
False on it and on every array it views, no writable buffer beneath; its bias None or read-only too) is
taken to be immutable: its packed form (as large again as B) is cached for as long as the array lives,
so a model's linear layers pack once. Other arrays are packed on every call.

Shapes outside the kernels' layouts (1-D matmul operands, a bias or gamma that is not a vector of the
output's width, empty arrays) go to the NumPy reference, so every input the reference takes works.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import kernels as K
from .errors import BackendUnavailable

try:  # registered by web/host.js in the page; absent natively
    import gpuport_wasm as _js  # type: ignore[import-not-found]
except ImportError:
    _js = None

ABI = 1  # GP_ABI in web/wasm/simd.h
_ALIGN = 64  # bytes: packed panels and scratch start on a cache line


def _link() -> tuple[Any, str]:
    if _js is None:
        return None, ("the gpuport_wasm JS module is not registered: the WebAssembly kernels exist only in a "
                      "gpuport page (web/host.js loads them)")
    if not _js.available:
        return None, str(_js.reason)
    kernels = _js.kernels
    abi = int(kernels.gp_abi())
    if abi != ABI:
        return None, f"{_js.url} has kernel ABI {abi}, this gpuport needs {ABI}: rebuild it with `make setup`"
    return kernels, ""


_K, _REASON = _link()


def available() -> bool:
    """True when the kernels are linked into this Pyodide's memory."""
    return _K is not None


def reason() -> str:
    """Why the kernels are unavailable ("" when they are available)."""
    return _REASON


def _need() -> Any:
    if _K is None:
        raise BackendUnavailable(f"WebAssembly SIMD kernels unavailable: {_REASON}")
    return _K


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _f32(a: Any) -> np.ndarray:
    """`a` itself when it already is C-contiguous float32: the packed-weight cache is keyed by the array,
    and np.ascontiguousarray copies a '<f4' array loaded from a file (a dtype equal to float32, not it)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=np.float32)


def _aligned(nfloats: int) -> tuple[np.ndarray, int]:
    """A float32 buffer of `nfloats` starting on a cache line, and that address."""
    buf = np.empty(nfloats + _ALIGN // 4, np.float32)
    skip = (-_addr(buf) % _ALIGN) // 4
    view = buf[skip:skip + nfloats]
    return view, _addr(view)


class _Scratch:
    """One growing buffer for the kernels' temporary space (packed B, attention panels): the kernels
    never run concurrently, so every call can reuse it."""

    def __init__(self) -> None:
        self.size, self.buf, self.address = 0, None, 0

    def __call__(self, nfloats: int) -> int:
        if nfloats > self.size:
            self.buf, self.address = _aligned(max(nfloats, self.size * 2))
            self.size = self.buf.size
        return self.address


_scratch = _Scratch()


@dataclass
class _Packed:
    buffer: np.ndarray
    address: int
    refs: tuple[weakref.ref, ...]


_PACKED: dict[tuple[int, int, bool], _Packed] = {}


def _immutable(x: np.ndarray | None) -> bool:
    """Read-only, and no writable array or buffer under it (a read-only view of a writable array can
    still change)."""
    if x is None:
        return True
    if not isinstance(x, np.ndarray) or x.flags.writeable or x.dtype != np.float32 or not x.flags.c_contiguous:
        return False
    base = x.base
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return not isinstance(base, bytearray) and not (isinstance(base, memoryview) and not base.readonly)


def _cached_pack(b: np.ndarray, bias: np.ndarray | None, k: int, n: int, transpose_b: bool) -> int | None:
    """The address of B's cached packed panels (packing them on first use), or None if B may change."""
    if not (_immutable(b) and _immutable(bias)):
        return None
    key = (id(b), id(bias), transpose_b)
    hit = _PACKED.get(key)
    if hit is not None and hit.refs[0]() is b and (bias is None or hit.refs[1]() is bias):
        return hit.address
    kern = _need()
    buf, address = _aligned(int(kern.gp_packed_size(k, n)))
    kern.gp_pack_b(_addr(b), k, n, int(transpose_b), 0 if bias is None else _addr(bias), address)

    def drop(_ref: weakref.ref) -> None:  # the entry dies with its arrays
        _PACKED.pop(key, None)

    refs = (weakref.ref(b, drop),) + (() if bias is None else (weakref.ref(bias, drop),))
    _PACKED[key] = _Packed(buf, address, refs)
    return address


def clear_cache() -> None:
    """Forget every packed weight."""
    _PACKED.clear()


# -- ops --------------------------------------------------------------------------------------------

def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *,
           transpose_b: bool = False) -> np.ndarray:
    """a @ b (b swapped in its last two axes when transpose_b) + bias, batched as np.matmul."""
    kern = _need()
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or 0 in a.shape or 0 in b.shape:
        return K.matmul_ref(a, b, bias, transpose_b=transpose_b)
    k = a.shape[-1]
    kb, n = (b.shape[-1], b.shape[-2]) if transpose_b else b.shape[-2:]
    if kb != k:
        raise ValueError(f"matmul: inner dimensions differ: a {a.shape} @ b {b.shape} "
                         f"(transpose_b={transpose_b})")
    fused = bias is not None and np.shape(bias) == (n,)
    vec = _f32(bias) if fused else None  # the caller's own array when already float32 C-contiguous
    if b.ndim == 2:
        a32 = _f32(a)
        m = a32.size // k
        out = np.empty(a.shape[:-1] + (n,), np.float32)
        packed = _cached_pack(b, vec, k, n, transpose_b)
        if packed is not None:
            kern.gp_matmul_packed(_addr(a32), m, k, k, packed, n, _addr(out), n)
        else:
            b32 = _f32(b)
            kern.gp_matmul_batched(_addr(a32), _addr(b32), 0 if vec is None else _addr(vec), _addr(out), 1, m, k, n,
                                   int(transpose_b), 0, 0, 0, _scratch(int(kern.gp_packed_size(k, n))))
    else:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        m = a.shape[-2]
        # A without batch axes is shared by every product (stride 0); otherwise both are laid out in full.
        a32 = _f32(a) if a.ndim == 2 else _f32(np.broadcast_to(a, batch + a.shape[-2:]))
        b32 = _f32(np.broadcast_to(b, batch + b.shape[-2:]))
        count = math.prod(batch)
        out = np.empty(batch + (m, n), np.float32)
        kern.gp_matmul_batched(_addr(a32), _addr(b32), 0 if vec is None else _addr(vec), _addr(out), count, m, k, n,
                               int(transpose_b), 0 if a.ndim == 2 else m * k, k * n, m * n,
                               _scratch(int(kern.gp_packed_size(k, n))))
    if bias is not None and not fused:
        return np.asarray(out + bias, dtype=np.float32)
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x/2 (1 + erf(x/sqrt2)), erf as the reference's (A&S 7.1.26)."""
    kern = _need()
    x32 = _f32(x)
    out = np.empty(x32.shape, np.float32)
    kern.gp_gelu(_addr(x32), _addr(out), x32.size)
    return out


def _mask_rows(mask_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(div, mod) with row r of `shape` using mask row (r // div) % mod, when the mask broadcasts that
    way (its non-1 leading axes are one run equal to x's); None when it must be laid out in full."""
    if mask_shape[-1] != shape[-1]:
        return None
    lead_x = shape[:-1]
    lead_m = (1,) * (len(shape) - len(mask_shape)) + tuple(mask_shape[:-1])
    axes = [i for i, d in enumerate(lead_m) if d != 1]
    if not axes:
        return 1, 1
    lo, hi = axes[0], axes[-1]
    if lead_m[lo:hi + 1] != lead_x[lo:hi + 1]:
        return None
    return math.prod(lead_x[hi + 1:]), math.prod(lead_x[lo:hi + 1])


def softmax(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of x (+ an additive mask broadcast against it)."""
    kern = _need()
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0 or (mask is not None and np.size(mask) == 0):
        return K.softmax_ref(x, mask)
    div, mod, m_addr, shape = 1, 1, 0, x.shape
    if mask is not None:
        m32 = _f32(mask)
        # np.broadcast_* cost tens of microseconds in Pyodide: only for masks outside the row pattern.
        pattern = _mask_rows(m32.shape, shape) if 0 < m32.ndim <= x.ndim else None
        if pattern is None:
            shape = np.broadcast_shapes(x.shape, m32.shape)
            m32 = _f32(np.broadcast_to(m32, shape))
            pattern = (1, math.prod(shape[:-1]))
        div, mod = pattern
        m_addr = _addr(m32)
    x32 = _f32(x if shape == x.shape else np.broadcast_to(x, shape))
    n = shape[-1]
    out = np.empty(shape, np.float32)
    kern.gp_softmax(_addr(x32), m_addr, _addr(out), x32.size // n, n, div, mod)
    return out


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""
    kern = _need()
    x = np.asarray(x)
    n = x.shape[-1] if x.ndim else 0
    if n == 0 or x.size == 0 or np.shape(gamma) != (n,) or np.shape(beta) != (n,):
        return K.layer_norm_ref(x, gamma, beta, eps=eps)
    x32, g32, b32 = _f32(x), _f32(gamma), _f32(beta)
    out = np.empty(x32.shape, np.float32)
    kern.gp_layer_norm(_addr(x32), _addr(g32), _addr(b32), _addr(out), x32.size // n, n, float(eps))
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
              num_heads: int) -> np.ndarray:
    """Multi-head attention: q (B, Sq, H), k and v (B, Sk, H), mask (B, Sk) additive -> (B, Sq, H)."""
    kern = _need()
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    ok = (q.ndim == 3 and k.ndim == 3 and k.shape == v.shape and k.shape[0] == q.shape[0]
          and k.shape[2] == q.shape[2] and num_heads > 0 and q.shape[2] % num_heads == 0 and 0 not in q.shape
          and 0 not in k.shape and (mask is None or np.ndim(mask) == 2))
    if not ok:
        return K.attention_ref(q, k, v, mask, num_heads=num_heads)
    batch, sq, hidden = q.shape
    sk, d = k.shape[1], hidden // num_heads
    q32, k32, v32 = _f32(q), _f32(k), _f32(v)
    m32 = None if mask is None else _f32(mask if np.shape(mask) == (batch, sk) else np.broadcast_to(mask, (batch, sk)))
    out = np.empty(q.shape, np.float32)
    kern.gp_attention(_addr(q32), _addr(k32), _addr(v32), 0 if m32 is None else _addr(m32), _addr(out),
                      batch, sq, sk, num_heads, d, _scratch(int(kern.gp_attention_scratch(sk, d))))
    return out


OPS: dict[str, Callable[..., np.ndarray]] = {
    "matmul": matmul, "gelu": gelu, "softmax": softmax, "layer_norm": layer_norm, "attention": attention}
REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "matmul": K.matmul_ref, "gelu": K.gelu_ref, "softmax": K.softmax_ref, "layer_norm": K.layer_norm_ref,
    "attention": K.attention_ref}


# -- what wins, per op and size ---------------------------------------------------------------------

def _per_call_ms(fn: Callable[[], Any], min_s: float) -> float:
    """Mean ms of fn over a window of at least min_s: browsers coarsen the clock (Firefox to 1 ms)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed * 1000.0 / calls


def measure(op: str, *args: Any, candidates: dict[str, Callable[..., Any]] | None = None, repeats: int = 5,
            min_s: float = 0.02, **kwargs: Any) -> dict[str, Any]:
    """Median ms per call of each candidate (default: this module's kernel as "wasm" and the NumPy
    reference as "numpy") on the same arguments, interleaved so machine noise hits all alike.

    Returns {"op", "shapes", "<name>_ms" per candidate, "winner"}: what an integrator keeps to pick the
    faster implementation per op and size. Pass more candidates (e.g. scipy's sgemm) to compare them too.
    """
    cands = candidates or {"wasm": OPS[op], "numpy": REFERENCES[op]}
    runs = {name: (lambda f=f: f(*args, **kwargs)) for name, f in cands.items()}
    for run in runs.values():  # warm up: first calls compile (the engine tiers WebAssembly up) and allocate
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_per_call_ms(run, min_s))
    result: dict[str, Any] = {"op": op, "shapes": [list(np.shape(x)) for x in args if isinstance(x, np.ndarray)]}
    for name, ts in times.items():
        result[f"{name}_ms"] = statistics.median(ts)
    result["winner"] = min(times, key=lambda name: result[f"{name}_ms"])
    return result


__all__ = ["ABI", "OPS", "REFERENCES", "attention", "available", "clear_cache", "gelu", "layer_norm", "matmul",
           "measure", "reason", "softmax"]
