"""Recovery natively: classification, device loss (injected and real), lost tensors, OOM ladder, backoff."""

import asyncio

import gpuport as gp
import numpy as np
import pytest
from cases import CASES
from gpuport.errors import classify
from gpuport.host import references as K


@pytest.fixture
def rt():
    r = gp.open_sync(backend="webgpu")
    yield r
    r.close()


def _workload(rt, seed=3):
    r = np.random.default_rng(seed)
    x = r.standard_normal((33, 40)).astype(np.float32)
    w = r.standard_normal((40, 17)).astype(np.float32)
    return x, w, K.gelu_ref(K.matmul_ref(x, w))


def test_classify_maps_backend_failures_to_typed_errors():
    class GPUValidationError(Exception):
        pass

    class GPUOutOfMemoryError(Exception):
        pass

    assert isinstance(classify(GPUValidationError("In wgpuDeviceCreateBuffer\n  Parent device is lost")), gp.DeviceLost)
    assert isinstance(classify(RuntimeError("OperationError: Device is lost")), gp.DeviceLost)
    assert isinstance(classify(GPUOutOfMemoryError("x")), gp.OutOfMemory)
    assert isinstance(classify(TimeoutError("map timed out")), gp.GpuTimeout)
    assert isinstance(classify(GPUValidationError("Buffer usage invalid")), gp.GpuValidationError)
    assert isinstance(classify(GPUValidationError("Shader validation error: wgsl:3:4 bad")), gp.ShaderCompileError)
    err = gp.ShaderCompileError("k", "x")
    assert classify(err) is err


@pytest.mark.parametrize("at", ["submit", "read", "alloc"])
def test_injected_device_loss_mid_workload_is_recovered(rt, at):
    x, w, want = _workload(rt)
    tx, tw = rt.tensor(x), rt.tensor(w)
    y = rt.ops.gelu(rt.ops.matmul(tx, tw))
    rt.recovery.inject("device_lost", at=at)      # really destroys the wgpu device, then raises
    z = rt.ops.scale(y, 2.0, 1.0)
    got = z.numpy()
    np.testing.assert_allclose(got, want * 2 + 1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-4, atol=1e-4)
    st = rt.recovery.stats()
    assert st["device_losses"] == 1 and st["recoveries"] == 1, st
    assert st["rebuilt_pipelines"] >= 1 or at == "alloc", st


def test_real_destroy_then_ops_and_async_read(rt):
    x, w, want = _workload(rt, 5)
    tx, tw = rt.tensor(x), rt.tensor(w)
    y = rt.ops.matmul(tx, tw)
    rt.device.destroy_for_test()
    z = rt.ops.gelu(y)                             # the op notices the loss, recovers, retries
    got = asyncio.run(z.read())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert rt.recovery.stats()["device_losses"] == 1


def test_device_only_values_raise_device_lost_naming_the_tensor(rt):
    k = rt.kernel("@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n"
                  "@compute @workgroup_size(1) fn main() { o[0] = 5.0; }")
    out = rt.empty(4)
    k.dispatch(1, out)
    assert out.numpy()[0] == 5.0
    kept = rt.tensor(np.arange(4, dtype=np.float32))
    rt.device.destroy_for_test()
    rt.flush()   # nothing pending: the loss shows at the next device call
    with pytest.raises(gp.DeviceLost, match=r"shape \(4,\).*user kernel"):
        rt.ops.scale(out, 1.0, 0.0).numpy()
    with pytest.raises(gp.DeviceLost, match="user kernel"):
        out.numpy()
    np.testing.assert_array_equal(kept.numpy(), np.arange(4, dtype=np.float32))   # host-backed: restored
    k.dispatch(1, kept)   # the kernel's pipeline is rebuilt on the new device
    assert kept.numpy()[0] == 5.0


def test_timeouts_retry_with_backoff(rt):
    t = rt.tensor(np.ones(8, np.float32))
    rt.recovery.inject("timeout", at="read", count=2)
    np.testing.assert_array_equal(rt.ops.scale(t, 3.0, 0.0).numpy(), np.full(8, 3.0, np.float32))
    st = rt.recovery.stats()
    assert st["timeouts"] == 2 and st["retries"] == 2 and st["device_losses"] == 0, st


def test_out_of_memory_for_large_buffers_is_served_in_blocks(rt):
    # The device refuses any single buffer of 256 KiB or more (fragmentation, a small heap): the weight is
    # stored as row blocks and matmul runs by layer decomposition. Correct results.
    r = np.random.default_rng(9)
    x = r.standard_normal((16, 512)).astype(np.float32)
    w = r.standard_normal((512, 256)).astype(np.float32)          # 512 KiB
    rt.recovery.inject("out_of_memory", at="alloc", count=10, min_bytes=256 << 10)
    tw = rt.tensor(w)
    assert tw.blocked, tw
    got = rt.ops.matmul(rt.tensor(x), tw).numpy()
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-3)
    st = rt.recovery.stats()
    assert st["oom_chunked"] == 1 and st["oom_events"] >= 1, st
    assert rt.fallback.get_performance_metrics()["last_strategy"]["matmul"] == "layer_decomposition"


def test_allocation_beyond_memory_budget_steps_down_to_the_host():
    rt = gp.open_sync(backend="webgpu", memory_budget=1 << 20)
    try:
        r = np.random.default_rng(10)
        x = r.standard_normal((64, 256)).astype(np.float32)          # 64 KiB
        w = r.standard_normal((256, 1280)).astype(np.float32)        # 1.25 MiB: over the whole budget
        tx, tw = rt.tensor(x), rt.tensor(w)
        assert tx.device == "webgpu" and tw.device == "cpu"
        y = rt.ops.gelu(rt.ops.matmul(tx, tw))
        np.testing.assert_allclose(y.numpy(), K.gelu_ref(x @ w), rtol=1e-4, atol=1e-4)
        st = rt.recovery.stats()
        assert st["oom_lower_tier"] >= 1 and st["oom_events"] >= 1, st
        assert rt.memory.device_bytes() <= 1 << 20
    finally:
        rt.close()


def test_the_page_case_runs_natively():
    rt = gp.open_sync(backend="webgpu")
    try:
        asyncio.run(CASES["device_destroyed_mid_workload_is_recovered"](rt))
    finally:
        rt.close()
