"""BackendSelector: cost model first, measurements after, bounded exploration, overrides, persistence."""

import asyncio
import itertools
import json
import math
import time
from dataclasses import replace

import pytest
from gpuport.errors import GpuportError
from gpuport.formats.records import RecordError
from gpuport.loading.stores import FileStore
from gpuport.placement.selector import (
    BackendCosts,
    BackendSelector,
    SelectorConfig,
    WorkloadCharacteristics,
    read_record,
)

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


def test_the_same_workload_is_estimated_again_when_a_backends_costs_change():
    # estimates are kept per workload object: a calibration that replaces one backend's costs (in place in the
    # dict, or the whole dict) must be seen by the next decision
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=0))
    w = mm(2048, on=("webgpu", "webgpu"))
    assert sel.select_backend(w) == "cpu"
    sel.costs["webgpu"] = REAL_GPU
    assert sel.select_backend(w) == "webgpu"
    sel.costs = {"webgpu": SOFT_GPU, "cpu": NUMPY}
    assert sel.select_backend(w) == "cpu"


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


def test_one_slow_run_outweighs_a_hopeful_estimate():
    # Firefox: the device's estimate (tiny per-op costs behind a read) says 10 ms; its first real run took
    # 300 ms. Waiting for min_samples of those before believing it costs a second per shape.
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=0))
    w = mm(1024, on=("webgpu", "webgpu"))
    assert sel.select_backend(w) == "webgpu"
    sel.record(w, "webgpu", 0.3)
    assert sel.select_backend(w) == "cpu"
    assert sel.decisions["model"] == 2 and sel.decisions["measured"] == 0


def test_exploration_is_bounded_and_skips_hopeless_backends():
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=2, explore_ratio=4))
    tiny = WorkloadCharacteristics.of("add", [(16,), (16,)], ("cpu", "cpu"))
    # webgpu's overhead alone makes it >4x worse for 16 elements: never explored.
    assert {sel.select_backend(tiny) for _ in range(20)} == {"cpu"}
    mid = mm(256, on=("webgpu", "webgpu"))
    picks = [sel.select_backend(mid) for _ in range(10)]
    assert picks.count("cpu") + picks.count("webgpu") == 10
    assert sel.decisions["explore"] <= 2


def test_exploration_never_expects_to_cost_more_than_its_bound():
    """A page's warm visit: the stored host sample of a whole MiniLM forward (the cold visit's first, 74 ms with
    its weights packed) put the software adapter's estimate (0.29 s, weights' upload included) within 4x, and
    exploring it made the first embedding 2 s. Within the ratio but more than explore_max_s worse: not explored;
    a small call within both still is."""
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=3, explore_ratio=4))
    forward = WorkloadCharacteristics("minilm.forward", (), flops=1.1e9, bytes=9e7)
    assert sel.choose(forward, {"webgpu": 0.29, "cpu": 0.074}) == "cpu"
    assert sel.decisions == {**sel.decisions, "explore": 0, "model": 1}
    assert sel.choose(mm(64), {"webgpu": 0.004, "cpu": 0.002}) == "webgpu" and sel.decisions["explore"] == 1


def test_exploration_counts_the_read_round_trip():
    """Firefox answers a page's read at its ~100 ms poll: an op explored on the device is read back by the host's
    next op and costs that poll (a 2,000-row PCA explored its subtract, matmul and setitem: 6x slower). The same
    small call explored where reads take 5 ms (Chromium) is not explored where they take 100."""
    for roundtrip, explored in ((0.005, True), (0.1, False)):
        sel = BackendSelector({"webgpu": replace(SOFT_GPU, roundtrip_s=roundtrip), "cpu": NUMPY},
                              SelectorConfig(explore_budget=3, explore_ratio=4))
        picked = sel.choose(mm(64), {"webgpu": 0.004, "cpu": 0.002})
        assert (picked == "webgpu") is explored and sel.decisions["explore"] == int(explored), roundtrip


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
    # the production path: to_dict as JSON through the selector's FileStore, read_record, load_dict
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    w = mm(128)
    for _ in range(3):
        sel.record(w, "cpu", 0.002)
    store = FileStore(tmp_path / "selector")
    store.save_soon("scope", json.dumps(sel.to_dict()))
    costs, data = read_record(asyncio.run(store.load("scope")))
    assert costs == {"webgpu": REAL_GPU, "cpu": NUMPY}       # the host's infinite transfer rate included
    again = BackendSelector(costs)
    assert again.load_dict(data) == 1
    assert again.get_performance_summary()["ops"]["matmul"][str(w.bucket)]["cpu"]["count"] == 3
    assert BackendSelector({"cpu": NUMPY}).load_dict(data) == 1   # rows of backends it lacks are skipped
    (tmp_path / "selector" / "scope.json").write_text("{not json")
    with pytest.raises(RecordError, match="not JSON"):
        read_record(asyncio.run(store.load("scope")))
    again.reset_performance_history()
    assert again.get_performance_summary()["ops"] == {}


def _record(**change):
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
    sel.record(mm(64), "cpu", 0.001)
    data = sel.to_dict()
    data.update(change)
    return data


def _costs(**change):
    data = _record()
    data["costs"]["webgpu"].update(change)
    return data


def _all_costs(value):
    data = _record()
    for c in data["costs"].values():
        c.update(flops_per_s=value, bytes_per_s=value, transfer_bytes_per_s=value, overhead_s=value)
    return data


# (what, the record, the field the error names)
BAD_RECORDS = [
    ('"stats": 5', _record(stats=5), "stats: must be a list, not int 5"),
    ("a row a number", _record(stats=[5]), "stats[0]: must be a list"),
    ("a row too short", _record(stats=[["matmul", 3, "cpu", 0.1, 3]]), "stats[0]: must have 6 items"),
    ("mean 0", _record(stats=[["matmul", 3, "cpu", 0.0, 3, 0]]), "stats[0][3]"),
    ("mean negative", _record(stats=[["matmul", 3, "cpu", -1.0, 3, 0]]), "stats[0][3]"),
    ("mean NaN", _record(stats=[["matmul", 3, "cpu", math.nan, 3, 0]]), "stats[0][3]"),
    ("mean a string", _record(stats=[["matmul", 3, "cpu", "0.1", 3, 0]]), "stats[0][3]"),
    ("count negative", _record(stats=[["matmul", 3, "cpu", 0.1, -3, 0]]), "stats[0][4]"),
    ("count a float", _record(stats=[["matmul", 3, "cpu", 0.1, 2.5, 0]]), "stats[0][4]"),
    ("failures a boolean", _record(stats=[["matmul", 3, "cpu", 0.1, 3, True]]), "stats[0][5]"),
    ("bucket huge", _record(stats=[["matmul", 10**9, "cpu", 0.1, 3, 0]]), "stats[0][1]"),
    ("op a number", _record(stats=[[1, 3, "cpu", 0.1, 3, 0]]), "stats[0][0]"),
    ("version 2", _record(version=2), "version"),
    ("version true", _record(version=True), "version: True"),
    ("version 1.0", _record(version=1.0), "version: 1.0"),
    ("no costs", {"version": 1, "stats": []}, "costs: missing"),
    ("costs a list", _record(costs=[1, 2]), "costs: must be an object"),
    ("one backend's costs", _record(costs={"cpu": _record()["costs"]["cpu"]}), "costs: backends ['cpu']"),
    ("all costs 0", _all_costs(0), "costs.webgpu.flops_per_s"),
    ("a cost 0", _costs(bytes_per_s=0), "costs.webgpu.bytes_per_s"),
    ("overhead negative", _costs(overhead_s=-1e-3), "costs.webgpu.overhead_s"),
    ("a cost negative", _costs(flops_per_s=-1e9), "costs.webgpu.flops_per_s"),
    ("a cost infinite", _costs(flops_per_s=math.inf), "costs.webgpu.flops_per_s"),
    ("a cost NaN", _costs(overhead_s=math.nan), "costs.webgpu.overhead_s"),
    ("a transfer rate 0", _costs(transfer_bytes_per_s=0), "costs.webgpu.transfer_bytes_per_s"),
    ("round trip negative", _costs(roundtrip_s=-1e-3), "costs.webgpu.roundtrip_s"),
    ("no round trip (a record from before it was measured)",
     {**_record(), "costs": {**_record()["costs"], "webgpu": {k: v for k, v in _record()["costs"]["webgpu"].items()
                                                                if k != "roundtrip_s"}}},
     "costs.webgpu.roundtrip_s: missing"),
    ("a cost a string", _costs(flops_per_s="fast"), "costs.webgpu.flops_per_s"),
    ("a cost missing", {**_record(), "costs": {"cpu": _record()["costs"]["cpu"], "webgpu": {"flops_per_s": 1.0}}},
     "costs.webgpu.bytes_per_s: missing"),
]


@pytest.mark.parametrize("what,record,field", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_a_bad_record_is_refused_as_a_whole_naming_the_field(what, record, field):
    with pytest.raises(RecordError) as info:
        read_record(json.dumps(record))
    assert field in str(info.value), (field, str(info.value))
    if "stats" in field or "version" in field:   # load_dict checks the same, and then takes nothing
        sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY})
        with pytest.raises(RecordError):
            sel.load_dict({**record, "stats": [["gelu", 3, "cpu", 0.1, 3, 0], *record.get("stats", [])]}
                          if isinstance(record.get("stats"), list) else record)
        assert sel.get_performance_summary()["ops"] == {}


@pytest.mark.parametrize("text,words", [
    ('{"stats": ' + "[" * 100000 + "]" * 100000 + "}", "stats[0][0][0][0][0][0][0]: nested deeper"),
    ("[" * 100000, "nested deeper"),
    (json.dumps({**_record(), "pad": "x" * (5 << 20)}), "over the"),
    ("", "not JSON"),
])
def test_nested_huge_or_empty_records_are_refused(text, words):
    with pytest.raises(RecordError, match=words.replace("[", r"\[").replace("]", r"\]")):
        read_record(text)


def test_records_written_with_infinity_still_read():
    # before null, json.dumps wrote the host's infinite transfer rate as the literal Infinity
    text = json.dumps(_record()).replace('"transfer_bytes_per_s": null', '"transfer_bytes_per_s": Infinity')
    assert "Infinity" in text
    costs, _ = read_record(text)
    assert costs["cpu"].transfer_bytes_per_s == math.inf


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


def test_one_fast_run_outweighs_a_pessimistic_estimate():
    """An H100's 16-core host: its whole MiniLM forward of 8 sentences, estimated from NumPy's matmul rate, read
    25 ms against the GPU's measured 20; explored, it ran in 5. Before, an estimate stood above fewer than
    min_samples measurements, and the exploration budget (its first run not recorded: the weights' packing) never
    reached them: every later call stayed on the GPU, 4x slower."""
    sel = BackendSelector({"webgpu": REAL_GPU, "cpu": NUMPY}, SelectorConfig(explore_budget=3))
    forward = WorkloadCharacteristics("minilm.forward", (), flops=2.8e9, bytes=1e7)
    estimates = {"webgpu": 0.015, "cpu": 0.025}
    for _ in range(3):
        sel.record(forward, "webgpu", 0.020)
    assert sel.choose(forward, estimates) == "cpu" and sel.decisions["explore"] == 1   # within 4x and 50 ms
    sel.record(forward, "cpu", 0.005)
    assert [sel.choose(forward, estimates) for _ in range(5)] == ["cpu"] * 5


def _measured_pair(cpu: float, webgpu: float):
    """A selector with three timings of a 128 product on each side (a software adapter's model beside NumPy's)."""
    sel = BackendSelector({"webgpu": SOFT_GPU, "cpu": NUMPY}, SelectorConfig(refresh_after=16))
    w = mm(128)
    for _ in range(3):
        sel.record(w, "cpu", cpu)
        sel.record(w, "webgpu", webgpu)
    return sel, w, {"webgpu": 0.004, "cpu": 0.0003}


def test_a_stale_loser_is_tried_again_ever_less_often():
    """A stored record held a 2,000-row PCA's host product at 3.8 ms (it took 0.1-0.2 in some later processes)
    against lavapipe's 3.2: both measured, the host never chosen again, so never timed again, and the product ran
    on the software adapter in every later process. A measured loser is now tried at its
    second decision in a process (three times in a row), then after 16, 32, 64... more."""
    sel, w, estimates = _measured_pair(cpu=0.0038, webgpu=0.0032)
    assert [sel.choose(w, estimates) for _ in range(2)] == ["webgpu", "cpu"] and sel.decisions["refresh"] == 1
    sel.record(w, "cpu", 0.0002)   # the host's real time: now the best (0.7 * 3.8 + 0.3 * 0.2 = 2.7 ms)
    assert sel.choose(w, estimates) == "cpu"
    # the GPU now the loser, still slower each time it is tried
    tried = []
    for i in range(1, 241):
        if sel.choose(w, estimates) == "webgpu":
            tried.append(i)
            sel.record(w, "webgpu", 0.0032)
    assert tried == [1, 2, 3, 19, 20, 21, 53, 54, 55, 119, 120, 121], tried


def test_a_refresh_sees_past_one_cold_try():
    """The host product of that PCA, tried after a while, took 3.5 ms, then 0.15-0.2: a single try would have
    left the stale 3.3 ms standing against lavapipe's 3.2 (3.36 after it); the next try in the run brings it to 2.4
    ms, and the host wins from there."""
    sel, w, estimates = _measured_pair(cpu=0.0033, webgpu=0.0032)
    timings = itertools.chain([0.0035, 0.0002], itertools.repeat(0.00015))
    picks = []
    for _ in range(4):
        picks.append(sel.choose(w, estimates))
        sel.record(w, picks[-1], next(timings) if picks[-1] == "cpu" else 0.0032)
    assert picks == ["webgpu", "cpu", "cpu", "cpu"] and sel.decisions["refresh"] == 2, picks


def test_a_hopeless_or_costly_loser_is_never_tried_again():
    for webgpu, roundtrip in ((0.05, 0.0), (0.0032, 0.1)):   # beyond 4x the best; within 4x but a 100 ms read
        sel = BackendSelector({"webgpu": replace(SOFT_GPU, roundtrip_s=roundtrip), "cpu": NUMPY},
                              SelectorConfig(refresh_after=4))
        w = mm(128)
        for _ in range(3):
            sel.record(w, "cpu", 0.002)
            sel.record(w, "webgpu", webgpu)
        assert {sel.choose(w, {"webgpu": webgpu, "cpu": 0.002}) for _ in range(100)} == {"cpu"}
        assert sel.decisions["refresh"] == 0
