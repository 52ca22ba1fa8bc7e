"""The site's Pyodide memory snapshot: the page's interpreter with the modules web/snapshot.js preloads, made
under Node (pyodide_snapshot.mjs) by the dev server and `gpuport export`, listed in wheels/latest.json and booted
from on a page's first visit (web/snapshot.js). Without it a first visit initialises the interpreter, 1.5-2 s of
its Pyodide stage here; a browser restores the same snapshot Node made (its memory holds nothing of Node's).

Made with NumPy's and gpuport's page archives, it holds both imported (a warm visit's `import gpuport` was 130-270 ms
of its open stage in the page, 60 ms under Node): a page links NumPy's libraries back and, when its gpuport archive is
the one the snapshot was made with, finds gpuport imported (web/host.js); the snapshot is then made once per build of
the wheel (~6 s under Node).

The file leaves out the snapshot's pages of zeros (MAGIC below). A snapshot is Pyodide's build's (its restore
checks the build id) and PRELOAD's, so it is made once per distinct Pyodide, web/snapshot.js and script (kept in
the cache by their hash) and named by its content (`pyodide-snapshot-<sha256[:16]>.bin`), which lets a server send
it as immutable. Where Node or the vendored
Pyodide is missing, SnapshotUnavailable says why and pages make their own (stored in IndexedDB) as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from .distribution import sha256_file

SCRIPT = Path(__file__).resolve().with_name("pyodide_snapshot.mjs")
SNAPSHOT = "pyodide-snapshot-{}.bin"
# The file a page fetches leaves out the snapshot's pages of zeros (a third of its 25 MB: the heap's free space):
# MAGIC, the snapshot's size, the page size and the number of pages (uint32, little-endian), a bit per page (1: it
# follows), then those pages in order. web/snapshot.js expands it into zeroed memory.
MAGIC = b"GPSNAP01"
PAGE = 1 << 16
KEPT = 4
# what the snapshot is made from: the interpreter's build and standard library, and what it preloads
_PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip")


class SnapshotUnavailable(Exception):
    """No snapshot could be made here (no Node, no vendored Pyodide, or making it failed): the reason."""


def snapshot_key(pyodide: Path, snapshot_js: Path, numpy: dict | None = None) -> str:
    digest = hashlib.sha256(MAGIC)
    web = snapshot_js.parent
    for path in [pyodide / name for name in _PYODIDE_FILES] + [snapshot_js, web / "wheels.js", SCRIPT]:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    if numpy is not None:   # what NumPy's import in it is made from, and gpuport's
        for name in ("archive", "bytecode", "gpuport"):
            if numpy.get(name):
                digest.update(name.encode() + b"\0" + sha256_file(Path(numpy[name])).encode())
        digest.update(json.dumps([numpy["file_name"], numpy["libraries"]]).encode())
    return digest.hexdigest()[:32]


def without_zero_pages(raw: bytes) -> bytes:
    """`raw` in the file format above."""
    pages = [raw[i:i + PAGE] for i in range(0, len(raw), PAGE)]
    kept = [any(page) for page in pages]
    bitmap = bytearray((len(pages) + 7) // 8)
    for i, keep in enumerate(kept):
        bitmap[i // 8] |= keep << (i % 8)
    return b"".join([MAGIC, struct.pack("<III", len(raw), PAGE, len(pages)), bytes(bitmap),
                     *(page for page, keep in zip(pages, kept) if keep)])


def site_snapshot(pyodide: Path, web: Path, cache: Path, out_dir: Path,
                  numpy: dict | None = None) -> tuple[Path, str, int, dict | None]:
    """The snapshot for `pyodide` and `web`'s snapshot.js in `out_dir` (older ones there removed), made once per
    key in `cache`; with `numpy` ({"archive": its page archive, "bytecode": its bytecode archive or None, "file_name":
    the wheel's, "libraries": those `import numpy` loads, optionally "gpuport": gpuport's page archive}) NumPy is
    imported in it, and then gpuport. Returns (path, sha256 of the file, the snapshot's size, what a page needs to
    link NumPy's libraries back (web/snapshot.js linkNumpy; with "gpuport": {"modules": how many of gpuport's are
    imported} beside it), or None without `numpy`). SnapshotUnavailable with the reason."""
    node = shutil.which("node")
    if node is None:
        raise SnapshotUnavailable("node is not on PATH")
    if not all((pyodide / name).is_file() for name in _PYODIDE_FILES):
        raise SnapshotUnavailable(f"no vendored Pyodide in {pyodide} (`gpuport pyodide` makes it)")
    for name in ("snapshot.js", "wheels.js"):
        if not (web / name).is_file():
            raise SnapshotUnavailable(f"no {name} in {web}")
    key = snapshot_key(pyodide, web / "snapshot.js", numpy)
    # the snapshot and its NumPy record go together: one folder per key, renamed into place whole (a concurrent server
    # that made an equivalent one first wins), so that a record never describes another run's snapshot
    entry = cache / key
    made, record = entry / "snapshot.bin", entry / "numpy.json"
    if not entry.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=cache))
        try:
            args = [json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in numpy.items()})] if numpy else []
            run = subprocess.run([node, "--no-warnings", str(SCRIPT), str(pyodide), str(web / "snapshot.js"),
                                  str(tmp / "snapshot.bin"), *args], capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                raise SnapshotUnavailable(f"making it with Pyodide under Node failed: {run.stderr.strip()[-1500:]}")
            said = json.loads(run.stdout.strip().splitlines()[-1])
            raw = (tmp / "snapshot.bin").read_bytes()
            if said["bytes"] != len(raw):
                raise SnapshotUnavailable(f"Node reported {said['bytes']} bytes and wrote {len(raw)}")
            (tmp / "snapshot.bin").write_bytes(without_zero_pages(raw))
            imported = said["numpy"] and {**said["numpy"], **({"gpuport": said["gpuport"]} if said["gpuport"] else {})}
            (tmp / "numpy.json").write_text(json.dumps(imported), encoding="utf-8")
            try:
                os.rename(tmp, entry)
            except OSError:
                if not entry.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    digest = sha256_file(made)
    final = out_dir / SNAPSHOT.format(digest[:16])
    if not final.is_file():
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=out_dir)
        os.close(fd)
        shutil.copyfile(made, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    for old in out_dir.glob(SNAPSHOT.format("*")):
        if old != final:
            old.unlink()
    with open(final, "rb") as f:
        size = struct.unpack("<I", f.read(len(MAGIC) + 4)[len(MAGIC):])[0]
    imported = json.loads(record.read_text(encoding="utf-8"))
    os.utime(entry)   # its last use, which _prune goes by
    _prune(cache, entry)
    return final, digest, size, imported


def _prune(cache: Path, entry: Path) -> None:
    """The cache keeps the KEPT snapshots used last (one is made per build of the wheel, ~24 MB each)."""
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEPT:]:
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)
