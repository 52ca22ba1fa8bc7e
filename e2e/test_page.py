"""The kernel parity matrix and the error cases, run in the page: the very bodies of tests/cases.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cases import names_for  # noqa: E402

SMOKE = ["matmul_37x129_by_129x65_bias", "attention_b2_q17_k33_h3_d11_masked", "compile_error_names_line_and_column",
         "batch_of_dispatches_crosses_the_boundary_a_constant_number_of_times", "user_kernel_with_override_constant"]


@pytest.mark.parametrize("name", names_for("webgpu"))
def test_webgpu_in_worker(lane_factory, name):
    lane = lane_factory("chromium-webgpu-worker")
    assert lane.info["backend"] == "webgpu"
    lane.case(name)


@pytest.mark.parametrize("name", names_for("cpu"))
def test_cpu_in_worker(lane_factory, name):
    lane = lane_factory("chromium-cpu-worker")
    assert lane.info["backend"] == "cpu"
    lane.case(name)


@pytest.mark.parametrize("name", SMOKE)
def test_webgpu_on_main_thread(lane_factory, name):
    lane = lane_factory("chromium-webgpu-main")
    assert lane.info["backend"] == "webgpu"
    lane.case(name)


def test_page_reports_swiftshader_adapter(lane_factory):
    info = lane_factory("chromium-webgpu-worker").info
    assert info["platform"] == "pyodide"
    assert info["adapter"]["vendor"] == "google" or "swiftshader" in str(info["adapter"]).lower(), info["adapter"]
    assert info["tier"] in ("core", "full"), info


def test_numpy_needs_await_in_the_page(lane_factory):
    lane = lane_factory("chromium-webgpu-worker")
    msg = lane.run("import numpy as np\n"
                   "try:\n    rt.tensor(np.ones(3, np.float32)).numpy()\nexcept gpuport.UnsupportedFeature as e:\n"
                   "    m = str(e)\nm")
    assert "await" in msg


def test_demo_page_runs_every_kernel_within_tolerance(chromium_webgpu, server_url):
    """What `make demo` shows a person: backend webgpu on SwiftShader, every kernel within tolerance."""
    from playwright.sync_api import expect

    page = chromium_webgpu.new_page()
    try:
        page.goto(server_url + "/")
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=180_000)
        assert page.locator("#backend").inner_text().startswith("webgpu")
        assert "swiftshader" in page.locator("#adapter").inner_text()
        rows = page.locator("#kernels tbody tr")
        assert rows.count() == 13
        verdicts = page.locator("#kernels tbody td:last-child").all_inner_texts()
        assert verdicts == ["within tolerance"] * 13, verdicts
    finally:
        page.close()
