"""`gpuport export DIR`: a self-contained static site that any static host serves as it is.

    DIR/index.html, test.html, gpuport.js, host.js, worker.js, bridge.js, ...   web/ (relative URLs)
    DIR/pyodide/                  the verified Pyodide distribution (sha256 against pyodide-lock.json)
    DIR/wheels/latest.json        {"gpuport": "<wheel file>", "chunked": {...}, and site_files.py's entries}
                                  (relative URLs)
    DIR/wheels/gpuport-*.whl      built from this checkout
    DIR/wheels/*.zip.gz, *.bin    what site_files.py makes: NumPy and gpuport as page archives, NumPy's bytecode,
                                  the Pyodide snapshot a first visit boots from
    DIR/shaders/*.wgsl
    DIR/models/<name>/            manifest.json, the small files, model.safetensors.chunks/00000...
    DIR/_headers, DIR/README.md   host headers (Netlify / Cloudflare Pages syntax) and hosting notes

Model weights are written as their verified chunk files, not one file: a host without HTTP Range
(`python -m http.server`, some object stores) serves them, and the page (web/ranges.js) answers the
loader's Range requests from them. `base` puts `<base href>` in the pages, for pages served from another
place than the files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Iterable

from .._version import __version__
from ..errors import LoadError
from ..formats.chunk_manifest import MANIFEST_NAME, build_manifest
from ..models import MODELS, default_source, weights_file
from .distribution import (
    PYODIDE_VERSION,
    build_wheel,
    data_home,
    default_dest,
    ensure_distribution,
    find_repo_root,
    is_complete,
)
from .site_files import site_files

MARKER = "gpuport-export.json"
PAGES = ("index.html", "test.html")
MODEL_FILES = ("config.json", "vocab.txt", "sentence_bert_config.json", "tokenizer.json", "vocabulary.txt", "vocab.json",
               "merges.txt", "preprocessor_config.json")
CHUNKS_SUFFIX = ".chunks/"

HEADERS = """\
# Headers for this gpuport export, in the _headers syntax of Netlify and Cloudflare Pages; on another host
# set the same ones (see README.md).

# Pages on other origins may load gpuport (module scripts, Pyodide, wheels and models are fetched with CORS).
/*
  Access-Control-Allow-Origin: *
  Cross-Origin-Resource-Policy: cross-origin

# Cross-origin isolation: the cpu path's kernels run whole layers on a pool of workers sharing memory
# (SharedArrayBuffer), which only an isolated page has; without these headers they run on one thread.
/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
"""

README = """\
# gpuport static site

Exported by `gpuport export` (gpuport {version}, Pyodide {pyodide}). Serve this directory as it is from any
static host; every URL in it is relative, e.g. `python -m http.server -d .` and open
<http://127.0.0.1:8000/>.

- Content types: `.wasm` as `application/wasm`, `.js`/`.mjs` as `text/javascript` (module scripts refuse
  anything else). Most hosts do this already.
- HTTP Range is not needed: model weights are stored as verified 1 MiB chunk files
  (`models/<name>/model.safetensors.chunks/`); the page answers the loader's Range requests from them.
- Embedding from a page on another origin (`import {{ start }} from "https://your.host/path/gpuport.js"`)
  needs `Access-Control-Allow-Origin` on every file here: `_headers` sets it on Netlify and Cloudflare
  Pages; on S3, GCS or nginx set the same CORS header.
- COOP/COEP (`Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy: require-corp`) make
  a page cross-origin isolated, which threads (SharedArrayBuffer) require: with them the cpu path runs whole
  layers on a pool of workers, one per core; without them on one thread (`rt.info()["host_threads"]` says
  why). `_headers` sets them. With them on, every file a page loads from another origin needs CORS or
  `Cross-Origin-Resource-Policy: cross-origin`; the page that embeds gpuport needs them too.
{base}"""


def _fresh_dest(dest: Path) -> None:
    """Refuse to write into a non-empty directory that is not an earlier export (never clobber)."""
    if dest.exists() and not dest.is_dir():
        raise LoadError(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise LoadError(f"{dest} is not empty and not an earlier gpuport export: choose an empty directory")


def _place(src: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if link:
        target.symlink_to(src.resolve())
    else:
        shutil.copyfile(src, target)


def _page(text: str, base: str | None) -> str:
    if base is None:
        return text
    if "<head>" not in text:
        raise LoadError("a page without <head>: cannot set its base URL")
    return text.replace("<head>", f'<head>\n<base href="{base}">', 1)


def _write_model(name: str, dest: Path, root: Path) -> dict:
    """Manifest, small files and verified chunk files of `name`; its entry for latest.json's "chunked"."""
    source = Path(default_source(name))
    weights = source / weights_file(name)
    if not weights.is_file():
        raise LoadError(f"{weights}: no such file (model {name!r})")
    packed = root / ".cache" / "models" / name / MANIFEST_NAME   # what `gpuport pack-model` wrote, if any
    manifest = json.loads(packed.read_text("utf-8")) if packed.is_file() else None
    if manifest is None or manifest.get("size") != weights.stat().st_size:
        manifest = build_manifest(weights, model=name, files=MODEL_FILES)
    manifest.pop("source_mtime_ns", None)
    out = dest / "models" / name
    chunks_dir = out / (weights.name + CHUNKS_SUFFIX)
    chunks_dir.mkdir(parents=True, exist_ok=True)
    with open(weights, "rb") as f:
        for i, chunk in enumerate(manifest["chunks"]):
            data = f.read(chunk["end"] - chunk["start"])
            if hashlib.sha256(data).hexdigest() != chunk["sha256"]:
                raise LoadError(f"{weights}: chunk {i} does not match {packed} (run `gpuport pack-model`)")
            (chunks_dir / f"{i:05d}").write_bytes(data)
    for fname in manifest.get("files", {}):
        shutil.copyfile(source / fname, out / fname)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {"size": manifest["size"], "chunk_size": manifest["chunk_size"], "chunks": weights.name + CHUNKS_SUFFIX}


def export_site(dest: Path | str, root: Path | str | None = None, models: Iterable[str] = (),
                base: str | None = None, link: bool = False) -> Path:
    """Write the static site into `dest` (empty, or an earlier export) and return it.

    models: model names whose weights go in (see gpuport.models.MODELS). base: an absolute URL the pages
    load gpuport from (`<base href>`), for pages served elsewhere than these files. link: symlink the Pyodide
    files instead of copying them (the pytest plugin's throwaway sites).
    """
    dest = Path(dest)
    root = Path(root) if root is not None else find_repo_root()
    web, shaders = root / "web", root / "shaders"
    if not (web / "gpuport.js").is_file() or not shaders.is_dir():
        raise LoadError(f"{root} is not a gpuport checkout (web/gpuport.js, shaders/): export runs from one")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise LoadError(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    if base is not None and not base.endswith("/"):
        base += "/"
    _fresh_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)

    for src in sorted(p for p in web.iterdir() if p.is_file() and not p.name.startswith(".")):
        if src.name in PAGES:
            (dest / src.name).write_text(_page(src.read_text("utf-8"), base), encoding="utf-8")
        else:
            _place(src, dest / src.name, link=False)
    if link:
        pyodide = default_dest(root)
        if not is_complete(pyodide):
            ensure_distribution(root, dest=pyodide)
        for src in sorted(p for p in pyodide.iterdir() if p.is_file()):
            _place(src, dest / "pyodide" / src.name, link=True)
    else:
        ensure_distribution(root, dest=dest / "pyodide")
    for src in sorted(shaders.glob("*.wgsl")):
        _place(src, dest / "shaders" / src.name, link=False)

    wheel = build_wheel(root, dest / "wheels")
    site, notes = site_files(dest / "pyodide", wheel, web, data_home(root))
    site["gpuport"] = wheel.name
    for note in notes:
        print(f"note: the export goes with {note}", file=sys.stderr)
    site["chunked"] = {f"models/{name}/{weights_file(name)}": _write_model(name, dest, root) for name in models}
    (dest / "wheels" / "latest.json").write_text(json.dumps(site, indent=1) + "\n", encoding="utf-8")
    (dest / "_headers").write_text(HEADERS, encoding="utf-8")
    note = f"\nThe pages load gpuport from {base} (`gpuport export --base`).\n" if base else ""
    (dest / "README.md").write_text(README.format(version=__version__, pyodide=PYODIDE_VERSION, base=note),
                                    encoding="utf-8")
    (dest / MARKER).write_text(json.dumps({"gpuport": __version__, "pyodide": PYODIDE_VERSION,
                                           "models": list(models), "base": base}, indent=1) + "\n",
                               encoding="utf-8")
    return dest
