"""The planner: for a call placement sends to the device, the kernel or the strategy that serves it within the
tier's limits, or the host where nothing on the device does and the host knows the values.

One method (`decide`) serves every question: a real call (`plan`), "what would this op run here"
(`strategy_for`, `rt.info()["strategies"]`), the pipelines precompilation builds (`pipeline_specs`) and
`create_optimal_fallback_strategy` (sizes from a config, no device). The strategies:

  native               the op's kernel (shaders/<op>.wgsl), one launch
  f16                  the full tier's f16 variant, when precision="f16" and the adapter has shader-f16
  simplified_shader    a variant for small limits: 64-invocation workgroups (override WG) and the 4 KiB-tile
                       matmul (matmul_small.wgsl); no f16, no subgroups
  layer_decomposition  matmul with an operand stored as blocks over the binding budget: one launch per block
  tiled                elementwise and row-wise ops over a blocked tensor: one launch per block
  chunked_attention    attention in query chunks (bounded by maxAttentionScoresPerDispatch), per q block
  head_partitioning    attention with the heads in groups, one dispatch per group
  partitioned_kv       kv_attention over a KV cache stored as fixed-size blocks: one dispatch per block, the
                       online softmax's running state carried between them
  cpu                  the NumPy reference on the host values, only where the host knows every input (in a
                       page a readback is async and ops are sync); else a GPU strategy or a typed error
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from ..backends.capabilities import SPEC_DEFAULT_LIMITS
from ..errors import LimitExceeded, UnsupportedFeature
from ..ops.kernels import ELEMENTWISE_WG, RB_DEFAULT, RB_VARIANTS, RegisterBlock
from ..ops.opspecs import ALIASES, KERNEL_DEFS, OPS
from ..ops.pipelines import PipelineSpec
from ..types import DEVICE, HOST, Decision, OpCall

STRATEGIES = ("native", "f16", "simplified_shader", "layer_decomposition", "tiled", "chunked_attention",
              "head_partitioning", "partitioned_kv", "cpu")


def over_budget_strategy(op: str) -> str:
    """What serves `op` when an operand exceeds the binding budget (stored as blocks)."""
    return OPS[op].over_budget if op in OPS else "cpu"


class Planner:
    """Plans op calls against one set of limits and quirks.

    gpu: False for the cpu backend (its kernel is the NumPy reference: everything plans "native").
    config: the fallback config (open's fallback_config), read live: {"force": {op: strategy}} pins a strategy.
    needs_blocks(nbytes): whether an output of that size is stored as blocks (the runtime's memory).
    busy(): ops whose pipelines are still precompiling (their calls go to the host when it can).
    """

    def __init__(self, limits: Mapping[str, int], quirks: Mapping[str, Any], tier: str, precision: str,
                 has_f16: bool, gpu: bool, config: dict[str, Any], *, layer_processing: bool = True,
                 needs_blocks: Callable[[int], bool] = lambda nbytes: False,
                 busy: Callable[[], frozenset[str] | set[str]] = frozenset) -> None:
        self.limits, self.quirks, self.tier, self.precision = limits, quirks, tier, precision
        self.has_f16, self.gpu, self.config = has_f16, gpu, config
        self.layer_processing = layer_processing
        self.needs_blocks, self.busy = needs_blocks, busy
        self.f16_broken: set[str] = set()   # ops whose f16 shader failed to compile here: f32 from now on
        # layout ("tb", "nb") -> the register-blocked matmul variant used here (tuning.py measures them)
        self.matmul_choice: dict[str, str] = dict(RB_DEFAULT)

    # -- the device's side ----------------------------------------------------------------------------
    def wg(self) -> int:
        """The elementwise workgroup size: the quirk's preference within the limits, a power of two."""
        want = int(self.quirks.get("elementwise_workgroup", ELEMENTWISE_WG))
        cap = min(self.limits.get("maxComputeInvocationsPerWorkgroup", 256),
                  self.limits.get("maxComputeWorkgroupSizeX", 256))
        wg = min(want, cap)
        return 1 << (wg.bit_length() - 1)

    def fits(self, kernel_name: str) -> bool:
        """Whether a kernel (an op's, or one of its variants) fits this device's workgroup limits."""
        spec, kernel = KERNEL_DEFS[kernel_name]
        inv, mem = kernel.needs
        if spec.wg_override and kernel in (spec.kernel, spec.variants.get("f16")):
            inv = self.wg()   # `override WG`: dispatched at the planner's workgroup size
        return (inv <= self.limits.get("maxComputeInvocationsPerWorkgroup", 256)
                and mem <= self.limits.get("maxComputeWorkgroupStorageSize", 16384))

    def binding(self) -> int:
        return int(self.limits.get("maxStorageBufferBindingSize", SPEC_DEFAULT_LIMITS["maxStorageBufferBindingSize"]))

    def use_f16(self, op: str) -> bool:
        f16 = OPS[op].variants.get("f16") if op in OPS else None
        return (self.precision == "f16" and f16 is not None and self.has_f16 and self.tier == "full"
                and op not in self.f16_broken and self.fits(f16.name))

    def kernel_plan(self, op: str) -> Decision | None:
        """The kernel that serves `op` within the budget here, or None when none fits the limits."""
        if self.use_f16(op):
            return Decision(DEVICE, "f16", "full tier, precision='f16'")
        if op in OPS and OPS[op].wg_override and self.wg() != ELEMENTWISE_WG:
            return Decision(DEVICE, "simplified_shader", f"{self.wg()}-invocation workgroups")
        if op == "shader":   # a user's kernel ("shader compilation" in create_optimal_fallback_strategy)
            small = self.limits.get("maxComputeInvocationsPerWorkgroup", 256) < 256
            return Decision(DEVICE, "simplified_shader", "small workgroups") if small else Decision(DEVICE, "native", "")
        if op == "matmul" and not self.fits("matmul"):
            return Decision(DEVICE, "simplified_shader", "the 64x4 KiB tile matmul fits the limits") \
                if self.fits("matmul_small") else None
        return Decision(DEVICE, "native", "") if self.fits(op) else None

    def matmul_blocks(self) -> list[RegisterBlock]:
        """The register-blocked matmul variants chosen here that fit the limits."""
        blocks = [RB_VARIANTS[key] for key in self.matmul_choice.values()]
        return [b for b in blocks if self.fits(b.kernel.name)] if self.gpu else []

    def matmul_block(self, call: OpCall) -> RegisterBlock | None:
        """The register-blocked variant for a whole-buffer matmul whose shapes allow vec4 loads (K, and N
        without transpose_b, multiples of 4), else None (the tiled matmul.wgsl serves it; so does an empty
        matmul_choice)."""
        a, tb, n = call.inputs[0], call.attrs["transpose_b"], call.out_shape[-1]
        # K = 0 binds an empty operand where the kernel declares vec4s (WebGPU refuses the binding)
        if a.shape[-1] == 0 or a.shape[-1] % 4 or (not tb and n % 4):
            return None
        layout = "tb" if tb else "nb"
        return next((b for b in self.matmul_blocks() if b.layout == layout), None)

    def attention_split(self, batch: int, heads: int, sq: int, sk: int) -> str:
        """native, head_partitioning or chunked_attention under maxAttentionScoresPerDispatch."""
        budget = self.limits.get("maxAttentionScoresPerDispatch")
        if budget is None or batch * heads * sq * sk <= budget:
            return "native"
        if heads * sq * sk > budget >= sq * sk:
            return "head_partitioning"
        return "chunked_attention"

    # -- the one decision --------------------------------------------------------------------------------
    def decide(self, op: str, *, known: bool = True, over_budget: tuple[str, int] | None = None,
               serves_blocks: bool = True, scores: tuple[int, int, int, int] | None = None) -> Decision:
        """The plan for `op` given the call's facts: whether the host knows every input, what exceeds the
        binding budget (why, bytes) and whether a block strategy serves that layout, the attention sizes."""
        if not self.gpu:
            return Decision(HOST, "native", "cpu backend: the host kernels are this runtime's kernels")
        forced = (self.config.get("force") or {}).get(op)
        if forced == "cpu" and known:
            return Decision(HOST, "cpu", "forced by config")
        if over_budget:
            what, nbytes = over_budget
            strategy = over_budget_strategy(op)
            if strategy != "cpu" and serves_blocks:
                return Decision(DEVICE, strategy, what + (": query blocks" if op == "attention" else ""))
            if known:
                return Decision(HOST, "cpu", what + "; no GPU strategy for this layout, host values known")
            raise LimitExceeded("maxStorageBufferBindingSize", self.binding(), nbytes,
                                f"{op}: {what}, no GPU strategy serves this layout and the host does not "
                                "know the values (the cpu strategy needs them);")
        if forced and forced != "cpu":
            return Decision(DEVICE, forced, "forced by config")
        if known and op in self.busy():
            # Nothing waits for compilation: this op's pipelines are still being built, the host has the
            # inputs, so NumPy answers now and the GPU takes over once they resolve.
            return Decision(HOST, "cpu", "pipelines still precompiling")
        if op == "attention" and scores is not None:
            split = self.attention_split(*scores)
            if split != "native":
                return Decision(DEVICE, split, "work per dispatch over maxAttentionScoresPerDispatch="
                                   f"{self.limits.get('maxAttentionScoresPerDispatch'):,}")
        found = self.kernel_plan(op)
        if found is not None:
            return found
        if known:
            return Decision(HOST, "cpu", "no kernel of this op fits the limits")
        raise UnsupportedFeature(f"{op}: no kernel fits this device's limits "
                                 f"(invocations {self.limits.get('maxComputeInvocationsPerWorkgroup')}, "
                                 f"workgroup memory {self.limits.get('maxComputeWorkgroupStorageSize')})")

    def plan(self, call: OpCall) -> Decision:
        """The strategy for one call, with the reason."""
        blocked = [(n, t) for n, t in zip(call.names, call.inputs) if t is not None and t.blocked]
        out_bytes = math.prod(call.out_shape) * 4
        over = None
        if blocked or (self.gpu and self.needs_blocks(out_bytes)):
            over = (f"{', '.join(n for n, _ in blocked) or 'the output'} over the {self.binding():,}-byte "
                    "binding budget", blocked[0][1].nbytes if blocked else out_bytes)
        known = call.host_known
        scores = None
        if call.op == "attention":
            (batch, sq, _), sk = call.inputs[0].shape, call.inputs[1].shape[1]
            scores = (batch, int(call.attrs["num_heads"]), sq, sk)
        return self.decide(call.op, known=known, over_budget=over,
                           serves_blocks=bool(over) and self._serves_blocks(call), scores=scores)

    def strategy_for(self, op: str) -> str:
        """The plan of `op` for operands within the budget (what `rt.info()["strategies"]` shows)."""
        op = ALIASES.get(op, op)
        forced = (self.config.get("force") or {}).get(op)
        if forced:
            return forced
        if op not in OPS and op != "shader":
            return "native"
        try:
            return self.decide(op).strategy
        except UnsupportedFeature:
            return "cpu"

    def strategies(self) -> dict[str, str]:
        return {op: self.strategy_for(op) for op in OPS}

    def over_budget_strategies(self) -> dict[str, str]:
        """What runs when an operand exceeds the binding budget (the constrained tier stores it in blocks)."""
        return {op: OPS[op].over_budget for op in OPS}

    def pipeline_specs(self, op: str) -> list[PipelineSpec]:
        """Every pipeline a call of `op` can need under the current plan (each override-constant
        combination), from the same launch geometry the calls use."""
        strategy = self.strategy_for(op)
        if strategy == "cpu" or not self.gpu:
            return []
        spec = OPS[op]
        kernel = spec.variants["f16"] if strategy == "f16" else None
        wg = self.wg() if strategy == "simplified_shader" else ELEMENTWISE_WG
        blocks = self.matmul_blocks() if op == "matmul" and strategy == "native" else []
        return [launch.spec for launch in spec.probe_launches(strategy, kernel, wg, blocks)]

    # -- can a block strategy serve this call's layout? ---------------------------------------------------
    def _serves_blocks(self, call: OpCall) -> bool:
        strategy = over_budget_strategy(call.op)
        if strategy == "layer_decomposition":
            return self._decomposable(call)
        if strategy == "tiled":
            return self._tileable(call)
        if strategy == "chunked_attention":
            return all(not t.blocked for n, t in zip(call.names, call.inputs) if t is not None and n != "q")
        if strategy == "partitioned_kv":
            q, k, v, _ = call.inputs
            return (not q.blocked and k.blocked and v.blocked and k.blocks.bounds == v.blocks.bounds
                    and k.blocks.aligned(k.shape[1]))
        return False

    def _decomposable(self, call: OpCall) -> bool:
        a, b, bias = call.inputs
        if not self.layer_processing or b.ndim != 2 or (bias is not None and bias.blocked):
            return False
        k = a.shape[-1]
        if a.blocked and not a.blocks.aligned(k):
            return False
        if b.blocked and not b.blocks.aligned(b.shape[-1]):
            return False
        return self.fits("matmul_small")

    def _tileable(self, call: OpCall) -> bool:
        x = call.inputs[0]
        if not x.blocked:
            return False
        bounds = x.blocks.bounds
        if OPS[call.op].family == "rowwise" and not x.blocks.aligned(x.shape[-1]):
            return False
        for t in call.inputs[1:]:
            if t is None:
                continue
            if t.blocked:
                if t.shape != x.shape or t.blocks.bounds != bounds:
                    return False
            elif t.shape == x.shape:
                return False
            elif call.op in ("add", "mul") and any(s % max(t.size, 1) for s in bounds):
                return False
        return True
