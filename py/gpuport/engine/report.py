"""The compatibility report behind `gpuport doctor` and `rt.report()`: hardware, tier, per-op plan, problems.

Plain data first (`build_report`), then two renderings (JSON, Markdown). Problems carry a severity
(info, warning, error) and a recommendation a person can act on.
"""

from __future__ import annotations

import json
from typing import Any

from ..backends.capabilities import SPEC_DEFAULT_LIMITS, TIERS
from ..ops.opspecs import OPS

SEVERITIES = ("info", "warning", "error")
KEY_LIMITS = ("maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
              "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupsPerDimension")


def _problem(severity: str, code: str, message: str, recommendation: str) -> dict[str, str]:
    return {"severity": severity, "code": code, "message": message, "recommendation": recommendation}


def _host_label(info: dict[str, Any]) -> str:
    """What host work runs on, in words: NumPy alone, or with gpuport's SIMD kernels."""
    kernels = info.get("host_kernels", "numpy")
    return "NumPy" if kernels == "numpy" else f"NumPy and gpuport's {kernels} kernels"


def find_problems(info: dict[str, Any]) -> list[dict[str, str]]:
    """What limits this runtime, most severe first."""
    problems = []
    adapter = info.get("adapter", {})
    if info["backend"] == "cpu":
        note = info.get("note", "")
        if "unavailable" in note:
            problems.append(_problem(
                "warning", "no-webgpu", f"running on {_host_label(info)}: {note}",
                "In a browser enable WebGPU (Chromium: --enable-unsafe-webgpu; Firefox: dom.webgpu.enabled). "
                "Natively install wgpu and a driver (Debian: mesa-vulkan-drivers libvulkan1 for lavapipe)."))
        else:
            problems.append(_problem("info", "cpu-tier", f"running on {_host_label(info)} by request", "none"))
    else:
        if adapter.get("is_fallback"):
            problems.append(_problem(
                "warning", "software-adapter",
                f"the adapter ({adapter.get('vendor')} {adapter.get('device') or adapter.get('architecture')}) "
                "is a software rasteriser: NumPy is usually faster here",
                "Use backend='auto' so each op goes where it measured fastest; on real hardware check drivers."))
        if "shader-f16" not in info.get("features", []):
            problems.append(_problem("info", "no-f16", "shader-f16 is missing: f16 kernels are not used",
                                     "Nothing to do: f32 kernels serve this tier with the same results."))
        limits = info.get("limits", {})
        for name in KEY_LIMITS:
            have, spec = limits.get(name), SPEC_DEFAULT_LIMITS.get(name)
            if have is not None and spec is not None and have < spec:
                problems.append(_problem("warning", f"limit-{name}",
                                         f"{name} is {have:,}, below the WebGPU default {spec:,}",
                                         "Large tensors run through chunked strategies (slower)."))
    threads = info.get("host_threads") or {}
    if threads.get("reason") and threads.get("engine") != "numpy":
        problems.append(_problem("info", "host-one-thread",
                                 f"whole layers on the host run on one thread: {threads['reason']}",
                                 "Serve the page with Cross-Origin-Opener-Policy: same-origin and "
                                 "Cross-Origin-Embedder-Policy: require-corp (gpuport serve and export do) to run "
                                 "them on every core."))
    if info.get("tier") != info.get("detected_tier") and info.get("detected_tier") in TIERS:
        problems.append(_problem("info", "tier-forced",
                                 f"tier {info.get('tier')!r} was requested; the device offers {info.get('detected_tier')!r}",
                                 "Open without tier= to use the best tier."))
    return sorted(problems, key=lambda p: -SEVERITIES.index(p["severity"]))


def build_report(info: dict[str, Any]) -> dict[str, Any]:
    """The report as plain data (JSON-ready). Per op: its strategy on the device, where its calls ran so far
    (`ran`: counts per backend) and, under auto, that the place is chosen per call by measurement."""
    strategies = info.get("strategies", {})
    mode = info.get("mode", info["backend"])
    selection = info.get("selection") or {}
    counts = selection.get("counts") or {}
    ops = {}
    by_op = info.get("host_kernels_by_op") or {}
    for name in OPS:
        if mode == "cpu":   # hostops: an op with a host kernel runs it (SIMD where linked), the rest the reference
            strategy = f"host kernel ({by_op[name]})" if name in by_op else "numpy reference"
        else:
            strategy = strategies.get(name, "native kernel")
        ran = dict(counts.get(name, {}))
        if mode == "auto":
            where = "auto: " + (", ".join(f"{b} x{n}" for b, n in sorted(ran.items())) if ran else
                                "chosen per call (not run yet)")
        else:
            where = mode
        ops[name] = {"strategy": strategy, "backend": where, "ran": ran, "shader": OPS[name].kernel.shader}
    calibration = selection.get("calibration") or {}
    return {
        "gpuport": info.get("version"),
        "platform": info.get("platform"),
        "browser": info.get("browser"),
        "backend": info["backend"],
        "mode": mode,
        "selection": ({"calibration": calibration.get("source"), "decisions": selection.get("decisions"),
                       "forced": selection.get("forced"), "disabled": selection.get("disabled")}
                      if mode == "auto" else None),
        "tier": info["tier"],
        "detected_tier": info.get("detected_tier"),
        "adapter": info.get("adapter", {}),
        "features": info.get("features", []),
        "limits": {k: info.get("limits", {}).get(k) for k in KEY_LIMITS if k in info.get("limits", {})},
        "host_kernels": {"engine": info.get("host_kernels", "numpy"), "by_op": info.get("host_kernels_by_op", {}),
                         "calls": info.get("host_kernel_calls", {}), "reason": info.get("host_kernels_reason", "")},
        "host_threads": info.get("host_threads") or {},
        "ops": ops,
        "problems": find_problems(info),
    }


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    a = report["adapter"]
    lines = [
        "# gpuport doctor", "",
        f"- **backend**: {_backend_line(report)}  ",
        f"- **tier**: {report['tier']} (device offers {report['detected_tier']})  ",
        f"- **adapter**: {' / '.join(p for p in (a.get('vendor'), a.get('architecture'), a.get('device') or a.get('description')) if p) or 'unknown'}"
        f"{' (fallback adapter)' if a.get('is_fallback') else ''}  ",
        f"- **platform**: {report['platform']}  ",
        f"- **host kernels**: {_host_kernels_line(report)}  ",
        f"- **host threads**: {_host_threads_line(report)}  ",
        f"- **features**: {', '.join(report['features']) or 'none'}", "",
    ]
    if report["limits"]:
        lines += ["| limit | value |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in report["limits"].items()] + [""]
    lines += ["| op | strategy | backend | shader |", "|---|---|---|---|"]
    lines += [f"| {op} | {o['strategy']} | {o['backend']} | {o['shader']} |" for op, o in report["ops"].items()]
    lines += ["", "## Problems", ""]
    if not report["problems"]:
        lines.append("None found.")
    for p in report["problems"]:
        lines.append(f"- **{p['severity']}** `{p['code']}`: {p['message']}. *Recommendation:* {p['recommendation']}")
    return "\n".join(lines) + "\n"


def _host_kernels_line(report: dict[str, Any]) -> str:
    hk = report.get("host_kernels") or {}
    engine = hk.get("engine", "numpy")
    if engine == "numpy":
        return "numpy" + (f" ({hk['reason']})" if hk.get("reason") else "")
    simd = [op for op, e in (hk.get("by_op") or {}).items() if e == engine]
    return f"{engine} for {', '.join(simd)} where they win, NumPy otherwise"


def _host_threads_line(report: dict[str, Any]) -> str:
    t = report.get("host_threads") or {}
    line = f"whole layers on {t.get('engine', 'numpy')}, {t.get('threads', 1)} thread{'s' if t.get('threads', 1) != 1 else ''}"
    return line + (f" ({t['reason']})" if t.get("reason") else "")


def _backend_line(report: dict[str, Any]) -> str:
    if report.get("mode") != "auto":
        return report["backend"]
    sel = report.get("selection") or {}
    return (f"auto: each op call placed on {report['backend']} or cpu by measurement (calibration: "
            f"{sel.get('calibration')}; decisions {sel.get('decisions')})")


def render(report: dict[str, Any], format: str = "json") -> str:
    if format == "json":
        return to_json(report)
    if format in ("markdown", "md"):
        return to_markdown(report)
    raise ValueError(f"format must be 'json' or 'markdown', not {format!r}")
