"""gpuport doctor: a report with hardware, tier, per-op plan and problems, in JSON and Markdown."""

import json

import pytest

import gpuport as gp
from gpuport.cli import main
from gpuport.kernels import KERNELS
from gpuport.report import build_report, find_problems, render


def validate(report):
    """The JSON contract tools rely on."""
    assert report["backend"] in ("webgpu", "cpu")
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
    if backend == "webgpu":
        assert report["adapter"]["vendor"] == "llvmpipe"
        assert report["limits"]["maxStorageBufferBindingSize"] == 134217728
        assert any(p["code"] == "software-adapter" for p in report["problems"])


def test_doctor_markdown_reads_well(capsys):
    assert main(["doctor", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# gpuport doctor") and "| matmul |" in out and "## Problems" in out


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
