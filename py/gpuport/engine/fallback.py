"""`FallbackManager` and `create_optimal_fallback_strategy`: the fallback API users know, a facade over
placement (placement/: where each call runs and by which strategy) and the telemetry. The runtime itself
never goes through it.

Every runtime has one (`rt.fallback`): it answers which strategy an op needs here (`needs_fallback`,
`strategy_for`), runs an op by name (`run_with_fallback`, which is `rt.ops.<op>`) and reports the telemetry.
Standalone, with only `browser_info` ({"name", "version"}, or the page's {userAgent, brands, platform}), it
answers the same questions for that browser on a spec-default device and runs ops on NumPy arrays through
their host kernels.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..backends.capabilities import (
    SPEC_DEFAULT_LIMITS,
    BrowserIdentity,
    Capabilities,
    effective_limits,
    identify_browser,
    quirks_for,
)
from ..ops.opspecs import ALIASES, OPS
from ..ops.pipelines import PipelineSpec
from ..placement import STRATEGIES, Planner
from ..placement.telemetry import Telemetry
from ..types import HOST, Decision

if TYPE_CHECKING:
    from ..runtime import Runtime


class FallbackManager:
    """Which strategy serves each op here, running ops by name, and the telemetry."""

    def __init__(self, browser_info: Mapping[str, Any] | None = None, model_type: str = "text",
                 config: Mapping[str, Any] | None = None, enable_layer_processing: bool = True,
                 enable_telemetry: bool = True, *, runtime: "Runtime | None" = None) -> None:
        self.model_type = model_type
        self._runtime = runtime
        if runtime is not None:
            self.config = runtime.placement.planner.config
            self.telemetry = runtime.placement.telemetry
            self.telemetry.enabled = enable_telemetry
            self.browser: BrowserIdentity | None = runtime.capabilities.browser
            self.quirks = runtime.capabilities.quirks
            self.tier = runtime.tier
            self._planner = runtime.placement.planner
        else:
            self.config = dict(config or {})
            self.telemetry = Telemetry(enable_telemetry)
            self.browser = _identity(browser_info)
            self.quirks = quirks_for(self.browser)
            self.tier = self.config.get("tier") or self.quirks.get("tier_cap") or "core"
            self._planner = Planner(_standalone_limits(self.quirks, "core", self.config.get("budget")), self.quirks,
                                    self.tier, self.config.get("precision", "f32"), False, True, self.config,
                                    layer_processing=enable_layer_processing)

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
            self.telemetry.count(getattr(operation, "__name__", "callable"), Decision(HOST, "native", "a callable"), t0)
            return result
        op = ALIASES.get(operation, operation)
        if self._runtime is not None:
            return getattr(self._runtime.ops, op)(**inputs, **context)
        if op not in OPS:
            raise ValueError(f"unknown op {operation!r}; known: {sorted(OPS)}")
        t0 = time.perf_counter()
        result = OPS[op].run_host([None if v is None else np.asarray(v) for v in inputs.values()], context)
        self.telemetry.count(op, Decision(HOST, "cpu", "no runtime: the host kernels"), t0)
        return result

    def get_performance_metrics(self) -> dict[str, Any]:
        """Counts (fallback activations, native operations, layer operations, CPU fallbacks, tiles, per
        strategy), host-side timings per op, and memory figures (largest binding, blocks allocated)."""
        return self.telemetry.metrics()

    def reset_metrics(self) -> None:
        """Forget the timings and counts gathered so far."""
        self.telemetry.reset()

    def strategy_for(self, op: str) -> str:
        """The strategy of `op` for operands within the budget (what `rt.info()["strategies"]` shows)."""
        return self._planner.strategy_for(op)

    def strategies(self) -> dict[str, str]:
        """The strategy each op runs by on this device, by op name."""
        return self._planner.strategies()

    def over_budget_strategies(self) -> dict[str, str]:
        """The strategy each op falls back to when its operands exceed the tier's limits, by op name."""
        return self._planner.over_budget_strategies()

    def pipeline_specs(self, op: str) -> list[PipelineSpec]:
        """The pipelines `op` compiles on this device (what precompilation creates up front)."""
        return self._planner.pipeline_specs(op)


def _identity(browser_info: Mapping[str, Any] | None) -> BrowserIdentity | None:
    """A caller's statement {"name": "safari", "version": "17.0"}, or the page's identity dict."""
    if not browser_info:
        return None
    if "name" in browser_info:
        name = str(browser_info["name"]).lower()
        ver = tuple(int(p) for p in str(browser_info.get("version", "")).split(".") if p.isdigit())
        engine = {"safari": "webkit", "firefox": "gecko"}.get(name, "blink")
        return BrowserIdentity(name, ver, engine, True, ("caller",))
    return identify_browser(browser_info, browser_info.get("adapter"))


def _standalone_limits(quirks: dict[str, Any], tier: str, budget: Mapping[str, int] | None) -> dict[str, int]:
    """The limits a browser with these quirks would plan against in `tier` on a spec-default device."""
    return effective_limits(Capabilities("webgpu", frozenset(), dict(SPEC_DEFAULT_LIMITS), quirks=quirks), tier, budget)


def create_optimal_fallback_strategy(model_type: str, browser_info: Mapping[str, Any] | None, operation_type: str,
                                     config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The strategy and its parameters for an op class on a browser, before any device exists.

    config (all optional): budget (limit overrides), seq_len, num_heads, weight_bytes / tensor_bytes,
    memory_constrained (bool), memory_threshold (share of the binding a weight may take when memory is
    constrained, 0.8), precision ("f32"|"f16"), has_f16 (the adapter's feature, if known).
    Returns {operation, model_type, browser, strategy, parameters, tier_cap, use_f16, workgroup_size, reason}.
    """
    cfg = dict(config or {})
    identity = _identity(browser_info)
    quirks = quirks_for(identity)
    limits = _standalone_limits(quirks, "constrained" if cfg.get("memory_constrained") else "core", cfg.get("budget"))
    limits.setdefault("maxAttentionScoresPerDispatch", int(cfg.get("scores_per_dispatch", 1 << 18)))
    has_f16 = bool(cfg.get("has_f16")) and "shader-f16" not in quirks.get("features_off", ())
    planner = Planner(limits, quirks, "full" if has_f16 else "core", cfg.get("precision", "f32"), has_f16, True, {})
    binding = planner.binding()
    op = ALIASES.get(operation_type, operation_type)
    params: dict[str, Any] = {"binding_budget": binding}
    size = int(cfg.get("weight_bytes", 0) if op == "matmul" else cfg.get("tensor_bytes", cfg.get("weight_bytes", 0)))
    share = float(cfg.get("memory_threshold", 0.8)) if cfg.get("memory_constrained") else 1.0
    over = (f"{size:,} bytes over the {binding:,}-byte binding", size) if size > binding * share else None
    scores = None
    if op == "attention":
        seq, heads = int(cfg.get("seq_len", 512)), int(cfg.get("num_heads", 12))
        scores, over = (1, heads, seq, seq), None
    if op in OPS or op == "shader":
        plan = planner.decide(op, over_budget=over, scores=scores)
    else:
        plan = Decision(HOST, "cpu", f"no GPU kernel for {operation_type!r}")
    budget = limits["maxAttentionScoresPerDispatch"]
    if plan.strategy == "layer_decomposition":
        params["blocks"] = max(2, math.ceil(size / binding))
    elif plan.strategy == "tiled":
        params["tile_bytes"] = binding
        params["tile_rows"] = 64 if model_type == "vision" else None
    elif plan.strategy == "head_partitioning":
        params["heads_per_group"] = max(1, budget // (scores[2] * scores[3]))
    elif plan.strategy == "chunked_attention":
        params["query_chunk"] = max(1, budget // scores[3])
    if op == "attention":
        if quirks.get("kv_cache") is False and model_type == "text":
            params["kv_cache"] = False
        plan.reason = f"{scores[1]} heads x {scores[2]}^2 scores vs {budget:,} per dispatch"
    return {"operation": op, "model_type": model_type,
            "browser": identity.as_dict() if identity else None,
            "strategy": plan.strategy, "parameters": params, "tier_cap": quirks.get("tier_cap"),
            "use_f16": plan.strategy == "f16", "workgroup_size": planner.wg(),
            "quirks": list(quirks.get("applied", [])), "reason": plan.reason or plan.strategy}


__all__ = ["STRATEGIES", "FallbackManager", "create_optimal_fallback_strategy"]
