"""The archives a page installs from JS (web/wheels.js): a zip whose entries are stored, not deflated, inside one
gzip stream. The browser inflates the whole of it natively in one pass (DecompressionStream) and the page writes each
entry straight into Pyodide's file system. A wheel's deflated entries cost a page either Python's zipfile (Pyodide's
loadPackage) or one DecompressionStream per entry: both 0.2-0.6 s for NumPy and gpuport here. Each archive is written
the same way every time and named by its content, so a server sends it as immutable.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path


def archive_bytes(files: dict[str, bytes]) -> bytes:
    """`files` (archive name -> bytes) as gzip(stored zip), in name order with a fixed date: the same bytes every time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), files[name], zipfile.ZIP_STORED)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def write_archive(files: dict[str, bytes], out_dir: Path, pattern: str) -> tuple[Path, str]:
    """`files` as an archive in `out_dir` named `pattern.format(<sha256[:16]>)`, written atomically; older ones
    matching `pattern` are removed. Returns (path, sha256)."""
    data = archive_bytes(files)
    digest = hashlib.sha256(data).hexdigest()
    final = out_dir / pattern.format(digest[:16])
    if not final.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".archive-", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    for old in out_dir.glob(pattern.format("*")):
        if old != final:
            old.unlink()
    return final, digest


def wheel_archive(wheel: Path, out_dir: Path, pattern: str) -> tuple[Path, str]:
    """The entries of `wheel` as an archive (see write_archive)."""
    with zipfile.ZipFile(wheel) as zf:
        return write_archive({n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}, out_dir, pattern)
