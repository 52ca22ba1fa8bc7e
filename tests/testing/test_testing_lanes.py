"""LanePool (gpuport.testing.pages): a lane whose page's renderer crashed, or whose Pyodide worker froze, while it
started is started once more and says so; any other failure, or a second crash, fails the lane with its reason. Fakes stand in for the browsers; real
pages: the e2e lanes."""

from __future__ import annotations

import pytest

from gpuport.testing import pages
from gpuport.testing.results import lane_facts


class FakeBrowsers:
    versions: dict[str, str] = {}

    def get(self, kind, remote=None):
        return object()


def _pool(monkeypatch, failures: list[Exception]) -> tuple[pages.LanePool, list[str]]:
    """A pool of one lane whose pages fail with `failures` in turn, then start."""
    started: list[str] = []

    class FakeLane(pages.Lane):
        def __init__(self, state, browser, url):
            started.append(url)
            if failures:
                raise failures.pop(0)
            self.state, self.name, self.startup, self.mode, self.info, self.navigator = state, state.name, {}, "w", {}, {}

    monkeypatch.setattr(pages, "PlaywrightLane", FakeLane)
    spec = pages.PageSpec("chromium", "test.html?tier=constrained")
    return pages.LanePool(FakeBrowsers(), "http://127.0.0.1:1/", {"chromium-tier-constrained": spec}), started


def test_a_page_whose_renderer_crashed_as_it_started_is_started_once_more(monkeypatch):
    pool, started = _pool(monkeypatch, [pages.PageError("Page.evaluate: Target crashed")])
    lane = pool.get("chromium-tier-constrained")
    assert len(started) == 2 and lane.name == "chromium-tier-constrained"
    state = pool.state("chromium-tier-constrained")
    assert state.error is None and state.restarted == "PageError: Page.evaluate: Target crashed"
    assert lane_facts(state)["restarted"] == state.restarted   # what the reports print


# what each page says of a worker that froze: a bare Pyodide's (web/pyodide.html), gpuport.js's start() (the test
# page's, the demo's, a user's page through the plugin: a WebKit lane's worker, silent for 31 s in a loaded run)
FROZEN = ["the Pyodide worker stopped answering for 30 s while opening gpuport: its thread is blocked (ended)",
          "gpuport's Pyodide worker stopped answering for 31 s in its pyodide stage: its thread is blocked (ended)"]


@pytest.mark.parametrize("said", FROZEN)
def test_a_page_whose_pyodide_worker_froze_as_it_started_is_started_once_more(monkeypatch, said):
    frozen = pages.LaneError(f"the page did not start gpuport: Page.evaluate: WorkerFrozen: {said}")
    pool, started = _pool(monkeypatch, [frozen])
    pool.get("chromium-tier-constrained")
    assert len(started) == 2
    assert pool.state("chromium-tier-constrained").restarted == f"LaneError: {frozen}"


def test_a_second_crash_or_any_other_failure_fails_the_lane(monkeypatch):
    pool, started = _pool(monkeypatch, [pages.PageError("Target crashed"), pages.PageError("Page crashed")])
    with pytest.raises(pages.LaneError, match="could not start: PageError: Page crashed"):
        pool.get("chromium-tier-constrained")
    assert len(started) == 2
    with pytest.raises(pages.LaneError, match="Page crashed"):   # and stays failed, without a third try
        pool.get("chromium-tier-constrained")
    assert len(started) == 2
    other, started = _pool(monkeypatch, [pages.LaneError("the page did not start gpuport: no answer")])
    with pytest.raises(pages.LaneError, match="no answer"):
        other.get("chromium-tier-constrained")
    assert len(started) == 1 and other.state("chromium-tier-constrained").restarted is None
