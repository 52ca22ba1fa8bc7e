"""The wgpu-py backend's own contract: browser-like limits, immediate typed errors, batched dispatches."""

import threading
import time

import gpuport as gp
import numpy as np
import pytest
import wgpu
from gpuport.backends.capabilities import SPEC_DEFAULT_LIMITS


@pytest.fixture(scope="module")
def rt():
    runtime = gp.open_sync(backend="webgpu")
    yield runtime
    runtime.close()


def test_default_limits_are_the_spec_defaults_like_a_browser(rt):
    limits = rt.info()["limits"]
    for name in ("maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup"):
        assert limits[name] == SPEC_DEFAULT_LIMITS[name], name


def test_adapter_limits_are_larger_on_request():
    with gp.open_sync(backend="webgpu", limits="adapter") as big:
        assert big.info()["limits"]["maxComputeWorkgroupStorageSize"] > SPEC_DEFAULT_LIMITS["maxComputeWorkgroupStorageSize"]


def test_unknown_limits_mode_is_refused():
    with pytest.raises(ValueError, match="'huge'"):
        gp.open_sync(backend="webgpu", limits="huge")


def test_info_names_the_adapter(rt):
    # lavapipe here and in CI; a GPU where there is one (an NVIDIA H100 on a lent machine: "NVIDIA H100 80GB HBM3")
    info = rt.info()
    assert info["backend"] == "webgpu" and info["platform"] == "native"
    adapter = info["adapter"]
    assert adapter["device"] and adapter["backend_type"] == "Vulkan"
    assert ("llvmpipe" in adapter["device"]) == adapter["is_fallback"]
    assert info["tier"] == "full" and "shader-f16" in info["features"]


def test_dispatches_queue_until_a_read(rt):
    dev = rt.device
    dev.flush()
    before = dict(dev.stats)
    x = rt.tensor(np.ones(16, np.float32))
    y = rt.ops.scale(rt.ops.scale(x, 2.0, 0.0), 3.0, 0.0)
    assert dev.pending == 2 and dev.stats["submits"] == before["submits"]
    np.testing.assert_array_equal(y.numpy(), np.full(16, 6.0, np.float32))
    assert dev.stats["submits"] == before["submits"] + 1 and not dev.pending


def test_validation_error_is_typed_and_immediate(rt):
    # The shader wants two bindings; binding only one is a validation error the host sees before the
    # dispatch is queued (it would otherwise fail the whole batch it lands in).
    src = """@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(1) fn main() { b[0] = a[0]; }"""
    k = rt.kernel(src)
    with pytest.raises(gp.GpuValidationError, match="declares 2 storage bindings"):
        k.dispatch(1, rt.tensor(np.ones(4, np.float32)))
    # What only the device can see (a uniform buffer smaller than its struct) raises at the flush natively.
    small = rt.kernel("""struct P { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(1) fn main() { o[0] = p.d.x; }""")
    small.dispatch(1, rt.empty(4), uniforms=[1.0])
    with pytest.raises(gp.GpuValidationError, match="submitting"):
        rt.flush()


def test_compile_error_raises_at_kernel_creation_natively(rt):
    with pytest.raises(gp.ShaderCompileError) as info:
        rt.kernel("@compute @workgroup_size(1) fn main() {\n  let x: f32 = nope;\n}")
    assert (info.value.line, info.value.column) == (2, 16)
    assert "nope" in info.value.compiler_text


def test_workgroup_count_beyond_the_limit_names_it(rt):
    k = rt.kernel("@group(0) @binding(0) var<storage, read_write> d: array<f32>;\n"
                  "@compute @workgroup_size(1) fn main() { d[0] = 1.0; }")
    with pytest.raises(gp.LimitExceeded, match="maxComputeWorkgroupsPerDimension is 65,535"):
        k.dispatch((70000, 1, 1), rt.empty(4))


def test_webgpu_requested_but_unavailable_fails_loudly(monkeypatch):
    from gpuport.backends import native
    monkeypatch.setattr(native, "wgpu", None)
    with pytest.raises(gp.BackendUnavailable, match="wgpu"):
        gp.open_sync(backend="webgpu")
    with gp.open_sync() as fallback:   # auto steps down to NumPy and says why
        assert fallback.backend == "cpu" and "wgpu" in fallback.info()["note"]


def test_threads_open_their_adapters_and_devices_one_at_a_time(monkeypatch):
    # wgpu-native has aborted the process when two threads requested an adapter and a device at once: opening is
    # serialized (backends/native.py _OPENING). Each request is stretched here so that threads would overlap.
    active, most, guard = [0], [0], threading.Lock()
    original = wgpu.gpu.request_adapter_sync

    def slow_request(**kwargs):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.05)
            return original(**kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(wgpu.gpu, "request_adapter_sync", slow_request)
    results, errors = [], []

    def own():
        try:
            with gp.open_sync(backend="webgpu") as mine:
                results.append(mine.ops.scale(mine.tensor(np.ones(4, np.float32)), 2.0, 1.0).numpy().tolist())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=own) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [[3.0] * 4] * 4 and most[0] == 1, (results, most[0])
