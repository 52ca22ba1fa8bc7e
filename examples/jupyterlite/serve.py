"""Serve the JupyterLite site build.py made, with MiniLM's weights beside it, on one loopback origin.

    .venv/bin/python examples/jupyterlite/serve.py [--port 8000] [--site DIR]

then open http://127.0.0.1:8000/notebooks/index.html?path=gpuport.ipynb. One origin for both because a
model's default source in a page is `/models/<name>/` on the origin gpuport runs on (here the kernel's
worker); the model files need HTTP Range (the progressive loader fetches them in verified chunks), which a
plain static host lacks, so they come from the dev server's own handlers (gpuport.site.server): the chunk
manifest `gpuport pack-model` writes over the installed weights package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpuport.site.server import (
    LOOPBACK_HOSTS,
    MODELS_CACHE,
    NO_CACHE,
    SiteHeaders,
    default_model_dirs,
    file_response,
    model_file,
    model_notes,
    safe_path,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SITE = ROOT / ".cache" / "jupyterlite" / "site"
NOTEBOOK_PATH = "notebooks/index.html?path=gpuport.ipynb"


def create_app(site: Path = SITE) -> Starlette:
    """The site's files (a folder answers with its index.html, as JupyterLite's app URLs expect) and
    /models/<name>/... with Range; loopback Host names only, as the dev server."""
    if not (site / "jupyter-lite.json").is_file():
        raise FileNotFoundError(f"{site} is not a built JupyterLite site (no jupyter-lite.json): run "
                                f"{sys.executable} {HERE / 'build.py'}")
    models = default_model_dirs(ROOT)

    async def site_file(request: Request) -> Response:
        path = request.path_params["path"]
        if path == "" or path.endswith("/"):
            path += "index.html"
        return file_response(request, safe_path(site, path), NO_CACHE)   # no-cache: a rebuild shows on reload

    async def model(request: Request) -> Response:
        return file_response(request, model_file(models, None, request.path_params["path"]), MODELS_CACHE)

    app = Starlette(middleware=[Middleware(SiteHeaders),
                                Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS),
                                           www_redirect=False)],
                    routes=[Route("/models/{path:path}", model, methods=["GET"]),
                            Route("/{path:path}", site_file, methods=["GET"])])
    app.router.redirect_slashes = False
    app.state.notes = model_notes(models)
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--site", type=Path, default=SITE, help=f"the built site (default: {SITE})")
    args = parser.parse_args(argv)
    try:
        app = create_app(args.site.resolve())
    except FileNotFoundError as exc:
        print(f"jupyterlite: {exc}", file=sys.stderr)
        return 1
    for note in app.state.notes:
        print(f"jupyterlite: note: {note}", file=sys.stderr)
    print(f"jupyterlite: http://127.0.0.1:{args.port}/{NOTEBOOK_PATH}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
