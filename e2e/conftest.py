"""e2e lanes: a real browser, the dev server, and one loaded page per lane shared by the whole session.

A lane is (browser, backend, mode). Loading Pyodide + NumPy + the wheel costs seconds, so each lane's
page loads once (session scope) and every test runs its body there through `runPython`.
A missing browser or a page that fails to start fails the tests with the reason; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES_SOURCE = (ROOT / "tests" / "cases.py").read_text(encoding="utf-8")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic"]
CHROMIUM_WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"]
START_TIMEOUT_MS = 180_000


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


def _require(path: str, package: str) -> None:
    if not Path(path).exists() and not shutil.which(path):
        pytest.fail(f"{path} is missing: install Debian's {package} (make test does: `make setup`)", pytrace=False)


@pytest.fixture(scope="session")
def chromium_webgpu(playwright):
    """Debian's Chromium with WebGPU on SwiftShader (DESIGN.md section 4)."""
    _require(CHROMIUM, "chromium")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_QUIET + CHROMIUM_WEBGPU)
    yield browser
    browser.close()


class Lane:
    """One loaded demo page; `run(src)` executes Python in its Pyodide and returns the result."""

    def __init__(self, name: str, page) -> None:
        self.name, self.page = name, page
        self.startup = page.evaluate("async () => (await window.gpuportReady).timings")
        self.info = self.run("rt.info()")
        self.run("import sys, types\n"
                 "_m = types.ModuleType('cases')\n"
                 f"exec(compile({CASES_SOURCE!r}, 'tests/cases.py', 'exec'), _m.__dict__)\n"
                 "sys.modules['cases'] = _m\nimport cases")

    def run(self, src: str):
        return self.page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", src)

    def case(self, name: str) -> None:
        self.run(f"await cases.CASES[{name!r}](rt)")


def open_lane(browser, server_url: str, name: str, query: str) -> Lane:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server_url}/?{query}")
    try:
        page.wait_for_function("() => window.gpuportReady !== undefined", timeout=30_000)
        page.evaluate("() => window.gpuportReady.then(() => true)")
    except Exception as exc:
        pytest.fail(f"lane {name}: the page did not start gpuport: {exc}\npage errors: {errors}", pytrace=False)
    return Lane(name, page)


LANES = {
    "chromium-webgpu-worker": ("chromium_webgpu", "backend=webgpu&table=0"),
    "chromium-webgpu-main": ("chromium_webgpu", "backend=webgpu&worker=0&table=0"),
    "chromium-cpu-worker": ("chromium_webgpu", "backend=cpu&table=0"),
}

_lanes: dict[str, Lane] = {}


@pytest.fixture(scope="session")
def lane_factory(request, server_url):
    def get(name: str) -> Lane:
        if name not in _lanes:
            browser_fixture, query = LANES[name]
            _lanes[name] = open_lane(request.getfixturevalue(browser_fixture), server_url, name, query)
        return _lanes[name]
    yield get
    report = {name: {"startup_ms": lane.startup, "info": lane.info} for name, lane in _lanes.items()}
    out = ROOT / "e2e" / "report"
    out.mkdir(exist_ok=True)
    (out / "lanes.json").write_text(json.dumps(report, indent=2, default=str))


def pytest_configure(config):
    os.environ.setdefault("PW_TEST_SCREENSHOT_NO_FONTS_READY", "1")
