"""BackendSelector: picks a backend per op from a calibrated cost model, then from measured timings.

Software adapters lose to NumPy on most work, real GPUs win on large work; a fixed size threshold is
wrong on one of them. The selector starts from a cost model calibrated at open (FLOP rate, memory and
transfer bandwidth, dispatch overhead per backend), keeps an exponentially weighted average of measured
times per (op, size bucket, backend), and explores a backend it has not measured only while the model
says it could plausibly win, and only a bounded number of times.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

from ..errors import GpuportError
from ..formats.records import (
    RecordError,
    need,
    need_dict,
    need_int,
    need_key,
    need_list,
    need_number,
    need_str,
    parse_json,
    short_repr,
)
from ..ops.opspecs import flops

ENV_FORCE = "GPUPORT_BACKEND"      # force one backend for every op ("cpu" or "webgpu")
ENV_DISABLE = "GPUPORT_DISABLE"    # comma-separated backends never to select
RECORD_VERSION = 1
MAX_BUCKET = 1100                  # log2 of the largest float: no real workload lies beyond


@dataclass(frozen=True)
class WorkloadCharacteristics:
    """What an op call costs: its shapes, bytes moved, FLOPs, and where each input lives now."""

    op: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    bytes: int = 0
    flops: float = 0.0
    inputs_on: tuple[str, ...] = ()
    input_bytes: tuple[int, ...] = ()

    @classmethod
    def of(cls, op: str, shapes: Iterable[Sequence[int]], inputs_on: Iterable[str] = (),
           itemsize: int = 4, output_shape: Sequence[int] | None = None) -> "WorkloadCharacteristics":
        shapes_t = tuple(tuple(int(d) for d in s) for s in shapes)
        in_bytes = tuple(math.prod(s) * itemsize for s in shapes_t)
        out = math.prod(output_shape if output_shape is not None else (shapes_t[0] if shapes_t else ())) * itemsize
        return cls(op, shapes_t, "float32" if itemsize == 4 else f"{itemsize * 8}-bit", sum(in_bytes) + out,
                   flops(op, shapes_t), tuple(inputs_on), in_bytes)

    @cached_property
    def bucket(self) -> int:
        """Size class: work within a factor of two shares its measurements (computed once per workload: the
        selector asks for it on every decision)."""
        return int(math.log2(self.flops + self.bytes + 1))


@dataclass
class BackendCosts:
    """A backend's calibrated rates: FLOP/s, its memory bandwidth, host<->device bandwidth, fixed cost."""

    flops_per_s: float
    bytes_per_s: float
    transfer_bytes_per_s: float = math.inf   # host<->this backend; inf for the host itself (NumPy)
    overhead_s: float = 0.0
    roundtrip_s: float = 0.0   # submit -> an awaited read back: once per result read (a model's forward)


@dataclass
class _Stat:
    mean_s: float = 0.0
    count: int = 0
    failures: int = 0

    def add(self, seconds: float, alpha: float) -> None:
        self.mean_s = seconds if self.count == 0 else (1 - alpha) * self.mean_s + alpha * seconds
        self.count += 1


@dataclass
class SelectorConfig:
    min_samples: int = 3          # measurements before a backend's own timing replaces the model
    explore_ratio: float = 4.0    # explore an unmeasured backend only if its estimate is within this factor
    explore_budget: int = 3       # at most this many exploratory picks per (op, bucket, backend)
    explore_max_s: float = 0.05   # ... each expected to cost at most this much more than the best
    alpha: float = 0.3            # weight of the newest measurement
    refresh_first: int = 2        # a measured loser is tried at this decision of a process (_refresh_due) ...
    refresh_after: int = 16       # ... then after this many more, and twice as many each time after that
    disabled: tuple[str, ...] = field(default_factory=tuple)
    forced: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "SelectorConfig":
        env = os.environ if environ is None else environ
        disabled = tuple(b.strip() for b in env.get(ENV_DISABLE, "").split(",") if b.strip())
        return cls(disabled=disabled, forced=env.get(ENV_FORCE) or None)


class BackendSelector:
    """Chooses among the backends of one runtime, per op call, and learns from what it measures."""

    def __init__(self, costs: dict[str, BackendCosts], config: SelectorConfig | None = None) -> None:
        self.config = config or SelectorConfig.from_env()
        self.costs = dict(costs)
        self.backends = [b for b in costs if b not in self.config.disabled]
        if not self.backends:
            raise GpuportError(f"every backend is disabled ({ENV_DISABLE}={','.join(self.config.disabled)})")
        if self.config.forced and self.config.forced not in self.backends:
            raise GpuportError(f"{ENV_FORCE}={self.config.forced!r} is not one of {self.backends}")
        self._stats: dict[tuple[str, int, str], _Stat] = {}
        self._explored: dict[tuple[str, int, str], int] = {}
        # a measured loser's [decisions before its next try, the interval, tries left in this run]
        self._refresh: dict[tuple[str, int, str], list[int]] = {}
        self._estimated: dict[int, tuple[WorkloadCharacteristics, tuple[int, ...], dict[str, float]]] = {}
        self.decisions = {"model": 0, "measured": 0, "explore": 0, "refresh": 0, "forced": 0, "preferred": 0}

    def estimate(self, w: WorkloadCharacteristics, backend: str) -> float:
        """Model seconds for `w` on `backend`, moving each input that lives elsewhere (slower end's rate)."""
        c = self.costs[backend]
        seconds = c.overhead_s + w.flops / c.flops_per_s + w.bytes / c.bytes_per_s
        for nbytes, where in zip(w.input_bytes, w.inputs_on):
            if where != backend:
                src = self.costs.get(where)
                rate = min(c.transfer_bytes_per_s, src.transfer_bytes_per_s if src else math.inf)
                seconds += nbytes / rate if rate != math.inf else 0.0
        return seconds

    def select_backend(self, workload: WorkloadCharacteristics, preferred_backend: str | None = None) -> str:
        """The backend expected to finish this call soonest (inputs' transfer included)."""
        if self.config.forced:
            self.decisions["forced"] += 1
            return self.config.forced
        if preferred_backend in self.backends:
            self.decisions["preferred"] += 1
            return preferred_backend
        return self.choose(workload, self._estimates(workload))

    def _estimates(self, w: WorkloadCharacteristics) -> dict[str, float]:
        """`estimate` per backend, made once per workload (auto keeps one object per op, shapes and residence) and
        set of costs (a backend's costs replaced, or the whole set, makes them anew): an array call asks on every
        call."""
        found, costs = self._estimated.get(id(w)), tuple(map(id, self.costs.values()))
        if found is None or found[0] is not w or found[1] != costs:
            if len(self._estimated) > 4096:
                self._estimated.clear()
            found = self._estimated[id(w)] = (w, costs, {b: self.estimate(w, b) for b in self.backends})
        return found[2]

    def choose(self, workload: WorkloadCharacteristics, estimates: dict[str, float]) -> str:
        """The backend with the least measured mean time for the workload's (op, size bucket), the model's
        `estimates` (seconds per backend) standing in only where it has no sample yet: one slow run outweighs a
        hopeful estimate, and one fast run a pessimistic one (an H100's 16-core host, estimated from NumPy's
        matmul rate, was measured 4x faster than the GPU on MiniLM's 8 sentences by its explored runs, yet the
        estimate kept every call on the GPU: the runs the exploration budget allowed never reached min_samples); an
        under-sampled backend is explored a bounded number of times while it is within `explore_ratio` of
        the best and `explore_max_s` of it, its read round trip counted: what a wrong estimate costs to find out
        stays small beside the call (an explored forward of a model whose weights the device lacks made a page's
        first result 2 s; ops explored on the device are read back by the host's next op, which in Firefox waits
        for its ~100 ms poll: a 2,000-row PCA's subtract, matmul and setitem explored there made it 6x slower)."""
        op, bucket = workload.op, workload.bucket
        cost, measured_all = {}, True
        for b in self.backends:
            st = self._stats.get((op, bucket, b))
            if st is not None and st.count >= self.config.min_samples:
                cost[b] = st.mean_s
            else:
                measured_all = False
                cost[b] = estimates[b] if st is None or st.count == 0 else st.mean_s
        best = min(cost, key=cost.__getitem__)
        if not measured_all:
            for b in self.backends:
                key = (op, bucket, b)
                st = self._stats.get(key)
                if (b != best and (st is None or st.count < self.config.min_samples)
                        and self._explored.get(key, 0) < self.config.explore_budget
                        and cost[b] <= self.config.explore_ratio * cost[best]
                        and cost[b] + self.costs[b].roundtrip_s - cost[best] <= self.config.explore_max_s):
                    self._explored[key] = self._explored.get(key, 0) + 1
                    self.decisions["explore"] += 1
                    return b
            self.decisions["model"] += 1
            return best
        for b in self.backends:
            if b == best:
                if (op, bucket, b) in self._refresh:   # a run of tries ends where it wins
                    self._refresh[(op, bucket, b)][2] = 0
            elif self._refresh_due((op, bucket, b), min(cost[b], estimates[b]), cost[best]):
                self.decisions["refresh"] += 1
                return b
        self.decisions["measured"] += 1
        return best

    def _refresh_due(self, key: tuple[str, int, str], expected: float, best: float) -> bool:
        """Whether a measured loser is tried now. Its mean stops changing once it loses, and it may be stale (timed
        under a busy machine, or in another process: a stored 3.8 ms for a 2,000-row PCA's host product, which took
        0.1-0.2 when tried in some later processes, had kept it on lavapipe in all of them). So at its (op, size
        bucket)'s `refresh_first` decision in this process (a short script makes few), then after `refresh_after`
        more, then twice as many each time (a loser that stays one costs ever less), it is tried for `min_samples`
        decisions in a row: the first call after a while may run cold (that product's first tries took 0.3-3.6 ms,
        the next ones 0.08-0.12), and one cold sample would leave the stale mean standing. Only where it is
        expected (its mean or, if lower, the model's estimate) within exploration's bounds of the best."""
        state = self._refresh.setdefault(key, [self.config.refresh_first, self.config.refresh_after // 2, 0])
        if state[2] > 0:   # within a refresh's run of tries
            state[2] -= 1
            return True
        state[0] -= 1
        if (state[0] > 0 or expected > self.config.explore_ratio * best
                or expected + self.costs[key[2]].roundtrip_s - best > self.config.explore_max_s):
            return False
        state[1] *= 2
        state[0], state[2] = state[1], self.config.min_samples - 1
        return True

    def samples(self, workload: WorkloadCharacteristics, backend: str) -> int:
        """How many timings of this workload's (op, size bucket) on `backend` have been recorded."""
        st = self._stats.get((workload.op, workload.bucket, backend))
        return 0 if st is None else st.count

    def mean(self, workload: WorkloadCharacteristics, backend: str) -> float:
        """The measured mean seconds of this workload's (op, size bucket) on `backend` (0 if none)."""
        st = self._stats.get((workload.op, workload.bucket, backend))
        return 0.0 if st is None else st.mean_s

    def record(self, workload: WorkloadCharacteristics, backend: str, seconds: float) -> None:
        """Learn from one measured call."""
        key = (workload.op, workload.bucket, backend)
        self._stats.setdefault(key, _Stat()).add(seconds, self.config.alpha)

    def execute_with_monitoring(self, operation_name: str, backend: str, func: Callable[[str], Any],
                                workload: WorkloadCharacteristics,
                                fallback_backends: Sequence[str] = ()) -> Any:
        """Run func(backend), timing it; on a gpuport error try each fallback backend in turn."""
        tried = []
        for b in [backend, *[f for f in fallback_backends if f != backend]]:
            if b not in self.backends:
                continue
            t0 = time.perf_counter()
            try:
                result = func(b)
            except GpuportError as exc:
                self._stats.setdefault((workload.op, workload.bucket, b), _Stat()).failures += 1
                tried.append(f"{b}: {exc}")
                continue
            self.record(workload, b, time.perf_counter() - t0)
            return result
        raise GpuportError(f"{operation_name} failed on every backend: " + "; ".join(tried))

    def get_performance_summary(self) -> dict[str, Any]:
        """Measured means per op, bucket and backend, decision counts and calibrated costs."""
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for (op, bucket, b), st in sorted(self._stats.items()):
            table.setdefault(op, {}).setdefault(str(bucket), {})[b] = {
                "mean_ms": round(st.mean_s * 1e3, 4), "count": st.count, "failures": st.failures}
        return {"backends": list(self.backends), "decisions": dict(self.decisions), "ops": table,
                "costs": {b: asdict(c) for b, c in self.costs.items()}}

    def reset_performance_history(self) -> None:
        self._stats.clear()
        self._explored.clear()
        self._refresh.clear()
        for k in self.decisions:
            self.decisions[k] = 0

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The record persisted per adapter (placement.py, through stores.py): measurements and the
        calibrated costs (an infinite rate as null)."""
        return {"version": RECORD_VERSION,
                "stats": [[op, bucket, b, st.mean_s, st.count, st.failures]
                          for (op, bucket, b), st in self._stats.items()],
                "costs": {b: {k: None if v == math.inf else v for k, v in asdict(c).items()}
                          for b, c in self.costs.items()}}

    def load_dict(self, data: Any) -> int:
        """Merge the measurements of a record (what to_dict wrote). Anything malformed raises RecordError
        naming the field, and then nothing is taken. Returns how many were taken (rows of backends this
        selector lacks are skipped)."""
        taken = 0
        for op, bucket, b, stat in _history(data):
            if b in self.costs:
                self._stats[(op, bucket, b)] = stat
                taken += 1
        return taken


def read_record(text: str | bytes) -> tuple[dict[str, BackendCosts], dict[str, Any]]:
    """A stored record's calibrated costs and its data for `load_dict`, bounded and schema-checked as a
    whole (RecordError naming the field): every rate finite and > 0 (they divide), overheads and round
    trips finite and >= 0, mean times > 0, counts non-negative integers."""
    data = need_dict(parse_json(text), "record")
    _history(data)
    raw = need(data, "costs", need_dict)
    if sorted(raw) != ["cpu", "webgpu"]:
        raise RecordError("costs", f"backends {sorted(raw)}, expected ['cpu', 'webgpu']")
    costs = {}
    for b, c in raw.items():
        f = f"costs.{b}"
        need_dict(c, f)
        rates = {}
        for name in ("flops_per_s", "bytes_per_s", "transfer_bytes_per_s"):
            value = need_key(c, name, f"{f}.{name}")
            # the host's own transfer is infinite: null (or Infinity, in records written before null was)
            rates[name] = (math.inf if name == "transfer_bytes_per_s" and value in (None, math.inf) else
                           need_number(value, f"{f}.{name}", positive=True))
        costs[b] = BackendCosts(**rates, overhead_s=need(c, "overhead_s", need_number, f),
                                roundtrip_s=need(c, "roundtrip_s", need_number, f))
    return costs, data


def _history(data: Any) -> list[tuple[str, int, str, _Stat]]:
    """The measurements of a record: [op, size bucket, backend, mean seconds, count, failures] rows."""
    need_dict(data, "record")
    if type(data.get("version")) is not int or data["version"] != RECORD_VERSION:   # true == 1.0 == 1 in Python
        raise RecordError("version", f"{short_repr(data.get('version'))}, expected {RECORD_VERSION}")
    rows = []
    for i, row in enumerate(need(data, "stats", need_list)):
        f = f"stats[{i}]"
        op, bucket, b, mean_s, count, failures = need_list(row, f, length=6)
        rows.append((need_str(op, f + "[0]"), need_int(bucket, f + "[1]", high=MAX_BUCKET), need_str(b, f + "[2]"),
                     _Stat(need_number(mean_s, f + "[3]", positive=True), need_int(count, f + "[4]"),
                           need_int(failures, f + "[5]"))))
    return rows
