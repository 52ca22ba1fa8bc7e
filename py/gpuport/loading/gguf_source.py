"""A GGUF file as a model source: its header (metadata, tensor table) and each tensor's bytes as stored, from a
URL through the progressive loader (verified Range chunks, the IndexedDB cache in a page, one progress
stream) or from a local file.

    src = await GGUFSource.open("http://127.0.0.1:8000/models/smollm2-135m-instruct/")
    src.header.metadata["general.architecture"]          # a gpuport.formats.gguf.GGUFHeader
    raw = await src.raw("blk.0.attn_q.weight")            # uint8: the tensor's bytes as stored, verified

A URL needs the chunk manifest `gpuport pack-model` writes beside the file (manifest.json; it names the
file). The header is read from the verified chunks the manifest says it spans and checked against the
manifest (length, sha256, every tensor's byte range). Every tensor's ggml type is checked at open, before any tensor byte is fetched: a
type gpuport does not compute with raises UnsupportedFeature naming it and the tensor. The first `raw()`
streams every chunk of the file's tensors in file order (`concurrency` Range requests at a time); each
`raw(name)` returns as soon as its own chunks are verified, and a chunk is dropped once every tensor in it
has been handed out. A fault (corrupt chunk, HTTP error, dropped connection) is retried, then raises
LoadError naming the chunk; nothing unverified is cached or returned.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import LoadError, UnsupportedFeature
from ..formats.chunk_manifest import MANIFEST_NAME, sha256
from ..formats.gguf import GGUFFile, GGUFHeader, MoreBytes, read_header
from ..host.quant import SUPPORTED
from ..platform import IN_PYODIDE
from .loader import ProgressiveModelLoader

ProgressFn = Callable[[dict], Any]


def check_types(header: GGUFHeader, where: str, supported: Sequence[str] = SUPPORTED) -> None:
    """UnsupportedFeature naming the first tensor whose ggml type is not in `supported` (and how many share it)."""
    for t in header.tensors.values():
        if t.type_name not in supported:
            same = sum(u.ggml_type == t.ggml_type for u in header.tensors.values())
            raise UnsupportedFeature(
                f"{where}: tensor {t.name!r} is {t.type_name} ({same} tensor{'s' if same > 1 else ''} of that type), "
                f"a ggml type gpuport does not compute with (supported: {', '.join(supported)})")


class GGUFSource:
    """The header of a GGUF file and `await raw(name)`: a tensor's stored bytes (uint8, read-only)."""

    def __init__(self, header: GGUFHeader, name: str) -> None:
        self.header = header
        self.name = name

    @property
    def metadata(self) -> dict[str, Any]:
        return self.header.metadata

    async def raw(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def stats(self) -> dict:
        return {"source": self.name}

    async def wait(self) -> None:
        """Until background work (downloads, cache writes) is over; a local file has none."""

    async def close(self) -> None:
        """Stop background work; a local file has none."""

    def _info(self, name: str):
        try:
            return self.header.tensors[name]
        except KeyError:
            raise LoadError(f"{self.name}: no tensor named {name!r}") from None

    @staticmethod
    async def open(source: str, *, weights: str | None = None, supported: Sequence[str] = SUPPORTED,
                   on_progress: ProgressFn | None = None, **loader_options: Any) -> "GGUFSource":
        """A URL (http(s)://..., or /... in a page): the directory holding manifest.json (which names the file)
        or the .gguf itself; or a local .gguf file or a directory holding one (natively)."""
        if source.startswith(("http://", "https://")) or (source.startswith("/") and IN_PYODIDE):
            return await RemoteGGUF.open(source, weights=weights, supported=supported, on_progress=on_progress,
                                         **loader_options)
        if loader_options:
            raise ValueError(f"{source}: loader options {sorted(loader_options)} apply to a URL only")
        return LocalGGUF(_local_file(source, weights), supported, on_progress)


def _local_file(source: str, weights: str | None) -> str:
    if os.path.isdir(source):
        if weights is not None:
            return os.path.join(source, weights)
        found = sorted(f for f in os.listdir(source) if f.endswith(".gguf"))
        if len(found) != 1:
            raise LoadError(f"{source}: expected one .gguf file, found {found or 'none'} (pass weights=)")
        return os.path.join(source, found[0])
    if not os.path.isfile(source):
        raise LoadError(f"{source}: not a .gguf file on this machine (nor a directory holding one; a URL starts "
                        "with http:// or https://)")
    return source


class LocalGGUF(GGUFSource):
    """A .gguf on disk (memory-mapped by GGUFFile)."""

    def __init__(self, path: str, supported: Sequence[str] = SUPPORTED, on_progress: ProgressFn | None = None) -> None:
        self.file = GGUFFile(path)
        super().__init__(self.file.header, self.file.name)
        check_types(self.header, path, supported)
        self._progress = on_progress
        self._total = sum(t.nbytes for t in self.header.tensors.values())
        self._done = 0

    async def raw(self, name: str) -> np.ndarray:
        t = self._info(name)
        out = self.file.raw(name)
        self._done += t.nbytes
        if self._progress is not None:
            self._progress({"stage": "upload", "bytes_done": self._done, "bytes_total": self._total, "tensor": name,
                            "percent": round(100.0 * min(self._done, self._total) / max(self._total, 1), 2)})
        return out

    def stats(self) -> dict:
        return {"source": self.file.path, "bytes_downloaded": 0}


class RemoteGGUF(GGUFSource):
    """A GGUF behind a URL, through gpuport.loading.loader.ProgressiveModelLoader's verified chunks and cache."""

    def __init__(self, loader: ProgressiveModelLoader, header: GGUFHeader, chunks: dict[int, bytes]) -> None:
        super().__init__(header, loader.weights_url)
        self.loader = loader
        self._chunks = chunks                       # verified bytes by chunk index, until handed out
        self._owners: dict[int, set[str]] = {}      # chunk -> tensors in it not yet handed out
        for n, t in loader.manifest["tensors"].items():
            for i in range(t["chunks"][0], t["chunks"][1] + 1):
                self._owners.setdefault(i, set()).add(n)
        for i in [i for i in self._chunks if not self._owners.get(i)]:
            del self._chunks[i]                     # header-only chunks
        self._waiting: dict[int, asyncio.Future] = {}
        self._streams: list[asyncio.Future] = []
        self._failed: BaseException | None = None

    @classmethod
    async def open(cls, source: str, *, weights: str | None = None, supported: Sequence[str] = SUPPORTED,
                   on_progress: ProgressFn | None = None, **loader_options: Any) -> "RemoteGGUF":
        if source.endswith(".gguf"):
            base, fname = source.rsplit("/", 1)[0] + "/", source.rsplit("/", 1)[1]
        else:
            base, fname = (source if source.endswith("/") else source + "/"), weights
        manifest_url = loader_options.pop("manifest_url", None) or base + MANIFEST_NAME
        loader = ProgressiveModelLoader(base, None, manifest_url=manifest_url, on_progress=on_progress,
                                        **loader_options)
        m = await loader.load_manifest()
        if m.get("container") != "gguf":
            raise LoadError(f"{manifest_url}: describes {m.get('file')!r}, a {m.get('container', 'safetensors')} "
                            "file, not a GGUF")
        if fname is not None and m.get("file") not in (None, fname):
            raise LoadError(f"{manifest_url}: describes {m['file']!r}, not {fname!r} (stale manifest: run "
                            "`gpuport pack-model`)")
        fname = fname or m.get("file")
        if not fname:
            raise LoadError(f"{manifest_url}: names no file; pass weights=")
        loader.weights_url = loader.chunks.url = base + fname
        # progress over the whole load from the start, so that `percent` only grows: every chunk, every tensor
        loader.expect(list(m["tensors"]))
        header, chunks = await _read_header(loader, m)
        check_types(header, loader.weights_url, supported)
        _check_against_manifest(header, m, loader)
        return cls(loader, header, chunks)

    async def prefetch(self) -> None:
        """Start streaming (in the background, file order) every chunk that a tensor not handed out yet lies
        in and that is neither here nor on its way; returns at once. The first raw() calls it."""
        if self._failed is not None:
            raise self._failed
        loop = asyncio.get_running_loop()
        need = [i for i in sorted(self._owners) if self._owners[i] and i not in self._chunks
                and i not in self._waiting]
        for i in need:
            self._waiting[i] = loop.create_future()
        if need:
            self._streams.append(asyncio.ensure_future(self._run(need)))

    async def _run(self, need: list[int]) -> None:
        def arrived(i: int, blob: bytes) -> None:
            if self._owners.get(i):
                self._chunks[i] = blob
            fut = self._waiting.pop(i, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        try:
            await self.loader.stream_chunks(need, arrived)
        except BaseException as exc:
            self._failed = exc if isinstance(exc, Exception) else LoadError(f"{self.name}: loading was cancelled")
            for i in need:
                fut = self._waiting.get(i)
                if fut is not None and not fut.done():
                    fut.set_exception(self._failed)
                    fut.exception()   # retrieved: raw() raises it; nobody waiting is not an error of its own
            if not isinstance(exc, Exception):
                raise

    async def raw(self, name: str) -> np.ndarray:
        t = self._info(name)
        mt = self.loader.manifest["tensors"][name]
        a, b = mt["chunks"]
        span = range(a, b + 1)
        if any(i not in self._chunks and i not in self._waiting for i in span):
            for i in span:   # asked again after it was handed out (and its chunks dropped): wanted again
                self._owners[i].add(name)
            await self.prefetch()
        for i in span:
            if i not in self._chunks:
                await self._waiting[i]
        out = self._assemble(t.offset, t.offset + t.nbytes, a, b)
        st = self.loader.state
        st.uploaded += t.nbytes
        self.loader.emit("upload", st.uploaded, st.payload, tensor=name, layer=mt.get("layer"))
        for i in span:
            self._owners[i].discard(name)
            if not self._owners[i]:
                self._chunks.pop(i, None)
        return out

    async def wait(self) -> None:
        """Until every download started is over, its verified chunks written to the cache (raw() returns as
        soon as its own chunks are verified, before they are cached)."""
        while any(not t.done() for t in self._streams):
            await asyncio.gather(*self._streams, return_exceptions=True)

    async def close(self) -> None:
        """Stop any download still running (a model that was not built to the end)."""
        for task in self._streams:
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        self._streams.clear()

    def _assemble(self, start: int, end: int, a: int, b: int) -> np.ndarray:
        chunks = self.loader.manifest["chunks"]
        base = chunks[a]["start"]
        if a == b:
            buf = self._chunks[a]
        else:
            buf = b"".join(self._chunks[i] for i in range(a, b + 1))
        return np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start - base)

    def stats(self) -> dict:
        return self.loader.stats()


async def _read_header(loader: ProgressiveModelLoader, m: dict) -> tuple[GGUFHeader, dict[int, bytes]]:
    """The header from the verified chunks the manifest says it spans (one Range request for SmolLM2's 1.8 MB),
    checked against the manifest's length and sha256."""
    chunks: dict[int, bytes] = {}
    last = min((max(m["data_start"], 1) - 1) // m["chunk_size"], len(m["chunks"]) - 1)
    await loader.stream_chunks(list(range(last + 1)), chunks.__setitem__)
    prefix = b"".join(chunks[i] for i in range(last + 1))
    got = read_header(prefix, loader.weights_url)
    if isinstance(got, MoreBytes):
        raise LoadError(f"{loader.weights_url}: the header needs at least {got.total} bytes, the manifest says "
                        f"{m['data_start']} (stale manifest: run `gpuport pack-model`)")
    head = prefix[:got.data_offset]
    if got.data_offset != m["data_start"] or sha256(head) != m["header_sha256"]:
        raise LoadError(f"{loader.weights_url}: the header ({got.data_offset} bytes) does not match the manifest's "
                        f"({m['data_start']} bytes, sha256 {m['header_sha256'][:12]}) (stale manifest: run "
                        "`gpuport pack-model`)")
    loader.emit("header", 0, 0, header_bytes=len(head),
                note=f"{len(got.tensors)} tensors, {len(got.metadata)} metadata keys")
    return got, chunks


def _check_against_manifest(header: GGUFHeader, m: dict, loader: ProgressiveModelLoader) -> None:
    for t in header.tensors.values():
        mt = m["tensors"].get(t.name)
        if mt is None or [mt["start"], mt["end"]] != [t.offset, t.offset + t.nbytes]:
            where = "no entry" if mt is None else f"bytes {mt['start']}..{mt['end']}"
            raise LoadError(f"{loader.manifest_url}: tensors[{t.name!r}]: {where}, but the header of "
                            f"{loader.weights_url} puts it at {t.offset}..{t.offset + t.nbytes} (stale manifest: "
                            "run `gpuport pack-model`)")
    extra = set(m["tensors"]) - set(header.tensors)
    if extra:
        raise LoadError(f"{loader.manifest_url}: tensors: {sorted(extra)[0]!r} is not in {loader.weights_url} "
                        "(stale manifest: run `gpuport pack-model`)")


__all__ = ["GGUFSource", "LocalGGUF", "RemoteGGUF", "check_types"]
