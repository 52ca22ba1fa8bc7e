"""The page's bytecode (gpuport/site/bytecode.py): the wheel a page installs carries a checked-hash .pyc of every
module, compiled by Pyodide's own CPython; Pyodide imports gpuport from them without compiling, and still
compiles a module whose source changed; NumPy imports from its own bytecode archive. Without Node or a vendored
Pyodide the wheel goes without, saying why."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from gpuport.site import bytecode
from gpuport.site.distribution import (
    PYODIDE_VERSION,
    build_wheel,
    default_dest,
    numpy_bytecode,
)

REPO = Path(__file__).resolve().parents[2]
PYODIDE = default_dest(REPO)

# Python run in Pyodide that counts the sources importlib has to compile from here on.
COUNTING = """import importlib._bootstrap_external as ext, json, sys
sys.dont_write_bytecode = True
compiled = []
original = ext.SourceLoader.source_to_code
def counting(self, data, path, **kw):
    compiled.append(path)
    return original(self, data, path, **kw)
ext.SourceLoader.source_to_code = counting
"""

# Pyodide under Node loads NumPy, unpacks NumPy's bytecode archive over it as start() does (where one is given),
# imports NumPy and gpuport (from an unpacked wheel) and counts the sources importlib had to compile.
IMPORT = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [pyodideDir, siteDir, archive] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/` });
await pyodide.loadPackage("numpy", { messageCallback: () => {} });
const site = pyodide.runPython("import site\\nsite.getsitepackages()[0]");
if (archive) pyodide.unpackArchive(new Uint8Array(readFileSync(archive)), "zip", { extractDir: site });
pyodide.mountNodeFS("/site", siteDir);
const out = pyodide.runPython(`
""" + COUNTING + """
sys.path.insert(0, "/site")
import numpy
import gpuport, gpuport.runtime, gpuport.models.minilm
json.dumps({"compiled": sorted(compiled),
            "loaded": sorted(m for m in sys.modules if m.startswith(("gpuport", "numpy")))})
`);
process.stdout.write(out + "\\n");
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


def test_every_module_has_checked_hash_bytecode_listed_in_record(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = {line.split(",")[0]: line.split(",")[1:] for line in
                  zf.read("gpuport-0.1.0.dist-info/RECORD").decode().splitlines()}
        sources = sorted(n for n in names if n.endswith(".py"))
        assert len(sources) > 60
        for source in sources:
            folder, stem = source.rsplit("/", 1)
            pyc = f"{folder}/__pycache__/{stem[:-3]}.cpython-312.pyc"
            data = zf.read(pyc)
            assert int.from_bytes(data[4:8], "little") == 0b11, pyc   # hash-based, checked against the source
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert record[pyc] == [f"sha256={digest}", str(len(data))]
        assert len([n for n in names if n.endswith(".pyc")]) == len(sources)


@pytest.fixture(scope="module")
def numpy_archive(tmp_path_factory) -> tuple[Path, str, Path]:
    """NumPy's bytecode archive (made once here), its digest and the folder it was written to."""
    out = tmp_path_factory.mktemp("numpy-bytecode")
    archive, digest = numpy_bytecode(PYODIDE, out / "cache", out)
    return archive, digest, out


def test_pyodide_imports_numpy_and_gpuport_without_compiling_and_recompiles_a_changed_source(wheel, numpy_archive,
                                                                                              tmp_path):
    """Two Pyodide boots: the wheel as built, without NumPy's archive (NumPy compiles, as every visit did before);
    then with the archive and one of gpuport's sources changed after the build (only that source compiles)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    stored = tmp_path / "bytecode.zip"   # a page archive (page_archives.py): a zip of stored entries, gzipped
    stored.write_bytes(gzip.decompress(numpy_archive[0].read_bytes()))
    script = tmp_path / "import.mjs"
    script.write_text(IMPORT)

    def imported(*archive: str) -> dict:
        run = subprocess.run(["node", str(script), str(PYODIDE), str(site), *archive], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(run.stdout.strip().splitlines()[-1])

    without = imported()
    assert "gpuport.runtime" in without["loaded"] and len(without["compiled"]) > 50, without["compiled"][:5]
    assert all("/site-packages/numpy/" in p for p in without["compiled"]), without["compiled"]   # NumPy only
    runtime = site / "gpuport" / "runtime.py"
    runtime.write_text(runtime.read_text() + "\n# changed after the build\n")
    changed = imported(str(stored))
    assert changed["compiled"] == ["/site/gpuport/runtime.py"] and changed["loaded"] == without["loaded"], changed


def test_without_node_or_pyodide_no_bytecode_and_the_reason(monkeypatch, tmp_path):
    sources = {"pkg/__init__.py": b"x = 1\n"}
    with pytest.raises(bytecode.BytecodeUnavailable, match="no vendored Pyodide in"):
        bytecode.compile_sources(sources, tmp_path / "nowhere", tmp_path / "cache", PYODIDE_VERSION)
    monkeypatch.setattr(bytecode.shutil, "which", lambda name: None)
    with pytest.raises(bytecode.BytecodeUnavailable, match="node is not on PATH"):
        bytecode.compile_sources(sources, PYODIDE, tmp_path / "cache", PYODIDE_VERSION)


def test_bytecode_is_cached_by_the_sources(tmp_path):
    one, two = {"p/__init__.py": b"a = 1\n"}, {"p/__init__.py": b"a = 2\n"}
    first = bytecode.compile_sources(one, PYODIDE, tmp_path, PYODIDE_VERSION)
    assert list(first) == ["p/__pycache__/__init__.cpython-312.pyc"]
    assert bytecode.compile_sources(one, PYODIDE, tmp_path, PYODIDE_VERSION) == first
    assert bytecode.compile_sources(two, PYODIDE, tmp_path, PYODIDE_VERSION) != first
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2
    assert bytecode.sources_key(one, PYODIDE_VERSION) != bytecode.sources_key(one, "0.28.0")


def test_numpy_bytecode_is_named_by_its_content_and_holds_checked_pyc_of_what_numpy_imports(numpy_archive, tmp_path):
    archive, digest, out = numpy_archive
    assert archive.name == f"numpy-bytecode-{digest[:16]}.zip.gz"
    again, digest_again = numpy_bytecode(PYODIDE, out / "cache", out)   # same bytes, same name
    assert (again, digest_again) == (archive, digest) and list(out.glob("numpy-bytecode-*")) == [archive]
    stored = tmp_path / "bytecode.zip"
    stored.write_bytes(gzip.decompress(archive.read_bytes()))
    with zipfile.ZipFile(stored) as zf:
        names = zf.namelist()
        assert all(n.startswith("numpy/") and "/__pycache__/" in n and n.endswith(".cpython-312.pyc") for n in names)
        assert not [n for n in names if n.startswith(("numpy/f2py/", "numpy/testing/"))]
        assert all(int.from_bytes(zf.read(n)[4:8], "little") == 0b11 for n in names)   # checked against the source
