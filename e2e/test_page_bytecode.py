"""NumPy's bytecode in the page (distribution.numpy_bytecode): start() fetches it beside the boot, checks its
SHA-256 against wheels/latest.json and writes it over NumPy, so `import numpy` compiles nothing; an altered
archive is refused and the page compiles NumPy as before. Chromium and Firefox, Pyodide in its Web Worker."""

from __future__ import annotations

import pytest

IMPORTED = """
import numpy as _np
{"works": float(_np.arange(4.0).sum())}
"""


def _start(page, url: str) -> dict:
    page.goto(url)
    timings = page.evaluate("async () => (await window.gpuportReady).timings")
    out = page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", IMPORTED)
    return {"bytecode": timings["numpy_bytecode"], **out}


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_numpy_bytecode_is_used_and_an_altered_archive_is_refused(browsers, server_url, kind):
    context = browsers.get(kind).new_context()
    try:
        page = context.new_page()
        got = _start(page, server_url + "/test.html?snapshot=0")
        assert got["bytecode"] == "used" and got["works"] == 6.0, got

        def altered(route):
            body = bytearray(route.fetch().body())
            body[len(body) // 2] ^= 0xFF
            route.fulfill(body=bytes(body), headers={"content-type": "application/gzip"})

        page.route("**/numpy-bytecode-*.zip.gz", altered)
        got = _start(page, server_url + "/test.html?snapshot=0")
        assert got["bytecode"].startswith("not used: ") and "its sha256 is" in got["bytecode"], got
        assert got["works"] == 6.0, got   # NumPy compiled as before
    finally:
        context.close()
