"""How the model loader gets bytes: HTTP(S) with urllib natively, a local directory with Range emulated,
and (in backends/pageio.py) fetch in a page. Each answers `await get(url, headers)` with a Response and
raises TransportError when the connection fails; the loader's retry loop understands FetchError.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import urllib.error
import urllib.request
from typing import Mapping

from ..backends.io import FetchError, Response, Transport, TransportError


async def get_range(transport: Transport, url: str, start: int, end: int, size: int | None) -> bytes:
    """Bytes [start, end) of `url` (`size`: the whole file's, when known) in one Range request, the answer
    checked: 206 with the Content-Range asked for and the full length; a server without Range support
    answering the whole file is fine for a range at 0. Raises FetchError (retriable unless it cannot help)."""
    r = await transport.get(url, {"Range": f"bytes={start}-{end - 1}"})
    if r.status == 200 and start == 0 and size is not None and len(r.body) == size:
        return r.body[:end]
    if r.status != 206:
        raise FetchError(f"HTTP {r.status} (expected 206 Partial Content)",
                         retriable=r.status not in (404, 410, 403, 401, 416))
    cr = r.headers.get("content-range", "")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr.strip())
    if not m or int(m.group(1)) != start or int(m.group(2)) != end - 1:
        raise FetchError(f"wrong Content-Range {cr!r} (asked for bytes {start}-{end - 1})")
    if size is not None and m.group(3) != "*" and int(m.group(3)) != size:
        raise FetchError(f"Content-Range says the file has {m.group(3)} bytes, the manifest {size} "
                         "(the file changed: re-run `gpuport pack-model`)", retriable=False)
    if len(r.body) != end - start:
        raise FetchError(f"short body: {len(r.body)} of {end - start} bytes")
    return r.body


class UrllibTransport(Transport):
    """Native HTTP(S): urllib in a worker thread (bounded by the loader's semaphore)."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    def _get(self, url: str, headers: Mapping[str, str]) -> Response:
        req = urllib.request.Request(url, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                body = r.read()
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, body, url)
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except Exception:
                body = b""
            return Response(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, body, url)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"connection failed: {type(exc).__name__}: {reason}") from None

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        return await asyncio.to_thread(self._get, url, headers or {})


class FileTransport(Transport):
    """A local directory: the same loader code reads files, Range emulated (206 + Content-Range)."""

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        path = url[len("file://"):] if url.startswith("file://") else url
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                rng = (headers or {}).get("Range") or (headers or {}).get("range")
                if not rng:
                    return Response(200, {"content-length": str(size)}, f.read(), url)
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng.strip())
                if not m:
                    return Response(400, {}, b"", url)
                start, end = int(m.group(1)), min(int(m.group(2)), size - 1)
                if start >= size:
                    return Response(416, {"content-range": f"bytes */{size}"}, b"", url)
                f.seek(start)
                body = f.read(end - start + 1)
                return Response(206, {"content-range": f"bytes {start}-{end}/{size}",
                                      "content-length": str(len(body))}, body, url)
        except FileNotFoundError:
            return Response(404, {}, b"", url)
        except OSError as exc:
            raise TransportError(f"{path}: {exc}") from None
