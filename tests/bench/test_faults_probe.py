"""bench/faults.py counts honestly: a survived fault, a wrong answer, an untyped or wordless error, a
crashed or hung class are each counted as what they are (fake faults, no device needed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import faults  # noqa: E402
from faults import NotSurvived, Tally, expect_close, expect_error  # noqa: E402


def _raise(exc):
    def fn():
        raise exc
    return fn


def test_each_outcome_is_counted_as_what_it_is(tmp_path):
    t = Tally("fake", tmp_path / "log.jsonl")
    assert t.trial("typed error naming the problem", lambda: expect_error(
        _raise(IndexError("embedding: id 12 is outside")), IndexError, "id 12"))
    assert t.trial("right answer", lambda: expect_close(np.ones(3), np.ones(3)))
    assert not t.trial("zeros instead of ones", lambda: expect_close(np.zeros(3), np.ones(3)))
    assert not t.trial("NaN instead of a number", lambda: expect_close([np.nan], [1.0]))
    assert not t.trial("no error", lambda: expect_error(lambda: 5, ValueError))
    assert not t.trial("the wrong type", lambda: expect_error(_raise(KeyError("x")), ValueError))
    assert not t.trial("the right type naming nothing", lambda: expect_error(_raise(ValueError("bad")), ValueError,
                                                                             "num_heads"))
    assert not t.trial("an untyped crash inside", _raise(ZeroDivisionError("division by zero")))
    assert not t.trial("a declared failure", _raise(NotSurvived("zero rows")))
    rows = faults.summarise(t, 0.0)
    assert (rows["tried"], rows["survived"]) == (9, 2)
    assert "zeros" in rows["example"] and len((tmp_path / "log.jsonl").read_text().splitlines()) == 9
    assert "| fake | 9 | 2 |" in faults.table([rows])


def test_a_slow_trial_is_a_hang(monkeypatch):
    monkeypatch.setattr(faults, "SLOW_S", 0.01)
    t = Tally("fake")
    assert not t.trial("slow", lambda: time.sleep(0.05) or "fine")
    assert "hang" in t.rows[0]["happened"]


# Fake classes for the child runner (called as _fault_*.py functions are: tally, rng, quick).
def fake_crashing(t, rng, quick):
    t.trial("survived before the crash", lambda: "fine")
    os.abort()


def fake_hanging(t, rng, quick):
    t.trial("survived before the hang", lambda: "fine")
    time.sleep(60)


def fake_clean(t, rng, quick):
    t.trial("a seeded choice", lambda: f"drew {int(rng.integers(0, 10**6))}")


@pytest.mark.parametrize("fn,timeout,words", [("fake_crashing", 60, "crashed (exit"), ("fake_hanging", 3, "hung")])
def test_a_crashed_or_hung_class_counts_against_itself(fn, timeout, words):
    r = faults.run_isolated("fake", f"{__file__}:{fn}", 0, True, timeout_s=timeout)
    assert (r["tried"], r["survived"]) == (2, 1), r
    assert words in r["not_survived"][0]["happened"]


def test_a_clean_class_is_all_survived_and_seeded():
    a, b = (faults.run_isolated("fake", f"{__file__}:fake_clean", 7, True) for _ in range(2))
    assert (a["tried"], a["survived"]) == (1, 1) and a["trials"] == b["trials"]
