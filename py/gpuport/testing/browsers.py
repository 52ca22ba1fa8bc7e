"""Browser launch recipes (verified on Debian bookworm) and the per-session pool that launches each once.

- `chromium-webgpu`: Debian's Chromium with WebGPU on SwiftShader (`--enable-unsafe-webgpu`), Playwright;
- `chromium-noflag`: the same Chromium without the WebGPU flag (no adapter: the cpu fallback);
- `firefox`: Firefox ESR on lavapipe through Playwright's WebDriver BiDi (only playwright==1.64.1 speaks
  to ESR 153), WebGPU enabled by prefs;
- `webkit`: WebKitGTK's MiniBrowser through Selenium's WebKitGTK driver under a private Xvfb.

A `Remote` lends a browser from another machine instead: a Playwright browser server (`playwright
run-server`) over its WebSocket, or any WebDriver URL (WebKitGTK's driver, safaridriver, a Selenium Grid).

Executables come from the environment when set (GPUPORT_CHROMIUM, GPUPORT_FIREFOX, GPUPORT_MINIBROWSER,
GPUPORT_WEBKIT_DRIVER, GPUPORT_XVFB), else Debian's paths. Playwright and Selenium are the `test` extra:
this module imports without them and says so only when a browser is asked for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:  # the "test" extra; absent, browser lanes fail with a message naming it
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

    class PlaywrightError(Exception):  # type: ignore[no-redef]
        """Stands in for playwright's Error where Playwright is not installed (nothing raises it)."""

try:
    from selenium import webdriver
    from selenium.webdriver.remote.client_config import ClientConfig
    from selenium.webdriver.safari.options import Options as SafariOptions
    from selenium.webdriver.webkitgtk.options import Options as WebKitOptions
    from selenium.webdriver.webkitgtk.service import Service as WebKitService
    from urllib3 import Timeout
except ImportError:
    webdriver = None

EXTRA = "pip install 'gpuport[test]' (playwright==1.64.1 and selenium)"

CHROMIUM_QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic"]
CHROMIUM_WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"]
FIREFOX_PREFS = {
    "dom.webgpu.enabled": True,
    "gfx.webgpu.ignore-blocklist": True,
    # quiet: no update checks, telemetry or first-run pages in a test profile
    "app.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
}
START_TIMEOUT_S = 180
SCRIPT_TIMEOUT_S = 300
# A remote endpoint answers at once when it is there: an unreachable one fails in this time, not in minutes. A
# WebDriver endpoint's answers to a script wait for the script (up to SCRIPT_TIMEOUT_S): read for that long and this.
CONNECT_TIMEOUT_S = 30

# executable -> (environment variable, Debian's path, the Debian package that provides it)
EXECUTABLES = {
    "chromium": ("GPUPORT_CHROMIUM", "/usr/bin/chromium", "chromium"),
    "firefox": ("GPUPORT_FIREFOX", "/usr/bin/firefox-esr", "firefox-esr"),
    "minibrowser": ("GPUPORT_MINIBROWSER", "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
                    "webkit2gtk-driver (MiniBrowser comes with libwebkit2gtk-4.1)"),
    "webkit-driver": ("GPUPORT_WEBKIT_DRIVER", "/usr/bin/WebKitWebDriver", "webkit2gtk-driver"),
    "xvfb": ("GPUPORT_XVFB", "/usr/bin/Xvfb", "xvfb"),
}
# browser kind -> the executables it needs and the Python package that drives it
NEEDS = {
    "chromium-webgpu": (("chromium",), "playwright"),
    "chromium-noflag": (("chromium",), "playwright"),
    "firefox": (("firefox",), "playwright"),
    "webkit": (("minibrowser", "webkit-driver", "xvfb"), "selenium"),
    "safari": ((), "selenium"),   # remote only: safaridriver runs on a Mac
}
# What a remote Playwright server is asked to launch (its `x-playwright-launch-options`): WebGPU on, with the
# remote machine's own adapter (no SwiftShader there). The server applies args and prefs only when started
# with --unsafe; `?launch-options=JSON` in the endpoint is merged over these (an executablePath there, say).
REMOTE_LAUNCH = {
    "chromium-webgpu": {"args": CHROMIUM_QUIET + ["--enable-unsafe-webgpu", "--enable-features=Vulkan"]},
    "chromium-noflag": {"args": CHROMIUM_QUIET},
    "firefox": {"firefoxUserPrefs": FIREFOX_PREFS},
    "webkit": {},
}
PLAYWRIGHT_TYPES = {"chromium-webgpu": "chromium", "chromium-noflag": "chromium", "firefox": "firefox",
                    "webkit": "webkit"}


class LaneError(Exception):
    """A lane could not start: its browser is missing, or its page did not start gpuport."""


@dataclass(frozen=True)
class Remote:
    """A browser lent by another machine: `protocol` "playwright" (url ws://HOST:PORT/PATH of a Playwright
    server) or "webdriver" (url http://HOST:PORT of a WebDriver server)."""

    protocol: str
    url: str

    @property
    def endpoint(self) -> str:
        """The URL as shown in reports: without a `launch-options` query."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(query=urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "launch-options"])))

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def on_loopback(self) -> bool:
        """Whether the endpoint is on this machine (so it reaches this machine's loopback)."""
        host = self.host
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def playwright_endpoint(self, kind: str) -> tuple[str, dict[str, str]]:
        """The WebSocket URL without `launch-options` and the headers that carry the merged launch options."""
        try:
            given = json.loads(dict(parse_qsl(urlsplit(self.url).query)).get("launch-options", "{}"))
        except json.JSONDecodeError as exc:
            raise LaneError(f"{self.url}: launch-options is not JSON: {exc}") from None
        return self.endpoint, {"x-playwright-launch-options": json.dumps({**REMOTE_LAUNCH[kind], **given})}


def executable(key: str) -> str:
    """The path configured for `key` (see EXECUTABLES): its environment variable, else Debian's path."""
    env, default, _ = EXECUTABLES[key]
    return os.environ.get(env) or default


def missing(kind: str, remote: Remote | None = None) -> str | None:
    """Why browser `kind` cannot launch here (a missing executable or driver package), or None; for a remote
    browser only its driver package counts."""
    names, driver = NEEDS[kind]
    if remote is not None:
        driver, names = remote.protocol, ()
    elif kind == "safari":
        return "safari runs on a Mac: lend it with --gpuport-webdriver safari=http://HOST:PORT (safaridriver --port)"
    if (sync_playwright if driver == "playwright" else webdriver) is None:
        return f"{kind} needs the Python package {driver}: {EXTRA}"
    for key in names:
        env, default, package = EXECUTABLES[key]
        path = executable(key)
        if not Path(path).is_file() and not shutil.which(path):
            source = f"from ${env}" if os.environ.get(env) else f"set ${env} to use another"
            return f"{kind}: {path} is missing ({source}); install Debian's {package} (`make setup` does)"
    return None


def _require(kind: str, remote: Remote | None) -> None:
    reason = missing(kind, remote)
    if reason:
        raise LaneError(reason)


def _xdg_runtime_dir() -> None:
    # Firefox and WebKitGTK want one; a private one per session is enough.
    if not os.environ.get("XDG_RUNTIME_DIR") or not os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="gpuport-xdg-")


class Xvfb:
    """A private X server: Xvfb picks a free display itself (-displayfd) and tells us which."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([executable("xvfb"), "-displayfd", str(write_fd), "-screen", "0",
                                      "1280x1024x24", "-nolisten", "tcp"],
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
    """Launches each kind of browser once, on first use (or connects to a remote one once per endpoint), and
    closes them all in `close()`.

    `playwright`: a started Playwright (pytest-playwright's fixture, so one session shares one), or a
    callable giving one; None starts a private one on first use.
    """

    def __init__(self, playwright: Any = None) -> None:
        self._playwright = playwright
        self._open: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._closers: list[Callable[[], None]] = []
        self.launch_s: dict[str, float] = {}
        self.versions: dict[str, str] = {}

    @staticmethod
    def key(kind: str, remote: Remote | None = None) -> str:
        """The pool's name for a browser: its kind, or kind@endpoint for a remote one."""
        return kind if remote is None else f"{kind}@{remote.endpoint}"

    def get(self, kind: str, remote: Remote | None = None) -> Any:
        """The launched browser of `kind` (a Playwright Browser, or a Selenium driver for webkit and for
        WebDriver endpoints); with `remote`, the one that endpoint lends."""
        key = self.key(kind, remote)
        if key in self._failed:
            raise LaneError(self._failed[key])
        if key not in self._open:
            t0 = time.monotonic()
            try:
                _require(kind, remote)
                self._open[key] = (getattr(self, "_launch_" + kind.replace("-", "_"))() if remote is None else
                                   self._connect_playwright(kind, remote) if remote.protocol == "playwright" else
                                   self._connect_webdriver(kind, remote))
            except LaneError as exc:
                self._failed[key] = str(exc)
                raise
            except Exception as exc:  # a launch failure is the lane's failure, with the browser's words
                what = "the browser did not launch" if remote is None else f"no browser from {remote.endpoint}"
                self._failed[key] = f"{kind}: {what}: {type(exc).__name__}: {_first_lines(str(exc))}"
                raise LaneError(self._failed[key]) from exc
            self.launch_s[key] = time.monotonic() - t0
        return self._open[key]

    def _pw(self) -> Any:
        if callable(self._playwright):
            self._playwright = self._playwright()
        if self._playwright is None:
            manager = sync_playwright().start()
            self._closers.insert(0, manager.stop)  # stopped after every browser it launched
            self._playwright = manager
        return self._playwright

    def _playwright_browser(self, kind: str, browser: Any) -> Any:
        self._closers.append(browser.close)
        self.versions[kind] = browser.version
        return browser

    def _launch_chromium_webgpu(self) -> Any:
        return self._playwright_browser("chromium-webgpu", self._pw().chromium.launch(
            executable_path=executable("chromium"), args=CHROMIUM_QUIET + CHROMIUM_WEBGPU))

    def _launch_chromium_noflag(self) -> Any:
        return self._playwright_browser("chromium-noflag", self._pw().chromium.launch(
            executable_path=executable("chromium"), args=CHROMIUM_QUIET))

    def _launch_firefox(self) -> Any:
        _xdg_runtime_dir()
        return self._playwright_browser("firefox", self._pw().firefox.launch(
            channel="moz-firefox", executable_path=executable("firefox"), firefox_user_prefs=FIREFOX_PREFS))

    def _connect_playwright(self, kind: str, remote: Remote) -> Any:
        url, headers = remote.playwright_endpoint(kind)
        browser_type = getattr(self._pw(), PLAYWRIGHT_TYPES[kind])
        # The remote browser reaches this machine's loopback through the connection (Playwright's SOCKS
        # proxy): the plugin's pages need no address the other machine can route to.
        browser = browser_type.connect(url, timeout=CONNECT_TIMEOUT_S * 1000, headers=headers,
                                       expose_network="<loopback>")
        self._closers.append(browser.close)
        self.versions[self.key(kind, remote)] = browser.version
        return browser

    def _connect_webdriver(self, kind: str, remote: Remote) -> Any:
        """webkit or safari (the plugin's options allow no other WebDriver lane)."""
        options = SafariOptions() if kind == "safari" else WebKitOptions()
        if kind == "webkit":
            options.binary_location = executable("minibrowser")   # the path on the remote machine
            options.add_argument("--automation")
        return self._webdriver(self.key(kind, remote), webdriver.Remote(
            command_executor=remote.url, options=options,
            client_config=ClientConfig(remote_server_addr=remote.url, timeout=Timeout(
                connect=CONNECT_TIMEOUT_S, read=SCRIPT_TIMEOUT_S + CONNECT_TIMEOUT_S))))

    def _webdriver(self, key: str, driver: Any) -> Any:
        """A started Selenium driver, set up as every WebDriver lane needs: timeouts, its version, closed last."""
        self._closers.append(driver.quit)  # closers run in reverse: the driver quits before an X server it uses
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
        driver.set_page_load_timeout(START_TIMEOUT_S)
        caps = driver.capabilities
        self.versions[key] = f"{caps.get('browserName', '?')} {caps.get('browserVersion', '?')}"
        return driver

    def _launch_webkit(self) -> Any:
        _xdg_runtime_dir()
        xvfb = Xvfb()
        self._closers.append(xvfb.close)
        options = WebKitOptions()
        options.binary_location = executable("minibrowser")
        options.add_argument("--automation")
        env = dict(os.environ, DISPLAY=xvfb.display)
        driver = webdriver.WebKitGTK(options=options,
                                     service=WebKitService(executable_path=executable("webkit-driver"), env=env))
        return self._webdriver("webkit", driver)

    @property
    def launched(self) -> list[str]:
        """The browsers this pool launched or connected to (their keys), in order."""
        return list(self.launch_s)

    def close(self) -> None:
        """Close every browser (and the X server, and a private Playwright) this pool started."""
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # closing is best effort: a crashed browser must not hide the test results
                pass
        self._closers.clear()
        self._open.clear()


def _first_lines(text: str, n: int = 6) -> str:
    """Playwright's connection errors carry a long call log: its first lines say what failed."""
    return "\n".join(text.strip().splitlines()[:n])
