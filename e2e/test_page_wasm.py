"""The WebAssembly SIMD kernels of the cpu path in every browser lane that can run them: gpuport.open()
links gpuport_simd.wasm from the installed wheel into Pyodide's memory (backends/jsmodules.py, web/wasm.js),
and the very bodies of tests/wasm_cases.py run there against the NumPy references.

The kernels need no GPU, so a WebGPU lane's page serves too: firefox-webgpu is a bare Pyodide (web/pyodide.html) in
a worker, the others gpuport.js's start(). One lane per WebAssembly engine (docs/testing.md).
Test ids read `test_wasm_parity[<lane>-<case>]`. A page whose kernels did not load fails every test with
the reason it gives; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_matrix import lane_engines
from gpuport.testing.pages import call_page
from wasm_cases import CASES

# One lane per WebAssembly engine: V8 (Chromium), SpiderMonkey (Firefox), JavaScriptCore (WebKitGTK); tests/host/
# test_wasm_node.py runs the same cases on the plain build under Node without a browser.
WASM_LANES = ("chromium-cpu", "firefox-webgpu", "webkit-cpu")
PAIRS = [(lane, case) for lane in WASM_LANES for case in CASES]

_SOURCE = (Path(__file__).resolve().parents[1] / "tests" / "wasm_cases.py").read_text(encoding="utf-8")
# Once per page: the cases as the module `wasm_cases` (its `cases` import is the page's, see conftest.py).
_LOAD = ("import sys, types\n"
         "if 'wasm_cases' not in sys.modules:\n"
         "    _m = types.ModuleType('wasm_cases')\n"
         f"    exec(compile({_SOURCE!r}, 'tests/wasm_cases.py', 'exec'), _m.__dict__)\n"
         "    sys.modules['wasm_cases'] = _m\n"
         "import wasm_cases")


def _page(lane_factory, lane: str):
    page = lane_factory(lane)
    page.run(_LOAD)
    return page


# The build each lane's engine gets: relaxed SIMD where it validates (V8, SpiderMonkey), plain SIMD128 in
# WebKitGTK's JavaScriptCore (no relaxed SIMD).
VARIANT = {"webkit-cpu": "simd128"}


@pytest.mark.parametrize("lane", WASM_LANES)
def test_wasm_tier_available(lane_factory, lane):
    """The page linked the kernels (the reason otherwise), the build its engine supports, without a note."""
    got = _page(lane_factory, lane).run("from gpuport.host import wasm_kernels as _w\n"
                                        "from gpuport.placement.telemetry import host_engine\n"
                                        "{'available': _w.available(), 'reason': _w.reason(), 'variant': _w.variant(),"
                                        " 'note': _w.note(), 'engine': host_engine()}")
    assert got["available"], f"{lane}: WebAssembly SIMD kernels unavailable: {got['reason']}"
    want = VARIANT.get(lane, "relaxed-simd")
    assert (got["variant"], got["note"], got["engine"]) == (want, "", f"wasm-{want}"), got


@pytest.mark.parametrize("lane,case", PAIRS, ids=[f"{lane}-{case}" for lane, case in PAIRS])
def test_wasm_parity(lane_factory, lane, case, coverage_matrix, request):
    page = _page(lane_factory, lane)
    calls = page.run(f"wasm_cases.run({case!r})")
    coverage_matrix.record(request.node.nodeid, [{"tier": "cpu", "host": {"wasm": calls}}], None,
                           lane_engines(lane)[1], page.mode)


# A bare Pyodide with the wheel installed and no runtime yet (web/pyodide.html?open=0): the test takes
# files out of the installed package, then opens.
BARE = "/pyodide.html?open=0&worker=0"
WEB = "import pathlib, gpuport\nweb = pathlib.Path(gpuport.__file__).parent / 'web'\n"

MISSING = WEB + """
import numpy as np
for name in ("gpuport_simd.wasm", "gpuport_simd_relaxed.wasm"):
    (web / name).unlink()
rt = await gpuport.open(backend="cpu")
from gpuport.host import wasm_kernels as _w
try:
    _w.gelu(np.ones(3, np.float32))
    raised = ""
except gpuport.BackendUnavailable as exc:
    raised = str(exc)
x = np.ones((2, 3), np.float32)
{"available": _w.available(), "reason": _w.reason(), "raised": raised,
 "cpu_still_works": (await rt.ops.gelu(rt.tensor(x)).read()).tolist()}
"""


def test_page_without_the_module_starts_and_says_why(chromium_webgpu, server_url):
    """A wheel without the .wasm files (built before `make setup` compiled them): gpuport opens, the cpu
    tier runs on NumPy, and Python reports the kernels unavailable naming the missing files."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + BARE)
        got = call_page(page, "runPython", MISSING)
        assert got["available"] is False, got
        assert "gpuport/web/gpuport_simd.wasm" in got["reason"] and "missing" in got["reason"], got
        assert "make setup" in got["reason"] and got["reason"] in got["raised"], got
        assert len(got["cpu_still_works"]) == 2, got
    finally:
        page.close()


def test_page_without_the_relaxed_build_falls_back_to_simd128(chromium_webgpu, server_url):
    """Chromium validates relaxed SIMD, but the installed wheel lacks that build: the plain one is linked
    and the loader's note names the file it could not use."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + BARE)
        got = call_page(page, "runPython", WEB + "(web / 'gpuport_simd_relaxed.wasm').unlink()\n"
                        "rt = await gpuport.open(backend='cpu')\n"
                        "from gpuport.host import wasm_kernels as _w\n"
                        "import numpy as np\n"
                        "{'available': _w.available(), 'variant': _w.variant(), 'note': _w.note(),"
                        " 'gelu': _w.gelu(np.zeros(8, np.float32)).tolist()}")
        assert got["available"] and got["variant"] == "simd128", got
        assert "gpuport/web/gpuport_simd_relaxed.wasm missing" in got["note"], got
        assert got["gelu"] == [0.0] * 8, got
    finally:
        page.close()


@pytest.mark.parametrize("choice,available,variant", [("simd128", True, "simd128"), ("off", False, None)])
def test_page_host_kernels_option(chromium_webgpu, server_url, choice, available, variant):
    """start({hostKernels}) (the demo page's ?kernels=): the portable SIMD128 build even where relaxed SIMD
    exists, or no kernels at all (the cpu path on NumPy, saying why)."""
    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + f"/?backend=cpu&table=0&precompile=off&kernels={choice}")
        got = call_page(page, "runPython",
                        "from gpuport.host import wasm_kernels as _w\n"
                        "from gpuport.placement.telemetry import host_engine\n"
                        "{'available': _w.available(), 'variant': _w.variant(), 'reason': _w.reason(),"
                        " 'engine': host_engine()}")
        assert (got["available"], got["variant"]) == (available, variant), got
        assert got["engine"] == (f"wasm-{variant}" if available else "numpy-wasm"), got
        assert available or "turned off" in got["reason"], got
    finally:
        page.close()
