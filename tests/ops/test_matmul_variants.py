"""The register-blocked matmul variants (shaders/matmul_rb_*.wgsl): each one against the NumPy reference on
awkward shapes natively, the fused bias+gelu epilogue, and the per-adapter choice by measurement (tuning.py)
kept in the pipeline manifest. Their freshness against shaders/generate.py: test_generated_shaders.py.

Tolerance: as tests/cases.py's matmul, Higham's bound for a K-term dot product doubled (2(K+1)u(|a||b|+|bias|));
with the GELU epilogue, GELU's derivative is below 1.13 in magnitude, so that bound times 1.13 plus the erf
polynomial's 1e-6 (gelu's own tolerance in cases.py).
"""

import asyncio
import json

import gpuport as gp
import numpy as np
import pytest
from gpuport.engine.tuning import apply, tune_matmul
from gpuport.host import references as K
from gpuport.ops.kernels import RB_VARIANTS
from gpuport.ops.launches import Part, rb_matmul_launch
from gpuport.ops.pipelines import PipelineManifest
from gpuport.types import OpCall

U = 2.0 ** -24
# (batch, M, K, N): one row/column, odd rows and columns, not multiples of any block, batched, large
SHAPES = [((), 1, 4, 1), ((), 37, 100, 53), ((2,), 17, 32, 29), ((), 300, 384, 97)]


@pytest.fixture(scope="module")
def rt():
    r = gp.open_sync(backend="webgpu")
    yield r
    r.close()


def _bound(a, bb, bias, k):
    return 2 * (k + 1) * U * (np.abs(a) @ np.abs(bb) + (np.abs(bias) if bias is not None else 0)) + 1e-30


@pytest.mark.parametrize("key", sorted(RB_VARIANTS))
@pytest.mark.parametrize("batch,m,k,n", SHAPES)
def test_variant_matches_numpy(rt, key, batch, m, k, n):
    block = RB_VARIANTS[key]
    tb = block.layout == "tb"
    if not tb:
        n = (n + 3) // 4 * 4   # the (K, N) layout loads B as vec4 along N
    rng = np.random.default_rng(m * 7 + n)
    a = rng.uniform(-1, 1, (*batch, m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (*batch, n, k) if tb else (*batch, k, n)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    planner = rt.placement.planner
    saved = dict(planner.matmul_choice)
    planner.matmul_choice[block.layout] = key
    try:
        got = rt.ops.matmul(rt.tensor(a), rt.tensor(b), bias=rt.tensor(bias), transpose_b=tb).numpy()
    finally:
        planner.matmul_choice.update(saved)
    assert f"matmul_{key}" in {s.label for s in rt.device.pipelines}
    want = K.matmul_ref(a, b, bias, transpose_b=tb)
    bb = np.swapaxes(b, -1, -2) if tb else b
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= _bound(a, bb, bias, k)).all(), f"{key} {batch} {m}x{k}x{n}: max err {err.max():.3g}"


def test_k_not_multiple_of_4_uses_the_tiled_kernel(rt):
    a = np.ones((5, 7), np.float32)
    b = np.ones((7, 8), np.float32)
    call = rt.ops.matmul(rt.tensor(a), rt.tensor(b)).numpy()
    assert (call == 7).all()
    assert rt.placement.planner.matmul_block(
        OpCall("matmul", ("a", "b", "bias"), [Part(None, (5, 7)), Part(None, (7, 8)), None], (5, 8),
                 {"transpose_b": False})) is None


@pytest.mark.parametrize("key", ["rb_tb8x4", "rb_nb8x2"])
def test_fused_bias_gelu_epilogue(rt, key):
    block = RB_VARIANTS[key]
    tb = block.layout == "tb"
    m, k, n = 19, 36, 44
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    dev = rt.device
    parts = [Part(dev.upload(x), x.shape) for x in (a, b, bias)]
    out = Part(dev.alloc((m, n), np.dtype(np.float32)), (m, n))
    dev.run(rb_matmul_launch(block, *parts, out, act=1))
    got = asyncio.run(dev.download(out.buffer, (m, n), np.dtype(np.float32)))
    want = K.gelu_ref(K.matmul_ref(a, b, bias, transpose_b=tb))
    bound = 1.13 * _bound(a, b.T if tb else b, bias, k) + 1e-6
    assert (np.abs(got - want) <= bound).all(), np.abs(got - want).max()


def test_tuning_measures_chooses_and_remembers(rt):
    manifest = PipelineManifest("scope")
    planner = rt.placement.planner
    saved = dict(planner.matmul_choice)
    try:
        report = asyncio.run(tune_matmul(rt.device, planner, manifest))
        for layout in ("tb", "nb"):
            r = report[layout]
            assert r["measured"] and set(r["gflops"]) == {k for k, b in RB_VARIANTS.items() if b.layout == layout}
            assert r["chosen"] == max(r["gflops"], key=r["gflops"].get)
            assert manifest.choices[f"matmul.{layout}"] == r["chosen"] == planner.matmul_choice[layout]
        # the choice survives the manifest's round trip and is not measured again
        again = PipelineManifest.from_json("scope", manifest.to_json())
        assert again.choices == manifest.choices
        second = asyncio.run(tune_matmul(rt.device, planner, again))
        assert not second["tb"]["measured"] and second["tb"]["chosen"] == manifest.choices["matmul.tb"]
    finally:
        planner.matmul_choice.update(saved)


def test_apply_ignores_unknown_or_mismatched_choices(rt):
    planner = rt.placement.planner
    saved = dict(planner.matmul_choice)
    try:
        manifest = PipelineManifest("scope", choices={"matmul.tb": "rb_nb8x2", "matmul.nb": "nonsense"})
        apply(manifest, planner)
        assert planner.matmul_choice == saved
        apply(PipelineManifest("scope", choices={"matmul.tb": "rb_tb8x4"}), planner)
        assert planner.matmul_choice["tb"] == "rb_tb8x4"
    finally:
        planner.matmul_choice.update(saved)


def test_bad_choices_record_is_repaired():
    text = json.dumps({"format": 1, "scope": "s", "choices": {"matmul.tb": 3}, "entries": []})
    with pytest.warns(Warning):
        manifest = PipelineManifest.from_json("s", text)
    assert manifest.choices == {} and manifest.repaired
