"""bench/_runs.py's arithmetic (every run's ratio, the worst and the median of the runs, the targets' verdicts) and each
comparison bench's per-run ratios it combines (peers.py, page_threads.py, startup.py), without browsers or processes."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import _peers_report as peers_report  # noqa: E402
import _runs as runs  # noqa: E402
import page_threads  # noqa: E402
import peers  # noqa: E402
import startup  # noqa: E402

A = ("chromium", "long256", "gpuport-auto", "tjs best")
B = ("chromium", "short", "gpuport-auto", "tjs-wasm-2t")


def test_worst_is_the_least_favourable_way_round_and_median_takes_the_middle():
    assert runs.worst([1.4, 1.1, None, 1.3], higher_is_better=True) == 1.1
    assert runs.worst([0.6, 0.8, 0.7], higher_is_better=False) == 0.8
    assert runs.worst([None, None], True) is None and runs.median([]) is None
    assert runs.median([1.0, None, 3.0, 2.0]) == 2.0
    assert runs.median([1.0, 2.0]) == 1.5             # an even count: the mean of the middle two


def test_combine_keeps_every_run_and_counts_the_missing_ones():
    three = [{A: {"ratio": 1.31, "peer": "tjs-wasm"}, B: 1.5},
             {A: {"ratio": 1.25, "peer": "tjs-wasm-2t"}},                    # B's system failed in this run
             {A: {"ratio": 1.4, "peer": "tjs-wasm"}, B: 1.7, ("firefox", "short", "gpuport-cpu", "tjs best"): None}]
    rows = runs.combine(three, higher_is_better=True)
    assert [tuple(r[k] for k in ("group", "case", "system", "peer")) for r in rows] == [A, B]   # order first seen
    a, b = rows
    assert a["ratios"] == [1.31, 1.25, 1.4] and a["worst"] == 1.25 and a["median"] == 1.31 and a["missing"] == 0
    assert a["peers"] == ["tjs-wasm", "tjs-wasm-2t", "tjs-wasm"]
    assert runs.peer_shown(a) == "tjs best: tjs-wasm/tjs-wasm-2t" and runs.peer_shown(b) == "tjs-wasm-2t"
    assert b["ratios"] == [1.5, None, 1.7] and b["worst"] == 1.5 and b["median"] == 1.6 and b["missing"] == 1
    assert b["peers"] == ["tjs-wasm-2t", None, "tjs-wasm-2t"]
    lower = runs.combine([{A: 0.7}, {A: 0.9}], higher_is_better=False)
    assert lower[0]["worst"] == 0.9 and lower[0]["median"] == 0.8


def test_the_table_shows_each_run_the_worst_and_the_median():
    rows = runs.combine([{A: {"ratio": 1.31, "peer": "tjs-wasm"}, B: 1.5}, {A: {"ratio": 1.2, "peer": "tjs-wasm"}}],
                        True)
    text = runs.table(rows, 2, "peer / gpuport", prefix="x")
    head, rule, *lines = text.splitlines()[1:]
    assert text.splitlines()[0] == "across 2 runs (peer / gpuport)"
    assert head.split() == ["group", "case", "system", "peer", "run", "1", "run", "2", "worst", "median"]
    assert lines[0].split() == ["chromium", "long256", "gpuport-auto", "tjs", "best:", "tjs-wasm", "x1.31", "x1.20",
                                "x1.20", "x1.25"]
    assert lines[1].split()[-4:] == ["x1.50", "-", "x1.50", "x1.50"]
    assert len(rule) == len(head) and runs.table([], 3, "why").startswith("across 3 runs: no ratios")


def test_verdicts_are_judged_on_the_worst_run():
    rows = runs.combine([{A: 1.31, B: 1.5}, {A: 1.19, B: 1.3}, {A: 1.4}], True)
    targets = [runs.Target(("chromium",), ("long256",), "gpuport-auto", "tjs best", ">=", 1.2, "issue #47"),
               runs.Target(("chromium",), ("long256",), "gpuport-auto", "tjs best", ">=", 1.1),
               runs.Target(("chromium", "firefox"), ("short",), "gpuport-auto", "tjs-wasm-2t", ">=", 1.2)]
    got = runs.verdicts(rows, targets, 3)
    assert [(v["group"], v["verdict"]) for v in got] == [("chromium", "NOT met"), ("chromium", "met"),
                                                         ("chromium", "unproven"), ("firefox", "not measured")]
    lines = [runs.verdict_line(v, "x") for v in got]
    assert lines[0] == "chromium long256 gpuport-auto vs tjs best: worst of 3 runs x1.19 >= 1.2: NOT met"
    assert lines[1] == "chromium long256 gpuport-auto vs tjs best: worst of 3 runs x1.19 >= 1.1: met"
    assert lines[2] == ("chromium short gpuport-auto vs tjs-wasm-2t: worst of the 2 of 3 runs with a ratio x1.30 "
                        ">= 1.2: unproven")
    assert lines[3] == "firefox short gpuport-auto vs tjs-wasm-2t: target >= 1.2: not measured (no run has this ratio)"
    assert got[0]["source"] == "issue #47" and got[0]["median"] == 1.31


def test_a_verdict_line_never_rounds_onto_the_wrong_side_of_the_bound():
    rows = runs.combine([{A: 1.198}], True)
    v = runs.verdicts(rows, [runs.Target(("chromium",), ("long256",), "gpuport-auto", "tjs best", ">=", 1.2)], 1)[0]
    assert v["verdict"] == "NOT met" and "x1.1980 >= 1.2" in runs.verdict_line(v, "x")   # not "x1.20 >= 1.2"
    low = runs.combine([{A: 0.7512}], False)
    v = runs.verdicts(low, [runs.Target(("chromium",), ("long256",), "gpuport-auto", "tjs best", "<=", 0.75)], 1)[0]
    assert v["verdict"] == "NOT met" and "0.7512 <= 0.75" in runs.verdict_line(v)
    with pytest.raises(ValueError, match="'>=' or '<='"):
        runs.Target(("x",), ("y",), "s", "p", ">", 1.0).holds(2.0)


def test_the_across_runs_section_is_json_and_the_report_ends_with_the_verdicts():
    target = runs.Target(("chromium",), ("long256",), "gpuport-auto", "tjs best", ">=", 1.2)
    section = json.loads(json.dumps(runs.across_runs([{A: 1.3}, {A: 1.25}], [target], True, "peer / gpuport")))
    assert section["runs"] == 2 and section["worst_is"] == "the lowest" and section["rows"][0]["worst"] == 1.25
    assert section["targets"][0]["verdict"] == "met"
    text = runs.report(section, "x")
    assert text.startswith("across 2 runs") and text.splitlines()[-1].endswith("x1.25 >= 1.2: met")
    assert "targets" not in runs.report(runs.across_runs([{A: 1.3}], [], True, "r"))


def test_runs_option_defaults_to_three_and_refuses_zero():
    ap = argparse.ArgumentParser()
    runs.add_runs_argument(ap)
    assert ap.parse_args([]).runs == 3 and ap.parse_args(["--runs", "2"]).runs == 2
    with pytest.raises(SystemExit):
        ap.parse_args(["--runs", "0"])


def _rec(ms):
    return {"warmup_ms": 1000.0, "runs_ms": [ms]}


def test_peers_run_ratios_name_the_best_peer_and_the_targets_peers():
    results = {"chromium": {"long256": {"tjs-wasm": _rec(300), "tjs-wasm-2t": _rec(200), "gpuport-auto": _rec(100),
                                        "gpuport-cpu": _rec(400)},
                            "short": {"tjs-wasm": _rec(50), "gpuport-auto": _rec(40)}},   # tjs-wasm-2t failed
               "native": {"short": {"st-1t": _rec(10), "gpuport-cpu-1t": _rec(5)}}}
    got = peers_report.run_ratios(results, peers.TARGET_PAIRS)
    assert got == {("chromium", "long256", "gpuport-auto", "tjs best"): {"ratio": 2.0, "peer": "tjs-wasm-2t"},
                   ("chromium", "long256", "gpuport-auto", "tjs-wasm"): 3.0,
                   ("chromium", "long256", "gpuport-auto", "tjs-wasm-2t"): 2.0,
                   ("chromium", "long256", "gpuport-cpu", "tjs best"): {"ratio": 0.5, "peer": "tjs-wasm-2t"},
                   ("chromium", "short", "gpuport-auto", "tjs best"): {"ratio": 1.25, "peer": "tjs-wasm"},
                   ("chromium", "short", "gpuport-auto", "tjs-wasm"): 1.25,
                   ("native", "short", "gpuport-cpu-1t", "st-1t"): {"ratio": 2.0, "peer": "st-1t"}}


def test_peers_targets_are_issue_47s_every_case_both_browsers_both_tjs_threads():
    assert {(t.system, t.peer, t.op, t.bound) for t in peers.TARGETS} == {
        ("gpuport-auto", "tjs-wasm", ">=", 1.2), ("gpuport-auto", "tjs-wasm-2t", ">=", 1.2)}
    got = runs.verdicts([], peers.TARGETS, 3)
    assert len(got) == 12 and {v["group"] for v in got} == {"chromium", "firefox"}
    assert {v["case"] for v in got} == {"short", "batch8", "long256"}


def _startup_results(gp_warm, tjs_warm):
    visit = {"gpuport_ms": 900.0, "transformers_js_ms": 1000.0, "no_snapshot_ms": 1500.0}
    llm = {"gpuport_ms": 2000.0, "wllama_ms": 4000.0, "wllama_2t_ms": None}
    return {"chromium": {"cold": visit, "warm": dict(visit, gpuport_ms=gp_warm, transformers_js_ms=tjs_warm)},
            "smollm2": {"chromium": {"cold": llm, "warm": llm}},
            "native": {"gpuport": {"first_ms": 300.0}, "sentence_transformers": {"first_ms": 600.0}}}


def test_startup_run_ratios_and_targets_lower_is_better():
    got = startup.run_ratios(_startup_results(700.0, 1000.0))
    assert got[("chromium", "minilm cold", "gpuport", "transformers.js")] == 0.9
    assert got[("chromium", "minilm warm", "gpuport", "transformers.js")] == 0.7
    assert got[("chromium", "minilm cold", "gpuport, no snapshot", "transformers.js")] == 1.5
    assert got[("chromium", "smollm2 warm", "gpuport", "wllama")] == 0.5
    assert got[("chromium", "smollm2 warm", "gpuport", "wllama, 2 threads")] is None      # not run: no ratio
    assert got[("native", "minilm", "gpuport", "sentence-transformers")] == 0.5
    section = runs.across_runs([got, startup.run_ratios(_startup_results(760.0, 1000.0))], startup.TARGETS, False,
                               startup.RATIO)
    by = {(v["group"], v["case"]): v for v in section["targets"]}
    assert by["chromium", "minilm warm"]["worst"] == 0.76 and by["chromium", "minilm warm"]["verdict"] == "NOT met"
    assert by["chromium", "minilm cold"]["verdict"] == "met" and by["firefox", "minilm cold"]["verdict"] == "not measured"
    assert not any(r["peer"] == "wllama, 2 threads" for r in section["rows"])


def test_page_threads_run_ratios_compare_each_configuration_with_its_peer():
    med = {"pool, 2 threads": {"short_s": 1.0, "embed_s": 2.0, "forward_s": 1.0, "decode_step_s": 0.5},
           "pool, 1 thread": {"short_s": 1.5, "embed_s": 3.0, "forward_s": 2.0, "decode_step_s": 0.8},
           "one-thread build": {"short_s": 1.2, "embed_s": 3.2, "forward_s": 1.8, "decode_step_s": 0.6}}
    got = page_threads.run_ratios({"firefox": {"medians": med}})
    assert len(got) == 12
    assert got[("firefox", "forward_256", "pool, 2 threads", "pool, 1 thread")] == 2.0
    assert got[("firefox", "decode_step", "pool, 2 threads", "one-thread build")] == 1.2
    assert got[("firefox", "embed_short", "pool, 1 thread", "one-thread build")] == 0.8
    assert page_threads.ratios(med, "pool, 2 threads", "pool, 1 thread")["embed_256"] == 1.5
