"""A small safetensors model behind a fault-injecting HTTP server on 127.0.0.1 (404, 500, short or wrong Range
answers, corrupt chunks, dropped connections), and loading it: what the loader's, the disk cache's, the GGUF
source's and Whisper's tests share."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import struct
import threading
import time
from pathlib import Path

import numpy as np
from gpuport.formats import chunk_manifest
from gpuport.loading import loader as L

CHUNK = 64 * 1024


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": {"float32": "F32", "int32": "I32"}[str(arr.dtype)], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def make_model(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {"embeddings.word.weight": rng.standard_normal((700, 64)).astype(np.float32)}   # 175 KiB
    for i in range(3):
        tensors[f"encoder.layer.{i}.dense.weight"] = rng.standard_normal((128, 96)).astype(np.float32)
        tensors[f"encoder.layer.{i}.dense.bias"] = rng.standard_normal(96).astype(np.float32)
    tensors["extra.ids"] = np.arange(10, dtype=np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text('{"ok": true}')
    manifest = chunk_manifest.build_manifest(folder / "model.safetensors", CHUNK, model="tiny", files=("config.json",))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return tensors


class Faults:
    """Faults for the next matching requests: (kind, path suffix, first byte of the Range or None, times)."""

    def __init__(self) -> None:
        self.rules: list[dict] = []
        self.log: list[tuple[str, str | None]] = []
        self.served: dict[str, int] = {}   # body bytes sent, by path
        self.headers: dict[str, dict[str, str]] = {}   # extra response headers, by path suffix
        self.lock = threading.Lock()

    def sent(self, path: str, n: int) -> None:
        with self.lock:
            self.served[path] = self.served.get(path, 0) + n

    def add(self, kind: str, path: str = "model.safetensors", start: int | None = None, times: int = 10**6) -> None:
        self.rules.append({"kind": kind, "path": path, "start": start, "times": times})

    def take(self, path: str, start: int | None) -> str | None:
        with self.lock:
            self.log.append((path, None if start is None else str(start)))
            for r in self.rules:
                if path.endswith(r["path"]) and r["times"] > 0 and (r["start"] is None or r["start"] == start):
                    r["times"] -= 1
                    return r["kind"]
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    faults: Faults
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        rel = self.path.lstrip("/")
        target = self.root / rel
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
        start = int(m.group(1)) if m else None
        fault = self.faults.take(rel, start)
        if fault in ("404", "500") or not target.is_file():
            code = 404 if fault == "404" or not target.is_file() else 500
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = target.stat().st_size
        if fault == "slow":
            time.sleep(0.25)
        if m and fault != "ignore_range":
            s, e = int(m.group(1)), min(int(m.group(2)), size - 1)
            with open(target, "rb") as f:   # only the range: checkpoints here are hundreds of MB
                f.seek(s)
                body, status = f.read(e - s + 1), 206
            cr = f"bytes {s}-{e}/{size}"
            if fault == "wrong_range":
                cr = f"bytes {s + 1}-{e + 1}/{size}"
            if fault == "short":
                body = body[: len(body) // 2]
            if fault == "corrupt":
                body = bytes([body[0] ^ 0xFF]) + body[1:]
        else:
            body, status, cr = target.read_bytes(), 200, None
        self.send_response(status)
        if cr:
            self.send_header("Content-Range", cr)
        for suffix, extra in self.faults.headers.items():
            if rel.endswith(suffix):
                for key, value in extra.items():
                    self.send_header(key, value)
        length = len(body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if fault == "stall":   # hangs until the client goes away (tests that kill a loading process)
            time.sleep(30)
            return
        if fault == "drop":
            self.faults.sent(rel, length // 3)   # counted before the write: the client cannot outrun the count
            self.wfile.write(body[: length // 3])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.faults.sent(rel, len(body))
        self.wfile.write(body)


class Server:
    def __init__(self, root: Path) -> None:
        self.faults = Faults()
        handler = type("H", (Handler,), {"root": root, "faults": self.faults})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tiny/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def load(url_or_dir, names=None, rt=None, **kw):
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("cache", None)
    kw.setdefault("chunk_size_mb", 2 * CHUNK / 2**20)   # 2 chunks per Range request
    events = []
    ld = L.ProgressiveModelLoader(url_or_dir, rt, on_progress=events.append, **kw)
    out = asyncio.run(ld.load_tensors(names, upload=rt is not None))
    return out, events, ld


def check_same(out, tensors):
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        got = out[k] if isinstance(out[k], np.ndarray) else out[k].numpy()
        np.testing.assert_array_equal(got, v)
