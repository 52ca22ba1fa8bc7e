"""Lanes: one loaded gpuport page per lane (a browser kind and a page), reused by every test of a session.

A page is ready when `window.gpuportReady` (what `start()` resolves to: runPython, installWheel, ...)
resolves; `Lane.run(src)` then executes Python in its Pyodide and returns plain data. Playwright drives
Chromium and Firefox, Selenium's WebDriver drives WebKitGTK: both behind the same `Lane` interface. A
browser that is missing or a page that does not start raises LaneError with the reason, never a skip.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .browsers import (
    SCRIPT_TIMEOUT_S,
    START_TIMEOUT_S,
    Browsers,
    LaneError,
    PlaywrightError,
    Remote,
)


class PageError(AssertionError):
    """Python in the page raised: the JS error name (the Python type) and message (the traceback)."""


class PageCrashed(PageError):
    """The browser lost the page while it ran something (its renderer process died, its Pyodide worker froze): the
    browser's fault, not the page's. The lane's page is started again at its next use (LanePool.get)."""


@dataclass(frozen=True)
class PageSpec:
    """What a lane loads: a kind of browser (a `Browsers` kind), lent by `remote` if given, and a page
    relative to the site's URL (e.g. "test.html?backend=cpu"). `gpu`: the lane is there to test WebGPU, so a
    page whose runtime answers on the CPU fails to start rather than passing on the wrong tier."""

    browser: str
    page: str
    remote: Remote | None = None
    gpu: bool = False

    def uses_webdriver(self) -> bool:
        return self.remote.protocol == "webdriver" if self.remote else self.browser == "webkit"


@dataclass
class LaneState:
    """What is known of a lane, whether or not it started (the reports read it)."""

    name: str
    browser: str
    remote: str | None = None
    browser_version: str | None = None
    started_at: float = 0.0
    open_s: float | None = None
    error: str | None = None
    restarted: str | None = None   # why its page was started a second time (LanePool.get)
    crashes: list[str] = field(default_factory=list)   # the pages it lost while they ran (PageCrashed): what each said
    startup: dict | None = None
    mode: str | None = None
    info: dict | None = None
    navigator: dict | None = None
    final_info: dict | None = None
    last_used: float = 0.0
    outcomes: dict[str, dict] = field(default_factory=dict)


# What the page's own navigator says (the cpu backend's rt.info() has no browser entry).
_NAVIGATOR = ("({ userAgent: navigator.userAgent, gpu: typeof navigator.gpu === 'undefined' ? 'undefined'"
              " : navigator.gpu === null ? 'null' : 'present', workers: typeof Worker })")
# Playwright's evaluate waits for ever: the page holds each wait to a deadline (as WebDriver's script timeout
# does), so a call that never answers fails the test naming the call instead of hanging the session.
_DEADLINE = """const deadline = (what, s, promise) => { let timer; return Promise.race([promise, new Promise((_, no) => {
  timer = setTimeout(() => no(new Error(`${typeof what === "function" ? what() : what}: no answer from the page in ${s} s`)),
                     s * 1000); })])
  .finally(() => clearTimeout(timer)); };"""
# start()'s names the stage it was in, as far as the page says (test.html shows it in #status)
_STARTING = "() => `start() (the page's status: ${(document.getElementById('status') || {}).textContent})`"
_READY = (f"async (s) => {{ {_DEADLINE} const g = await deadline({_STARTING}, s, window.gpuportReady); "
          f"return {{ timings: g.timings, mode: g.mode, navigator: {_NAVIGATOR} }}; }}")
_CALL = (f"async ([method, args, s]) => {{ {_DEADLINE} return deadline(method, s, window.gpuportReady.then("
         "(g) => (typeof g[method] === 'function' ? g[method](...args) : g[method]))); }")

# execute_async_script: the last argument is the callback; errors travel back as data.
_WEBDRIVER_CALL = "const NAVIGATOR = " + _NAVIGATOR + ";" + """
const [method, args, done] = arguments;
const deadline = Date.now() + 30000;
const ready = () => window.gpuportReady ? window.gpuportReady
  : Date.now() > deadline ? Promise.reject(new Error("window.gpuportReady never appeared (the page script did not run)"))
  : new Promise((r) => setTimeout(r, 50)).then(ready);
ready()
  .then((g) => method === null ? { timings: g.timings, mode: g.mode, navigator: NAVIGATOR } : g[method](...args))
  .then((value) => done({ ok: true, value: value === undefined ? null : value }),
        (e) => done({ ok: false, name: String((e && e.name) || "Error"), message: String((e && e.message) || e) }));
"""


def evaluate_within(page: Any, script: str, arg: Any = None, timeout_s: float | None = None) -> Any:
    """A Playwright page's `evaluate` of `script` (a JS function of one argument) held to a deadline
    (SCRIPT_TIMEOUT_S unless `timeout_s`), where Playwright's own would wait for ever: a storage call another
    connection blocks, a promise nothing settles."""
    s = SCRIPT_TIMEOUT_S if timeout_s is None else timeout_s
    return page.evaluate(f"async ([arg, s]) => {{ {_DEADLINE} return deadline('the script', s, ({script})(arg)); }}",
                         [arg, s])


def call_page(page: Any, name: str, *args: Any, timeout_s: float | None = None) -> Any:
    """`name` of a Playwright page's start() object (`window.gpuportReady`): its method called with `args`, or its
    attribute (`timings`, `mode`), the answer back as plain data. Held to a deadline (SCRIPT_TIMEOUT_S unless
    `timeout_s`): a page that never answers fails the call naming it, where Playwright's evaluate would wait for
    ever. For tests that load a page of their own; a lane's page is `Lane.call`."""
    return page.evaluate(_CALL, [name, list(args), SCRIPT_TIMEOUT_S if timeout_s is None else timeout_s])


class Lane:
    """One loaded page. `run(src)`: Python in its Pyodide (top-level await allowed), the last expression
    back as plain data; `call(method, *args)`: a method of the page's `start()` object. `crashed` says why the
    browser lost the page, once it has."""

    crashed: str | None = None

    def __init__(self, state: LaneState) -> None:
        self.state, self.name = state, state.name
        self.modules: set[str] = set()   # added with add_module
        ready = self._ready()
        self.startup, self.mode = ready["timings"], ready["mode"]
        self.navigator = ready.get("navigator") or {}
        self.info = self.run("rt.info()")

    def _ready(self) -> dict:
        raise NotImplementedError

    def call(self, method: str, *args: Any) -> Any:
        raise NotImplementedError

    def run(self, src: str) -> Any:
        return self.call("runPython", src)

    def add_module(self, name: str, source: str, filename: str) -> None:
        """Make `import name` work in the page: `source` compiled as `filename` (tracebacks show its lines),
        asserts rewritten to show their operands (gpuport.testing.inpage)."""
        self.run("from gpuport.testing import inpage as _gp_inpage\n"
                 f"_gp_inpage.add_module({name!r}, {source!r}, {filename!r})\nNone")
        self.modules.add(name)

    def close(self) -> None:
        pass

    def _failed(self, text: str) -> PageError:
        """The error of a call that failed saying `text`: PageCrashed, the page marked lost, if the browser lost it."""
        if not browser_fault(text):
            return PageError(text)
        self.crashed = text
        return PageCrashed(text)


class PlaywrightLane(Lane):
    def __init__(self, state: LaneState, browser: Any, url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(f"console.error: {m.text}") if m.type == "error" else None)
        # a test that drives `lane.page` itself sees the crash as Playwright's error; the next get() still knows
        self.page.on("crash", lambda _: setattr(self, "crashed", self.crashed or "Page crashed"))
        try:
            try:
                response = self.page.goto(url)
            except PlaywrightError as exc:
                raise LaneError(f"the page {url} did not load: {exc.message}") from None
            if response is not None and not response.ok:
                raise LaneError(f"the page {url} did not load: HTTP {response.status} (is it a gpuport site?)")
            super().__init__(state)
        except BaseException:
            with contextlib.suppress(Exception):   # a page that did not start leaves no context behind
                self.context.close()
            raise

    def _ready(self) -> dict:
        try:
            self.page.wait_for_function("() => window.gpuportReady !== undefined", timeout=30_000)
            return self.page.evaluate(_READY, START_TIMEOUT_S)
        except PlaywrightError as exc:
            raise LaneError(f"the page did not start gpuport: {exc.message}\npage errors: {self.errors}") from None

    def call(self, method: str, *args: Any) -> Any:
        try:
            return call_page(self.page, method, *args)
        except PlaywrightError as exc:
            raise self._failed(f"{exc.message}\npage errors: {self.errors}" if self.errors else exc.message) from None

    def close(self) -> None:
        self.context.close()


class WebDriverLane(Lane):
    def __init__(self, state: LaneState, driver: Any, url: str) -> None:
        self.driver = driver
        try:
            driver.get(url)
        except Exception as exc:  # selenium's WebDriverException and its many subclasses
            raise LaneError(f"the page {url} did not load: {exc}") from exc
        super().__init__(state)

    def _webdriver(self, method: str | None, args: list) -> Any:
        reply = self.driver.execute_async_script(_WEBDRIVER_CALL, method, args)
        if not isinstance(reply, dict) or "ok" not in reply:
            raise PageError(f"unexpected reply from the page: {reply!r}")
        if not reply["ok"]:
            raise self._failed(f"{reply['name']}: {reply['message']}")
        return reply.get("value")

    def _ready(self) -> dict:
        try:
            return self._webdriver(None, [])
        except Exception as exc:
            raise LaneError(f"the page did not start gpuport: {exc}") from exc

    def call(self, method: str, *args: Any) -> Any:
        return self._webdriver(method, list(args))


def _no_webgpu(spec: PageSpec, lane: Lane) -> str:
    info = lane.info or {}
    where = f"the browser from {spec.remote.endpoint}" if spec.remote else f"the {spec.browser} browser"
    hint = (" (a Playwright server applies the lane's WebGPU flags only when started with --unsafe)"
            if spec.remote and spec.remote.protocol == "playwright" else "")
    return (f"{where} has no WebGPU: navigator.gpu is {lane.navigator.get('gpu')}, the page runs on backend "
            f"{info.get('backend')} ({info.get('note') or 'no adapter'}){hint}")


# A browser's renderer process that died while the lane's page started ("Target crashed": Chromium's, once in a
# fresh-clone `make test` on 2026-11-27, on a lane that then passed alone) is the browser's, not the page's; so is a
# Pyodide worker whose thread stopped for good as it started (WorkerFrozen, from web/pyodide.html and gpuport.js:
# Firefox's navigator.gpu.requestAdapter() in a worker, in 3 of about 110 bare-page starts here, each beside another
# page of the same browser starting too). Such a lane's page is started once more in a fresh context, and the reports say so
# (LaneState.restarted). A page that fails so twice fails the lane.
# The frozen worker is matched by its error's name, which both pages give it, not by their wording (which differs).
# A page lost so while it ran a test (Chromium's renderer, once in CI on 2026-11-30, in the tier-constrained lane,
# which then passed 12 times of 12 alone) fails that test with PageCrashed, and the lane's next test gets a fresh
# page (LaneState.crashes) rather than the dead one; past _MAX_CRASHES lost pages the lane fails. plugin.rerun_on_crash
# runs the test that lost its page once more.
BROWSER_FAULTS = ("Target crashed", "Page crashed", "WorkerFrozen")
_MAX_CRASHES = 2


def browser_fault(what: BaseException | str) -> bool:
    """Whether an error (or its text) is the browser's fault, not the page's (BROWSER_FAULTS): what earns a page one
    more start."""
    return any(words in str(what) for words in BROWSER_FAULTS)


class LanePool:
    """The lanes of `specs`, each opened on first `get(name)` against the site URL (a string, or a
    callable giving it, so a server starts only when a lane needs it). `on_start(lane)` runs once per
    lane after its page is ready (installing modules, say); a failure there is the lane's failure."""

    def __init__(self, browsers: Browsers, site: str | Callable[[], str], specs: Mapping[str, PageSpec],
                 on_start: Callable[[Lane], None] | None = None) -> None:
        self.browsers, self.specs, self.on_start = browsers, dict(specs), on_start
        self._site = site
        self.lanes: dict[str, Lane] = {}
        self.states: dict[str, LaneState] = {}

    def state(self, name: str) -> LaneState:
        spec = self.specs[name]
        return self.states.setdefault(name, LaneState(name, spec.browser, spec.remote.endpoint if spec.remote else None))

    def site_url(self) -> str:
        if callable(self._site):
            self._site = self._site()
        return self._site.rstrip("/") + "/"

    def get(self, name: str) -> Lane:
        """The lane's loaded page; LaneError (naming the lane and the reason) if it cannot start."""
        state = self.state(name)
        lost = self.lanes.get(name)
        if lost is not None and lost.crashed:
            state.crashes.append(lost.crashed.splitlines()[0])
            self.close_lane(name)
            if len(state.crashes) > _MAX_CRASHES:
                state.error = f"lane {name}: the browser lost its page {len(state.crashes)} times: {state.crashes}"
        if state.error:
            raise LaneError(state.error)
        if name not in self.lanes:
            spec = self.specs[name]
            state.started_at = time.monotonic()
            lane = None
            while lane is None:
                try:
                    browser = self.browsers.get(spec.browser, spec.remote)
                    state.browser_version = self.browsers.versions.get(Browsers.key(spec.browser, spec.remote))
                    url = self.site_url() + spec.page
                    lane = (WebDriverLane if spec.uses_webdriver() else PlaywrightLane)(state, browser, url)
                    if spec.gpu and (lane.info or {}).get("backend") != "webgpu":
                        raise LaneError(_no_webgpu(spec, lane))
                    if self.on_start is not None:
                        self.on_start(lane)
                except Exception as exc:
                    if lane is not None:
                        lane.close()
                        lane = None
                    if browser_fault(exc) and state.restarted is None:
                        state.restarted = f"{type(exc).__name__}: {exc}"
                        continue
                    state.error = (f"lane {name}: {exc}" if isinstance(exc, LaneError)
                                   else f"lane {name}: could not start: {type(exc).__name__}: {exc}")
                    raise LaneError(state.error) from None
            state.open_s = time.monotonic() - state.started_at
            state.startup, state.mode, state.info, state.navigator = lane.startup, lane.mode, lane.info, lane.navigator
            self.lanes[name] = lane
        return self.lanes[name]

    def close_lane(self, name: str) -> None:
        """Note what the lane's runtime reports after its tests (e.g. the strategies it chose), close its page; a
        later get(name) loads it again."""
        lane = self.lanes.pop(name, None)
        if lane is None:
            return
        if not lane.crashed:
            with contextlib.suppress(Exception):   # a page that cannot answer has nothing more to say
                self.states[name].final_info = lane.run("rt.info()")
        try:
            lane.close()
        except Exception:
            pass

    def close(self) -> None:
        """Close every lane's page (close_lane)."""
        for name in list(self.lanes):
            self.close_lane(name)
