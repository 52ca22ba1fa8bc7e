"""Loading CLIP from a URL (models/checkpoint.py, the progressive loader): a plain Hugging Face folder without a
gpuport manifest (its header checked, the host's sha256 verified), and with one the two towers' chunks in turns, a
priority, a tower usable while the other loads, corrupt chunks of either tower refetched and never cached, and the
load's peak memory. On the 64-wide clip-tiny checkpoint (15 MB) behind tests/model_server.py, on the cpu backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os

import gpuport as gp
import numpy as np
import pytest
from clip_files import checkpoint, model_reference
from gpuport.errors import LoadError
from gpuport.formats.chunk_manifest import build_manifest
from gpuport.loading.chunk_cache import MemoryChunkCache
from gpuport.models import clip as C
from model_server import Server

NAME = "clip-tiny"
CHUNK = 256 * 1024


@pytest.fixture
def served(tmp_path):
    """The checkpoint's files behind a local server (faults injectable), without a manifest."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for f in os.listdir(checkpoint(NAME)):
        if not f.startswith("."):
            (folder / f).symlink_to(checkpoint(NAME) / f)
    server = Server(tmp_path)
    yield server, folder
    server.close()


def _with_manifest(folder) -> dict:
    m = build_manifest(folder / "model.safetensors", CHUNK, model=NAME, files=C.TEXT_FILES)
    (folder / "manifest.json").write_text(json.dumps(m))
    return m


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _texts_equal_transformers(model, texts) -> None:
    ref = model_reference(NAME)
    want = np.frombuffer(base64.b64decode(ref["text_embeds"]), np.float32).reshape(len(ref["texts"]), -1)
    want = want / np.linalg.norm(want, axis=-1, keepdims=True)
    assert np.abs(texts - want[:len(texts)]).max() < 1e-5


async def _load(url, chunks_per_request=2, **options):
    rt = await gp.open(backend="cpu")
    events = []
    model = await gp.models.load("clip-vit-base-patch32", rt, source=url, on_progress=events.append,
                                 chunk_size_mb=chunks_per_request * CHUNK / 2**20,
                                 loader_options={"backoff_s": 0.001, "cache": None, **options.pop("loader_options", {})},
                                 **options)
    return rt, model, events


def test_plain_hugging_face_folder_with_the_hosts_digest(served):
    server, folder = served
    server.faults.headers["model.safetensors"] = {"X-Linked-Etag": f'"{_sha256(folder / "model.safetensors")}"'}

    async def run():
        rt, model, events = await _load(server.url)
        texts = await model.embed_texts(model_reference(NAME)["texts"][:3])
        rt.close()
        return model, events, texts
    model, events, texts = asyncio.run(run())
    _texts_equal_transformers(model, texts)
    manifest = [e for e in events if e["stage"] == "manifest" and e.get("note")]
    assert manifest and manifest[-1]["derived"] and "file sha256" in manifest[-1]["note"]
    assert any("matches" in (e.get("note") or "") for e in events if e["stage"] == "verify")
    assert model.stats()["load"]["memory_only"], "nothing to check a cached chunk against: nothing cached"


def test_digest_mismatch_or_a_sidecar(served):
    server, folder = served
    server.faults.headers["model.safetensors"] = {"ETag": '"' + "0" * 64 + '"'}
    with pytest.raises(LoadError, match="the host says 000000000000"):
        asyncio.run(_load(server.url))
    server.faults.headers.clear()
    (folder / "model.safetensors.sha256").write_text(_sha256(folder / "model.safetensors") + "  model.safetensors\n")
    server.faults.add("corrupt", start=4 * CHUNK, times=1)   # no chunk digests: only the file's catches it

    with pytest.raises(LoadError, match="the file's sha256"):
        asyncio.run(_load(server.url, loader_options={"retries": 0}))

    async def run():
        rt, model, events = await _load(server.url)
        rt.close()
        return events
    assert any("matches" in (e.get("note") or "") for e in asyncio.run(run()) if e["stage"] == "verify")


def test_header_and_shapes_are_checked(served, tmp_path):
    server, folder = served
    truncated = tmp_path / "short"
    truncated.mkdir()
    (truncated / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1 << 20])
    for f in C.TEXT_FILES:
        (truncated / f).write_bytes((folder / f).read_bytes())
    with pytest.raises(LoadError, match="but the file has only 1039696 data bytes"):
        asyncio.run(_load(server.url.replace("/tiny/", "/short/")))
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["hidden_size"] = 128
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError, match=r"'text_model\..*' is float32 \(.*\), expected float32 \(.*128"):
        asyncio.run(_load(server.url))


def test_towers_interleave_and_a_priority_tower_is_usable_first(served):
    server, folder = served
    m = _with_manifest(folder)

    async def unprioritised():
        rt, model, events = await _load(server.url)
        rt.close()
        return [e["component"] for e in events if e["stage"] == "upload" and e.get("component")]
    order = asyncio.run(unprioritised())
    # in turns: the vision tower's first tensors arrive before the text tower's last, and the other way round
    assert order.index("vision") < len(order) - 1 - order[::-1].index("text"), order
    assert order.index("text") < len(order) - 1 - order[::-1].index("vision"), order

    # the vision tower's chunks answer slowly: the text tower, asked for first, is in and used well before them
    vision_start = min(t["start"] for n, t in m["tensors"].items() if n.startswith(("vision", "visual")))
    for c in m["chunks"]:
        if c["start"] >= vision_start:   # the vision tower's own chunks (one it shares with text comes with text)
            server.faults.add("slow", start=c["start"], times=1)

    async def run():
        rt, model, events = await _load(server.url, priority="text")
        ready_at_return = dict(model.components.ready)
        texts = await model.embed_texts(model_reference(NAME)["texts"][:2])
        vision_after_texts = "vision" in model.components.ready
        images = await model.embed_images([np.zeros((64, 64, 3), np.uint8)])   # waits for the vision tower
        await model.components.done()
        rt.close()
        return model, events, ready_at_return, texts, vision_after_texts, images
    model, events, ready, texts, vision_after_texts, images = asyncio.run(run())
    assert set(ready) == {"text"} and not vision_after_texts, "text was embedded while the vision tower loaded"
    _texts_equal_transformers(model, texts)
    assert images.shape == (1, 32) and model.components.ready["vision"] > model.components.ready["text"]
    order = [e["component"] for e in events if e["stage"] == "upload" and e.get("component")]
    assert order[0] == "text" and set(order) == {"text", "vision"}
    assert model.stats()["load"]["peak_rss_bytes"] > 0


def test_a_corrupt_chunk_of_either_tower_is_refetched_and_never_cached(served):
    server, folder = served
    m = _with_manifest(folder)
    text_chunk = m["tensors"]["text_model.encoder.layers.0.mlp.fc1.weight"]["chunks"][0]
    vision_chunk = m["tensors"]["vision_model.encoder.layers.1.mlp.fc1.weight"]["chunks"][0]
    for i in (text_chunk, vision_chunk):
        server.faults.add("corrupt", start=m["chunks"][i]["start"], times=1)
    cache = MemoryChunkCache()

    async def run():
        rt, model, events = await _load(server.url, 1, priority="vision", loader_options={"cache": cache})
        await model.components.done()
        texts = await model.embed_texts(model_reference(NAME)["texts"][:3])
        rt.close()
        return model, events, texts
    model, events, texts = asyncio.run(run())
    _texts_equal_transformers(model, texts)
    retried = [e["note"] for e in events if e["stage"] == "retry"]
    assert len(retried) == 2 and model.stats()["load"]["retries"] == 2, retried
    assert list(model.components.ready) == ["vision", "text"]
    for key, blob in cache.chunks.items():   # every cached chunk is the manifest's
        if ":" in key and not key.startswith("file:"):
            assert hashlib.sha256(blob).hexdigest() == m["chunks"][int(key.split(":")[1])]["sha256"], key
