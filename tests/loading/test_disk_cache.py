"""gpuport.loading.disk_cache natively, over real HTTP: test_loader's Range server on 127.0.0.1 counts the bytes it
serves, so "a second load reads no chunk bytes" is measured at the server, not taken from the loader."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpuport.loading import chunk_cache, disk_cache
from gpuport.loading import loader as L
from model_server import CHUNK, Server, check_same, load, make_model

WEIGHTS = "tiny/model.safetensors"
PY = Path(__file__).resolve().parents[2] / "py"


@pytest.fixture()
def tiny(tmp_path):
    tensors = make_model(tmp_path / "tiny")
    srv = Server(tmp_path)
    yield srv, tensors, tmp_path / "tiny"
    srv.close()


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def served(srv: Server) -> int:
    return srv.faults.served.get(WEIGHTS, 0)


def chunk_files(cache_dir: Path, sha: str) -> dict[int, Path]:
    folder = cache_dir / sha
    return {int(p.name): p for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else {}


def test_second_load_reads_no_chunk_bytes(tiny, tmp_path):
    srv, tensors, folder = tiny
    m = manifest_of(folder)
    where = tmp_path / "cache"
    out, _, ld = load(srv.url, cache=disk_cache.DiskChunkCache(where))
    check_same(out, tensors)
    assert served(srv) == m["data_start"] + m["size"]   # the header (two Range requests), then every chunk
    assert ld.stats()["fetched_chunks"] == len(m["chunks"])
    files = chunk_files(where, m["sha256"])
    assert sorted(files) == list(range(len(m["chunks"])))
    for i, p in files.items():   # what is on disk is exactly the verified chunk
        assert hashlib.sha256(p.read_bytes()).hexdigest() == m["chunks"][i]["sha256"]

    before = served(srv)
    out, events, ld = load(srv.url, cache=disk_cache.DiskChunkCache(where))   # a new process would do this
    check_same(out, tensors)
    assert served(srv) == before, "the second load took chunk bytes from the server"
    assert ld.stats()["cached_chunks"] == len(m["chunks"]) and ld.stats()["bytes_downloaded"] == 0
    cache_event = next(e for e in events if e["stage"] == "cache")
    assert cache_event["chunks_cached"] == cache_event["chunks_total"] == len(m["chunks"])
    assert cache_event["bytes_done"] == cache_event["bytes_total"] == sum(v.nbytes for v in tensors.values())


def test_it_is_the_native_default_for_urls_with_a_way_out(tiny, tmp_path, monkeypatch):
    srv, tensors, folder = tiny
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path / "gpcache"))
    monkeypatch.delenv(L.CACHE_ENV, raising=False)
    ld = L.ProgressiveModelLoader(srv.url)
    assert isinstance(ld.cache, disk_cache.DiskChunkCache) and ld.cache.directory == tmp_path / "gpcache" / "chunks"
    out, _, _ = load(srv.url, cache="default")
    check_same(out, tensors)
    first = served(srv)
    out, _, ld = load(srv.url, cache="default")
    check_same(out, tensors)
    assert served(srv) == first and ld.stats()["cached_chunks"] == len(manifest_of(folder)["chunks"])

    monkeypatch.setenv(L.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert L.ProgressiveModelLoader(srv.url).cache.directory == tmp_path / "elsewhere"
    monkeypatch.setenv(L.CACHE_ENV, "off")
    assert L.ProgressiveModelLoader(srv.url).cache is None
    monkeypatch.delenv(L.CACHE_ENV)
    assert L.ProgressiveModelLoader(str(folder)).cache is None        # a local file is on disk already
    assert L.ProgressiveModelLoader(srv.url, cache=None).cache is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_corrupt_cached_chunk_is_detected_and_refetched(tiny, tmp_path, damage):
    srv, tensors, folder = tiny
    m = manifest_of(folder)
    where = tmp_path / "cache"
    load(srv.url, cache=disk_cache.DiskChunkCache(where))
    victim = chunk_files(where, m["sha256"])[3]
    blob = victim.read_bytes()
    victim.write_bytes({"flip": bytes([blob[0] ^ 1]) + blob[1:], "truncate": blob[: len(blob) // 2],
                        "empty": b""}[damage])
    before = served(srv)
    out, events, ld = load(srv.url, cache=disk_cache.DiskChunkCache(where))
    check_same(out, tensors)
    c = m["chunks"][3]
    assert served(srv) - before == c["end"] - c["start"], "exactly the damaged chunk is fetched again"
    assert ld.stats()["fetched_chunks"] == 1
    assert any("chunk 3 failed its sha256 check" in (e.get("note") or "") for e in events)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == c["sha256"], "the file is repaired"


KILLED_LOAD = """
import asyncio, sys
from gpuport.loading import disk_cache, loader
ld = loader.ProgressiveModelLoader(sys.argv[1], cache=disk_cache.DiskChunkCache(sys.argv[2]), concurrency=1,
                                   chunk_size_mb={mb}, retries=0)
asyncio.run(ld.load_tensors(upload=False))
"""


def test_a_killed_load_resumes_with_what_it_had(tiny, tmp_path):
    """A process loading the model is SIGKILLed while the server stalls a later chunk: what it persisted is
    whole and verified, a half-written temporary file is ignored, and the next load fetches only the rest."""
    srv, tensors, folder = tiny
    m = manifest_of(folder)
    where = tmp_path / "cache"
    stall_at = 3
    srv.faults.add("stall", start=m["chunks"][stall_at]["start"])
    env = {**os.environ, "PYTHONPATH": str(PY)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_LOAD.format(mb=CHUNK / 2**20), srv.url, str(where)],
                             env=env)
    try:
        deadline = time.monotonic() + 30
        while len(chunk_files(where, m["sha256"])) < stall_at:
            assert child.poll() is None, "the loading process ended before it was killed"
            assert time.monotonic() < deadline, "the loading process persisted nothing"
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    srv.faults.rules.clear()
    files = chunk_files(where, m["sha256"])
    assert sorted(files) == list(range(stall_at))
    for i, p in files.items():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == m["chunks"][i]["sha256"]
    # what a process killed inside a write leaves: a temporary file, never read as a chunk
    (where / m["sha256"] / f".{stall_at:d}.abc.tmp").write_bytes(b"half a chunk")

    before = served(srv)
    out, _, ld = load(srv.url, cache=disk_cache.DiskChunkCache(where))
    check_same(out, tensors)
    rest = m["chunks"][stall_at:]
    assert served(srv) - before == sum(c["end"] - c["start"] for c in rest)
    assert ld.stats()["cached_chunks"] == stall_at and ld.stats()["fetched_chunks"] == len(rest)


def test_a_new_manifest_invalidates_the_old_chunks(tiny, tmp_path):
    srv, _, folder = tiny
    where = tmp_path / "cache"
    load(srv.url, cache=disk_cache.DiskChunkCache(where))
    old = manifest_of(folder)["sha256"]
    assert (where / old).is_dir()
    tensors = make_model(folder, seed=2)   # the server now has another file under the same URL
    new = manifest_of(folder)["sha256"]
    before = served(srv)
    out, events, _ = load(srv.url, cache=disk_cache.DiskChunkCache(where))
    check_same(out, tensors)
    assert served(srv) - before == manifest_of(folder)["data_start"] + manifest_of(folder)["size"], \
        "nothing of the old file was used"
    assert not (where / old).exists() and len(chunk_files(where, new)) == len(manifest_of(folder)["chunks"])
    assert any("removed" in (e.get("note") or "") for e in events)
    assert asyncio.run(disk_cache.DiskChunkCache(where).get_meta(f"model:{srv.url}model.safetensors")) == new


def test_estimate_is_free_disk_space_and_a_full_disk_keeps_chunks_in_memory(tiny, tmp_path):
    srv, tensors, _ = tiny
    cache = disk_cache.DiskChunkCache(tmp_path / "cache", reserve_bytes=0)
    est = asyncio.run(cache.estimate())
    free = __import__("shutil").disk_usage(tmp_path).free
    assert est["usage"] == 0 and abs(est["quota"] - free) < 64 << 20
    # a reserve larger than the disk: the estimate says there is no room, so the load goes memory-only
    cache = disk_cache.DiskChunkCache(tmp_path / "cache", reserve_bytes=free * 4)
    out, events, ld = load(srv.url, cache=cache)
    check_same(out, tensors)
    assert ld.stats()["memory_only"] and not asyncio.run(cache.keys())
    assert any("storage estimate" in (e.get("note") or "") for e in events)


def test_disk_full_while_writing_is_a_quota_error_leaving_no_file(tmp_path, monkeypatch):
    cache = disk_cache.DiskChunkCache(tmp_path / "cache")

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_cache.os, "replace", full)
    with pytest.raises(chunk_cache.QuotaExceeded, match="No space left"):
        asyncio.run(cache.put("ab12:0", b"x" * 100))
    assert [p.name for p in (tmp_path / "cache" / "ab12").iterdir()] == []


def test_keys_round_trip_and_unsafe_keys_are_refused(tmp_path):
    cache = disk_cache.DiskChunkCache(tmp_path)
    asyncio.run(cache.put("ab12:7", b"chunk"))
    asyncio.run(cache.put("file:cd34", b"small"))
    assert sorted(asyncio.run(cache.keys())) == ["ab12:7", "file:cd34"]
    assert asyncio.run(cache.get("ab12:7")) == b"chunk" and asyncio.run(cache.get("ab12:8")) is None
    asyncio.run(cache.remove("ab12:7"))
    assert not (tmp_path / "ab12").exists()
    for bad in ("../x:1", "a:../b", "nocolon", "meta:1", "a/b:1", ":1"):
        with pytest.raises(ValueError, match="chunk cache key"):
            cache.path(bad)
    asyncio.run(cache.put_meta("model:http://h/x?y=1", "abc"))
    assert asyncio.run(cache.get_meta("model:http://h/x?y=1")) == "abc"
    assert asyncio.run(cache.get_meta("model:other")) is None


def test_an_unwritable_cache_directory_only_costs_the_cache(tiny, tmp_path):
    srv, tensors, _ = tiny
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    out, events, ld = load(srv.url, cache=disk_cache.DiskChunkCache(blocker / "chunks"))
    check_same(out, tensors)
    assert ld.stats()["memory_only"]
    assert any(e.get("memory_only") for e in events)
