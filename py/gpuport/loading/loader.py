"""Progressive, chunked loading of safetensors weights over HTTP Range (or from a local file), verified
against a chunk manifest, uploaded tensor by tensor as their bytes complete, with one progress stream.

    loader = ProgressiveModelLoader("http://127.0.0.1:8000/models/minilm-l6-v2/", rt, chunk_size_mb=4)
    loader.register_progress_callback(print)
    tensors = await loader.load_tensors(names)        # {name: Tensor on rt}, layer 0 first

The manifest (``gpuport pack-model`` writes it as ``manifest.json`` beside the model) cuts the file into
fixed *chunks* (1 MiB by default) and records each chunk's sha256, the file's size and sha256, the header
and which chunks each tensor spans. A fetch asks for a *span* of consecutive chunks (``chunk_size_mb``
rounded to whole chunks) with one Range request; spans run ``concurrency`` at a time in file order, so the
first layers arrive first. Every chunk is hashed before anything uses it: a mismatch, a short or wrong
Range answer, an HTTP error or a dropped connection is retried with exponential backoff, then raises
``LoadError`` naming the URL and the chunk. Only verified chunks reach the cache and the device.

Progress events (dicts, in order): ``stage`` ("manifest", "header", "cache", "download", "verify",
"upload", then the model's "compile" and "ready"), ``bytes_done``/``bytes_total``, ``percent`` (overall,
monotone), ``layer``, ``tensor``, ``chunk``, ``t_ms`` (since the load began) and ``note`` for things a user
should know (cache fallback to memory, retries). The byte stages count one thing, so their totals agree:
``bytes_total`` of "cache", "download", "verify" and "upload" is the *payload*, the bytes of the tensors the
load returns, and ``bytes_done`` the payload bytes that stage has handled (cache: found in the cache;
download: inside the chunks received; verify: inside the chunks checked, cached or downloaded; upload:
uploaded). "verify" and "upload" end at ``bytes_total``; "download" ends lower by what the cache had.
"manifest" and "header" are steps, not byte stages (bytes 0; ``file_bytes``, ``header_bytes`` give sizes).
Download events also carry ``network_bytes``: the bytes received so far, which also count the file's header
and bytes of tensors not asked for that share a chunk (``stats()["bytes_downloaded"]``).

Transports: natively ``UrllibTransport`` (urllib in a thread; no extra dependency) and ``FileTransport``
(a local path, Range emulated); in a page ``gpuport.backends.pageio.PyfetchTransport``. Caches (``cache=``,
default "default"): in a page ``IndexedDBChunkCache``; natively, for an http(s) source, ``DiskChunkCache``
(files under the gpuport cache directory: a second load reads no model bytes from the network), unless
``GPUPORT_MODEL_CACHE=off`` (``GPUPORT_MODEL_CACHE=DIR`` puts it elsewhere); a local source is not cached.
``cache=None`` opts out; ``MemoryChunkCache`` keeps chunks for the process only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np

from ..backends.io import ChunkCache, ChunkView, FetchError, Transport
from ..errors import LoadError
from ..formats.chunk_manifest import (
    MANIFEST_CHUNK,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    build_manifest,
    check_tensors,
    chunk_span,
    interleaved_chunks,
    layer_of,
    manifest_table,
    parse_manifest,
    payload_per_chunk,
    sha256,
)
from ..formats.safetensors import MAX_HEADER, check_layout, read_header, tensor_entries, tensor_from_pieces
from ..platform import IN_PYODIDE
from .chunk_cache import ModelChunks
from .disk_cache import DiskChunkCache
from .progress_bar import progress_callback
from .transports import FileTransport, UrllibTransport, get_range

# Fetch span default, measured by bench/model.py (download + verify of all 90.9 MB over loopback from the
# dev server, 4 requests in flight; median seconds per span size 1/2/4/8/16 MiB): native 0.42/0.54/0.24/
# 0.24/0.29, Chromium worker 0.85/0.95/0.73/0.68/0.53. 4 MiB is at the native optimum and within 0.2 s of
# the page's; larger spans delay the first layer's upload (a span is verified as a whole), so 4 it is.
DEFAULT_CHUNK_MB = 4.0
# Cache reads in flight at once (bench: MiniLM's 87 chunks from IndexedDB, in a page: one at a time 1.0-1.2 s, 8
# at a time 0.74-0.84 s).
CACHE_READS = 8
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.1
CACHE_ENV = "GPUPORT_MODEL_CACHE"

ProgressFn = Callable[[dict], Any]


# -- the loader --------------------------------------------------------------------------------------

@dataclass
class _State:
    t0: float
    payload: int = 0              # bytes of the tensors this load returns: every byte stage's total
    downloaded: int = 0           # bytes received over the network
    downloaded_payload: int = 0   # payload bytes inside the chunks received
    verified: int = 0             # payload bytes inside the chunks verified (cached or downloaded)
    uploaded: int = 0
    cached_chunks: int = 0
    fetched_chunks: int = 0
    read_ahead_chunks: int = 0    # of the fetched: those a page fetched ahead of the load (start({models}))
    retries: int = 0
    requests: int = 0
    timeline: list[dict] = field(default_factory=list)


class ProgressiveModelLoader:
    """Chunked, verified, progressive loading of one safetensors file and its small text files.

    source: a base URL ("http://host/models/minilm-l6-v2/", or "/models/..." in a page) or a local
    directory. The weights are `<source>/model.safetensors`, the manifest `<source>/manifest.json`
    (`manifest_url` overrides; a local directory without one gets it computed in memory).
    """

    def __init__(self, source: str, rt: Any = None, *, chunk_size_mb: float | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, retries: int = DEFAULT_RETRIES,
                 backoff_s: float = DEFAULT_BACKOFF_S, transport: Transport | None = None,
                 cache: ChunkCache | None | str = "default", on_progress: ProgressFn | str | None = None,
                 parallel_components: bool = True, weights: str = WEIGHTS_NAME,
                 manifest_url: str | None = None, manifest: str = "required") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if chunk_size_mb is not None and chunk_size_mb <= 0:
            raise ValueError(f"chunk_size_mb must be > 0, got {chunk_size_mb}")
        if manifest not in ("required", "optional"):
            raise ValueError(f"manifest must be 'required' or 'optional', got {manifest!r}")
        self.manifest_policy = manifest
        self.source = source
        self.is_local = not source.startswith(("http://", "https://", "/", "file://")) or (
            not IN_PYODIDE and os.path.isdir(source))
        base = source if source.endswith("/") or self.is_local else source + "/"
        self.base = base
        self.rt = rt
        self.chunk_size_mb = DEFAULT_CHUNK_MB if chunk_size_mb is None else float(chunk_size_mb)
        self.concurrency, self.retries, self.backoff_s = concurrency, retries, backoff_s
        self.transport = transport or _default_transport(source)
        self.cache = _default_cache(source) if cache == "default" else cache
        self.parallel_components = parallel_components
        self.weights_url = self._url(weights)
        self.manifest_url = manifest_url or self._url(MANIFEST_NAME)
        callback = progress_callback(on_progress)   # "bar": a terminal progress bar
        self._callbacks: list[ProgressFn] = [callback] if callback else []
        self.manifest: dict | None = None
        self.chunks: ModelChunks | None = None    # the manifest's chunks in the cache, once it is loaded
        self.state = _State(time.perf_counter())
        self._payload_of: dict[int, int] = {}   # chunk index -> bytes of requested tensors inside it
        self._downloaded_chunks: set[int] = set()
        self._derived: tuple[dict, int] | None = None   # a source without a manifest: its header, read to plan one
        self._file_hash: InOrderHash | None = None       # and its bytes hashed in order, where the host gives a digest

    # -- public ----------------------------------------------------------------------------------
    def register_progress_callback(self, callback: ProgressFn) -> None:
        self._callbacks.append(callback)

    @property
    def timeline(self) -> list[dict]:
        return self.state.timeline

    def stats(self) -> dict:
        s = self.state
        return {"requests": s.requests, "fetched_chunks": s.fetched_chunks, "cached_chunks": s.cached_chunks,
                "read_ahead_chunks": s.read_ahead_chunks, "retries": s.retries, "bytes_downloaded": s.downloaded,
                "memory_only": self.chunks.memory_only if self.chunks else self.cache is None,
                "memory_reason": self.chunks.memory_reason if self.chunks else None, "chunk_size_mb": self.chunk_size_mb,
                "concurrency": self.concurrency, "elapsed_ms": round((time.perf_counter() - s.t0) * 1e3, 1)}

    async def read_text(self, fname: str) -> str:
        """A small file beside the weights (config.json, vocab.txt), verified when the manifest lists it."""
        url = self._url(fname)
        listed = (self.manifest or {}).get("files", {}).get(fname)
        if listed and self.chunks is not None:
            hit = await self.chunks.get_file(listed["sha256"])
            if hit is not None:
                return hit.decode("utf-8")
        body = await self._fetch_whole(url, what=fname)
        if listed and sha256(body) == listed["sha256"] and self.chunks is not None:
            await self.chunks.put_file(listed["sha256"], body)
        if listed and sha256(body) != listed["sha256"]:
            raise LoadError(f"{url}: sha256 {sha256(body)[:12]}... does not match the manifest's "
                            f"{listed['sha256'][:12]}...")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"{url}: not UTF-8 text: {exc}") from None

    async def load_manifest(self) -> dict:
        if self.manifest is not None:
            return self.manifest
        self.emit("manifest", 0, 0)
        optional = self.is_local or self.manifest_policy == "optional"
        text = await self._fetch_whole(self.manifest_url, what="manifest", missing_ok=optional)
        if text is None and self.is_local:   # local directory without a manifest: compute it (hashes the file once)
            path = self.weights_url
            if not os.path.isfile(path):
                raise LoadError(f"{path}: no such file")
            self.manifest = build_manifest(path)
        elif text is None:
            self.manifest = await self._derive_manifest()
            self.cache = None   # no digest to check a cached chunk against: chunks live for this load only
        else:
            self.manifest = parse_manifest(text, self.manifest_url)
        m = self.manifest
        self.chunks = ModelChunks(self.cache, m, self.weights_url, self.emit)
        digest = f"file sha256 {m['sha256'][:12]}" if m["sha256"] else "no digest from the host: header checks only"
        self.emit("manifest", 0, 0, file_bytes=m["size"], derived=self._derived is not None,
                  note=f"{len(m['chunks'])} chunks of {m['chunk_size'] / 2**20:g} MiB, {digest}")
        return m

    async def _derive_manifest(self) -> dict:
        """The chunk plan of a file without a manifest beside it (a plain Hugging Face folder or URL): its size
        from a Range answer, its safetensors header read and checked (every tensor inside the file, each one's
        bytes its shape times its dtype), chunks without digests. The file's sha256, where the host gives one
        (an `X-Linked-Etag` or `ETag` of 64 hex digits, as the Hugging Face Hub sends for its LFS files, or a
        `<file>.sha256` beside it), is checked over every byte once the load has them all, in file order."""
        self.state.requests += 1
        r = await self.transport.get(self.weights_url, {"Range": "bytes=0-7"})
        size = _total_size(r)
        if r.status not in (200, 206) or size is None or len(r.body) < 8:
            raise LoadError(f"{self.weights_url}: no manifest beside it and no Range answer to read its header "
                            f"(HTTP {r.status}, Content-Range {r.headers.get('content-range')!r})")
        (n,) = struct.unpack("<Q", r.body[:8])
        if not 2 <= n <= min(MAX_HEADER, size - 8):
            raise LoadError(f"{self.weights_url}: a safetensors header of {n} bytes in a file of {size}")
        head = r.body[:8 + n] if len(r.body) >= 8 + n else r.body[:8] + await self._range_once(8, 8 + n)
        header, data_start = read_header(head, self.weights_url)
        check_layout(header, data_start, size, self.weights_url)
        digest = _digest_header(r.headers) or await self._sidecar_digest()
        self._derived = (header, data_start)
        m = derived_manifest(header, data_start, size, head, digest, MANIFEST_CHUNK)
        if digest:
            self._file_hash = InOrderHash(len(m["chunks"]))
        return m

    async def _sidecar_digest(self) -> str | None:
        body = await self._fetch_whole(self.weights_url + ".sha256", what="sha256 sidecar", missing_ok=True)
        if body is None:
            return None
        word = body.decode("ascii", "replace").strip().split()[:1]
        if not word or not re.fullmatch(r"[0-9a-fA-F]{64}", word[0]):
            raise LoadError(f"{self.weights_url}.sha256: not a sha256 digest")
        return word[0].lower()

    async def read_header(self) -> tuple[dict, int]:
        """The safetensors header (from a cached chunk 0, else fetched), checked against the manifest."""
        m = await self.load_manifest()
        if m.get("container", "safetensors") != "safetensors":
            raise LoadError(f"{self.manifest_url}: {m['file']} is a {m['container']} file, not safetensors "
                            "(a GGUF loads with gpuport.loading.gguf_source.GGUFSource)")
        if self._derived is not None:
            return self._derived
        cached = await self.chunks.get(0, keep=True) if m["data_start"] <= m["chunks"][0]["end"] else None
        if cached is not None:   # the header lies in chunk 0: a cached, verified chunk 0 has it
            head = cached[:m["data_start"]]
            if sha256(head) == m["header_sha256"]:
                header, data_start = read_header(head, self.weights_url)
                self.emit("header", 0, 0, header_bytes=len(head), note="from the cache")
                return header, data_start
        head = await self._fetch_header(m)
        header, data_start = read_header(head, self.weights_url)
        self.emit("header", 0, 0, header_bytes=len(head), note=f"{len(header) - ('__metadata__' in header)} tensors")
        return header, data_start

    async def load_tensors(self, names: Sequence[str] | None = None, upload: bool = True,
                           components: Mapping[str, Sequence[str]] | None = None,
                           on_component: Callable[[str, dict[str, Any]], Any] | None = None,
                           host_only: Sequence[str] = (), interleave: bool = True) -> dict[str, Any]:
        """{name: Tensor on rt} (or NumPy arrays with upload=False) for `names` (default: all), each uploaded the
        moment its chunks are verified; `components` (default: by layer) load in parallel, given: in turns of a span
        each (`interleave`; else each one's chunks after the one before), the first first, and `on_component(name,
        its tensors)` is called the moment a component's last tensor is in (it may start using them while the others
        load). `host_only`: tensors kept as arrays even with upload.
        A source with a file digest but no manifest is read whole, in file order (its bytes are hashed in order)."""
        m = await self.load_manifest()
        if m.get("container") == "ctranslate2":   # a model.bin's table is whole only in its manifest
            entries, data_start = manifest_table(m), 0
        else:
            header, data_start = await self.read_header()
            entries = {k: v for k, v in header.items() if k != "__metadata__"}
        names = list(names) if names is not None else sorted(entries, key=lambda k: entries[k]["data_offsets"][0])
        check_tensors(m, entries, names, data_start, self.weights_url, self.manifest_url)
        if upload and self.rt is None:
            raise ValueError("load_tensors(upload=True) needs a runtime: ProgressiveModelLoader(source, rt)")
        names.sort(key=lambda k: entries[k]["data_offsets"][0])
        per_span = max(1, round(self.chunk_size_mb * 2**20 / m["chunk_size"]))   # chunks per Range request
        turn = per_span if interleave else len(m["chunks"])   # a whole component a turn: one after the other
        need = interleaved_chunks(m, [*(components or {}).values(), names], turn)   # file order, or in turns
        if self._file_hash is not None:
            need = list(range(len(m["chunks"])))
        st = self.state
        self.expect(names)

        data: dict[int, bytes | ChunkView] = {}       # verified chunks, by index
        out: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        done: dict[str, asyncio.Future] = {n: loop.create_future() for n in names}
        owners: dict[int, list[str]] = {i: [] for i in need}
        for n in names:
            t = m["tensors"][n]
            for i in range(t["chunks"][0], t["chunks"][1] + 1):
                owners[i].append(n)

        def assemble(n: str) -> np.ndarray:
            t = m["tensors"][n]
            # its bytes, in one chunk or over several, copied once into an array of its own (joining chunks, then
            # copying the joined bytes into an array took twice as long: 60 ms of MiniLM's load in Firefox, profiled)
            pieces = [_view(data[i])[max(t["start"] - m["chunks"][i]["start"], 0):t["end"] - m["chunks"][i]["start"]]
                      for i in range(t["chunks"][0], t["chunks"][1] + 1)]
            return tensor_from_pieces(n, dict(entries[n], data_offsets=[0, t["end"] - t["start"]]), pieces,
                                      self.weights_url)

        def arrived(i: int, blob: bytes) -> None:
            """Chunk i is verified: upload, right now, every tensor it completes (file order)."""
            data[i] = blob
            for n in owners[i]:
                t = m["tensors"][n]
                if n in out or any(j not in data for j in range(t["chunks"][0], t["chunks"][1] + 1)):
                    continue
                arr = assemble(n)
                if upload and arr.dtype not in (np.float64, np.int64) and n not in host_only:
                    out[n] = self.rt.tensor(arr, copy=False)   # arr is the loader's own (assemble)
                else:
                    out[n] = arr   # upload=False, or 64-bit buffers (position_ids): stay on the host
                st.uploaded += t["end"] - t["start"]
                self.emit("upload", st.uploaded, st.payload, tensor=n, layer=t.get("layer", layer_of(n)))
                done[n].set_result(True)
                # a chunk whose tensors are all done can go: the whole file never sits in memory twice
                for j in range(t["chunks"][0], t["chunks"][1] + 1):
                    if all(n2 in out for n2 in owners[j]):
                        data.pop(j, None)

        stream = asyncio.ensure_future(self.stream_chunks(need, arrived, views=True))

        async def component(key: str | None, part: Sequence[str]) -> None:
            for n in part:
                await done[n]
            if key is not None and on_component is not None:
                ready = on_component(key, {n: out[n] for n in part})
                if asyncio.iscoroutine(ready):
                    await ready

        part_tasks = [asyncio.ensure_future(component(k, p)) for k, p in self._parts(m, names, components)]
        try:
            await stream
            await asyncio.gather(*part_tasks)   # independent components, each done when its tensors are
        except BaseException:
            for t in [stream] + part_tasks:
                t.cancel()
            await asyncio.gather(stream, *part_tasks, return_exceptions=True)
            raise
        return out

    def _parts(self, m: dict, names: Sequence[str], components: Mapping[str, Sequence[str]] | None
               ) -> list[tuple[str | None, list[str]]]:
        """The groups a load waits for: the named components, else (unnamed) each layer's tensors, or all as one."""
        if components is not None:
            return [(k, list(v)) for k, v in components.items()]
        if not self.parallel_components:
            return [(None, list(names))]
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(str(m["tensors"][n].get("layer", layer_of(n))), []).append(n)
        return [(None, g) for g in groups.values()]

    def expect(self, names: Sequence[str]) -> None:
        """The load will return tensors `names`: their bytes are every byte stage's total (see the module doc)."""
        m = self.manifest
        self.state.payload = sum(m["tensors"][n]["end"] - m["tensors"][n]["start"] for n in names)
        self._payload_of = payload_per_chunk(m, names)

    async def stream_chunks(self, need: Sequence[int], arrived: Callable[[int, Any], Any], views: bool = False) -> None:
        """Chunks `need` (indices, in the order wanted: ascending, or components interleaved), each verified: from the cache, else fetched in spans of
        `chunk_size_mb`, `concurrency` at a time in file order; `arrived(i, blob)` the moment chunk i is
        verified; fetched chunks are then cached. Progress counts the payload set by `expect`. `views`: a cached chunk
        may arrive as a ChunkView (only sliced and copied out: load_tensors), not bytes."""
        m = await self.load_manifest()
        st = self.state
        await self.chunks.prepare()
        await self.chunks.remember(need)
        missing = []
        cached = cached_bytes = ahead = 0
        for w in range(0, len(need), CACHE_READS):   # CACHE_READS reads in flight, handed on in order
            window = need[w:w + CACHE_READS]
            for i, blob in zip(window, await self.chunks.get_many(window, views)):
                if blob is not None and self._file_hash is not None:
                    self._file_hash.add(i, bytes(blob))
                if blob is None:
                    missing.append(i)
                    continue
                if self.chunks.read_ahead(i):   # fetched by the page while it booted (which stores it): a download
                    ahead += 1
                    st.read_ahead_chunks += 1
                    self._downloaded([i], [blob], len(blob), read_ahead=True)
                else:
                    cached += 1
                    cached_bytes += self._payload_of.get(i, 0)
                    st.cached_chunks += 1
                    st.verified += self._payload_of.get(i, 0)
                    self.emit("verify", st.verified, st.payload, chunk=i, cached=True)
                arrived(i, blob)
        if cached or ahead:
            self.emit("cache", cached_bytes, st.payload, chunks_cached=cached, chunks_total=len(need),
                      note=f"{cached} of {len(need)} chunks from the cache, " + (
                          f"{ahead} fetched ahead by the page, " if ahead else "") + f"{len(missing)} to download")

        per_span = max(1, round(self.chunk_size_mb * 2**20 / m["chunk_size"]))
        spans: list[list[int]] = []
        for i in missing:
            if spans and spans[-1][-1] == i - 1 and len(spans[-1]) < per_span:
                spans[-1].append(i)
            else:
                spans.append([i])
        sem = asyncio.Semaphore(self.concurrency)

        async def run_span(span: list[int]) -> None:
            async with sem:   # acquired in file order: the first layers' spans go first
                chunks = await self._fetch_span(m, span)
            for i, blob in zip(span, chunks):
                if self._file_hash is not None:
                    self._file_hash.add(i, blob)
                arrived(i, blob)
            for i, blob in zip(span, chunks):
                await self.chunks.put(i, blob)

        tasks = [asyncio.ensure_future(run_span(s)) for s in spans]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if self._file_hash is not None:
            got = self._file_hash.hexdigest()
            if got != m["sha256"]:
                raise LoadError(f"{self.weights_url}: the file's sha256 is {got[:12]}..., the host says "
                                f"{m['sha256'][:12]}... (corrupt bytes somewhere: nothing was cached)")
            self.emit("verify", self.state.verified, self.state.payload, note=f"file sha256 {got[:12]} matches")


    # -- fetching --------------------------------------------------------------------------------
    def _url(self, fname: str) -> str:
        if self.is_local:
            return os.path.join(self.source, fname)
        return self.base + fname

    async def _fetch_whole(self, url: str, what: str, missing_ok: bool = False) -> bytes | None:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await self._backoff(attempt, url, what, last)
            try:
                self.state.requests += 1
                r = await self.transport.get(url)
            except FetchError as exc:
                last = str(exc)
                continue
            if r.status == 200:
                return r.body
            if r.status == 404 and missing_ok:
                return None
            last = f"HTTP {r.status}"
            if r.status in (404, 410, 403, 401):
                break
        raise LoadError(f"{url}: {what}: {last} (after {attempt + 1} attempt{'s' if attempt else ''})")

    async def _fetch_header(self, m: dict) -> bytes:
        """Bytes [0, data_start) in two Range requests (the 8-byte length, then the JSON), checked against
        the manifest's header length and sha256 and retried like a chunk: a corrupt byte costs a retry."""
        data_start = m["data_start"]
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await self._backoff(attempt, self.weights_url, "header", last)
            try:
                first = await self._range_once(0, 8)
                (n,) = struct.unpack("<Q", first)
                if 8 + n != data_start:   # checked before asking for n bytes: n may be any corrupt value
                    raise FetchError(f"header length {n} disagrees with the manifest's {m['header_len']} "
                                     "(a corrupt byte, or a stale manifest: run `gpuport pack-model`)")
                head = first + await self._range_once(8, data_start)
                if sha256(head) != m["header_sha256"]:
                    raise FetchError("header sha256 does not match the manifest (corrupt bytes, or a stale "
                                     "manifest or file)")
                return head
            except FetchError as exc:
                last = str(exc)
                if not exc.retriable:
                    break
        raise LoadError(f"{self.weights_url}: header (bytes 0-{data_start - 1}): {last} "
                        f"(after {attempt + 1} attempt{'s' if attempt else ''})")

    async def _range_once(self, start: int, end: int) -> bytes:
        self.state.requests += 1
        return await get_range(self.transport, self.weights_url, start, end, (self.manifest or {}).get("size"))

    async def _fetch_span(self, m: dict, span: list[int]) -> list[bytes]:
        """Consecutive chunks in one Range request; every chunk verified, else the span is retried."""
        start, end = m["chunks"][span[0]]["start"], m["chunks"][span[-1]]["end"]
        what = f"chunk {span[0]}" if len(span) == 1 else f"chunks {span[0]}-{span[-1]}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await self._backoff(attempt, self.weights_url, what, last)
            try:
                body = await self._range_once(start, end)
            except FetchError as exc:
                last = str(exc)
                if not exc.retriable:
                    break
                continue
            chunks = [m["chunks"][i] for i in span]
            out = [body[c["start"] - start:c["end"] - start] for c in chunks]
            digests = await self.transport.sha256(out)
            bad = next((i for i, c, d in zip(span, chunks, digests) if c["sha256"] and d != c["sha256"]), None)
            self._downloaded(span, out if bad is None else [], len(body))
            if bad is None:
                return out
            last = f"chunk {bad} failed its sha256 check (corrupt bytes)"
            what = f"chunk {bad}" + (f" (of chunks {span[0]}-{span[-1]})" if len(span) > 1 else "")
        raise LoadError(f"{self.weights_url}: {what} (bytes {start}-{end - 1}): {last} "
                        f"(after {attempt + 1} attempt{'s' if attempt else ''}; nothing was cached or used)")

    def _downloaded(self, span: Sequence[int], verified: Sequence[bytes], nbytes: int, **extra: Any) -> None:
        """Count `nbytes` received for chunks `span` (a retried span's chunks once), and the `verified` ones."""
        st = self.state
        st.downloaded += nbytes
        fresh = [i for i in span if i not in self._downloaded_chunks]
        self._downloaded_chunks.update(fresh)
        st.downloaded_payload += sum(self._payload_of.get(i, 0) for i in fresh)
        self.emit("download", st.downloaded_payload, st.payload, chunk=span[-1], network_bytes=st.downloaded, **extra)
        for i, _ in zip(span, verified):
            st.verified += self._payload_of.get(i, 0)
            st.fetched_chunks += 1
            self.emit("verify", st.verified, st.payload, chunk=i, **extra)

    async def _backoff(self, attempt: int, url: str, what: str, reason: str) -> None:
        self.state.retries += 1
        delay = self.backoff_s * (2 ** (attempt - 1))
        self.emit("retry", 0, 0, note=f"{url}: {what}: {reason}; retry {attempt}/{self.retries} in "
                   f"{delay * 1e3:.0f} ms")
        await asyncio.sleep(delay)

    # -- progress --------------------------------------------------------------------------------
    def emit(self, stage: str, done: int, total: int, **extra: Any) -> None:
        """One progress event (to the timeline and every callback); `percent` from the state's counters."""
        st = self.state
        denom = 2 * st.payload
        percent = 100.0 * (st.verified + st.uploaded) / denom if denom else 0.0
        event = {"stage": stage, "bytes_done": int(done), "bytes_total": int(total),
                 "percent": round(min(percent, 100.0), 2), "t_ms": round((time.perf_counter() - st.t0) * 1e3, 2),
                 "layer": None, "tensor": None}
        event.update(extra)
        st.timeline.append(event)
        for cb in self._callbacks:
            cb(dict(event))


class InOrderHash:
    """sha256 over a file's chunks as they arrive, fed in file order: a chunk ahead of the others waits (a load
    with a file digest fetches in file order, so only the spans in flight ever wait)."""

    def __init__(self, chunks: int) -> None:
        self._h, self._next, self._waiting, self.chunks = hashlib.sha256(), 0, {}, chunks

    def add(self, i: int, blob: bytes) -> None:
        self._waiting[i] = blob
        while self._next in self._waiting:
            self._h.update(self._waiting.pop(self._next))
            self._next += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest() if self._next == self.chunks else f"incomplete ({self._next} of {self.chunks})"


def _total_size(r: Any) -> int | None:
    """The file's size from a Range answer (Content-Range's total), or a whole-file answer's length."""
    m = re.fullmatch(r"bytes \d+-\d+/(\d+)", r.headers.get("content-range", "").strip())
    if m:
        return int(m.group(1))
    return len(r.body) if r.status == 200 else None


def _digest_header(headers: Mapping[str, str]) -> str | None:
    """A sha256 the host gives in its headers: X-Linked-Etag (the Hugging Face Hub's, for LFS files) or an ETag of
    64 hex digits."""
    for key in ("x-linked-etag", "etag"):
        value = headers.get(key, "").strip().removeprefix("W/").strip('"')
        if re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return value.lower()
    return None


def derived_manifest(header: dict, data_start: int, size: int, head: bytes, digest: str | None,
                     chunk_size: int) -> dict:
    """A manifest planned from a safetensors header (no chunk digests; the file's, when known)."""
    count = -(-size // chunk_size)
    chunks = [{"start": i * chunk_size, "end": min(size, (i + 1) * chunk_size), "sha256": None} for i in range(count)]
    tensors = {n: {"start": data_start + e["data_offsets"][0], "end": data_start + e["data_offsets"][1],
                   "dtype": e["dtype"], "shape": e["shape"], "layer": layer_of(n),
                   "chunks": chunk_span(data_start + e["data_offsets"][0], data_start + e["data_offsets"][1],
                                        chunk_size, count)}
               for n, e in tensor_entries(header).items()}
    return {"format": 1, "container": "safetensors", "model": None, "file": WEIGHTS_NAME, "size": size, "sha256": digest,
            "header_len": data_start - 8, "data_start": data_start, "header_sha256": sha256(head[:data_start]),
            "chunk_size": chunk_size, "chunks": chunks, "tensors": tensors, "files": {}, "derived": True}


def _default_transport(source: str) -> Transport:
    """fetch in a page, urllib for http(s) natively, else the local file system."""
    if IN_PYODIDE:
        from ..backends.pageio import PyfetchTransport  # page-only: imports js
        return PyfetchTransport()
    return UrllibTransport() if source.startswith(("http://", "https://")) else FileTransport()


def _view(blob: bytes | ChunkView) -> memoryview | ChunkView:
    """A chunk to slice without copying: bytes as a memoryview, a cache's ChunkView as itself."""
    return blob if isinstance(blob, ChunkView) else memoryview(blob)


def _default_cache(source: str) -> ChunkCache | None:
    """IndexedDB in a page; natively, for an http(s) source, files under the gpuport cache directory
    (GPUPORT_MODEL_CACHE: "off" for none, or a directory); a local source none (it is on disk already)."""
    if IN_PYODIDE:
        from ..backends.pageio import IndexedDBChunkCache  # page-only: imports js
        return IndexedDBChunkCache()
    if not source.startswith(("http://", "https://")):
        return None
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("off", "0", "none", "no", "false"):
        return None
    return DiskChunkCache(setting or None)


async def gather_components(loaders: Mapping[str, Awaitable[Any]]) -> dict[str, Any]:
    """Independent components (e.g. a text and a vision tower) loaded at the same time."""
    keys = list(loaders)
    values = await asyncio.gather(*(loaders[k] for k in keys))
    return dict(zip(keys, values))


__all__ = ["DEFAULT_CHUNK_MB", "InOrderHash", "ProgressiveModelLoader", "derived_manifest", "gather_components"]
