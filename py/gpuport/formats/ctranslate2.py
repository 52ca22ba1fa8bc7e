"""A reader of CTranslate2's model.bin (binary format version 6, as CTranslate2 4.x writes it). Pure Python + NumPy
(runs in Pyodide).

Layout (little-endian; CTranslate2's python/ctranslate2/specs/model_spec.py, `ModelSpec._serialize`): u32 format
version, the spec name, u32 spec revision, u32 variable count; each variable as its name, u8 rank, u32 dims[rank],
u8 dtype, u32 byte count and the bytes; then u32 alias count and (alias, variable name) pairs. A string is a u16
byte length and that many bytes, NUL-terminated. Names and shapes sit between the tensors' bytes, so the tensor
table is only known after a pass over the whole file: `gpuport pack-model` makes that pass once and writes the
table into the chunk manifest, which a page then trusts (every chunk it reads is hashed against the manifest).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import LoadError

VERSIONS = (6,)
# CTranslate2's DataType enum -> the safetensors-style name gpuport's loader and manifest use.
DTYPES = {0: "F32", 1: "I8", 2: "I16", 3: "I32", 4: "F16", 5: "BF16"}
NUMPY = {"F32": np.dtype("<f4"), "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"),
         "F16": np.dtype("<f2")}
MAX_NAME = 1 << 12
MAX_VARIABLES = 1 << 16
MAX_RANK = 8


@dataclass(frozen=True)
class Variable:
    """One stored tensor: `dtype` as the manifest names it ("F16", "F32", "I8", ...), `offset` absolute."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class ModelBin:
    """The spec and tensor table of a model.bin; `aliases` maps a name to the variable it shares
    (Whisper's output projection is its token embedding)."""

    version: int
    spec: str
    revision: int
    header_len: int                 # the bytes before the first variable's record
    variables: dict[str, Variable]
    aliases: dict[str, str]

    def resolve(self, name: str) -> Variable:
        try:
            return self.variables[self.aliases.get(name, name)]
        except KeyError:
            raise LoadError(f"{self.spec}: no variable named {name!r}") from None


class _Cursor:
    def __init__(self, f: BinaryIO, size: int, where: str) -> None:
        self.f, self.size, self.where = f, size, where

    def read(self, n: int, what: str) -> bytes:
        pos = self.f.tell()
        data = self.f.read(n)
        if len(data) != n:
            raise LoadError(f"{self.where}: truncated: {what} at byte {pos} needs {n} bytes, the file ends at "
                            f"{self.size}")
        return data

    def u(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.u("H", f"the length of {what}")
        if not 1 <= n <= MAX_NAME:
            raise LoadError(f"{self.where}: {what} has length {n} at byte {self.f.tell() - 2} (not a model.bin of "
                            "a known format?)")
        raw = self.read(n, what)
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise LoadError(f"{self.where}: {what} at byte {self.f.tell() - n} is not UTF-8") from None


def read_index(f: BinaryIO, size: int, where: str) -> ModelBin:
    """The table of the model.bin open as `f` (`size` bytes), seeking over the tensors' bytes. LoadError naming
    `where` and what is wrong: an unknown format version, a truncated file, a byte count that is not the shape's."""
    c = _Cursor(f, size, where)
    version = c.u("I", "the format version")
    if version not in VERSIONS:
        raise LoadError(f"{where}: CTranslate2 binary format version {version} is not supported (supported: "
                        f"{', '.join(map(str, VERSIONS))}; or not a CTranslate2 model.bin at all)")
    spec = c.string("the spec name")
    revision = c.u("I", "the spec revision")
    count = c.u("I", "the variable count")
    if count > MAX_VARIABLES:
        raise LoadError(f"{where}: {count} variables is not plausible (corrupt header)")
    header_len = f.tell()
    variables: dict[str, Variable] = {}
    for i in range(count):
        name = c.string(f"variable {i}'s name")
        rank = c.u("B", f"{name!r}'s rank")
        if rank > MAX_RANK:
            raise LoadError(f"{where}: variable {name!r} has rank {rank} (corrupt?)")
        shape = tuple(c.u("I", f"{name!r}'s dims") for _ in range(rank))
        code = c.u("B", f"{name!r}'s dtype")
        if code not in DTYPES:
            raise LoadError(f"{where}: variable {name!r} has dtype code {code}, not one CTranslate2 defines")
        nbytes = c.u("I", f"{name!r}'s byte count")
        dtype = DTYPES[code]
        itemsize = NUMPY[dtype].itemsize if dtype in NUMPY else 2
        if nbytes != itemsize * math.prod(shape):
            raise LoadError(f"{where}: variable {name!r} {dtype} {list(shape)} has {nbytes} bytes, expected "
                            f"{itemsize * math.prod(shape)}")
        offset = f.tell()
        if offset + nbytes > size:
            raise LoadError(f"{where}: truncated: variable {name!r} spans bytes {offset}..{offset + nbytes}, the "
                            f"file ends at {size}")
        f.seek(nbytes, os.SEEK_CUR)
        variables[name] = Variable(name, shape, dtype, offset, nbytes)
    aliases: dict[str, str] = {}
    if f.tell() < size:
        for i in range(c.u("I", "the alias count")):
            alias = c.string(f"alias {i}")
            aliases[alias] = c.string(f"alias {alias!r}'s target")
            if aliases[alias] not in variables:
                raise LoadError(f"{where}: alias {alias!r} names {aliases[alias]!r}, which is not a variable")
    return ModelBin(version, spec, revision, header_len, variables, aliases)


def array(var: Variable, buf: bytes | memoryview | np.ndarray, base: int = 0, where: str = "model.bin") -> np.ndarray:
    """Variable `var` as a NumPy array (a read-only view) from `buf`, which holds the file from byte `base`."""
    if var.dtype not in NUMPY:
        raise LoadError(f"{where}: variable {var.name!r} is {var.dtype}, which gpuport does not read")
    start = var.offset - base
    if start < 0 or start + var.nbytes > len(buf):
        raise LoadError(f"{where}: variable {var.name!r} lies outside the bytes given")
    out = np.frombuffer(buf, dtype=NUMPY[var.dtype], count=var.nbytes // NUMPY[var.dtype].itemsize, offset=start)
    return out.reshape(var.shape)


class ModelBinFile:
    """A model.bin on disk, memory-mapped: its table, and each variable as an array without a copy."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self.index = read_index(f, size, self.path)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise LoadError(f"{self.path}: {exc}") from None

    def array(self, name: str) -> np.ndarray:
        return array(self.index.resolve(name), self._map, 0, self.path)


__all__ = ["DTYPES", "ModelBin", "ModelBinFile", "Variable", "array", "read_index"]
