"""The browser matrix: each lane (a real browser and a page query) detects its backend and tier, then runs
the kernel parity matrix and the error cases in the page: the very bodies of tests/cases.py.

Test ids read `test_parity[<lane>-<case>]`, e.g. `test_parity[firefox-webgpu-matmul_7x13_by_13x5]`.
The lanes are in conftest.py (LANES); e2e/report/compatibility.{json,md} is written at session end.
"""

from __future__ import annotations

import pytest
from e2e_matrix import LANES, lane_cases, lane_engines
from gpuport.ops.opspecs import OPS
from gpuport.site.demo import kernel_rows

ROWS = kernel_rows()   # every op, and a few again on a model's variant
assert set(OPS) <= set(ROWS), sorted(set(OPS) - set(ROWS))

PAIRS = [(lane, case) for lane in LANES for case in lane_cases(lane)]


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


def test_numpy_needs_await_in_the_page(lane_factory):
    lane = lane_factory("chromium-webgpu")
    msg = lane.run("import numpy as np\n"
                   "try:\n    rt.tensor(np.ones(3, np.float32)).numpy()\nexcept gpuport.UnsupportedFeature as e:\n"
                   "    m = str(e)\nm")
    assert "await" in msg


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
