"""gpuport.loading.gguf_source natively over HTTP (test_loader's fault-injecting server on 127.0.0.1) with ggml's own
reader (PyPI `gguf`) as the oracle of every byte delivered: small GGUF files written by gguf.GGUFWriter (F32,
Q8_0, Q4_1, and Q4_K that gpuport does not compute with) and the real SmolLM2 file; corrupt chunks detected,
retried, never cached; unsupported types refused at open; stale manifests; the cache; models.open_gguf."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf_files import TINY, write_gguf
from gpuport.errors import LoadError, UnsupportedFeature
from gpuport.formats import chunk_manifest
from gpuport.loading.chunk_cache import MemoryChunkCache
from gpuport.loading.gguf_source import GGUFSource, LocalGGUF, RemoteGGUF
from gpuport.loading.loader import ProgressiveModelLoader
from model_server import CHUNK, Server
from smollm2 import gguf_path, model_reference

Q = gguf.GGMLQuantizationType


def pack(folder: Path, fname: str) -> dict:
    m = chunk_manifest.build_manifest(folder / fname, CHUNK, model="tiny")
    (folder / "manifest.json").write_text(json.dumps(m))
    return m


@pytest.fixture()
def tiny(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    write_gguf(folder / "model.gguf", TINY)
    m = pack(folder, "model.gguf")
    srv = Server(tmp_path)
    yield srv, folder, m
    srv.close()


def opened(url: str, **kw) -> tuple[RemoteGGUF, list[dict]]:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("cache", None)
    kw.setdefault("chunk_size_mb", 2 * CHUNK / 2**20)
    events: list[dict] = []
    src = asyncio.run(GGUFSource.open(url, on_progress=events.append, **kw))
    return src, events


def all_raw(src: GGUFSource, names=None) -> dict[str, bytes]:
    async def go():
        out = {n: (await src.raw(n)).tobytes() for n in (names or src.header.tensors)}
        await src.wait()   # the last chunks' cache writes
        return out
    return asyncio.run(go())


def oracle(path: Path) -> dict[str, bytes]:
    """Every tensor's stored bytes as ggml's own reader sees them."""
    return {t.name: np.asarray(t.data).tobytes() for t in gguf.GGUFReader(str(path)).tensors}


# -- the happy path ----------------------------------------------------------------------------------

def test_manifest_of_a_gguf(tiny):
    _, folder, m = tiny
    ref = gguf.GGUFReader(str(folder / "model.gguf"))
    assert m["container"] == "gguf" and m["file"] == "model.gguf" and m["data_start"] == ref.data_offset
    assert m["header_len"] == ref.data_offset and m["data_start"] > 4 * CHUNK   # the header spans chunks
    for t in ref.tensors:
        mt = m["tensors"][t.name]
        assert [mt["start"], mt["end"]] == [t.data_offset, t.data_offset + t.n_bytes]
        assert mt["dtype"] == t.tensor_type.name and mt["shape"] == [int(d) for d in reversed(t.shape)]
    assert m["tensors"]["blk.1.attn_q.weight"]["layer"] == "1" and m["tensors"]["token_embd.weight"]["layer"] is None
    assert chunk_manifest.parse_manifest(json.dumps(m), "m") == m


def test_every_tensor_equals_ggml_reader_over_http(tiny):
    srv, folder, m = tiny
    src, events = opened(srv.url)
    want = oracle(folder / "model.gguf")
    assert src.header.metadata["general.name"] == "tiny" and list(src.header.tensors) == list(want)
    assert all_raw(src, reversed(list(want))) == want      # any order
    stats = src.stats()
    assert stats["fetched_chunks"] == len(m["chunks"]) and stats["retries"] == 0
    pct = [e["percent"] for e in events]
    assert pct == sorted(pct) and pct[-1] == 100.0, pct
    stages = [e["stage"] for e in events]
    assert stages[0] == "manifest" and "header" in stages and stages[-1] == "upload"
    assert {e["tensor"] for e in events if e["stage"] == "upload"} == set(want)
    assert src._chunks == {} and src._waiting == {}      # every chunk dropped once its tensors were handed out


def test_file_url_and_asking_twice(tiny):
    srv, folder, _ = tiny
    src, _ = opened(srv.url + "model.gguf")
    want = oracle(folder / "model.gguf")
    name = "blk.0.ffn_down.weight"
    assert all_raw(src, [name, name]) == {name: want[name]}   # handed out, dropped, fetched again
    with pytest.raises(LoadError, match="no tensor named 'nope'"):
        all_raw(src, ["nope"])


def test_the_real_smollm2_file_over_http_equals_ggml_reader(tmp_path):
    folder = tmp_path / "smollm2"
    folder.mkdir()
    os.symlink(gguf_path(), folder / gguf_path().name)
    m = chunk_manifest.build_manifest(folder / gguf_path().name, model="smollm2-135m-instruct")
    (folder / "manifest.json").write_text(json.dumps(m))
    srv = Server(tmp_path)
    try:
        src, _ = opened(srv.url.replace("/tiny/", "/smollm2/"), chunk_size_mb=4)
        got = all_raw(src)
    finally:
        srv.close()
    assert got == oracle(gguf_path())
    assert len(got) == 272 and src.stats()["bytes_downloaded"] == m["size"]


# -- faults ------------------------------------------------------------------------------------------

def test_corrupt_chunk_is_retried_and_the_bytes_are_right(tiny):
    srv, folder, m = tiny
    victim = m["tensors"]["blk.0.attn_q.weight"]["chunks"][0]
    srv.faults.add("corrupt", "model.gguf", start=m["chunks"][victim]["start"], times=1)
    src, _ = opened(srv.url, chunk_size_mb=CHUNK / 2**20)
    assert all_raw(src) == oracle(folder / "model.gguf") and src.stats()["retries"] == 1


def test_persistently_corrupt_chunk_fails_and_is_never_cached(tiny):
    srv, folder, m = tiny
    victim = m["tensors"]["blk.0.ffn_down.weight"]["chunks"][0]
    srv.faults.add("corrupt", "model.gguf", start=m["chunks"][victim]["start"])
    cache = MemoryChunkCache()
    src, _ = opened(srv.url, chunk_size_mb=CHUNK / 2**20, cache=cache, retries=2)
    with pytest.raises(LoadError, match=rf"model\.gguf: chunk {victim} .*sha256.*nothing was cached or used"):
        all_raw(src)
    keys = [k for k in cache.chunks if not k.startswith("file:")]
    assert f"{m['sha256']}:{victim}" not in keys and keys
    for k in keys:   # everything cached is verified
        i = int(k.split(":")[1])
        assert hashlib.sha256(cache.chunks[k]).hexdigest() == m["chunks"][i]["sha256"]
    with pytest.raises(LoadError, match=f"chunk {victim}"):   # the source stays failed, says why
        all_raw(src, ["output_norm.weight"])
    srv.faults.rules.clear()     # a new open resumes from the verified chunks
    again, _ = opened(srv.url, chunk_size_mb=CHUNK / 2**20, cache=cache)
    assert all_raw(again) == oracle(folder / "model.gguf")
    assert again.stats()["cached_chunks"] == len(keys) and again.stats()["fetched_chunks"] == len(m["chunks"]) - len(keys)


def test_second_open_reads_the_cache_only(tiny):
    srv, folder, m = tiny
    cache = MemoryChunkCache()
    all_raw(opened(srv.url, cache=cache)[0])
    srv.faults.log.clear()
    src, _ = opened(srv.url, cache=cache)
    assert all_raw(src) == oracle(folder / "model.gguf")
    assert src.stats()["bytes_downloaded"] == 0 and src.stats()["cached_chunks"] == len(m["chunks"])
    assert [p for p, _ in srv.faults.log] == ["tiny/manifest.json"]


def test_a_load_records_its_header_and_tensor_chunks_for_the_next_visit(tiny):
    """The header is read before the tensors, in a load of its own: the record a page reads ahead from on its next
    visit (web/idb.js) names every chunk this source read, the header's included."""
    srv, folder, m = tiny
    cache = MemoryChunkCache()
    all_raw(opened(srv.url, cache=cache)[0])
    record = json.loads(next(v for k, v in cache.meta.items() if k.startswith("prefetch:")))
    assert sorted(record["keys"]) == sorted(k for k in cache.chunks if not k.startswith("file:")), record
    assert len(record["keys"]) == len(m["chunks"])


def test_a_corrupt_header_chunk_fails_naming_it(tiny):
    srv, _, m = tiny
    srv.faults.add("corrupt", "model.gguf", start=0)
    with pytest.raises(LoadError, match=r"model\.gguf: chunk 0 .*sha256"):
        opened(srv.url, retries=1)


# -- what gpuport cannot use -------------------------------------------------------------------------

def test_unsupported_quant_type_is_refused_at_open_naming_it(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    write_gguf(folder / "k.gguf", {**TINY, "blk.1.ffn_down.weight": "Q4_K", "blk.1.ffn_up.weight": "Q4_K"})
    m = pack(folder, "k.gguf")
    srv = Server(tmp_path)
    try:
        with pytest.raises(UnsupportedFeature, match=r"tensor 'blk\.1\.ffn_down\.weight' is Q4_K \(2 tensors of "
                                                     r"that type\).*supported: F32, F16, Q4_1, Q8_0"):
            opened(srv.url)
        header_chunks = (m["data_start"] - 1) // CHUNK + 1
        starts = {int(s) for p, s in srv.faults.log if p.endswith("k.gguf")}
        assert max(starts) < header_chunks * CHUNK, "only the header was fetched"
    finally:
        srv.close()
    with pytest.raises(UnsupportedFeature, match="Q4_K"):
        LocalGGUF(str(folder / "k.gguf"))
    LocalGGUF(str(folder / "k.gguf"), supported=("F32", "Q4_1", "Q8_0", "Q4_K"))   # a caller may allow it


def test_unknown_ggml_type_id_is_unsupported(tiny):
    srv, folder, m = tiny
    path = folder / "model.gguf"
    data = bytearray(path.read_bytes())
    name = b"output_norm.weight"
    at = data.index(name) + len(name) + 4 + 8   # n_dims (u32), one dim (u64), then the type (u32)
    assert int.from_bytes(data[at:at + 4], "little") == 0
    data[at:at + 4] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    (folder / "manifest.json").write_text(json.dumps({**m, **_rehash(path, m)}))
    with pytest.raises(UnsupportedFeature, match="'output_norm.weight' has ggml type 99"):
        opened(srv.url)


def _rehash(path: Path, m: dict) -> dict:
    """A manifest's hashes for a file whose bytes changed in place (same size, same layout)."""
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "header_sha256": hashlib.sha256(data[:m["data_start"]]).hexdigest(),
            "chunks": [{**c, "sha256": hashlib.sha256(data[c["start"]:c["end"]]).hexdigest()} for c in m["chunks"]]}


def test_stale_or_wrong_manifests(tiny):
    srv, folder, m = tiny
    moved = json.loads(json.dumps(m))
    t = moved["tensors"]["blk.0.attn_q.weight"]
    t["start"] += 32
    with pytest.raises(LoadError, match=r"tensors\['blk\.0\.attn_q\.weight'\].*stale manifest"):
        (folder / "manifest.json").write_text(json.dumps(moved))
        opened(srv.url)
    (folder / "manifest.json").write_text(json.dumps({**m, "file": "other.gguf"}))
    with pytest.raises(LoadError, match="describes 'other.gguf', not 'model.gguf'"):
        opened(srv.url + "model.gguf")
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LoadError, match="a GGUF loads with gpuport.loading.gguf_source.GGUFSource"):
        asyncio.run(ProgressiveModelLoader(srv.url, None, cache=None, weights="model.gguf").load_tensors(upload=False))


def test_a_safetensors_manifest_is_not_a_gguf(tmp_path):
    from model_server import make_model
    make_model(tmp_path / "tiny")
    srv = Server(tmp_path)
    try:
        with pytest.raises(LoadError, match="a safetensors file, not a GGUF"):
            opened(srv.url)
    finally:
        srv.close()


# -- gpuport.models: open_gguf and load on the source ---------------------------------------------------

def test_open_gguf_natively_defaults_to_the_installed_file():
    from gpuport import models
    src = asyncio.run(models.open_gguf("smollm2-135m-instruct"))
    assert isinstance(src, LocalGGUF) and src.file.path == str(gguf_path())
    with pytest.raises(ValueError, match="not a GGUF language model"):
        asyncio.run(models.open_gguf("minilm-l6-v2"))


@pytest.fixture(scope="module")
def dev_url():
    import sys
    sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
    from _harness import dev_server
    with dev_server() as url:
        yield url


def test_models_load_from_a_url_builds_the_llama_on_the_source(dev_url):
    """gp.models.load with a URL: Llama.build reads the GGUFSource; its logits are exactly those of the model loaded
    from the installed file (the same kernels on the same bytes; test_llama.py checks those against the fixture)."""
    import gpuport as gp
    from gpuport import models

    rt = gp.open_sync(backend="cpu")
    events: list[dict] = []
    llm = asyncio.run(models.load("smollm2-135m-instruct", rt, source=dev_url + "/models/smollm2-135m-instruct/",
                                  on_progress=events.append, loader_options={"cache": None}))
    assert llm.load_stats["fetched_chunks"] == 94 and llm.load_stats["bytes_downloaded"] == 98_362_432
    assert events[-1]["stage"] == "ready" and {"manifest", "header", "verify", "upload"} <= {e["stage"] for e in events}
    ids = model_reference()["runs"][0]["prompt_ids"]
    local = asyncio.run(models.load("smollm2-135m-instruct", rt))
    np.testing.assert_array_equal(asyncio.run(llm.logits(ids)), asyncio.run(local.logits(ids)))
    rt.close()
