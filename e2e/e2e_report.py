"""The browser compatibility report of gpuport's own e2e lanes: each lane's outcomes (recorded from the test
reports), then e2e/report/compatibility.{json,md} at session end and a summary in pytest's output."""

from __future__ import annotations

import json
import time
from pathlib import Path

from e2e_matrix import LANES, op_of
from gpuport.testing.browsers import Browsers
from gpuport.testing.pages import LaneState
from gpuport.testing.results import headline, lane_facts

REPORT_DIR = Path(__file__).resolve().parent / "report"


def record(state: LaneState, case: str | None, report) -> None:
    """One test report of a lane's test (`case`: its parity case, None for the others) into the lane's outcomes."""
    state.last_used = time.monotonic()
    key = case or report.nodeid.split("::")[-1].split("[")[0]
    entry = state.outcomes.setdefault(key, {"outcome": "passed", "duration_s": 0.0, "op": op_of(case) if case else
                                            "detect"})
    entry["duration_s"] += report.duration
    if report.outcome == "rerun":   # the browser lost the page during this try; the next one counts (rerun_on_crash)
        entry["reruns"] = entry.get("reruns", 0) + 1
    elif report.failed:
        entry["outcome"] = "failed"
        text = str(report.longrepr) if report.longrepr else ""
        crash = getattr(report.longrepr, "reprcrash", None)  # the exception itself, not the test's source
        entry["message"] = headline(crash.message if crash is not None else text)
        entry["detail"] = text[-4000:]
    elif report.skipped:
        entry["outcome"] = "skipped"


_KEY_LIMITS = ("maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
               "maxComputeInvocationsPerWorkgroup")


_OP_KEYS = {"rowwise": ("layer_norm", "sum", "mean", "l2_normalize")}


def _strategy(info: dict | None, op: str) -> str:
    """The strategy the runtime reports for an op (rt.info()["strategies"], op -> name); "native kernel"
    when the runtime reports none; "-" for rows that are not one op (errors, chained, strategy cases)."""
    strategies = (info or {}).get("strategies")
    if not strategies:
        return "native kernel"
    if isinstance(strategies, dict):
        found = sorted({v if isinstance(v, str) else json.dumps(v, default=str)
                        for k in _OP_KEYS.get(op, (op,)) if (v := strategies.get(k)) is not None})
        return ", ".join(found) if found else "-"
    if isinstance(strategies, (list, tuple)):
        return ", ".join(map(str, strategies))
    return str(strategies)


def _lane_summary(state: LaneState, browsers: Browsers | None) -> dict:
    info = state.final_info or state.info or {}
    limits = info.get("limits") or {}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for entry in state.outcomes.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    spec = LANES[state.name]
    return {
        **lane_facts(state),   # browser and version, mode, backend, tier, adapter, features, user agent, open_s, error
        "browser_launch_s": (round(browsers.launch_s[spec.browser], 2)
                             if browsers and spec.browser in browsers.launch_s else None),
        "query": spec.query,
        "note": spec.note,
        "expected": {"backend": spec.backend, "tier": spec.tier, "mode": spec.mode},
        "detected_tier": info.get("detected_tier"),
        "limits": {k: limits.get(k) for k in _KEY_LIMITS},
        "strategies": info.get("strategies"),
        "budget": info.get("budget"),
        "over_budget_strategies": info.get("over_budget_strategies"),
        "backend_note": info.get("note"),
        "navigator_gpu": (state.navigator or {}).get("gpu"),
        "startup_ms": {k: round(v, 1) for k, v in (state.startup or {}).items() if isinstance(v, (int, float))},
        "pyodide_snapshot": (state.startup or {}).get("snapshot"),   # how Pyodide booted (web/snapshot.js)
        "wall_s": (round(state.last_used - state.started_at, 2) if state.started_at and state.last_used else None),
        "tests_s": round(sum(e["duration_s"] for e in state.outcomes.values()), 2),
        "counts": counts,
    }


def _fmt_bytes(n) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} B"


def write_report(states: dict[str, LaneState], browsers: Browsers | None) -> None:
    """e2e/report/compatibility.json and .md: lanes x ops, each lane's adapter, limits and timings."""
    if not states:
        return
    order = [n for n in LANES if n in states]
    lanes = {n: _lane_summary(states[n], browsers) for n in order}
    ops: dict[str, dict] = {}
    cases: dict[str, dict] = {}
    for n in order:
        state = states[n]
        info = state.final_info or state.info
        for case, entry in state.outcomes.items():
            if entry["op"] == "detect":
                continue
            op = entry["op"]
            cell = ops.setdefault(op, {}).setdefault(n, {"passed": 0, "failed": 0, "skipped": 0,
                                                         "strategy": _strategy(info, op), "failed_cases": []})
            cell[entry["outcome"]] += 1
            if entry["outcome"] == "failed":
                cell["failed_cases"].append(case)
            c = cases.setdefault(case, {"op": op, "lanes": {}})
            c["lanes"][n] = {k: entry[k] for k in ("outcome", "message") if k in entry}
            c["lanes"][n]["duration_s"] = round(entry["duration_s"], 3)
    detect = {n: {k: v for k, v in states[n].outcomes.get("test_lane_detects", {}).items() if k != "detail"}
              for n in order}
    data = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lanes": lanes, "detect": detect,
            "ops": ops, "cases": cases}
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "compatibility.json").write_text(json.dumps(data, indent=2, default=str) + "\n")

    md = ["# gpuport browser compatibility matrix", "", f"Generated {data['generated']} by `pytest e2e` "
          "(software GPUs: Chromium/SwiftShader, Firefox ESR/lavapipe; WebKitGTK has no WebGPU).", "",
          "## Lanes", "",
          "| lane | browser | navigator.gpu | backend | tier | mode | adapter (vendor / architecture) | fallback | features "
          "| binding | workgroup mem | invocations | start-up (Pyodide / NumPy and wheel / open) | lane wall | "
          "passed | failed |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, s in lanes.items():
        a, lim, st = s["adapter"], s["limits"], s["startup_ms"]
        start = (f"{st.get('total_ms', 0) / 1000:.1f} s ({st.get('pyodide_ms', 0) / 1000:.1f} / "
                 f"{st.get('packages_ms', 0) / 1000:.1f} / "
                 f"{st.get('open_ms', 0) / 1000:.1f})" if st else "-")
        md.append(f"| {n} | {s['browser']} {s['browser_version'] or ''} | "
                  f"{s['navigator_gpu'] or '-'} | {s['backend'] or '-'} | "
                  f"{s['tier'] or '-'} | {s['mode'] or '-'} | "
                  f"{a.get('vendor') or '(empty)'} / {a.get('architecture') or '(empty)'} | {a.get('is_fallback')} | "
                  f"{', '.join(s['features'] or []) or '-'} | {_fmt_bytes(lim['maxStorageBufferBindingSize'])} | "
                  f"{_fmt_bytes(lim['maxComputeWorkgroupStorageSize'])} | "
                  f"{lim['maxComputeInvocationsPerWorkgroup'] or '-'} | {start} | "
                  f"{s['wall_s'] if s['wall_s'] is not None else '-'} s | {s['counts']['passed']} | "
                  f"{s['counts']['failed']} |")
    budgets = [(n, s) for n, s in lanes.items() if s.get("budget")]
    if budgets:
        md += ["", "Runtime budgets below the device limits (the constrained tier's chunked/tiled strategies plan "
               "against these):", ""]
        md += [f"- {n}: " + ", ".join(f"{k} {_fmt_bytes(v) if k.endswith(('BindingSize', 'BufferSize', 'StorageSize')) else v}" for k, v in s["budget"].items())
               + (f"; over-budget strategies: {json.dumps(s['over_budget_strategies'], default=str)}"
                  if s.get("over_budget_strategies") else "") for n, s in budgets]
    md += ["", "## Ops x lanes", "", "Each cell: parity cases passed/total in that lane, and the strategy "
           "the runtime reports for the op (`rt.info()['strategies']`, else the native kernel).", "",
           "| op | " + " | ".join(f"{n} ({lanes[n]['tier'] or '?'})" for n in order) + " |",
           "|---|" + "---|" * len(order)]
    for op in sorted(ops):
        row = []
        for n in order:
            cell = ops[op].get(n)
            if not cell:
                row.append("-")
                continue
            total = cell["passed"] + cell["failed"] + cell["skipped"]
            mark = "pass" if cell["failed"] == 0 and cell["skipped"] == 0 else "**FAIL**"
            row.append(f"{mark} {cell['passed']}/{total} ({cell['strategy']})")
        md.append(f"| {op} | " + " | ".join(row) + " |")
    failures = [(n, c, e) for n in order for c, e in states[n].outcomes.items() if e["outcome"] == "failed"]
    errors = [(n, s["error"]) for n, s in lanes.items() if s["error"]]
    if errors or failures:
        md += ["", "## Failures", ""]
        for n, err in errors:
            md.append(f"- lane **{n}** did not start: {headline(err)}")
        for n, c, e in failures:
            if not states[n].error:  # a lane that did not start fails every test for that one reason
                md.append(f"- **{n}** `{c}`: {e.get('message', '')}")
    restarted = [(n, s["restarted"]) for n, s in lanes.items() if s["restarted"]]
    lost = [(n, c, e["reruns"]) for n in order for c, e in states[n].outcomes.items() if e.get("reruns")]
    if restarted or lost:
        md += ["", "## Lanes started again", ""]
        md += [f"- lane **{n}**: its page's renderer crashed as it started, and it was started once more: {headline(why)}"
               for n, why in restarted]
        md += [f"- lane **{n}**: the browser lost its page during `{c}` ({'; '.join(lanes[n]['crashes'])}); "
               f"a fresh page ran it again ({reruns}x) and the lane's later tests" for n, c, reruns in lost]
    (REPORT_DIR / "compatibility.md").write_text("\n".join(md) + "\n")


def terminal_summary(tr, states: dict[str, LaneState], browsers: Browsers | None) -> None:
    if not states:
        return
    tr.section("browser lanes (e2e/report/compatibility.md)")
    for name in [n for n in LANES if n in states]:
        s = _lane_summary(states[name], browsers)
        c = s["counts"]
        tr.write_line(f"{name:27} {str(s['backend']):6} {str(s['tier']):11} {c['passed']:3} passed {c['failed']:3} failed"
                      f"  page ready {s['open_s'] if s['open_s'] is not None else '-':>5} s"
                      f"  lane wall {s['wall_s'] if s['wall_s'] is not None else '-':>6} s"
                      + (f"  {headline(s['error'])[:160]}" if s["error"] else "")
                      + (f"  started again after: {headline(s['restarted'])[:120]}" if s["restarted"] else ""))
