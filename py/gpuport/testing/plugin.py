"""gpuport's pytest plugin (entry point `pytest11`: gpuport.testing.plugin).

    @pytest.mark.gpuport
    async def test_scale(gp_runtime):          # sync tests work too
        x = gp_runtime.tensor(np.arange(4, dtype=np.float32))
        assert (await gp_runtime.ops.scale(x, 2.0, 1.0).read()).tolist() == [1, 3, 5, 7]

runs natively and in each lane of `--gpuport-lanes` (native, chromium, firefox, webkit, chromium-cpu; by
default native plus every lane whose browser is installed); ids end in `[lane]`. In a browser lane the test
module's source runs in a loaded page (its plain asserts rewritten to show their operands), the user's
project (pytest's rootdir, if it is a Python project) is installed there from its wheel, and the test runs
with `gp_runtime` being that page's runtime. A failure there is FAILED with the page's traceback and the
lane; a lane that cannot start is an ERROR naming the browser and what is missing, never a skip.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..runtime import Runtime
from ..runtime import open as open_runtime
from . import inpage
from .browsers import Browsers, LaneError, missing, sync_playwright
from .pages import Lane, LanePool, PageError, PageSpec
from .site import StaticServer, build_lane_site, build_project_wheel, project_of

NATIVE = "native"
# The lanes a user chooses from: a browser kind and the options its page starts gpuport with.
LANES: dict[str, PageSpec] = {
    "chromium": PageSpec("chromium-webgpu", "test.html"),
    "firefox": PageSpec("firefox", "test.html"),
    "webkit": PageSpec("webkit", "test.html"),
    "chromium-cpu": PageSpec("chromium-webgpu", "test.html?backend=cpu"),
}
ALL_LANES = (NATIVE, *LANES)

_LANES_KEY = pytest.StashKey[list]()
_RUNNER_KEY = pytest.StashKey[Any]()
_SUMMARY_KEY = pytest.StashKey["LaneSummary"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpuport", "gpuport: @pytest.mark.gpuport tests natively and in browser lanes")
    group.addoption("--gpuport-lanes", default=None, metavar="LANES",
                    help="comma-separated lanes for @pytest.mark.gpuport tests, of " + ",".join(ALL_LANES)
                         + " (default: native plus every lane whose browser is installed)")
    group.addoption("--gpuport-url", default=None, metavar="URL",
                    help="load the lanes' pages from this gpuport site (a `gpuport export` being served, or "
                         "`gpuport serve`) instead of the plugin's own static server")


def default_lanes() -> tuple[list[str], dict[str, str]]:
    """Native plus each lane whose browser (and driver package) is installed; and why the others are not."""
    absent = {lane: reason for lane, spec in LANES.items() if (reason := missing(spec.browser))}
    return [NATIVE] + [lane for lane in LANES if lane not in absent], absent


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUMMARY_KEY] = summary = LaneSummary()
    config.pluginmanager.register(summary, "gpuport-lane-summary")
    config.addinivalue_line("markers", "gpuport: run the test natively and in every browser lane "
                                       "(--gpuport-lanes); it takes the gp_runtime fixture")
    # selenium's own WebKitGTK driver trips its own deprecation; nothing of the user's
    config.addinivalue_line("filterwarnings", "ignore:setting remote_server_addr:DeprecationWarning")
    option = config.getoption("--gpuport-lanes")
    if option is None:
        lanes = default_lanes()[0]
    else:
        lanes = [lane.strip() for lane in option.split(",") if lane.strip()]
        unknown = [lane for lane in lanes if lane not in ALL_LANES]
        if unknown or not lanes:
            raise pytest.UsageError(f"--gpuport-lanes: unknown lane(s) {unknown or option!r}; "
                                    f"choose from {', '.join(ALL_LANES)}")
    config.stash[_LANES_KEY] = lanes


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"gpuport lanes: {', '.join(config.stash[_LANES_KEY])}"]
    if config.getoption("--gpuport-lanes") is None:
        lines += [f"gpuport lane {lane} not run: {reason}" for lane, reason in default_lanes()[1].items()]
    return lines


@pytest.hookimpl(trylast=True)  # after the marks' own parametrize: ids end in [lane]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("gpuport") is None:
        return
    if "gp_runtime" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: a @pytest.mark.gpuport test takes the gp_runtime "
                                "fixture (the runtime of the lane it runs in)")
    lanes = metafunc.config.stash[_LANES_KEY]
    metafunc.parametrize("gp_lane", lanes, ids=lanes, indirect=True)


# -- fixtures ---------------------------------------------------------------------------------------------

class NativeRunner:
    """The native lane: one runtime for the session, and an event loop in a thread of its own for async
    tests (the sync Playwright API keeps a loop running on the main thread, where asyncio.run refuses)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gpuport-native-lane", daemon=True)
        self.thread.start()
        self.runtime: Runtime = self.run(open_runtime())

    def run(self, awaitable: Any) -> Any:
        __tracebackhide__ = True
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()

    def close(self) -> None:
        try:
            self.runtime.close()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


class UserSite:
    """What the plugin's lanes load, served by one loopback server (with CORS: pages of `--gpuport-url` may
    live on another origin): `site/` (this checkout's export) and `project/` (the user's wheel)."""

    def __init__(self, config: pytest.Config) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpuport-lanes-"))
        self.server = StaticServer(self.dir, cors=True)
        self.given_url = config.getoption("--gpuport-url")
        self.rootpath = config.rootpath
        self._wheel_url: str | None = None

    def site_url(self) -> str:
        if self.given_url:
            return self.given_url
        build_lane_site(self.dir / "site")
        return self.server.url + "site/"

    def wheel_url(self) -> str | None:
        """The user's project built as a wheel (once), or None where the rootdir is no project (or gpuport)."""
        if self._wheel_url is None:
            project = project_of(self.rootpath)
            if project is None or project[0] == "gpuport":  # gpuport itself is in every page already
                self._wheel_url = ""
            else:
                wheel = build_project_wheel(project[1], self.dir / "project")
                self._wheel_url = f"{self.server.url}project/{wheel.name}"
        return self._wheel_url or None

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def gp_browsers(request: pytest.FixtureRequest) -> Iterator[Browsers]:
    """One browser per kind for the session, shared by every lane (pytest-playwright's Playwright if loaded)."""
    shared = (request.getfixturevalue("playwright")
              if sync_playwright is not None and request.config.pluginmanager.hasplugin("playwright") else None)
    pool = Browsers(shared)
    request.config.stash[_SUMMARY_KEY].browsers.append(pool)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def gp_native() -> Iterator[NativeRunner]:
    """The native lane's runtime and event loop."""
    runner = NativeRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def gp_lanes(request: pytest.FixtureRequest, gp_browsers: Browsers) -> Iterator[LanePool]:
    """The browser lanes (LANES), each page loaded once, with the user's wheel installed."""
    site = UserSite(request.config)

    def on_start(lane: Lane) -> None:
        try:
            wheel = site.wheel_url()
        except Exception as exc:  # LoadError from pip, OSError: the lane cannot have the user's code
            raise LaneError(str(exc)) from exc
        if wheel:
            lane.call("installWheel", wheel)

    pool = LanePool(gp_browsers, site.site_url, LANES, on_start)
    request.config.stash[_SUMMARY_KEY].pools.append(pool)
    yield pool
    pool.close()
    site.close()


@pytest.fixture
def gp_lane(request: pytest.FixtureRequest) -> str:
    """The lane this test runs in ("native", "chromium", ...): set by @pytest.mark.gpuport."""
    if not hasattr(request, "param"):
        pytest.fail("gp_lane is set by @pytest.mark.gpuport: mark the test", pytrace=False)
    request.node.user_properties.append(("gpuport_lane", request.param))
    return request.param


@pytest.fixture
def gp_runtime(request: pytest.FixtureRequest, gp_lane: str) -> Any:
    """The runtime of the lane: natively an open gpuport Runtime; in a browser lane the lane's page, whose
    runtime the test body gets when it runs there."""
    if gp_lane == NATIVE:
        runner = request.getfixturevalue("gp_native")
        request.node.stash[_RUNNER_KEY] = runner
        return runner.runtime
    try:
        lane = request.getfixturevalue("gp_lanes").get(gp_lane)
    except LaneError as exc:
        reason = str(exc)
    else:
        request.node.stash[_RUNNER_KEY] = lane
        return lane
    pytest.fail(reason, pytrace=False)  # outside the except: no "during handling" echo


# -- running a test ---------------------------------------------------------------------------------------

def _describe(lane: Lane) -> str:
    info = lane.info or {}
    thread = "a Web Worker" if lane.mode == "worker" else "the main thread"
    return f"backend {info.get('backend')}, tier {info.get('tier')}, Pyodide in {thread}"


def _arguments(item: pytest.Function) -> dict[str, Any]:
    """The test function's own arguments (fixture values and parameters), as pytest would pass them."""
    return {name: item.funcargs[name] for name in inspect.signature(item.obj).parameters if name in item.funcargs}


def _run_in_page(item: pytest.Function, lane: Lane) -> None:
    __tracebackhide__ = True
    module = item.module
    if module.__name__ not in lane.modules:
        source = Path(module.__file__).read_text(encoding="utf-8")
        try:
            lane.add_module(module.__name__, source, module.__file__)
        except PageError as exc:
            pytest.fail(f"[{lane.name}] the test module did not import in the page:\n{exc}", pytrace=False)
    args = {name: value for name, value in _arguments(item).items() if name != "gp_runtime"}
    try:
        encoded = inpage.encode_args(args)
    except TypeError as exc:
        pytest.fail(f"[{lane.name}] {exc}", pytrace=False)
    try:
        result = json.loads(lane.run("from gpuport.testing import inpage as _gp_inpage\n"
                                     f"await _gp_inpage.run_test({module.__name__!r}, "
                                     f"{item.function.__qualname__!r}, {encoded!r}, rt)"))
    except PageError as exc:
        pytest.fail(f"[{lane.name}] the page failed while running the test: {exc}", pytrace=False)
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    if result["outcome"] == "skipped":
        pytest.skip(f"[{lane.name}] {result['message']}")
    if result["outcome"] == "failed":
        pytest.fail(f"[{lane.name}] failed in the page ({_describe(lane)}):\n{result['traceback'].rstrip()}",
                    pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a gpuport test in its lane: natively (async ones on the native lane's loop) or in the page."""
    __tracebackhide__ = True
    runner = pyfuncitem.stash.get(_RUNNER_KEY, None)
    if runner is None:
        return None
    if isinstance(runner, NativeRunner):
        args = _arguments(pyfuncitem)
        if inspect.iscoroutinefunction(pyfuncitem.obj):
            runner.run(pyfuncitem.obj(**args))
        else:
            pyfuncitem.obj(**args)
        return True
    _run_in_page(pyfuncitem, runner)
    return True


# -- the lanes' summary -----------------------------------------------------------------------------------

class LaneSummary:
    """Counts outcomes per lane and says, after the run, how each lane went (and why one did not start)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}
        self.pools: list[LanePool] = []
        self.browsers: list[Browsers] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        lane = dict(report.user_properties).get("gpuport_lane")
        if lane is None or (report.when != "call" and report.passed):
            return
        outcome = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
        self.counts.setdefault(lane, Counter())[outcome] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.counts:
            return
        states = {name: state for pool in self.pools for name, state in pool.states.items()}
        versions = {k: v for b in self.browsers for k, v in b.versions.items()}
        terminalreporter.section("gpuport lanes")
        for lane in [lane for lane in ALL_LANES if lane in self.counts]:
            counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts[lane].items()))
            state = states.get(lane)
            if state is None:
                terminalreporter.write_line(f"{lane:13} {counts}")
                continue
            info = state.info or {}
            where = (f"{state.browser} {versions.get(state.browser, '')}; {info.get('backend')}/{info.get('tier')}; "
                     f"page ready in {state.open_s:.1f} s" if state.error is None else state.error)
            terminalreporter.write_line(f"{lane:13} {counts}  ({where})")
