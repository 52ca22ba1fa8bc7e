"""gpuport.loading.loader natively: a small safetensors file behind our own fault-injecting HTTP server on
127.0.0.1 (404, 500, short/wrong Range answers, corrupt chunks, dropped connections), the cache (resume,
invalidation, quota, corrupt records), local paths, pack-model, and MiniLM from the dev server's URL."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import gpuport as gp
import numpy as np
import pytest
from gpuport.backends.io import ChunkView
from gpuport.formats import chunk_manifest
from gpuport.host.simd_ops import immutable
from gpuport.loading import chunk_cache
from gpuport.loading import loader as L
from gpuport.site.cli import main as cli_main
from model_server import (
    CHUNK,
    Server,
    check_same,
    load,
    make_model,
)


@pytest.fixture()
def tiny(tmp_path):
    tensors = make_model(tmp_path / "tiny")
    srv = Server(tmp_path)
    yield srv, tensors, tmp_path / "tiny"
    srv.close()


# -- the happy path ----------------------------------------------------------------------------------

def test_loads_every_tensor_with_range_requests(tiny):
    srv, tensors, _ = tiny
    out, events, ld = load(srv.url)
    check_same(out, tensors)
    # each array is writable and owns its memory, nothing more: a chunk (or the span of several) is not kept alive by
    # a tensor that lies in part of it, and no writable buffer lies beneath one (simd_ops caches packed weights
    # only of arrays read-only all the way down, which the runtime makes of the loader's own)
    spans = [t["chunks"][0] != t["chunks"][1] for t in ld.manifest["tensors"].values()]
    assert any(spans) and not all(spans)
    for arr in out.values():
        assert arr.flags.writeable and arr.flags.owndata, arr.base
    ranges = [s for p, s in srv.faults.log if p.endswith("model.safetensors")]
    assert ranges[:2] == ["0", "8"], ranges            # the header: 8 bytes, then the JSON
    n_chunks = len(ld.manifest["chunks"])
    assert len(ranges) == 2 + (n_chunks + 1) // 2       # then one request per 2-chunk span
    stages = [e["stage"] for e in events]
    assert stages[0] == "manifest" and {"header", "download", "verify", "upload"} <= set(stages)
    pct = [e["percent"] for e in events]
    assert pct == sorted(pct) and pct[-1] == 100.0
    t = [e["t_ms"] for e in events]
    assert t == sorted(t)
    # every byte stage counts the payload (the tensors' bytes), so their totals agree; the network count
    # also has the file's header
    payload = sum(v.nbytes for v in tensors.values())
    for stage in ("download", "verify", "upload"):
        last = [e for e in events if e["stage"] == stage][-1]
        assert last["bytes_done"] == last["bytes_total"] == payload, (stage, last)
    assert [e for e in events if e["stage"] == "download"][-1]["network_bytes"] == ld.manifest["size"] > payload
    assert ld.stats()["bytes_downloaded"] == ld.manifest["size"]


def test_uploads_to_the_runtime_as_tensors_complete(tiny):
    srv, tensors, _ = tiny
    rt = gp.open_sync(backend="cpu")
    out, events, ld = load(srv.url, rt=rt, concurrency=1)
    check_same(out, tensors)
    assert all(isinstance(t, gp.Tensor) for t in out.values())
    # the runtime took the loader's arrays as they are: read-only all the way down, so the host kernels pack a
    # weight once (simd_ops.immutable; a page's encoder layer refuses any other)
    weights = [t for t in out.values() if t.dtype == np.float32]
    assert weights and all(t.host is not None and immutable(t.host) for t in weights)
    # with one request at a time, layer 0 is uploaded before the last chunk has even been requested
    first_layer0 = next(i for i, e in enumerate(events) if e["stage"] == "upload" and e["layer"] == "0")
    last_download = max(i for i, e in enumerate(events) if e["stage"] == "download")
    assert first_layer0 < last_download
    ups = [e["tensor"] for e in events if e["stage"] == "upload"]
    assert sorted(ups) == sorted(tensors)


def test_subset_fetches_only_its_chunks(tiny):
    srv, tensors, _ = tiny
    out, _, ld = load(srv.url, names=["encoder.layer.2.dense.weight"])
    np.testing.assert_array_equal(out["encoder.layer.2.dense.weight"], tensors["encoder.layer.2.dense.weight"])
    assert ld.stats()["bytes_downloaded"] < ld.manifest["size"] // 2


def test_local_directory_with_and_without_manifest(tiny):
    _, tensors, folder = tiny
    out, _, _ = load(str(folder))
    check_same(out, tensors)
    (folder / "manifest.json").unlink()
    out, events, ld = load(str(folder))
    check_same(out, tensors)
    assert ld.manifest["sha256"]


def test_read_text_is_verified(tiny):
    srv, _, folder = tiny
    ld = L.ProgressiveModelLoader(srv.url, cache=None)
    assert asyncio.run(ld.load_manifest())["files"]["config.json"]
    assert json.loads(asyncio.run(ld.read_text("config.json"))) == {"ok": True}
    (folder / "config.json").write_text('{"ok": false}')
    with pytest.raises(gp.LoadError, match="config.json.*sha256"):
        asyncio.run(ld.read_text("config.json"))


# -- faults ------------------------------------------------------------------------------------------

def second_span_start(ld_manifest) -> int:
    return ld_manifest["chunks"][2]["start"]


@pytest.mark.parametrize("kind", ["500", "short", "wrong_range", "ignore_range", "corrupt", "drop"])
def test_transient_fault_is_retried(tiny, kind):
    srv, tensors, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    srv.faults.add(kind, start=second_span_start(m), times=2)
    out, events, ld = load(srv.url)
    check_same(out, tensors)
    assert ld.stats()["retries"] == 2
    notes = [e["note"] for e in events if e["stage"] == "retry"]
    assert len(notes) == 2 and "chunks 2-3" in notes[0], notes


@pytest.mark.parametrize("kind,words", [
    ("500", "HTTP 500"), ("short", "short body"), ("wrong_range", "wrong Content-Range"),
    ("ignore_range", "HTTP 200"), ("corrupt", "chunk 2 failed its sha256 check"), ("drop", "connection"),
])
def test_persistent_fault_raises_load_error_naming_url_and_chunk(tiny, kind, words):
    srv, _, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    srv.faults.add(kind, start=second_span_start(m))
    cache = chunk_cache.MemoryChunkCache()
    with pytest.raises(gp.LoadError) as info:
        load(srv.url, retries=2, cache=cache)
    msg = str(info.value)
    assert srv.url + "model.safetensors" in msg and "chunk" in msg and words in msg, msg
    assert "after 3 attempts" in msg, msg
    # nothing corrupt was cached: every cached chunk is one the manifest vouches for, and not chunk 2 or 3
    sha = m["sha256"]
    for key, blob in cache.chunks.items():
        i = int(key.split(":")[1])
        assert key.startswith(sha) and chunk_manifest.sha256(blob) == m["chunks"][i]["sha256"]
    assert f"{sha}:2" not in cache.chunks and f"{sha}:3" not in cache.chunks


def test_404_fails_at_once(tiny):
    srv, _, _ = tiny
    srv.faults.add("404", path="manifest.json")
    with pytest.raises(gp.LoadError, match=r"/tiny/manifest.json: manifest: HTTP 404 \(after 1 attempt\)"):
        load(srv.url)
    srv.faults.rules.clear()
    srv.faults.add("404", start=second_span_start(json.loads((tiny[2] / "manifest.json").read_text())))
    with pytest.raises(gp.LoadError, match=r"model.safetensors: chunks 2-3 .*HTTP 404"):
        load(srv.url)


def test_backoff_is_exponential(tiny, monkeypatch):
    srv, _, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    srv.faults.add("500", start=second_span_start(m))
    delays = []
    real_sleep = asyncio.sleep

    async def fake_sleep(d, *a):
        delays.append(d)
        await real_sleep(0)
    monkeypatch.setattr(L.asyncio, "sleep", fake_sleep)
    with pytest.raises(gp.LoadError):
        load(srv.url, retries=3, backoff_s=0.1)
    assert delays == [0.1, 0.2, 0.4]


def test_stale_manifest_is_refused(tiny):
    srv, _, folder = tiny
    make_model(folder, seed=1)                           # a new file ...
    (folder / "manifest.json").write_text(json.dumps(    # ... with the old header but new data
        {**json.loads((folder / "manifest.json").read_text()), "header_sha256": "0" * 64}))
    with pytest.raises(gp.LoadError, match="header sha256 does not match"):
        load(srv.url)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(gp.LoadError, match="manifest is not JSON"):
        load(srv.url)


@pytest.mark.parametrize("start", [0, 8])   # the 8-byte length, then the JSON
def test_one_corrupt_header_byte_is_retried(tiny, start):
    srv, tensors, _ = tiny
    srv.faults.add("corrupt", start=start, times=1)
    out, events, ld = load(srv.url)
    check_same(out, tensors)
    assert ld.stats()["retries"] == 1
    notes = [e["note"] for e in events if e["stage"] == "retry"]
    assert len(notes) == 1 and "model.safetensors: header" in notes[0] and "retry 1/3" in notes[0], notes
    assert ("header length" if start == 0 else "header sha256") in notes[0], notes
    # a bad length is caught before the JSON is asked for; a bad JSON byte costs both requests again
    expected = ["0", "0", "8"] if start == 0 else ["0", "8", "0", "8"]
    assert [s for p, s in srv.faults.log if p.endswith("model.safetensors")][:len(expected)] == expected


@pytest.mark.parametrize("start,words", [(0, "header length"), (8, "header sha256 does not match")])
def test_persistently_corrupt_header_fails_after_the_retries(tiny, start, words, monkeypatch):
    srv, _, folder = tiny
    srv.faults.add("corrupt", start=start)
    delays = []
    real_sleep = asyncio.sleep

    async def fake_sleep(d, *a):
        delays.append(d)
        await real_sleep(0)
    monkeypatch.setattr(L.asyncio, "sleep", fake_sleep)
    with pytest.raises(gp.LoadError) as info:
        load(srv.url, retries=2, backoff_s=0.1)
    msg = str(info.value)
    data_start = json.loads((folder / "manifest.json").read_text())["data_start"]
    assert msg.startswith(srv.url + f"model.safetensors: header (bytes 0-{data_start - 1}): {words}"), msg
    assert "after 3 attempts" in msg and delays == [0.1, 0.2], (msg, delays)


def test_unreachable_server():
    with pytest.raises(gp.LoadError, match="connection failed"):
        load("http://127.0.0.1:9/tiny/", retries=1)


# -- malformed manifests: every one a LoadError naming the manifest's URL and the field -------------------

def _tensor(m, i=0):
    return list(m["tensors"])[i]


def _shift_tensor_chunks(m, by):
    for t in m["tensors"].values():
        t["chunks"] = [t["chunks"][0] + by, t["chunks"][1] + by]


def _nest(depth, inner="1"):
    return "[" * depth + inner + "]" * depth


# (what, mutate(manifest) -> manifest or JSON text, the field the message must name)
MANIFEST_FAULTS = [
    # a shifted chunk map
    ("tensor chunks +1", lambda m: _shift_tensor_chunks(m, 1), ".chunks"),
    ("tensor chunks -1", lambda m: _shift_tensor_chunks(m, -1), "tensors['embeddings.word.weight'].chunks[0]"),
    ("one tensor's chunks +1", lambda m: m["tensors"]["encoder.layer.0.dense.weight"].update(
        chunks=[c + 1 for c in m["tensors"]["encoder.layer.0.dense.weight"]["chunks"]]),
     "tensors['encoder.layer.0.dense.weight'].chunks"),
    ("chunk list rotated", lambda m: m.update(chunks=m["chunks"][1:] + m["chunks"][:1]), "chunks[0].start"),
    ("chunk bounds +100", lambda m: [c.update(start=c["start"] + 100, end=c["end"] + 100) for c in m["chunks"]],
     "chunks[0].start"),
    ("a chunk boundary moved", lambda m: (m["chunks"][3].update(end=m["chunks"][3]["end"] + 1),
                                          m["chunks"][4].update(start=m["chunks"][4]["start"] + 1)), "chunks[3].end"),
    ("a chunk dropped", lambda m: m["chunks"].pop(2), "chunks"),
    ("tensor bytes shifted", lambda m: [t.update(start=t["start"] + 4, end=t["end"] + 4)
                                        for t in m["tensors"].values()], "tensors['extra.ids'].end"),
    # out of range
    ("tensor chunk index 99", lambda m: m["tensors"][_tensor(m)].update(chunks=[0, 99]), ".chunks[1]"),
    ("chunk end far out", lambda m: m["chunks"][3].update(end=10**12), "chunks[3].end"),
    ("negative size", lambda m: m.update(size=-1), "size"),
    ("size one more", lambda m: m.update(size=m["size"] + 1), "chunks"),
    ("chunk_size 0", lambda m: m.update(chunk_size=0), "chunk_size"),
    ("header_len disagrees with data_start", lambda m: m.update(header_len=m["header_len"] + 8), "data_start"),
    ("data_start beyond the file", lambda m: m.update(data_start=m["size"] + 8, header_len=m["size"]), "data_start"),
    ("negative header_len", lambda m: m.update(header_len=-8, data_start=0), "header_len"),
    ("tensor inside the header", lambda m: m["tensors"][_tensor(m)].update(start=4), ".start"),
    ("tensor end before start", lambda m: m["tensors"][_tensor(m, 2)].update(
        end=m["tensors"][_tensor(m, 2)]["start"] - 1), ".end"),
    ("negative shape", lambda m: m["tensors"][_tensor(m)].update(shape=[-700, 64]), ".shape[0]"),
    ("negative file size", lambda m: m.update(files={"config.json": {"size": -1, "sha256": "0" * 64}}),
     "files['config.json'].size"),
    # wrong types
    ("size as a string", lambda m: m.update(size=str(m["size"])), "size"),
    ("size as a boolean", lambda m: m.update(size=True), "size"),
    ("chunks an object", lambda m: m.update(chunks={"0": m["chunks"][0]}), "chunks"),
    ("tensors a list", lambda m: m.update(tensors=list(m["tensors"].values())), "tensors"),
    ("a chunk null", lambda m: m["chunks"].__setitem__(2, None), "chunks[2]"),
    ("a chunk start float", lambda m: m["chunks"][1].update(start=float(m["chunks"][1]["start"])), "chunks[1].start"),
    ("chunks of a tensor a string", lambda m: m["tensors"][_tensor(m)].update(chunks="0-2"), ".chunks"),
    ("chunks of a tensor one number", lambda m: m["tensors"][_tensor(m)].update(chunks=[0]), ".chunks"),
    ("dtype a number", lambda m: m["tensors"][_tensor(m)].update(dtype=5), ".dtype"),
    ("layer a number", lambda m: m["tensors"][_tensor(m)].update(layer=3), ".layer"),
    ("missing tensor end", lambda m: m["tensors"][_tensor(m)].pop("end"), ".end: missing"),
    ("missing header_sha256", lambda m: m.__delitem__("header_sha256"), "header_sha256: missing"),
    ("format 2", lambda m: m.update(format=2), "format"),
    ("format a string", lambda m: m.update(format="1"), "format"),
    ("manifest a list", lambda m: "[1, 2]", "manifest: must be an object, not a list"),
    # sha256 fields
    ("short sha256", lambda m: m.update(sha256=m["sha256"][:63]), "sha256"),
    ("upper-case chunk sha256", lambda m: m["chunks"][1].update(sha256=m["chunks"][1]["sha256"].upper()),
     "chunks[1].sha256"),
    ("chunk sha256 a number", lambda m: m["chunks"][1].update(sha256=7), "chunks[1].sha256"),
    ("header sha256 not hex", lambda m: m.update(header_sha256="z" * 64), "header_sha256"),
    ("file sha256 short", lambda m: m.update(files={"config.json": {"size": 12, "sha256": "ab"}}),
     "files['config.json'].sha256"),
    # deeply nested (the JSON decoder itself would raise RecursionError)
    ("shape nested 100000 deep", lambda m: json.dumps(m).replace('"shape": [700, 64]', '"shape": ' + _nest(100000)),
     "tensors['embeddings.word.weight'].shape[0]"),
    ("manifest nested 100000 deep", lambda m: _nest(100000), "nested deeper"),
    ("objects nested 5000 deep", lambda m: '{"a": ' * 5000 + "1" + "}" * 5000, "a.a.a.a: nested deeper"),
    ("files nested", lambda m: json.dumps({**m, "files": {"config.json": {"size": [[[1]]]}}}),
     "files['config.json'].size[0]"),
    # too big to be a manifest
    ("5 MiB manifest", lambda m: json.dumps({**m, "model": "x" * (5 << 20)}), "manifest is"),
]


@pytest.mark.parametrize("what,mutate,field", MANIFEST_FAULTS, ids=[f[0] for f in MANIFEST_FAULTS])
def test_malformed_manifest_is_a_load_error_naming_url_and_field(tiny, what, mutate, field):
    srv, _, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    assert len(m["chunks"]) >= 5
    changed = mutate(m)
    (folder / "manifest.json").write_text(changed if isinstance(changed, str) else json.dumps(m))
    with pytest.raises(gp.LoadError) as info:
        load(srv.url)
    msg = str(info.value)
    assert msg.startswith(srv.url + "manifest.json: "), msg
    assert field in msg, (field, msg)
    assert len(msg) < 600, msg


def test_manifest_strings_may_hold_brackets(tiny):
    srv, tensors, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    m["model"] = _nest(5000, '\\"{')      # brackets, an escaped backslash and quote inside one string
    (folder / "manifest.json").write_text(json.dumps(m))
    out, _, ld = load(srv.url)
    check_same(out, tensors)
    assert ld.manifest["model"].startswith("[[[")


def test_manifest_disagreeing_with_the_header_names_the_tensor(tiny):
    srv, _, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    a, b = "encoder.layer.0.dense.weight", "encoder.layer.0.dense.bias"
    m["tensors"][a], m["tensors"][b] = m["tensors"][b], m["tensors"][a]   # consistent, but not this file's
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(gp.LoadError, match=re.escape(f"{srv.url}manifest.json: tensors['{a}']") + ".*stale manifest"):
        load(srv.url)


# -- the cache ---------------------------------------------------------------------------------------

def test_interrupted_load_resumes_from_verified_chunks(tiny):
    srv, tensors, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    last = m["chunks"][-1]["start"] if len(m["chunks"]) % 2 else m["chunks"][-2]["start"]
    srv.faults.add("drop", start=last)
    cache = chunk_cache.MemoryChunkCache()
    with pytest.raises(gp.LoadError):
        load(srv.url, cache=cache, retries=1, concurrency=1)
    cached_before = len(cache.chunks)
    assert 0 < cached_before < len(m["chunks"])
    srv.faults.rules.clear()
    srv.faults.log.clear()
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert ld.stats()["cached_chunks"] == cached_before
    assert ld.stats()["fetched_chunks"] == len(m["chunks"]) - cached_before
    assert len(cache.chunks) == len(m["chunks"])
    # a third load downloads no model bytes at all: only the manifest (the header is in cached chunk 0,
    # config.json is cached by its sha256)
    srv.faults.log.clear()
    out, _, ld = load(srv.url, cache=cache)
    assert asyncio.run(ld.read_text("config.json")) == '{"ok": true}'
    assert asyncio.run(ld.read_text("config.json")) == '{"ok": true}'
    check_same(out, tensors)
    assert ld.stats()["fetched_chunks"] == 0 and ld.stats()["bytes_downloaded"] == 0
    assert [p for p, s in srv.faults.log] == ["tiny/manifest.json", "tiny/config.json"]


def test_a_load_records_the_chunks_it_read_for_the_next_visit(tiny):
    """A page reads ahead, while it boots, the chunks its last load read (web/idb.js readAhead): the record names
    them by their cache keys, is not rewritten by an identical load, and follows a new manifest."""
    srv, _, folder = tiny
    cache = chunk_cache.MemoryChunkCache()
    load(srv.url, cache=cache)
    m = json.loads((folder / "manifest.json").read_text())
    key = next(k for k in cache.meta if k.startswith("prefetch:"))
    record = json.loads(cache.meta[key])
    assert record["keys"] == [f"{m['sha256']}:{i}" for i in range(len(m["chunks"]))], record
    assert sorted(record["keys"]) == sorted(k for k in cache.chunks if not k.startswith("file:"))
    load(srv.url, cache=cache)
    assert json.loads(cache.meta[key])["at"] == record["at"]   # the same chunks: not written again
    make_model(folder, seed=3)
    load(srv.url, cache=cache)
    new_sha = json.loads((folder / "manifest.json").read_text())["sha256"]
    assert all(k.startswith(new_sha + ":") for k in json.loads(cache.meta[key])["keys"])
    # a load that reads a small file first (a model's config, its vocabulary) records it first: read ahead too
    ld = L.ProgressiveModelLoader(srv.url, cache=cache, backoff_s=0.001)

    async def config_then_tensors():
        await ld.load_manifest()
        await ld.read_text("config.json")
        await ld.load_tensors(upload=False)
    asyncio.run(config_then_tensors())
    digest = json.loads((folder / "manifest.json").read_text())["files"]["config.json"]["sha256"]
    keys = json.loads(cache.meta[key])["keys"]
    assert keys[0] == f"file:{digest}" and f"file:{digest}" in cache.chunks and keys[1:] == [
        f"{new_sha}:{i}" for i in range(len(keys) - 1)], keys


def test_new_manifest_invalidates_old_chunks(tiny):
    srv, _, folder = tiny
    cache = chunk_cache.MemoryChunkCache()
    load(srv.url, cache=cache)
    old_sha = json.loads((folder / "manifest.json").read_text())["sha256"]
    assert all(k.startswith(old_sha) for k in cache.chunks)
    tensors = make_model(folder, seed=2)
    out, events, _ = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert not any(k.startswith(old_sha) for k in cache.chunks)
    assert any("removed" in (e.get("note") or "") for e in events)


def test_quota_exceeded_falls_back_to_memory(tiny):
    srv, tensors, folder = tiny
    size = json.loads((folder / "manifest.json").read_text())["size"]
    # the estimate says there is not enough room: memory from the start, said in the stream
    cache = chunk_cache.MemoryChunkCache(quota_bytes=size // 3)
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert ld.stats()["memory_only"] and not cache.chunks
    assert any(e.get("memory_only") and "storage estimate" in e["note"] for e in events)

    # the estimate is unknown, the write itself fails with a quota error part way
    class NoEstimate(chunk_cache.MemoryChunkCache):
        async def estimate(self):
            return None
    cache = NoEstimate(quota_bytes=size // 3)
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    notes = [e["note"] for e in events if e.get("memory_only")]
    assert len(notes) == 1 and "quota exceeded" in notes[0], notes
    assert 0 < len(cache.chunks) and cache.usage() <= size // 3


def test_corrupt_cache_record_is_dropped_and_refetched(tiny):
    srv, tensors, folder = tiny
    cache = chunk_cache.MemoryChunkCache()
    load(srv.url, cache=cache)
    key = sorted(cache.chunks)[0]
    cache.chunks[key] = b"\0" + cache.chunks[key][1:]
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert ld.stats()["fetched_chunks"] == 1
    assert any("failed its sha256 check: dropped" in (e.get("note") or "") for e in events)
    assert chunk_manifest.sha256(cache.chunks[key]) == json.loads((folder / "manifest.json").read_text())["chunks"][
        int(key.split(":")[1])]["sha256"]


def test_cached_chunks_are_read_a_window_at_a_time(tiny, monkeypatch):
    """A load from the cache asks it for CACHE_READS chunks per request (a page answers each request in one crossing
    into JS: a task and a crossing per chunk cost MiniLM's load ~45 ms in Firefox), in file order, each verified;
    the header's chunk, read first and kept, is not asked for again."""
    srv, tensors, folder = tiny

    class Counting(chunk_cache.MemoryChunkCache):
        def __init__(self) -> None:
            super().__init__()
            self.requests: list[list[int]] = []

        async def get_many_with_digest(self, keys, views=False):
            self.requests.append([int(k.split(":")[1]) for k in keys])
            return await super().get_many_with_digest(keys, views)

    cache = Counting()
    load(srv.url, cache=cache)
    cache.requests.clear()
    monkeypatch.setattr(L, "CACHE_READS", 2)
    out, _, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    n = len(json.loads((folder / "manifest.json").read_text())["chunks"])
    assert n == 6 and ld.stats()["cached_chunks"] == n and ld.stats()["fetched_chunks"] == 0, (n, ld.stats())
    assert cache.requests == [[0], [1], [2, 3], [4, 5]], cache.requests


class BytesView(ChunkView):
    """A cache's chunk handed over where the cache holds it (pageio.JsChunk in a page: a Uint8Array), here over bytes;
    it counts what is copied out of it, and being turned into bytes fails the test."""

    def __init__(self, data: memoryview, copied: list[int]) -> None:
        self.data, self.copied = data, copied

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, part: slice) -> "BytesView":
        return BytesView(self.data[part], self.copied)

    def __bytes__(self) -> bytes:
        raise AssertionError("the loader turned a chunk view into bytes: a second copy")

    def copy_into(self, dest: memoryview) -> None:
        dest[:] = self.data
        self.copied.append(len(self.data))


def test_cached_chunks_as_views_are_copied_once_into_their_tensors(tiny):
    """A cache that hands chunks over as views (a page's: left in JS memory) has each tensor's slices copied straight
    into the tensor, never through bytes; the tensors are the same, and each is its own writable array."""
    srv, tensors, _ = tiny
    copied: list[int] = []

    class Views(chunk_cache.MemoryChunkCache):
        async def get_many_with_digest(self, keys, views=False):
            found = await super().get_many_with_digest(keys, views)
            return [f if f is None or not views else (BytesView(memoryview(f[0]), copied), f[1]) for f in found]

    cache = Views()
    load(srv.url, cache=cache)
    assert not copied   # the first load fetched every chunk: bytes from the network
    out, _, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert ld.stats()["cached_chunks"] == len(ld.manifest["chunks"]) and ld.stats()["fetched_chunks"] == 0
    # every tensor byte came through a view, but those in the header's chunk: read as bytes for the header, and kept
    first = ld.manifest["chunks"][0]["end"]
    in_first = sum(max(0, min(t["end"], first) - t["start"]) for t in ld.manifest["tensors"].values())
    assert 0 < in_first and sum(copied) + in_first == sum(a.nbytes for a in out.values()), (sum(copied), in_first)
    for arr in out.values():
        assert arr.flags.writeable and arr.flags.owndata, arr.base


class ReadAhead(chunk_cache.MemoryChunkCache):
    """A page's cache after start({models}): `ahead` maps keys to the bytes the page fetched beside its boot (web/idb.js,
    which stores them itself once the page is idle); each is handed over once, as takeWithDigest does."""

    def __init__(self, ahead: dict[str, bytes]) -> None:
        super().__init__()
        self.ahead, self.fetched, self.puts = ahead, set(), []

    async def get_with_digest(self, key):
        self.fetched.discard(key)
        if key in self.ahead:
            blob = self.ahead.pop(key)
            self.fetched.add(key)
            return blob, chunk_manifest.sha256(blob)
        return await super().get_with_digest(key)

    def read_ahead(self, key):
        return key in self.fetched

    async def put(self, key, data, digest=None):
        self.puts.append(key)
        await super().put(key, data, digest)


def test_chunks_fetched_ahead_by_the_page_count_as_downloaded_and_are_left_to_it_to_store(tiny):
    """start({models}) in a page fetches a model's chunks beside the boot: the load takes them instead of fetching,
    verifies them against its manifest, counts them as downloaded (bytes, chunks, read_ahead_chunks), leaves them to
    the page to store, and fetches only the rest; one that fails its sha256 is dropped, fetched and stored."""
    srv, tensors, folder = tiny
    m = json.loads((folder / "manifest.json").read_text())
    body = (folder / "model.safetensors").read_bytes()
    n = len(m["chunks"])
    assert n >= 5
    chunk = [body[c["start"]:c["end"]] for c in m["chunks"]]
    key = [f"{m['sha256']}:{i}" for i in range(n)]
    bad = bytearray(chunk[2])
    bad[0] ^= 1
    # chunks 0, 1 and 3 fetched by the page, 2 corrupt (its sha256 disagrees), the rest not fetched
    cache = ReadAhead({key[0]: chunk[0], key[1]: chunk[1], key[2]: bytes(bad), key[3]: chunk[3]})
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    st = ld.stats()
    assert st["read_ahead_chunks"] == 3 and st["fetched_chunks"] == n and st["cached_chunks"] == 0, st
    assert st["bytes_downloaded"] >= sum(map(len, chunk[4:])) + sum(map(len, chunk[:2])) + len(chunk[3]), st
    # the header came from chunk 0, read once; the network served chunk 2 and chunks 4.. only
    starts = [int(s) for p, s in srv.faults.log if p.endswith("model.safetensors")]
    assert 8 not in starts, starts   # no header request (its 8-byte length, then the JSON from byte 8)
    assert m["chunks"][2]["start"] in starts and m["chunks"][4]["start"] in starts, starts
    assert not {m["chunks"][i]["start"] for i in (0, 1, 3)} & set(starts), starts
    assert sorted(cache.puts) == sorted([key[2], *key[4:]]), cache.puts   # the page stores 0, 1 and 3
    assert {k: chunk_manifest.sha256(v) for k, v in cache.chunks.items() if ":" in k and not k.startswith("file:")} \
        == {key[i]: c["sha256"] for i, c in enumerate(m["chunks"]) if i not in (0, 1, 3)}
    notes = [e.get("note") or "" for e in events]
    assert any("failed its sha256 check" in t for t in notes), notes
    assert any("3 fetched ahead by the page" in t for t in notes), notes
    assert len([e for e in events if e.get("read_ahead") and e["stage"] == "download"]) == 3


def test_parallel_components(tiny):
    srv, tensors, _ = tiny

    async def both():
        a = L.ProgressiveModelLoader(srv.url, cache=None, backoff_s=0.001)
        b = L.ProgressiveModelLoader(srv.url, cache=None, backoff_s=0.001)
        return await L.gather_components({"text": a.load_tensors(["encoder.layer.0.dense.weight"], upload=False),
                                          "vision": b.load_tensors(["encoder.layer.1.dense.weight"], upload=False)})
    got = asyncio.run(both())
    np.testing.assert_array_equal(got["text"]["encoder.layer.0.dense.weight"], tensors["encoder.layer.0.dense.weight"])
    np.testing.assert_array_equal(got["vision"]["encoder.layer.1.dense.weight"], tensors["encoder.layer.1.dense.weight"])


# -- pack-model --------------------------------------------------------------------------------------

def test_pack_model_cli_is_idempotent(tiny, tmp_path, capsys):
    _, _, folder = tiny
    out = tmp_path / "packed"
    assert cli_main(["pack-model", "--model", "tiny", "--source", str(folder), "--out", str(out), "--chunk-kb", "64"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m == {**chunk_manifest.build_manifest(folder / "model.safetensors", CHUNK, model="tiny",
                                    files=("config.json",)), "source_mtime_ns": m["source_mtime_ns"]}
    assert m["tensors"]["encoder.layer.1.dense.weight"]["layer"] == "1"
    assert cli_main(["pack-model", "--model", "tiny", "--source", str(folder), "--out", str(out), "--chunk-kb", "64"]) == 0
    assert "up to date" in capsys.readouterr().out
    for broken in ("[]", '{"size": 5, "chunk_size": 65536}', "[" * 100000):   # rewritten, never a crash
        (out / "manifest.json").write_text(broken)
        assert cli_main(["pack-model", "--model", "tiny", "--source", str(folder), "--out", str(out),
                         "--chunk-kb", "64"]) == 0
        assert "up to date" not in capsys.readouterr().out
        assert json.loads((out / "manifest.json").read_text())["sha256"] == m["sha256"]
    assert cli_main(["pack-model", "--source", str(tmp_path / "nowhere"), "--out", str(out)]) == 1


# -- the real model from the dev server --------------------------------------------------------------

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))
# What a load put where is checked on a few of the fixture's sentences (each runs every layer's weights); all 24 are
# tests/models/test_minilm.py's, on both backends (24 twice on lavapipe took 19 s of the suite's critical chain).
FEW = dict(FIXTURE, sentences=FIXTURE["sentences"][:4], embeddings=FIXTURE["embeddings"][:4])


@pytest.fixture(scope="module")
def dev_url():
    sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
    from _harness import dev_server
    with dev_server() as url:
        yield url


@pytest.mark.parametrize("backend", ["cpu", "webgpu"])
def test_minilm_from_the_dev_server_matches_the_fixture(dev_url, backend, tmp_path, monkeypatch):
    import model_cases as mc
    from gpuport import models

    monkeypatch.setenv(L.CACHE_ENV, str(tmp_path / "chunks"))   # the native default: the disk cache, here empty
    rt = gp.open_sync(backend=backend)
    events = []
    source = dev_url + "/models/minilm-l6-v2/"
    model = asyncio.run(models.load("minilm-l6-v2", rt, source=source, on_progress=events.append))
    stats = asyncio.run(mc.minilm_matches_reference(rt, FEW, model))
    assert stats["min_cosine"] >= 0.9999
    assert model.load_stats["fetched_chunks"] == 87 and model.load_stats["retries"] == 0
    first_layer0 = min(e["t_ms"] for e in events if e["stage"] == "upload" and e["layer"] == "0")
    last_chunk = max(e["t_ms"] for e in events if e["stage"] == "download")
    assert first_layer0 < last_chunk, (first_layer0, last_chunk)
    assert events[-1]["stage"] == "ready" and events[-1]["percent"] == 100.0
    # one total for every byte stage: the weights' bytes (the file also has a header and the unused pooler)
    totals = {e["stage"]: e["bytes_total"] for e in events if e["bytes_total"]}
    assert set(totals) >= {"download", "verify", "upload", "compile", "ready"}
    assert len(set(totals.values())) == 1, totals
    # the second load takes every chunk from the disk cache
    events.clear()
    again = asyncio.run(models.load("minilm-l6-v2", rt, source=source, on_progress=events.append))
    assert again.load_stats["cached_chunks"] == 87, again.load_stats
    assert again.load_stats["fetched_chunks"] == 0 and again.load_stats["bytes_downloaded"] == 0
    assert asyncio.run(mc.minilm_matches_reference(rt, FEW, again))["min_cosine"] >= 0.9999
    assert {e["bytes_total"] for e in events if e["bytes_total"]} == set(totals.values())
    rt.close()
