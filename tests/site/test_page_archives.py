"""Page archives (gpuport/site/page_archives.py) and their installer (web/wheels.js): a zip of stored entries in one gzip
stream, the same bytes every time and named by content; wheels.js, under Node, reads one, refuses what it cannot
read or what fails its sha256, and installs NumPy from one so that Pyodide imports it as if loadPackage had."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest
from gpuport.site.distribution import (
    GPUPORT_ARCHIVE,
    build_wheel,
    default_dest,
    numpy_archive,
)
from gpuport.site.page_archives import archive_bytes, wheel_archive, write_archive

REPO = Path(__file__).resolve().parents[2]
PYODIDE = default_dest(REPO)
WHEELS = (REPO / "web" / "wheels.js").as_uri()
FILES = {"pkg/__init__.py": b"x = 1\n", "pkg/data/a.bin": bytes(range(256)) * 3, "pkg-1.0.dist-info/METADATA": b"Name: pkg\n"}


def _node(script: str, *args: str) -> dict:
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    run = subprocess.run([node, "--no-warnings", "--input-type=module", "-e", script, *args], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_an_archive_is_a_gzipped_zip_of_stored_entries_the_same_every_time(tmp_path):
    data = archive_bytes(FILES)
    assert data == archive_bytes(dict(reversed(FILES.items())))
    with zipfile.ZipFile(io.BytesIO(gzip.decompress(data))) as zf:
        assert zf.namelist() == sorted(FILES)
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert {n: zf.read(n) for n in zf.namelist()} == FILES
    path, digest = write_archive(FILES, tmp_path, "pkg-{}.zip.gz")
    assert path.name == f"pkg-{digest[:16]}.zip.gz" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    newer, _ = write_archive({**FILES, "pkg/b.py": b""}, tmp_path, "pkg-{}.zip.gz")
    assert newer != path and list(tmp_path.glob("pkg-*")) == [newer]   # the older one is removed


def test_a_wheel_keeps_every_entry(tmp_path):
    wheel = build_wheel(REPO, tmp_path / "wheel")
    path, _ = wheel_archive(wheel, tmp_path, GPUPORT_ARCHIVE)
    with zipfile.ZipFile(wheel) as original, zipfile.ZipFile(io.BytesIO(gzip.decompress(path.read_bytes()))) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {n: original.read(n) for n in original.namelist()}


READ = """
import { readFileSync } from "node:fs";
import { storedEntries } from "%s";
const out = {};
for (const file of process.argv.slice(1)) {
  try {
    const files = storedEntries(new Uint8Array(readFileSync(file)));
    out[file] = Object.fromEntries(Object.entries(files).map(([n, b]) => [n, Buffer.from(b).toString("hex")]));
  } catch (e) {
    out[file] = e.message;
  }
}
process.stdout.write(JSON.stringify(out) + "\\n");
""" % WHEELS


def test_wheels_js_reads_stored_entries_and_refuses_the_rest(tmp_path):
    stored = tmp_path / "stored.zip"
    stored.write_bytes(gzip.decompress(archive_bytes(FILES)))
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", b"x = 1\n" * 50)
    truncated = tmp_path / "truncated.zip"
    data = stored.read_bytes()
    truncated.write_bytes(data[:40] + data[-(len(data) - 60):])   # a file's bytes cut out: offsets point past them
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip at all" * 10)
    got = _node(READ, str(stored), str(deflated), str(truncated), str(garbage))
    assert got[str(stored)] == {n: b.hex() for n, b in FILES.items()}
    assert got[str(deflated)] == "pkg/__init__.py: deflated, not stored"
    assert isinstance(got[str(truncated)], str), got[str(truncated)]
    assert got[str(garbage)] == "not a zip archive (no end of central directory)"


INSTALL = """
import { pathToFileURL } from "node:url";
import { fetchArchive, install } from "%s";
const [pyodideDir, url, sha256, fileName, libraries, compile] = process.argv.slice(1);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const bad = await fetchArchive({ url, sha256: "0".repeat(64) });
const missing = await fetchArchive({ url: url + ".nothing", sha256 });
const { files, modules, problem } = await fetchArchive({ url, sha256 }, JSON.parse(compile));
if (!files) throw new Error(problem);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/` });
const count = await install(pyodide, files, { fileName, name: "numpy", channel: "default channel", source: "pyodide",
                                             libraries: JSON.parse(libraries), modules });
const libs = () => Object.keys(pyodide._module.LDSO.loadedLibsByName).filter((p) => p.includes("/numpy/")).sort();
const atInstall = libs();
const out = JSON.parse(pyodide.runPython(`
import importlib.metadata as md, json, numpy as np
d = md.distribution("numpy")
json.dumps({"sum": int(np.arange(10).sum()), "solve": np.linalg.solve([[2.0, 0.0], [0.0, 4.0]], [2.0, 8.0]).tolist(),
            "version": d.version, "installer": d.read_text("INSTALLER"), "source": d.read_text("PYODIDE_SOURCE")})
`));
const afterImport = libs();
const later = pyodide.runPython(`
import numpy as np
[float(np.random.default_rng(0).random()) < 1.0, float(np.fft.fft([1.0, 1.0]).real[0])]
`).toJs();
// the file system owns the archive's bytes (no copy): a file changed in place or grown changes only itself
const names = Object.keys(files).filter((p) => p.endsWith(".py")).sort().slice(0, 3);
const before = names.map((p) => Buffer.from(files[p]).toString("hex"));
const owned = JSON.parse(pyodide.runPython(`
import json, site
root = site.getsitepackages()[0]
names = ${JSON.stringify(names)}
with open(f"{root}/{names[1]}", "r+b") as f:
    f.write(b"# changed")
with open(f"{root}/{names[1]}", "ab") as f:
    f.write(b"# grown")
json.dumps([open(f"{root}/{n}", "rb").read().hex() for n in names])
`));
process.stdout.write(JSON.stringify({ ...out, bad: bad.problem, missing: missing.problem, count, atInstall, afterImport,
                                      later, end: libs().length, loaded: pyodide.loadedPackages.numpy,
                                      owned, before }) + "\\n");
""" % WHEELS


@pytest.fixture
def served(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


@pytest.mark.parametrize("lazy", [False, True], ids=["all-at-install", "import-libraries-at-install"])
def test_numpy_installed_from_its_archive_imports_as_if_loadpackage_had(served, lazy):
    folder, url = served
    path, digest, file_name, libraries = numpy_archive(PYODIDE, folder)
    assert file_name.startswith("numpy-") and file_name.endswith(".whl")
    # the import libraries compiled as the archive is inflated (as host.js asks, either way), then only linked
    got = _node(INSTALL, str(PYODIDE), url + path.name, digest, file_name, json.dumps(libraries if lazy else None),
                json.dumps(libraries))
    assert got["sum"] == 45 and got["solve"] == [1.0, 2.0], got   # numpy.linalg: a shared library of its own
    assert (got["version"], got["installer"], got["source"], got["loaded"]) == \
        ("2.0.2", "pyodide.loadPackage", "pyodide", "default channel"), got
    # a worker's install (lazy) loads exactly what `import numpy` needs (NUMPY_IMPORT_LIBRARIES): the import loads
    # none more; random and fft load theirs when imported
    assert got["afterImport"] == got["atInstall"], got
    assert got["later"] == [True, 2.0], got
    # files read back as the archive has them; one changed in place and grown is that and only that
    first, changed, third = (bytes.fromhex(h) for h in got["owned"])
    was = [bytes.fromhex(h) for h in got["before"]]
    assert (first, third) == (was[0], was[2])
    assert changed == b"# changed" + was[1][len(b"# changed"):] + b"# grown"
    if lazy:
        assert got["count"] == {"loaded": 3, "of": 19, "early": 3, "handles": []} and len(got["atInstall"]) == 3, got
        assert [p.split("/site-packages/")[1] for p in got["atInstall"]] == libraries, got
        assert got["end"] > 3, got
    else:
        assert got["count"] == {"loaded": 19, "of": 19, "early": 3, "handles": []} and len(got["atInstall"]) == got["end"] == 19, got
    assert got["bad"].endswith("its sha256 is " + digest[:12] + "..., not 000000000000..."), got["bad"]
    assert got["missing"].startswith("HTTP 404 for "), got["missing"]
