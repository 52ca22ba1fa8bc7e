"""e2e lanes: real browsers, the dev server, and one loaded page per lane shared by the whole session.

The machinery is gpuport's own pytest plugin (gpuport.testing: the browsers' launch recipes, one browser
per kind per session, one loaded page per lane, Python run in it). This file adds what is particular to
gpuport's suite: its lanes (e2e_matrix.LANES: the demo page with a query string, on the dev server), the
test bodies of tests/cases.py installed in each page, and the compatibility report (e2e_report.py) written
at session end to e2e/report/compatibility.{json,md}. A missing browser or a page that fails to start fails
that lane's tests with the reason; nothing is skipped.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import pytest
from gpuport.testing.browsers import Browsers, LaneError
from gpuport.testing.pages import Lane, LanePool
from gpuport.testing.plugin import rerun_on_crash

ROOT = Path(__file__).resolve().parents[1]
CASES_SOURCE = (ROOT / "tests" / "cases.py").read_text(encoding="utf-8")
PROPERTIES_SOURCE = (ROOT / "tests" / "properties.py").read_text(encoding="utf-8")
XP_CASES_SOURCE = (ROOT / "tests" / "xp_cases.py").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "tests"))
from crash_log import enable as enable_crash_log  # noqa: E402
from e2e_matrix import LANES  # noqa: E402
from e2e_report import record, terminal_summary, write_report  # noqa: E402
from e2e_serve import served  # noqa: E402

# Loads the plugin where its entry point is not installed yet (a checkout); a no-op where it is.
# The coverage matrix (tests/coverage_plugin.py): the parity tests' proofs, checked with --require-coverage.
pytest_plugins = ["gpuport.testing.plugin", "coverage_plugin"]


# -- the dev server ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def server_url() -> str:
    """The real dev server (uvicorn) on a free loopback port, for the whole session."""
    from gpuport.site.server import create_app

    yield from served(create_app(), "the gpuport dev server")


# -- lanes ------------------------------------------------------------------------------------------

_POOLS: list[LanePool] = []
_BROWSERS: list[Browsers] = []


@pytest.fixture(scope="session")
def browsers(gp_browsers):
    """The plugin's browsers: one per kind for the session, shared with @pytest.mark.gpuport lanes."""
    _BROWSERS.append(gp_browsers)
    return gp_browsers


def _install_cases(lane: Lane) -> None:
    """tests/cases.py as the page's `cases` module (and global): the bodies test_page.py runs there; it
    imports tests/properties.py, installed first; tests/xp_cases.py adds gpuport.xp's cases to its CASES."""
    lane.add_module("properties", PROPERTIES_SOURCE, "tests/properties.py")
    lane.add_module("cases", CASES_SOURCE, "tests/cases.py")
    lane.add_module("xp_cases", XP_CASES_SOURCE, "tests/xp_cases.py")
    lane.run("import cases, xp_cases")


@pytest.fixture(scope="session")
def _lane_pool(browsers, server_url):
    pool = LanePool(browsers, server_url, {name: spec.page_spec for name, spec in LANES.items()}, _install_cases)
    _POOLS.append(pool)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def lane_factory(_lane_pool):
    """`lane_factory(name)` -> the lane's loaded page; a lane that cannot start fails the test."""
    def get(name: str) -> Lane:
        try:
            return _lane_pool.get(name)
        except LaneError as exc:
            reason = str(exc)
        pytest.fail(reason, pytrace=False)  # outside the except: no "during handling" echo
    return get


@pytest.fixture(scope="session")
def chromium_webgpu(browsers):
    """Debian's Chromium with WebGPU on SwiftShader."""
    try:
        return browsers.get("chromium-webgpu")
    except LaneError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


# -- outcomes and the compatibility report ----------------------------------------------------------

_ITEM_LANE: dict[str, tuple[str, str | None]] = {}


@pytest.hookimpl(trylast=True)   # crash_log.enable: after pytest's own faulthandler
def pytest_configure(config):
    os.environ.setdefault("PW_TEST_SCREENSHOT_NO_FONTS_READY", "1")
    # one file per process of `make test` (its JUnit XML names it: test-e2e.xml -> crash-e2e.txt)
    junit = Path(config.getoption("xmlpath") or "test-e2e.xml")
    enable_crash_log(f"crash-{junit.stem.removeprefix('test-')}.txt")


# lane -> the node id of the last collected test that uses its page: the page is closed after that test
_LAST_USER: dict[str, str] = {}


def _lanes_used(item) -> set[str]:
    """The lanes a test uses: its `lane` parameter, or the lanes its function names (lane_factory("...") calls)."""
    callspec = getattr(item, "callspec", None)
    if callspec and callspec.params.get("lane") in LANES:
        return {callspec.params["lane"]}
    try:
        source = inspect.getsource(item.function)
    except (OSError, TypeError):
        return set(LANES)   # unknown: as if it used them all, so no page closes before it
    return {name for name in LANES if f'"{name}"' in source or f"'{name}'" in source}


def pytest_collection_modifyitems(session, config, items):
    """Note each item's lane and case, and run each lane's tests back to back (detection first), so a
    lane's wall time means something and its page is busy only while its tests run; note each lane's last user;
    a test that uses a lane runs once more if the browser loses the page during it (rerun_on_crash)."""
    slots, lane_items = [], []
    order = {name: i for i, name in enumerate(LANES)}
    for i, item in enumerate(items):
        callspec = getattr(item, "callspec", None)
        if callspec and callspec.params.get("lane") in LANES:
            _ITEM_LANE[item.nodeid] = (callspec.params["lane"], callspec.params.get("case"))
            slots.append(i)
            lane_items.append(item)
    lane_items.sort(key=lambda it: order[_ITEM_LANE[it.nodeid][0]])  # stable: detection, then the cases
    for i, item in zip(slots, lane_items):
        items[i] = item
    crash_marks = rerun_on_crash(config)
    for item in items:
        used = _lanes_used(item)
        for lane in used:
            _LAST_USER[lane] = item.nodeid
        if used:
            for mark in crash_marks:
                item.add_marker(mark)


def pytest_runtest_teardown(item, nextitem):
    """A lane's page is closed after its last test: an idle page's background work and memory leave the rest."""
    if _POOLS:
        for lane, last in _LAST_USER.items():
            if last == item.nodeid:
                _POOLS[-1].close_lane(lane)


def pytest_runtest_logreport(report):
    where = _ITEM_LANE.get(report.nodeid)
    if where is not None and _POOLS:
        lane, case = where
        record(_POOLS[-1].state(lane), case, report)


def pytest_sessionfinish(session, exitstatus):
    if _POOLS:
        write_report(_POOLS[-1].states, _BROWSERS[-1] if _BROWSERS else None)


def pytest_terminal_summary(terminalreporter):
    if _POOLS:
        terminal_summary(terminalreporter, _POOLS[-1].states, _BROWSERS[-1] if _BROWSERS else None)
