"""FallbackManager: one test per strategy (telemetry proves it ran, the reference proves it right), the
seed's surface, create_optimal_fallback_strategy, metrics reset."""

import math

import gpuport as gp
import numpy as np
import pytest
from gpuport.engine.fallback import (
    STRATEGIES,
    FallbackManager,
    create_optimal_fallback_strategy,
)
from gpuport.host import hostops
from gpuport.host import references as K

U = 2.0 ** -24
MiB = 1 << 20
SMALL = {"maxStorageBufferBindingSize": MiB, "maxBufferSize": MiB}


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture
def constrained():
    rt = gp.open_sync(backend="webgpu", tier="constrained", budget=SMALL)
    yield rt
    rt.close()


def matmul_bound(a, bb, k):
    return 2 * (k + 1) * U * (np.abs(a) @ np.abs(bb)) + 1e-30


def test_native_on_full_or_core_tier():
    with gp.open_sync(backend="webgpu") as rt:
        x = rng().standard_normal((33, 65)).astype(np.float32)
        got = rt.ops.gelu(rt.tensor(x)).numpy()
        m = rt.fallback.get_performance_metrics()
        assert m["native_operations"] == 1 and m["fallback_activations"] == 0 and m["strategies"] == {"native": 1}
        np.testing.assert_allclose(got, K.gelu_ref(x), atol=1e-6)
        assert not rt.fallback.needs_fallback("gelu")


@pytest.mark.parametrize("transpose_b", [False, True], ids=["row_blocks_split_k", "column_blocks"])
def test_layer_decomposition(constrained, transpose_b):
    r = rng(1)
    a = r.uniform(-1, 1, (2, 70, 256)).astype(np.float32)              # batched input, flattened to rows
    w = r.uniform(-1, 1, (1200, 256) if transpose_b else (256, 1200)).astype(np.float32)  # 1.17 MiB
    wt = constrained.tensor(w)
    assert wt.blocked and len(wt.blocks) == 2
    y = constrained.ops.matmul(constrained.tensor(a), wt, transpose_b=transpose_b)
    m = constrained.fallback.get_performance_metrics()
    assert m["strategies"] == {"layer_decomposition": 1} and m["layer_operations"] == 2
    assert m["fallback_activations"] == 1 and m["memory_usage"]["largest_binding_bytes"] <= MiB
    bb = w.T if transpose_b else w
    want = K.matmul_ref(a, w, transpose_b=transpose_b)
    assert (np.abs(y.numpy() - want) <= matmul_bound(a, bb, 256)).all()


def test_layer_decomposition_with_blocked_input_and_output(constrained):
    # A (1100, 256) input (1.07 MiB) and a (1100, 400) output (1.7 MiB) both over budget, weight fits.
    r = rng(2)
    a = r.uniform(-1, 1, (1100, 256)).astype(np.float32)
    w = r.uniform(-1, 1, (256, 400)).astype(np.float32)
    bias = r.uniform(-1, 1, 400).astype(np.float32)
    at = constrained.tensor(a)
    y = constrained.ops.matmul(at, constrained.tensor(w), bias=constrained.tensor(bias))
    assert at.blocked and y.blocked
    m = constrained.fallback.get_performance_metrics()
    assert m["last_strategy"]["matmul"] == "layer_decomposition" and m["layer_operations"] >= 2
    bound = 2 * 257 * U * (np.abs(a) @ np.abs(w) + np.abs(bias)) + 1e-30
    assert (np.abs(y.numpy() - K.matmul_ref(a, w, bias)) <= bound).all()


def test_tiled_processing(constrained):
    r = rng(3)
    x = r.standard_normal((700, 512)).astype(np.float32)  # 1.37 MiB
    xt = constrained.tensor(x)
    assert xt.blocked
    got = constrained.ops.l2_normalize(constrained.ops.scale(xt, 2.0, 0.5))
    mean = constrained.ops.mean(xt)
    m = constrained.fallback.get_performance_metrics()
    assert m["strategies"] == {"tiled": 3} and m["tiles"] == 3 * len(xt.blocks)
    np.testing.assert_allclose(got.numpy(), K.l2_normalize_ref(K.scale_ref(x, a=2.0, b=0.5)), atol=4 * 512 * U + 1e-7)
    assert (np.abs(mean.numpy() - K.mean_ref(x)) <= 2 * U * np.abs(x).sum(-1) + 1e-7).all()


def test_chunked_attention_query_chunks():
    r = rng(4)
    q = r.standard_normal((1, 120, 64)).astype(np.float32)
    k = r.standard_normal((1, 90, 64)).astype(np.float32)
    with gp.open_sync(backend="webgpu", tier="constrained", budget={"maxAttentionScoresPerDispatch": 900}) as rt:
        got = rt.ops.attention(rt.tensor(q), rt.tensor(k), rt.tensor(k), 2).numpy()
        m = rt.fallback.get_performance_metrics()
    assert m["strategies"] == {"chunked_attention": 1}
    assert m["attention_dispatches"] == 2 * math.ceil(120 / (900 // 90))   # per head, 10-query chunks
    np.testing.assert_allclose(got, K.attention_ref(q, k, k, None, num_heads=2), rtol=1e-4, atol=2e-5 * 8)


def test_head_partitioning():
    r = rng(5)
    q = r.standard_normal((1, 40, 96)).astype(np.float32)
    k = r.standard_normal((1, 50, 96)).astype(np.float32)
    with gp.open_sync(backend="webgpu", tier="constrained", budget={"maxAttentionScoresPerDispatch": 2 * 40 * 50}) as rt:
        got = rt.ops.attention(rt.tensor(q), rt.tensor(k), rt.tensor(k), 6).numpy()
        m = rt.fallback.get_performance_metrics()
    assert m["strategies"] == {"head_partitioning": 1} and m["attention_dispatches"] == 3  # 6 heads in groups of 2
    np.testing.assert_allclose(got, K.attention_ref(q, k, k, None, num_heads=6), rtol=1e-4, atol=2e-5 * 4)


def test_simplified_shader(constrained):
    r = rng(6)
    a = r.uniform(-1, 1, (37, 129)).astype(np.float32)
    w = r.uniform(-1, 1, (65, 129)).astype(np.float32)
    got = constrained.ops.matmul(constrained.tensor(a), constrained.tensor(w), transpose_b=True).numpy()
    x = r.standard_normal(1000).astype(np.float32)
    s = constrained.ops.add(constrained.tensor(x), constrained.tensor(x)).numpy()
    m = constrained.fallback.get_performance_metrics()
    assert m["strategies"] == {"simplified_shader": 2}
    assert constrained.fallback.needs_fallback("matmul")
    assert (np.abs(got - K.matmul_ref(a, w, transpose_b=True)) <= matmul_bound(a, w.T, 129)).all()
    np.testing.assert_array_equal(s, x + x)
    pipes = [p.label for p in constrained.device.pipelines.values()]
    assert "matmul_small" in pipes and "matmul" not in pipes


def test_f16_full_tier_or_step_down():
    with gp.open_sync(backend="webgpu", precision="f16") as rt:
        x = rng(7).standard_normal((9, 300)).astype(np.float32)
        got = rt.ops.softmax(rt.tensor(x)).numpy()
        m = rt.fallback.get_performance_metrics()
        expected = "f16" if "shader-f16" in rt.info()["features"] else "native"
        assert m["strategies"] == {expected: 1} and m["native_operations"] == 1
        np.testing.assert_allclose(got, K.softmax_ref(x), atol=1e-3, rtol=1e-2)


def test_cpu_strategy_needs_known_values():
    # Forced to cpu: used when the host knows the inputs, a GPU path when it does not (no sync readback).
    with gp.open_sync(backend="webgpu") as rt:
        rt.fallback.config["force"] = {"gelu": "cpu"}
        x = rng(8).standard_normal((5, 7)).astype(np.float32)
        y = rt.ops.gelu(rt.tensor(x))
        assert y.known_values() is not None
        z = rt.ops.gelu(rt.ops.scale(rt.tensor(x), 1.0, 0.0))   # an op output: values not on the host
        m = rt.fallback.get_performance_metrics()
        # natively the host engine is the native C build where `make setup` built it, else NumPy
        assert m["cpu_fallbacks"] == 1 and m["host_engine"] == hostops.backend_name() and m["wasm_fallbacks"] == 0
        assert m["host_engine"] in ("native-simd", "numpy")
        assert m["strategies"] == {"cpu": 1, "native": 2}
        np.testing.assert_allclose(y.numpy(), K.gelu_ref(x), atol=1e-6)
        np.testing.assert_allclose(z.numpy(), K.gelu_ref(x), atol=1e-6)


def test_no_strategy_and_unknown_values_names_the_limit(constrained):
    r = rng(9)
    table = constrained.ops.scale(constrained.tensor(r.standard_normal((5000, 64)).astype(np.float32)), 1.0, 0.0)
    assert table.blocked and table.known_values() is None
    ids = constrained.tensor(np.array([1, 2], np.int32))
    with pytest.raises(gp.LimitExceeded, match="maxStorageBufferBindingSize") as exc:
        constrained.ops.embedding(ids, table)
    assert exc.value.value == MiB and "host" in str(exc.value)


def test_blocked_tensor_refused_by_user_kernels(constrained):
    t = constrained.empty((600, 512))
    assert t.blocked
    k = constrained.kernel("@group(0) @binding(0) var<storage, read_write> d: array<f32>;\n"
                           "@compute @workgroup_size(1) fn main() { d[0] = 1.0; }")
    with pytest.raises(gp.LimitExceeded, match="blocks"):
        k.dispatch(1, t)


def test_metrics_reset_and_timings(constrained):
    x = constrained.tensor(np.ones((4, 4), np.float32))
    constrained.ops.gelu(x)
    m = constrained.fallback.get_performance_metrics()
    assert m["operation_timings"]["gelu"]["count"] == 1 and m["operation_timings"]["gelu"]["total_ms"] >= 0
    constrained.fallback.reset_metrics()
    m = constrained.fallback.get_performance_metrics()
    assert m["fallback_activations"] == m["native_operations"] == m["layer_operations"] == m["cpu_fallbacks"] == 0
    assert m["operation_timings"] == {} and m["strategies"] == {}


def test_run_with_fallback_seed_surface():
    with gp.open_sync(backend="webgpu", tier="constrained", budget=SMALL) as rt:
        a = rng(10).standard_normal((3, 4)).astype(np.float32)
        w = rng(11).standard_normal((5, 4)).astype(np.float32)
        y = rt.fallback.run_with_fallback("linear", {"a": rt.tensor(a), "b": rt.tensor(w)}, {"transpose_b": True})
        np.testing.assert_allclose(y.numpy(), a @ w.T, atol=1e-5)
        assert rt.fallback.get_performance_metrics()["last_strategy"]["matmul"] == "simplified_shader"
    # standalone, as in the seed: browser info only, NumPy arrays, the reference runs
    mgr = FallbackManager(browser_info={"name": "safari", "version": "15.0"}, model_type="text")
    assert mgr.tier == "constrained" and mgr.needs_fallback("matmul")
    q = rng(12).standard_normal((1, 4, 8)).astype(np.float32)
    out = mgr.run_with_fallback("attention_compute", {"query": q, "key": q, "value": q}, {"num_heads": 2})
    # the host kernel (native C natively): float32 with its own summation order, so tests/cases.py's
    # attention tolerance rather than bit equality with the float64-stepped reference
    np.testing.assert_allclose(out, K.attention_ref(q, q, q, num_heads=2), rtol=1e-4, atol=2e-5 * 2)
    assert mgr.get_performance_metrics()["cpu_fallbacks"] == 1
    assert mgr.run_with_fallback(lambda inputs: inputs["x"] + 1, {"x": 1}) == 2
    assert mgr.get_performance_metrics()["native_operations"] == 1
    assert not FallbackManager(browser_info={"name": "safari", "version": "17.0"}).needs_fallback("matmul")


def test_create_optimal_fallback_strategy():
    s = create_optimal_fallback_strategy("text", {"name": "safari", "version": "17.0"}, "attention",
                                         {"seq_len": 1024, "num_heads": 12})
    assert s["strategy"] == "chunked_attention" and s["parameters"]["query_chunk"] == (1 << 18) // 1024
    s = create_optimal_fallback_strategy("text", {"name": "chrome", "version": "156"}, "attention",
                                         {"seq_len": 256, "num_heads": 12})
    assert s["strategy"] == "head_partitioning" and s["parameters"]["heads_per_group"] == 4
    s = create_optimal_fallback_strategy("text", {"name": "safari", "version": "15.0"}, "matmul",
                                         {"weight_bytes": 200 << 20})
    assert s["strategy"] == "layer_decomposition" and s["tier_cap"] == "constrained"
    assert s["parameters"]["blocks"] == math.ceil((200 << 20) / (64 << 20))
    s = create_optimal_fallback_strategy("text", {"name": "safari", "version": "15.0"}, "matmul")
    assert s["strategy"] == "simplified_shader" and s["workgroup_size"] == 64
    s = create_optimal_fallback_strategy("vision", {"name": "firefox", "version": "153"}, "gelu",
                                         {"tensor_bytes": 300 << 20})
    assert s["strategy"] == "tiled" and s["parameters"]["tile_rows"] == 64 and s["workgroup_size"] == 256
    s = create_optimal_fallback_strategy("text", {"name": "firefox", "version": "153"}, "matmul",
                                         {"precision": "f16", "has_f16": True})
    assert s["strategy"] == "f16" and s["use_f16"]
    s = create_optimal_fallback_strategy("text", {"name": "safari", "version": "15.0"}, "matmul",
                                         {"precision": "f16", "has_f16": True})
    assert not s["use_f16"]   # Safari < 16 has f16 switched off by the quirks table
    s = create_optimal_fallback_strategy("text", None, "embedding", {"tensor_bytes": 200 << 20})
    assert s["strategy"] == "cpu"
    for s in (create_optimal_fallback_strategy("audio", None, op) for op in ("matmul", "attention", "softmax")):
        assert s["strategy"] in STRATEGIES
