"""The chunk manifest of a model file (what `gpuport pack-model` writes as manifest.json beside it): the
file cut into fixed chunks with each chunk's sha256, the file's size and sha256, the header and which
chunks each tensor spans. The loader verifies every byte it uses against it.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Iterable

from .errors import LoadError
from .formats.safetensors import check_layout, read_header, tensor_entries

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHTS_NAME = "model.safetensors"
MANIFEST_CHUNK = 1 << 20          # pack-model's chunk size: the unit of hashing, caching and resuming


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_of(name: str) -> str | None:
    """"encoder.layer.3.attention..." -> "3"; embeddings -> "embeddings"; else None."""
    m = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
    if m:
        return m.group(1)
    return name.split(".")[0] if name.startswith("embeddings") else None


def build_manifest(path: str | os.PathLike, chunk_size: int = MANIFEST_CHUNK, model: str | None = None,
                   files: Iterable[str] = ()) -> dict:
    """The chunk manifest of a local safetensors file (what `gpuport pack-model` writes)."""
    path = os.fspath(path)
    if chunk_size < 4096:
        raise ValueError(f"chunk_size {chunk_size} is too small (at least 4096 bytes)")
    size = os.path.getsize(path)
    whole = hashlib.sha256()
    chunks = []
    with open(path, "rb") as f:
        header, data_start = read_header(f, os.path.basename(path))
        check_layout(header, data_start, size, os.path.basename(path))
        f.seek(0)
        head_bytes = f.read(data_start)
        f.seek(0)
        start = 0
        while start < size:
            block = f.read(min(chunk_size, size - start))
            whole.update(block)
            chunks.append({"start": start, "end": start + len(block), "sha256": sha256(block)})
            start += len(block)
    tensors = {}
    for name, info in tensor_entries(header).items():
        b, e = data_start + info["data_offsets"][0], data_start + info["data_offsets"][1]
        last = max(b, e - 1)
        tensors[name] = {"start": b, "end": e, "dtype": info["dtype"], "shape": info["shape"],
                         "chunks": [b // chunk_size, last // chunk_size], "layer": layer_of(name)}
    directory = os.path.dirname(path)
    extra = {}
    for fname in files:
        p = os.path.join(directory, fname)
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                extra[fname] = {"size": os.path.getsize(p), "sha256": sha256(fh.read())}
    return {"format": MANIFEST_FORMAT, "model": model, "file": os.path.basename(path), "size": size,
            "sha256": whole.hexdigest(), "header_len": data_start - 8, "data_start": data_start,
            "header_sha256": sha256(head_bytes), "chunk_size": chunk_size, "chunks": chunks,
            "tensors": tensors, "files": extra}


def check_manifest(m: Any, where: str) -> dict:
    """A manifest that is well formed (else LoadError saying what is wrong)."""
    try:
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {m.get('format') if isinstance(m, dict) else m!r}, expected {MANIFEST_FORMAT}")
        size, cs = int(m["size"]), int(m["chunk_size"])
        pos = 0
        for i, c in enumerate(m["chunks"]):
            if c["start"] != pos or not (0 < c["end"] - c["start"] <= cs) or len(c["sha256"]) != 64:
                raise ValueError(f"chunk {i} is malformed: {c}")
            pos = c["end"]
        if pos != size:
            raise ValueError(f"chunks cover {pos} bytes, the file has {size}")
        for name, t in m["tensors"].items():
            if not (m["data_start"] <= t["start"] <= t["end"] <= size):
                raise ValueError(f"tensor {name!r} lies outside the file")
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"{where}: not a valid gpuport chunk manifest: {exc}") from None
    return m
