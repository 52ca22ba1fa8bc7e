"""A small safetensors reader: the header parsed by hand, tensors as NumPy views (no `safetensors` package).

Layout: 8 bytes little-endian u64 header length N, then N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the data; offsets
are relative to the first data byte (8 + N). Pure Python + NumPy, so it runs in Pyodide too.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, BinaryIO, Sequence

import numpy as np

from ..errors import LoadError

# safetensors dtype -> NumPy dtype (little-endian). The models use F32 weights; integer tensors load too
# (BERT checkpoints carry an I64 `position_ids` buffer). BF16 and the F8 types have no NumPy dtype:
# they raise LoadError naming the tensor.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
SUPPORTED = tuple(DTYPES)
MAX_HEADER = 100 * 1024 * 1024  # the format's own cap on the JSON header


def read_header(source: bytes | bytearray | memoryview | BinaryIO, name: str = "safetensors") -> tuple[dict, int]:
    """(header, data_start): the JSON header (with "__metadata__" if present) and the first data byte.

    `source` is the file's first bytes (at least 8 + header length) or a binary file object.
    Offsets are checked for shape and order only; `check_layout` checks them against a file size.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = memoryview(source)
        head = bytes(buf[:8])
        if len(head) < 8:
            raise LoadError(f"{name}: truncated: {len(head)} bytes, a safetensors file starts with an 8-byte length")
        (n,) = struct.unpack("<Q", head)
        _check_header_len(n, name)
        raw = bytes(buf[8:8 + n])
    else:
        head = source.read(8)
        if len(head) < 8:
            raise LoadError(f"{name}: truncated: {len(head)} bytes, a safetensors file starts with an 8-byte length")
        (n,) = struct.unpack("<Q", head)
        _check_header_len(n, name)
        raw = source.read(n)
    if len(raw) < n:
        raise LoadError(f"{name}: truncated header: {len(raw)} of {n} bytes")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoadError(f"{name}: header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise LoadError(f"{name}: header is not a JSON object")
    for key, info in header.items():
        if key == "__metadata__":
            continue
        _check_entry(key, info, name)
    return header, 8 + n


def _check_header_len(n: int, name: str) -> None:
    if n < 2 or n > MAX_HEADER:
        raise LoadError(f"{name}: header length {n} is not plausible (corrupt file or not safetensors)")


def _check_entry(key: str, info: Any, name: str) -> None:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise LoadError(f"{name}: tensor {key!r}: header entry needs dtype, shape and data_offsets")
    shape, offs = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise LoadError(f"{name}: tensor {key!r}: bad shape {shape!r}")
    if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
            and 0 <= offs[0] <= offs[1]):
        raise LoadError(f"{name}: tensor {key!r}: bad data_offsets {offs!r}")
    dt = DTYPES.get(info["dtype"])
    if dt is not None and offs[1] - offs[0] != math.prod(shape) * dt.itemsize:
        raise LoadError(f"{name}: tensor {key!r}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, "
                        f"but {info['dtype']} {shape} needs {math.prod(shape) * dt.itemsize}")


def tensor_entries(header: dict) -> dict[str, dict]:
    """The header's tensors (without "__metadata__"), in file order."""
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    return dict(items)


def check_layout(header: dict, data_start: int, file_size: int, name: str = "safetensors") -> None:
    """Every tensor's bytes lie inside a file of `file_size` bytes (else LoadError naming the tensor)."""
    avail = file_size - data_start
    for key, info in tensor_entries(header).items():
        begin, end = info["data_offsets"]
        if end > avail:
            raise LoadError(f"{name}: tensor {key!r} spans data bytes {begin}..{end} but the file has only "
                            f"{max(avail, 0)} data bytes (truncated file?)")


def _dtype(key: str, info: dict, name: str) -> np.dtype:
    dtype = info["dtype"]
    if dtype not in SUPPORTED:
        raise LoadError(f"{name}: tensor {key!r} has dtype {dtype}, which gpuport cannot load "
                        f"(supported: {', '.join(SUPPORTED)})")
    return DTYPES[dtype]


def tensor_from_pieces(key: str, info: dict, pieces: Sequence[Any], name: str = "safetensors") -> np.ndarray:
    """One tensor whose bytes are `pieces` in order (a tensor over several chunks), copied once into an array that
    owns its memory (nothing writable beneath it: simd_ops caches the packed form of such a weight). A piece is a
    memoryview, or anything with a length and `copy_into(dest)` (a page's chunk left in JS memory:
    backends.io.ChunkView)."""
    dt = _dtype(key, info, name)
    begin, end = info["data_offsets"]
    if sum(len(p) for p in pieces) != end - begin:
        raise LoadError(f"{name}: tensor {key!r} spans {end - begin} bytes, its pieces {sum(len(p) for p in pieces)}")
    arr = np.empty(info["shape"], dt)
    if arr.nbytes != end - begin:
        raise LoadError(f"{name}: tensor {key!r} has shape {info['shape']} ({arr.nbytes} bytes) but spans {end - begin}")
    flat, at = arr.reshape(-1).view(np.uint8), 0
    for piece in pieces:
        n = len(piece)
        if isinstance(piece, memoryview):
            flat[at:at + n] = np.frombuffer(piece, np.uint8)
        else:
            piece.copy_into(memoryview(flat[at:at + n]))
        at += n
    return arr.astype(dt.newbyteorder("="), copy=False)


def tensor_from_buffer(key: str, info: dict, data: memoryview | bytes | np.ndarray, base: int = 0,
                       name: str = "safetensors", copy: bool = True) -> np.ndarray:
    """One tensor from the data section (`base` = where the data section starts in `data`)."""
    dt = _dtype(key, info, name)
    begin, end = info["data_offsets"]
    if base + end > len(data):
        raise LoadError(f"{name}: tensor {key!r} spans bytes {base + begin}..{base + end} beyond the "
                        f"{len(data)} available (truncated file?)")
    count = (end - begin) // dt.itemsize
    arr = np.frombuffer(data, dtype=dt, count=count, offset=base + begin).reshape(info["shape"])
    arr = arr.astype(dt.newbyteorder("="), copy=copy)
    return arr


def load_tensors(path: str | os.PathLike, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """All (or the named) tensors of a local .safetensors file as NumPy arrays (native-endian copies)."""
    path = os.fspath(path)
    label = os.path.basename(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise LoadError(f"{path}: cannot open: {exc}") from None
    with f:
        header, data_start = read_header(f, label)
        size = os.fstat(f.fileno()).st_size
        entries = tensor_entries(header)
        if names is not None:
            missing = [n for n in names if n not in entries]
            if missing:
                raise LoadError(f"{label}: no tensor named {missing[0]!r}")
            entries = {n: entries[n] for n in names}
        check_layout({k: v for k, v in entries.items()}, data_start, size, label)
        for key, info in entries.items():
            if info["dtype"] not in SUPPORTED:
                raise LoadError(f"{label}: tensor {key!r} has dtype {info['dtype']}, which gpuport cannot "
                                f"load (supported: {', '.join(SUPPORTED)})")
        if size == 0:
            raise LoadError(f"{label}: empty file")
        try:
            import mmap
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ImportError, OSError, ValueError):  # no mmap (some filesystems, Pyodide): read it all
            mm = None
        if mm is None:
            f.seek(0)
            data: Any = f.read()
            return {k: tensor_from_buffer(k, v, data, data_start, label) for k, v in entries.items()}
        try:
            return {k: tensor_from_buffer(k, v, mm, data_start, label) for k, v in entries.items()}
        finally:
            mm.close()
