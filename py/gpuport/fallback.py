"""FallbackManager: for each op call, the native kernel or a strategy that serves it within the tier.

Every runtime owns one (`rt.fallback`), built from its Capabilities, tier and budget; `rt.ops.<op>`
validates a call and hands it here. The plan for a call is one of:

  native               the op's kernel (shaders/<op>.wgsl), one launch
  f16                  the full tier's f16 variant (shaders/<op>_f16.wgsl), when the runtime asked for
                       precision="f16" and the adapter has shader-f16; otherwise f32, never an error
  simplified_shader    a variant that fits small limits: 64-invocation workgroups (override WG) and the
                       4 KiB-tile matmul (matmul_small.wgsl); no f16, no subgroups
  layer_decomposition  matmul with a weight (or input, or output) stored as blocks over the binding budget:
                       one launch per block; a (K, N) weight in row blocks accumulates into C (split-K),
                       a transposed (N, K) weight in row blocks writes column blocks of C
  tiled                elementwise and row-wise ops over a blocked tensor: one launch per block
  chunked_attention    attention in sequence chunks: query chunks per dispatch (bounded by the budget's
                       maxAttentionScoresPerDispatch), and per block when q is stored as blocks
  head_partitioning    attention with the heads in groups, one dispatch per group
  cpu                  the NumPy reference on the host values, result uploaded. Only where every input's
                       values are known on the host (`Tensor.known_values()`: made from an array, or an
                       earlier cpu result): in a page a readback is async and ops are sync, so a GPU
                       result can never be read back here. Where values are unknown a GPU strategy is
                       chosen, and where none exists the call raises LimitExceeded saying why.

Timings are host-side (planning, encoding, and NumPy for the cpu strategy): GPU work is queued, not waited on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .capabilities import SPEC_DEFAULT_LIMITS, BrowserIdentity, identify_browser, quirks_for
from .errors import LimitExceeded, ShaderCompileError, UnsupportedFeature
from .kernels import (ELEMENTWISE_WG, F16_OPS, KERNEL_NEEDS, KERNELS, VARIANTS, KernelDef, Launch, grid,
                      pack_uniforms)
from .tensor import Blocks, Tensor

if TYPE_CHECKING:
    from .pipelines import PipelineSpec
    from .runtime import Runtime

STRATEGIES = ("native", "f16", "simplified_shader", "layer_decomposition", "tiled", "chunked_attention",
              "head_partitioning", "cpu")
ELEMENTWISE_OPS = frozenset({"add", "mul", "scale", "gelu"})
ROWWISE_OPS = frozenset({"softmax", "layer_norm", "sum", "mean", "l2_normalize"})
WG_OVERRIDE_OPS = frozenset({"add", "mul", "scale", "gelu", "embedding", "mean_pool"})  # `override WG` shaders
# Names the seed's callers use for ops.
ALIASES = {"attention_compute": "attention", "multi_head_attention": "attention", "linear": "matmul",
           "matmul_4bit": "matmul", "layernorm": "layer_norm", "layer_normalization": "layer_norm",
           "embedding_lookup": "embedding", "elementwise": "add", "shader_compilation": "shader"}


@dataclass
class OpCall:
    """A validated op call: inputs in binding order (None for an absent optional one), output shape, the
    attributes its NumPy reference takes as keywords."""

    op: str
    names: tuple[str, ...]
    inputs: list[Any]
    out_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    strategy: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


class Part:
    """One buffer as a launch operand: a whole tensor, or one block of a blocked tensor."""

    __slots__ = ("handle", "shape")

    def __init__(self, handle: Any, shape: tuple[int, ...]) -> None:
        self.handle, self.shape = handle, tuple(int(s) for s in shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _prod(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


# --- the one-launch plan of every op (native, f16 and WG-variant kernels share it) -----------------

def launch_for(op: str, ins: list[Any], out: Any, attrs: Mapping[str, Any], *, kernel: KernelDef | None = None,
               wg: int = ELEMENTWISE_WG, max_groups: int = 65535) -> Launch:
    """One launch of `op` over whole buffers `ins` -> `out` (Tensors or Parts)."""
    k = kernel or KERNELS[op]
    consts: dict[str, float] = {}
    if op in WG_OVERRIDE_OPS and wg != ELEMENTWISE_WG:
        consts["WG"] = wg

    def flat(n: int) -> tuple[int, int, int]:
        return grid(math.ceil(n / wg), max_groups)

    def rows_of(x: Any) -> tuple[int, int]:
        n = x.shape[-1]
        return (x.size // n if n else 0), n

    params = dict(attrs)
    if op in ("add", "mul"):
        a, b = ins
        consts["OP"] = 0 if op == "add" else 1
        return Launch(k, ins, out, flat(a.size), pack_uniforms(a.size, max(b.size, 1)), consts, params)
    if op == "scale":
        return Launch(k, ins, out, flat(out.size), pack_uniforms(out.size, float(attrs["a"]), float(attrs["b"])),
                      consts, params)
    if op == "gelu":
        return Launch(k, ins, out, flat(out.size), pack_uniforms(out.size), consts, params)
    if op == "matmul":
        a, b, bias = ins
        m, kk = a.shape[-2:]
        n = out.shape[-1]
        batch = _prod(tuple(a.shape[:-2]))
        consts.update({"TRANSPOSE_B": int(attrs["transpose_b"]), "HAS_BIAS": int(bias is not None)})
        return Launch(k, ins, out, (math.ceil(n / 64), math.ceil(m / 64), batch),
                      pack_uniforms(m, n, kk, m * kk, kk * n if b.ndim > 2 else 0), consts, params)
    if op == "softmax":
        x, mask = ins
        rows, n = rows_of(x)
        stride = n if mask is not None and mask.shape == x.shape else 0
        consts["HAS_MASK"] = int(mask is not None)
        return Launch(k, ins, out, grid(rows, max_groups), pack_uniforms(rows, n, stride), consts, params)
    if op == "layer_norm":
        rows, n = rows_of(ins[0])
        return Launch(k, ins, out, grid(rows, max_groups), pack_uniforms(rows, n, float(attrs["eps"])), consts,
                      params)
    if op in ("sum", "mean"):
        rows, n = rows_of(ins[0])
        consts["MEAN"] = int(op == "mean")
        return Launch(k, ins, out, grid(rows, max_groups), pack_uniforms(rows, n), consts, params)
    if op == "l2_normalize":
        rows, n = rows_of(ins[0])
        return Launch(k, ins, out, grid(rows, max_groups), pack_uniforms(rows, n), consts, params)
    if op == "embedding":
        table = ins[1]
        vocab, hidden = table.shape
        return Launch(k, ins, out, flat(out.size), pack_uniforms(out.size, hidden, vocab), consts, params)
    if op == "attention":
        q, kt, v, mask = ins
        batch, sq, hidden = q.shape
        heads = int(attrs["num_heads"])
        d = hidden // heads
        consts["HAS_MASK"] = int(mask is not None)
        return Launch(k, ins, out, (sq, heads, batch), attention_uniforms(sq, kt.shape[1], heads, d), consts, params)
    if op == "mean_pool":
        batch, seq, hidden = ins[0].shape
        return Launch(k, ins, out, flat(batch * hidden), pack_uniforms(batch, seq, hidden), consts, params)
    raise KeyError(op)


def attention_uniforms(sq: int, sk: int, heads: int, d: int, q0: int = 0, h0: int = 0, b0: int = 0,
                       row_base: int = 0) -> bytes:
    return pack_uniforms(sq, sk, heads, d, 1.0 / math.sqrt(d), sk, q0, h0, b0, row_base)


def small_matmul_launch(a: Any, b: Any, bias: Any, out: Any, *, transpose_b: bool, M: int, N: int, K: int,
                        lda: int, ldb: int, ldc: int, a_off: int = 0, n_off: int = 0, c_off: int = 0,
                        sa: int = 0, sb: int = 0, sc: int = 0, batch: int = 1, accumulate: bool = False) -> Launch:
    """One launch of matmul_small.wgsl (see its header for the strided formula)."""
    consts = {"TRANSPOSE_B": int(transpose_b), "HAS_BIAS": int(bias is not None), "ACCUMULATE": int(accumulate)}
    uniforms = pack_uniforms(M, N, K, lda, ldb, ldc, a_off, n_off, sa, sb, sc, c_off)
    return Launch(VARIANTS[("matmul", "small")], [a, b, bias], out,
                  (math.ceil(N / 32), math.ceil(M / 32), batch), uniforms, consts, {"transpose_b": transpose_b})


def _row_chunks(t: Any, unit: int) -> list[tuple[int, int, Any]]:
    """(first row, end row, handle) of a tensor seen as rows of `unit` elements."""
    if isinstance(t.handle, Blocks):
        return [(s // unit, e // unit, h) for s, e, h in t.handle.chunks()]
    return [(0, t.size // unit if unit else 0, t.handle)]


class FallbackManager:
    """Chooses and runs, per op call, the native kernel or a strategy; keeps the telemetry.

    Built by every Runtime from its Capabilities (`FallbackManager(runtime=rt)`). Standalone, with only
    `browser_info` (the seed's form {"name", "version"}, or the page's {userAgent, brands, platform}),
    it answers questions (`needs_fallback`, `strategy_for`) and runs ops on NumPy arrays via the reference.
    """

    def __init__(self, browser_info: Mapping[str, Any] | None = None, model_type: str = "text",
                 config: Mapping[str, Any] | None = None, error_handler: Callable[[Exception], Any] | None = None,
                 enable_layer_processing: bool = True, memory_threshold: float = 0.8,
                 enable_telemetry: bool = True, *, runtime: "Runtime | None" = None) -> None:
        self._rt = runtime
        self.model_type = model_type
        self.config = dict(config or {})
        self.error_handler = error_handler
        self.enable_layer_processing = enable_layer_processing
        self.memory_threshold = memory_threshold
        self.enable_telemetry = enable_telemetry
        self._f16_broken: set[str] = set()
        if runtime is not None:
            caps = runtime.capabilities
            self.browser: BrowserIdentity | None = caps.browser
            self.quirks = caps.quirks
            self.tier = runtime.tier
            self.limits = runtime.limits
            self.backend = runtime.backend
            self.precision = runtime.precision
            self.has_f16 = caps.has_f16
        else:
            self.browser = _identity(browser_info)
            self.quirks = quirks_for(self.browser)
            self.tier = self.config.get("tier") or self.quirks.get("tier_cap") or "core"
            self.limits = dict(SPEC_DEFAULT_LIMITS)
            self.limits.update(self.quirks.get("budget") or {})
            self.limits.update(self.config.get("budget") or {})
            if self.quirks.get("simplified_shaders"):
                for k in ("maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY"):
                    self.limits[k] = min(self.limits[k], 64)
            self.backend = "webgpu"  # planning answers what a WebGPU device in that browser would run
            self.precision = self.config.get("precision", "f32")
            self.has_f16 = False
        self.reset_metrics()

    # -- the seed's surface --------------------------------------------------------------------------
    def needs_fallback(self, operation_name: str) -> bool:
        """Whether this op, at sizes within the budget, runs anything but its own kernel here."""
        return self.strategy_for(operation_name) not in ("native", "f16")

    def run_with_fallback(self, operation: str | Callable[..., Any], inputs: Mapping[str, Any],
                          context: Mapping[str, Any] | None = None) -> Any:
        """Run an op (its name, or any callable) with the strategy it needs; counted in the telemetry.

        With a runtime, `inputs` are the op's tensors by name and `context` its other arguments:
        `run_with_fallback("matmul", {"a": x, "b": w}, {"transpose_b": True})`. Without one, inputs are
        NumPy arrays and the op runs on its NumPy reference (the cpu strategy).
        """
        context = dict(context or {})
        if callable(operation):
            t0 = time.perf_counter()
            result = operation(inputs) if not context else operation(inputs, context)
            self._count(getattr(operation, "__name__", "callable"), Plan("native", "a callable"), t0)
            return result
        op = ALIASES.get(operation, operation)
        if self._rt is not None:
            return getattr(self._rt.ops, op)(**inputs, **context)
        if op not in KERNELS:
            raise ValueError(f"unknown op {operation!r}; known: {sorted(KERNELS)}")
        t0 = time.perf_counter()
        arrays = [None if v is None else np.asarray(v) for v in inputs.values()]
        result = KERNELS[op].reference(*arrays, **context)
        self._count(op, Plan("cpu", "no runtime: NumPy reference"), t0)
        return result

    def get_performance_metrics(self) -> dict[str, Any]:
        """Counts (fallback activations, native operations, layer operations, CPU fallbacks, tiles, per
        strategy), host-side timings per op, and memory figures (largest binding, blocks allocated)."""
        m = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._metrics.items()}
        m["operation_timings"] = {k: dict(v) for k, v in self._metrics["operation_timings"].items()}
        m["wasm_fallbacks"] = m["cpu_fallbacks"]  # the seed's name: in a page the CPU path is WebAssembly
        return m

    def reset_metrics(self) -> None:
        self._metrics: dict[str, Any] = {
            "fallback_activations": 0, "native_operations": 0, "layer_operations": 0, "cpu_fallbacks": 0,
            "tiles": 0, "attention_dispatches": 0, "strategies": {}, "last_strategy": {}, "operation_timings": {},
            "memory_usage": {"largest_binding_bytes": 0, "blocked_tensors": 0},
        }

    # -- planning ------------------------------------------------------------------------------------
    def _wg(self) -> int:
        want = int(self.quirks.get("elementwise_workgroup", ELEMENTWISE_WG))
        cap = min(self.limits.get("maxComputeInvocationsPerWorkgroup", 256),
                  self.limits.get("maxComputeWorkgroupSizeX", 256))
        wg = min(want, cap)
        return 1 << (wg.bit_length() - 1)  # a power of two

    def _fits(self, kernel_name: str) -> bool:
        inv, mem = KERNEL_NEEDS.get(kernel_name, (ELEMENTWISE_WG, 0))
        if kernel_name in WG_OVERRIDE_OPS or kernel_name == "gelu_f16":
            inv = self._wg()
        return (inv <= self.limits.get("maxComputeInvocationsPerWorkgroup", 256)
                and mem <= self.limits.get("maxComputeWorkgroupStorageSize", 16384))

    def _use_f16(self, op: str) -> bool:
        return (self.precision == "f16" and op in F16_OPS and self.has_f16 and self.tier == "full"
                and op not in self._f16_broken and self._fits(VARIANTS[(op, "f16")].name))

    def strategy_for(self, op: str) -> str:
        """The plan of `op` for operands within the budget (what `rt.info()["strategies"]` shows)."""
        op = ALIASES.get(op, op)
        forced = (self.config.get("force") or {}).get(op)
        if forced:
            return forced
        if self.backend == "cpu" and self._rt is not None:
            return "native"
        if self.backend == "cpu":
            return "cpu"
        if op == "shader":
            return "simplified_shader" if self.limits.get("maxComputeInvocationsPerWorkgroup", 256) < 256 else "native"
        if op not in KERNELS:
            return "native"
        if self._use_f16(op):
            return "f16"
        if op in WG_OVERRIDE_OPS:
            return "native" if self._wg() == ELEMENTWISE_WG else "simplified_shader"
        if op == "matmul" and not self._fits("matmul"):
            return "simplified_shader"
        return "native" if self._fits(op) else "cpu"

    def strategies(self) -> dict[str, str]:
        return {op: self.strategy_for(op) for op in KERNELS}

    def pipeline_specs(self, op: str) -> list["PipelineSpec"]:
        """Every pipeline a call of `op` can need under the current plan (each flag combination), built by
        the same launch planning the calls use, so precompiled pipelines are exactly the ones ops create."""
        from .pipelines import PipelineSpec
        strategy = self.strategy_for(op)
        if strategy == "cpu" or self.backend == "cpu":
            return []
        f = lambda *shape: Part(None, shape)  # noqa: E731
        kernel = VARIANTS[(op, "f16")] if strategy == "f16" else None
        wg = self._wg() if strategy == "simplified_shader" else ELEMENTWISE_WG
        calls: list[tuple[list[Any], Any, dict[str, Any]]] = []
        if op in ("add", "mul"):
            calls = [([f(4), f(4)], f(4), {})]
        elif op in ("scale", "gelu", "sum", "mean", "l2_normalize"):
            calls = [([f(4, 4)], f(4, 4), {"a": 1.0, "b": 0.0} if op == "scale" else {})]
        elif op == "layer_norm":
            calls = [([f(4, 4), f(4), f(4)], f(4, 4), {"eps": 1e-5})]
        elif op == "softmax":
            calls = [([f(4, 4), m], f(4, 4), {}) for m in (None, f(4))]
        elif op == "embedding":
            calls = [([f(4), f(8, 4)], f(4, 4), {})]
        elif op == "mean_pool":
            calls = [([f(2, 3, 4), f(2, 3)], f(2, 4), {})]
        elif op == "attention":
            calls = [([f(1, 2, 8), f(1, 2, 8), f(1, 2, 8), m], f(1, 2, 8), {"num_heads": 2}) for m in (None, f(1, 2))]
        elif op == "matmul":
            for tb in (False, True):
                for bias in (None, f(4)):
                    if strategy == "simplified_shader":
                        launch = small_matmul_launch(f(4, 4), f(4, 4), bias, f(4, 4), transpose_b=tb, M=4, N=4,
                                                     K=4, lda=4, ldb=4, ldc=4)
                        calls.append(launch)
                    else:
                        calls.append(([f(4, 4), f(4, 4), bias], f(4, 4), {"transpose_b": tb}))
        specs = []
        for c in calls:
            launch = c if isinstance(c, Launch) else launch_for(op, c[0], c[1], c[2], kernel=kernel, wg=wg)
            k = launch.kernel
            specs.append(PipelineSpec(k.name, k.source, k.entry_point,
                                      tuple(sorted((n, float(v)) for n, v in launch.constants.items())), k.bindings))
        return specs

    def over_budget_strategies(self) -> dict[str, str]:
        """What runs when an operand exceeds the binding budget (the constrained tier stores it in blocks)."""
        out = {}
        for op in KERNELS:
            if op == "matmul":
                out[op] = "layer_decomposition"
            elif op in ELEMENTWISE_OPS or op in ROWWISE_OPS:
                out[op] = "tiled"
            elif op == "attention":
                out[op] = "chunked_attention"
            else:
                out[op] = "cpu"
        return out

    def plan(self, call: OpCall) -> Plan:
        """The strategy for one call, with the reason."""
        rt = self._rt
        op = call.op
        if rt is None or rt.backend == "cpu":
            return Plan("native", "cpu backend: the NumPy reference is this runtime's kernel")
        blocked = [n for n, t in zip(call.names, call.inputs) if t is not None and t.blocked]
        out_blocks = rt._needs_blocks(_prod(call.out_shape) * 4)
        known = all(t is None or t.known_values() is not None for t in call.inputs)
        forced = (self.config.get("force") or {}).get(op)
        if forced == "cpu":
            if known:
                return Plan("cpu", "forced by config")
            # fall through: a GPU strategy, since the host does not have the values
        if blocked or out_blocks:
            what = f"{', '.join(blocked) or 'the output'} over the {self._binding():,}-byte binding budget"
            if op == "matmul" and self._decomposable(call):
                return Plan("layer_decomposition", what)
            if op in ELEMENTWISE_OPS | ROWWISE_OPS and self._tileable(call):
                return Plan("tiled", what)
            if op == "attention" and not (set(blocked) - {"q"}):
                return Plan("chunked_attention", what + ": query blocks")
            if known:
                return Plan("cpu", what + "; no GPU strategy for this layout, host values known")
            t = next((t for t in call.inputs if t is not None and t.blocked), None)
            raise LimitExceeded("maxStorageBufferBindingSize", self._binding(),
                                t.nbytes if t is not None else _prod(call.out_shape) * 4,
                                f"{op}: {what}, no GPU strategy serves this layout and the host does not "
                                f"know the values (the cpu strategy needs them);")
        if forced and forced != "cpu":
            return Plan(forced, "forced by config")
        if known and op in getattr(rt._device, "precompiling", ()):
            # Nothing waits for compilation: this op's pipelines are still being built, the host has the
            # inputs, so NumPy answers now and the GPU takes over once they resolve.
            return Plan("cpu", "pipelines still precompiling")
        if op == "attention":
            split = self._attention_split(call)
            if split != "native":
                return Plan(split, "work per dispatch over maxAttentionScoresPerDispatch="
                                   f"{self.limits.get('maxAttentionScoresPerDispatch'):,}")
        if self._use_f16(op):
            return Plan("f16", "full tier, precision='f16'")
        if op in WG_OVERRIDE_OPS and self._wg() != ELEMENTWISE_WG:
            return Plan("simplified_shader", f"{self._wg()}-invocation workgroups")
        if op == "matmul" and not self._fits("matmul"):
            if self._fits("matmul_small"):
                return Plan("simplified_shader", "the 64x4 KiB tile matmul fits the limits")
        elif self._fits(op):
            return Plan("native", "")
        if known:
            return Plan("cpu", "no kernel of this op fits the limits")
        raise UnsupportedFeature(f"{op}: no kernel fits this device's limits "
                                 f"(invocations {self.limits.get('maxComputeInvocationsPerWorkgroup')}, "
                                 f"workgroup memory {self.limits.get('maxComputeWorkgroupStorageSize')})")

    def _binding(self) -> int:
        return int(self.limits.get("maxStorageBufferBindingSize", SPEC_DEFAULT_LIMITS["maxStorageBufferBindingSize"]))

    def _decomposable(self, call: OpCall) -> bool:
        a, b, bias = call.inputs
        if not self.enable_layer_processing or b.ndim != 2 or (bias is not None and bias.blocked):
            return False
        k = a.shape[-1]
        if a.blocked and not a.handle.aligned(k):
            return False
        if b.blocked and not b.handle.aligned(b.shape[-1]):
            return False
        return self._fits("matmul_small")

    def _tileable(self, call: OpCall) -> bool:
        x = call.inputs[0]
        if not x.blocked:
            return False
        bounds = x.handle.bounds
        if call.op in ROWWISE_OPS and not x.handle.aligned(x.shape[-1]):
            return False
        for t in call.inputs[1:]:
            if t is None:
                continue
            if t.blocked:
                if t.shape != x.shape or t.handle.bounds != bounds:
                    return False
            elif t.shape == x.shape:
                return False
            elif call.op in ("add", "mul") and any(s % max(t.size, 1) for s in bounds):
                return False
        return True

    def _attention_split(self, call: OpCall) -> str:
        budget = self.limits.get("maxAttentionScoresPerDispatch")
        q, k = call.inputs[0], call.inputs[1]
        batch, sq, _ = q.shape
        heads, sk = int(call.attrs["num_heads"]), k.shape[1]
        if budget is None or batch * heads * sq * sk <= budget:
            return "native"
        if heads * sq * sk > budget >= sq * sk:
            return "head_partitioning"
        return "chunked_attention"

    # -- execution -----------------------------------------------------------------------------------
    def _execute(self, call: OpCall) -> Tensor:
        t0 = time.perf_counter()
        plan = self.plan(call)
        try:
            out = getattr(self, "_run_" + plan.strategy)(call, plan)
        except ShaderCompileError:
            if plan.strategy != "f16":
                raise
            # shader-f16 advertised but the f16 shader does not compile here: step down, remember, go on.
            self._f16_broken.add(call.op)
            plan = Plan("native", "f16 shader failed to compile: f32")
            out = self._run_native(call, plan)
        self._count(call.op, plan, t0)
        return out

    def _count(self, op: str, plan: Plan, t0: float) -> None:
        if not self.enable_telemetry:
            return
        m = self._metrics
        ms = (time.perf_counter() - t0) * 1e3
        if plan.strategy in ("native", "f16"):
            m["native_operations"] += 1
        else:
            m["fallback_activations"] += 1
        if plan.strategy == "cpu":
            m["cpu_fallbacks"] += 1
        m["strategies"][plan.strategy] = m["strategies"].get(plan.strategy, 0) + 1
        m["last_strategy"][op] = plan.strategy
        t = m["operation_timings"].setdefault(op, {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
        t["count"] += 1
        t["total_ms"] += ms
        t["max_ms"] = max(t["max_ms"], ms)

    def _binds(self, *parts: Any) -> None:
        if self.enable_telemetry:
            biggest = max((p.size * 4 for p in parts if p is not None), default=0)
            mu = self._metrics["memory_usage"]
            mu["largest_binding_bytes"] = max(mu["largest_binding_bytes"], biggest)

    def _launch(self, launch: Launch) -> None:
        self._binds(*launch.inputs, launch.output)
        if launch.output.size:
            self._rt._device.run(launch)

    def _out(self, call: OpCall, bounds: list[int] | None = None) -> Tensor:
        out = self._rt._alloc(call.out_shape, np.float32, bounds=bounds)
        if out.blocked and self.enable_telemetry:
            self._metrics["memory_usage"]["blocked_tensors"] += 1
        return out

    def _max_groups(self) -> int:
        return self.limits.get("maxComputeWorkgroupsPerDimension", 65535)

    def _run_native(self, call: OpCall, plan: Plan, kernel: KernelDef | None = None, wg: int = ELEMENTWISE_WG
                    ) -> Tensor:
        out = self._out(call)
        self._launch(launch_for(call.op, call.inputs, out, call.attrs, kernel=kernel, wg=wg,
                                max_groups=self._max_groups()))
        return out

    def _run_f16(self, call: OpCall, plan: Plan) -> Tensor:
        return self._run_native(call, plan, kernel=VARIANTS[(call.op, "f16")])

    def _run_simplified_shader(self, call: OpCall, plan: Plan) -> Tensor:
        if call.op != "matmul":
            return self._run_native(call, plan, wg=self._wg())
        a, b, bias = call.inputs
        out = self._out(call)
        m, k = a.shape[-2:]
        n = call.out_shape[-1]
        tb = call.attrs["transpose_b"]
        batch = _prod(tuple(a.shape[:-2]))
        self._launch(small_matmul_launch(a, b, bias, out, transpose_b=tb, M=m, N=n, K=k, lda=k,
                                         ldb=k if tb else n, ldc=n, sa=m * k, sb=k * n if b.ndim > 2 else 0,
                                         sc=m * n, batch=batch))
        return out

    def _run_cpu(self, call: OpCall, plan: Plan) -> Tensor:
        arrays = [None if t is None else t.known_values() for t in call.inputs]
        result = np.ascontiguousarray(KERNELS[call.op].reference(*arrays, **call.attrs), dtype=np.float32)
        return self._rt.tensor(result.reshape(call.out_shape))

    def _run_layer_decomposition(self, call: OpCall, plan: Plan) -> Tensor:
        """matmul over blocks: C row segments (where A's and C's blocks overlap) x weight blocks."""
        a, b, bias = call.inputs
        tb = bool(call.attrs["transpose_b"])
        k = a.shape[-1]
        n = call.out_shape[-1]
        rows = a.size // k if k else 0
        a_chunks = _row_chunks(a, k)
        bounds = None
        if self._rt._needs_blocks(rows * n * 4):
            per = max(1, self._binding() // (n * 4))
            cuts = {0, rows} | {r for r0, r1, _ in a_chunks for r in (r0, r1)} | set(range(0, rows, per))
            # every C block within one A block and within the budget
            row_bounds = sorted(cuts)
            fixed = [0]
            for r in row_bounds[1:]:
                while r - fixed[-1] > per:
                    fixed.append(fixed[-1] + per)
                fixed.append(r)
            bounds = [r * n for r in fixed]
        out = self._out(call, bounds)
        c_chunks = _row_chunks(out, n)
        w_chunks = _row_chunks(b, b.shape[-1])
        ai = 0
        for c0, c1, ch in c_chunks:
            while a_chunks[ai][1] <= c0 and ai + 1 < len(a_chunks):
                ai += 1
            r = c0
            while r < c1:
                a0, a1, ah = a_chunks[ai]
                r_end = min(c1, a1)
                m = r_end - r
                a_part, c_part = Part(ah, ((a1 - a0) * k,)), Part(ch, ((c1 - c0) * n,))
                for wi, (w0, w1, wh) in enumerate(w_chunks):
                    w_part = Part(wh, ((w1 - w0) * b.shape[-1],))
                    if tb:   # weight rows are output columns: column blocks of C
                        launch = small_matmul_launch(a_part, w_part, bias, c_part, transpose_b=True, M=m, N=w1 - w0,
                                                     K=k, lda=k, ldb=k, ldc=n, a_off=(r - a0) * k, n_off=w0,
                                                     c_off=(r - c0) * n)
                    else:    # weight rows are K: split-K, accumulating into C after the first block
                        launch = small_matmul_launch(a_part, w_part, bias if wi == 0 else None, c_part,
                                                     transpose_b=False, M=m, N=n, K=w1 - w0, lda=k, ldb=n, ldc=n,
                                                     a_off=(r - a0) * k + w0, c_off=(r - c0) * n,
                                                     accumulate=wi > 0)
                    self._launch(launch)
                    if self.enable_telemetry:
                        self._metrics["layer_operations"] += 1
                r = r_end
                if r < c1:
                    ai += 1
        return out

    def _run_tiled(self, call: OpCall, plan: Plan) -> Tensor:
        x = call.inputs[0]
        blocks: Blocks = x.handle
        n = x.shape[-1]
        reduce = call.op in ("sum", "mean")
        out = self._out(call, [s // n for s in blocks.bounds] if reduce else list(blocks.bounds))
        wg = self._wg()
        for i, (s, e, h) in enumerate(blocks.chunks()):
            shape = ((e - s) // n, n) if call.op in ROWWISE_OPS else (e - s,)
            parts: list[Any] = [Part(h, shape)]
            for t in call.inputs[1:]:
                if t is None:
                    parts.append(None)
                elif t.blocked:
                    parts.append(Part(t.handle.handles[i], shape))
                else:
                    parts.append(Part(t.handle, t.shape))
            oh = out.handle.handles[i] if out.blocked else out.handle
            out_part = Part(oh, (shape[0],) if reduce else shape)
            self._launch(launch_for(call.op, parts, out_part, call.attrs, wg=wg, max_groups=self._max_groups()))
            if self.enable_telemetry:
                self._metrics["tiles"] += 1
        return out

    def _attention_dispatches(self, call: OpCall, plan: Plan | None = None) -> Tensor:
        q, k, v, mask = call.inputs
        batch, sq, hidden = q.shape
        heads = int(call.attrs["num_heads"])
        d = hidden // heads
        sk = k.shape[1]
        budget = self.limits.get("maxAttentionScoresPerDispatch")
        out = self._out(call, list(q.handle.bounds) if q.blocked else None)
        consts = {"HAS_MASK": int(mask is not None)}
        kernel = KERNELS["attention"]
        # segments: (batch index, first query, end query, q handle, out handle, first row the buffers hold)
        segments = []
        for (r0, r1, qh), (_, _, oh) in zip(_row_chunks(q, hidden), _row_chunks(out, hidden)):
            for bi in range(r0 // sq, (r1 - 1) // sq + 1 if r1 > r0 else r0 // sq):
                segments.append((bi, max(r0, bi * sq) - bi * sq, min(r1, (bi + 1) * sq) - bi * sq, qh, oh, r0,
                                 r1 - r0))
        whole = not q.blocked and (budget is None or batch * heads * sq * sk <= budget)
        if whole:
            self._launch(Launch(kernel, [q, k, v, mask], out, (sq, heads, batch),
                                attention_uniforms(sq, sk, heads, d), consts, dict(call.attrs)))
            return out
        for bi, i0, i1, qh, oh, row_base, nrows in segments:
            nq = i1 - i0
            qp, op_ = Part(qh, (nrows * hidden,)), Part(oh, (nrows * hidden,))
            if budget is None or heads * nq * sk <= budget:
                groups = [(0, heads, i0, nq)]
            elif nq * sk <= budget:          # head partitioning: groups of heads, all queries
                g = max(1, budget // (nq * sk))
                groups = [(h0, min(g, heads - h0), i0, nq) for h0 in range(0, heads, g)]
            else:                            # query chunks, one head at a time
                qc = max(1, budget // max(sk, 1))
                groups = [(h0, 1, s0, min(qc, i1 - s0)) for h0 in range(heads) for s0 in range(i0, i1, qc)]
            for h0, nh, s0, cnt in groups:
                self._launch(Launch(kernel, [qp, k, v, mask], op_, (cnt, nh, 1),
                                    attention_uniforms(sq, sk, heads, d, q0=s0, h0=h0, b0=bi, row_base=row_base),
                                    consts, dict(call.attrs)))
                if self.enable_telemetry:
                    self._metrics["attention_dispatches"] += 1
        return out

    _run_chunked_attention = _attention_dispatches
    _run_head_partitioning = _attention_dispatches


def _identity(browser_info: Mapping[str, Any] | None) -> BrowserIdentity | None:
    """The seed's {"name": "safari", "version": "17.0"} (a caller's statement) or the page's identity dict."""
    if not browser_info:
        return None
    if "name" in browser_info:
        name = str(browser_info["name"]).lower()
        ver = tuple(int(p) for p in str(browser_info.get("version", "")).split(".") if p.isdigit())
        engine = {"safari": "webkit", "firefox": "gecko"}.get(name, "blink")
        return BrowserIdentity(name, ver, engine, True, ("caller",))
    return identify_browser(browser_info, browser_info.get("adapter"))


def create_optimal_fallback_strategy(model_type: str, browser_info: Mapping[str, Any] | None, operation_type: str,
                                     config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The strategy and its parameters for an op class on a browser, before any device exists.

    config (all optional): budget (limit overrides), seq_len, num_heads, weight_bytes / tensor_bytes,
    memory_constrained (bool), precision ("f32"|"f16"), has_f16 (the adapter's feature, if known).
    Returns {operation, model_type, browser, strategy, parameters, tier_cap, use_f16, workgroup_size, reason}.
    """
    cfg = dict(config or {})
    identity = _identity(browser_info)
    quirks = quirks_for(identity)
    limits = dict(SPEC_DEFAULT_LIMITS)
    limits.update(quirks.get("budget") or {})
    if cfg.get("memory_constrained"):
        from .capabilities import CONSTRAINED_BUDGET
        limits.update(CONSTRAINED_BUDGET)
    limits.update(cfg.get("budget") or {})
    binding = limits["maxStorageBufferBindingSize"]
    wg = min(int(quirks.get("elementwise_workgroup", ELEMENTWISE_WG)), limits["maxComputeInvocationsPerWorkgroup"])
    simplified = bool(quirks.get("simplified_shaders")) or wg < ELEMENTWISE_WG
    op = ALIASES.get(operation_type, operation_type)
    params: dict[str, Any] = {"binding_budget": binding}
    reason = ""
    if op == "matmul":
        weight = int(cfg.get("weight_bytes", 0))
        if weight > binding or (cfg.get("memory_constrained") and weight > binding * memory_share(cfg)):
            strategy = "layer_decomposition"
            params["blocks"] = max(2, math.ceil(weight / binding))
            reason = f"weight of {weight:,} bytes over the {binding:,}-byte binding"
        else:
            strategy = "simplified_shader" if simplified else "native"
    elif op == "attention":
        seq = int(cfg.get("seq_len", 512))
        heads = int(cfg.get("num_heads", 12))
        scores = int(limits.get("maxAttentionScoresPerDispatch", cfg.get("scores_per_dispatch", 1 << 18)))
        if heads * seq * seq <= scores:
            strategy = "native"
        elif seq * seq <= scores:
            strategy = "head_partitioning"
            params["heads_per_group"] = max(1, scores // (seq * seq))
        else:
            strategy = "chunked_attention"
            params["query_chunk"] = max(1, scores // seq)
        if quirks.get("kv_cache") is False and model_type == "text":
            params["kv_cache"] = False
        reason = f"{heads} heads x {seq}^2 scores vs {scores:,} per dispatch"
    elif op in ELEMENTWISE_OPS | ROWWISE_OPS:
        size = int(cfg.get("tensor_bytes", 0))
        if size > binding:
            strategy = "tiled"
            params["tile_bytes"] = binding
            params["tile_rows"] = 64 if model_type == "vision" else None
        else:
            strategy = "simplified_shader" if simplified else "native"
    elif op in ("embedding", "mean_pool"):
        size = int(cfg.get("tensor_bytes", cfg.get("weight_bytes", 0)))
        strategy = "cpu" if size > binding else ("simplified_shader" if simplified else "native")
        if strategy == "cpu":
            reason = "table over the binding budget: NumPy on the host values"
    elif op == "shader":
        strategy = "simplified_shader" if simplified else "native"
    else:
        strategy = "cpu"
        reason = f"no GPU kernel for {operation_type!r}"
    use_f16 = (cfg.get("precision") == "f16" and bool(cfg.get("has_f16")) and op in F16_OPS
               and "shader-f16" not in quirks.get("features_off", ()) and strategy == "native")
    if use_f16:
        strategy = "f16"
    return {"operation": op, "model_type": model_type,
            "browser": identity.as_dict() if identity else None,
            "strategy": strategy, "parameters": params, "tier_cap": quirks.get("tier_cap"),
            "use_f16": use_f16, "workgroup_size": wg if not simplified else min(wg, 64),
            "quirks": [q for q in quirks.get("applied", [])], "reason": reason or strategy}


def memory_share(cfg: Mapping[str, Any]) -> float:
    return float(cfg.get("memory_threshold", 0.8))


__all__ = ["FallbackManager", "OpCall", "Plan", "STRATEGIES", "create_optimal_fallback_strategy", "launch_for"]
