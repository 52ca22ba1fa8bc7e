"""NumPy and gpuport in the page from the site's page archives (py/gpuport/site_files.py, web/wheels.js): fetched and
checked beside the boot, written from JS; Python imports both and Pyodide counts them as loaded. An archive altered in
transit is refused and the page installs both with Pyodide's loadPackage, saying why. Chromium and Firefox, Pyodide in
its Web Worker."""

from __future__ import annotations

import pytest

USED = """
import importlib.metadata as md, numpy as np, gpuport, js
{"works": float(np.linalg.norm([3.0, 4.0])), "gpuport": md.version("gpuport"),
 "installer": md.distribution("numpy").read_text("INSTALLER")}
"""


def _start(page, url: str) -> dict:
    page.goto(url)
    timings = page.evaluate("async () => (await window.gpuportReady).timings")
    out = page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", USED)
    return {"packages": timings["packages"], **out}


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_numpy_and_gpuport_come_from_the_sites_archives_and_an_altered_one_is_refused(browsers, server_url, kind):
    context = browsers.get(kind).new_context()
    try:
        page = context.new_page()
        got = _start(page, server_url + "/test.html")
        assert got == {"packages": "from the site's archives", "works": 5.0, "gpuport": "0.1.0",
                       "installer": "pyodide.loadPackage"}, got

        def altered(route):
            body = bytearray(route.fetch().body())
            body[len(body) // 2] ^= 0xFF
            route.fulfill(body=bytes(body), headers={"content-type": "application/gzip"})

        page.route("**/numpy-wheel-*.zip.gz", altered)
        got = _start(page, server_url + "/test.html")
        assert got["packages"].startswith("loadPackage: ") and "its sha256 is" in got["packages"], got
        assert got["works"] == 5.0 and got["gpuport"] == "0.1.0", got   # installed by Pyodide, as before
    finally:
        context.close()
