"""The chunk manifest of a model file (what `gpuport pack-model` writes as manifest.json beside it): the
file cut into fixed chunks with each chunk's sha256, the file's size and sha256, the header and which
chunks each tensor spans. The loader verifies every byte it uses against it.

Three containers: safetensors (`header_len` is the JSON's length, after an 8-byte length prefix), GGUF
(`container: "gguf"`; `header_len` is everything before the aligned data section, tensors' `dtype` is the
ggml type name: "Q4_1", "F32", ...) and CTranslate2's model.bin (`container: "ctranslate2"`; `header_len` is the
bytes before the first variable's record; the tensor table, dtypes named as safetensors names them, is read from
the whole file here, since its records lie between the tensors).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Iterable, Sequence

from ..errors import LoadError
from .records import (
    RecordError,
    need,
    need_dict,
    need_hex64,
    need_int,
    need_key,
    need_list,
    need_str,
    parse_json,
    short_repr,
)
from .safetensors import DTYPES, MAX_HEADER, check_layout, read_header, tensor_entries

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHTS_NAME = "model.safetensors"
CONTAINERS = ("safetensors", "gguf", "ctranslate2")
MANIFEST_CHUNK = 1 << 20          # pack-model's chunk size: the unit of hashing, caching and resuming
MAX_MANIFEST_BYTES = 4 << 20      # MiniLM's is 33 KB; a manifest this big is not one pack-model wrote
MAX_MANIFEST_DEPTH = 4            # manifest > tensors > tensor > shape


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_tensors(m: dict, entries: dict, names: Sequence[str], data_start: int, weights_url: str,
                  manifest_url: str) -> None:
    """LoadError unless every tensor of `names` is in the file's header (`entries`, offsets from `data_start`) with
    a dtype gpuport loads, and in the manifest at the same bytes (a stale manifest is named as such)."""
    for n in names:
        if n not in entries:
            raise LoadError(f"{weights_url}: no tensor named {n!r}")
        if entries[n]["dtype"] not in DTYPES:
            raise LoadError(f"{weights_url}: tensor {n!r} has dtype {entries[n]['dtype']}, which gpuport cannot load")
        mt, offsets = m["tensors"].get(n), entries[n]["data_offsets"]
        where = [data_start + offsets[0], data_start + offsets[1]]
        if mt is None:
            raise LoadError(f"{manifest_url}: tensors: no {n!r}, which {weights_url} has "
                            "(stale manifest: run `gpuport pack-model`)")
        if [mt["start"], mt["end"]] != where:
            raise LoadError(f"{manifest_url}: tensors[{n!r}]: bytes {mt['start']}..{mt['end']}, but the header of "
                            f"{weights_url} puts it at {where[0]}..{where[1]} (stale manifest: run `gpuport pack-model`)")


def layer_of(name: str) -> str | None:
    """"encoder.layer.3.attention..." or GGUF's "blk.3.attn_q.weight" -> "3"; embeddings -> "embeddings";
    CTranslate2's "decoder/layer_3/ffn/..." -> "decoder.3" and "encoder/conv1/weight" -> "encoder"; else None."""
    m = re.match(r"(encoder|decoder)/(?:layer_(\d+)/)?", name)
    if m:
        return m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    m = re.search(r"(?:^|\.)(?:layers?|blk)\.(\d+)\.", name)
    if m:
        return m.group(1)
    return name.split(".")[0] if name.startswith("embeddings") else None


def build_manifest(path: str | os.PathLike, chunk_size: int = MANIFEST_CHUNK, model: str | None = None,
                   files: Iterable[str] = ()) -> dict:
    """The chunk manifest of a local safetensors, GGUF or CTranslate2 model.bin file (what `gpuport pack-model`
    writes)."""
    # the formats a manifest is built from (natively, by pack-model); a page's load never reads them
    from .ctranslate2 import read_index
    from .gguf import MAGIC, read_header_from
    from .gguf import check_layout as check_gguf_layout
    path = os.fspath(path)
    if chunk_size < 4096:
        raise ValueError(f"chunk_size {chunk_size} is too small (at least 4096 bytes)")
    size = os.path.getsize(path)
    label = os.path.basename(path)
    with open(path, "rb") as f:
        is_gguf = f.read(4) == MAGIC
        f.seek(0)
        container = "gguf" if is_gguf else "ctranslate2" if label.endswith(".bin") else "safetensors"
        if container == "ctranslate2":
            index = read_index(f, size, label)
            data_start = header_len = index.header_len
            entries = {v.name: (v.offset, v.offset + v.nbytes, v.dtype, list(v.shape)) for v in index.variables.values()}
        elif is_gguf:
            header = read_header_from(f, label)
            check_gguf_layout(header, size, label)
            data_start = header_len = header.data_offset
            entries = {t.name: (t.offset, t.offset + t.nbytes, t.type_name, list(t.shape))
                       for t in sorted(header.tensors.values(), key=lambda t: t.offset)}
        else:
            st_header, data_start = read_header(f, label)
            check_layout(st_header, data_start, size, label)
            header_len = data_start - 8
            entries = {n: (data_start + i["data_offsets"][0], data_start + i["data_offsets"][1], i["dtype"], i["shape"])
                       for n, i in tensor_entries(st_header).items()}
        whole = hashlib.sha256()
        chunks = []
        f.seek(0)
        head_bytes = f.read(data_start)
        f.seek(0)
        start = 0
        while start < size:
            block = f.read(min(chunk_size, size - start))
            whole.update(block)
            chunks.append({"start": start, "end": start + len(block), "sha256": sha256(block)})
            start += len(block)
    tensors = {name: {"start": b, "end": e, "dtype": dtype, "shape": shape,
                      "chunks": chunk_span(b, e, chunk_size, len(chunks)), "layer": layer_of(name)}
               for name, (b, e, dtype, shape) in entries.items()}
    directory = os.path.dirname(path)
    extra = {}
    for fname in files:
        p = os.path.join(directory, fname)
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                extra[fname] = {"size": os.path.getsize(p), "sha256": sha256(fh.read())}
    return {"format": MANIFEST_FORMAT, "container": container, "model": model,
            "file": label, "size": size, "sha256": whole.hexdigest(), "header_len": header_len,
            "data_start": data_start, "header_sha256": sha256(head_bytes), "chunk_size": chunk_size,
            "chunks": chunks, "tensors": tensors, "files": extra}


def parse_manifest(text: str | bytes, where: str) -> dict:
    """The manifest in `text` (JSON), bounded and checked: LoadError naming `where` and the field."""
    try:
        data = parse_json(text, MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH)
    except RecordError as exc:
        what = f"not a valid gpuport chunk manifest: {exc}" if exc.field else f"manifest is {exc.problem}"
        raise LoadError(f"{where}: {what}") from None
    return check_manifest(data, where)


def check_manifest(m: Any, where: str) -> dict:
    """`m` if it is a well-formed manifest (else LoadError naming `where` and the field): every field's
    type, chunks contiguous over the file, each tensor inside the data and mapped to exactly the chunks
    its bytes lie in, header_len and data_start consistent, sha256 fields 64 hex digits."""
    try:
        return _checked(m)
    except RecordError as exc:
        raise LoadError(f"{where}: not a valid gpuport chunk manifest: {exc}") from None


def _checked(m: Any) -> dict:
    need_dict(m, "manifest")
    if need_key(m, "format", "format") != MANIFEST_FORMAT:
        raise RecordError("format", f"{short_repr(m['format'])}, expected {MANIFEST_FORMAT}")
    for key in ("model", "file"):
        need_str(m.get(key), key, optional=True)
    size = need(m, "size", need_int)
    need(m, "sha256", need_hex64)
    cs = need(m, "chunk_size", need_int, low=1)
    container = m.get("container", "safetensors")   # manifests from before GGUF have no "container"
    if container not in CONTAINERS:
        raise RecordError("container", f"{short_repr(container)}, expected one of {', '.join(CONTAINERS)}")
    header_len = need(m, "header_len", need_int, low=2, high=MAX_HEADER)
    data_start = need(m, "data_start", need_int, high=size)
    prefix = 8 if container == "safetensors" else 0   # safetensors' u64 length before its JSON header
    if data_start != header_len + prefix:
        raise RecordError("data_start", f"{data_start} is not {prefix} + header_len ({header_len + prefix})")
    need(m, "header_sha256", need_hex64)

    chunks = need(m, "chunks", need_list, length=-(-size // cs))
    pos = 0
    for i, c in enumerate(chunks):
        f = f"chunks[{i}]"
        need_dict(c, f)
        if need(c, "start", need_int, f) != pos:
            raise RecordError(f + ".start", f"{c['start']}, expected {pos} "
                              f"({f'where chunk {i - 1} ends' if i else 'the start of the file'})")
        end = need(c, "end", need_int, f)
        if end != min(pos + cs, size):
            raise RecordError(f + ".end", f"{end}, expected {min(pos + cs, size)} (chunks of {cs} bytes "
                              f"over a file of {size})")
        need(c, "sha256", need_hex64, f)
        pos = end

    for name, t in need(m, "tensors", need_dict).items():
        f = f"tensors[{name!r}]"
        need_dict(t, f)
        start = need(t, "start", need_int, f, low=data_start, high=size)
        end = need(t, "end", need_int, f, low=start, high=size)
        need(t, "dtype", need_str, f)
        for j, d in enumerate(need(t, "shape", need_list, f)):
            need_int(d, f"{f}.shape[{j}]")
        span = need(t, "chunks", need_list, f, length=2)
        for j, k in enumerate(span):
            need_int(k, f"{f}.chunks[{j}]", high=len(chunks) - 1)
        if span != chunk_span(start, end, cs, len(chunks)):
            raise RecordError(f + ".chunks", f"{span}, but bytes {start}..{end} lie in chunks "
                              f"{chunk_span(start, end, cs, len(chunks))}")
        need_str(t.get("layer"), f + ".layer", optional=True)

    for fname, entry in need_dict(m.get("files", {}), "files").items():
        f = f"files[{fname!r}]"
        need_dict(entry, f)
        need(entry, "size", need_int, f)
        need(entry, "sha256", need_hex64, f)
    return m


def chunk_span(start: int, end: int, chunk_size: int, n_chunks: int) -> list[int]:
    """[first, last]: the chunks that bytes [start, end) of the file lie in (an empty tensor: the chunk
    where it starts, the last one if it starts at the end of the file)."""
    last = max(start, end - 1)
    return [min(start // chunk_size, n_chunks - 1), min(last // chunk_size, n_chunks - 1)]


def payload_per_chunk(m: dict, names: Iterable[str]) -> dict[int, int]:
    """Chunk index -> how many bytes of the tensors `names` it holds (what the loader's byte stages count)."""
    out: dict[int, int] = {}
    for n in names:
        t = m["tensors"][n]
        for i in range(t["chunks"][0], t["chunks"][1] + 1):
            c = m["chunks"][i]
            out[i] = out.get(i, 0) + max(0, min(c["end"], t["end"]) - max(c["start"], t["start"]))
    return out


def interleaved_chunks(m: dict, components: Iterable[Sequence[str]], per_span: int) -> list[int]:
    """The chunks of `components` (tensor name lists, the most urgent first) in turns of one span each, so that
    every component's bytes arrive from the start (a chunk two components share goes with the first to ask)."""
    queues, seen = [], set()
    for part in components:
        chunks = sorted({i for n in part for i in range(m["tensors"][n]["chunks"][0], m["tensors"][n]["chunks"][1] + 1)}
                        - seen)
        seen.update(chunks)
        queues.append(chunks)
    out: list[int] = []
    while any(queues):
        for q in queues:
            out += q[:per_span]
            del q[:per_span]
    return out


def manifest_table(m: dict) -> dict[str, dict]:
    """{name: {dtype, shape, data_offsets}} from the manifest: for a CTranslate2 model.bin the only place its table
    is whole (its records lie between the tensors; pack-model read them), and every chunk is hashed before use."""
    return {n: {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [t["start"], t["end"]]}
            for n, t in m["tensors"].items()}
