"""The page's JS API beyond runPython (worker and main thread): typed arrays in and out of NumPy
(setArray/getArray), modules from source (addModule), errors that keep their Python type; and the demo page's
start-up stages and compatibility report as HTML tables that fit the page."""

from __future__ import annotations

import re
import time

import pytest
from gpuport.testing import pages

ARRAYS = """async () => {
  const gp = await window.gpuportReady;
  await gp.runPython("import numpy as np");
  await gp.setArray("a", new Int32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  await gp.setArray("f", new Float64Array([0.5, 1.5]));
  const seen = await gp.runPython("[str(a.dtype), list(a.shape), a.sum().item(), str(f.dtype), f.tolist(), " +
                                  "bool(a.flags.writeable)]");
  const plain = (r) => ({ data: Array.from(r.data, Number), shape: r.shape, dtype: r.dtype, type: r.data.constructor.name });
  const t = plain(await gp.getArray("a.T * 2"));          // not contiguous in NumPy: made so on the way out
  const mask = plain(await gp.getArray("a > 2"));
  const big = plain(await gp.getArray("np.arange(3, dtype=np.int64)"));
  const y = plain(await gp.getArray("(await rt.ops.scale(rt.tensor(a.astype(np.float32)), 2.0, 0.5).read())"));
  return { seen, t, mask, big, y };
}"""

MODULES = """async () => {
  const gp = await window.gpuportReady;
  await gp.addModule("mine", "def twice(x):\\n    return 2 * x\\n", "mine.py");
  const value = await gp.runPython("import mine\\nmine.twice(21)");
  const error = async (p) => { try { await p; return null; } catch (e) { return [e.name, e.message]; } };
  return {
    value,
    syntax: await error(gp.addModule("broken", "def f(:\\n", "broken.py")),
    raised: await error(gp.runPython("import mine\\nmine.twice()")),
    notArray: await error(gp.setArray("z", [1, 2, 3])),
  };
}"""


# start()'s object (gpuport.js): in a worker (chromium-cpu, firefox-auto) and on the main thread
# (chromium-tier-constrained)
@pytest.mark.parametrize("lane", ["chromium-cpu", "chromium-tier-constrained", "firefox-auto"])
def test_typed_arrays_cross_into_numpy_and_back(lane_factory, lane):
    page = lane_factory(lane).page
    out = page.evaluate(ARRAYS)
    assert out["seen"] == ["int32", [2, 3], 21, "float64", [0.5, 1.5], True], out["seen"]
    assert out["t"] == {"data": [2, 8, 4, 10, 6, 12], "shape": [3, 2], "dtype": "int32", "type": "Int32Array"}
    assert out["mask"] == {"data": [0, 0, 1, 1, 1, 1], "shape": [2, 3], "dtype": "bool", "type": "Uint8Array"}
    assert out["big"] == {"data": [0, 1, 2], "shape": [3], "dtype": "int64", "type": "BigInt64Array"}
    assert out["y"]["data"] == [2.5, 4.5, 6.5, 8.5, 10.5, 12.5] and out["y"]["type"] == "Float32Array", out["y"]


@pytest.mark.parametrize("lane", ["chromium-cpu", "chromium-tier-constrained"])
def test_modules_from_source_and_errors_keep_their_python_type(lane_factory, lane):
    out = lane_factory(lane).page.evaluate(MODULES)
    assert out["value"] == 42
    assert out["syntax"][0] == "SyntaxError" and 'File "broken.py", line 1' in out["syntax"][1], out["syntax"]
    assert out["raised"][0] == "TypeError" and "twice()" in out["raised"][1], out["raised"]
    assert out["notArray"][0] == "TypeError" and "typed array" in out["notArray"][1], out["notArray"]


def test_a_page_call_that_never_answers_fails_by_its_deadline_naming_the_call(lane_factory, monkeypatch):
    lane = lane_factory("chromium-cpu")
    monkeypatch.setattr(pages, "SCRIPT_TIMEOUT_S", 2)
    t0 = time.perf_counter()
    with pytest.raises(pages.PageError, match=r"runPython: no answer from the page in 2 s"):
        lane.run("import asyncio\nawait asyncio.Event().wait()")   # awaits for ever
    assert time.perf_counter() - t0 < 30
    monkeypatch.undo()
    assert lane.run("6 * 7") == 42   # the lane goes on


STALLED = """
import gpuport, js
from gpuport.backends import browser, pageio
from gpuport.platform import within

def never(*args):   # a browser promise that never settles
    return js.Promise.new(lambda resolve, reject: None)

class Stalled:   # the bridge or IndexedDB module, but `name` never answers
    def __init__(self, module, name):
        self.module, self.name = module, name
    def __getattr__(self, name):
        return never if name == self.name else getattr(self.module, name)

def error(exc):
    return [type(exc).__name__, str(exc)]

out = {}
real = browser.bridge, browser.DEVICE_WAIT_S, pageio.idb, pageio.RECORD_WAIT_S
browser.bridge, browser.DEVICE_WAIT_S = Stalled(browser.bridge, "open"), 0.5
pageio.idb, pageio.RECORD_WAIT_S = Stalled(pageio.idb, "get"), 0.5
try:
    try:
        await within(never(), 0.2, "a promise")
    except gpuport.NoAnswer as exc:
        out["within"] = error(exc)
    out["record"] = await pageio.IndexedDBStore("manifests").load("any")
    opened = await gpuport.open()
    out["auto"] = [opened.backend, opened.note]
    opened.close()
    try:
        await gpuport.open(backend="webgpu")
    except gpuport.BackendUnavailable as exc:
        out["webgpu"] = error(exc)
finally:
    browser.bridge, browser.DEVICE_WAIT_S, pageio.idb, pageio.RECORD_WAIT_S = real
opened = await gpuport.open(backend="webgpu")
out["after"] = opened.backend
opened.close()
out
"""


# A browser request that never settles (Firefox once left a start-up waiting in open() until the benchmark gave up)
# fails by its deadline, naming the request: auto goes on on the host and says why; storage reads count as missing.
@pytest.mark.parametrize("lane", ["chromium-auto", "firefox-auto"])
def test_open_goes_on_when_the_browser_never_answers(lane_factory, lane):
    out = lane_factory(lane).run(STALLED)
    assert out["within"] == ["NoAnswer", "a promise: no answer in 0.2 s"], out
    assert out["record"] is None, out
    request = "navigator.gpu's adapter and device request: no answer in 0.5 s"
    assert out["auto"] == ["cpu", f"webgpu unavailable: {request}"], out
    assert out["webgpu"] == ["BackendUnavailable", request], out
    assert out["after"] == "webgpu", out


def test_demo_page_shows_startup_stages_and_the_report_as_tables(chromium_webgpu, server_url):
    from playwright.sync_api import expect

    page = chromium_webgpu.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(server_url + "/?table=0&precompile=off")
        expect(page.locator("#doctor-section")).to_be_visible(timeout=180_000)
        stages = page.locator("#boot-stages li.done").all_inner_texts()
        assert [s.split(" ")[0] for s in stages] == ["Pyodide", "NumPy", "the"], stages
        assert all(s.endswith(" s") for s in stages), stages
        assert page.locator("#boot-progress").evaluate("p => p.value") == 100
        assert page.locator("#status").inner_text() == "Ready."
        tables = page.locator("#doctor-html table")
        assert tables.count() == 2   # limits, plan per op
        ops = page.locator("#doctor-html table").nth(1).locator("tbody td:first-child").all_inner_texts()
        assert "matmul" in ops and "attention" in ops, ops
        assert page.locator("#doctor-summary dt").all_inner_texts()[:2] == ["backend", "tier"]
        page.locator("#doctor-section summary").click()   # the Markdown too, opened
        expect(page.locator("#doctor")).to_be_visible()
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"
    finally:
        page.close()


def test_a_worker_frozen_as_it_starts_fails_start_naming_the_stage(chromium_webgpu, server_url):
    """gpuport's worker (web/worker.js) given a busy loop as it says its packages stage has begun: its thread stops for
    good, as Firefox's requestAdapter() has stopped one; start() notices the beats stopped and fails (WorkerFrozen)
    naming the stage. (A loop set off by a timer raced the boot: a boot quicker than the timer resolved the start.)"""
    page = chromium_webgpu.new_page()
    try:
        freeze = """
const post = self.postMessage.bind(self);
self.postMessage = (message, transfer) => {
  post(message, transfer);
  const progress = message && message.progress;
  if (progress && progress.stage === "packages" && progress.state === "start") for (;;) {}
};
"""

        def frozen_worker(route):
            response = route.fetch()
            route.fulfill(response=response, body=response.text() + freeze)

        page.route("**/worker.js*", frozen_worker)
        page.goto(server_url + "/test.html?frozen=2")
        got = page.evaluate("() => window.gpuportReady.then(() => null, (e) => [e.name, e.message])")
        assert got is not None and got[0] == "WorkerFrozen", got
        assert re.fullmatch(r"gpuport's Pyodide worker stopped answering for \d s in its packages "
                            r"stage: its thread is blocked \(ended\)", got[1]), got
        assert page.text_content("#status") == f"WorkerFrozen: {got[1]}"
        bad = page.evaluate("async () => (await import('./gpuport.js')).start({ frozenS: 0 }).then(() => null, "
                            "(e) => [e.name, e.message])")
        assert bad == ["TypeError", "gpuport: frozenS must be a number of seconds > 0, not 0"], bad
    finally:
        page.close()
