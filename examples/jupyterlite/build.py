"""Build a JupyterLite site whose Pyodide kernel runs gpuport, offline and from pinned, verified parts.

    .venv/bin/python examples/jupyterlite/build.py [--output DIR]     # default: .cache/jupyterlite/site

What goes in, and from where (nothing is fetched when the site runs; the build itself reaches PyPI only the
first time, through pip, for the pinned files of the two requirement files beside this script):
- the JupyterLite app: PyPI `jupyterlite-core` and `jupyterlite-pyodide-kernel` (build-requirements.txt: every
  version of their closure pinned), installed into their own venv, `.cache/jupyterlite-venv/`, so the Jupyter
  build stack and its pins stay out of the project's .venv;
- Pyodide 0.27.7: gpuport's own verified distribution (gpuport.site.distribution.ensure_distribution: the npm core,
  each package file checked against the sha256 in pyodide-lock.json) assembled into the lite dir's
  `static/pyodide/`, where the kernel's build addon finds it, copies it into the site and points the kernel's
  `pyodideUrl` at it. Besides NumPy it holds what the kernel's worker loads as it starts (KERNEL_PACKAGES);
  `.cache/pyodide/` (the dev server's copy) is not touched;
- the kernel's piplite index (the site's `pypi/all.json`): the gpuport wheel built from this checkout, and the
  pure-Python wheels the kernel needs that Pyodide's lock lacks (kernel-requirements.txt); PyPI fallback is
  switched off, so a package missing here fails in the notebook instead of being fetched from the internet.

Every step is idempotent: the tool venv is reinstalled only when build-requirements.txt changes, wheels and
Pyodide files already present with the right sha256 are kept, and `jupyter lite build` (doit) redoes only the
tasks whose inputs changed. Serve the result with serve.py beside this script (it adds /models/ for MiniLM).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from gpuport.errors import LoadError
from gpuport.site.distribution import (
    DEFAULT_PACKAGES,
    build_wheel,
    ensure_distribution,
    sha256_file,
)
from tools import BuildError, ensure_tools, run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache"
WORK = CACHE / "jupyterlite"
LITE_DIR = WORK / "lite"          # the build's input: jupyter-lite.json, static/pyodide/, doit's state
WHEELS = WORK / "wheels"          # what goes into the site's piplite index
SITE = WORK / "site"
NOTEBOOKS = (HERE / "gpuport.ipynb", HERE / "arrays.ipynb")
KERNEL_REQUIREMENTS = HERE / "kernel-requirements.txt"

# What jupyterlite-pyodide-kernel 0.6.1's worker installs before the first cell runs (its initKernel:
# ssl, sqlite3, comm, jedi, ipython; ipykernel, piplite and pyodide_kernel come from the kernel extension's
# own index, comm from kernel-requirements.txt), plus gpuport's NumPy and the defaults; and what arrays.ipynb
# installs with %pip (scikit-learn with SciPy, matplotlib). Their dependencies (openssl, parso, traitlets,
# pygments, openblas, pillow, ...) follow from pyodide-lock.json.
KERNEL_PACKAGES = (*DEFAULT_PACKAGES, "ssl", "sqlite3", "jedi", "ipython", "scikit-learn", "matplotlib")
KERNEL_PLUGIN = "@jupyterlite/pyodide-kernel-extension:kernel"
PYODIDE_URL = "./static/pyodide/pyodide.js"
APPS = ("lab", "notebooks", "tree")


def _pins(requirements: Path) -> list[tuple[str, str, str]]:
    """(name, version, sha256) of each `name==version --hash=sha256:...` line."""
    pins = []
    for line in requirements.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if found is None:
            raise BuildError(f"{requirements}: expected `name==version --hash=sha256:<hex>`, got {line!r}")
        pins.append(found.groups())
    return pins


def _pinned_wheel(name: str, version: str, sha256: str) -> Path | None:
    """The wheel of name==version already in WHEELS with the pinned hash, or None."""
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in WHEELS.glob(f"{stem}-{version}-*.whl"):
        if sha256_file(path) == sha256:
            return path
    return None


def kernel_wheels() -> list[Path]:
    """The wheels of the site's piplite index: gpuport from this checkout, and kernel-requirements.txt."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    pins = _pins(KERNEL_REQUIREMENTS)
    if any(_pinned_wheel(*pin) is None for pin in pins):
        run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--only-binary=:all:", "--require-hashes", "-d", str(WHEELS), "-r", str(KERNEL_REQUIREMENTS)],
             f"downloading the kernel's wheels ({KERNEL_REQUIREMENTS.name})")
    wheels = [build_wheel(ROOT, WHEELS)]
    for name, version, sha256 in pins:
        found = _pinned_wheel(name, version, sha256)
        if found is None:
            raise BuildError(f"pip downloaded no wheel of {name}=={version} with sha256 {sha256} into {WHEELS}")
        wheels.append(found)
    return wheels


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text("utf-8") != text:   # unchanged: doit sees no new input
        path.write_text(text, encoding="utf-8")


def prepare_lite_dir() -> None:
    """The build's input: the verified Pyodide where the kernel addon looks for it, and the kernel's settings."""
    LITE_DIR.mkdir(parents=True, exist_ok=True)
    ensure_distribution(ROOT, dest=LITE_DIR / "static" / "pyodide", packages=KERNEL_PACKAGES)
    _write_json(LITE_DIR / "jupyter-lite.json", {
        "jupyter-lite-schema-version": 0,
        "jupyter-config-data": {
            "appName": "gpuport in JupyterLite",
            # No CDN: the kernel's PyPI fallback off (the site's index and Pyodide's lock are all it may use).
            "litePluginSettings": {KERNEL_PLUGIN: {"pyodideUrl": PYODIDE_URL, "disablePyPIFallback": True}},
        },
    })


def check_site(site: Path) -> None:
    """What the kernel will load must be this site's own copy: fail on a config that points elsewhere."""
    config = json.loads((site / "jupyter-lite.json").read_text("utf-8"))["jupyter-config-data"]
    kernel = config.get("litePluginSettings", {}).get(KERNEL_PLUGIN, {})
    if kernel.get("pyodideUrl") != PYODIDE_URL or kernel.get("disablePyPIFallback") is not True:
        raise BuildError(f"{site}/jupyter-lite.json: the Pyodide kernel's settings are {kernel}, expected pyodideUrl "
                         f"{PYODIDE_URL!r} and disablePyPIFallback true")
    manifest = json.loads((site / "static" / "pyodide" / "gpuport-distribution.json").read_text("utf-8"))
    for name, meta in manifest["files"].items():
        if name.endswith(".map"):   # --no-sourcemaps leaves Pyodide's source maps out of the site
            continue
        path = site / "static" / "pyodide" / name
        if not path.is_file() or sha256_file(path) != meta["sha256"]:
            raise BuildError(f"{path}: missing or not the verified file (sha256 {meta['sha256']})")
    index = json.loads((site / "pypi" / "all.json").read_text("utf-8"))
    if "gpuport" not in index:
        raise BuildError(f"{site}/pypi/all.json does not index the gpuport wheel: {sorted(index)}")


def build(output: Path = SITE) -> Path:
    jupyter = ensure_tools()
    wheels = kernel_wheels()
    prepare_lite_dir()
    cmd = [str(jupyter), "lite", "build", "--lite-dir", str(LITE_DIR), "--output-dir", str(output),
           "--no-sourcemaps", "--no-unused-shared-packages"]
    for notebook in NOTEBOOKS:
        cmd += ["--contents", str(notebook)]
    for app in APPS:
        cmd += ["--apps", app]
    for wheel in wheels:
        cmd += ["--piplite-wheels", str(wheel)]
    # doit skips a task whose inputs did not change, and the tasks that patch jupyter-lite.json (our kernel
    # settings, pyodideUrl) name no output: a new output dir, whose jupyter-lite.json comes fresh from the app
    # archive, would keep the archive's. So a new (or another) output dir starts over from no doit state (the
    # CLI's --force cannot: jupyterlite-core 0.6 forgets the tasks after building, not before).
    doit_db = LITE_DIR / ".jupyterlite.doit.db"   # doit keeps it in the working directory: LITE_DIR below
    stamp = LITE_DIR / ".output-dir"
    if not (output / "jupyter-lite.json").is_file() or not stamp.is_file() or stamp.read_text() != str(output):
        doit_db.unlink(missing_ok=True)
    run(cmd, "jupyter lite build", cwd=LITE_DIR)
    stamp.write_text(str(output))
    check_site(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SITE, help=f"where the site goes (default: {SITE})")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        site = build(args.output.resolve())
    except (BuildError, LoadError) as exc:
        print(f"jupyterlite: build failed: {exc}", file=sys.stderr)
        return 1
    print(f"jupyterlite: built {site} in {time.monotonic() - t0:.1f} s; serve it with "
          f"{sys.executable} {HERE / 'serve.py'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
