"""Serve the PyScript example with gpuport's dev server behind it, on one loopback origin.

    .venv/bin/python examples/pyscript/serve.py [--port 8000]

then open http://127.0.0.1:8000/examples/pyscript/ (main thread) or .../worker.html (a PyScript worker).
PyScript's own files come from npm (`@pyscript/core`, pinned in package.json, installed by `make setup`) at
/pyscript/; everything else (the vendored Pyodide at /pyodide/, the gpuport wheel at /wheels/, the models at
/models/ with HTTP Range) is the dev server's (gpuport.site.server). Nothing comes from a CDN.

Every response carries COOP/COEP (gpuport.site.server.SiteHeaders): a PyScript worker reaches the page's DOM
(`pyscript.document`) through SharedArrayBuffer and Atomics, which a page has only when cross-origin isolated, and
gpuport runs its host kernels' pool of workers there. Everything here is on one origin, so isolation blocks
nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpuport.site.server import SiteHeaders
from gpuport.site.server import create_app as dev_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYSCRIPT = ROOT / "node_modules" / "@pyscript" / "core" / "dist"


def create_app() -> Starlette:
    """/examples/pyscript/ (this folder), /pyscript/ (PyScript's dist) and the dev server for the rest, all
    cross-origin isolated."""
    if not (PYSCRIPT / "core.js").is_file():
        raise FileNotFoundError(f"{PYSCRIPT / 'core.js'} is missing: run `make setup` (npm ci installs @pyscript/core)")
    return Starlette(routes=[Mount("/examples/pyscript", StaticFiles(directory=HERE, html=True)),
                             Mount("/pyscript", StaticFiles(directory=PYSCRIPT)),
                             Mount("/", dev_server())],
                     middleware=[Middleware(SiteHeaders)])


def main() -> None:
    import uvicorn  # the serve extra, as for `gpuport serve`

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"gpuport in PyScript: http://127.0.0.1:{args.port}/examples/pyscript/")
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
