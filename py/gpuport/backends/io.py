"""The I/O contracts a platform implements: a transport answers `await get(url, headers)` with a Response, a chunk
cache keeps verified model chunks, a record store keeps small text records. loading/ implements them natively
(urllib and files, memory and disk caches, JSON files), pageio.py in a page (fetch and IndexedDB); the loader's
retry loop understands FetchError.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from ..formats.chunk_manifest import sha256


class FetchError(Exception):
    """One failed attempt (retried): HTTP status, Range mismatch, short body, hash mismatch, dropped link."""

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class TransportError(FetchError):
    """The connection failed or dropped mid-transfer."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str = ""


class Transport(ABC):
    """`await get(url, headers)` -> Response; raises TransportError when the connection fails. `await
    sha256(blobs)`: the hex digests the loader checks what arrived against (a page's transport asks the
    browser, whose native SHA-256 is several times Pyodide's hashlib)."""

    @abstractmethod
    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response: ...

    async def sha256(self, blobs: Sequence[bytes]) -> list[str]:
        return [sha256(b) for b in blobs]


class QuotaExceeded(Exception):
    """The cache has no room (IndexedDB QuotaExceededError): the loader keeps chunks in memory instead."""


class ChunkView(ABC):
    """A chunk a cache hands over where it holds it (a page's: in JS memory) rather than as bytes: sliced like bytes,
    each slice copied once, straight into the tensor it belongs to (formats.safetensors.tensor_from_pieces). As bytes
    the chunk would be copied twice: out of JS, then into the tensor (a warm Chromium visit's MiniLM load, profiled:
    28-34 ms and 26-35 ms of its 150-200)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, part: slice) -> "ChunkView": ...

    @abstractmethod
    def __bytes__(self) -> bytes: ...

    @abstractmethod
    def copy_into(self, dest: memoryview) -> None:
        """Its bytes into `dest`, a writable buffer of exactly its length."""


class ChunkCache:
    """Verified chunks keyed "<file sha256>:<chunk index>"; the model's current sha under "model:<url>".
    `estimate()` and the meta records are optional: the defaults say "unknown" and keep nothing."""

    async def estimate(self) -> dict | None:
        return None

    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def get_with_digest(self, key: str) -> tuple[bytes, str] | None:
        """The record and its sha256 hex, which the caller checks (a page's cache digests it in the browser)."""
        blob = await self.get(key)
        return None if blob is None else (bytes(blob), sha256(blob))

    async def get_many_with_digest(self, keys: Sequence[str], views: bool = False
                                   ) -> list[tuple[bytes | ChunkView, str] | None]:
        """get_with_digest of each key, in order (a page's cache answers them in one crossing). `views`: a record may
        come as a ChunkView (the caller only slices it and copies the slices out) rather than bytes."""
        return list(await asyncio.gather(*(self.get_with_digest(key) for key in keys)))

    def read_ahead(self, key: str) -> bool:
        """Whether the record get_with_digest last handed over for `key` came over the network ahead of the load
        (a page's start({models}): web/idb.js, which stores it once the page is idle) rather than from storage.
        The loader counts those as downloaded, and does not store them."""
        return False

    async def put(self, key: str, data: bytes, digest: str | None = None) -> None:
        """Store a verified record; `digest`: the sha256 it was verified by, which a cache may keep with it to check
        the record more cheaply when it hands it back (a page's: web/idb.js asStored)."""
        raise NotImplementedError

    async def remove(self, key: str) -> None:
        raise NotImplementedError

    async def keys(self) -> list[str]:
        raise NotImplementedError

    async def get_meta(self, key: str) -> str | None:
        return None

    async def put_meta(self, key: str, value: str) -> None:
        return None


class RecordStore(Protocol):
    """Where records of one kind persist, keyed by scope."""

    async def load(self, scope: str) -> str | None: ...

    def save_soon(self, scope: str, text: str) -> None: ...
