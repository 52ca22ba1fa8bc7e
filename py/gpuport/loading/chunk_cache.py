"""Where the model loader keeps verified chunks between loads: the cache protocol, an in-memory cache
(resume within a process, and the tests) and the policy around a cache for one model file (ModelChunks);
files on disk natively are disk_cache.py, IndexedDB in a page backends/pageio.py. Only chunks whose sha256
matched the manifest are ever put here.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Sequence

from ..backends.io import ChunkCache, ChunkView, QuotaExceeded

DAY_MS = 24 * 3600 * 1000


class MemoryChunkCache(ChunkCache):
    """A dict. `quota_bytes` emulates a full disk."""

    def __init__(self, quota_bytes: int | None = None) -> None:
        self.chunks: dict[str, bytes] = {}
        self.meta: dict[str, str] = {}
        self.quota_bytes = quota_bytes

    def usage(self) -> int:
        return sum(len(v) for v in self.chunks.values())

    async def estimate(self) -> dict | None:
        return None if self.quota_bytes is None else {"usage": self.usage(), "quota": self.quota_bytes}

    async def get(self, key: str) -> bytes | None:
        return self.chunks.get(key)

    async def put(self, key: str, data: bytes, digest: str | None = None) -> None:
        if self.quota_bytes is not None and self.usage() + len(data) > self.quota_bytes:
            raise QuotaExceeded(f"memory cache quota {self.quota_bytes} bytes exceeded")
        self.chunks[key] = bytes(data)

    async def remove(self, key: str) -> None:
        self.chunks.pop(key, None)

    async def keys(self) -> list[str]:
        return list(self.chunks)

    async def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    async def put_meta(self, key: str, value: str) -> None:
        self.meta[key] = value


Note = Callable[..., None]


class ModelChunks:
    """One model file's chunks in a ChunkCache: invalidates an older manifest's chunks, checks the storage
    estimate, verifies every chunk it hands out (a corrupt record is dropped: the caller refetches), and
    falls back to memory (nothing cached, loading goes on) when storage fails or runs out.
    `note(stage, done, total, note=..., ...)` reports what a user should know."""

    def __init__(self, cache: ChunkCache | None, manifest: dict, url: str, note: Note) -> None:
        self.cache, self.m, self.url, self._note = cache, manifest, url, note
        self.memory_only = cache is None
        self.memory_reason: str | None = "no cache" if cache is None else None
        self._keys: set[str] | None = None
        self._kept: dict[int, bytes] = {}          # chunks handed out with keep=True, handed out again once
        self._read_ahead: dict[int, bool] = {}
        self._read: dict[int, None] = {}           # every chunk this load has asked for, in order
        self._files: dict[str, None] = {}          # the keys of the small files it read (config, vocabulary)

    def _key(self, i: int) -> str:
        return f"{self.m['sha256']}:{i}"

    async def prepare(self) -> None:
        """Drop an older manifest's chunks; go memory-only when the estimate says the file will not fit."""
        if self.cache is None:
            return
        m = self.m
        try:
            meta_key = f"model:{self.url}"
            previous = await self.cache.get_meta(meta_key)
            if previous and previous != m["sha256"]:
                stale = [k for k in await self.cache.keys() if k.startswith(previous + ":")]
                for k in stale:
                    await self.cache.remove(k)
                self._note("cache", 0, 0, note=f"new manifest (sha256 {m['sha256'][:12]}): {len(stale)} chunks "
                           f"of {previous[:12]} removed")
            if previous != m["sha256"]:
                await self.cache.put_meta(meta_key, m["sha256"])
            est = await self.cache.estimate()
        except Exception as exc:  # storage unusable (private mode, blocked): memory only
            self.to_memory(f"cache unavailable: {exc}")
            return
        if est and est.get("quota"):
            free = int(est["quota"]) - int(est.get("usage") or 0)
            if self._keys is None:
                self._keys = set(await self.cache.keys())
            cached = sum(c["end"] - c["start"] for i, c in enumerate(m["chunks"]) if self._key(i) in self._keys)
            need = m["size"] - cached
            if free < need:
                self.to_memory(f"storage estimate: {free / 2**20:.1f} MiB free of {int(est['quota']) / 2**20:.1f} "
                               f"MiB quota, {need / 2**20:.1f} MiB needed")

    def to_memory(self, reason: str) -> None:
        if not self.memory_only:
            self.memory_only, self.memory_reason = True, reason
            self._note("cache", 0, 0, note=f"falling back to memory: {reason}", memory_only=True)

    async def remember(self, need: Sequence[int]) -> None:
        """Record that this load reads chunks `need` too (a GGUF's header, then its tensors), after the small files it
        read (get_file): a page reads them all ahead on its next visit, while it boots (web/idb.js readAhead; what it
        reads is verified here like any record). Written when it changes, and at least daily (a model unread for a
        month is not read ahead)."""
        if self.cache is None or self.memory_only:
            return
        self._read.update(dict.fromkeys(need))
        key, keys = f"prefetch:{self.url}", [*self._files, *(self._key(i) for i in self._read)]
        try:
            old = json.loads(await self.cache.get_meta(key) or "null")
            if isinstance(old, dict) and old.get("keys") == keys and time.time() * 1e3 - old.get("at", 0) < DAY_MS:
                return
            await self.cache.put_meta(key, json.dumps({"keys": keys, "at": int(time.time() * 1e3)}))
        except Exception:   # a hint only: storage that fails here fails (and is reported) where it matters
            pass

    async def get(self, i: int, keep: bool = False) -> bytes | None:
        """Chunk i if the cache has it intact (a corrupt or tampered record is dropped). `keep`: the next get(i)
        hands the same bytes out again without reading them (the header's chunk, which the load reads next)."""
        blob = (await self.get_many([i]))[0]
        if keep and blob is not None:
            self._kept[i] = blob
        return blob

    async def get_many(self, indices: Sequence[int], views: bool = False) -> list[bytes | ChunkView | None]:
        """get(i) of each of `indices`, in order, read from the cache in one request (in a page, one crossing
        into JS for them all rather than an asyncio task and a crossing per chunk). `views`: a chunk may come as a
        ChunkView (ChunkCache.get_many_with_digest)."""
        out: dict[int, bytes | None] = {i: self._kept.pop(i) for i in indices if i in self._kept}
        wanted = [i for i in indices if i not in out]
        keys = [self._key(i) for i in wanted]
        found: list = [None] * len(keys)   # what a cache that is absent or fails hands over
        if self.cache is not None and keys:
            try:
                found = await self.cache.get_many_with_digest(keys, views)
            except Exception:
                pass
        for i, key, record in zip(wanted, keys, found):
            blob, dropped = await self._verified(key, self.m["chunks"][i]["sha256"], record)
            if dropped:
                self._note("cache", 0, 0, note=f"cached chunk {i} failed its sha256 check: dropped, refetching")
            self._read_ahead[i] = blob is not None and self.cache.read_ahead(key)
            out[i] = blob
        return [out[i] for i in indices]

    def read_ahead(self, i: int) -> bool:
        """Whether chunk i, just handed out by get, came over the network ahead of the load (ChunkCache.read_ahead)."""
        return self._read_ahead.get(i, False)

    async def put(self, i: int, blob: bytes) -> None:
        """Only verified chunks come here."""
        if self.cache is None or self.memory_only:
            return
        try:
            await self.cache.put(self._key(i), blob, self.m["chunks"][i]["sha256"] or None)
        except QuotaExceeded as exc:
            self.to_memory(f"quota exceeded while caching chunk {i}: {exc}")
        except Exception as exc:
            self.to_memory(f"cache write failed at chunk {i}: {type(exc).__name__}: {exc}")

    async def get_file(self, digest: str) -> bytes | None:
        """A small file by content (its sha256): a hit is verified, never stale."""
        self._files[f"file:{digest}"] = None
        return (await self._get_verified(f"file:{digest}", digest))[0]

    async def put_file(self, digest: str, body: bytes) -> None:
        if self.cache is not None and not self.memory_only:
            try:
                await self.cache.put(f"file:{digest}", body, digest)
            except Exception:
                pass

    async def _get_verified(self, key: str, digest: str) -> tuple[bytes | None, bool]:
        """(the record if intact, whether a corrupt one was dropped)."""
        if self.cache is None:
            return None, False
        try:
            found = await self.cache.get_with_digest(key)
        except Exception:
            return None, False
        return await self._verified(key, digest, found)

    async def _verified(self, key: str, digest: str, found: tuple[bytes, str] | None) -> tuple[bytes | None, bool]:
        """(`found`'s record if its digest is `digest`, whether it was not and was dropped from the cache)."""
        if found is None:
            return None, False
        if found[1] == digest:
            return found[0], False
        try:
            await self.cache.remove(key)
        except Exception:
            pass
        return None, True
