"""One spec per built-in op: everything gpuport knows about it, in one place.

An `OpSpec` holds the op's WGSL kernel (shader file and binding layout) and its variants (f16 for the full
tier, the small-workgroup and register-blocked matmuls), its NumPy reference (the oracle), its host kernel
(hostops: the fast float32 path where there is one), its launch geometry (launches.py) and the sample calls
whose pipelines precompilation builds, its FLOP model (for auto's cost estimates), the strategy that serves
it when an operand is stored as blocks over the binding budget, and how blocks cut it. Validation of a
call's arguments is the op's method in ops.py (the public signature users call).

Adding an op: its spec here, its WGSL file(s) in shaders/, its method in ops.py and its cases in
tests/cases.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..host import hostops
from ..host import references as R
from . import launches as L
from .kernels import (
    ELEMENTWISE_WG,
    ERROR,
    RB_VARIANTS,
    READ,
    UNIFORM,
    WRITE,
    KernelDef,
    Launch,
    RegisterBlock,
    grid,
)

Probe = tuple[list[Any], Any, dict[str, Any]]   # (inputs, output, attrs) of a sample call, shapes only
Shapes = Sequence[Sequence[int]]


def _elements(per: float) -> Callable[[Shapes], float]:
    """A FLOP model of `per` operations per element of the first input."""
    return lambda shapes: per * math.prod(shapes[0]) if shapes else 0.0


def _matmul_flops(shapes: Shapes) -> float:
    *batch, m, k = shapes[0]
    n = shapes[1][-1] if len(shapes) > 1 and len(shapes[1]) >= 2 else 1
    return 2.0 * math.prod(batch) * m * k * n


def _attention_flops(shapes: Shapes) -> float:
    batch, sq, hidden = shapes[0]
    return 4.0 * batch * sq * shapes[1][1] * hidden


def _conv1d_flops(shapes: Shapes) -> float:
    # 2 T C_out C_in K: the stride-1 count (the stride is an attribute, not a shape: an upper bound)
    t = shapes[0][0]
    cout, cin, k = shapes[1]
    return 2.0 * t * cout * cin * k


def _stft_flops(shapes: Shapes) -> float:
    # 4 n_fft flops per bin and frame (two multiply-adds per sample); frames from the hop Whisper uses, 2/5 of
    # n_fft (the hop is an attribute, not a shape)
    n, n_fft = shapes[0][0], shapes[1][0]
    frames = max(1, (n - n_fft) * 5 // (2 * n_fft) + 1)
    return 4.0 * frames * n_fft * (n_fft // 2 + 1)


@dataclass(frozen=True)
class OpSpec:
    """A built-in op. `family` says how the tiled strategy cuts it ("elementwise": flat runs of elements,
    "rowwise": whole rows, "other": not tiled); `wg_override`: its shader sizes workgroups by `override WG`,
    so the planner's workgroup size applies."""

    name: str
    kernel: KernelDef
    reference: Callable[..., np.ndarray]
    geometry: L.Launcher
    probes: Callable[[], list[Probe]]
    flops: Callable[[Shapes], float] = _elements(1)
    over_budget: str = "cpu"
    family: str = "other"
    wg_override: bool = False
    variants: Mapping[str, KernelDef] = field(default_factory=dict)
    host: Callable[..., np.ndarray] | None = None
    # a variant the call's shapes choose, with its own geometry (None: the op's kernel)
    shaped: Callable[[Sequence[Any], Mapping[str, Any]], tuple[KernelDef, L.Launcher] | None] | None = None
    # the output's dtype (sample_token's is a uint32 token id)
    out_dtype: np.dtype = np.dtype(np.float32)

    def launch(self, ins: list[Any], out: Any, attrs: Mapping[str, Any], *, kernel: KernelDef | None = None,
               wg: int = ELEMENTWISE_WG, max_groups: int = 65535) -> Launch:
        """One launch of this op over whole buffers `ins` -> `out` (Tensors or Parts)."""
        def flat(n: int) -> tuple[int, int, int]:
            return grid(math.ceil(n / wg), max_groups)

        geometry = self.geometry
        if kernel is None and self.shaped is not None and (chosen := self.shaped(ins, attrs)) is not None:
            kernel, geometry = chosen
        workgroups, uniforms, consts = geometry(ins, out, attrs, flat, max_groups)
        if self.wg_override and wg != ELEMENTWISE_WG:
            consts = {**consts, "WG": wg}
        return Launch(kernel or self.kernel, ins, out, workgroups, uniforms, consts)

    def probe_launches(self, strategy: str, kernel: KernelDef | None, wg: int,
                       blocks: Sequence[RegisterBlock] = ()) -> list[Launch]:
        """The launches of this op's sample calls under `strategy` (precompilation builds their pipelines):
        the simplified matmul is the strided small kernel; `blocks`, the register-blocked variants the native
        matmul uses here, each with its fused GELU only after a bias, as linear layers use it (each pipeline
        is another second of compilation on a software adapter)."""
        probes = self.probes()
        if self.name == "matmul" and strategy == "simplified_shader":
            return [L.small_matmul_launch(ins[0], ins[1], ins[2], out, transpose_b=attrs["transpose_b"], M=4, N=4,
                                          K=4, lda=4, ldb=4, ldc=4) for ins, out, attrs in probes]
        rb = [L.rb_matmul_launch(block, ins[0], ins[1], ins[2], out, act=act) for block in blocks
              for ins, out, attrs in probes if attrs["transpose_b"] == (block.layout == "tb")
              for act in L.ACT_CODES.values() if act == 0 or ins[2] is not None]
        return rb + [self.launch(ins, out, attrs, kernel=kernel, wg=wg) for ins, out, attrs in probes]

    def run_reference(self, arrays: Sequence[np.ndarray | None], attrs: Mapping[str, Any]) -> np.ndarray:
        """The NumPy reference (C-contiguous, of the op's out_dtype); infinities and NaNs follow IEEE quietly, as
        on the GPU."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.ascontiguousarray(self.reference(*arrays, **attrs), dtype=self.out_dtype)

    def run_host(self, arrays: Sequence[np.ndarray | None], attrs: Mapping[str, Any]) -> np.ndarray:
        """The op on the host: its host kernel where there is one, else its reference. A matmul's activation
        runs after it as that op's host kernel; a layer_norm's residual is added first, in float32, as the
        device kernels do."""
        attrs = dict(attrs)
        activation = attrs.pop("activation", None)
        if self.name == "layer_norm" and len(arrays) == 4:
            x, gamma, beta, res = arrays
            with np.errstate(over="ignore", invalid="ignore"):
                arrays = [x if res is None else np.add(x, res, dtype=np.float32), gamma, beta]
        if self.host is None:
            out = self.run_reference(arrays, attrs)
        else:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                out = np.ascontiguousarray(self.host(*arrays, **attrs), dtype=self.out_dtype)
        return OPS[activation].run_host([out], {}) if activation else out


def _p(*shape: int) -> L.Part:
    return L.Part(None, shape)


_R, _W, _E, _U = READ, WRITE, ERROR, UNIFORM
_X_OUT = (_R, _W, _U)
_XY_OUT = (_R, _R, _W, _U)


def _f16(name: str, bindings: tuple[str, ...]) -> dict[str, KernelDef]:
    return {"f16": KernelDef(f"{name}_f16", f"{name}_f16.wgsl", bindings)}


def _spec(name: str, shader: str, bindings: tuple[str, ...], reference: Callable[..., np.ndarray],
          geometry: L.Launcher, probes: Callable[[], list[Probe]], **facts: Any) -> OpSpec:
    return OpSpec(name, KernelDef(name, shader, bindings), reference, geometry, probes, **facts)


_ROW = {"over_budget": "tiled", "family": "rowwise"}
_ELEMENTWISE = {"over_budget": "tiled", "family": "elementwise", "wg_override": True}

OPS: dict[str, OpSpec] = {s.name: s for s in [
    _spec("add", "binary.wgsl", _XY_OUT, R.add_ref, L.binary_geometry("add"),
          lambda: [([_p(4), _p(4)], _p(4), {})], **_ELEMENTWISE),
    _spec("mul", "binary.wgsl", _XY_OUT, R.mul_ref, L.binary_geometry("mul"),
          lambda: [([_p(4), _p(4)], _p(4), {})], **_ELEMENTWISE),
    _spec("scale", "scale.wgsl", _X_OUT, R.scale_ref, L.scale_geometry,
          lambda: [([_p(4, 4)], _p(4, 4), {"a": 1.0, "b": 0.0})], **_ELEMENTWISE),
    _spec("gelu", "gelu.wgsl", _X_OUT, R.gelu_ref, L.gelu_geometry,
          lambda: [([_p(4, 4)], _p(4, 4), {})], flops=_elements(20), variants=_f16("gelu", _X_OUT),
          host=hostops.gelu, **_ELEMENTWISE),
    _spec("matmul", "matmul.wgsl", (_R, _R, _R, _W, _U), R.matmul_ref, L.matmul_geometry,
          lambda: [([_p(4, 4), _p(4, 4), bias], _p(4, 4), {"transpose_b": tb})
                   for tb in (False, True) for bias in (None, _p(4))],
          flops=_matmul_flops, over_budget="layer_decomposition", host=hostops.matmul,
          variants={**_f16("matmul", (_R, _R, _R, _W, _U)), "small": L.MATMUL_SMALL,
                    **{key: block.kernel for key, block in RB_VARIANTS.items()}}),
    # CLIP's activation; elementwise as gelu
    _spec("quick_gelu", "quick_gelu.wgsl", _X_OUT, R.quick_gelu_ref, L.gelu_geometry,
          lambda: [([_p(4, 4)], _p(4, 4), {})], flops=_elements(12), host=hostops.quick_gelu, **_ELEMENTWISE),
    _spec("softmax", "softmax.wgsl", _XY_OUT, R.softmax_ref, L.softmax_geometry,
          lambda: [([_p(4, 4), m], _p(4, 4), {}) for m in (None, _p(4))], flops=_elements(8),
          variants=_f16("softmax", _XY_OUT), host=hostops.softmax, **_ROW),
    _spec("layer_norm", "layer_norm.wgsl", (_R, _R, _R, _R, _W, _U), R.layer_norm_ref, L.layer_norm_geometry,
          lambda: [([_p(4, 4), _p(4), _p(4), res], _p(4, 4), {"eps": 1e-5}) for res in (None, _p(4, 4))],
          flops=_elements(8), variants=_f16("layer_norm", (_R, _R, _R, _R, _W, _U)), host=hostops.layer_norm,
          **_ROW),
    _spec("sum", "reduce.wgsl", _X_OUT, R.sum_ref, L.reduce_geometry("sum"),
          lambda: [([_p(4, 4)], _p(4), {})], **_ROW),
    _spec("mean", "reduce.wgsl", _X_OUT, R.mean_ref, L.reduce_geometry("mean"),
          lambda: [([_p(4, 4)], _p(4), {})], **_ROW),
    _spec("embedding", "embedding.wgsl", (_R, _R, _W, _E, _U), R.embedding_ref, L.embedding_geometry,
          lambda: [([_p(4), _p(8, 4)], _p(4, 4), {})], wg_override=True),
    _spec("attention", "attention.wgsl", (_R, _R, _R, _R, _W, _U), R.attention_ref, L.attention_geometry,
          lambda: [([_p(1, s, 8), _p(1, s, 8), _p(1, s, 8), m], _p(1, s, 8), {"num_heads": 2}) for s in (2, 64)
                   for m in (None, _p(1, s))],
          flops=_attention_flops, over_budget="chunked_attention", host=hostops.attention,
          variants={"rows": L.ATTENTION_ROWS}, shaped=L.attention_kernel),
    # a vision tower's patch embedding is this gather (im2col of a stride-equals-kernel convolution) and a matmul
    _spec("patchify", "patchify.wgsl", _X_OUT, R.patchify_ref, L.patchify_geometry,
          lambda: [([_p(1, 3, 4, 4)], _p(1, 5, 12), {"patch": 2})], flops=_elements(1), host=hostops.patchify,
          wg_override=True),
    _spec("mean_pool", "mean_pool.wgsl", _XY_OUT, R.mean_pool_ref, L.mean_pool_geometry,
          lambda: [([_p(2, 3, 4), _p(2, 3)], _p(2, 4), {})], wg_override=True),
    _spec("l2_normalize", "l2_normalize.wgsl", _X_OUT, R.l2_normalize_ref, L.l2_normalize_geometry,
          lambda: [([_p(4, 4)], _p(4, 4), {})], flops=_elements(4), host=hostops.l2_normalize, **_ROW),
    # Whisper's front end and encoder convolutions
    _spec("conv1d", "conv1d.wgsl", (_R, _R, _R, _W, _U), R.conv1d_ref, L.conv1d_geometry,
          lambda: [([_p(4, 2), _p(3, 2, 3), bias], _p(4, 3), {"stride": 1, "padding": 1, **act})
                   for bias, act in ((_p(3), {"activation": "gelu"}), (None, {}))],
          flops=_conv1d_flops, host=hostops.conv1d),
    _spec("stft_power", "stft_power.wgsl", _XY_OUT, R.stft_power_ref, L.stft_power_geometry,
          lambda: [([_p(8), _p(4, 4)], _p(3, 3), {"n_fft": 4, "hop": 2, "frames": 3})],
          flops=_stft_flops, host=hostops.stft_power),
    _spec("log_mel", "log_mel.wgsl", _X_OUT, R.log_mel_ref, L.log_mel_geometry,
          lambda: [([_p(4, 4)], _p(4, 4), {"start": 0, "rows": 4, "end": 4})], flops=_elements(24),
          host=hostops.log_mel),
    # the llama ops: quantized weights bind as the u32 words of their stored blocks
    _spec("rms_norm", "rms_norm.wgsl", _XY_OUT, R.rms_norm_ref, L.rms_norm_geometry,
          lambda: [([_p(4, 4), _p(4)], _p(4, 4), {"eps": 1e-5})]),
    _spec("rope", "rope.wgsl", (_R, _R, _R, _W, _U), R.rope_ref, L.rope_geometry,
          lambda: [([_p(2, 8), _p(2, 2), _p(2, 2)], _p(2, 8), {"num_heads": 2})], wg_override=True),
    _spec("swiglu", "swiglu.wgsl", _XY_OUT, R.swiglu_ref, L.swiglu_geometry,
          lambda: [([_p(4), _p(4)], _p(4), {})], wg_override=True),
    _spec("kv_attention", "kv_attention.wgsl", (_R, _R, _R, _W, _W, _U), R.kv_attention_ref, L.kv_attention_geometry,
          lambda: [([_p(1, 8), _p(2, 4), _p(2, 4), None], _p(1, 8), {"num_heads": 2, "num_kv_heads": 1, "start": 1})],
          over_budget="partitioned_kv", variants={"append": L.KV_WRITE}),
    _spec("q4_1_matvec", "q4_1_matvec.wgsl", _XY_OUT, R.q4_1_matvec_ref, L.q_matvec_geometry,
          lambda: [([_p(10), _p(1, 32)], _p(2), {"n": 2, "k": 32, "row": 0})], variants=_f16("q4_1_matvec", _XY_OUT)),
    _spec("q8_0_matvec", "q8_0_matvec.wgsl", _XY_OUT, R.q8_0_matvec_ref, L.q_matvec_geometry,
          lambda: [([_p(17), _p(1, 32)], _p(2), {"n": 2, "k": 32, "row": 0})], variants=_f16("q8_0_matvec", _XY_OUT)),
    _spec("q4_1_matmul", "q4_1_matmul.wgsl", _XY_OUT, R.q4_1_matmul_ref, L.q_matmul_geometry,
          lambda: [([_p(10), _p(2, 32)], _p(2, 2), {"n": 2, "k": 32})], variants=_f16("q4_1_matmul", _XY_OUT)),
    _spec("q8_0_embedding", "q8_0_embedding.wgsl", _XY_OUT, R.q8_0_embedding_ref, L.q_embedding_geometry,
          lambda: [([_p(17), _p(2)], _p(2, 32), {"n": 2, "k": 32})]),
    # the next token id from the logits (one workgroup, override WG): greedy, or penalty + top-k + top-p + draw;
    # a few passes over V (up to 32 more per threshold bisection, re-reads of the logits): a small FLOP model
    _spec("sample_token", "sample_token.wgsl", _XY_OUT, R.sample_token_ref, L.sample_token_geometry,
          lambda: [([_p(1, 40), seen], _p(1), {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "u": 0.5,
                                                "repetition_penalty": 1.0 if seen is None else 1.3})
                   for seen in (None, _p(2))],
          flops=_elements(8), wg_override=True, out_dtype=np.dtype(np.uint32)),
]}

# Every kernel a spec names (variants included), by kernel name: what the pipeline cache and the planner's
# limits check look kernels up by.
KERNEL_DEFS: dict[str, tuple[OpSpec, KernelDef]] = {
    k.name: (spec, k) for spec in OPS.values() for k in (spec.kernel, *spec.variants.values())}

# Other names callers use for ops (FallbackManager, create_optimal_fallback_strategy, precompile).
ALIASES = {"attention_compute": "attention", "multi_head_attention": "attention", "linear": "matmul",
           "layernorm": "layer_norm", "layer_normalization": "layer_norm", "embedding_lookup": "embedding",
           "elementwise": "add", "shader_compilation": "shader"}


def reference(op: str, arrays: Sequence[np.ndarray | None], attrs: Mapping[str, Any]) -> np.ndarray:
    """`op`'s NumPy reference on host arrays: the oracle of every kernel."""
    return OPS[op].run_reference(arrays, attrs)


def flops(op: str, shapes: Shapes) -> float:
    """FLOPs of one call of `op` with these input shapes (multiply-add = 2); 1 per element for names that are
    not ops."""
    spec = OPS.get(op)
    return (spec.flops if spec is not None else _elements(1))(shapes) if shapes else 0.0
