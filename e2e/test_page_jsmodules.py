"""gpuport's JS half in a bare Pyodide (web/pyodide.html: loadPyodide, micropip, no gpuport.js): what
backends/jsmodules.py does when the page holds a stale module or the installed package lacks a file. The
lanes chromium-webgpu(-main), firefox-webgpu(-main) and chromium-noflag run every case in such pages."""

from __future__ import annotations

import re
from pathlib import Path

import gpuport
import pytest
from gpuport.testing.pages import call_page

BARE = "/pyodide.html?open=0"

# A host that registered its own gpuport_bridge before the wheel's open(): another release's, or one
# without a version mark at all.
STALE = """
import gpuport, js, pyodide_js
from pyodide.ffi import to_js
pyodide_js.registerJsModule("gpuport_bridge", to_js({marks}, dict_converter=js.Object.fromEntries))
try:
    await gpuport.open(backend="webgpu")
    raised = None
except gpuport.JsHalfMismatch as exc:
    raised = [type(exc).__name__, str(exc), isinstance(exc, gpuport.BackendUnavailable)]
raised
"""


# each stale mark and each thread once (pairs, not the product): the message names the mark, and the check runs
# where Pyodide runs, in a worker or on the page's thread
@pytest.mark.parametrize("marks,found,worker", [({"VERSION": "0.0.1"}, "version 0.0.1", "1"), ({}, "no VERSION", "0")])
def test_a_stale_js_half_is_refused_by_name(chromium_webgpu, server_url, marks, found, worker):
    page = chromium_webgpu.new_page()
    try:
        page.goto(f"{server_url}{BARE}&worker={worker}")
        name, message, typed = call_page(page, "runPython", STALE.format(marks=marks))
        assert name == "JsHalfMismatch" and typed, (name, message)
        assert "'gpuport_bridge'" in message and found in message and gpuport.__version__ in message, message
    finally:
        page.close()


MISSING = """
import pathlib, gpuport
(pathlib.Path(gpuport.__file__).parent / "web" / "bridge.js").unlink()
try:
    await gpuport.open()
    raised = None
except gpuport.BackendUnavailable as exc:
    raised = [type(exc).__name__, str(exc)]
raised
"""


def test_a_package_without_its_js_file_names_it(chromium_webgpu, server_url):
    """A wheel that lost a file of its JS half: open() fails at once, naming the file, even with backend
    auto (which would otherwise step down to NumPy and hide a broken install)."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + BARE)
        name, message = call_page(page, "runPython", MISSING)
        assert name == "BackendUnavailable", (name, message)
        assert "gpuport/web/bridge.js is missing from the installed package" in message, message
    finally:
        page.close()


def test_open_twice_registers_once_and_both_runtimes_work(chromium_webgpu, server_url):
    """...and the stored chunks' check module, which idb.js imported from a blob: URL cannot find beside it, is given
    its bytes from the wheel (the check of no bytes: XXH32's of the empty input with seeds 0 and 1)."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + BARE)
        got = call_page(page, "runPython", "import gpuport, js, numpy as np\n"
                        "a = await gpuport.open(backend='webgpu')\nb = await gpuport.open(backend='webgpu')\n"
                        "import gpuport_bridge, gpuport_idb\n"
                        "x = np.arange(6, dtype=np.float32)\n"
                        "[(await a.ops.add(a.tensor(x), a.tensor(x)).read()).tolist(),"
                        " (await b.ops.add(b.tensor(x), b.tensor(x)).read()).tolist(), gpuport_bridge.VERSION,"
                        " gpuport_idb.checkOf(js.Uint8Array.new(0))]")
        assert got == [[0, 2, 4, 6, 8, 10]] * 2 + [gpuport.__version__, "02cc5d050b2cb792"], got
    finally:
        page.close()


ROOT = Path(__file__).resolve().parents[1]
PAGE_BLOCKS = list(dict.fromkeys(block for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
                                 for block in re.findall(r"```py\n(.*?)```", page.read_text(encoding="utf-8"), re.S)))


# Every text the page's #status shows, in order (recorded from before the page's script runs).
STATUS_HISTORY = """
window.statusHistory = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.id !== "status") continue;
    const text = [...r.addedNodes].map((n) => n.textContent).join("");
    if (text && text !== window.statusHistory.at(-1)) window.statusHistory.push(text);
  }
}).observe(document, { subtree: true, childList: true });
"""
BOOT_STEPS = ["reading the wheel's name", "starting its worker", "loading Pyodide", "loading NumPy and micropip",
              "installing gpuport with micropip"]


@pytest.mark.parametrize("worker", ["1", "0"])
def test_the_readme_lines_for_your_own_pyodide_run_as_written(chromium_webgpu, server_url, worker):
    """The guide's "gpuport in ... your own Pyodide" block (README and docs/page.md) in a bare Pyodide that has only NumPy and micropip,
    with this server's wheel for "https://your.host/...". On the way the page's status names each step of its start in
    turn (a lane whose start never ends reports the step it stopped in)."""
    assert len(PAGE_BLOCKS) == 1, PAGE_BLOCKS
    page = chromium_webgpu.new_page()
    try:
        page.add_init_script(STATUS_HISTORY)
        page.goto(f"{server_url}/pyodide.html?open=0&worker={worker}")
        call_page(page, "timings")
        history = page.evaluate("window.statusHistory")
        assert history[0] == "Starting…", history   # the page's own text, before its script runs
        history = history[1:]
        steps = [re.fullmatch(r"Starting: (.*) \(at \d+\.\d s\)…", text) for text in history[:-1]]
        assert all(steps) and history[-1] == "Ready.", history
        expected = BOOT_STEPS if worker == "1" else [s for s in BOOT_STEPS if "worker" not in s]
        assert [m.group(1) for m in steps] == expected, history
        wheel = page.evaluate("async () => (await (await fetch('/wheels/latest.json')).json()).gpuport")
        code = re.sub(r'"https://your\.host/wheels/[^"]+"', repr(server_url + wheel), PAGE_BLOCKS[0])
        assert code != PAGE_BLOCKS[0], "the README block no longer installs from https://your.host/wheels/"
        got = call_page(page, "runPython", code + "\n[rt.info()['backend'], rt.info()['tier']]")
        assert got == ["webgpu", "core"], got
    finally:
        page.close()


# The worker's source (a Blob of web/pyodide.html's boot) given a busy loop once it has begun loading Pyodide: its
# thread then stops for good, as Firefox's requestAdapter() has stopped one.
FREEZE_THE_WORKER = """
const PlainBlob = Blob;
window.Blob = class extends PlainBlob {
  constructor(parts, options) {
    const text = parts.length === 1 && typeof parts[0] === "string" ? parts[0] : "";
    super(text.startsWith("const boot =") ? [text.replace('step("loading Pyodide");',
      'step("loading Pyodide"); await new Promise((r) => setTimeout(r, 500)); for (;;) {}')] : parts, options);
  }
};
"""


def test_a_worker_frozen_as_it_starts_fails_the_start_naming_its_step(chromium_webgpu, server_url):
    """A Pyodide worker whose thread stops while the page starts: the page notices its beats stopped and fails the
    start (WorkerFrozen) naming the step, instead of waiting for ever."""
    page = chromium_webgpu.new_page()
    try:
        page.add_init_script(FREEZE_THE_WORKER)
        page.goto(f"{server_url}/pyodide.html?open=0&frozen=2")
        got = page.evaluate("() => window.gpuportReady.then(() => null, (e) => [e.name, e.message])")
        assert got is not None and got[0] == "WorkerFrozen", got
        assert re.fullmatch(r"the Pyodide worker stopped answering for \d s while loading Pyodide: "
                            r"its thread is blocked \(ended\)", got[1]), got
        assert page.text_content("#status") == f"WorkerFrozen: {got[1]}"
    finally:
        page.close()
