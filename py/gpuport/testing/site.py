"""What the lanes' pages load: a static server for a directory (stdlib only), the site it serves (a
`gpuport export` of this checkout, Pyodide linked rather than copied) and the wheel of the user's project.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import tomllib
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import LoadError
from ..site.export import export_site

# Our own table: module scripts and WebAssembly must not depend on the host's /etc/mime.types.
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
               ".wasm": "application/wasm", ".whl": "application/zip", ".zip": "application/zip",
               ".wgsl": "text/plain", ".txt": "text/plain", ".md": "text/markdown", ".map": "application/json"}


# Cross-origin isolation, which SharedArrayBuffer (the host kernels' pool of workers) requires.
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = MEDIA_TYPES
    cors = False
    isolated = True

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
        if self.isolated:
            for name, value in ISOLATION.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest output is for test results
        pass


class StaticServer:
    """`root` over HTTP on loopback (a free port unless given), in a daemon thread, until `close()`.
    cors=True adds `Access-Control-Allow-Origin: *` (and CORP cross-origin), so pages on other origins may load
    the files; isolated=True (the default) sends COOP/COEP, so its pages are cross-origin isolated."""

    def __init__(self, root: Path, cors: bool = False, host: str = "127.0.0.1", port: int = 0,
                 isolated: bool = True) -> None:
        handler = type("Handler", (_Handler,), {"cors": cors, "isolated": isolated})
        self.httpd = http.server.ThreadingHTTPServer((host, port), partial(handler, directory=str(root)))
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"gpuport-static-{self.url}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


def build_lane_site(dest: Path, root: Path | None = None) -> Path:
    """The site the plugin's lanes load: this checkout's export (page, JS, wheel) with Pyodide linked."""
    return export_site(dest, root=root, link=True)


def project_of(rootpath: Path) -> tuple[str, Path] | None:
    """(name, directory) of the Python project at pytest's rootdir (a pyproject.toml with [project]), or None."""
    pyproject = rootpath / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    name = data.get("project", {}).get("name")
    return (name, rootpath) if name else None


def build_project_wheel(project: Path, out_dir: Path) -> Path:
    """The project's wheel, built with its own build backend from the environment (pip wheel, no build
    isolation, no version check: works offline); LoadError with pip's words if it fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--disable-pip-version-check", "--wheel-dir", str(out_dir), str(project)],
                          capture_output=True, text=True)
    wheels = sorted(out_dir.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if done.returncode != 0 or not wheels:
        raise LoadError(f"could not build the wheel of {project} (pip wheel --no-build-isolation, exit "
                        f"{done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return wheels[-1]
