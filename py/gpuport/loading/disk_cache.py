"""The native twin of the page's IndexedDB chunk cache: verified model chunks as files under the gpuport
cache directory, so a second native load of a model served over HTTP reads no model bytes from the network.

    <cache_dir()>/chunks/<file sha256>/<chunk index>   one verified chunk (ModelChunks' "<sha>:<i>")
    <cache_dir()>/chunks/file/<sha256>                 a small file by content ("file:<sha>")
    <cache_dir()>/chunks/meta/<sha256 of the key>      {"key": ..., "value": ...} ("model:<url>" -> file sha)

Every write goes to a temporary file beside its target and is renamed over it, so a process killed mid-write
leaves a `.tmp` file that is never read (and is swept later), never a half chunk under a chunk's name. What
is read back is not trusted either: ModelChunks checks every chunk against the manifest's sha256, so a file
damaged on disk (or torn by a power cut: writes are not fsync'ed, the check makes that unnecessary) is
dropped and refetched. A new manifest for a URL removes the older file's chunks (ModelChunks.prepare).
`estimate()` reports free disk space, less a reserve, so a model that does not fit is kept in memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..backends.io import ChunkCache, QuotaExceeded
from ..formats.records import cache_dir

DEFAULT_RESERVE_BYTES = 256 << 20   # never fill the disk to its last bytes for a cache
STALE_TMP_S = 3600.0                # a temporary file this old belongs to a process that died
_PART = re.compile(r"[0-9A-Za-z_-]{1,128}")


class DiskChunkCache(ChunkCache):
    """ChunkCache in files. directory: default `<cache_dir()>/chunks` (GPUPORT_CACHE, else XDG_CACHE_HOME/gpuport
    or ~/.cache/gpuport). reserve_bytes: disk space the cache leaves free (estimate() subtracts it)."""

    def __init__(self, directory: Path | str | None = None, reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir() / "chunks"
        self.reserve_bytes = int(reserve_bytes)

    def __repr__(self) -> str:
        return f"DiskChunkCache({str(self.directory)!r})"

    # -- where a key lives ---------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        """The file of key "<a>:<b>" (<directory>/<a>/<b>); ValueError for a key that is not two safe names."""
        a, sep, b = key.partition(":")
        if not sep or not _PART.fullmatch(a) or not _PART.fullmatch(b) or a == "meta":
            raise ValueError(f"chunk cache key {key!r}: expected '<name>:<name>' of letters, digits, '_' and '-'")
        return self.directory / a / b

    def _meta_path(self, key: str) -> Path:
        return self.directory / "meta" / hashlib.sha256(key.encode("utf-8")).hexdigest()

    # -- ChunkCache ----------------------------------------------------------------------------------
    async def estimate(self) -> dict | None:
        """{"usage": bytes this cache holds, "quota": usage + free disk space - reserve}."""
        probe = self.directory
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return None
        usage = sum(p.stat().st_size for p in self._files())
        return {"usage": usage, "quota": usage + max(0, free - self.reserve_bytes)}

    async def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    async def put(self, key: str, data: bytes, digest: str | None = None) -> None:
        """Atomically (temporary file, then rename); a full disk raises QuotaExceeded. Its records are hashed
        when read back (`digest` unused)."""
        self._write(self.path(key), bytes(data))

    async def remove(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        try:
            path.parent.rmdir()   # the last chunk of an old model takes its folder with it
        except OSError:
            pass

    async def keys(self) -> list[str]:
        return [f"{p.parent.name}:{p.name}" for p in self._files() if p.parent.name != "meta"]

    async def get_meta(self, key: str) -> str | None:
        try:
            record = json.loads(self._meta_path(key).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(record, dict) and record.get("key") == key and isinstance(record.get("value"), str):
            return record["value"]
        return None

    async def put_meta(self, key: str, value: str) -> None:
        self._write(self._meta_path(key), json.dumps({"key": key, "value": value}).encode("utf-8"))

    # -- files ---------------------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        """Every record file (two levels down), sweeping temporary files left by killed processes."""
        out: list[Path] = []
        try:
            folders = [d for d in self.directory.iterdir() if d.is_dir() and not d.name.startswith(".")]
        except OSError:
            return out
        now = time.time()
        for folder in folders:
            for p in folder.iterdir():
                if p.name.startswith("."):
                    if p.name.endswith(".tmp") and now - _mtime(p) > STALE_TMP_S:
                        _unlink(p)
                elif p.is_file():
                    out.append(p)
        return out

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as exc:
            _unlink(Path(tmp))
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise QuotaExceeded(f"{target.parent}: {exc.strerror}") from None
            raise


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return time.time()


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


__all__ = ["DEFAULT_RESERVE_BYTES", "DiskChunkCache"]
