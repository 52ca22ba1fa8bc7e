"""The five host ops on one linked build of gpuport's SIMD kernels (hostkernels/*.c), whatever links it: the
page's WebAssembly module (wasm_kernels, calls through Pyodide's JS bridge) or the native shared library
built from the same sources (native_kernels, calls through ctypes). Both call the kernels on NumPy buffers
in place, by address, so everything above the call (argument checks, layouts, the packed-weight cache,
scratch space) is written once, here, in `SimdKernels`.

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
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BackendUnavailable
from ..types import LlamaBlock
from . import references as K
from .host_abi import ABI
from .quant import QK, row_bytes

_ALIGN = 64  # bytes: packed panels and scratch start on a cache line
Q_KINDS = ("Q4_1", "Q8_0")   # the ggml block types the quantized kernels read (hostkernels/qdot.h)

REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "matmul": K.matmul_ref, "gelu": K.gelu_ref, "quick_gelu": K.quick_gelu_ref, "softmax": K.softmax_ref,
    "layer_norm": K.layer_norm_ref, "attention": K.attention_ref}
# gp_encoder_layer's flags (hostkernels/encoder.c)
PRE_NORM, QUICK_GELU, CAUSAL = 1, 2, 4
KEEP = {None: 0, "first": 8, "last": 16}   # gp_encoder_layer's GP_KEEP_FIRST, GP_KEEP_LAST


def _type_id(kind: str) -> int:
    """ggml's id of a block type (what the quantized kernels take), from the GGUF reader's table: imported when a
    quantized model first needs it, not by `import gpuport`."""
    from ..formats.gguf import GGML_TYPE_IDS
    return GGML_TYPE_IDS[kind]


def linked(lib: Any, where: str) -> tuple[Any, str]:
    """(lib, "") when the build at `where` has this gpuport's kernel ABI, else (None, why)."""
    abi = int(lib.gp_abi())
    if abi != ABI:
        return None, f"{where} has kernel ABI {abi}, this gpuport needs {ABI}: rebuild it with `make setup`"
    return lib, ""


def _row_stride(a: np.ndarray) -> int | None:
    """Floats from one row to the next of a 3-D float32 array whose rows are contiguous and whose batches
    follow each other evenly (the layout gp_attention reads: e.g. column blocks of one fused QKV product),
    else None (the array must be copied)."""
    if a.dtype != np.float32 or a.ndim != 3 or a.shape[1] < 2 or a.strides[2] != 4 or a.strides[1] % 4:
        return None
    ld = a.strides[1] // 4
    if ld < a.shape[2] or (a.shape[0] > 1 and a.strides[0] != a.shape[1] * a.strides[1]):
        return None
    return ld


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


def immutable(x: np.ndarray | None) -> bool:
    """Read-only, and no writable array or buffer under it (a read-only view of a writable array can
    still change): what the packed-weight cache keys on."""
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


@dataclass(frozen=True)
class _EncoderPrep:
    """What encoder_layer learns of a layer on its first call: the packed weights (held, so their buffers stay),
    the norms as float32 and, where they are immutable, their kept addresses."""

    ref: weakref.ref
    packed: tuple["_Packed", ...]
    norms: tuple[np.ndarray, ...]
    kept: tuple[int, ...] | None
    ffn: int


@dataclass(frozen=True)
class _DecoderPrep:
    """What decoder_layers learns of a layer on its first call: its packed weights (held) and norms' addresses."""

    ref: weakref.ref
    packed: tuple["_Packed", ...]   # wqkv, wo, wxq, wxo, wi, wo2
    norms: tuple[np.ndarray, ...]   # ln1 g/b, lnx g/b, ln2 g/b
    kept: tuple[int, ...] | None
    ffn: int


@dataclass
class _Packed:
    buffer: Any   # what keeps the panels' memory (a NumPy buffer, or a block of the pool's)
    address: int
    refs: tuple[weakref.ref, ...]


class SimdKernels:
    """matmul, gelu, softmax, layer_norm and attention on `lib` (an object whose gp_* attributes call the
    kernels with addresses and numbers), or BackendUnavailable with `reason` when `lib` is None.

    `name` labels the engine in measurements ("wasm", "native-simd"). `packed` is the packed-weight cache
    and `packs` counts the packings it did (a cache hit packs nothing)."""

    def __init__(self, lib: Any, reason: str, name: str) -> None:
        self.lib, self.why, self.name = lib, reason, name
        self.packed: dict[tuple[int, int, bool], _Packed] = {}
        self.packs = 0
        self.calls: Counter[str] = Counter()   # calls per kernel (matmul, encoder_layer, ...): what ran on this engine
        self._layers: dict[tuple[int, int, int], _EncoderPrep] = {}   # per EncoderLayer (id, width, heads): checked once
        self._decoders: dict[tuple[int, int, int], _DecoderPrep] = {}   # per DecoderLayer (id, width, heads): once
        # Per thread: natively ctypes drops the GIL during a kernel, so two threads may be in one at once.
        self._local = threading.local()
        self.ops: dict[str, Callable[..., np.ndarray]] = {
            "matmul": self.matmul, "gelu": self.gelu, "quick_gelu": self.quick_gelu, "softmax": self.softmax,
            "layer_norm": self.layer_norm, "attention": self.attention}

    def available(self) -> bool:
        """True when the kernels are linked."""
        return self.lib is not None

    def reason(self) -> str:
        """Why the kernels are unavailable ("" when they are available)."""
        return self.why

    def _need(self, kernel: str | None = None) -> Any:
        """The linked kernels, counting a call of `kernel`; BackendUnavailable where none are linked."""
        if self.lib is None:
            raise BackendUnavailable(f"{self.name} SIMD kernels unavailable: {self.why}")
        if kernel is not None:
            self.calls[kernel] += 1
        return self.lib

    # -- where the kernels see an array: its own address where they share NumPy's memory (the page's one-thread
    # builds, the native library); wasm_threads.PoolKernels overrides these to copy into the pool's memory.

    def _at(self, a: np.ndarray) -> int:
        """The address at which the kernel reads `a` during the next call."""
        return _addr(a)

    def _out(self, a: np.ndarray) -> int:
        """The address at which the kernel writes `a` (its old values unread) during the next call."""
        return _addr(a)

    def _io(self, a: np.ndarray) -> int:
        """The address at which the kernel reads and writes `a` in place during the next call."""
        return _addr(a)

    def _kept(self, a: np.ndarray) -> int:
        """The address of `a` for as long as `a` lives (a model's weights, held by what uses them)."""
        return _addr(a)

    def _rows(self, cache: np.ndarray, start: int, count: int) -> int:
        """The address of a KV cache whose rows before `start` the kernel reads and rows start..start + count
        it writes."""
        return _addr(cache)

    def rows_changed(self, cache: np.ndarray) -> None:
        """NumPy rewrote rows of a KV cache that llama_layers wrote (a forward redone there): kernels that read
        it in place need nothing; a copy of it elsewhere is refreshed."""

    def _done(self) -> None:
        """After a kernel call: what _out, _io and _rows stand for holds the kernel's results."""

    def _buffer(self, nfloats: int) -> tuple[Any, int]:
        """A block of `nfloats` on a cache line, kept while the first item lives, and its address."""
        return _aligned(nfloats)

    def _scratch(self, nfloats: int) -> int:
        """The address of this thread's scratch space (packed B, attention panels), grown to `nfloats`."""
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < nfloats:
            buf, self._local.address = _aligned(max(nfloats, 0 if buf is None else buf.size * 2))
            self._local.buf = buf
        return self._local.address

    def _cached_pack(self, b: np.ndarray, bias: np.ndarray | None, k: int, n: int, transpose_b: bool
                     ) -> _Packed | None:
        """B's cached packed panels (packed on first use), or None if B may change. The entry is returned,
        not its address, so the caller holds the buffer for the whole kernel call."""
        if not (immutable(b) and immutable(bias)):
            return None
        key = (id(b), id(bias), transpose_b)
        hit = self.packed.get(key)
        if hit is not None and hit.refs[0]() is b and (bias is None or hit.refs[1]() is bias):
            return hit
        lib = self._need()
        buf, address = self._buffer(int(lib.gp_packed_size(k, n)))
        lib.gp_pack_b(self._at(b), k, n, int(transpose_b), 0 if bias is None else self._at(bias), address)
        self._done()
        self.packs += 1
        packed = self.packed

        def drop(_ref: weakref.ref) -> None:  # the entry dies with its arrays
            packed.pop(key, None)

        refs = (weakref.ref(b, drop),) + (() if bias is None else (weakref.ref(bias, drop),))
        entry = _Packed(buf, address, refs)
        packed[key] = entry
        return entry

    def clear_cache(self) -> None:
        """Forget every packed weight."""
        self.packed.clear()
        self._layers.clear()
        self._decoders.clear()

    # -- ops ----------------------------------------------------------------------------------------

    def matmul(self, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *,
               transpose_b: bool = False) -> np.ndarray:
        """a @ b (b swapped in its last two axes when transpose_b) + bias, batched as np.matmul."""
        lib = self._need("matmul")
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
            packed = self._cached_pack(b, vec, k, n, transpose_b)
            if packed is not None:
                lib.gp_matmul_packed(self._at(a32), m, k, k, packed.address, n, self._out(out), n)
            else:
                b32 = _f32(b)
                lib.gp_matmul_batched(self._at(a32), self._at(b32), 0 if vec is None else self._at(vec),
                                      self._out(out), 1, m, k, n, int(transpose_b), 0, 0, 0,
                                      self._scratch(int(lib.gp_packed_size(k, n))))
        else:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            m = a.shape[-2]
            # A without batch axes is shared by every product (stride 0); otherwise both are laid out in full.
            a32 = _f32(a) if a.ndim == 2 else _f32(np.broadcast_to(a, batch + a.shape[-2:]))
            b32 = _f32(np.broadcast_to(b, batch + b.shape[-2:]))
            count = math.prod(batch)
            out = np.empty(batch + (m, n), np.float32)
            lib.gp_matmul_batched(self._at(a32), self._at(b32), 0 if vec is None else self._at(vec), self._out(out),
                                  count, m, k, n, int(transpose_b), 0 if a.ndim == 2 else m * k, k * n, m * n,
                                  self._scratch(int(lib.gp_packed_size(k, n))))
        self._done()
        if bias is not None and not fused:
            return np.asarray(out + bias, dtype=np.float32)
        return out

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """Exact GELU, x/2 (1 + erf(x/sqrt2)), erf as the reference's (A&S 7.1.26)."""
        return self._elementwise("gelu", x)

    def quick_gelu(self, x: np.ndarray) -> np.ndarray:
        """QuickGELU, x sigmoid(1.702 x)."""
        return self._elementwise("quick_gelu", x)

    def _elementwise(self, op: str, x: np.ndarray) -> np.ndarray:
        """gp_<op>(x, out, n) on x as float32, into a new array of its shape."""
        kernel = getattr(self._need(op), "gp_" + op)
        x32 = _f32(x)
        out = np.empty(x32.shape, np.float32)
        kernel(self._at(x32), self._out(out), x32.size)
        self._done()
        return out

    def softmax(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Softmax over the last axis of x (+ an additive mask broadcast against it)."""
        lib = self._need("softmax")
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
            m_addr = self._at(m32)
        x32 = _f32(x if shape == x.shape else np.broadcast_to(x, shape))
        n = shape[-1]
        out = np.empty(shape, np.float32)
        lib.gp_softmax(self._at(x32), m_addr, self._out(out), x32.size // n, n, div, mod)
        self._done()
        return out

    def layer_norm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
        """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""
        lib = self._need("layer_norm")
        x = np.asarray(x)
        n = x.shape[-1] if x.ndim else 0
        if n == 0 or x.size == 0 or np.shape(gamma) != (n,) or np.shape(beta) != (n,):
            return K.layer_norm_ref(x, gamma, beta, eps=eps)
        x32, g32, b32 = _f32(x), _f32(gamma), _f32(beta)
        out = np.empty(x32.shape, np.float32)
        lib.gp_layer_norm(self._at(x32), self._at(g32), self._at(b32), self._out(out), x32.size // n, n, float(eps))
        self._done()
        return out

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
                  num_heads: int, causal: bool = False) -> np.ndarray:
        """Multi-head attention: q (B, Sq, H), k and v (B, Sk, H), mask (B, Sk) additive -> (B, Sq, H); `causal`:
        query i sees keys 0..i.
        q, k and v may be views with rows further apart than H (column blocks of one fused QKV product):
        the kernel reads them in place."""
        lib = self._need("attention")
        q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
        ok = (q.ndim == 3 and k.ndim == 3 and k.shape == v.shape and k.shape[0] == q.shape[0]
              and k.shape[2] == q.shape[2] and num_heads > 0 and q.shape[2] % num_heads == 0 and 0 not in q.shape
              and 0 not in k.shape and (mask is None or np.ndim(mask) == 2))
        if not ok:
            return K.attention_ref(q, k, v, mask, num_heads=num_heads, causal=causal)
        batch, sq, hidden = q.shape
        sk, d = k.shape[1], hidden // num_heads
        strides = {_row_stride(t) for t in (q, k, v)}
        if len(strides) == 1 and None not in strides:
            ld = strides.pop()
        else:
            q, k, v, ld = _f32(q), _f32(k), _f32(v), hidden
        m32 = None if mask is None else _f32(mask if np.shape(mask) == (batch, sk)
                                             else np.broadcast_to(mask, (batch, sk)))
        out = np.empty(q.shape, np.float32)
        lib.gp_attention(self._at(q), self._at(k), self._at(v), ld, 0 if m32 is None else self._at(m32), self._out(out),
                         hidden, batch, sq, sk, num_heads, d, int(bool(causal)),
                         self._scratch(int(lib.gp_attention_scratch(sk, d))))
        self._done()
        return out

    def encoder_layer(self, x: np.ndarray, layer: K.EncoderLayer, mask: np.ndarray | None = None, *,
                      num_heads: int, eps: float, causal: bool = False, threads: int = 1,
                      lengths: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """encoder_layers with one layer."""
        return self.encoder_layers(x, (layer,), mask, num_heads=num_heads, eps=eps, causal=causal, threads=threads,
                                   lengths=lengths)

    def encoder_layers(self, x: np.ndarray, layers: Sequence[K.EncoderLayer], mask: np.ndarray | None = None, *,
                       num_heads: int, eps: float, causal: bool = False, threads: int = 1,
                       lengths: np.ndarray | None = None, keep: str | None = None,
                       prefix: int = 0) -> tuple[np.ndarray, int]:
        """x (B, S, H) through `layers` in turn (references.EncoderLayer: post- or pre-norm, GELU or QuickGELU;
        `causal` attention or not), one kernel call each on x where the kernels keep it: copied into their memory
        once and back once (in a page a copy per layer cost an image's 11 layers 3 ms). Returns the output and
        the number of rows of the first layer that reported any whose layer-norm statistics were not finite (0
        when all is well; the layers after it are not run, and the output is not to be trusted: redo the layers
        op by op). `lengths`: x is (1, T, H), sequences of those lengths one after another (no padding, no
        mask); with `prefix` (causal only) x's first `prefix` rows are a start every sequence shares, made once, the
        sequences after them (each sequence's queries meet the keys its own copy of the start would give, in the same
        order; the start's rows, made against its keys alone, may round their softmax sums otherwise). `keep`
        ("first" or "last"): the last layer makes only each sequence's first or last row past its QKV product (a
        class token, a pooled end-of-text), and the output is those rows, (sequences, H). Every
        weight must be read-only (it is packed once and cached). Natively each call spreads over `threads`
        threads of the library's own pool (hostkernels/pool.c); in a page over the pool's workers."""
        if keep not in KEEP:
            raise ValueError(f"encoder_layers: keep is 'first', 'last' or None, not {keep!r}")
        lib = self._need("encoder_layer")
        batch, seq, h = x.shape
        preps = [self._encoder_prep(layer, h, num_heads) for layer in layers]
        out = np.array(x, dtype=np.float32, order="C")   # the kernel works in place
        m32 = None if mask is None else _f32(mask)
        rows = batch * seq
        l32 = None
        prefix = int(prefix)
        if prefix and (lengths is None or not causal or keep == "first" or prefix < 0):
            raise ValueError(f"encoder_layers: a shared prefix ({prefix} rows) needs lengths and causal attention, "
                             f"and no keep='first' (the first row is the prefix's)")
        if lengths is not None:
            l32 = np.ascontiguousarray(lengths, np.int32)
            if (batch != 1 or mask is not None or l32.ndim != 1 or not len(l32) or l32.min() < 1
                    or l32.sum() + prefix != seq):
                raise ValueError(f"encoder_layer: lengths {l32.tolist()} must be positive and add up to x's "
                                 f"{seq} rows less the prefix's {prefix}, x (1, T, H) without a mask; x is {x.shape}")
            batch, seq = len(l32), prefix + int(l32.max())
        threads = max(1, int(threads))
        ffn = max((p.ffn for p in preps), default=0)
        scratch = self._scratch(int(lib.gp_encoder_scratch(rows, seq, h, num_heads, ffn, prefix, threads)))
        at, m_at, l_at = self._io(out), 0 if m32 is None else self._at(m32), 0 if l32 is None else self._at(l32)
        bad = 0
        for i, (layer, prep) in enumerate(zip(layers, preps)):
            flags = (PRE_NORM * layer.pre_norm + QUICK_GELU * (layer.activation == "quick_gelu") + CAUSAL * bool(causal)
                     + KEEP[keep] * (i == len(layers) - 1))
            bad = lib.gp_encoder_layer(at, batch, seq, h, num_heads, prep.ffn, m_at, l_at, prefix,
                                       *(p.address for p in prep.packed),
                                       *(prep.kept or [self._at(v) for v in prep.norms]), float(eps), flags, scratch,
                                       threads)
            if bad:
                break
        self._done()
        return (out if keep is None else out.reshape(-1, h)[:batch].copy()), int(bad)

    def _encoder_prep(self, layer: K.EncoderLayer, h: int, num_heads: int) -> _EncoderPrep:
        """A layer checked against x's width, its weights packed and its norms kept: made once (a model calls every
        layer on every forward: in a page these checks cost more than a short sentence's kernel)."""
        prep = self._layers.get((id(layer), h, num_heads))
        if prep is not None and prep.ref() is layer:
            return prep
        f = layer.wi.shape[0]
        if h % num_heads or layer.wqkv.shape != (3 * h, h) or layer.wi.shape != (f, h) or layer.wo2.shape != (h, f):
            raise ValueError(f"encoder_layer: x width {h}, wqkv {layer.wqkv.shape}, wi {layer.wi.shape}, "
                             f"wo2 {layer.wo2.shape} and {num_heads} heads do not fit together")
        pairs = ((layer.wqkv, layer.bqkv), (layer.wo, layer.bo), (layer.wi, layer.bi), (layer.wo2, layer.bo2))
        packed = [self._cached_pack(w, b, w.shape[1], w.shape[0], True) for w, b in pairs]
        if any(p is None for p in packed):
            raise ValueError("encoder_layer: the weights must be read-only float32 (they are packed once)")
        norms = tuple(_f32(v) for v in (layer.ln1_g, layer.ln1_b, layer.ln2_g, layer.ln2_b))
        kept = tuple(self._kept(v) for v in norms) if all(immutable(v) for v in norms) else None
        key, layers = (id(layer), h, num_heads), self._layers
        layers[key] = _EncoderPrep(weakref.ref(layer, lambda _r: layers.pop(key, None)), tuple(packed), norms, kept, f)  # type: ignore[arg-type]
        return layers[key]

    def decoder_layers(self, x: np.ndarray, start: int, layers: Sequence[K.DecoderLayer], k_caches: Sequence[np.ndarray],
                       v_caches: Sequence[np.ndarray], cross: Sequence[tuple[np.ndarray, np.ndarray]], *, num_heads: int,
                       eps: float, threads: int = 1) -> None:
        """Pre-norm decoder layers (references.decoder_layer_ref) in turn on x (T, H) at positions start.. in place, one
        kernel call each: layer i's keys and values go to rows start.. of k_caches[i], v_caches[i] ((rows, H)
        float32), its cross-attention reads cross[i] = (keys, values) (S_enc, H) float32, which must not change while
        they live (an engine that copies them keeps its copy). Every weight must be read-only (packed once)."""
        lib, t = self._need("decoder_layers"), x.shape[0] if x.ndim == 2 else 0
        h = x.shape[-1]
        preps = [self._decoder_prep(layer, h, num_heads) for layer in layers]
        s_enc = {k.shape[0] for k, _ in cross}
        if not (t and len(preps) == len(k_caches) == len(v_caches) == len(cross) and x.dtype == np.float32
                and x.flags.c_contiguous and len(s_enc) == 1
                and all(a.dtype == np.float32 and a.flags.c_contiguous and a.ndim == 2 and a.shape[1] == h
                        for pair in cross for a in pair)
                and all(c.dtype == np.float32 and c.flags.c_contiguous and c.ndim == 2 and c.shape[0] >= start + t
                        and c.shape[1] == h for c in (*k_caches, *v_caches))):
            raise ValueError(f"decoder_layers: x {x.shape} {x.dtype} at {start}, caches "
                             f"{sorted({c.shape for c in (*k_caches, *v_caches)})}, cross "
                             f"{sorted({a.shape for pair in cross for a in pair})} do not fit {len(preps)} layers")
        threads, enc = max(1, int(threads)), s_enc.pop()
        scratch = self._scratch(max(int(lib.gp_decoder_scratch(t, max(start + t, enc), h, p.ffn, threads))
                                    for p in preps))
        at = self._io(x)
        for p, kc, vc, (xk, xv) in zip(preps, k_caches, v_caches, cross):
            ln1_g, ln1_b, lnx_g, lnx_b, ln2_g, ln2_b = p.kept or [self._at(v) for v in p.norms]
            wqkv, wo, wxq, wxo, wi, wo2 = (q.address for q in p.packed)
            lib.gp_decoder_layer(at, t, start, h, num_heads, p.ffn, enc, float(eps), ln1_g, ln1_b, wqkv, wo, lnx_g,
                                 lnx_b, wxq, self._kept(xk), self._kept(xv), wxo, ln2_g, ln2_b, wi, wo2,
                                 self._rows(kc, start, t), self._rows(vc, start, t), scratch, threads)
        self._done()

    def _decoder_prep(self, layer: K.DecoderLayer, h: int, num_heads: int) -> _DecoderPrep:
        """Check a decoder layer against x's width once, pack its weights and keep its norms."""
        key, decoders = (id(layer), h, num_heads), self._decoders
        hit = decoders.get(key)
        if hit is not None and hit.ref() is layer:
            return hit
        f = layer.wi.shape[0]
        shapes = {"wqkv": (3 * h, h), "wo": (h, h), "wxq": (h, h), "wxo": (h, h), "wi": (f, h), "wo2": (h, f)}
        wrong = [f"{n} {getattr(layer, n).shape}" for n, shape in shapes.items() if getattr(layer, n).shape != shape]
        if h % max(num_heads, 1) or num_heads < 1 or wrong:
            raise ValueError(f"decoder_layers: x width {h} and {num_heads} heads do not fit {', '.join(wrong) or 'the heads'}")
        pairs = [(getattr(layer, w), getattr(layer, b)) for w, b in
                 (("wqkv", "bqkv"), ("wo", "bo"), ("wxq", "bxq"), ("wxo", "bxo"), ("wi", "bi"), ("wo2", "bo2"))]
        packed = [self._cached_pack(w, b, w.shape[1], w.shape[0], True) for w, b in pairs]
        if any(p is None for p in packed):
            raise ValueError("decoder_layers: the weights must be read-only float32 (they are packed once)")
        norms = tuple(_f32(getattr(layer, n)) for n in ("ln1_g", "ln1_b", "lnx_g", "lnx_b", "ln2_g", "ln2_b"))
        kept = tuple(self._kept(v) for v in norms) if all(immutable(v) for v in norms) else None
        decoders[key] = _DecoderPrep(weakref.ref(layer, lambda _r: decoders.pop(key, None)), tuple(packed), norms,  # type: ignore[arg-type]
                                     kept, f)
        return decoders[key]

    def matmul_threads(self, a: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, *,
                       threads: int = 1) -> np.ndarray:
        """a (M, K) @ w^T + bias for a read-only weight w (N, K) (packed once), its column panels shared over
        `threads` threads, each streaming its share of the weight: a few rows against a large weight (a decoder's
        vocabulary), or a forward's products where the layers run on these threads (hostops.product)."""
        lib = self._need("matmul_threads")
        a32 = _f32(a)
        n, k = w.shape
        packed = self._cached_pack(w, None if bias is None else _f32(bias), k, n, True)
        if a32.ndim != 2 or a32.shape[1] != k or packed is None:
            raise ValueError(f"matmul_threads: a {a32.shape} by a weight {w.shape} (read-only float32, "
                             f"writeable={w.flags.writeable})")
        out = np.empty((a32.shape[0], n), np.float32)
        lib.gp_matmul_threads(self._at(a32), a32.shape[0], k, packed.address, n, self._out(out), n, max(1, int(threads)))
        self._done()
        return out

    def project_q8(self, x: np.ndarray, w: np.ndarray, scale: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """x (K,) @ W^T for W (N, K) as int8 rows times their float32 scales (N,) (both read-only; an engine that
        copies them keeps the copies while they live): approximate logits, W's rows shared over `threads`."""
        lib = self._need("project_q8")
        x32 = _f32(x)
        n = w.shape[0] if w.ndim == 2 else -1
        if (w.dtype != np.int8 or w.ndim != 2 or not w.flags.c_contiguous or x32.shape != (w.shape[1],)
                or scale.dtype != np.float32 or scale.shape != (n,)):
            raise ValueError(f"project_q8: x {x32.shape} by {w.dtype} {w.shape} with {scale.dtype} scales "
                             f"{scale.shape}: needs x (K,), a C-contiguous int8 (N, K) and float32 (N,)")
        out = np.empty(n, np.float32)
        lib.gp_project_q8(self._at(x32), w.shape[1], self._kept(w), self._kept(scale), n, self._out(out),
                          max(1, int(threads)))
        self._done()
        return out

    def greedy(self, logits: np.ndarray, bias: np.ndarray | None = None) -> tuple[int, float] | None:
        """references.greedy_ref in one pass over the logits: (token, log-probability), or None where a logit is NaN
        or +inf or none is finite (the reference decides those)."""
        lib = self._need("greedy")
        z = _f32(logits)
        b = None if bias is None else _f32(bias)
        if z.ndim != 1 or (b is not None and b.shape != z.shape) or not z.size:
            raise ValueError(f"greedy: logits {z.shape}, bias {None if b is None else b.shape}")
        sumexp = np.empty(1, np.float32)
        tok = int(lib.gp_greedy(self._at(z), 0 if b is None else self._kept(b) if immutable(b) else self._at(b),
                                z.size, self._out(sumexp)))
        self._done()
        return None if tok < 0 else (tok, -math.log(float(sumexp[0])))

    def resample_image(self, rgb: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int],
                       resample: int, table: np.ndarray, *, vertical_first: bool = False, threads: int = 1
                       ) -> np.ndarray:
        """An (h, w, 3) uint8 RGB image (or (h, w, 4) RGBA, its alpha ignored) resized to size = (width, height)
        as Pillow's Image.resize makes it (`resample` 2 bilinear, 3 bicubic; its vertical pass first where
        `vertical_first`, as Pillow 13 orders some), to the bit (references.resample_ref), then its window (x0, y0,
        width, height), zero bytes where that leaves the resized image, through `table` (3, 256) float32 (read-only:
        kept while it lives) by channel and byte: (3, height, width) float32. Rows are shared over `threads`."""
        lib = self._need("resample_image")
        (out_w, out_h), (x0, y0, cw, ch) = size, window
        if (rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or 0 in rgb.shape
                or resample not in (2, 3) or table.dtype != np.float32 or table.shape != (3, 256)
                or min(out_w, out_h, cw, ch) < 1):
            raise ValueError(f"resample_image: {rgb.dtype} {rgb.shape} to {size}, window {window}, filter {resample}, "
                             f"table {table.dtype} {table.shape}: needs (h, w, 3 or 4) uint8, sizes of at least 1, "
                             "filter 2 or 3 and a (3, 256) float32 table")
        if rgb.size >= 2 ** 31 or max(out_w, out_h, cw, ch) >= 2 ** 30:
            raise ValueError(f"resample_image: {rgb.shape} to {size} is past the kernel's 32-bit sizes")
        src = np.ascontiguousarray(rgb)
        h, w, bpp = src.shape
        out = np.empty((3, ch, cw), np.float32)
        words = int(lib.gp_resample_scratch(w, h, out_w, out_h, x0, y0, cw, ch, resample, int(vertical_first)))
        lib.gp_resample_image(self._at(src), w, h, bpp, out_w, out_h, x0, y0, cw, ch, resample, int(vertical_first),
                              self._kept(table), self._out(out), self._scratch(words), max(1, int(threads)))
        self._done()
        return out

    def q_matmul(self, x: np.ndarray, raw: np.ndarray, kind: str, shape: tuple[int, int], *, threads: int = 1
                 ) -> np.ndarray:
        """x (M, K) @ W^T for W (N, K) = shape stored as ggml `kind` blocks (Q4_1, Q8_0) in `raw` (uint8, as the
        GGUF holds them, read in place): x quantized to 8-bit blocks, integer dot products (quant.q8_matmul_ref
        is what it computes). Natively over `threads` threads of the library's pool. `raw` is a model's weight: an
        engine that copies it (wasm_threads) keeps the copy while the array lives, so a changed weight is a new
        array, as for llama_block."""
        lib = self._need("q_matmul")
        n, k = shape
        x32 = _f32(x)
        if x32.ndim != 2 or x32.shape[1] != k or k % QK or kind not in Q_KINDS:
            raise ValueError(f"q_matmul: x {x32.shape} by a {kind} weight {shape}: needs x (M, {k}), K a multiple "
                             f"of {QK} and Q4_1 or Q8_0 blocks")
        if raw.dtype != np.uint8 or not raw.flags.c_contiguous or raw.size != n * row_bytes(kind, k):
            raise ValueError(f"q_matmul: {raw.size} bytes of {raw.dtype} for a {kind} {shape} weight")
        m = x32.shape[0]
        out = np.empty((m, n), np.float32)
        lib.gp_q_matmul(self._at(x32), m, k, self._kept(raw), _type_id(kind),
                        n, self._out(out), n, self._scratch(int(lib.gp_q_scratch(m, k))), max(1, int(threads)))
        self._done()
        return out

    def llama_block(self, norms: tuple[np.ndarray, np.ndarray], weights: tuple[np.ndarray, ...], kind: str, *,
                    heads: int, kv_heads: int, eps: float) -> "LlamaBlock":
        """One llama block's weights checked once for llama_layers: norms (attn_norm, ffn_norm), the stored bytes of
        wq, wk, wv, wo, w_gate, w_up, w_down (all ggml `kind`). ValueError when their shapes do not fit together.
        The arrays must not change afterwards: an engine that copies them (wasm_threads) keeps its copies."""
        dim = norms[0].size
        hd = dim // max(heads, 1)
        ffn = weights[4].size // row_bytes(kind, dim) if kind in Q_KINDS and dim % QK == 0 else 0
        kvw = kv_heads * hd
        ok = (kind in Q_KINDS and heads > 0 and kv_heads > 0 and dim % heads == 0 and heads % kv_heads == 0
              and hd % 2 == 0 and dim % QK == 0 and ffn % QK == 0 and ffn > 0 and norms[1].size == dim
              and all(w.dtype == np.uint8 and w.flags.c_contiguous and w.size == n * row_bytes(kind, k)
                      for w, n, k in zip(weights, (dim, kvw, kvw, dim, ffn, ffn, dim), (dim,) * 6 + (ffn,))))
        if not ok or len(weights) != 7:
            raise ValueError(f"llama_block: {heads}/{kv_heads} heads, norms of {norms[0].size}/{norms[1].size}, "
                             f"{kind} weights of {[w.size for w in weights]} bytes do not fit together")
        n1, n2 = _f32(norms[0]), _f32(norms[1])
        arrays = (n1, *weights[:4], n2, *weights[4:])
        return LlamaBlock(arrays, tuple(self._kept(a) for a in arrays), dim, heads, kv_heads, ffn,
                          _type_id(kind), float(eps))

    def llama_layers(self, x: np.ndarray, start: int, cos: np.ndarray, sin: np.ndarray, blocks: Sequence[LlamaBlock],
                     k_caches: Sequence[np.ndarray], v_caches: Sequence[np.ndarray], *, threads: int = 1) -> None:
        """Llama blocks in turn (models/llama_ref.block, products on 8-bit activations) on x (T, dim) at positions start..
        in place, one kernel call each, x kept where they read it until the last; block i's keys and values go to rows
        start.. of k_caches[i], v_caches[i] ((rows, kv_heads * head_dim) float32); cos, sin (T, head_dim / 2) float32."""
        lib, t = self._need("llama_layers"), x.shape[0]
        shapes = {(b.dim, b.heads, b.kv_heads) for b in blocks}
        dim, heads, kv_heads = next(iter(shapes)) if len(shapes) == 1 else (0, 1, 1)
        caches = (*k_caches, *v_caches)
        if not (dim and len(blocks) == len(k_caches) == len(v_caches) and t > 0 and x.shape == (t, dim)
                and x.dtype == cos.dtype == sin.dtype == np.float32 and x.flags.c_contiguous
                and cos.shape == sin.shape == (t, dim // heads // 2)
                and all(c.dtype == np.float32 and c.flags.c_contiguous and c.ndim == 2 and c.shape[0] >= start + t
                        and c.shape[1] == kv_heads * (dim // heads) for c in caches)):
            raise ValueError(f"llama_layers: x {x.shape} {x.dtype}, cos {cos.shape}, {len(k_caches)}/{len(v_caches)} caches "
                             f"{sorted({c.shape for c in caches})} at {start} do not fit {len(blocks)} blocks {sorted(shapes)}")
        threads = max(1, int(threads))
        scratch = self._scratch(max(int(lib.gp_llama_scratch(t, start + t, dim, f, threads)) for f in {b.ffn for b in blocks}))
        at, angles = self._io(x), [(self._kept if immutable(c) else self._at)(c) for c in (cos, sin)]
        for b, kc, vc in zip(blocks, k_caches, v_caches):
            lib.gp_llama_layer(at, t, start, dim, heads, kv_heads, b.ffn, b.eps, *angles, *b.addresses, b.kind_id,
                               self._rows(kc, start, t), self._rows(vc, start, t), scratch, threads)
        self._done()

    def measure(self, op: str, *args: Any, candidates: dict[str, Callable[..., Any]] | None = None,
                repeats: int = 5, min_s: float = 0.02, **kwargs: Any) -> dict[str, Any]:
        """measure() with this engine's kernel (under its name) and the NumPy reference as the default
        candidates."""
        cands = candidates or {self.name: self.ops[op], "numpy": REFERENCES[op]}
        return measure(op, *args, candidates=cands, repeats=repeats, min_s=min_s, **kwargs)


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


def measure(op: str, *args: Any, candidates: dict[str, Callable[..., Any]], repeats: int = 5,
            min_s: float = 0.02, **kwargs: Any) -> dict[str, Any]:
    """Median ms per call of each candidate on the same arguments, interleaved so machine noise hits all alike.
    Returns {"op", "shapes", "<name>_ms" per candidate, "winner"}: what an integrator keeps to pick the
    faster implementation per op and size. Pass more candidates (e.g. scipy's sgemm) to compare them too.
    """
    runs = {name: (lambda f=f: f(*args, **kwargs)) for name, f in candidates.items()}
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


__all__ = ["REFERENCES", "SimdKernels", "immutable", "linked", "measure"]
