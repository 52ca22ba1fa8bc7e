"""What wheels/latest.json lists for a page beside the gpuport wheel, made from the vendored Pyodide by the dev server
and `gpuport export` alike; each entry is {"url", "sha256"}, named by its content, checked by the page before use:

    "numpy"            NumPy's wheel as a page archive (page_archives.py; plus its "file_name" and the shared
                       "libraries" its import loads)                                          written from JS
    "gpuport_archive"  the gpuport wheel as a page archive                                     written from JS
    "numpy_bytecode"   NumPy's modules compiled for the page's CPython (distribution.numpy_bytecode)
    "snapshot"         the interpreter a first visit boots from (pyodide_snapshot.py; plus its size once expanded,
                       "bytes", and, as it holds NumPy and gpuport imported, "numpy": the archive's sha256 and what a
                       page needs to link NumPy's libraries back: web/snapshot.js linkNumpy; "gpuport": the sha256 of
                       the gpuport archive imported and how many modules)

What cannot be made here is left out and said why (`notes`); the page then does without: Pyodide's loadPackage,
compiling NumPy's modules, booting the interpreter and making its own snapshot.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LoadError
from .bytecode import BytecodeUnavailable
from .distribution import GPUPORT_ARCHIVE, numpy_archive, numpy_bytecode
from .page_archives import wheel_archive
from .pyodide_snapshot import SnapshotUnavailable, site_snapshot


def site_files(pyodide: Path, wheel: Path, web: Path, cache: Path, prefix: str = "") -> tuple[dict, list[str]]:
    """({key: entry}, notes) for files written beside `wheel` (their URLs: `prefix` + file name); `cache` is the
    data home (bytecode/ and snapshot/ under it)."""
    out_dir = wheel.parent
    entries: dict = {}
    notes: list[str] = []
    numpy = None   # what the snapshot imports NumPy from
    try:
        made, digest, file_name, libraries = numpy_archive(pyodide, out_dir)
        entries["numpy"] = {"url": prefix + made.name, "sha256": digest, "file_name": file_name, "libraries": libraries}
        numpy = {"archive": made, "bytecode": None, "file_name": file_name, "libraries": libraries}
        made, digest = wheel_archive(wheel, out_dir, GPUPORT_ARCHIVE)
        entries["gpuport_archive"] = {"url": prefix + made.name, "sha256": digest}
        numpy["gpuport"] = made
    except LoadError as exc:
        notes.append(f"NumPy and gpuport install with Pyodide's loadPackage: {exc}")
    try:
        made, digest = numpy_bytecode(pyodide, cache / "bytecode", out_dir)
        entries["numpy_bytecode"] = {"url": prefix + made.name, "sha256": digest}
        if numpy:
            numpy["bytecode"] = made
    except BytecodeUnavailable as exc:
        notes.append(f"no NumPy bytecode (pages compile NumPy's modules): {exc}")
    try:
        made, digest, size, linked = site_snapshot(pyodide, web, cache / "snapshot", out_dir, numpy)
        entries["snapshot"] = {"url": prefix + made.name, "sha256": digest, "bytes": size}
        if linked:
            gpuport = linked.pop("gpuport", None)
            entries["snapshot"]["numpy"] = {"archive_sha256": entries["numpy"]["sha256"], **linked}
            if gpuport:
                entries["snapshot"]["gpuport"] = {"archive_sha256": entries["gpuport_archive"]["sha256"], **gpuport}
    except SnapshotUnavailable as exc:
        notes.append(f"no Pyodide snapshot (pages make their own): {exc}")
    return entries, notes
