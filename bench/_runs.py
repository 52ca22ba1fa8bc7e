"""Repeated runs of a comparison bench (peers.py, page_threads.py, startup.py), so that no figure rests on one lucky
run: each run gives one ratio per (group, case, system, peer), the runs combine into every run's ratio, the WORST of
them and their median, and stated targets are checked against the worst. Pure: no browsers, processes or timing
(tests/bench/test_bench_runs.py).

A group is a lane or a browser ("chromium", "native"); a case is what was timed ("long256", "minilm warm"); a peer is
the label of what the system is compared with. One run's ratios are `{(group, case, system, peer): entry}` where an
entry is a ratio, or `{"ratio": float, "peer": the peer's actual name in that run}` when the label stands for a
choice made per run (peers.py's "tjs best": transformers.js's fastest device that run). Which way is better is the
bench's own definition of its ratio: peers.py and page_threads.py divide the peer's time by gpuport's (higher is
better), startup.py gpuport's by the peer's (lower is better); the worst run is the lowest or the highest ratio.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, str, str]          # (group, case, system, peer label)
Entry = float | Mapping[str, Any] | None
RunRatios = Mapping[Key, Entry]


def add_runs_argument(ap: argparse.ArgumentParser, default: int = 3) -> None:
    """--runs N, the same in every comparison bench."""
    def positive(text: str) -> int:
        n = int(text)
        if n < 1:
            raise argparse.ArgumentTypeError("--runs must be at least 1")
        return n
    ap.add_argument("--runs", type=positive, default=default,
                    help="repeat the whole comparison this many times, each with fresh browsers and worker processes, "
                         "and report every run's ratio, the worst and the median (default %(default)s)")


def _ratio(entry: Entry) -> float | None:
    return entry.get("ratio") if isinstance(entry, Mapping) else entry


def _peer(entry: Entry, label: str) -> str | None:
    if entry is None:
        return None
    return str(entry.get("peer", label)) if isinstance(entry, Mapping) else label


def worst(ratios: Iterable[float | None], higher_is_better: bool) -> float | None:
    """The least favourable of the ratios that exist (the lowest where higher is better); None when none does."""
    xs = [r for r in ratios if r is not None]
    if not xs:
        return None
    return min(xs) if higher_is_better else max(xs)


def median(ratios: Iterable[float | None]) -> float | None:
    """The median of the ratios that exist (the mean of the middle two for an even count); None when none does."""
    xs = [r for r in ratios if r is not None]
    return round(float(statistics.median(xs)), 6) if xs else None


def combine(runs: Sequence[RunRatios], higher_is_better: bool) -> list[dict[str, Any]]:
    """One row per key seen in any run, in the order first seen: {"group", "case", "system", "peer", "peers": the
    peer's actual name per run, "ratios": per run (None where that run has no ratio: a system or peer failed),
    "worst", "median", "missing": how many runs have no ratio}."""
    keys: dict[Key, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(k for k, v in run.items() if _ratio(v) is not None))
    rows = []
    for key in keys:
        entries = [run.get(key) for run in runs]
        ratios = [_ratio(e) for e in entries]
        group, case, system, peer = key
        rows.append({"group": group, "case": case, "system": system, "peer": peer,
                     "peers": [_peer(e, peer) if _ratio(e) is not None else None for e in entries],
                     "ratios": ratios, "worst": worst(ratios, higher_is_better), "median": median(ratios),
                     "missing": sum(r is None for r in ratios)})
    return rows


def peer_shown(row: Mapping[str, Any]) -> str:
    """The peer's label, with the names it stood for when those differ from it ("tjs best: tjs-wasm/tjs-wasm-2t")."""
    names = list(dict.fromkeys(p for p in row["peers"] if p is not None))
    return row["peer"] if names in ([], [row["peer"]]) else f"{row['peer']}: {'/'.join(names)}"


def fmt(ratio: float | None, prefix: str = "") -> str:
    return "-" if ratio is None else f"{prefix}{ratio:.2f}"


def table(rows: Sequence[Mapping[str, Any]], n_runs: int, what: str, prefix: str = "") -> str:
    """The compact "across N runs" table: group, case, system, peer, the ratio per run, worst and median. `what`
    says what a ratio is and which way is better; `prefix` goes before each ratio ("x" in peers.py)."""
    if not rows:
        return f"across {n_runs} runs: no ratios ({what})"
    width = [max(len(h), *(len(str(r[k])) for r in rows)) for h, k in (("group", "group"), ("case", "case"),
                                                                        ("system", "system"))]
    peer_w = max(4, *(len(peer_shown(r)) for r in rows))
    head = (f"{'group':{width[0]}}  {'case':{width[1]}}  {'system':{width[2]}}  {'peer':{peer_w}}"
            + "".join(f"{f'run {i + 1}':>8}" for i in range(n_runs)) + f"{'worst':>8}{'median':>8}")
    lines = [f"across {n_runs} runs ({what})", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['group']:{width[0]}}  {r['case']:{width[1]}}  {r['system']:{width[2]}}  {peer_shown(r):{peer_w}}"
                     + "".join(f"{fmt(x, prefix):>8}" for x in r["ratios"])
                     + f"{fmt(r['worst'], prefix):>8}{fmt(r['median'], prefix):>8}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """A stated goal: in every group and case named, the worst of the runs of `system` against `peer` must be `op`
    (">=" or "<=") `bound`."""
    groups: tuple[str, ...]
    cases: tuple[str, ...]
    system: str
    peer: str
    op: str
    bound: float
    source: str = ""          # where the goal is stated (an issue), for the JSON

    def holds(self, value: float) -> bool:
        return _holds(value, self.op, self.bound)


def _holds(value: float, op: str, bound: float) -> bool:
    if op not in (">=", "<="):
        raise ValueError(f"a target's op is '>=' or '<=', not {op!r}")
    return value >= bound if op == ">=" else value <= bound


def verdicts(rows: Sequence[Mapping[str, Any]], targets: Sequence[Target], n_runs: int) -> list[dict[str, Any]]:
    """One verdict per (target, group, case), ordered by group then case: "met" or "NOT met" from the worst of the
    runs; "unproven" when some run gave no ratio (its worst is over fewer runs); "not measured" when no run did (a
    lane left out)."""
    by_key = {(r["group"], r["case"], r["system"], r["peer"]): r for r in rows}
    out = []
    for t in targets:
        for group in t.groups:
            for case in t.cases:
                row = by_key.get((group, case, t.system, t.peer))
                v: dict[str, Any] = {"group": group, "case": case, "system": t.system, "peer": t.peer, "op": t.op,
                                     "bound": t.bound, "runs": n_runs, "worst": None, "median": None,
                                     "source": t.source}
                if row is None:
                    v["verdict"] = "not measured"
                else:
                    v.update(worst=row["worst"], median=row["median"])
                    v["verdict"] = ("unproven" if row["missing"] else "met" if t.holds(row["worst"]) else "NOT met")
                    v["missing"] = row["missing"]
                out.append(v)
    # read by group, then case: a browser's verdicts together, whichever target they come from
    groups = list(dict.fromkeys(g for t in targets for g in t.groups))
    cases = list(dict.fromkeys(c for t in targets for c in t.cases))
    return sorted(out, key=lambda v: (groups.index(v["group"]), cases.index(v["case"])))


def verdict_line(v: Mapping[str, Any], prefix: str = "") -> str:
    """"chromium long256 gpuport-auto vs tjs-wasm-2t: worst of 3 runs x1.31 >= 1.2: met"."""
    head = f"{v['group']} {v['case']} {v['system']} vs {v['peer']}"
    if v["worst"] is None:
        return f"{head}: target {v['op']} {v['bound']:g}: {v['verdict']} (no run has this ratio)"
    runs = v["runs"] - v.get("missing", 0)
    of = f"worst of {runs} runs" if not v.get("missing") else f"worst of the {runs} of {v['runs']} runs with a ratio"
    # two decimals, as in the tables, unless rounding would hide which side of the bound the worst is on
    digits = 2 if _holds(round(v["worst"], 2), v["op"], v["bound"]) == _holds(v["worst"], v["op"], v["bound"]) else 4
    return f"{head}: {of} {prefix}{v['worst']:.{digits}f} {v['op']} {v['bound']:g}: {v['verdict']}"


def across_runs(runs: Sequence[RunRatios], targets: Sequence[Target], higher_is_better: bool,
                what: str) -> dict[str, Any]:
    """The JSON's "across_runs" section: the rows (every run's ratio, worst, median) and the targets' verdicts."""
    rows = combine(runs, higher_is_better)
    return {"runs": len(runs), "ratio": what, "worst_is": "the lowest" if higher_is_better else "the highest",
            "rows": rows, "targets": verdicts(rows, targets, len(runs))}


def report(section: Mapping[str, Any], prefix: str = "") -> str:
    """What a bench prints last: the across-runs table, then one verdict line per target."""
    lines = [table(section["rows"], section["runs"], section["ratio"], prefix)]
    if section["targets"]:
        lines += ["", "targets (from the worst of the runs):"]
        lines += [verdict_line(v, prefix) for v in section["targets"]]
    return "\n".join(lines)
