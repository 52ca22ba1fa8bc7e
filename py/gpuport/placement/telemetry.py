"""What `FallbackManager.get_performance_metrics()` reports: strategies per op, host-side timings, memory
figures. Timings are host-side (planning, encoding, NumPy for host work): GPU work is
queued, not waited on."""

from __future__ import annotations

import time
from typing import Any

from ..host import hostops, wasm_kernels
from ..platform import IN_PYODIDE
from ..types import Decision


class Telemetry:
    """Counters and timings; `enabled=False` (FallbackManager's enable_telemetry) keeps it silent."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.reset()

    def reset(self) -> None:
        self._m: dict[str, Any] = {
            "fallback_activations": 0, "native_operations": 0, "layer_operations": 0, "cpu_fallbacks": 0,
            "tiles": 0, "attention_dispatches": 0, "kv_blocks": 0, "fused_epilogues": 0, "strategies": {}, "last_strategy": {},
            "operation_timings": {},
            "memory_usage": {"largest_binding_bytes": 0, "blocked_tensors": 0},
        }

    def count(self, op: str, plan: Decision, t0: float) -> None:
        """One op call served by `plan`, started at perf_counter() t0."""
        if not self.enabled:
            return
        m = self._m
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

    def add(self, counter: str, n: int = 1) -> None:
        """Bump a work counter: layer_operations, tiles, attention_dispatches, kv_blocks, fused_epilogues."""
        if self.enabled:
            self._m[counter] += n

    def binding(self, nbytes: int) -> None:
        if self.enabled:
            mu = self._m["memory_usage"]
            mu["largest_binding_bytes"] = max(mu["largest_binding_bytes"], nbytes)

    def blocked_tensor(self) -> None:
        if self.enabled:
            self._m["memory_usage"]["blocked_tensors"] += 1

    def metrics(self) -> dict[str, Any]:
        m = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._m.items()}
        m["operation_timings"] = {k: dict(v) for k, v in self._m["operation_timings"].items()}
        # wasm_fallbacks counts host calls that ran the WebAssembly kernels, so only a page with them linked
        # counts any (natively the host is NumPy or the native C build, and saying "wasm" there would be untrue).
        m["host_engine"] = host_engine()
        m["wasm_fallbacks"] = m["cpu_fallbacks"] if m["host_engine"].startswith("wasm-") else 0
        return m


def host_engine() -> str:
    """What runs host (cpu) work in this process: "wasm-relaxed-simd" or "wasm-simd128" (a page with
    gpuport's WebAssembly kernels linked, by build), "numpy-wasm" (a page without them), "native-simd" (natively, the same C kernels
    built for this machine, NumPy's BLAS where it wins: hostops.calls() counts each) or "numpy"."""
    if not IN_PYODIDE:
        return hostops.backend_name()
    return f"wasm-{wasm_kernels.variant()}" if wasm_kernels.available() else "numpy-wasm"
