"""The hand-written safetensors reader on the real MiniLM file and on corrupt synthetic files."""

import json
import struct
from pathlib import Path

import gpuport as gp
import numpy as np
import pytest
from gpuport.formats.safetensors import (
    check_layout,
    load_tensors,
    read_header,
    tensor_entries,
)
from gpuport.models import default_source

MODEL = Path(default_source("minilm-l6-v2")) / "model.safetensors"


def _write(path: Path, tensors: dict, header_extra: dict | None = None, cut: int = 0) -> Path:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        dt = {"float32": "F32", "int64": "I64"}[str(arr.dtype)]
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    data = struct.pack("<Q", len(h)) + h + b"".join(blobs)
    path.write_bytes(data[:len(data) - cut] if cut else data)
    return path


def test_real_header():
    with open(MODEL, "rb") as f:
        header, start = read_header(f)
    assert start == 11_416 and MODEL.stat().st_size == 90_868_376
    entries = tensor_entries(header)
    assert 100 <= len(entries) <= 110
    assert entries["embeddings.word_embeddings.weight"]["shape"] == [30522, 384]
    assert entries["embeddings.word_embeddings.weight"]["dtype"] == "F32"
    check_layout(header, start, MODEL.stat().st_size)
    # the same from the first bytes only (how a Range-fetched prefix is parsed)
    head_bytes = MODEL.read_bytes()[:start]
    assert read_header(head_bytes) == (header, start)


def test_real_tensors():
    w = load_tensors(MODEL, ["embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.bias"])
    emb = w["embeddings.word_embeddings.weight"]
    assert emb.shape == (30522, 384) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and 0.01 < float(np.abs(emb).mean()) < 1
    assert w["encoder.layer.5.output.dense.bias"].shape == (384,)


def test_roundtrip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([[1, 2, 3]], dtype=np.int64)
    got = load_tensors(_write(tmp_path / "ok.safetensors", {"a": a, "ids": b}, {"__metadata__": {"x": "y"}}))
    assert np.array_equal(got["a"], a) and np.array_equal(got["ids"], b)


def test_truncated_file_names_tensor(tmp_path):
    p = _write(tmp_path / "cut.safetensors", {"first": np.ones(4, np.float32), "last": np.ones(8, np.float32)},
               cut=5)
    with pytest.raises(gp.LoadError, match="'last'.*truncated"):
        load_tensors(p)


def test_truncated_header(tmp_path):
    p = _write(tmp_path / "h.safetensors", {"a": np.ones(4, np.float32)})
    data = p.read_bytes()
    (tmp_path / "h2.safetensors").write_bytes(data[:20])
    with pytest.raises(gp.LoadError, match="truncated header"):
        load_tensors(tmp_path / "h2.safetensors")
    (tmp_path / "h3.safetensors").write_bytes(data[:5])
    with pytest.raises(gp.LoadError, match="truncated"):
        load_tensors(tmp_path / "h3.safetensors")


def test_corrupt_headers(tmp_path):
    bad_len = tmp_path / "len.safetensors"
    bad_len.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(gp.LoadError, match="header length"):
        load_tensors(bad_len)
    garbage = tmp_path / "json.safetensors"
    garbage.write_bytes(struct.pack("<Q", 6) + b"{nope}")
    with pytest.raises(gp.LoadError, match="not valid JSON"):
        load_tensors(garbage)
    p = _write(tmp_path / "off.safetensors", {"w": np.ones(4, np.float32)},
               {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}})
    with pytest.raises(gp.LoadError, match="'w'.*data_offsets"):
        load_tensors(p)
    p = _write(tmp_path / "range.safetensors", {"w": np.ones(4, np.float32)},
               {"w": {"dtype": "F32", "shape": [4], "data_offsets": [1000, 1016]}})
    with pytest.raises(gp.LoadError, match="'w'"):
        load_tensors(p)


def test_unsupported_dtype_names_tensor(tmp_path):
    p = _write(tmp_path / "bf16.safetensors", {"w": np.ones(4, np.float32)},
               {"w": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}})
    with pytest.raises(gp.LoadError, match="'w'.*BF16"):
        load_tensors(p)


def test_missing_file_and_name(tmp_path):
    with pytest.raises(gp.LoadError):
        load_tensors(tmp_path / "nope.safetensors")
    p = _write(tmp_path / "ok.safetensors", {"a": np.ones(2, np.float32)})
    with pytest.raises(gp.LoadError, match="'b'"):
        load_tensors(p, ["b"])
