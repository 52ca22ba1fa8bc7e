"""Page-only I/O (with browser.py and jsmodules.py, the only modules that import js/pyodide): IndexedDB record stores,
the fetch transport and the IndexedDB chunk cache of the progressive model loader, and the browser's JPEG decoder.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Sequence

import gpuport_idb as idb  # web/idb.js, registered by jsmodules.register beside the bridge
import js
import numpy as np
from pyodide.code import run_js
from pyodide.ffi import JsException, to_js
from pyodide.http import pyfetch

from ..errors import NoAnswer
from ..formats.chunk_manifest import sha256
from ..platform import within
from .io import (
    ChunkCache,
    ChunkView,
    QuotaExceeded,
    Response,
    Transport,
    TransportError,
)

RECORD_WAIT_S = 10.0   # a record read past it is treated as missing (open() goes on without the optimisation)


class IndexedDBStore:
    """Text records in an IndexedDB object store (web/idb.js): pipeline manifests, selector history.
    Storage failing (quota, private mode, a read that never settles) only loses the optimisation: loads give None,
    saves are dropped."""

    def __init__(self, store: str = "manifests", prefix: str = "") -> None:
        self.store, self.prefix = store, prefix

    async def load(self, scope: str) -> str | None:
        try:
            value = await within(idb.get(self.store, self.prefix + scope), RECORD_WAIT_S,
                                 f"IndexedDB's {self.store} record {self.prefix + scope}")
        except (JsException, NoAnswer):
            return None
        return value if isinstance(value, str) else None

    def save_soon(self, scope: str, text: str) -> None:
        async def save() -> None:
            try:
                await idb.put(self.store, self.prefix + scope, text)
            except JsException:
                pass
        asyncio.ensure_future(save())



def absolute(url: str) -> str:
    """`url` resolved where this Python runs. A worker made from a blob: URL (a page's inline worker, as
    in PyScript-like hosts) has no path to resolve against, so its relative URLs resolve against its origin."""
    base = str(js.location.href)
    if base.startswith("blob:"):
        base = str(js.location.origin) + "/"
    return str(js.URL.new(url, base).href)


class PyfetchTransport(Transport):
    """gpuport.loading.loader's transport in a page: pyodide.http.pyfetch (fetch) with Range headers. `no-store`
    keeps the browser's HTTP cache out of it: the verified-chunk cache in IndexedDB is the only cache, and
    every byte that did come over the network is counted."""

    def __init__(self, cache_mode: str = "no-store") -> None:
        self.cache_mode = cache_mode

    async def get(self, url: str, headers: Any = None) -> Any:
        if not headers:   # a manifest the page's read-ahead fetched this visit is handed over, not asked for again
            text = await idb.takeManifest(absolute(url))
            if text is not None:
                return Response(200, {}, str(text).encode("utf-8"), url)
        try:
            r = await pyfetch(absolute(url), headers=dict(headers or {}), cache=self.cache_mode)
            body = await r.bytes()
        except (JsException, OSError, ValueError) as exc:   # network error, connection dropped mid-body
            raise TransportError(f"connection failed: {exc}") from None
        return Response(int(r.status), {str(k).lower(): str(v) for k, v in dict(r.headers).items()}, body, url)

    async def sha256(self, blobs: Sequence[bytes]) -> list[str]:
        """The browser's digests of a span's chunks (one crossing), hashlib's where it has no crypto.subtle."""
        digests = await idb.sha256(to_js(list(blobs)))
        return await super().sha256(blobs) if digests is None else [str(d) for d in digests]


class IndexedDBChunkCache(ChunkCache):
    """Verified chunks in IndexedDB (web/idb.js store "chunks"), the model's current sha in "meta".
    A QuotaExceededError becomes gpuport.loading.loader.QuotaExceeded (the loader then keeps chunks in memory)."""

    def __init__(self, use_estimate: bool = True) -> None:
        self.use_estimate = use_estimate
        self._ahead: set[str] = set()   # keys last handed over from the network read-ahead

    @staticmethod
    def _raise(exc: JsException) -> None:
        text = str(exc)
        if "QuotaExceeded" in text or "quota" in text.lower():
            raise QuotaExceeded(text) from None
        raise exc

    async def estimate(self) -> dict | None:
        if not self.use_estimate:
            return None
        try:
            est = await idb.estimate()
        except JsException:
            return None
        if est is None:
            return None
        est = est.to_py() if hasattr(est, "to_py") else est
        return {"usage": int(est.get("usage") or 0), "quota": int(est.get("quota") or 0)}

    async def get(self, key: str) -> bytes | None:
        return _bytes(await idb.get("chunks", key))

    async def get_with_digest(self, key: str) -> tuple[bytes, str] | None:
        """The record and the browser's digest of it (one crossing; hashlib's where it has no crypto.subtle), from
        what web/idb.js read ahead while the page booted where it holds the key."""
        return self._handed(key, await idb.takeWithDigest("chunks", key))

    async def get_many_with_digest(self, keys: Sequence[str], views: bool = False
                                   ) -> list[tuple[bytes | ChunkView, str] | None]:
        found = await idb.takeManyWithDigest("chunks", to_js(list(keys)))
        return [self._handed(key, record, views) for key, record in zip(keys, found)]

    def _handed(self, key: str, found: Any, views: bool = False) -> tuple[bytes | ChunkView, str] | None:
        value = None if found is None else found.value
        self._ahead.discard(key)
        if views and found is not None and found.sha256 is not None and _is_bytes_view(value):
            blob: bytes | ChunkView | None = JsChunk(value)
        else:
            blob = _bytes(value)
        if blob is None:
            return None
        if found.fetched:
            self._ahead.add(key)
        return blob, str(found.sha256) if found.sha256 is not None else sha256(blob)

    def read_ahead(self, key: str) -> bool:
        return key in self._ahead

    async def put(self, key: str, data: bytes, digest: str | None = None) -> None:
        arr = js.Uint8Array.new(len(data))
        arr.assign(data)
        try:
            await idb.put("chunks", key, arr, digest)
        except JsException as exc:
            self._raise(exc)

    async def remove(self, key: str) -> None:
        await idb.remove("chunks", key)

    async def keys(self) -> list[str]:
        return [str(k) for k in (await idb.keys("chunks")).to_py()]

    async def get_meta(self, key: str) -> str | None:
        value = await idb.get("meta", key)
        return value if isinstance(value, str) else None

    async def put_meta(self, key: str, value: str) -> None:
        try:
            await idb.put("meta", key, value)
        except JsException as exc:
            self._raise(exc)


class JsChunk(ChunkView):
    """A chunk left in the Uint8Array IndexedDB (or the page's read-ahead) handed over: each slice is copied once,
    straight into Pyodide's memory where its tensor is."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.length)

    def __getitem__(self, part: slice) -> "JsChunk":
        start, stop, step = part.indices(len(self))
        if step != 1:
            raise ValueError("a chunk's slices are contiguous")
        return JsChunk(self.array.subarray(start, max(start, stop)))

    def __bytes__(self) -> bytes:
        return self.array.to_bytes()

    def copy_into(self, dest: memoryview) -> None:
        self.array.assign_to(dest)


def _is_bytes_view(value: Any) -> bool:
    """Whether a stored record is a Uint8Array (what idb.js stores chunks as), which JsChunk slices without a copy."""
    return value is not None and getattr(value, "BYTES_PER_ELEMENT", None) == 1 and hasattr(value, "subarray")


def _bytes(value: Any) -> bytes | None:
    """A stored chunk (a Uint8Array, or an ArrayBuffer) as bytes; None for anything else."""
    if value is None or not hasattr(value, "to_bytes"):
        return None
    try:
        return value.to_bytes()
    except Exception:
        return js.Uint8Array.new(value).to_bytes()


# The browser's JPEG decoder, every image at once: createImageBitmap decodes, then a 2D canvas hands over the pixels
# (RGBA). colorSpaceConversion "none": the samples as coded, no ICC profile applied (Pillow applies none). Chromium and
# Firefox decode with libjpeg-turbo's defaults (its accurate integer IDCT, its fancy chroma upsampling), as the Pillow
# wheels Hugging Face's preprocessing runs on do: the same bytes (e2e/test_page_vision.py checks a corpus of
# subsamplings, progressive and restart-marked files), where Pyodide's Pillow links IJG libjpeg 9, whose chroma
# upsampling differs by one level on 4:2:0 files. It all runs in a worker of its own, so this thread (Pillow's PNGs
# meanwhile) and the decoding share the two cores: here Firefox decoded on the calling thread, and the canvas's
# drawImage and getImageData ran on it in both browsers (27-48 ms for a batch's six photographs). Where no worker
# starts (or one fails), the images are decoded here as before.
_DECODE_JPEGS = """(() => {
  const decode = async (bytes) => {
    try {
      const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }),
                                             { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(bitmap, 0, 0);
      bitmap.close();
      const image = context.getImageData(0, 0, canvas.width, canvas.height);
      return { width: image.width, height: image.height, data: image.data, in: "this thread" };
    } catch (e) {
      return String((e && e.message) || e);
    }
  };
  const waiting = new Map();   // id -> [resolve, bytes]
  let worker = null, next = 0;
  const here = () => {   // the worker is gone: what it held is decoded on this thread
    worker = null;
    for (const [resolve, bytes] of waiting.values()) decode(bytes).then(resolve);
    waiting.clear();
  };
  try {
    const source = `const decode = ${decode};
onmessage = async ({ data: { id, bytes } }) => {
  const got = await decode(bytes);
  if (typeof got === "string") postMessage({ id, error: got });
  else postMessage({ id, width: got.width, height: got.height, data: got.data, in: "a worker" }, [got.data.buffer]);
};`;
    worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
    worker.onmessage = ({ data }) => {
      const [resolve] = waiting.get(data.id);
      waiting.delete(data.id);
      resolve(data.error === undefined ? data : data.error);
    };
    worker.onerror = (e) => { e.preventDefault(); here(); };
  } catch (e) {
    worker = null;
  }
  return (list) => Promise.all(Array.from(list, (bytes) => {
    if (!worker) return decode(bytes);
    return new Promise((resolve) => {
      const id = next++;
      waiting.set(id, [resolve, bytes]);
      const copy = bytes.slice();
      worker.postMessage({ id, bytes: copy }, [copy.buffer]);
    });
  }));
})()"""
_decoder: Any = None


def decode_jpegs(images: Sequence[bytes]) -> Awaitable[list[tuple[np.ndarray, str] | str]]:
    """Each JPEG as (height, width, 4) uint8 RGBA from the browser's decoder (alpha 255) and where it was decoded
    ("a worker", or "this thread" where none starts), or the reason it could not be (no OffscreenCanvas here, a
    file it refuses). The decoding starts now, in the decoder's worker, all images at once: await the result once
    this thread has done what it can meanwhile."""
    global _decoder
    try:
        if _decoder is None:
            _decoder = run_js(_DECODE_JPEGS)
        started, failed = _decoder(to_js([bytes(image) for image in images])), ""
    except JsException as exc:
        started, failed = None, f"the browser's decoder: {exc}"

    async def pixels() -> list[tuple[np.ndarray, str] | str]:
        try:
            answers = await started if started is not None else None
        except JsException as exc:
            answers, why = None, f"the browser's decoder: {exc}"
        else:
            why = failed
        if answers is None:
            return [why] * len(images)
        out: list[tuple[np.ndarray, str] | str] = []
        for answer in answers:
            if isinstance(answer, str):
                out.append(f"the browser's decoder: {answer}")
                continue
            rgba = np.empty((int(answer.height), int(answer.width), 4), np.uint8)
            answer.data.assign_to(rgba)
            out.append((rgba, str(getattr(answer, "in"))))
        return out

    return pixels()
