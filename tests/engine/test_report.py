"""gpuport doctor: a report with hardware, tier, per-op plan and problems, in JSON and Markdown."""

import json

import gpuport as gp
import numpy as np
import pytest
from gpuport.engine.report import build_report, find_problems, render
from gpuport.ops.opspecs import OPS as KERNELS
from gpuport.site.cli import main


def validate(report):
    """The JSON contract tools rely on."""
    assert report["backend"] in ("webgpu", "cpu") and report["mode"] in ("auto", "webgpu", "cpu")
    assert report["tier"] in ("full", "core", "constrained", "cpu")
    assert set(report["ops"]) == set(KERNELS)
    for op in report["ops"].values():
        assert {"strategy", "backend", "shader"} <= set(op)
    for p in report["problems"]:
        assert p["severity"] in ("info", "warning", "error") and p["message"] and p["recommendation"]


@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_doctor_json_is_valid(capsys, backend):
    assert main(["doctor", "--format", "json", "--backend", backend]) == 0
    report = json.loads(capsys.readouterr().out)
    validate(report)
    assert report["backend"] == backend
    if backend == "webgpu":   # lavapipe here and in CI, a GPU where there is one
        software = report["adapter"]["vendor"] == "llvmpipe"
        assert report["limits"]["maxStorageBufferBindingSize"] >= 134217728
        assert any(p["code"] == "software-adapter" for p in report["problems"]) == software


def test_doctor_markdown_reads_well(capsys):
    assert main(["doctor", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# gpuport doctor") and "| matmul |" in out and "## Problems" in out


def test_doctor_under_auto_does_not_claim_ops_ran_on_the_gpu(capsys):
    """The default (auto) places each call by measurement: before any call the report says so, not webgpu."""
    assert main(["doctor", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    validate(report)
    assert report["mode"] == "auto" and report["selection"]["calibration"] in ("measured", "stored")
    assert {op["backend"] for op in report["ops"].values()} == {"auto: chosen per call (not run yet)"}
    assert all(op["ran"] == {} for op in report["ops"].values())


def test_report_counts_where_calls_ran_under_auto():
    with gp.open_sync() as rt:
        x = rt.tensor(np.ones((4, 4), np.float32))
        rt.ops.gelu(x).numpy()
        with rt.pinned("webgpu"):
            rt.ops.gelu(x).numpy()
        with rt.pinned("cpu"):
            rt.ops.gelu(x).numpy()
        gelu = rt.report()["ops"]["gelu"]
        assert sum(gelu["ran"].values()) == 3 and gelu["ran"]["webgpu"] >= 1 and gelu["ran"]["cpu"] >= 1, gelu
        assert gelu["backend"].startswith("auto: ")
        assert "| gelu |" in rt.report(format="markdown")


def test_pinned_on_a_fixed_backend_accepts_only_that_backend():
    with gp.open_sync(backend="cpu") as rt:
        with rt.pinned("cpu"):
            assert rt.ops.gelu(rt.tensor(np.zeros(3, np.float32))).numpy().shape == (3,)
        with pytest.raises(ValueError, match="backend='auto'"):
            with rt.pinned("webgpu"):
                pass


def test_profile_cli_says_where_each_op_ran(capsys, tmp_path):
    assert main(["profile", "--backend", "webgpu", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "webgpu" and set(data["by_op"]) == set(KERNELS)
    assert all(e["where"] == {"webgpu": e["calls"]} for e in data["by_op"].values())
    assert data["dispatches"] >= len(KERNELS) and data["timing"] in ("timestamp-query", "host only")
    out = tmp_path / "profile.html"
    assert main(["profile", "--backend", "cpu", "--format", "html", "--output", str(out)]) == 0
    page = out.read_text()
    assert page.startswith('<section class="gpuport-profile">') and "<td>matmul</td>" in page


def test_runtime_report_matches_doctor():
    with gp.open_sync(backend="cpu") as rt:
        validate(rt.report())
        assert json.loads(rt.report(format="json"))["tier"] == "cpu"
        with pytest.raises(ValueError, match="'xml'"):
            rt.report(format="xml")


def test_problems_name_missing_webgpu_with_a_recommendation():
    info = {"backend": "cpu", "tier": "cpu", "detected_tier": "cpu", "note": "webgpu unavailable: no adapter"}
    (p,) = find_problems(info)
    assert p["severity"] == "warning" and "enable-unsafe-webgpu" in p["recommendation"]


def test_small_limits_are_reported():
    info = {"backend": "webgpu", "tier": "constrained", "detected_tier": "constrained", "features": ["shader-f16"],
            "adapter": {}, "limits": {"maxStorageBufferBindingSize": 1 << 20}}
    codes = [p["code"] for p in find_problems(info)]
    assert "limit-maxStorageBufferBindingSize" in codes
    assert "| maxStorageBufferBindingSize | 1,048,576 |" in render(build_report(info), "markdown")


def test_a_page_on_one_thread_says_why_and_what_to_do():
    info = {"backend": "cpu", "tier": "cpu", "detected_tier": "cpu", "note": "",
            "host_threads": {"engine": "wasm", "threads": 1, "reason": "the page is not cross-origin isolated"}}
    problem = next(p for p in find_problems(info) if p["code"] == "host-one-thread")
    assert "not cross-origin isolated" in problem["message"] and "Cross-Origin-Embedder-Policy" in problem["recommendation"]
    text = render(build_report(info), "markdown")
    assert "- **host threads**: whole layers on wasm, 1 thread (the page is not cross-origin isolated)" in text
    pooled = dict(info, host_threads={"engine": "wasm-threads", "threads": 4})
    assert "host-one-thread" not in [p["code"] for p in find_problems(pooled)]
    assert "whole layers on wasm-threads, 4 threads  " in render(build_report(pooled), "markdown")
