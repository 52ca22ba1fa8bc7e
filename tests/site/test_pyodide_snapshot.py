"""The site's Pyodide snapshot (gpuport/site/pyodide_snapshot.py): made under Node with web/snapshot.js's PRELOAD, once
per Pyodide build and snapshot.js, named by its content; an interpreter restored from it has the preloaded modules
and nothing of the machine that made it; made with NumPy imported, its libraries link back (web/snapshot.js
linkNumpy) and NumPy computes as natively, or an interpreter that cannot take them is refused saying why; without
Node or a vendored Pyodide, the reason. The page's side (booted
from on a first visit, checked, dropped when bad) is e2e/test_page_snapshot.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gpuport.site import pyodide_snapshot
from gpuport.site.distribution import GPUPORT_ARCHIVE, default_dest, gpuport_wheel, numpy_archive, numpy_bytecode, sha256_file
from gpuport.site.page_archives import wheel_archive
from gpuport.site.pyodide_snapshot import (
    PAGE,
    SnapshotUnavailable,
    site_snapshot,
    snapshot_key,
    without_zero_pages,
)

REPO = Path(__file__).resolve().parents[2]
PYODIDE = default_dest(REPO)
WEB = REPO / "web"

# Pyodide under Node boots from a snapshot file and says what the interpreter holds.
RESTORE = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [pyodideDir, file, snapshotJs] = process.argv.slice(2);
const { expand } = await import(pathToFileURL(snapshotJs).href);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, _loadSnapshot: expand(new Uint8Array(readFileSync(file))) });
process.stdout.write(pyodide.runPython(`
import json, os, sys
json.dumps({"modules": sorted(sys.modules), "environ": dict(os.environ), "sum": sum(range(10))})
`) + "\\n");
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, str, Path, int]:
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("out")
    path, digest, size, linked = site_snapshot(PYODIDE, WEB, cache, out)
    assert linked is None
    return path, digest, cache, size


def test_named_by_its_content_and_made_once(made, tmp_path, monkeypatch):
    path, digest, cache, size = made
    assert path.name == f"pyodide-snapshot-{digest[:16]}.bin" and sha256_file(path) == digest
    assert size > 16 << 20   # the interpreter's whole memory,
    assert path.stat().st_size < size * 0.8   # less its pages of zeros
    (tmp_path / "pyodide-snapshot-0123456789abcdef.bin").write_bytes(b"an older one")

    def no_node(*args, **kwargs):
        raise AssertionError("made again")

    monkeypatch.setattr(pyodide_snapshot.subprocess, "run", no_node)
    again, digest_again, size_again, _ = site_snapshot(PYODIDE, WEB, cache, tmp_path)   # from the cache: same bytes
    assert (again.name, digest_again, size_again) == (path.name, digest, size)
    assert [p.name for p in tmp_path.glob("pyodide-snapshot-*.bin")] == [path.name]


def test_the_cache_keeps_the_snapshots_used_last(made, tmp_path, monkeypatch):
    """A snapshot is made per build of the wheel (it holds gpuport imported): the cache keeps the KEPT used last, the
    one just used among them whatever its age."""
    path, digest, cache, size = made
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    others = []
    for i in range(pyodide_snapshot.KEPT + 1):
        other = cache / f"other{i}"
        other.mkdir()
        os.utime(other, (1e9 + i, 1e9 + i))
        others.append(other)
    os.utime(entry, (1, 1))   # the oldest, until used again
    monkeypatch.setattr(pyodide_snapshot.subprocess, "run", lambda *a, **k: pytest.fail("made again"))
    site_snapshot(PYODIDE, WEB, cache, tmp_path)
    assert sorted(p.name for p in cache.iterdir()) == sorted([entry.name] + [o.name for o in others[1 - pyodide_snapshot.KEPT:]])


def test_the_key_follows_snapshot_js_and_pyodide(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    for name in ("snapshot.js", "wheels.js"):
        shutil.copy2(WEB / name, web / name)
    same = snapshot_key(PYODIDE, web / "snapshot.js")
    assert same == snapshot_key(PYODIDE, WEB / "snapshot.js")
    (web / "snapshot.js").write_text((WEB / "snapshot.js").read_text() + "\n// another PRELOAD\n")
    assert snapshot_key(PYODIDE, web / "snapshot.js") != same
    other = tmp_path / "pyodide"
    shutil.copytree(PYODIDE, other, ignore=shutil.ignore_patterns("*.whl"))
    with open(other / "python_stdlib.zip", "ab") as f:
        f.write(b"\0")
    assert snapshot_key(other, WEB / "snapshot.js") != same


def test_restores_with_the_preloaded_modules_and_nothing_of_its_maker(made, tmp_path):
    script = tmp_path / "restore.mjs"
    script.write_text(RESTORE)
    run = subprocess.run(["node", "--no-warnings", str(script), str(PYODIDE), str(made[0]), str(WEB / "snapshot.js")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["sum"] == 45
    preload = subprocess.run(["node", "--no-warnings", "--input-type=module", "-e",
                              f"import {{ PRELOAD }} from {json.dumps((WEB / 'snapshot.js').as_uri())};"
                              "process.stdout.write(PRELOAD)"], capture_output=True, text=True, timeout=60)
    wanted = [m.strip() for m in preload.stdout.removeprefix("import ").split(",")]
    assert len(wanted) > 30 and not set(wanted) - set(got["modules"]), set(wanted) - set(got["modules"])
    assert not [m for m in got["modules"] if m.startswith("numpy")]   # made without NumPy here (below: with it)
    assert got["environ"]["_"] == "./this.program", got["environ"]   # not the path of the script that made it
    assert str(REPO) not in json.dumps(got["environ"])


# Restored from the snapshot Node made (without JSPI), run_sync before and after snapshot.js's asBooted, as a page's
# boot (web/host.js) runs it.
RUN_SYNC = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [pyodideDir, file, snapshotJs] = process.argv.slice(2);
const { expand, asBooted } = await import(pathToFileURL(snapshotJs).href);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, _loadSnapshot: expand(new Uint8Array(readFileSync(file))) });
const attempt = `
import asyncio
from pyodide.ffi import can_run_sync, run_sync
async def seven():
    await asyncio.sleep(0.001)
    return 7
try:
    got = run_sync(seven()) if can_run_sync() else "cannot run sync"
except RuntimeError as e:
    got = str(e)
got`;
const out = { jspi: pyodide._module.jspiSupported, before: await pyodide.runPythonAsync(attempt) };
out.fixed = asBooted(pyodide);
out.after = await pyodide.runPythonAsync(attempt);
process.stdout.write(JSON.stringify(out) + "\\n");
"""


def _node_jspi_flag() -> str:
    """The flag that gives this Node WebAssembly JSPI (Node 20: the old API, which Pyodide 0.27 also drives)."""
    for flag in ("--experimental-wasm-jspi", "--experimental-wasm-stack-switching"):
        probe = subprocess.run(["node", flag, "-e", "process.exit('Suspending' in WebAssembly || "
                                "'Suspender' in WebAssembly ? 0 : 1)"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return flag
    pytest.fail("this Node has no flag that turns WebAssembly JSPI on (tried --experimental-wasm-jspi and "
                "--experimental-wasm-stack-switching)")


def test_run_sync_works_restored_where_the_engine_has_jspi(made, tmp_path):
    """Node has no JSPI where it makes the snapshot: Pyodide's run_sync raised in a page restored from it although
    can_run_sync() said yes, until the boot made it as the engine's own boot would (snapshot.js asBooted)."""
    script = tmp_path / "run_sync.mjs"
    script.write_text(RUN_SYNC)
    outcomes = {}
    for name, flags in (("jspi", [_node_jspi_flag()]), ("none", [])):
        run = subprocess.run(["node", "--no-warnings", *flags, str(script), str(PYODIDE), str(made[0]),
                              str(WEB / "snapshot.js")], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        outcomes[name] = json.loads(run.stdout.strip().splitlines()[-1])
    refused = "WebAssembly stack switching not supported in this JavaScript runtime"
    # Node 20 has no wasm-gc: its C calls go through the JS trampoline as the snapshot has them (the browsers' pick,
    # the wasm one, is e2e/test_page.py's to check)
    assert outcomes["jspi"] == {"jspi": True, "before": refused, "fixed": "C calls: as booted; run_sync: made as booted",
                                "after": 7}
    assert outcomes["none"] == {"jspi": False, "before": "cannot run sync",
                                "fixed": "C calls: as booted; run_sync: as booted", "after": "cannot run sync"}


def test_without_node_pyodide_or_snapshot_js_the_reason(monkeypatch, tmp_path):
    with pytest.raises(SnapshotUnavailable, match="no vendored Pyodide in"):
        site_snapshot(tmp_path / "nowhere", WEB, tmp_path / "cache", tmp_path)
    with pytest.raises(SnapshotUnavailable, match="no snapshot.js in"):
        site_snapshot(PYODIDE, tmp_path, tmp_path / "cache", tmp_path)
    monkeypatch.setattr(pyodide_snapshot.shutil, "which", lambda name: None)
    with pytest.raises(SnapshotUnavailable, match="node is not on PATH"):
        site_snapshot(PYODIDE, WEB, tmp_path / "cache", tmp_path)
    assert not list(tmp_path.glob("pyodide-snapshot-*"))


def test_a_failed_make_says_why_and_leaves_nothing(monkeypatch, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    for name in ("wheels.js", "idb.js"):
        shutil.copy2(WEB / name, web / name)
    (web / "snapshot.js").write_text('export const PRELOAD = "import no_such_module_here";\n')
    with pytest.raises(SnapshotUnavailable, match="no_such_module_here"):
        site_snapshot(PYODIDE, web, tmp_path / "cache", tmp_path)
    assert not list((tmp_path / "cache").iterdir()) and not list(tmp_path.glob("pyodide-snapshot-*"))


EXPAND = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [file, snapshotJs] = process.argv.slice(1);
const { expand } = await import(pathToFileURL(snapshotJs).href);
const bytes = new Uint8Array(readFileSync(file));
const tries = { whole: () => Buffer.from(expand(bytes)).toString("hex"),
                truncated: () => expand(bytes.subarray(0, bytes.length - 1)),
                longer: () => expand(new Uint8Array([...bytes, 7])),
                other: () => expand(new TextEncoder().encode("a snapshot of Pyodide's own")),
                small: () => expand(bytes, new Uint8Array(3)) };
const out = {};
for (const [name, run] of Object.entries(tries)) {
  try { out[name] = run(); } catch (e) { out[name] = `Error: ${e.message}`; }
}
process.stdout.write(JSON.stringify(out) + "\\n");
"""


def test_zero_pages_are_left_out_and_expanded_back(tmp_path):
    raw = bytearray(5 * PAGE + 123)
    raw[7] = 1
    raw[3 * PAGE + 5: 3 * PAGE + 9] = b"page"
    raw[-1] = 9   # the last, partial page
    file = tmp_path / "snapshot.bin"
    file.write_bytes(without_zero_pages(bytes(raw)))
    assert file.stat().st_size == 8 + 12 + 1 + 2 * PAGE + 123   # magic, sizes, bitmap, pages 0 and 3, the last
    run = subprocess.run(["node", "--no-warnings", "--input-type=module", "-e", EXPAND, str(file),
                          str(WEB / "snapshot.js")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert bytes.fromhex(got["whole"]) == bytes(raw)
    assert got["truncated"] == "Error: a truncated snapshot file"
    assert got["longer"] == "Error: 1 bytes past the snapshot's last page"
    assert got["other"] == "Error: not a gpuport snapshot file"
    assert got["small"].startswith("Error: a snapshot of ")


# Pyodide under Node boots from a snapshot made with NumPy imported, links NumPy's libraries back as a page does
# (web/snapshot.js linkNumpy, from the page archive's files, compiled here) and computes; "grow" first adds an entry
# to the function table, as an interpreter whose boot differs from the maker's would have.
LINK = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
const [pyodideDir, file, snapshotJs, archive, recordJson, how, gpuportArchive] = process.argv.slice(2);
const { expand, linkNumpy } = await import(pathToFileURL(snapshotJs).href);
const { install, storedEntries } = await import(new URL("wheels.js", pathToFileURL(snapshotJs)).href);
const record = JSON.parse(recordJson);
const files = storedEntries(new Uint8Array(gunzipSync(readFileSync(archive))));
const modules = Object.fromEntries(record.libraries.map(([path]) => [path, WebAssembly.compile(files[path])]));
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, _loadSnapshot: expand(new Uint8Array(readFileSync(file))) });
if (how === "grow") pyodide._module.wasmTable.grow(2);
try {
  await linkNumpy(pyodide, { files, modules }, "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl", record);
  await install(pyodide, storedEntries(new Uint8Array(gunzipSync(readFileSync(gpuportArchive)))));
} catch (e) {
  process.stdout.write(JSON.stringify({ refused: e.message }) + "\\n");
  process.exit(0);
}
process.stdout.write(await pyodide.runPythonAsync(`
import gc, json, sys, pyodide_js
imported = "numpy" in sys.modules and "gpuport.runtime" in sys.modules   # before anything here imports them
import numpy as np
import gpuport
from gpuport.host import hostops   # the host ops (their NumPy kernels: no WebAssembly kernels linked here)
y = hostops.gelu(hostops.matmul(np.eye(2, dtype=np.float32), np.ones((2, 3), np.float32)))
from gpuport.models import minilm   # a module the snapshot did not import, from the files installed
a = np.arange(1.0, 13.0).reshape(3, 4)
gc.collect()   # through NumPy's objects' traverse functions, frozen or not
json.dumps({"imported": imported, "loaded": sorted(pyodide_js.loadedPackages.object_keys()),
            "sum": float(a.sum()), "gram": (a @ a.T).tolist(), "solve": np.linalg.solve(a[:, :3] + np.eye(3), a[:, 3]).tolist(),
            "random": np.random.default_rng(7).random(3).tolist(), "fft": np.fft.rfft(a[0]).tolist().__repr__(),
            "sorted": np.sort(np.array([3, 1, 2], dtype=np.int8)).tolist(), "gpuport": y.tolist(),
            "frozen": not any(o is gpuport.open for o in gc.get_objects())})
`) + "\\n");
"""


@pytest.fixture(scope="module")
def with_numpy(tmp_path_factory) -> tuple[Path, dict, Path, Path]:
    """A snapshot made with NumPy and gpuport imported (gpuport's page archive from the wheel the dev server builds)."""
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("out")
    archive, _, file_name, libraries = numpy_archive(PYODIDE, out)
    bytecode, _ = numpy_bytecode(PYODIDE, cache / "bytecode", out)
    gpuport, _ = wheel_archive(gpuport_wheel(REPO, out / "wheel"), out, GPUPORT_ARCHIVE)
    numpy = {"archive": archive, "bytecode": bytecode, "file_name": file_name, "libraries": libraries}
    without = snapshot_key(PYODIDE, WEB / "snapshot.js", numpy)
    assert without != snapshot_key(PYODIDE, WEB / "snapshot.js")
    numpy["gpuport"] = gpuport
    assert snapshot_key(PYODIDE, WEB / "snapshot.js", numpy) != without
    path, _, _, linked = site_snapshot(PYODIDE, WEB, cache / "snapshot", out, numpy)
    return path, linked, archive, gpuport


def _link(with_numpy, tmp_path, how: str = "") -> dict:
    path, linked, archive, gpuport = with_numpy
    script = tmp_path / "link.mjs"
    script.write_text(LINK)
    run = subprocess.run(["node", "--no-warnings", str(script), str(PYODIDE), str(path), str(WEB / "snapshot.js"),
                          str(archive), json.dumps(linked), how, str(gpuport)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_numpy_and_gpuport_imported_in_the_snapshot_link_back_and_compute_as_natively(with_numpy, tmp_path):
    import numpy as np

    _, linked, _, _ = with_numpy
    assert linked["gpuport"]["modules"] > 40   # gpuport's, imported after NumPy
    assert [path.rsplit("/", 1)[-1].split(".")[0] for path, _ in linked["libraries"]] == \
        ["_multiarray_tests", "_multiarray_umath", "_umath_linalg"]   # as the archive lists them
    assert linked["table"][1] > linked["table"][0] and len(linked["digest"]) == 8
    assert sorted(linked["dlopened"].values()) == sorted(f"/lib/python3.12/site-packages/{p}"
                                                         for p, _ in linked["libraries"])
    got = _link(with_numpy, tmp_path)
    a = np.arange(1.0, 13.0).reshape(3, 4)
    assert got["imported"] and got["loaded"] == ["numpy"]
    assert got["sum"] == 78.0 and got["gram"] == (a @ a.T).tolist()
    # float64 solves and FFTs on another build of the same algorithms: equal to a few ulps
    assert got["solve"] == pytest.approx(np.linalg.solve(a[:, :3] + np.eye(3), a[:, 3]).tolist(), rel=1e-12)
    assert got["random"] == np.random.default_rng(7).random(3).tolist()   # PCG64 is bit-exact everywhere
    assert got["fft"] == repr(np.fft.rfft(a[0]).tolist())   # random and fft: libraries loaded on import, after
    assert got["sorted"] == [1, 2, 3]
    # gpuport imported in the snapshot (its objects frozen there) computes, and imports what it did not import then
    assert got["frozen"] and np.allclose(got["gpuport"], 0.8413447 * np.ones((2, 3)), atol=1e-6)


def test_an_interpreter_that_cannot_take_numpys_libraries_is_refused_saying_why(with_numpy, tmp_path):
    _, linked, _, _ = with_numpy
    got = _link(with_numpy, tmp_path, "grow")
    assert got == {"refused": f"its NumPy cannot be linked back: the function table has {linked['table'][0] + 1} "
                              f"entries, the snapshot's maker had {linked['table'][0]}"}
