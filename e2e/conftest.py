"""e2e lanes: real browsers, the dev server, and one loaded page per lane shared by the whole session.

A lane is (browser, page query, expectation). Loading Pyodide + NumPy + the wheel costs seconds, so each
lane's page loads once (session scope, on first use) and every test runs its body there through
`runPython`. A missing browser or a page that fails to start fails that lane's tests with the reason;
nothing is skipped. At session end the outcomes become e2e/report/compatibility.{json,md}.

Browsers (recipes verified on Debian bookworm): Debian's Chromium (SwiftShader WebGPU; and without the WebGPU flag),
Firefox ESR on lavapipe through Playwright's WebDriver BiDi (playwright==1.64.1), WebKitGTK's MiniBrowser
through Selenium under an Xvfb this file starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "e2e" / "report"
CASES_SOURCE = (ROOT / "tests" / "cases.py").read_text(encoding="utf-8")
PROPERTIES_SOURCE = (ROOT / "tests" / "properties.py").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "tests"))
from e2e_matrix import LANES, LaneSpec, op_of  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic"]
CHROMIUM_WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"]
FIREFOX = "/usr/bin/firefox-esr"
FIREFOX_PREFS = {
    "dom.webgpu.enabled": True,
    "gfx.webgpu.ignore-blocklist": True,
    # quiet: no update checks, telemetry or first-run pages in a test profile
    "app.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
}
MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
XVFB = "/usr/bin/Xvfb"
START_TIMEOUT_S = 180
SCRIPT_TIMEOUT_S = 300


# -- the dev server ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url() -> str:
    """The real dev server (uvicorn) on a free loopback port, for the whole session."""
    import uvicorn

    from gpuport.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the gpuport dev server did not start (see its log above)")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


# -- browsers ---------------------------------------------------------------------------------------

class LaneError(Exception):
    """A lane could not start: its browser is missing, or its page did not start gpuport."""


def _require(path: str, package: str) -> None:
    if not Path(path).exists() and not shutil.which(path):
        raise LaneError(f"{path} is missing: install Debian's {package} (`make setup` does)")


def _xdg_runtime_dir() -> None:
    # Firefox and WebKitGTK want one; a private one per session is enough.
    if not os.environ.get("XDG_RUNTIME_DIR") or not os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="gpuport-xdg-")


class Xvfb:
    """A private X server: Xvfb picks a free display itself (-displayfd) and tells us which."""

    def __init__(self) -> None:
        _require(XVFB, "xvfb")
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([XVFB, "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24",
                                      "-nolisten", "tcp"],
                                     pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(write_fd)
        number = b""
        with os.fdopen(read_fd, "rb") as r:  # Xvfb writes "<n>\n" once it accepts connections
            while not number.endswith(b"\n"):
                chunk = r.read(1)
                if not chunk:
                    break
                number += chunk
        if not number.strip().isdigit():
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.close()
            raise LaneError(f"Xvfb did not start: {err.strip() or 'no display number'}")
        self.display = f":{number.strip().decode()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Browsers:
    """Launches each browser once, on first use, and closes them all at the end of the session."""

    def __init__(self, playwright) -> None:
        self.playwright = playwright
        self._open: dict[str, object] = {}
        self._failed: dict[str, str] = {}
        self._closers: list = []
        self.launch_s: dict[str, float] = {}
        self.versions: dict[str, str] = {}

    def get(self, name: str):
        if name in self._failed:
            raise LaneError(self._failed[name])
        if name not in self._open:
            t0 = time.monotonic()
            try:
                self._open[name] = getattr(self, "_launch_" + name.replace("-", "_"))()
            except LaneError as exc:
                self._failed[name] = str(exc)
                raise
            except Exception as exc:  # a launch failure is the lane's failure, with the browser's words
                self._failed[name] = f"{name}: the browser did not launch: {type(exc).__name__}: {exc}"
                raise LaneError(self._failed[name]) from exc
            self.launch_s[name] = time.monotonic() - t0
        return self._open[name]

    def _playwright_browser(self, name, browser):
        self._closers.append(browser.close)
        self.versions[name] = browser.version
        return browser

    def _launch_chromium_webgpu(self):
        _require(CHROMIUM, "chromium")
        return self._playwright_browser("chromium-webgpu", self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_QUIET + CHROMIUM_WEBGPU))

    def _launch_chromium_noflag(self):
        _require(CHROMIUM, "chromium")
        return self._playwright_browser("chromium-noflag", self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_QUIET))

    def _launch_firefox(self):
        _require(FIREFOX, "firefox-esr")
        _xdg_runtime_dir()
        return self._playwright_browser("firefox", self.playwright.firefox.launch(
            channel="moz-firefox", executable_path=FIREFOX, firefox_user_prefs=FIREFOX_PREFS))

    def _launch_webkit(self):
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        _require(MINIBROWSER, "webkit2gtk-driver (MiniBrowser comes with libwebkit2gtk-4.1)")
        _require(WEBKIT_DRIVER, "webkit2gtk-driver")
        _xdg_runtime_dir()
        xvfb = Xvfb()
        self._closers.append(xvfb.close)
        options = Options()
        options.binary_location = MINIBROWSER
        options.add_argument("--automation")
        env = dict(os.environ, DISPLAY=xvfb.display)
        driver = webdriver.WebKitGTK(options=options, service=Service(executable_path=WEBKIT_DRIVER, env=env))
        self._closers.insert(len(self._closers) - 1, driver.quit)  # quit the driver before its X server
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
        driver.set_page_load_timeout(START_TIMEOUT_S)
        caps = driver.capabilities
        self.versions["webkit"] = f"{caps.get('browserName', 'MiniBrowser')} {caps.get('browserVersion', '?')}"
        return driver

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                pass
        self._closers.clear()


# -- lanes ------------------------------------------------------------------------------------------

class PageError(AssertionError):
    """Python in the page raised: the JS error name (the Python type) and message (the traceback)."""


_CASES_MODULE = ("import sys, types\n"
                 "for _name, _src in (('properties', " + repr(PROPERTIES_SOURCE) + "), ('cases', "
                 + repr(CASES_SOURCE) + ")):\n"
                 "    _m = types.ModuleType(_name)\n"
                 "    sys.modules[_name] = _m\n"
                 "    exec(compile(_src, f'tests/{_name}.py', 'exec'), _m.__dict__)\n"
                 "import cases")


@dataclass
class LaneState:
    """What the report needs of a lane, whether or not it started."""

    name: str
    spec: LaneSpec
    started_at: float = 0.0
    open_s: float | None = None
    error: str | None = None
    startup: dict | None = None
    mode: str | None = None
    info: dict | None = None
    navigator: dict | None = None
    final_info: dict | None = None
    last_used: float = 0.0
    outcomes: dict[str, dict] = field(default_factory=dict)


class Lane:
    """One loaded demo page; `run(src)` executes Python in its Pyodide and returns the result."""

    def __init__(self, state: LaneState) -> None:
        self.state, self.name = state, state.name
        ready = self._ready()
        self.startup, self.mode = ready["timings"], ready["mode"]
        self.navigator = ready.get("navigator") or {}
        self.info = self.run("rt.info()")
        self.run(_CASES_MODULE)

    def _ready(self) -> dict:
        raise NotImplementedError

    def run(self, src: str):
        raise NotImplementedError

    def case(self, name: str) -> None:
        self.run(f"await cases.CASES[{name!r}](rt)")

    def close(self) -> None:
        pass


class PlaywrightLane(Lane):
    def __init__(self, state: LaneState, browser, url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        super().__init__(state)

    def _ready(self) -> dict:
        try:
            self.page.wait_for_function("() => window.gpuportReady !== undefined", timeout=30_000)
            return self.page.evaluate(f"async () => {{ const g = await window.gpuportReady;"
                                      f" return {{ timings: g.timings, mode: g.mode, navigator: {_NAVIGATOR} }}; }}")
        except Exception as exc:
            raise LaneError(f"the page did not start gpuport: {exc}\npage errors: {self.errors}") from exc

    def run(self, src: str):
        from playwright.sync_api import Error

        try:
            return self.page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", src)
        except Error as exc:
            raise PageError(f"{exc.message}\npage errors: {self.errors}" if self.errors else exc.message) from None

    def close(self) -> None:
        self.context.close()


# What the page's own navigator says (the cpu backend's rt.info() has no browser entry).
_NAVIGATOR = ("({ userAgent: navigator.userAgent, gpu: typeof navigator.gpu === 'undefined' ? 'undefined'"
              " : navigator.gpu === null ? 'null' : 'present', workers: typeof Worker })")

# execute_async_script: the last argument is the callback; errors travel back as data.
_WEBDRIVER_RUN = "const NAVIGATOR = " + _NAVIGATOR + ";" + """
const [src, done] = arguments;
const deadline = Date.now() + 30000;
const ready = () => window.gpuportReady ? window.gpuportReady
  : Date.now() > deadline ? Promise.reject(new Error("window.gpuportReady never appeared (the page script did not run)"))
  : new Promise((r) => setTimeout(r, 50)).then(ready);
ready()
  .then((g) => src === null ? { timings: g.timings, mode: g.mode, navigator: NAVIGATOR } : g.runPython(src))
  .then((value) => done({ ok: true, value }),
        (e) => done({ ok: false, name: String((e && e.name) || "Error"), message: String((e && e.message) || e) }));
"""


class WebDriverLane(Lane):
    def __init__(self, state: LaneState, driver, url: str) -> None:
        self.driver = driver
        try:
            driver.get(url)
        except Exception as exc:
            raise LaneError(f"the page did not load: {exc}") from exc
        super().__init__(state)

    def _call(self, src: str | None):
        reply = self.driver.execute_async_script(_WEBDRIVER_RUN, src)
        if not isinstance(reply, dict) or "ok" not in reply:
            raise PageError(f"unexpected reply from the page: {reply!r}")
        if not reply["ok"]:
            raise PageError(f"{reply['name']}: {reply['message']}")
        return reply.get("value")

    def _ready(self) -> dict:
        try:
            return self._call(None)
        except Exception as exc:
            raise LaneError(f"the page did not start gpuport: {exc}") from exc

    def run(self, src: str):
        return self._call(src)


class LanePool:
    def __init__(self, browsers: Browsers, server_url: str) -> None:
        self.browsers, self.server_url = browsers, server_url
        self.lanes: dict[str, Lane] = {}

    def get(self, name: str) -> Lane:
        state = STATES.setdefault(name, LaneState(name, LANES[name]))
        if state.error:
            raise LaneError(state.error)
        if name not in self.lanes:
            spec = LANES[name]
            state.started_at = time.monotonic()
            try:
                browser = self.browsers.get(spec.browser)
                url = f"{self.server_url}/?{spec.query}"
                cls = WebDriverLane if spec.browser == "webkit" else PlaywrightLane
                lane = cls(state, browser, url)
            except LaneError as exc:
                state.error = f"lane {name}: {exc}"
                raise LaneError(state.error) from None
            except Exception as exc:
                state.error = f"lane {name}: could not start: {type(exc).__name__}: {exc}"
                raise LaneError(state.error) from None
            state.open_s = time.monotonic() - state.started_at
            state.startup, state.mode, state.info, state.navigator = lane.startup, lane.mode, lane.info, lane.navigator
            self.lanes[name] = lane
        return self.lanes[name]

    def close(self) -> None:
        for name, lane in self.lanes.items():
            try:  # what the runtime reports after the cases ran (e.g. strategies it chose)
                STATES[name].final_info = lane.run("rt.info()")
            except Exception:
                pass
            try:
                lane.close()
            except Exception:
                pass


STATES: dict[str, LaneState] = {}
_BROWSERS: list[Browsers] = []


@pytest.fixture(scope="session")
def browsers(playwright):
    pool = Browsers(playwright)
    _BROWSERS.append(pool)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def _lane_pool(browsers, server_url):
    pool = LanePool(browsers, server_url)
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


def pytest_configure(config):
    os.environ.setdefault("PW_TEST_SCREENSHOT_NO_FONTS_READY", "1")
    # selenium's own WebKitGTK driver trips its own deprecation; nothing of ours
    config.addinivalue_line("filterwarnings", "ignore:setting remote_server_addr:DeprecationWarning")


def pytest_collection_modifyitems(session, config, items):
    """Note each item's lane and case, and run each lane's tests back to back (detection first), so a
    lane's wall time means something and its page is busy only while its tests run."""
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


def pytest_runtest_logreport(report):
    where = _ITEM_LANE.get(report.nodeid)
    if where is None:
        return
    lane, case = where
    state = STATES.setdefault(lane, LaneState(lane, LANES[lane]))
    state.last_used = time.monotonic()
    key = case or report.nodeid.split("::")[-1].split("[")[0]
    entry = state.outcomes.setdefault(key, {"outcome": "passed", "duration_s": 0.0, "op": op_of(case) if case else
                                            "detect"})
    entry["duration_s"] += report.duration
    if report.failed:
        entry["outcome"] = "failed"
        text = str(report.longrepr) if report.longrepr else ""
        crash = getattr(report.longrepr, "reprcrash", None)  # the exception itself, not the test's source
        entry["message"] = headline(crash.message if crash is not None else text)
        entry["detail"] = text[-4000:]
    elif report.skipped:
        entry["outcome"] = "skipped"


def headline(text: str) -> str:
    """One line that says what went wrong: for a Python traceback (from the page), its exception line,
    after whatever the first line said before the traceback."""
    line = _headline(text)
    for noise in ("conftest.PageError: ", "PageError: ", "Page.evaluate: "):
        line = line.replace(noise, "")
    return re.sub(r"\b(\w+): \1: ", r"\1: ", line)


def _headline(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if "Traceback (most recent call last)" in text:
        tail = [line for line in lines if not line[:1].isspace() and not line.startswith(("page errors:", "E "))
                and "Traceback (most recent call last)" not in line and not line.startswith(("During handling",
                                                                                             "The above exception"))]
        if tail:
            lead = first.split("Traceback (most recent call last)")[0].rstrip()
            return (lead + " " + tail[-1] if lead else tail[-1])[:500]
    for line in reversed(lines):  # pytest's "E   AssertionError: ..." lines
        if line.startswith("E "):
            return line[1:].strip()[:500]
    return first[:500]


_KEY_LIMITS = ("maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
               "maxComputeInvocationsPerWorkgroup")


_OP_KEYS = {"rowwise": ("layer_norm", "sum", "mean", "l2_normalize")}


def _strategy(info: dict | None, op: str) -> str:
    """The strategy the runtime reports for an op (rt.info()["strategies"], op -> name); "native kernel"
    when the runtime reports none; "-" for rows that are not one op (errors, chained, strategy cases)."""
    strategies = (info or {}).get("strategies")
    if not strategies:
        return "native kernel"
    if isinstance(strategies, dict):
        found = sorted({v if isinstance(v, str) else json.dumps(v, default=str)
                        for k in _OP_KEYS.get(op, (op,)) if (v := strategies.get(k)) is not None})
        return ", ".join(found) if found else "-"
    if isinstance(strategies, (list, tuple)):
        return ", ".join(map(str, strategies))
    return str(strategies)


def _lane_summary(state: LaneState, browsers: Browsers | None) -> dict:
    info = state.final_info or state.info or {}
    adapter = info.get("adapter") or {}
    limits = info.get("limits") or {}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for entry in state.outcomes.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    spec = state.spec
    return {
        "browser": spec.browser,
        "browser_version": (browsers.versions.get(spec.browser) if browsers else None),
        "browser_launch_s": (round(browsers.launch_s[spec.browser], 2)
                             if browsers and spec.browser in browsers.launch_s else None),
        "query": spec.query,
        "note": spec.note,
        "expected": {"backend": spec.backend, "tier": spec.tier, "mode": spec.mode},
        "backend": info.get("backend"),
        "tier": info.get("tier"),
        "detected_tier": info.get("detected_tier"),
        "mode": state.mode,
        "adapter": {k: adapter.get(k) for k in ("vendor", "architecture", "device", "description", "is_fallback")},
        "features": info.get("features"),
        "limits": {k: limits.get(k) for k in _KEY_LIMITS},
        "strategies": info.get("strategies"),
        "budget": info.get("budget"),
        "over_budget_strategies": info.get("over_budget_strategies"),
        "backend_note": info.get("note"),
        "user_agent": (state.navigator or {}).get("userAgent"),
        "navigator_gpu": (state.navigator or {}).get("gpu"),
        "startup_ms": {k: round(v, 1) for k, v in (state.startup or {}).items()},
        "open_s": None if state.open_s is None else round(state.open_s, 2),
        "wall_s": (round(state.last_used - state.started_at, 2) if state.started_at and state.last_used else None),
        "tests_s": round(sum(e["duration_s"] for e in state.outcomes.values()), 2),
        "error": state.error,
        "counts": counts,
    }


def _fmt_bytes(n) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} B"


def _write_report() -> None:
    if not STATES:
        return
    browsers = _BROWSERS[-1] if _BROWSERS else None
    order = [n for n in LANES if n in STATES]
    lanes = {n: _lane_summary(STATES[n], browsers) for n in order}
    ops: dict[str, dict] = {}
    cases: dict[str, dict] = {}
    for n in order:
        state = STATES[n]
        info = state.final_info or state.info
        for case, entry in state.outcomes.items():
            if entry["op"] == "detect":
                continue
            op = entry["op"]
            cell = ops.setdefault(op, {}).setdefault(n, {"passed": 0, "failed": 0, "skipped": 0,
                                                         "strategy": _strategy(info, op), "failed_cases": []})
            cell[entry["outcome"]] += 1
            if entry["outcome"] == "failed":
                cell["failed_cases"].append(case)
            c = cases.setdefault(case, {"op": op, "lanes": {}})
            c["lanes"][n] = {k: entry[k] for k in ("outcome", "message") if k in entry}
            c["lanes"][n]["duration_s"] = round(entry["duration_s"], 3)
    detect = {n: {k: v for k, v in STATES[n].outcomes.get("test_lane_detects", {}).items() if k != "detail"}
              for n in order}
    data = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lanes": lanes, "detect": detect,
            "ops": ops, "cases": cases}
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "compatibility.json").write_text(json.dumps(data, indent=2, default=str) + "\n")

    md = ["# gpuport browser compatibility matrix", "", f"Generated {data['generated']} by `pytest e2e` "
          "(software GPUs: Chromium/SwiftShader, Firefox ESR/lavapipe; WebKitGTK has no WebGPU).", "",
          "## Lanes", "",
          "| lane | browser | navigator.gpu | backend | tier | mode | adapter (vendor / architecture) | fallback | features "
          "| binding | workgroup mem | invocations | start-up (Pyodide / NumPy / wheel / open) | lane wall | "
          "passed | failed |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, s in lanes.items():
        a, lim, st = s["adapter"], s["limits"], s["startup_ms"]
        start = (f"{st.get('total_ms', 0) / 1000:.1f} s ({st.get('pyodide_ms', 0) / 1000:.1f} / "
                 f"{st.get('numpy_ms', 0) / 1000:.1f} / {st.get('wheel_ms', 0) / 1000:.1f} / "
                 f"{st.get('open_ms', 0) / 1000:.1f})" if st else "-")
        md.append(f"| {n} | {s['browser']} {s['browser_version'] or ''} | "
                  f"{s['navigator_gpu'] or '-'} | {s['backend'] or '-'} | "
                  f"{s['tier'] or '-'} | {s['mode'] or '-'} | "
                  f"{a.get('vendor') or '(empty)'} / {a.get('architecture') or '(empty)'} | {a.get('is_fallback')} | "
                  f"{', '.join(s['features'] or []) or '-'} | {_fmt_bytes(lim['maxStorageBufferBindingSize'])} | "
                  f"{_fmt_bytes(lim['maxComputeWorkgroupStorageSize'])} | "
                  f"{lim['maxComputeInvocationsPerWorkgroup'] or '-'} | {start} | "
                  f"{s['wall_s'] if s['wall_s'] is not None else '-'} s | {s['counts']['passed']} | "
                  f"{s['counts']['failed']} |")
    budgets = [(n, s) for n, s in lanes.items() if s.get("budget")]
    if budgets:
        md += ["", "Runtime budgets below the device limits (the constrained tier's chunked/tiled strategies plan "
               "against these):", ""]
        md += [f"- {n}: " + ", ".join(f"{k} {_fmt_bytes(v) if k.endswith(('BindingSize', 'BufferSize', 'StorageSize')) else v}" for k, v in s["budget"].items())
               + (f"; over-budget strategies: {json.dumps(s['over_budget_strategies'], default=str)}"
                  if s.get("over_budget_strategies") else "") for n, s in budgets]
    md += ["", "## Ops x lanes", "", "Each cell: parity cases passed/total in that lane, and the strategy "
           "the runtime reports for the op (`rt.info()['strategies']`, else the native kernel).", "",
           "| op | " + " | ".join(f"{n} ({lanes[n]['tier'] or '?'})" for n in order) + " |",
           "|---|" + "---|" * len(order)]
    for op in sorted(ops):
        row = []
        for n in order:
            cell = ops[op].get(n)
            if not cell:
                row.append("-")
                continue
            total = cell["passed"] + cell["failed"] + cell["skipped"]
            mark = "pass" if cell["failed"] == 0 and cell["skipped"] == 0 else "**FAIL**"
            row.append(f"{mark} {cell['passed']}/{total} ({cell['strategy']})")
        md.append(f"| {op} | " + " | ".join(row) + " |")
    failures = [(n, c, e) for n in order for c, e in STATES[n].outcomes.items() if e["outcome"] == "failed"]
    errors = [(n, s["error"]) for n, s in lanes.items() if s["error"]]
    if errors or failures:
        md += ["", "## Failures", ""]
        for n, err in errors:
            md.append(f"- lane **{n}** did not start: {headline(err)}")
        for n, c, e in failures:
            if not STATES[n].error:  # a lane that did not start fails every test for that one reason
                md.append(f"- **{n}** `{c}`: {e.get('message', '')}")
    (REPORT_DIR / "compatibility.md").write_text("\n".join(md) + "\n")


def pytest_sessionfinish(session, exitstatus):
    _write_report()


def pytest_terminal_summary(terminalreporter):
    if not STATES:
        return
    browsers = _BROWSERS[-1] if _BROWSERS else None
    tr = terminalreporter
    tr.section("browser lanes (e2e/report/compatibility.md)")
    for name in [n for n in LANES if n in STATES]:
        s = _lane_summary(STATES[name], browsers)
        c = s["counts"]
        tr.write_line(f"{name:27} {str(s['backend']):6} {str(s['tier']):11} {c['passed']:3} passed {c['failed']:3} failed"
                      f"  page ready {s['open_s'] if s['open_s'] is not None else '-':>5} s"
                      f"  lane wall {s['wall_s'] if s['wall_s'] is not None else '-':>6} s"
                      + (f"  {headline(s['error'])[:160]}" if s["error"] else ""))
