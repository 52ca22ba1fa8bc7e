"""Small persistent records (pipeline manifests, selector history): JSON files natively, IndexedDB in a page.

Both stores speak text and fail soft: storage that cannot be read or written (read-only home, full disk,
private browsing) only loses the optimisation the record was for. What a store hands back is never
trusted: its reader checks it with records.py, and a record that fails is ignored, reported and rewritten.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..backends.io import RecordStore
from ..formats.records import MAX_RECORD_BYTES, STORE_PLACES, cache_dir
from ..platform import IN_PYODIDE


class FileStore:
    """Records as JSON files, written atomically (native)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cache_dir() / "pipelines"

    def _path(self, scope: str) -> Path:
        return self.directory / f"{scope}.json"

    async def load(self, scope: str) -> str | None:
        """The record's text. At most MAX_RECORD_BYTES + 1 bytes are read (parse_json refuses a longer one);
        bytes that are not UTF-8 become U+FFFD, which parse_json refuses too (gpuport writes ASCII)."""
        path = self._path(scope)
        try:
            if not stat.S_ISREG(path.stat().st_mode):   # not a record (a FIFO would block the open forever)
                return None
            with path.open("rb") as f:
                return f.read(MAX_RECORD_BYTES + 1).decode("utf-8", errors="replace")
        except OSError:
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


def store_for(kind: str) -> RecordStore:
    """Where records of `kind` persist: JSON files natively, IndexedDB in a page."""
    if IN_PYODIDE:
        from ..backends.pageio import IndexedDBStore  # page-only: imports js
        return IndexedDBStore(*STORE_PLACES[kind])
    return FileStore(cache_dir() / kind)
