"""all-MiniLM-L6-v2 on gpuport ops against sentence-transformers (fixtures/minilm_reference.json), natively
on both backends. The case bodies live in model_cases.py so a page can run them too."""

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import gpuport as gp
import model_cases as mc
import pytest
from gpuport import models
from gpuport.placement.selector import BackendCosts

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))
BACKENDS = ("webgpu", "cpu")


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request):
    rt = gp.open_sync(backend=request.param)
    model = asyncio.run(models.load("minilm-l6-v2", rt))
    yield rt, model
    rt.close()


def test_matches_sentence_transformers(loaded):
    rt, model = loaded
    stats = asyncio.run(mc.minilm_matches_reference(rt, FIXTURE, model))
    print(f"\n{stats}")


def test_batch_equals_single(loaded):
    rt, model = loaded
    texts = ["Hi", "A man is eating food.", "The quick brown fox jumps over the lazy dog!!!", "?"]
    asyncio.run(mc.minilm_batch_equals_single(rt, texts, model))


def test_order_preserved(loaded):
    rt, model = loaded
    asyncio.run(mc.minilm_order_preserved(rt, FIXTURE, model))


def test_a_load_under_auto_places_no_op_and_keeps_every_weight_known_to_the_host(tmp_path, monkeypatch):
    """Were the position table folded by an op, auto could place it on the device (it explores, or a stored
    record says so), leaving that weight device-only and with it every forward (a page's first embedding
    57 ms -> 2.7 s in bench/startup.py): loading runs no op, even where every op would go to the device."""
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    rt = gp.open_sync()
    try:
        with rt.placement.auto.pinned("webgpu"):
            model = asyncio.run(models.load("minilm-l6-v2", rt))
        assert rt.info()["selection"]["counts"] == {}
        assert model._host_weights() is not None
    finally:
        rt.close()


def test_a_forward_counts_the_upload_of_weights_only_the_host_has(tmp_path, monkeypatch):
    """A device that computes the forward faster, but must first receive 90 MB of weights over a slow link,
    is neither chosen nor explored for it; with the weights' upload cheap, it is chosen."""
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    rt = gp.open_sync()
    try:
        model = asyncio.run(models.load("minilm-l6-v2", rt))
        auto = rt.placement.auto
        fast = BackendCosts(flops_per_s=1e12, bytes_per_s=1e11, transfer_bytes_per_s=1e8, overhead_s=1e-6)
        auto.selector.costs = {"webgpu": fast, "cpu": BackendCosts(flops_per_s=1e10, bytes_per_s=1e10, overhead_s=1e-6)}
        assert model.on_host(1, 8) and auto.selector.decisions["explore"] == 0   # 0.9 s of upload first
        auto.selector.costs["webgpu"] = replace(fast, transfer_bytes_per_s=1e12)
        assert not model.on_host(1, 8)
    finally:
        rt.close()


def test_load_progress_and_errors(tmp_path):
    rt = gp.open_sync(backend="cpu")
    events = []
    model = asyncio.run(models.load("minilm-l6-v2", rt, on_progress=events.append))
    stages = [e["stage"] for e in events]
    assert stages[0] == "download" and stages[-1] == "ready" and "upload" in stages
    ups = [e["done"] for e in events if e["stage"] == "upload"]
    assert ups == sorted(ups) and ups[-1] == events[-1]["total"]
    assert model.dim == 384 and model.config.max_seq_length == 256
    with pytest.raises(ValueError, match="unknown model"):
        asyncio.run(models.load("gpt-17", rt))
    with pytest.raises(gp.LoadError, match="127.0.0.1:9/models/minilm-l6-v2/manifest.json"):  # URLs: gpuport.loading.loader
        asyncio.run(models.load("minilm-l6-v2", rt, source="http://127.0.0.1:9/models/minilm-l6-v2/",
                                loader_options={"retries": 1, "backoff_s": 0.001}))
    with pytest.raises(gp.LoadError):
        asyncio.run(models.load("minilm-l6-v2", rt, source=str(tmp_path)))
    with pytest.raises(TypeError):
        asyncio.run(model.embed("one string"))


def test_plan_batches():
    rt = gp.open_sync(backend="cpu")
    model = asyncio.run(models.load("minilm-l6-v2", rt))
    lengths = [256, 5, 6, 5, 30, 256, 7]
    batches = model.plan_batches(lengths, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 for b in batches)
    assert [lengths[i] for i in batches[-1]] == [256, 256]
    assert model.plan_batches(lengths, batch_size=32, max_padding=1e9) == [[1, 3, 2, 6, 4, 0, 5]]
