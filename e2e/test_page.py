"""The browser matrix: each lane (a real browser and a page query) detects its backend and tier, then runs
the kernel parity matrix and the error cases in the page: the very bodies of tests/cases.py.

Test ids read `test_parity[<lane>-<case>]`, e.g. `test_parity[firefox-webgpu-matmul_7x13_by_13x5]`.
The lanes are in conftest.py (LANES); e2e/report/compatibility.{json,md} is written at session end.
"""

from __future__ import annotations

from pathlib import Path

import gpuport
import pytest
from e2e_matrix import LANES, lane_cases, lane_engines
from gpuport.ops.opspecs import OPS
from gpuport.site.demo import kernel_rows
from gpuport.testing.pages import LaneState, PageError, PlaywrightLane
from sync_reads_script import script

ROWS = kernel_rows()   # every op, and a few again on a model's variant
assert set(OPS) <= set(ROWS), sorted(set(OPS) - set(ROWS))
SYNC_SCRIPT = (Path(__file__).resolve().parents[1] / "tests" / "sync_reads_script.py").read_text(encoding="utf-8")

PAIRS = [(lane, case) for lane in LANES for case in lane_cases(lane)]
BARE_STEPS = ["loading Pyodide", "loading NumPy and micropip", "installing gpuport with micropip", "importing gpuport",
              "opening gpuport"]


@pytest.mark.parametrize("lane", list(LANES))
def test_lane_detects(lane_factory, lane):
    """The page reports the backend, tier and mode the lane stands for (auto-detected or forced)."""
    spec, page = LANES[lane], lane_factory(lane)
    info = page.info
    got = {"backend": info.get("backend"), "tier": info.get("tier"), "mode": page.mode, "placement": info.get("mode")}
    want = {"backend": spec.backend, "tier": spec.tier, "mode": spec.mode, "placement": spec.placement}
    assert got == want, f"{lane}: detected {got}, expected {want}; note: {info.get('note')}; adapter: {info.get('adapter')}"
    assert info["platform"] == "pyodide", info
    if spec.adapter:
        assert spec.adapter in str(info["adapter"]).lower(), info["adapter"]
    missing = [f for f in spec.features if f not in info["features"]]
    assert not missing, f"{lane}: adapter lacks {missing}; it offers {info['features']}"
    if spec.backend == "cpu":
        assert info["features"] == [] and info["adapter"]["vendor"] == "numpy", info
    if spec.page == "pyodide.html":   # a bare Pyodide's start, step by step, with each step's time
        steps = page.startup["steps"]
        assert list(steps) == BARE_STEPS and all(ms > 0 for ms in steps.values()), steps


@pytest.mark.parametrize("lane,case", PAIRS, ids=[f"{lane}-{case}" for lane, case in PAIRS])
def test_parity(lane_factory, lane, case, coverage_matrix, request):
    page = lane_factory(lane)
    backend = page.info.get("backend")
    if backend != LANES[lane].backend:
        pytest.fail(f"{lane} runs on backend {backend!r}, not {LANES[lane].backend!r} "
                    f"(note: {page.info.get('note')}): its {LANES[lane].cases!r} cases do not apply",
                    pytrace=False)
    ran = page.run(f"await cases.run_case({case!r}, rt, device={LANES[lane].device})")
    device, host = lane_engines(lane)
    coverage_matrix.record(request.node.nodeid, ran, device if backend == "webgpu" else None, host, page.mode)


def test_chromium_adapter_is_swiftshader(lane_factory):
    info = lane_factory("chromium-webgpu").info
    assert info["adapter"]["vendor"] == "google" or "swiftshader" in str(info["adapter"]).lower(), info["adapter"]
    assert info["adapter"]["is_fallback"] is True, info["adapter"]
    assert "subgroups" in info["features"] and "shader-f16" not in info["features"], info["features"]


# Where the script of synchronous reads runs: a bare Pyodide (the webgpu lanes) and gpuport's own page, booted from the
# site's snapshot made under Node (the auto lanes), in each engine. Both engines here have WebAssembly JSPI on.
SYNC_LANES = ("chromium-webgpu", "firefox-webgpu", "chromium-auto", "firefox-auto")
# The namespace's calls of the script that must have run on the GPU: each read waited for it there
SYNC_ON_DEVICE = {"xp.sum", "xp.count_nonzero", "xp.any", "xp.all", "xp.getitem", "xp.unique", "xp.nonzero", "xp.max"}


def _sync_reads_natively() -> dict:
    rt = gpuport.open_sync(backend="cpu")
    try:
        return script(rt)
    finally:
        rt.close()


def _run_script(page, backend: str) -> dict:
    """tests/sync_reads_script.py in the page, unchanged, on a runtime of `backend` ("rt" where the page's is)."""
    if "sync_reads_script" not in page.modules:
        page.add_module("sync_reads_script", SYNC_SCRIPT, "tests/sync_reads_script.py")
    opened = "rt" if page.info["mode"] == backend else f"await gpuport.open(backend={backend!r})"
    return page.run(f"from sync_reads_script import script\n_rt = {opened}\n"
                    f"try:\n    _out = script(_rt)\nfinally:\n    if _rt is not rt: _rt.close()\n_out")


@pytest.mark.parametrize("lane", SYNC_LANES)
def test_sync_reads_run_unchanged_where_the_page_has_jspi(lane_factory, lane):
    """float(x), bool(...), boolean indexing, unique_values, nonzero, x.item(), np.asarray(x) and tensor.numpy()
    of GPU values, in a page as natively: each read suspends the call until the browser answers (JSPI), with the
    values a native run gives. In gpuport's own page that needed the boot to undo what its snapshot, made under Node
    (no JSPI, no wasm-gc), had fixed: pyodide.ffi.run_sync refusing, and C calls through a JS trampoline, a frame
    JSPI cannot suspend (web/snapshot.js asBooted)."""
    page = lane_factory(lane)
    got, natively = _run_script(page, "webgpu"), _sync_reads_natively()
    ran = got.pop("ran")
    natively.pop("ran")
    assert got == natively
    assert SYNC_ON_DEVICE <= set(ran), ran
    if LANES[lane].page == "":   # wasm-gc and JSPI here, neither in the Node that made the snapshot
        assert page.startup["snapshot"].startswith("restored from the site"), page.startup
        assert page.startup["as_booted"] == "C calls: made as booted; run_sync: made as booted", page.startup


def test_without_jspi_the_same_script_names_the_async_twin(chromium_webgpu, server_url):
    """A page whose engine has no JSPI (hidden from Pyodide: pyodide.html?jspi=0): the script's first read of GPU
    values raises SyncReadUnavailable naming `await xp.read(x)`, tensor.numpy() names `await tensor.read()`, and
    the async twin reads what the synchronous read would have."""
    state = LaneState("chromium-nojspi", "chromium-webgpu")
    page = PlaywrightLane(state, chromium_webgpu, f"{server_url}/pyodide.html?backend=webgpu&jspi=0")
    try:
        assert page.info["backend"] == "webgpu", page.info
        with pytest.raises(PageError, match=r"SyncReadUnavailable.*can_run_sync\(\) is False.*await xp\.read\(x\)"):
            _run_script(page, "webgpu")
        twin = page.run("from gpuport import xp\nimport numpy as np\n"
                        "_t = rt.tensor(np.arange(4, dtype=np.float32))\n"
                        "try:\n    _t.numpy()\nexcept gpuport.SyncReadUnavailable as e:\n    _numpy = str(e)\n"
                        "[_numpy, float(await xp.read(xp.sum(xp.asarray(np.arange(4, dtype=np.float32), device=rt) * 2)))]")
        assert "await tensor.read()" in twin[0] and twin[1] == 12.0, twin
    finally:
        page.close()


def test_demo_page_runs_every_kernel_within_tolerance(chromium_webgpu, server_url):
    """What `make demo` shows a person: auto beside SwiftShader's WebGPU, where each op ran, and every GPU
    kernel within tolerance of NumPy (run pinned to the GPU even where auto picked NumPy)."""
    from playwright.sync_api import expect

    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + "/")
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=180_000)
        assert page.locator("#backend").inner_text().startswith("auto: webgpu or cpu")
        assert "swiftshader" in page.locator("#adapter").inner_text()
        rows = page.locator("#kernels tbody tr")
        assert rows.count() == len(ROWS)
        assert page.locator("#kernels tbody td:nth-child(1)").all_inner_texts() == ROWS
        ran = page.locator("#kernels tbody td:nth-child(3)").all_inner_texts()
        assert set(ran) <= {"webgpu", "cpu"}, ran
        gpu_errors = [float(t) for t in page.locator("#kernels tbody td:nth-child(5)").all_inner_texts()]
        assert len(gpu_errors) == len(ROWS) and max(gpu_errors) < 1e-3, gpu_errors
        verdicts = page.locator("#kernels tbody td:last-child").all_inner_texts()
        assert verdicts == ["within tolerance"] * len(ROWS), verdicts
        # the status and the report say where the calls ran: the counts of the table's column
        status = page.locator("#status").inner_text()
        for backend in set(ran):
            assert f"{ran.count(backend)} on {backend}" in status, status
        expect(page.locator("#doctor-section")).to_be_visible(timeout=60_000)
        where = page.locator("#doctor-html table").last.locator("tbody td:nth-child(3)").all_inner_texts()
        assert all(w.startswith("auto: ") for w in where) and any(" x" in w for w in where), where
    finally:
        page.close()
