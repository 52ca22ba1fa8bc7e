"""Fault classes of bench/faults.py about files and HTTP: loader manifests and the header fetch (finding 6),
cache files (6), the dev server (7)."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import re
import struct
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import gpuport as gp
import numpy as np
from faults import NotSurvived, Tally, expect_close
from gpuport.formats import chunk_manifest
from gpuport.formats.records import RecordWarning, cache_dir
from gpuport.host.references import gelu_ref
from gpuport.loading import loader as L

CHUNK = 64 * 1024


# -- 6a. loader manifests and the header --------------------------------------------------------------

def _model(folder: Path, r: np.random.Generator) -> dict[str, np.ndarray]:
    tensors = {"embeddings.word.weight": r.standard_normal((700, 64)).astype(np.float32)}
    for i in range(3):
        tensors[f"encoder.layer.{i}.dense.weight"] = r.standard_normal((128, 96)).astype(np.float32)
        tensors[f"encoder.layer.{i}.dense.bias"] = r.standard_normal(96).astype(np.float32)
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    m = chunk_manifest.build_manifest(folder / "model.safetensors", CHUNK, model="tiny")
    (folder / "manifest.json").write_text(json.dumps(m))
    return tensors


class _Handler(http.server.BaseHTTPRequestHandler):
    """Range requests over `root`; `corrupt` = [absolute byte offset, times]: that byte is flipped."""

    root: Path
    corrupt: list
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        target = self.root / self.path.lstrip("/")
        if not target.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = target.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
        if m:
            s, e = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
            body = bytearray(data[s:e + 1])
            at, times = self.corrupt
            if target.name == "model.safetensors" and times > 0 and s <= at <= e:
                body[at - s] ^= 0xFF
                self.corrupt[1] -= 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {s}-{e}/{len(data)}")
        else:
            body = bytearray(data)
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(bytes(body))


def _paths(value: Any, keys: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, keys + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, keys + (i,))]
    return [keys]


def _name(keys: tuple) -> str:
    out = ""
    for i, k in enumerate(keys):
        if isinstance(k, int):
            out += f"[{k}]"
        elif i and keys[i - 1] == "tensors" or i and keys[i - 1] == "files":
            out += f"[{k!r}]"
        else:
            out += f".{k}" if out else k
    return out


def _set(m: Any, keys: tuple, value: Any) -> None:
    for k in keys[:-1]:
        m = m[k]
    m[keys[-1]] = value


def _mutations(m: dict, r: np.random.Generator) -> list[tuple[str, Any, str]]:
    """(fault, the manifest's new text, a field the LoadError must name or '' for any)."""
    out = []
    names = list(m["tensors"])
    for _ in range(6):                                    # shifted chunk maps
        mm, by = json.loads(json.dumps(m)), int(r.choice([-3, -2, -1, 1, 2, 3]))
        t = names[int(r.integers(0, len(names)))]
        mm["tensors"][t]["chunks"] = [c + by for c in mm["tensors"][t]["chunks"]]
        out.append((f"tensor {t} chunks shifted {by:+d}", json.dumps(mm), "chunks"))
        mm = json.loads(json.dumps(m))
        k = int(r.integers(1, len(mm["chunks"])))
        mm["chunks"] = mm["chunks"][k:] + mm["chunks"][:k]
        out.append((f"chunk list rotated by {k}", json.dumps(mm), "chunks"))
        mm = json.loads(json.dumps(m))
        d = int(r.integers(1, 10**6))
        for c in mm["chunks"]:
            c["start"], c["end"] = c["start"] + d, c["end"] + d
        out.append((f"chunk bounds +{d}", json.dumps(mm), "chunks[0]"))
    for _ in range(6):                                    # out of range
        mm = json.loads(json.dumps(m))
        keys = [p for p in _paths(mm) if isinstance(_get(mm, p), int) and not isinstance(_get(mm, p), bool)]
        keys = keys[int(r.integers(0, len(keys)))]
        v = int(r.choice([-1, -(2**40), 10**12, 2**63]))
        _set(mm, keys, v)
        out.append((f"{_name(keys)} = {v}", json.dumps(mm), ""))
    for _ in range(12):                                   # wrong types at random fields
        mm = json.loads(json.dumps(m))
        keys = _paths(mm)[int(r.integers(0, len(_paths(mm))))]
        old = _get(mm, keys)
        choices = [v for v in ("x", None, True, 2.5, [1], {"a": 1}, -3) if type(v) is not type(old)]
        v = choices[int(r.integers(0, len(choices)))]
        _set(mm, keys, v)
        out.append((f"{_name(keys)} = {v!r}", json.dumps(mm), ""))
    for _ in range(4):                                    # deep nesting
        depth = int(r.integers(1000, 200000))
        keys = _paths(m)[int(r.integers(0, len(_paths(m))))]
        text = json.dumps(m)
        mm = json.loads(text)
        _set(mm, keys, "HOLE")
        out.append((f"{_name(keys)} nested {depth} deep",
                    json.dumps(mm).replace('"HOLE"', "[" * depth + "1" + "]" * depth), ""))
        out.append((f"the manifest nested {depth} deep", "[" * depth + "]" * depth, ""))
    cut = int(r.integers(1, len(json.dumps(m))))
    out.append((f"manifest truncated at {cut}", json.dumps(m)[:cut], ""))
    return out


def _get(m: Any, keys: tuple) -> Any:
    for k in keys:
        m = m[k]
    return m


def _load(url: str, retries: int = 3) -> dict:
    ld = L.ProgressiveModelLoader(url, None, cache=None, backoff_s=0.001, retries=retries,
                                  chunk_size_mb=2 * CHUNK / 2**20)
    return asyncio.run(ld.load_tensors(None, upload=False)), ld


def loader(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny"
        tensors = _model(folder, rng)
        corrupt = [0, 0]
        handler = type("H", (_Handler,), {"root": Path(tmp), "corrupt": corrupt})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny/"
        good = (folder / "manifest.json").read_text()
        m = json.loads(good)

        def outcome(field: str) -> str:
            try:
                out, _ = _load(url)
            except gp.LoadError as exc:
                msg = str(exc)
                if not msg.startswith(url + "manifest.json"):
                    raise NotSurvived(f"LoadError not naming the manifest's URL: {msg[:150]}") from None
                if field and field not in msg:
                    raise NotSurvived(f"LoadError not naming {field}: {msg[:150]}") from None
                return f"LoadError: {msg[len(url):][:140]}"
            for k, v in tensors.items():       # accepted: then every tensor must be exact
                expect_close(out[k], v, rtol=0, atol=0, what=k)
            return "accepted (a field the loader does not use), every tensor exact"

        mutations = _mutations(m, rng)
        for what, text, field in mutations[:20] if quick else mutations:
            (folder / "manifest.json").write_text(text)
            t.trial(what, lambda field=field: outcome(field))
        (folder / "manifest.json").write_text(good)
        for i in range(4 if quick else 12):        # one corrupted byte of the header Range: retried
            at, times = int(rng.integers(0, m["data_start"])), 1 if i % 4 else 10**6
            corrupt[:] = [at, times]

            def header(times: int = times, at: int = at) -> str:
                if times == 1:
                    out, ld = _load(url)
                    for k, v in tensors.items():
                        expect_close(out[k], v, rtol=0, atol=0, what=k)
                    if ld.stats()["retries"] < 1:
                        raise NotSurvived("a corrupted header byte went unnoticed")
                    return f"retried {ld.stats()['retries']}x, then every tensor exact"
                try:
                    _load(url, retries=2)
                except gp.LoadError as exc:
                    if "header" not in str(exc) or not str(exc).startswith(url):
                        raise NotSurvived(f"LoadError not naming the header: {exc}") from None
                    return f"LoadError: {str(exc)[len(url):][:120]}"
                raise NotSurvived("a persistently corrupt header loaded")
            t.trial(f"header byte {at} corrupted {'once' if times == 1 else 'always'}", header)
        httpd.shutdown()
        httpd.server_close()


# -- 6b. cache files ----------------------------------------------------------------------------------------

def _bad_record(kind: str, good: str, r: np.random.Generator) -> tuple[str, str | bytes]:
    choice = r.choice(["deep", "deep objects", "wrong type", "truncated", "huge", "garbage", "cost"])
    data = json.loads(good)
    if choice == "deep":
        d = int(r.integers(9, 200000))
        return f"nested {d} deep", "[" * d + "]" * d
    if choice == "deep objects":
        d = int(r.integers(9, 5000))
        return f"objects nested {d} deep", '{"a": ' * d + "1" + "}" * d
    if choice == "truncated":
        cut = int(r.integers(1, len(good)))
        return f"truncated at {cut} of {len(good)}", good[:cut]
    if choice == "huge":
        return "5 MiB", json.dumps({**data, "pad": "x" * (5 << 20)})
    if choice == "garbage":
        return "binary garbage", bytes(r.integers(0, 256, int(r.integers(1, 4096)), dtype=np.uint8))
    if choice == "cost" and kind == "selector":
        v = float(r.choice([0.0, -1.0, -1e-9, float("nan")]))
        for c in data["costs"].values():
            c.update(flops_per_s=v, bytes_per_s=v, overhead_s=v)
        return f"all costs {v}", json.dumps(data)
    keys = _paths(data)[int(r.integers(0, len(_paths(data))))] if _paths(data) else ("entries",)
    old = _get(data, keys) if keys != ("entries",) else None
    v = [x for x in ("x", None, True, 2.5, [1], {"a": 1}, -3, 5) if type(x) is not type(old)][int(r.integers(0, 7))]
    _set(data, keys, v)
    return f"{_name(keys)} = {v!r}", json.dumps(data)


def caches(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    x = rng.standard_normal((5, 7)).astype(np.float32)
    with gp.open_sync(backend="auto") as rt:     # writes both records
        rt.ops.gelu(rt.tensor(x)).numpy()
        scope = rt.pipelines.scope
    goods = {k: (cache_dir() / k / f"{scope}.json").read_text() for k in ("pipelines", "selector")}
    for i in range(12 if quick else 40):
        kind = ("pipelines", "selector")[i % 2]
        what, bad = _bad_record(kind, goods[kind], rng)
        path = cache_dir() / kind / f"{scope}.json"

        def trial(kind: str = kind, bad: Any = bad, path: Path = path) -> str:
            path.write_bytes(bad if isinstance(bad, bytes) else bad.encode())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with gp.open_sync(backend="webgpu" if kind == "pipelines" else "auto") as rt:
                    expect_close(rt.ops.gelu(rt.tensor(x)).numpy(), gelu_ref(x), what="gelu")
            mine = [w for w in caught if issubclass(w.category, RecordWarning) and str(path) in str(w.message)]
            if len(mine) != 1:
                raise NotSurvived(f"{len(mine)} reports of the bad {kind} record (want 1): "
                                  f"{[str(w.message)[:100] for w in caught]}")
            with warnings.catch_warnings(record=True) as again:
                warnings.simplefilter("always")
                with gp.open_sync(backend="webgpu" if kind == "pipelines" else "auto") as rt:
                    rt.ops.gelu(rt.tensor(x)).numpy()
            if any(issubclass(w.category, RecordWarning) for w in again):
                raise NotSurvived(f"the {kind} record was not rewritten: reported again on the next open")
            return f"opened, reported once, rewritten: {str(mine[0].message).split(': ', 1)[-1][:100]}"
        t.trial(f"{kind} record: {what}", trial)


# -- 7. the dev server -------------------------------------------------------------------------------------

FOREIGN = ["rebind.example", "evil.test:8000", "127.0.0.1.nip.io", "localhost.evil", "192.168.1.20",
           "10.0.0.1:80", "[::2]", "", "a b", "localhost:port", "testserver", "0.0.0.0", "LOCALHOST.", "::1"]
TARGETS = ["README.md", "pyproject.toml", "etc/passwd", "Makefile", "py/gpuport/__init__.py"]   # outside the roots


def _traversal(r: np.random.Generator, target: str) -> str:
    dot = [r"..", "%2e%2e", "%2E%2E", ".%2e", "%252e%252e", "..%2f", "..\\"][int(r.integers(0, 7))]
    sep = ["/", "%2f", "//", "/./"][int(r.integers(0, 4))]
    prefix = ["", "pyodide/", "shaders/", "models/minilm-l6-v2/", "wheels/"][int(r.integers(0, 5))]
    return "/" + prefix + (dot + sep) * int(r.integers(1, 8)) + target.replace("/", sep)


def server(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    from _harness import dev_server

    with dev_server() as base:
        host, port = base.split("//")[1].split(":")
        root = Path(__file__).resolve().parent.parent

        def get(path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
            c = http.client.HTTPConnection(host, int(port), timeout=20)
            c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in ({"Host": f"localhost:{port}"} if headers is None else headers).items():
                c.putheader(k, v)
            c.endheaders()
            resp = c.getresponse()
            out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            c.close()
            return out

        wheel = json.loads(get("/wheels/latest.json")[2])["gpuport"]
        paths = ["/", "/wheels/latest.json", wheel, "/shaders/gelu.wgsl", "/missing.js"]
        for i in range(10 if quick else 40):
            foreign = FOREIGN[i % len(FOREIGN)] if i < len(FOREIGN) else \
                ".".join(str(int(v)) for v in rng.integers(1, 255, 4)) + f":{int(rng.integers(1, 65536))}"
            path = paths[int(rng.integers(0, len(paths)))]

            def host_trial(foreign: str = foreign, path: str = path) -> str:
                status, headers, body = get(path, {"Host": foreign})
                if status != 400 or headers.get("x-content-type-options") != "nosniff" or len(body) > 100:
                    raise NotSurvived(f"Host {foreign!r} {path}: {status} {len(body)} B {headers}")
                return f"{status} {body[:40]!r}, nosniff"
            t.trial(f"Host {foreign!r} GET {path}", host_trial)
        for i in range(15 if quick else 60):
            target = TARGETS[i % len(TARGETS)]
            path = _traversal(rng, target)
            secret = (Path("/") / target if target.startswith("etc") else root / target).read_bytes()[:64]

            def traversal(path: str = path, secret: bytes = secret) -> str:
                status, headers, body = get(path)
                if status not in (400, 404) or secret in body or b"Invalid host" in body:   # 400: a bad path
                    raise NotSurvived(f"{path}: {status}, {len(body)} B")
                if headers.get("x-content-type-options") != "nosniff":
                    raise NotSurvived(f"{path}: {status} without nosniff")
                return f"{status}, nosniff"
            t.trial(f"GET {path}", traversal)
        etag = get("/shaders/gelu.wgsl")[1].get("etag", "")
        for what, path, headers, method, want in [
                ("200", "/", None, "GET", 200), ("206", wheel, {"Range": "bytes=0-9"}, "GET", 206),
                ("304", "/shaders/gelu.wgsl", {"If-None-Match": etag}, "GET", 304),
                ("404", "/nowhere.js", None, "GET", 404), ("405", "/", None, "POST", 405),
                ("416", wheel, {"Range": "bytes=99999999-"}, "GET", 416), ("400 range", wheel,
                                                                          {"Range": "bytes=9-3"}, "GET", 400),
                ("HEAD", wheel, None, "HEAD", 200)]:
            hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}

            def nosniff(path: str = path, hdrs: dict = hdrs, method: str = method, want: int = want) -> str:
                status, got, _ = get(path, hdrs, method)
                if status != want or got.get("x-content-type-options") != "nosniff":
                    sniff = got.get("x-content-type-options")
                    raise NotSurvived(f"{method} {path}: {status} (want {want}), nosniff={sniff}")
                return f"{status} with nosniff"
            t.trial(f"nosniff on a {what}", nosniff)
