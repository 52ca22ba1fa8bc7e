"""BackendSelector: cost model first, measurements after, bounded exploration, overrides, persistence."""

import time

import pytest

from gpuport.errors import GpuportError
from gpuport.selector import BackendCosts, BackendSelector, SelectorConfig, WorkloadCharacteristics

# A software adapter: slow FLOPs, a fixed dispatch cost, a host<->device copy; NumPy: fast, no transfer.
SOFT_GPU = BackendCosts(flops_per_s=2e9, bytes_per_s=4e9, transfer_bytes_per_s=2e9, overhead_s=2e-4)
REAL_GPU = BackendCosts(flops_per_s=2e13, bytes_per_s=5e11, transfer_bytes_per_s=5e9, overhead_s=2e-5)
NUMPY = BackendCosts(flops_per_s=1e11, bytes_per_s=2e10)


def mm(n, on=("cpu", "cpu")):
    return WorkloadCharacteristics.of("matmul", [(n, n), (n, n)], on, output_shape=(n, n))


def test_workload_counts_flops_and_bytes():
    w = mm(64)
    assert w.flops == 2 * 64 ** 3 and w.bytes == 3 * 64 * 64 * 4


def test_model_sends_small_work_to_numpy_and_large_work_to_a_real_gpu():
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=0))
    assert sel.select_backend(mm(8)) == "cpu"
    assert sel.select_backend(mm(4096, on=("webgpu", "webgpu"))) == "webgpu"


def test_transfer_cost_counts_where_inputs_live():
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=0))
    w_host = WorkloadCharacteristics.of("add", [(1 << 20,), (1 << 20,)], ("cpu", "cpu"))
    w_dev = WorkloadCharacteristics.of("add", [(1 << 20,), (1 << 20,)], ("webgpu", "webgpu"))
    assert sel.select_backend(w_host) == "cpu"
    assert sel.select_backend(w_dev) == "webgpu"


def test_measurements_override_a_wrong_model():
    # The model believes the GPU is fast; measurements say it is 50x slower: the selector must learn.
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    w = mm(1024, on=("webgpu", "webgpu"))
    assert sel.select_backend(w) == "webgpu"
    for _ in range(3):
        sel.record(w, "webgpu", 0.5)
    picks = [sel.select_backend(w) for _ in range(5)]
    assert picks[0] == "cpu"      # explores cpu, which the model still rates plausible
    for _ in range(3):
        sel.record(w, "cpu", 0.01)
    assert sel.select_backend(w) == "cpu" and sel.decisions["measured"] >= 1


def test_exploration_is_bounded_and_skips_hopeless_backends():
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=2, explore_ratio=4))
    tiny = WorkloadCharacteristics.of("add", [(16,), (16,)], ("cpu", "cpu"))
    # webgpu's overhead alone makes it >4x worse for 16 elements: never explored.
    assert {sel.select_backend(tiny) for _ in range(20)} == {"cpu"}
    mid = mm(256, on=("webgpu", "webgpu"))
    picks = [sel.select_backend(mid) for _ in range(10)]
    assert picks.count("cpu") + picks.count("webgpu") == 10
    assert sel.decisions["explore"] <= 2


def test_env_overrides_force_or_disable():
    forced = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig.from_env({"GPUPORT_BACKEND": "cpu"}))
    assert forced.select_backend(mm(4096, ("webgpu", "webgpu"))) == "cpu"
    no_gpu = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig.from_env({"GPUPORT_DISABLE": "webgpu"}))
    assert no_gpu.backends == ["cpu"]
    with pytest.raises(GpuportError, match="GPUPORT_BACKEND='metal'"):
        BackendSelector({"cpu": NUMPY}, SelectorConfig.from_env({"GPUPORT_BACKEND": "metal"}))


def test_execute_with_monitoring_falls_back_and_records():
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    w = mm(32)

    def run(backend):
        if backend == "webgpu":
            raise GpuportError("device lost")
        time.sleep(0.001)
        return backend

    assert sel.execute_with_monitoring("mm", "webgpu", run, w, fallback_backends=["cpu"]) == "cpu"
    summary = sel.get_performance_summary()["ops"]["matmul"][str(w.bucket)]
    assert summary["webgpu"]["failures"] == 1 and summary["cpu"]["count"] == 1
    with pytest.raises(GpuportError, match="every backend"):
        sel.execute_with_monitoring("mm", "webgpu", run, w)


def test_history_persists_and_bad_files_are_ignored(tmp_path):
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    w = mm(128)
    for _ in range(3):
        sel.record(w, "cpu", 0.002)
    path = tmp_path / "selector.json"
    sel.save(path)
    again = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    assert again.load(path) == 1
    assert again.get_performance_summary()["ops"]["matmul"][str(w.bucket)]["cpu"]["count"] == 3
    path.write_text("{not json")
    assert BackendSelector({"cpu": NUMPY}).load(path) == 0
    again.reset_performance_history()
    assert again.get_performance_summary()["ops"] == {}


def test_selection_is_cheap():
    # Real budget check lives in bench/; this only guards against an accidental O(history) selection.
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY})
    w = mm(64)
    for _ in range(3):
        sel.record(w, "cpu", 1e-4)
        sel.record(w, "webgpu", 1e-3)
    t0 = time.perf_counter()
    for _ in range(2000):
        sel.select_backend(w)
    assert (time.perf_counter() - t0) / 2000 < 1e-3
