"""The performance monitor: what ran, where and how long, while a `with rt.profile() as prof:` block is open.

Per op call: where it ran (the device or the host) and why, its host time (planning and encoding for
device work, the whole computation for host work) and, where the adapter offers timestamp queries, the
device time of each of its dispatches (one compute pass per dispatch while profiling; the stamps come back
with the next read, so read a result inside the block). Without timestamps, `sync=True` (where the device
can block) waits for each device op, so its wall time is its device time. Also: compile time per pipeline,
bytes moved host<->device, peak device memory. `prof.report(format="dict" | "json" | "html" | "markdown")`.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..platform import sync_wait
from ..types import HOST, Decision

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..tensor.tensor import Tensor


@dataclass
class OpRecord:
    """One op call."""

    op: str
    where: str                  # "webgpu" (the device) or "cpu" (the host)
    strategy: str
    reason: str
    shapes: list[list[int]]
    host_ms: float
    dispatches: int = 0
    device_ms: float | None = None       # sum of its dispatches' timestamps, once they came back
    kernels: list[str] = field(default_factory=list)


class Profile:
    """A profiling session of one runtime (`rt.profile()`); a context manager."""

    def __init__(self, rt: "Runtime", sync: bool = False) -> None:
        self.rt = rt
        self.sync = sync and rt.device.can_block
        self.ops: list[OpRecord] = []
        self.compiles: list[dict[str, Any]] = []
        self.peak_device_bytes = 0
        self._slots: list[OpRecord] = []      # one per device dispatch, in submission order, until timed
        # stamps read back before their op was recorded (auto syncs a call it times for learning before the
        # call returns): the next records take them, in submission order
        self._early: list[tuple[str, float]] = []
        self._t0 = 0.0
        self._wall_ms = 0.0
        self._stats0: dict[str, int] = {}
        self._stats1: dict[str, int] | None = None

    @property
    def timing(self) -> str:
        """How device time is known: "timestamp-query", "synchronized" (natively, sync=True) or "host only"."""
        if self.rt.device.timestamps:
            return "timestamp-query"
        return "synchronized" if self.sync else "host only"

    def __enter__(self) -> "Profile":
        rt = self.rt
        with rt.lock:
            rt.flush()              # what was queued before the block is not timed as the block's
            rt.profiler = rt.pipelines.profiler = self
            rt.device.timer = self._timed
            self._stats0 = dict(rt.device.stats)
            self.peak_device_bytes = rt.memory.device_bytes()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        rt = self.rt
        with rt.lock:
            rt.flush()
            if rt.device.can_block and self._slots:
                sync_wait(rt.device.collect_timings(), "collecting timestamps")   # natively: now
            self._wall_ms = (time.perf_counter() - self._t0) * 1e3
            self._stats1 = dict(rt.device.stats)
            rt.profiler = rt.pipelines.profiler = None
            if not self._slots:
                rt.device.timer = None
            # in a page, stamps still in flight arrive with the next read; the timer stays until they do

    # -- what the runtime reports -------------------------------------------------------------------
    def op(self, name: str, shapes: list[tuple[int, ...]], decision: Decision, t0: float, dispatches: int,
           out: "Tensor | None") -> None:
        """One op call (or a model's fused host computation) finished on the host side."""
        if self.sync and decision.where != HOST and dispatches and out is not None:
            self.rt.executor.sync(out)
        record = OpRecord(name, decision.where, decision.strategy, decision.reason, [list(s) for s in shapes],
                          round((time.perf_counter() - t0) * 1e3, 4), dispatches)
        if self.sync and dispatches:
            record.device_ms = record.host_ms
        self.ops.append(record)
        if self.rt.device.timestamps:
            self._slots += [record] * dispatches
            early, self._early = self._early, []
            self._assign(early)
        self.peak_device_bytes = max(self.peak_device_bytes, self.rt.memory.device_bytes())

    def compiled(self, label: str, ms: float) -> None:
        self.compiles.append({"label": label, "ms": round(ms, 3)})

    def _timed(self, labels: list[str], ms: list[float]) -> None:
        """Timestamps of dispatches, in submission order (the device calls this)."""
        self._assign(list(zip(labels, ms)))
        if not self._slots and self.rt.profiler is not self:
            self.rt.device.timer = None

    def _assign(self, stamps: list[tuple[str, float]]) -> None:
        for i, (label, t) in enumerate(stamps):
            if not self._slots:
                if self.rt.profiler is self:   # inside the block: the op they belong to is being recorded
                    self._early += stamps[i:]
                return
            record = self._slots.pop(0)
            record.device_ms = round((record.device_ms or 0.0) + t, 4)
            record.kernels.append(label)

    # -- the report ---------------------------------------------------------------------------------
    def report(self, format: str = "dict") -> dict[str, Any] | str:
        """The profile as "dict", "json", "markdown" or "html"."""
        data = self._data()
        if format == "dict":
            return data
        if format == "json":
            return json.dumps(data, indent=2)
        if format in ("markdown", "md"):
            return _markdown(data)
        if format == "html":
            return _html(data)
        raise ValueError(f"format must be 'dict', 'json', 'markdown' or 'html', not {format!r}")

    def _data(self) -> dict[str, Any]:
        stats = self._stats1 or self.rt.device.stats
        by_op: dict[str, dict[str, Any]] = {}
        for r in self.ops:
            entry = by_op.setdefault(r.op, {"calls": 0, "where": {}, "host_ms": 0.0, "device_ms": 0.0,
                                            "strategies": {}})
            entry["calls"] += 1
            entry["where"][r.where] = entry["where"].get(r.where, 0) + 1
            entry["strategies"][r.strategy] = entry["strategies"].get(r.strategy, 0) + 1
            entry["host_ms"] = round(entry["host_ms"] + r.host_ms, 4)
            if r.device_ms is not None:
                entry["device_ms"] = round(entry["device_ms"] + r.device_ms, 4)
        pending = sum(1 for r in self.ops if r.dispatches and r.device_ms is None and self.timing != "host only")
        info = self.rt.device.adapter_info
        return {
            "backend": self.rt.mode, "device": self.rt.backend, "tier": self.rt.tier,
            "adapter": " / ".join(str(info.get(k)) for k in ("vendor", "device", "description") if info.get(k)),
            "timing": self.timing, "wall_ms": round(self._wall_ms, 3),
            "ops": [asdict(r) for r in self.ops], "by_op": by_op,
            "not_timed": pending,
            "compiles": list(self.compiles),
            "bytes_to_device": stats.get("bytes_to_device", 0) - self._stats0.get("bytes_to_device", 0),
            "bytes_to_host": stats.get("bytes_to_host", 0) - self._stats0.get("bytes_to_host", 0),
            "dispatches": stats.get("dispatches", 0) - self._stats0.get("dispatches", 0),
            "peak_device_bytes": self.peak_device_bytes,
        }


_COLUMNS = ("op", "calls", "where", "strategies", "host_ms", "device_ms")


def _rows(data: dict[str, Any]) -> list[list[str]]:
    return [[op, str(e["calls"]), ", ".join(f"{k} {v}" for k, v in e["where"].items()),
             ", ".join(f"{k} {v}" for k, v in e["strategies"].items()), f"{e['host_ms']:.3f}",
             f"{e['device_ms']:.3f}" if e["device_ms"] else "-"] for op, e in data["by_op"].items()]


def _summary(data: dict[str, Any]) -> str:
    return (f"{data['backend']} ({data['tier']}, {data['adapter']}); device time: {data['timing']}; "
            f"wall {data['wall_ms']:.1f} ms; {data['dispatches']} dispatches; {data['bytes_to_device']:,} B to the "
            f"device, {data['bytes_to_host']:,} B back; peak device memory {data['peak_device_bytes']:,} B; "
            f"{len(data['compiles'])} pipelines compiled ({sum(c['ms'] for c in data['compiles']):.1f} ms)")


def _markdown(data: dict[str, Any]) -> str:
    lines = ["# gpuport profile", "", _summary(data), "", "| " + " | ".join(_COLUMNS) + " |",
             "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(data)]
    return "\n".join(lines) + "\n"


def _html(data: dict[str, Any]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in _rows(data))
    return (f"<section class=\"gpuport-profile\"><p>{html.escape(_summary(data))}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")
