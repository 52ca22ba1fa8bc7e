"""What the plugin's lanes did in a run: each test's outcome in each lane (from pytest's reports, which
pytest-xdist forwards to its controller) and what each lane's page was (browser, version, adapter, tier),
sent from each xdist worker to the controller at its end. The terminal summary and `--gpuport-report` read
them; everything here is plain data, so it crosses between processes as it is."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .browsers import Browsers
from .pages import LaneState

OUTCOMES = ("passed", "failed", "error", "skipped")
_ADAPTER_KEYS = ("vendor", "architecture", "device", "description", "is_fallback")


def row_of(nodeid: str, lane: str) -> str:
    """A test's node id without its lane (the row of the report): `t.py::f[1-chromium]` -> `t.py::f[1]`."""
    if nodeid.endswith(f"[{lane}]"):
        return nodeid[:-len(lane) - 2]
    if nodeid.endswith(f"-{lane}]"):
        return nodeid[:-len(lane) - 2] + "]"
    return nodeid


def lane_facts(state: LaneState) -> dict[str, Any]:
    """What a lane's page was: browser and version (or the endpoint that lent it), thread, backend, tier,
    adapter and features as its runtime reported them, and how it started (or why it did not)."""
    info = state.final_info or state.info or {}
    adapter = info.get("adapter") or {}
    return {
        "lane": state.name,
        "browser": state.browser,
        "browser_version": state.browser_version,
        "remote": state.remote,
        "mode": state.mode,
        "backend": info.get("backend"),
        "tier": info.get("tier"),
        "adapter": {k: adapter.get(k) for k in _ADAPTER_KEYS},
        "features": info.get("features"),
        "user_agent": (state.navigator or {}).get("userAgent"),
        "open_s": None if state.open_s is None else round(state.open_s, 2),
        "error": state.error,
        "restarted": state.restarted,
        "crashes": list(state.crashes),
    }


@dataclass
class Cell:
    """One test in one lane: its outcome over setup, call and teardown, time, and what went wrong."""

    outcome: str = "passed"
    duration_s: float = 0.0
    message: str = ""
    longrepr: str = ""
    reruns: int = 0   # tries that lost their page and were run again (plugin.rerun_on_crash); the last counts

    def add(self, report: Any) -> None:
        self.duration_s += report.duration
        if report.outcome == "rerun":   # pytest-rerunfailures' word for a try that will be run again
            self.reruns += 1
            return
        if report.passed or self.outcome != "passed":   # the first thing that went wrong stands
            return
        if report.skipped:
            self.outcome = "skipped"
            self.message = _skip_reason(report)
            return
        self.outcome = "failed" if report.when == "call" else "error"
        crash = getattr(report.longrepr, "reprcrash", None)
        self.message = headline(crash.message if crash is not None else str(report.longrepr))
        self.longrepr = str(report.longrepr)


@dataclass
class Results:
    """Outcomes per (test, lane), each worker's lanes and browsers; `worker` is the xdist worker id here."""

    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    lanes: list[dict] = field(default_factory=list)      # lane_facts + "worker"
    launched: dict[str, list[str]] = field(default_factory=dict)   # worker -> browsers launched there

    def record(self, report: Any) -> None:
        props = dict(report.user_properties)
        lane, row = props.get("gpuport_lane"), props.get("gpuport_test")
        if lane is not None and row is not None:
            self.cells.setdefault((row, lane), Cell()).add(report)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (_, lane), cell in self.cells.items():
            lane_counts = out.setdefault(lane, {})
            lane_counts[cell.outcome] = lane_counts.get(cell.outcome, 0) + 1
        return out

    def collect(self, worker: str, states: list[LaneState], browsers: list[Browsers]) -> dict:
        """This process's lanes and browsers, as plain data (what a worker sends to the controller)."""
        return {"worker": worker, "lanes": [dict(lane_facts(state), worker=worker) for state in states],
                "launched": [key for pool in browsers for key in pool.launched]}

    def merge(self, part: dict) -> None:
        self.lanes.extend(part["lanes"])
        self.launched[part["worker"]] = part["launched"]


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def headline(text: str) -> str:
    """One line that says what went wrong: for a Python traceback (from the page), its exception line, after
    whatever the first line said before the traceback; else pytest's last `E ...` line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first, line = lines[0], lines[0][:500]
    if "Traceback (most recent call last)" in text:
        tail = [x for x in lines if not x[:1].isspace() and not x.startswith(("page errors:", "E "))
                and "Traceback (most recent call last)" not in x
                and not x.startswith(("During handling", "The above exception"))]
        if tail:
            lead = first.split("Traceback (most recent call last)")[0].rstrip()
            line = (lead + " " + tail[-1] if lead else tail[-1])[:500]
    else:
        errors = [x for x in lines if x.startswith("E ")]
        if errors:
            line = errors[-1][1:].strip()[:500]
    for noise in ("gpuport.testing.pages.PageError: ", "PageError: ", "Page.evaluate: "):
        line = line.replace(noise, "")
    line = line.removeprefix("Failed: ")   # pytest.fail's own prefix: the plugin's messages say what failed
    return re.sub(r"\b(\w+): \1: ", r"\1: ", line)
