"""A small GGUF reader (versions 2 and 3): header, metadata, tensor table. Pure Python + NumPy (runs in Pyodide).

Layout (all little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata as
(string key, u32 value type, value); tensor infos as (string name, u32 n_dims, u64 dims[n_dims] fastest
first, u32 ggml type, u64 offset relative to the data section); padding to `general.alignment` (default
32); then the data section. A string is a u64 byte length and UTF-8 bytes; an array is a u32 element
type, a u64 count and the elements.

`read_header` works on any prefix of the file: when the prefix is too short it returns `MoreBytes` with
the prefix length it needs at least, so a Range-based loader fetches the header progressively without
knowing its size in advance (the header of SmolLM2-135M is 1.8 MB: its vocabulary and merges live there).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ..errors import LoadError, UnsupportedFeature

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Caps that stop a corrupt count or length from sending a progressive loader after exabytes.
MAX_STRING = 1 << 30
MAX_ARRAY = 1 << 31
MAX_ENTRIES = 1 << 20

# GGUF metadata value types: id -> name, and the fixed-size ones' struct format.
VALUE_TYPES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
               7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
_SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SCALAR_DTYPE = {k: np.dtype("<" + v) for k, v in _SCALAR_FMT.items()}
STRING, ARRAY = 8, 9

# ggml tensor types this reader can size: id -> (name, elements per block, bytes per block), as in ggml.h.
# Reading a header only needs the sizes; which types gpuport computes with is quant.SUPPORTED.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 30: ("BF16", 1, 2),
}
GGML_TYPE_IDS = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table. `dims` as stored (fastest first, ggml's ne); `shape` is NumPy order."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int   # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return int(math.prod(self.dims))


@dataclass
class GGUFHeader:
    """Everything before the data section: metadata (key -> Python value), its types, the tensor table."""

    version: int
    metadata: dict[str, Any]
    value_types: dict[str, str]   # key -> "uint32", "string", "array[string]", ...
    tensors: dict[str, TensorInfo] = field(default_factory=dict)   # file order
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0          # first byte of the data section (a multiple of `alignment`)

    def end(self) -> int:
        """The file size the tensor table implies (end of the last tensor's bytes)."""
        return max((t.offset + t.nbytes for t in self.tensors.values()), default=self.data_offset)


@dataclass(frozen=True)
class MoreBytes:
    """`read_header` needs a prefix of at least `total` bytes (a lower bound: a longer one may be needed)."""

    total: int


class _Short(Exception):
    def __init__(self, total: int) -> None:
        self.total = total


class _Cursor:
    """Reads little-endian fields from a prefix; `_Short` when a field runs past its end."""

    def __init__(self, buf: memoryview, name: str) -> None:
        self.buf, self.pos, self.name = buf, 0, name

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.buf):
            raise _Short(end)
        view = self.buf[self.pos:end]
        self.pos = end
        return view

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self, what: str) -> str:
        n = self.unpack("Q")
        if n > MAX_STRING:
            raise LoadError(f"{self.name}: {what}: string length {n} is not plausible (corrupt file?)")
        raw = self.take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"{self.name}: {what}: string is not valid UTF-8 ({exc.reason})") from None

    def value(self, vtype: int, key: str) -> tuple[Any, str]:
        if vtype == STRING:
            return self.string(f"metadata {key!r}"), "string"
        if vtype == ARRAY:
            etype = self.unpack("I")
            count = self.unpack("Q")
            if etype not in VALUE_TYPES or etype == ARRAY:
                raise LoadError(f"{self.name}: metadata {key!r}: bad array element type {etype}")
            if count > MAX_ARRAY:
                raise LoadError(f"{self.name}: metadata {key!r}: array length {count} is not plausible")
            if etype == STRING:
                return [self.string(f"metadata {key!r}[{i}]") for i in range(count)], "array[string]"
            dt = _SCALAR_DTYPE[etype]
            items = np.frombuffer(self.take(count * dt.itemsize), dtype=dt).tolist()
            return items, f"array[{VALUE_TYPES[etype]}]"
        if vtype not in _SCALAR_FMT:
            raise LoadError(f"{self.name}: metadata {key!r}: unknown value type {vtype}")
        v = self.unpack(_SCALAR_FMT[vtype])
        if vtype == 7 and self.buf[self.pos - 1] > 1:
            raise LoadError(f"{self.name}: metadata {key!r}: bool byte {self.buf[self.pos - 1]} is not 0 or 1")
        return v, VALUE_TYPES[vtype]


def read_header(prefix: bytes | bytearray | memoryview, name: str = "gguf") -> GGUFHeader | MoreBytes:
    """Parse the header from the first bytes of a GGUF file, or say how long a prefix it needs.

    Raises LoadError (naming the field) for a malformed header and UnsupportedFeature for a GGUF
    version or ggml tensor type this reader does not know. Offsets are checked for alignment and
    overlap; `check_layout` checks them against the file size.
    """
    cur = _Cursor(memoryview(prefix).cast("B"), name)
    try:
        return _parse(cur)
    except _Short as short:
        return MoreBytes(short.total)


def _parse(cur: _Cursor) -> GGUFHeader:
    name = cur.name
    magic = bytes(cur.take(4))
    if magic != MAGIC:
        raise LoadError(f"{name}: magic is {magic!r}, a GGUF file starts with b'GGUF' (not a GGUF file?)")
    version = cur.unpack("I")
    if version not in VERSIONS:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if swapped in VERSIONS:
            raise UnsupportedFeature(f"{name}: big-endian GGUF (version {swapped}) is not supported")
        raise UnsupportedFeature(f"{name}: GGUF version {version} is not supported (supported: 2, 3)")
    n_tensors = cur.unpack("Q")
    n_kv = cur.unpack("Q")
    for what, n in (("tensor_count", n_tensors), ("kv_count", n_kv)):
        if n > MAX_ENTRIES:
            raise LoadError(f"{name}: {what} {n} is not plausible (corrupt file?)")
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        if key in metadata:
            raise LoadError(f"{name}: metadata key {key!r} appears twice")
        vtype = cur.unpack("I")
        metadata[key], types[key] = cur.value(vtype, key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (types.get("general.alignment", "uint32") != "uint32" or alignment <= 0
            or alignment & (alignment - 1)):
        raise LoadError(f"{name}: general.alignment must be a power of two u32, got {alignment!r}")
    raw_infos = []
    for _ in range(n_tensors):
        tname = cur.string("tensor name")
        n_dims = cur.unpack("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise LoadError(f"{name}: tensor {tname!r}: n_dims {n_dims} (ggml allows 1..{MAX_DIMS})")
        dims = tuple(cur.unpack("Q") for _ in range(n_dims))
        ttype = cur.unpack("I")
        rel = cur.unpack("Q")
        raw_infos.append((tname, dims, ttype, rel))
    data_offset = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for tname, dims, ttype, rel in raw_infos:
        if tname in tensors:
            raise LoadError(f"{name}: tensor {tname!r} appears twice")
        tensors[tname] = _tensor_info(name, tname, dims, ttype, rel, alignment, data_offset)
    _check_overlap(name, tensors)
    return GGUFHeader(version, metadata, types, tensors, alignment, data_offset)


def _tensor_info(name: str, tname: str, dims: tuple[int, ...], ttype: int, rel: int, alignment: int,
                 data_offset: int) -> TensorInfo:
    if ttype not in GGML_TYPES:
        raise UnsupportedFeature(f"{name}: tensor {tname!r} has ggml type {ttype}, which gpuport does not know "
                                 f"(known: {', '.join(n for n, _, _ in GGML_TYPES.values())})")
    tname_, block, block_bytes = GGML_TYPES[ttype]
    if any(d == 0 for d in dims) or dims[0] % block:
        raise LoadError(f"{name}: tensor {tname!r}: dims {list(dims)} do not fit {tname_} "
                        f"(the first must be a multiple of {block})")
    if rel % alignment:
        raise LoadError(f"{name}: tensor {tname!r}: offset {rel} is not a multiple of the alignment {alignment}")
    n = int(math.prod(dims))
    return TensorInfo(tname, dims, ttype, data_offset + rel, n // block * block_bytes)


def _check_overlap(name: str, tensors: dict[str, TensorInfo]) -> None:
    ordered = sorted(tensors.values(), key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise LoadError(f"{name}: tensors {a.name!r} and {b.name!r} overlap "
                            f"({a.offset}+{a.nbytes} > {b.offset})")


def check_layout(header: GGUFHeader, file_size: int, name: str = "gguf") -> None:
    """Every tensor's bytes lie inside a file of `file_size` bytes (else LoadError naming the tensor)."""
    for t in header.tensors.values():
        if t.offset + t.nbytes > file_size:
            raise LoadError(f"{name}: tensor {t.name!r} spans bytes {t.offset}..{t.offset + t.nbytes} but the "
                            f"file has {file_size} (truncated file?)")


def read_header_from(f: BinaryIO, name: str = "gguf", first: int = 1 << 16) -> GGUFHeader:
    """The header of an open binary file, read in growing pieces as a Range loader would fetch them."""
    buf = bytearray()
    want = first
    while True:
        piece = f.read(want - len(buf))
        buf += piece
        got = read_header(buf, name)
        if isinstance(got, GGUFHeader):
            return got
        if not piece or len(buf) < want:
            raise LoadError(f"{name}: truncated header: the file ends at byte {len(buf)}, the header needs "
                            f"at least {got.total}")
        want = max(got.total, 2 * len(buf))


class GGUFFile:
    """A local GGUF file: its header and each tensor's raw bytes (memory-mapped where possible)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise LoadError(f"{self.path}: cannot open: {exc}") from None
        with f:
            self.header = read_header_from(f, self.name)
            size = os.fstat(f.fileno()).st_size
            check_layout(self.header, size, self.name)
            try:
                import mmap
                self._data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ImportError, OSError, ValueError):  # no mmap (Pyodide, some filesystems): read it all
                f.seek(0)
                self._data = f.read()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.header.metadata

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return self.header.tensors

    def raw(self, tensor: str) -> np.ndarray:
        """The tensor's bytes as stored (uint8, read-only view of the file)."""
        try:
            t = self.header.tensors[tensor]
        except KeyError:
            raise LoadError(f"{self.name}: no tensor named {tensor!r}") from None
        return np.frombuffer(self._data, dtype=np.uint8, count=t.nbytes, offset=t.offset)


__all__ = ["GGML_TYPES", "GGML_TYPE_IDS", "GGUFFile", "GGUFHeader", "MoreBytes", "TensorInfo", "check_layout",
           "read_header", "read_header_from"]
