"""gpuport's pytest plugin (entry point `pytest11`: gpuport.testing.plugin).

    @pytest.mark.gpuport
    async def test_scale(gp_runtime):          # sync tests work too
        x = gp_runtime.tensor(np.arange(4, dtype=np.float32))
        assert (await gp_runtime.ops.scale(x, 2.0, 1.0).read()).tolist() == [1, 3, 5, 7]

runs natively and in each lane of `--gpuport-lanes` (native, chromium, firefox, webkit, chromium-cpu,
chromium-pyodide, firefox-pyodide, safari; by default native, chromium, firefox, webkit and chromium-cpu where
their browsers are installed, and every lent lane); ids end in `[lane]`. In a browser lane the test
module's source runs in a loaded page (its plain asserts rewritten to show their operands), the user's
project (pytest's rootdir, if it is a Python project) is installed there from its wheel, and the test runs
with `gp_runtime` being that page's runtime. A failure there is FAILED with the page's traceback and the
lane; a lane that cannot start is an ERROR naming the browser and what is missing, never a skip.

At scale: `-n N` (pytest-xdist) keeps each lane's tests on one worker; `--gpuport-connect LANE=ws://...` and
`--gpuport-webdriver LANE=http://...` run a lane in a browser another machine lends; `--gpuport-report DIR`
writes the run's test-by-lane matrix (report.json, report.html).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import platform
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..runtime import Runtime
from ..runtime import open as open_runtime
from . import distribute, inpage, report
from .browsers import Browsers, LaneError, Remote, missing, sync_playwright
from .pages import BROWSER_FAULTS, Lane, LanePool, LaneState, PageError, PageSpec
from .results import Results, row_of
from .site import StaticServer, build_lane_site, build_project_wheel, project_of

NATIVE = "native"
# The lanes a user chooses from: a browser kind and the options its page starts gpuport with.
# WebKitGTK has no WebGPU (its lane is NumPy in WebAssembly); safari exists only lent by a Mac's safaridriver.
# The *-pyodide lanes meet gpuport as PyScript and JupyterLite do: a bare loadPyodide() page where micropip
# installs the wheel and gpuport registers its own JS half (web/pyodide.html), not gpuport.js's start().
LANES: dict[str, PageSpec] = {
    "chromium": PageSpec("chromium-webgpu", "test.html", gpu=True),
    "firefox": PageSpec("firefox", "test.html", gpu=True),
    "webkit": PageSpec("webkit", "test.html"),
    "chromium-cpu": PageSpec("chromium-webgpu", "test.html?backend=cpu"),
    "chromium-pyodide": PageSpec("chromium-webgpu", "pyodide.html", gpu=True),
    "firefox-pyodide": PageSpec("firefox", "pyodide.html", gpu=True),
    "safari": PageSpec("safari", "test.html", gpu=True),
}
ALL_LANES = (NATIVE, *LANES)
# Run when --gpuport-lanes is not given (with native, each whose browser is here, and every lent lane).
DEFAULT_LANES = ("chromium", "firefox", "webkit", "chromium-cpu")
LOOPBACK = "127.0.0.1"

_LANES_KEY = pytest.StashKey[list]()
_SPECS_KEY = pytest.StashKey[dict]()
_RUNNER_KEY = pytest.StashKey[Any]()
_SUMMARY_KEY = pytest.StashKey["LaneSummary"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpuport", "gpuport: @pytest.mark.gpuport tests natively and in browser lanes")
    group.addoption("--gpuport-lanes", default=None, metavar="LANES",
                    help="comma-separated lanes for @pytest.mark.gpuport tests, of " + ",".join(ALL_LANES)
                         + f" (default: native, then {', '.join(DEFAULT_LANES)} where installed, and every lent lane)")
    group.addoption("--gpuport-url", default=None, metavar="URL",
                    help="load the lanes' pages from this gpuport site (a `gpuport export` being served, or "
                         "`gpuport serve`) instead of the plugin's own static server")
    group.addoption("--gpuport-connect", action="append", default=[], metavar="LANE=ws://HOST:PORT/PATH",
                    help="run LANE (chromium, firefox, webkit, chromium-cpu, *-pyodide) in a browser lent by a "
                         "Playwright server (`playwright run-server --unsafe`) at that WebSocket URL; repeatable")
    group.addoption("--gpuport-webdriver", action="append", default=[], metavar="LANE=http://HOST:PORT",
                    help="run LANE (webkit, safari) in a browser lent by a WebDriver server (WebKitWebDriver, "
                         "safaridriver, a Selenium Grid) at that URL; repeatable")
    group.addoption("--gpuport-serve-host", default=LOOPBACK, metavar="HOST",
                    help="the address the plugin serves the lanes' pages and your wheel on (default 127.0.0.1): "
                         "one that a WebDriver lane's remote browser can reach (Playwright lanes reach this "
                         "machine's loopback through their connection)")
    group.addoption("--gpuport-report", default=None, metavar="DIR",
                    help="write DIR/report.json and DIR/report.html: each test by each lane, and each lane's "
                         "browser, version, adapter, tier and features")


def default_lanes(specs: dict[str, PageSpec] | None = None) -> tuple[list[str], dict[str, str]]:
    """Native plus each lane whose browser is installed or lent (specs: LANES with their remotes); and why
    the others are not."""
    specs = LANES if specs is None else specs
    candidates = [lane for lane, spec in specs.items() if lane in DEFAULT_LANES or spec.remote]
    absent = {lane: reason for lane in candidates if (reason := missing(specs[lane].browser, specs[lane].remote))}
    return [NATIVE] + [lane for lane in candidates if lane not in absent], absent


def lane_specs(config: pytest.Config) -> dict[str, PageSpec]:
    """LANES with the remote browsers of --gpuport-connect and --gpuport-webdriver; UsageError naming a
    wrong lane, URL or a lane given twice."""
    specs = dict(LANES)
    given: dict[str, str] = {}
    for option, protocol, schemes in (("--gpuport-connect", "playwright", ("ws", "wss")),
                                      ("--gpuport-webdriver", "webdriver", ("http", "https"))):
        for value in config.getoption(option):
            lane, sep, url = value.partition("=")
            lane, url = lane.strip(), url.strip()
            if not sep or lane not in LANES or url.split(":", 1)[0] not in schemes:
                raise pytest.UsageError(f"{option} {value!r}: expected LANE={'|'.join(schemes)}://HOST:PORT/..., "
                                        f"LANE one of {', '.join(LANES)}")
            if lane in given:
                raise pytest.UsageError(f"{option} {value!r}: lane {lane} is already lent by {given[lane]}")
            if protocol == "webdriver" and specs[lane].browser not in ("webkit", "safari"):
                raise pytest.UsageError(f"{option} {value!r}: WebDriver lends webkit and safari; lend {lane} "
                                        "with --gpuport-connect (a Playwright server)")
            if protocol == "playwright" and lane == "safari":
                raise pytest.UsageError(f"{option} {value!r}: safari is lent by safaridriver: --gpuport-webdriver")
            given[lane] = url
            specs[lane] = replace(specs[lane], remote=Remote(protocol, url))
    return specs


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUMMARY_KEY] = summary = LaneSummary(config)
    config.pluginmanager.register(summary, "gpuport-lane-summary")
    config.addinivalue_line("markers", "gpuport: run the test natively and in every browser lane "
                                       "(--gpuport-lanes); it takes the gp_runtime fixture")
    # selenium's own WebKitGTK driver trips its own deprecation; nothing of the user's
    config.addinivalue_line("filterwarnings", "ignore:setting remote_server_addr:DeprecationWarning")
    config.stash[_SPECS_KEY] = specs = lane_specs(config)
    serve_host = config.getoption("--gpuport-serve-host")
    if serve_host in ("0.0.0.0", "::", ""):
        raise pytest.UsageError(f"--gpuport-serve-host {serve_host!r}: give the address the remote browser reaches "
                                "this machine on (the pages' URLs carry it)")
    option = config.getoption("--gpuport-lanes")
    if option is None:
        lanes = default_lanes(specs)[0]
    else:
        lanes = [lane.strip() for lane in option.split(",") if lane.strip()]
        unknown = [lane for lane in lanes if lane not in ALL_LANES]
        if unknown or not lanes:
            raise pytest.UsageError(f"--gpuport-lanes: unknown lane(s) {unknown or option!r}; "
                                    f"choose from {', '.join(ALL_LANES)}")
        lanes += [lane for lane, spec in specs.items() if spec.remote and lane not in lanes]   # lent: asked for
    config.stash[_LANES_KEY] = lanes


def pytest_report_header(config: pytest.Config) -> list[str]:
    specs = config.stash[_SPECS_KEY]
    lines = [f"gpuport lanes: {', '.join(config.stash[_LANES_KEY])}"]
    lines += [f"gpuport lane {lane} lent by {spec.remote.endpoint}" for lane, spec in specs.items() if spec.remote]
    if config.getoption("--gpuport-lanes") is None:
        lines += [f"gpuport lane {lane} not run: {reason}" for lane, reason in default_lanes(specs)[1].items()]
    return lines


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `-n N` with xdist's default `--dist load`: a lane's tests on one worker (distribute.py)."""
    if config.getoption("dist") != "load":
        return None
    return distribute.scheduler(config, log, [lane for lane in config.stash[_LANES_KEY] if lane != NATIVE])


@pytest.hookimpl(trylast=True)  # after the marks' own parametrize: ids end in [lane]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("gpuport") is None:
        return
    if "gp_runtime" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: a @pytest.mark.gpuport test takes the gp_runtime "
                                "fixture (the runtime of the lane it runs in)")
    lanes = metafunc.config.stash[_LANES_KEY]
    marks = rerun_on_crash(metafunc.config)
    metafunc.parametrize("gp_lane", [pytest.param(lane, marks=() if lane == NATIVE else marks) for lane in lanes],
                         ids=lanes, indirect=True)


def rerun_on_crash(config: pytest.Config) -> list[pytest.MarkDecorator]:
    """The marks that run a browser lane's test once more, on a fresh page (pages.LanePool.get), when the browser
    lost its page during it (pages.PageCrashed, or Playwright's own words where a test drives the page itself):
    pytest-rerunfailures' `flaky` (the test extra brings it). Anything else the page raised fails at once; none where
    that plugin is not loaded (`-p no:rerunfailures`)."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return []
    return [pytest.mark.flaky(reruns=1, only_rerun=["|".join(re.escape(words) for words in BROWSER_FAULTS)])]


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
        self.host = config.getoption("--gpuport-serve-host")
        self.server = StaticServer(self.dir, cors=True, host=self.host)
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

    def unreachable(self, spec: PageSpec) -> str | None:
        """Why the lane's remote browser cannot load what this site serves, or None: a WebDriver browser on
        another machine, while the pages are on loopback (a Playwright browser reaches loopback through its
        connection)."""
        remote = spec.remote
        if remote is None or remote.protocol != "webdriver" or remote.on_loopback() or self.host != LOOPBACK:
            return None
        return (f"the WebDriver browser at {remote.endpoint} runs on another machine and cannot reach the plugin's pages "
                f"on {self.host}: pass --gpuport-serve-host=<this machine's address on that network>")

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
def gp_native(request: pytest.FixtureRequest) -> Iterator[NativeRunner]:
    """The native lane's runtime and event loop."""
    runner = NativeRunner()
    request.config.stash[_SUMMARY_KEY].native = LaneState(
        NATIVE, NATIVE, browser_version=f"{platform.python_implementation()} {platform.python_version()}",
        info=runner.runtime.info())
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

    specs = request.config.stash[_SPECS_KEY]
    pool = LanePool(gp_browsers, site.site_url, specs, on_start)
    for name, spec in specs.items():
        if reason := site.unreachable(spec):
            pool.state(name).error = f"lane {name}: {reason}"
    request.config.stash[_SUMMARY_KEY].pools.append(pool)
    yield pool
    pool.close()
    site.close()


@pytest.fixture
def gp_lane(request: pytest.FixtureRequest) -> str:
    """The lane this test runs in ("native", "chromium", ...): set by @pytest.mark.gpuport."""
    if not hasattr(request, "param"):
        pytest.fail("gp_lane is set by @pytest.mark.gpuport: mark the test", pytrace=False)
    request.node.user_properties += [("gpuport_lane", request.param),
                                     ("gpuport_test", row_of(request.node.nodeid, request.param))]
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


# -- the lanes' summary and report ------------------------------------------------------------------------

class LaneSummary:
    """Collects each test's outcome per lane (in xdist's controller too: it receives every report) and each
    process's lanes (a worker sends its own at its end); says after the run how each lane went, and writes
    `--gpuport-report`."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results = Results()
        self.pools: list[LanePool] = []
        self.browsers: list[Browsers] = []
        self.native: LaneState | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.results.record(report)

    def pytest_sessionfinish(self) -> None:
        workerinput = getattr(self.config, "workerinput", None)
        states = [self.native] if self.native else []
        states += [state for pool in self.pools for state in pool.states.values()]
        part = self.results.collect(workerinput["workerid"] if workerinput else "main", states, self.browsers)
        if workerinput is not None:   # an xdist worker: the controller merges, reports and writes
            self.config.workeroutput["gpuport_lanes"] = part
            return
        self.results.merge(part)
        directory = self.config.getoption("--gpuport-report")
        if directory:
            report.write(Path(directory), self.results, self.config.stash[_LANES_KEY])

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        part = getattr(node, "workeroutput", {}).get("gpuport_lanes")
        if part is not None:
            self.results.merge(part)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        counts = self.results.counts()
        if not counts:
            return
        terminalreporter.section("gpuport lanes")
        for lane in [lane for lane in ALL_LANES if lane in counts]:
            text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts[lane].items()))
            pages = [page for page in self.results.lanes if page["lane"] == lane != NATIVE]
            terminalreporter.write_line(f"{lane:16} {text}" + "".join(f"  ({_page_line(page)})" for page in pages))
        launched = {worker: keys for worker, keys in self.results.launched.items() if keys}
        if launched:
            terminalreporter.write_line("browsers: " + "; ".join(
                f"{worker} launched {', '.join(keys)}" for worker, keys in sorted(launched.items())))
        directory = self.config.getoption("--gpuport-report")
        if directory:
            terminalreporter.write_line(f"report: {Path(directory) / 'report.html'}")


def _page_line(page: dict) -> str:
    worker = f"{page['worker']}: " if page.get("worker") not in (None, "main") else ""
    if page.get("error"):
        return worker + page["error"]
    browser = f"{page['browser']} {page.get('browser_version') or '?'}"
    remote = f" from {page['remote']}" if page.get("remote") else ""
    ready = f"; page ready in {page['open_s']} s" if page.get("open_s") is not None else ""
    adapter = page.get("adapter") or {}
    on = " ".join(str(adapter[k]) for k in ("vendor", "architecture", "device") if adapter.get(k))
    return f"{worker}{browser}{remote}; {page.get('backend')}/{page.get('tier')}{f' on {on}' if on else ''}{ready}"
