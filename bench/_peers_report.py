"""bench/peers.py's arithmetic and output, kept free of browsers and subprocesses (tests/bench/test_bench_peers.py).

Results are `{lane: {case: {system: {"warmup_ms": float, "runs_ms": [float, ...]}}}}`. A system name starts
with "gpuport-" for gpuport and anything else for a peer; native names end in "-<n>t" (threads). A ratio is
peer median / gpuport median, so >= 1.0 means gpuport is faster. In a page the peer is transformers.js at its
best for that case (the lowest median among its devices); natively, sentence-transformers at the same number
of threads. `run_ratios` turns one run's results into bench/_runs.py's entries, which combine the runs.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Iterable, Mapping

from _runs import Entry, Key

CASES = {"short": "1 sentence", "batch8": "8 sentences", "long256": "256 tokens"}
MIN_COSINE = 0.9999

LABELS = {
    "tjs-wasm": "transformers.js wasm",
    "tjs-webgpu": "transformers.js webgpu",
    "st": "sentence-transformers (torch)",
    "gpuport-auto": "gpuport auto (default)",
    "gpuport-cpu": "gpuport cpu",
    "gpuport-webgpu": "gpuport webgpu",
}

Results = Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]
BEST_TJS = "tjs best"      # a page's peer label: transformers.js's fastest device in that case and run
# what a ratio is, said beside the across-runs table and in the JSON
RATIO = ("peer median / gpuport median, >= 1.0: gpuport faster, the worst run is the lowest; peer: "
         f"'{BEST_TJS}' is transformers.js's fastest device that run, st-<n>t sentence-transformers on n threads")


def threads(system: str) -> int | None:
    """The thread count in a native system's name ("st-2t" -> 2), None in a page."""
    m = re.search(r"-(\d+)t$", system)
    return int(m.group(1)) if m else None


def label(system: str) -> str:
    n = threads(system)
    base = re.sub(r"-\d+t$", "", system)
    text = LABELS.get(base, base)
    return f"{text}, {n} thread{'s' if n != 1 else ''}" if n is not None else text


def is_gpuport(system: str) -> bool:
    return system.startswith("gpuport-")


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    if not xs:
        raise ValueError("median of no repetitions")
    return float(statistics.median(xs))


def medians(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    """{lane: {case: {system: median ms}}} over the timed repetitions (warm-ups excluded)."""
    return {lane: {case: {s: median(r["runs_ms"]) for s, r in systems.items() if r.get("runs_ms")}
                   for case, systems in cases.items()} for lane, cases in results.items()}


def peer_for(system: str, case_medians: Mapping[str, float]) -> str | None:
    """The peer a gpuport system is compared with in one case: transformers.js's fastest device in a page,
    sentence-transformers at the same threads natively; None when that peer was not measured."""
    n = threads(system)
    if n is not None:
        peer = f"st-{n}t"
        return peer if peer in case_medians else None
    peers = [s for s in case_medians if s.startswith("tjs-")]
    return min(peers, key=case_medians.__getitem__) if peers else None


def ratios(results: Results) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{lane: {gpuport system: {case: {"peer": name, "ratio": peer / gpuport}}}}."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for lane, cases in medians(results).items():
        for case, meds in cases.items():
            for system, ms in meds.items():
                if not is_gpuport(system):
                    continue
                peer = peer_for(system, meds)
                if peer is None:
                    continue
                out.setdefault(lane, {}).setdefault(system, {})[case] = {
                    "peer": peer, "ratio": round(meds[peer] / ms, 4)}
    return out


def run_ratios(results: Results, pairs: Iterable[tuple[str, str]] = ()) -> dict[Key, Entry]:
    """One run's ratios for bench/_runs.py, lane by lane and case by case: every gpuport system against its peer
    (`peer_for`; in a page labelled BEST_TJS with the device it was that run), then each (gpuport system, named
    peer) of `pairs` (what the targets name, e.g. ("gpuport-auto", "tjs-wasm-2t")) where both were measured."""
    pairs = list(pairs)
    out: dict[Key, Entry] = {}
    for lane, cases in medians(results).items():
        for case, meds in cases.items():
            for system, ms in meds.items():
                if not is_gpuport(system):
                    continue
                peer = peer_for(system, meds)
                if peer is not None:
                    label = peer if threads(system) is not None else BEST_TJS
                    out[(lane, case, system, label)] = {"ratio": round(meds[peer] / ms, 4), "peer": peer}
                for named in (p for s, p in pairs if s == system and p in meds):
                    out[(lane, case, system, named)] = round(meds[named] / ms, 4)
    return out


def cosine_min(a: list[list[float]], b: list[list[float]]) -> float:
    """The lowest cosine between matching rows of two embedding matrices (same shape)."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError(f"embedding shapes differ: {len(a)} rows vs {len(b)} rows")
    worst = 1.0
    for x, y in zip(a, b):
        dot = sum(p * q for p, q in zip(x, y))
        nx = sum(p * p for p in x) ** 0.5
        ny = sum(q * q for q in y) ** 0.5
        worst = min(worst, dot / (nx * ny))
    return worst


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def table(results: Results, cosines: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> str:
    """The printed table: per lane and system the median ms per case; for gpuport systems the ratio to
    their peer in brackets (x >= 1.0: gpuport faster), and the lowest cosine vs sentence-transformers."""
    meds, rat = medians(results), ratios(results)
    head = f"{'lane':9} {'system':42}" + "".join(f"{v:>20}" for v in CASES.values()) + "   min cosine"
    lines = [head, "-" * len(head)]
    for lane, cases in meds.items():
        systems = list(dict.fromkeys(s for c in cases.values() for s in c))
        for system in sorted(systems, key=lambda s: (threads(s) or 0, is_gpuport(s))):
            row = f"{lane:9} {label(system):42}"
            for case in CASES:
                ms = cases.get(case, {}).get(system)
                cell = "-" if ms is None else fmt_ms(ms)
                r = rat.get(lane, {}).get(system, {}).get(case)
                if r is not None:
                    cell += f" (x{r['ratio']:.2f})"
                row += f"{cell:>20}"
            cos = (cosines or {}).get(lane, {}).get(system)
            if cos:
                worst = min(cos.values())
                row += f"   {worst:.6f}{'' if worst >= MIN_COSINE else ' LOW'}"
            lines.append(row)
    lines.append("(x r): peer median / gpuport median; peer = transformers.js's best device in a page, "
                 "sentence-transformers at the same threads natively; >= 1.0 means gpuport is faster")
    return "\n".join(lines)


def summary(results: Results, cosines: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document: metadata, raw repetitions, medians, ratios and cosines."""
    return {**meta, "cases": CASES, "results": results, "median_ms": medians(results), "ratios": ratios(results),
            "cosine_vs_sentence_transformers": cosines, "min_cosine_required": MIN_COSINE}
