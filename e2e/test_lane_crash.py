"""A lane whose page the browser loses while it runs (its renderer process dies: Chromium's, once in CI mid-run) fails
that call with PageCrashed, and the lane's next use gets a fresh page that works; the reports say so. Here a real
Chromium renderer is made to crash (chrome://crash), in a lane of this test's own, so no lane of the matrix is
touched. The pool's bookkeeping with fakes: tests/testing/test_testing_lanes.py."""

from __future__ import annotations

import contextlib

import pytest
from gpuport.testing.browsers import PlaywrightError
from gpuport.testing.pages import LanePool, PageCrashed, PageSpec
from gpuport.testing.results import lane_facts

LANE = "lost-page"


def test_a_page_the_browser_lost_fails_its_call_and_the_next_use_gets_a_fresh_page(browsers, server_url):
    pool = LanePool(browsers, server_url, {LANE: PageSpec("chromium-webgpu", "?backend=cpu&table=0&precompile=off")})
    try:
        lane = pool.get(LANE)
        assert lane.run("1 + 1") == 2 and lane.crashed is None
        with contextlib.suppress(PlaywrightError):   # the renderer dies under the navigation
            lane.page.goto("chrome://crash")
        with pytest.raises(PageCrashed, match="Target crashed"):
            lane.run("1 + 1")
        assert lane.crashed
        fresh = pool.get(LANE)
        assert fresh is not lane and fresh.run("import gpuport; rt.info()['backend']") == "cpu"
        state = pool.state(LANE)
        assert state.crashes == [lane.crashed.splitlines()[0]] and state.error is None
        assert lane_facts(state)["crashes"] == state.crashes
    finally:
        pool.close()
