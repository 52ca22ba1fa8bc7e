"""backend="auto": the selector per op between the device and NumPy, residency, learning, persistence."""

import json

import numpy as np
import pytest

import gpuport as gp
from gpuport import kernels as K


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    monkeypatch.delenv("GPUPORT_BACKEND", raising=False)
    monkeypatch.delenv("GPUPORT_DISABLE", raising=False)
    return tmp_path


def test_auto_chooses_per_op_with_identical_results_and_reports_it(cache):
    rt = gp.open_sync()
    try:
        assert rt.backend == "webgpu" and rt.selector is not None
        r = np.random.default_rng(1)
        x = r.standard_normal((16, 32)).astype(np.float32)
        w = r.standard_normal((32, 8)).astype(np.float32)
        for _ in range(6):
            y = rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w)))
            np.testing.assert_allclose(y.numpy(), K.gelu_ref(x @ w), rtol=1e-5, atol=1e-5)
        sel = rt.info()["selection"]
        assert sel["mode"] == "auto" and set(sel["chosen"]) == {"matmul", "gelu"}, sel
        assert sel["calibration"]["source"] == "measured" and sel["calibration"]["ms"] < 2000, sel
        summary = rt.selector.selector.get_performance_summary()
        assert "matmul" in summary["ops"], summary
        report = json.loads(rt.report(format="json"))
        assert report["ops"]["matmul"]["backend"] == sel["chosen"]["matmul"]
        assert "| matmul |" in rt.report(format="markdown")
    finally:
        rt.close()
    saved = list((cache / "selector").glob("*.json"))
    assert saved and json.loads(saved[0].read_text())["stats"], saved
    rt2 = gp.open_sync()
    try:   # history and calibration come back: no new calibration
        assert rt2.info()["selection"]["calibration"]["source"] == "stored"
        assert rt2.selector.selector.get_performance_summary()["ops"], "history not restored"
    finally:
        rt2.close()


def test_gpu_resident_inputs_move_to_the_host_natively(cache):
    rt = gp.open_sync()
    try:
        k = rt.kernel("@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n"
                      "@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) i: vec3<u32>) "
                      "{ o[i.x] = f32(i.x); }")
        out = rt.empty(4)
        k.dispatch(1, out)
        y = rt.ops.scale(out, 2.0, 1.0)   # wherever it runs, the values are right
        np.testing.assert_array_equal(y.numpy(), np.array([1, 3, 5, 7], np.float32))
    finally:
        rt.close()


def test_env_forces_and_disables(cache, monkeypatch):
    monkeypatch.setenv("GPUPORT_BACKEND", "webgpu")
    rt = gp.open_sync()
    try:
        x = rt.tensor(np.ones((4, 4), np.float32))
        rt.ops.scale(x, 2.0, 0.0).numpy()
        assert rt.info()["selection"]["chosen"] == {"scale": "webgpu"}
        assert rt.device.stats["dispatches"] >= 1
    finally:
        rt.close()
    monkeypatch.delenv("GPUPORT_BACKEND")
    monkeypatch.setenv("GPUPORT_DISABLE", "webgpu")
    rt = gp.open_sync()
    try:
        x = rt.tensor(np.ones((512, 512), np.float32))
        rt.ops.matmul(x, x).numpy()
        assert rt.info()["selection"]["chosen"] == {"matmul": "cpu"}
    finally:
        rt.close()


def test_explicit_backends_keep_their_behaviour(cache):
    rt = gp.open_sync(backend="webgpu")
    try:
        assert rt.selector is None and "selection" not in rt.info()
        t = rt.tensor(np.ones(4, np.float32))
        assert t.device == "webgpu" and not isinstance(t.handle, np.ndarray)
    finally:
        rt.close()
