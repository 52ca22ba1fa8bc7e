"""Small persistent records (pipeline manifests, selector history): JSON files natively, IndexedDB in a page.

Both stores speak text and fail soft: storage that cannot be read or written (read-only home, full disk,
private browsing) only loses the optimisation the record was for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .platform import IN_PYODIDE


class RecordStore(Protocol):
    """Where records of one kind persist, keyed by scope."""

    async def load(self, scope: str) -> str | None: ...

    def save_soon(self, scope: str, text: str) -> None: ...


def cache_dir() -> Path:
    """Where native runs keep records: $GPUPORT_CACHE, else $XDG_CACHE_HOME/gpuport, else ~/.cache/gpuport."""
    if os.environ.get("GPUPORT_CACHE"):
        return Path(os.environ["GPUPORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuport"


class FileStore:
    """Records as JSON files, written atomically (native)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cache_dir() / "pipelines"

    def _path(self, scope: str) -> Path:
        return self.directory / f"{scope}.json"

    async def load(self, scope: str) -> str | None:
        try:
            return self._path(scope).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def save_soon(self, scope: str, text: str) -> None:
        """Write now (a small file); a failure (read-only home, full disk) only loses the optimisation."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self._path(scope).with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self._path(scope))
        except OSError:
            pass


# What each kind of record is called on disk (a folder under cache_dir()) and in IndexedDB (store, key prefix).
_STORES = {"pipelines": ("manifests", ""), "selector": ("meta", "selector:")}


def store_for(kind: str) -> RecordStore:
    """Where records of `kind` persist: JSON files natively, IndexedDB in a page."""
    if IN_PYODIDE:
        from .backends.pageio import IndexedDBStore   # page-only: imports js
        return IndexedDBStore(*_STORES[kind])
    return FileStore(cache_dir() / kind)
