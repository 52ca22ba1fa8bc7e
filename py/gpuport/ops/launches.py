"""Launch geometry: how each op's kernel is dispatched over whole buffers (workgroups, uniforms, override
constants): one function per op (its spec in opspecs.py names it), plus the strided matmul of the block
strategies, the register-blocked matmuls and the KV cache's in-place append.

Operands are Tensors or Parts (one buffer of a blocked tensor); only their shapes and handles are read.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..tensor.tensor import Tensor
from .kernels import (
    ELEMENTWISE_WG,
    RB_WG,
    READ,
    UNIFORM,
    WRITE,
    KernelDef,
    Launch,
    RegisterBlock,
    grid,
    pack_uniforms,
)


class Part:
    """One device buffer as a launch operand: a block of a blocked tensor, or a buffer seen under a shape."""

    __slots__ = ("buffer", "shape")

    def __init__(self, buffer: Any, shape: tuple[int, ...]) -> None:
        self.buffer, self.shape = buffer, tuple(int(s) for s in shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _rows(x: Any) -> tuple[int, int]:
    n = x.shape[-1]
    return math.prod(tuple(x.shape[:-1])), n


# Each launcher: (inputs, output, attrs, flat(n) -> workgroups for n invocations, max groups per dimension)
# -> (workgroups, uniforms, override constants).
Geometry = tuple[tuple[int, int, int], bytes, dict[str, float]]
Launcher = Callable[[list[Any], Any, Mapping[str, Any], Callable[[int], tuple[int, int, int]], int], Geometry]


def binary_geometry(op: str) -> Launcher:
    def launch(ins, out, attrs, flat, groups):
        a, b = ins
        return flat(a.size), pack_uniforms(a.size, max(b.size, 1)), {"OP": 0 if op == "add" else 1}
    return launch


def scale_geometry(ins, out, attrs, flat, groups):
    return flat(out.size), pack_uniforms(out.size, float(attrs["a"]), float(attrs["b"])), {}


def gelu_geometry(ins, out, attrs, flat, groups):
    return flat(out.size), pack_uniforms(out.size), {}


def matmul_geometry(ins, out, attrs, flat, groups):
    a, b, bias = ins
    m, k = a.shape[-2:]
    n = out.shape[-1]
    consts = {"TRANSPOSE_B": int(attrs["transpose_b"]), "HAS_BIAS": int(bias is not None)}
    return ((math.ceil(n / 64), math.ceil(m / 64), math.prod(tuple(a.shape[:-2]))),
            pack_uniforms(m, n, k, m * k, k * n if b.ndim > 2 else 0), consts)


def softmax_geometry(ins, out, attrs, flat, groups):
    x, mask = ins
    rows, n = _rows(x)
    stride = n if mask is not None and mask.shape == x.shape else 0
    return grid(rows, groups), pack_uniforms(rows, n, stride), {"HAS_MASK": int(mask is not None)}


def layer_norm_geometry(ins, out, attrs, flat, groups):
    rows, n = _rows(ins[0])
    return grid(rows, groups), pack_uniforms(rows, n, float(attrs["eps"])), {"HAS_RES": int(ins[3] is not None)}


def reduce_geometry(op: str) -> Launcher:
    def launch(ins, out, attrs, flat, groups):
        rows, n = _rows(ins[0])
        return grid(rows, groups), pack_uniforms(rows, n), {"MEAN": int(op == "mean")}
    return launch


def l2_normalize_geometry(ins, out, attrs, flat, groups):
    rows, n = _rows(ins[0])
    return grid(rows, groups), pack_uniforms(rows, n), {}


def embedding_geometry(ins, out, attrs, flat, groups):
    vocab, hidden = ins[1].shape
    return flat(out.size), pack_uniforms(out.size, hidden, vocab), {}


def attention_geometry(ins, out, attrs, flat, groups):
    q, k, v, mask = ins
    batch, sq, hidden = q.shape
    heads = int(attrs["num_heads"])
    return (sq, heads, batch), attention_uniforms(sq, k.shape[1], heads, hidden // heads), \
        attention_constants(mask, attrs)


def attention_constants(mask: Any, attrs: Mapping[str, Any]) -> dict[str, float]:
    """attention.wgsl's and attention_rows.wgsl's overrides: a mask bound, causal (present only when set, so a
    plain call's pipeline stays the one it always was)."""
    return {"HAS_MASK": int(mask is not None), **({"CAUSAL": 1} if attrs.get("causal") else {})}


ATTENTION_ROWS = KernelDef("attention_rows", "attention_rows.wgsl", (READ, READ, READ, READ, WRITE, UNIFORM))
ROWS_MIN_QUERIES = 64   # one workgroup's rows: fewer queries would leave most of it idle
ROWS_MAX_HEAD_DIM = 64  # its registers: q, the accumulator and a tile of scores per row


def attention_rows_geometry(ins, out, attrs, flat, groups):
    workgroups, uniforms, consts = attention_geometry(ins, out, attrs, flat, groups)
    return (math.ceil(workgroups[0] / 64), *workgroups[1:]), uniforms, consts


def attention_kernel(ins: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[KernelDef, Launcher] | None:
    """attention_rows.wgsl for long sequences of heads it holds (Whisper's encoder: 1500 queries of 6 heads of 64);
    None: attention.wgsl."""
    batch, sq, hidden = ins[0].shape
    if sq >= ROWS_MIN_QUERIES and hidden // int(attrs["num_heads"]) <= ROWS_MAX_HEAD_DIM:
        return ATTENTION_ROWS, attention_rows_geometry
    return None


def patchify_geometry(ins, out, attrs, flat, groups):
    batch, channels, height, width = ins[0].shape
    patch = int(attrs["patch"])
    grid_w = width // patch
    return flat(out.size), pack_uniforms(out.size, channels, height, width, patch, grid_w,
                                         (height // patch) * grid_w), {}


def mean_pool_geometry(ins, out, attrs, flat, groups):
    batch, seq, hidden = ins[0].shape
    return flat(batch * hidden), pack_uniforms(batch, seq, hidden), {}


def rms_norm_geometry(ins, out, attrs, flat, groups):
    rows, n = _rows(ins[0])
    return grid(rows, groups), pack_uniforms(rows, n, float(attrs["eps"])), {}


def rope_geometry(ins, out, attrs, flat, groups):
    x, cos = ins[0], ins[1]
    t, half = cos.shape
    return flat(x.size // 2), pack_uniforms(t, int(attrs["num_heads"]), half), {}


def swiglu_geometry(ins, out, attrs, flat, groups):
    return flat(out.size), pack_uniforms(out.size), {}


def kv_attention_uniforms(t: int, heads: int, kv_heads: int, d: int, start: int, pos0: int, rows: int,
                          first: bool, last: bool) -> bytes:
    """kv_attention.wgsl's parameters for one cache block of `rows` rows starting at position pos0."""
    return pack_uniforms(t, heads, kv_heads, d, start, pos0, rows, int(first) | 2 * int(last), 1.0 / math.sqrt(d))


def kv_attention_geometry(ins, out, attrs, flat, groups):
    q, k = ins[0], ins[1]
    heads = int(attrs["num_heads"])
    t, d = q.shape[0], q.shape[-1] // heads
    return (t, heads, 1), kv_attention_uniforms(t, heads, int(attrs["num_kv_heads"]), d, int(attrs["start"]), 0,
                                                k.shape[0], True, True), {}


# The quantized kernels at their default LANES: a workgroup owns 4 rows per lane group, 64/LANES groups: 32 rows
# for the matvecs (LANES 8), 64 for the matmul (LANES 4, and 4 prompt rows per workgroup along y).
def q_matvec_geometry(ins, out, attrs, flat, groups):
    n, k = int(attrs["n"]), int(attrs["k"])
    return grid(math.ceil(n / 32), groups), pack_uniforms(n, k, 0, int(attrs["row"]) * k, 0, 0, 0, 0), {}


def q_matmul_geometry(ins, out, attrs, flat, groups):
    n, k = int(attrs["n"]), int(attrs["k"])
    m = ins[1].size // k
    return (math.ceil(n / 64), math.ceil(m / 4), 1), pack_uniforms(m, n, k, 0, 0, 0, 0, 0), {}


def q_embedding_geometry(ins, out, attrs, flat, groups):
    t = ins[1].size
    return grid(math.ceil(t * int(attrs["k"]) / 4 / 64), groups), \
        pack_uniforms(t, int(attrs["k"]), int(attrs["n"]), 0, 0, 0, 0, 0), {}


def sample_token_geometry(ins, out, attrs, flat, groups):
    # one workgroup: every threshold needs the whole vocabulary reduced before the draw
    v = ins[0].size
    top_k, temperature = int(attrs["top_k"]), float(attrs["temperature"])
    u = np.float32(attrs["u"])
    u = float(min(u, np.nextafter(np.float32(1), np.float32(0))))   # u < 1 stays < 1 in float32
    penalty = float(attrs["repetition_penalty"])
    return (1, 1, 1), pack_uniforms(v, top_k if 0 < top_k < v else 0, int(temperature == 0),
                                    int(float(attrs["top_p"]) < 1.0), temperature or 1.0, float(attrs["top_p"]),
                                    penalty, u), \
        {"HAS_SEEN": int(ins[1] is not None and penalty != 1.0)}


# Whisper's front end and convolutions.
CONV1D_STEPS, CONV1D_CHANNELS = 64 * 16, 8   # conv1d.wgsl's workgroup: 64 invocations x 16 steps, 8 channels


def conv1d_geometry(ins, out, attrs, flat, groups):
    x, w, bias = ins
    t, cin = x.shape
    cout, _, k = w.shape
    t_out = out.shape[0]
    tiles = math.ceil(t_out / CONV1D_STEPS)   # time tiles over x, and z past the per-dimension limit
    gx = min(tiles, groups)
    return ((gx, math.ceil(cout / CONV1D_CHANNELS), math.ceil(tiles / gx)),
            pack_uniforms(t, cin, cout, k, int(attrs["stride"]), int(attrs["padding"]), t_out, cin * k),
            {"HAS_BIAS": int(bias is not None), "ACT": ACT_CODES[attrs.get("activation")]})


STFT_FRAMES, STFT_BINS = 64 * 16, 4   # stft_power.wgsl's workgroup: 64 invocations x 16 frames, 4 bins


def stft_power_geometry(ins, out, attrs, flat, groups):
    frames, bins = out.shape
    tiles = math.ceil(frames / STFT_FRAMES)   # frame tiles over x, and z past the per-dimension limit
    x = min(tiles, groups)
    return ((x, math.ceil(bins / STFT_BINS), math.ceil(tiles / x)),
            pack_uniforms(frames, int(attrs["n_fft"]), int(attrs["hop"]), bins), {})


def log_mel_geometry(ins, out, attrs, flat, groups):
    f, n_mels = ins[0].shape
    # one workgroup: the floor needs the max over every value before any output is written
    return (1, 1, 1), pack_uniforms(f, n_mels, int(attrs["start"]), int(attrs["rows"]), int(attrs["end"])), {}


# The in-place append of new rows to a KV cache buffer: kv_attention's companion, not an op of its own (it
# writes an existing buffer; Runtime.write_into launches it).
KV_WRITE = KernelDef("kv_write", "kv_write.wgsl", (READ, WRITE, UNIFORM))


def kv_write_launch(src: Any, dst: Any, n: int, src_off: int, dst_off: int, wg: int = ELEMENTWISE_WG,
                    max_groups: int = 65535) -> Launch:
    """Copy n floats of src (from src_off) into dst (from dst_off) in place: the KV cache's append."""
    consts = {"WG": wg} if wg != ELEMENTWISE_WG else {}
    return Launch(KV_WRITE, [src], dst, grid(math.ceil(n / wg), max_groups),
                  pack_uniforms(n, src_off, dst_off), consts)


def attention_uniforms(sq: int, sk: int, heads: int, d: int, q0: int = 0, h0: int = 0, b0: int = 0,
                       row_base: int = 0) -> bytes:
    return pack_uniforms(sq, sk, heads, d, 1.0 / math.sqrt(d), sk, q0, h0, b0, row_base)


# 8x8 invocations, 4 KiB of workgroup memory, strides and offsets: the simplified matmul and the block kernel of
# layer decomposition.
MATMUL_SMALL = KernelDef("matmul_small", "matmul_small.wgsl", (READ, READ, READ, WRITE, UNIFORM))


def small_matmul_launch(a: Any, b: Any, bias: Any, out: Any, *, transpose_b: bool, M: int, N: int, K: int,
                        lda: int, ldb: int, ldc: int, a_off: int = 0, n_off: int = 0, c_off: int = 0,
                        sa: int = 0, sb: int = 0, sc: int = 0, batch: int = 1, accumulate: bool = False) -> Launch:
    """One launch of matmul_small.wgsl (see its header for the strided formula)."""
    consts = {"TRANSPOSE_B": int(transpose_b), "HAS_BIAS": int(bias is not None), "ACCUMULATE": int(accumulate)}
    uniforms = pack_uniforms(M, N, K, lda, ldb, ldc, a_off, n_off, sa, sb, sc, c_off)
    return Launch(MATMUL_SMALL, [a, b, bias], out,
                  (math.ceil(N / 32), math.ceil(M / 32), batch), uniforms, consts)


# The register-blocked matmuls' ACT override per ops.matmul activation (0: none).
ACT_CODES = {None: 0, "gelu": 1}


def rb_matmul_launch(block: RegisterBlock, a: Any, b: Any, bias: Any, out: Any, act: int = 0) -> Launch:
    """One launch of a register-blocked matmul variant (shaders/matmul_rb_*.wgsl) over whole buffers;
    `act` 1 fuses exact GELU after the bias (ACT_CODES)."""
    m, k = a.shape[-2:]
    n = out.shape[-1]
    workgroups = (math.ceil(n / (block.cols_per_invocation * RB_WG)), math.ceil(m / block.rows),
                  math.prod(tuple(a.shape[:-2])))
    return Launch(block.kernel, [a, b, bias], out, workgroups,
                  pack_uniforms(m, n, k, m * k, k * n if b.ndim > 2 else 0),
                  {"HAS_BIAS": int(bias is not None), "ACT": act})


def row_chunks(t: Tensor, unit: int) -> list[tuple[int, int, Any]]:
    """(first row, end row, device buffer) of a tensor seen as rows of `unit` elements."""
    return [(s // unit if unit else 0, e // unit if unit else 0, b) for s, e, b in t.storage.chunks(t.size)]
