"""examples/pyscript/: PyScript (npm @pyscript/core) on the local Pyodide 0.27.7 installs gpuport with
micropip, opens a runtime, runs a user WGSL kernel, reads gpuport.xp arrays of GPU values back synchronously
(float(), bool(), boolean indexing, unique_values) and embeds sentences with MiniLM, on the page's main thread
(index.html, in Chromium) and in a PyScript worker (worker.html, in Firefox), with every request on the
example's own origin (no CDN)."""

from __future__ import annotations

import importlib.util
import json
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from e2e_serve import served
from gpuport.testing.browsers import LaneError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pyscript_serve", ROOT / "examples" / "pyscript" / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)

LOADING = "Loading Pyodide and gpuport…"   # #status until main.py writes "Ready." or its exception
# 7-12 s here; the rest is headroom for a loaded 2-core machine. A worker that fails before main.py runs reaches
# no DOM (only the console), so such a failure is reported when this runs out.
DONE_TIMEOUT_MS = 120_000
TIERS = {"chromium-webgpu": "core", "firefox": "full"}
# web/bridge.js's console.debug line just before navigator.gpu.requestAdapter(); silent this long after it, the worker's
# thread is taken to be blocked there (gpuport's own pages fail such a start after 30 s without their worker's beats;
# PyScript's worker has none)
ADAPTER_LINE = "gpuport: navigator.gpu.requestAdapter()"
FROZEN_S = 30
POLL_MS = 2_000


@pytest.fixture(scope="module")
def example_url():
    yield from served(serve.create_app(), "the PyScript example's server")


class PageLog:
    """What a page said while it ran: uncaught errors, console errors and warnings (a worker's too: PyScript's
    boot failures and a worker's tracebacks land only there), failed requests; and every origin it asked."""

    def __init__(self, page) -> None:
        self.origins: set[str] = set()
        self.lines: list[str] = []
        self.last: deque[str] = deque(maxlen=12)
        self.t0 = time.monotonic()
        self.heard_at, self.heard = self.t0, ""   # the console's last line of any kind, and when it came
        page.on("request", self._request)
        page.on("pageerror", lambda e: self.lines.append(f"page error: {e}"))
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self.lines.append(f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: self.lines.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def _request(self, request) -> None:
        if request.url.startswith(("http:", "https:")):   # not the blob: URLs of PyScript's worker and modules
            self.origins.add(urlparse(request.url).netloc)

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.lines.append(f"console {message.type}: {message.text}")
        self.last.append(f"{time.monotonic() - self.t0:.1f} s, console {message.type}: {message.text[:300]}")
        self.heard_at, self.heard = time.monotonic(), message.text

    def frozen_in_request_adapter(self) -> bool:
        """Firefox's navigator.gpu.requestAdapter() in a worker has blocked the worker's thread for good (docs/testing.md):
        the bridge's line before that call is the console's last, and nothing has come for FROZEN_S."""
        return self.heard == ADAPTER_LINE and time.monotonic() - self.heard_at >= FROZEN_S

    def report(self, page, what: str) -> str:
        boxes = page.locator(".py-error").all_inner_texts()   # PyScript's error box, on the main thread
        # the console's last lines of any kind (Pyodide's "Loading ...", gpuport's warnings): where a boot stopped
        return "\n".join([what, *(f"PyScript error box: {box}" for box in boxes), *self.lines,
                          "the console's last lines:", *self.last])


# Each browser and each of PyScript's two ways once (pairs, not the product): the page's thread in Chromium, a
# PyScript worker in Firefox. Either browser's bare Pyodide runs from a worker and from the page's thread in the
# lanes already (pyodide.html); what is PyScript's own here is its two boots, and each needs one browser.
@pytest.mark.parametrize(("kind", "page_name"), [("chromium-webgpu", "index.html"), ("firefox", "worker.html")])
def test_pyscript_page_runs_a_kernel_and_minilm(browsers, example_url, kind, page_name):
    try:
        browser = browsers.get(kind)
    except LaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    # A worker frozen inside Firefox's requestAdapter() is the browser's fault, not the page's: the page is run once more
    # in a fresh context, saying so, as the plugin starts such a lane again; a second freeze fails the test.
    for _ in range(2):
        if _run_page(browser, example_url, kind, page_name) != "frozen":
            return
        print(f"\n{page_name}: the worker froze in Firefox's requestAdapter() ({FROZEN_S} s without a console line "
              f"after {ADAPTER_LINE!r}); running it again")
    pytest.fail(f"{page_name}: the worker froze in Firefox's requestAdapter() twice", pytrace=False)


def _finished(log: PageLog, finished) -> bool | str:
    """Whether `finished` showed within DONE_TIMEOUT_MS, or "frozen" where the worker froze in requestAdapter()."""
    from playwright.sync_api import expect

    deadline = time.monotonic() + DONE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        try:
            expect(finished).to_be_visible(timeout=POLL_MS)
            return True
        except AssertionError:
            if log.frozen_in_request_adapter():
                return "frozen"
    return False


def _run_page(browser, example_url: str, kind: str, page_name: str) -> str | None:
    context = browser.new_context()
    page = context.new_page()
    log = PageLog(page)
    try:
        page.goto(f"{example_url}/examples/pyscript/{page_name}")
        status = page.locator("#status")
        # main.py's last word in #status, or PyScript's error box where Python never ran
        finished = _finished(log, page.locator("#status", has_not_text=LOADING).or_(page.locator(".py-error")).first)
        if finished == "frozen":
            return "frozen"
        if not finished:
            reason = log.report(page, f"{page_name} still says {status.inner_text()!r} after {DONE_TIMEOUT_MS} ms")
        else:
            reason = None if status.inner_text() == "Ready." else log.report(page, status.inner_text())
        if reason is not None:
            pytest.fail(reason, pytrace=False)

        assert json.loads(page.locator("#backend").inner_text()) == {
            "backend": "webgpu", "tier": TIERS[kind], "worker": page_name == "worker.html"}
        assert json.loads(page.locator("#kernel").inner_text()) == (2 * np.arange(100, dtype=np.float32) + 1).tolist()
        # gpuport.xp's synchronous reads of GPU values, in PyScript's Pyodide (JSPI: the call waits for the GPU)
        assert json.loads(page.locator("#arrays").inner_text()) == {
            "sum": 24.0, "any negative": True, "positive": [12.0, 5.0, 5.0, 12.0], "distinct |a|": [0, 1, 2, 3, 4],
            "ran on": ["webgpu"]}
        emb = json.loads(page.locator("#embeddings").inner_text())
        assert emb["shape"] == [3, 384] and all(abs(n - 1) < 1e-4 for n in emb["norms"]), emb
        assert emb["cosine"] > 0.5, emb   # two sentences about eating: close
        assert log.origins == {urlparse(example_url).netloc}, log.report(
            page, f"requests left the example's origin: {sorted(log.origins)}")
        return None
    finally:
        context.close()


def test_a_worker_silent_after_the_adapter_request_is_taken_as_frozen(monkeypatch):
    """The signature the retry above acts on: the bridge's line before requestAdapter() last, then FROZEN_S of silence;
    any later line, or a shorter silence, is no freeze."""
    class Page:
        def on(self, event, handler):
            self.handlers = {**getattr(self, "handlers", {}), event: handler}

    class Message:
        def __init__(self, text):
            self.type, self.text = "debug", text

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    page = Page()
    log = PageLog(page)
    page.handlers["console"](Message(ADAPTER_LINE))
    now[0] += FROZEN_S - 1
    assert not log.frozen_in_request_adapter()
    now[0] += 1
    assert log.frozen_in_request_adapter()
    page.handlers["console"](Message("gpuport: adapter.requestDevice()"))
    now[0] += FROZEN_S
    assert not log.frozen_in_request_adapter()
