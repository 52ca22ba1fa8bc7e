"""What the site lists beside the gpuport wheel (py/gpuport/site/site_files.py), in the page: start() fetches each file
beside the boot and checks its SHA-256 against wheels/latest.json. NumPy and gpuport come from their page archives,
written from JS (web/wheels.js), and Pyodide counts them as installed (in the worker, only the shared libraries
`import numpy` needs load at install); NumPy's bytecode is written over NumPy, so
`import numpy` compiles nothing. An archive altered in transit is refused and the page does as before: Pyodide's
loadPackage installs both, NumPy is compiled on import, and the site's snapshot (made with NumPy imported from that
archive) is not booted from; timings say why. With the snapshot, NumPy comes imported and its libraries are linked
back, and gpuport comes imported where its archive is the one the snapshot was made with (else the snapshot's
gpuport is forgotten and the installed one imported). The host kernels' build that open() links is compiled from the wheel's archive beside the boot, as NumPy's
libraries are. Pyodide in its Web Worker (Chromium and Firefox) and on the page's thread (Chromium). (The Pyodide
snapshot itself: test_page_snapshot.py.)"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from gpuport.testing.pages import browser_fault, call_page

# "snapshot's gpuport": gpuport's functions are in the generation gc.freeze() keeps, as the snapshot's maker left them
USED = """
import gc, importlib.metadata as md, numpy as np, gpuport
{"works": float(np.linalg.norm([3.0, 4.0])), "gpuport": md.version("gpuport"),
 "snapshot's gpuport": not any(o is gpuport.open for o in gc.get_objects()),
 "installer": md.distribution("numpy").read_text("INSTALLER"),
 "later": float(np.fft.fft([1.0, 1.0]).real[0]) + float(np.random.default_rng(0).random() < 1)}
"""


def _start(context, url: str) -> dict:
    """Boot the page at `url` in a tab of its own, closed after, so no boot shares a renderer with a previous
    Pyodide's leftovers (once, in a fresh-clone run beside the unit tests, Chromium's renderer crashed on a second
    boot navigated in the same tab; the browser said no more than "Target crashed"). A renderer that dies anyway
    (once more in a fresh-clone run on 2026-11-29, the main thread's boot, which then passed alone twice) is the
    browser's fault, as for a lane's page (gpuport.testing.pages.browser_fault): the boot is made once more in a new
    tab, and says so. The context's HTTP cache and storage are shared, as a tab's are. Auto's calibration is left to
    an idle moment, which these short visits never reach: they test how the page starts, not where it places work
    (at open it measured for 1-2 s on each boot)."""
    for attempt in (1, 2):
        page = context.new_page()
        try:
            page.goto(url + ("&" if "?" in url else "?") + "calibrate=idle")
            timings = call_page(page, "timings")
            out = call_page(page, "runPython", USED)
            break
        except Exception as exc:
            if attempt == 2 or not browser_fault(exc):
                raise
            print(f"\n{url}: the browser's renderer failed ({str(exc).splitlines()[0]}); booting once more")
        finally:
            page.close()
    return {"packages": timings["packages"], "bytecode": timings["numpy_bytecode"],
            "libraries": timings.get("numpy_libraries"), "interpreter": timings.get("interpreter"),
            "snapshot": timings["snapshot"], "kernels": timings.get("host_kernels_compiled"), **out}


def _altered(route):
    body = bytearray(route.fetch().body())
    body[len(body) // 2] ^= 0xFF
    route.fulfill(body=bytes(body), headers={"content-type": "application/gzip"})


# Firefox boots the worker's two ways (from the site's snapshot, and without one). The page's own thread is where
# Chromium refuses to compile a large module synchronously, and an altered archive is refused by the page's own
# SHA-256 check before any engine sees it: those four boots run in Chromium.
@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_page_archives_are_used_and_an_altered_one_is_refused(browsers, server_url, kind):
    every = kind == "chromium-webgpu"
    context = browsers.get(kind).new_context()
    try:
        # the site's snapshot holds NumPy imported: its libraries are linked back, the others load when imported
        got = _start(context, server_url + "/test.html")
        assert got.pop("snapshot").startswith("restored from the site"), got
        assert got == {"packages": "NumPy and gpuport imported in the snapshot, gpuport's files from the site's archive",
                       "bytecode": "used", "snapshot's gpuport": True,
                       "works": 5.0, "gpuport": "0.1.0", "installer": "pyodide.loadPackage", "later": 3.0,
                       "interpreter": "compiled by the page", "kernels": "beside the boot",
                       "libraries": "3 linked back from the snapshot, the rest on import"}, got
        # on the page's main thread the others load at start (no synchronous compile of a large module there)
        if every:
            got = _start(context, server_url + "/test.html?worker=0")
            assert got["snapshot"].startswith("restored from the site"), got
            assert (got["packages"], got["libraries"], got["works"], got["later"], got["kernels"],
                    got["snapshot's gpuport"]) == \
                ("NumPy and gpuport imported in the snapshot, gpuport's files from the site's archive",
                 "3 linked back from the snapshot, the other 16 loaded", 5.0, 3.0, "beside the boot", True), got

        # without a snapshot, in the worker, NumPy's shared libraries that `import numpy` needs load at install, the
        # others (fft's, random's) when imported; Pyodide's interpreter was compiled by the page from start() on
        # (gpuport.js), not by the worker's loadPyodide, and the archives were inflated by the page too (and moved to
        # the worker)
        got = _start(context, server_url + "/test.html?snapshot=0")
        assert got.pop("snapshot") == "off", got
        assert got == {"packages": "from the site's archives (inflated by the page's thread)", "bytecode": "used",
                       "snapshot's gpuport": False, "works": 5.0, "gpuport": "0.1.0", "installer": "pyodide.loadPackage", "later": 3.0,
                       "interpreter": "compiled by the page", "kernels": "beside the boot",
                       "libraries": "3 of 19 at install (3 compiled beside the boot), the rest on import"}, got

        if not every:
            return
        # on the page's main thread every one loads at install
        got = _start(context, server_url + "/test.html?worker=0&snapshot=0")
        assert (got["packages"], got["libraries"], got["works"], got["later"], got["interpreter"]) == \
            ("from the site's archives", "all 19 at install (3 compiled beside the boot)", 5.0, 3.0,
             "compiled by the page"), got

        # gpuport's archive altered in transit: the wheel is installed instead and the snapshot's gpuport, imported
        # from the archive, forgotten (NumPy's stays)
        context.route("**/gpuport-wheel-*.zip.gz", _altered)
        got = _start(context, server_url + "/test.html")
        assert got["snapshot"].startswith("restored from the site"), got
        assert got["packages"].startswith("NumPy imported in the snapshot, gpuport by loadPackage: ") and \
            got["packages"].endswith("(the snapshot's gpuport, of another archive, forgotten)"), got
        assert (got["snapshot's gpuport"], got["works"], got["gpuport"], got["later"]) == (False, 5.0, "0.1.0", 3.0), got
        context.unroute("**/gpuport-wheel-*.zip.gz")

        # an archive altered in transit: the snapshot, made with NumPy's, is not booted from either
        context.route("**/numpy-wheel-*.zip.gz", _altered)
        context.route("**/numpy-bytecode-*.zip.gz", _altered)
        got = _start(context, server_url + "/test.html")
        assert got["packages"].startswith("loadPackage: ") and "its sha256 is" in got["packages"], got
        assert got["bytecode"].startswith("not used: ") and "its sha256 is" in got["bytecode"], got
        assert got["works"] == 5.0 and got["gpuport"] == "0.1.0" and got["later"] == 3.0, got   # installed by Pyodide
        assert "its NumPy cannot be linked back without NumPy's archive" in got["snapshot"], got
    finally:
        context.close()


def test_a_worker_module_that_does_not_load_fails_start_saying_so(browsers, server_url):
    """The Pyodide worker imports its modules as it starts (web/worker.js); one that does not load rejects start()
    with the reason, never a boot that waits for ever. host.js: the one module of the worker's that the page's own
    gpuport.js does not import (one it does would stop the page's script before start())."""
    context = browsers.get("chromium-webgpu").new_context()
    try:
        # by path: the dev server's pages ask for it under its folder's version, host.js?v=<version>
        context.route(lambda url: urlparse(url).path.endswith("/host.js"),
                      lambda route: route.fulfill(status=404, body="not here"))
        page = context.new_page()
        page.goto(server_url + "/test.html")
        said = page.evaluate("async () => { try { await window.gpuportReady; return 'started'; }"
                             " catch (e) { return e.message; } }")
        assert said.startswith("gpuport worker: its modules did not load (") and "host.js" in said, said
    finally:
        context.close()
