"""bench/startup.py's schedule and arithmetic without browsers: a peer's visit that fails is kept with its reason and
the run goes on (its medians over the visits that answered, none: no ratio); gpuport's failing visit fails the run."""

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import startup  # noqa: E402


def _system(ms: float):
    return lambda profile: {"first_ms": ms, "text": "The", "threads": 1, "load_ms": ms / 2}


def _never(profile):
    raise RuntimeError("wllama's first token: no answer in 180 s (the page says \"\")\nCall log: ...")


def test_a_peer_that_never_answers_is_kept_with_why_and_the_run_goes_on():
    said = []
    runs = startup.interleaved({"gpuport": _system(100.0), "wllama": _system(300.0), "wllama, 2 threads": _never}, 3,
                               "gpuport-test-", lambda trial, name, last: said.append((trial, name, last)))
    assert len(said) == 9 and [name for _, name, _ in said[:3]] == ["gpuport", "wllama", "wllama, 2 threads"]
    assert [name for _, name, _ in said[3:6]] == ["wllama", "wllama, 2 threads", "gpuport"]   # each goes first in turn
    failed = runs["wllama, 2 threads"]["warm"]
    assert failed == [{"failed": "wllama's first token: no answer in 180 s (the page says \"\")"}] * 3
    assert startup.median_ms(failed) is None and startup.ratio(100.0, startup.median_ms(failed)) is None
    assert startup.median_ms(runs["wllama"]["cold"], "load_ms") == 150.0
    assert startup.ratio(startup.median_ms(runs["gpuport"]["warm"]), startup.median_ms(runs["wllama"]["warm"])) == 0.33
    assert startup.shown(failed[0]).startswith("failed (wllama's first token") and startup.shown({"first_ms": 9.4}) == "9 ms"
    assert (startup.ms(None), startup.times(None), startup.ms(1234.4).strip(), startup.times(0.914)) == \
        ("no answer", "-", "1234", "0.91")


def test_gpuports_own_failure_fails_the_run():
    with pytest.raises(RuntimeError, match="no answer in 180 s"):
        startup.interleaved({"gpuport": _never, "wllama": _system(1.0)}, 1, "gpuport-test-", lambda *a: None)


def test_medians_count_only_the_visits_that_answered():
    assert startup.median_ms([{"first_ms": 10.0}, {"failed": "x"}, {"first_ms": 30.0}]) == 20.0
    assert startup.answered([{"failed": "x"}]) == []


def test_wllama_on_two_threads_left_out_is_said_not_run(monkeypatch, capsys):
    """--wllama-two-threads without a browser: that variant is never visited there, and the results, table and chart
    say "not run" (not "no answer", which is a peer that failed)."""
    visited = []

    def visit(p, browser, profile, url, first, src=None):
        visited.append(url)
        if "/test.html" in url:
            return {"first_ms": 100.0, "text": "The", "backend": "cpu", "load_ms": 20.0, "embed_ms": 10.0,
                    "timings": {"pyodide_ms": 30.0, "packages_ms": 10.0, "open_ms": 20.0}}
        return {"first_ms": 300.0, "text": "The", "threads": 1, "load_ms": 150.0}

    monkeypatch.setattr(startup, "visit", visit)
    out = startup.run_llm_browser(None, "firefox", 1, "http://gp", "http://wl", "q", lambda line: None,
                                  two_threads=False)
    assert not any("threads=2" in url for url in visited) and len(visited) == 4, visited
    warm = out["warm"]
    assert warm["not_run"] == ["wllama_2t_ms"] and warm["wllama_2t_ms"] is None and warm["gpuport_over_wllama"] == 0.33
    startup.print_table({"smollm2": {"firefox": out}})
    assert "wllama, 2 threads: not run" in capsys.readouterr().out
