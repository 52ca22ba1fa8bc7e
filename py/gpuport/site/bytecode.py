"""The page's bytecode: Python sources compiled by Pyodide's own CPython (under Node, py/gpuport/bytecode.mjs)
into checked-hash .pyc files, for the gpuport wheel a page installs.

A page compiles every module it imports on every visit (Pyodide's file system lives in memory): `import
gpuport` spent 576 of its ~990 ms in compile() in Chromium. Checked-hash .pyc files are read instead; Python
hashes each source against its .pyc, so a stale one is never used. The bytecode is Pyodide's CPython 3.12's,
which no native CPython here can write, hence Node. Results are cached by the sources' hash; where Node or
the vendored Pyodide is missing, the wheel goes without (the page compiles, as before) and `compile_sources`
says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("bytecode.mjs")


class BytecodeUnavailable(Exception):
    """No bytecode could be made here (no Node, no vendored Pyodide, or the compile failed): the reason."""


def sources_key(sources: dict[str, bytes], pyodide_version: str) -> str:
    digest = hashlib.sha256(pyodide_version.encode())
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    return digest.hexdigest()[:32]


def compile_sources(sources: dict[str, bytes], pyodide: Path, cache: Path, pyodide_version: str) -> dict[str, bytes]:
    """{archive name of a .pyc: its bytes} for `sources` ({archive name of a .py: its bytes}), compiled once
    per distinct set of sources (kept in `cache`); BytecodeUnavailable with the reason."""
    node = shutil.which("node")
    if node is None:
        raise BytecodeUnavailable("node is not on PATH")
    if not (pyodide / "pyodide.mjs").is_file():
        raise BytecodeUnavailable(f"no vendored Pyodide in {pyodide} (`gpuport pyodide` makes it)")
    done = cache / sources_key(sources, pyodide_version)
    if not done.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".bytecode-", dir=cache))
        try:
            for name, data in sources.items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_bytes(data)
            run = subprocess.run([node, str(SCRIPT), str(pyodide), str(work)], capture_output=True, text=True,
                                 timeout=300)
            if run.returncode != 0:
                raise BytecodeUnavailable(f"compiling with Pyodide under Node failed: {run.stderr.strip()[-1500:]}")
            for name in sources:
                (work / name).unlink()
            compiled = json.loads(run.stdout.strip().splitlines()[-1])["compiled"]
            if compiled != len(sources):
                raise BytecodeUnavailable(f"{compiled} .pyc files for {len(sources)} sources")
            try:
                os.replace(work, done)   # atomic: a concurrent build of the same sources made the same files
            except OSError:
                if not done.is_dir():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {p.relative_to(done).as_posix(): p.read_bytes() for p in sorted(done.rglob("*.pyc"))}
