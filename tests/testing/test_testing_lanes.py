"""LanePool (gpuport.testing.pages): a lane whose page's renderer crashed, or whose Pyodide worker froze, while it
started is started once more and says so; any other failure, or a second crash, fails the lane with its reason. A page
the browser loses while it runs a test gets a fresh one at the lane's next use. Fakes stand in for the browsers; real
pages: the e2e lanes (e2e/test_lane_crash.py loses a real Chromium page)."""

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

        def call(self, method, *args):   # what a page that says `said` makes of it (PlaywrightLane.call)
            raise self._failed(args[0])

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


def test_a_page_lost_while_it_ran_fails_that_call_and_the_next_use_gets_a_fresh_page(monkeypatch):
    pool, started = _pool(monkeypatch, [])
    lane = pool.get("chromium-tier-constrained")
    with pytest.raises(pages.PageError) as raised:   # the page's own error: the page stays
        lane.run("ValueError: shape (3,) is not (4,)")
    assert type(raised.value) is pages.PageError and lane.crashed is None
    assert pool.get("chromium-tier-constrained") is lane and len(started) == 1
    with pytest.raises(pages.PageCrashed, match="Target crashed"):
        lane.run("Page.evaluate: Target crashed\npage errors: []")
    fresh = pool.get("chromium-tier-constrained")
    assert fresh is not lane and len(started) == 2
    state = pool.state("chromium-tier-constrained")
    assert state.crashes == ["Page.evaluate: Target crashed"] and state.error is None
    assert lane_facts(state)["crashes"] == state.crashes and state.restarted is None


def test_a_lane_that_keeps_losing_its_page_fails(monkeypatch):
    pool, started = _pool(monkeypatch, [])
    for _ in range(pages._MAX_CRASHES):
        with pytest.raises(pages.PageCrashed):
            pool.get("chromium-tier-constrained").run("Page.evaluate: Target crashed")
    lane = pool.get("chromium-tier-constrained")
    assert len(started) == pages._MAX_CRASHES + 1
    lane.crashed = "Page crashed"   # Playwright's "crash" event, seen by a test that drove lane.page itself
    with pytest.raises(pages.LaneError, match="lost its page 3 times"):
        pool.get("chromium-tier-constrained")
    assert len(started) == pages._MAX_CRASHES + 1
