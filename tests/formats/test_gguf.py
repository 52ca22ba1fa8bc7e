"""The hand-written GGUF reader against ggml's own (PyPI `gguf`, test-only) on the real SmolLM2 file and on
small files of every metadata type, plus progressive (prefix) parsing and truncated/corrupt files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gpuport.errors import LoadError, UnsupportedFeature
from gpuport.formats.gguf import (
    GGUFFile,
    GGUFHeader,
    MoreBytes,
    check_layout,
    read_header,
    read_header_from,
)
from gpuport.host.quant import dequantize
from smollm2 import gguf_file, gguf_path

VT = gguf.GGUFValueType


def _type_name(field: gguf.ReaderField) -> str:
    names = [t.name.lower() for t in field.types]
    return f"array[{names[1]}]" if names[0] == "array" else names[0]


def _assert_same_as_ggml(path: Path) -> GGUFHeader:
    """Every metadata key, its type and value, and every tensor's offset/dims/type/size equal gguf's reader."""
    ours = GGUFFile(path)
    ref = gguf.GGUFReader(path)
    h = ours.header
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert h.version == ref.fields["GGUF.version"].contents()
    assert list(h.metadata) == list(fields), "metadata keys (in file order)"
    for key, field in fields.items():
        assert h.value_types[key] == _type_name(field), key
        assert h.metadata[key] == field.contents(), key
    assert h.data_offset == ref.data_offset and h.alignment == ref.alignment
    assert list(h.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        mine = h.tensors[t.name]
        assert mine.dims == tuple(int(d) for d in t.shape), t.name
        assert mine.ggml_type == int(t.tensor_type), t.name
        assert mine.offset == t.data_offset and mine.nbytes == t.n_bytes, t.name
        assert ours.raw(t.name).tobytes() == np.asarray(t.data).tobytes(), t.name
    return h


def test_real_file_matches_ggml_reader():
    h = _assert_same_as_ggml(gguf_path())
    assert h.version == 3 and len(h.tensors) == 272 and h.data_offset == 1_785_664
    kinds = [t.type_name for t in h.tensors.values()]
    assert (kinds.count("Q4_1"), kinds.count("F32"), kinds.count("Q8_0")) == (210, 61, 1)
    emb = h.tensors["token_embd.weight"]
    assert emb.type_name == "Q8_0" and emb.shape == (49152, 576) and emb.dims == (576, 49152)
    assert h.metadata["llama.attention.head_count_kv"] == 3 and h.metadata["tokenizer.ggml.pre"] == "smollm"
    assert h.value_types["tokenizer.ggml.merges"] == "array[string]"
    assert len(h.metadata["tokenizer.ggml.merges"]) == 48900
    check_layout(h, gguf_path().stat().st_size)


def test_every_value_type_and_alignment(tmp_path):
    """A file with one key of each type, arrays of each element type, a custom alignment and raw tensors."""
    path = tmp_path / "all.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    scalars = {VT.UINT8: 255, VT.INT8: -128, VT.UINT16: 65535, VT.INT16: -32768, VT.UINT32: 2**32 - 1,
               VT.INT32: -2**31, VT.FLOAT32: 0.1, VT.UINT64: 2**64 - 1, VT.INT64: -2**63, VT.FLOAT64: 1e-300,
               VT.BOOL: True, VT.STRING: "héllo ✓ 😀"}
    for vt, v in scalars.items():
        w.add_key_value(f"s.{vt.name.lower()}", v, vt)
    arrays = {VT.UINT8: [0, 1, 255], VT.INT8: [-1, 2], VT.UINT16: [7], VT.INT16: [-7, 7], VT.UINT32: [1, 2, 3],
              VT.INT32: [-5, 5], VT.FLOAT32: [0.5, -1.25], VT.UINT64: [2**63], VT.INT64: [-1], VT.FLOAT64: [3.5],
              VT.BOOL: [True, False, True], VT.STRING: ["a", "", "ünï"]}
    for vt, v in arrays.items():
        w.add_key_value(f"a.{vt.name.lower()}", v, VT.ARRAY, sub_type=vt)
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 64)).astype(np.float16))
    w.add_tensor("q41", rng.integers(0, 256, (4, 2 * 20), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    w.add_tensor("q80", rng.integers(0, 256, (3, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q6k", rng.integers(0, 256, (1, 210), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = _assert_same_as_ggml(path)
    assert h.alignment == 64 and all(t.offset % 64 == 0 for t in h.tensors.values())
    assert h.tensors["q41"].shape == (4, 64) and h.tensors["q80"].shape == (3, 32)
    # a type the header can size but gpuport does not compute with
    with pytest.raises(UnsupportedFeature, match="Q6_K"):
        dequantize(GGUFFile(path).raw("q6k"), "Q6_K", (1, 256))


def test_progressive_prefix_parsing():
    """A Range loader asks for more until the header parses; each answer names a longer prefix."""
    data = gguf_path().read_bytes()[:2_000_000]
    full = read_header(data)
    assert isinstance(full, GGUFHeader)
    have, fetches = 1024, 0
    while True:
        got = read_header(memoryview(data)[:have])
        fetches += 1
        if isinstance(got, GGUFHeader):
            break
        assert isinstance(got, MoreBytes) and got.total > have
        have = max(got.total, 2 * have)
    assert got.tensors == full.tensors and got.metadata == full.metadata and fetches <= 12
    # every short prefix asks for more, never raises
    for n in (0, 3, 4, 8, 23, 24, 100, 1_000, 100_000, 1_785_000):
        r = read_header(data[:n])
        assert isinstance(r, MoreBytes) and r.total > n, n


# --- corrupt and truncated files -------------------------------------------------------------------------

def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _build(kvs: list[bytes] = (), tensors: list[tuple] = (), version: int = 3, magic: bytes = b"GGUF",
           alignment: int = 32, data: bytes | None = None) -> bytes:
    """A GGUF file from raw kv records and (name, dims, type, rel_offset) tensor infos."""
    out = magic + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    for name, dims, ttype, rel in tensors:
        out += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, rel)
    out += b"\0" * (-len(out) % alignment)
    return out + (data if data is not None else b"\0" * 4096)


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _u32(key: str, v: int) -> bytes:
    return _kv(key, 4, struct.pack("<I", v))


F32_T = ("w", (8,), 0, 0)


@pytest.mark.parametrize("blob, exc, needles", [
    (_build(magic=b"GGML"), LoadError, ["magic"]),
    (_build(version=1), UnsupportedFeature, ["version 1"]),
    (_build(version=4), UnsupportedFeature, ["version 4"]),
    (b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + b"\0" * 64, UnsupportedFeature, ["big-endian"]),
    (_build(kvs=[_kv("k", 13, b"")]), LoadError, ["'k'", "value type 13"]),
    (_build(kvs=[_kv("k", 9, struct.pack("<IQ", 9, 1))]), LoadError, ["'k'", "element type"]),
    (_build(kvs=[_kv("k", 9, struct.pack("<IQ", 4, 2**40))]), LoadError, ["'k'", "array length"]),
    (_build(kvs=[_kv("k", 8, struct.pack("<Q", 2**62))]), LoadError, ["'k'", "string length"]),
    (_build(kvs=[_kv("k", 8, _s(b"\xff\xfe"))]), LoadError, ["'k'", "UTF-8"]),
    (_build(kvs=[_kv("k", 7, b"\x02")]), LoadError, ["'k'", "bool"]),
    (_build(kvs=[_u32("k", 1), _u32("k", 2)]), LoadError, ["'k'", "twice"]),
    (_build(kvs=[_u32("general.alignment", 24)], alignment=24), LoadError, ["general.alignment"]),
    (_build(kvs=[_kv("general.alignment", 10, struct.pack("<Q", 32))]), LoadError, ["general.alignment"]),
    (_build(tensors=[("w", (32,), 4, 0)]), UnsupportedFeature, ["'w'", "ggml type 4"]),
    (_build(tensors=[("w", (32,), 99, 0)]), UnsupportedFeature, ["'w'", "ggml type 99"]),
    (_build(tensors=[("w", (1, 1, 1, 1, 1), 0, 0)]), LoadError, ["'w'", "n_dims 5"]),
    (_build(tensors=[("w", (0,), 0, 0)]), LoadError, ["'w'", "dims"]),
    (_build(tensors=[("w", (48,), 3, 0)]), LoadError, ["'w'", "multiple of 32"]),
    (_build(tensors=[("w", (8,), 0, 16)]), LoadError, ["'w'", "alignment"]),
    (_build(tensors=[F32_T, F32_T]), LoadError, ["'w'", "twice"]),
    (_build(tensors=[("a", (16,), 0, 0), ("b", (8,), 0, 32)]), LoadError, ["'a'", "'b'", "overlap"]),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0), LoadError, ["tensor_count"]),
])
def test_corrupt_headers(blob, exc, needles):
    with pytest.raises(exc) as info:
        read_header(blob, "bad.gguf")
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert "bad.gguf" in str(info.value)


def test_truncated_files(tmp_path):
    good = _build(kvs=[_u32("general.alignment", 32), _kv("name", 8, _s("tiny"))], tensors=[F32_T],
                  data=np.arange(8, dtype=np.float32).tobytes())
    h = read_header(good)
    assert isinstance(h, GGUFHeader) and h.end() == len(good) and h.metadata["name"] == "tiny"
    (tmp_path / "ok.gguf").write_bytes(good)
    assert GGUFFile(tmp_path / "ok.gguf").raw("w").view(np.float32).tolist() == list(range(8))
    # cut inside the data: the table fits, the tensor does not
    (tmp_path / "data.gguf").write_bytes(good[:-4])
    with pytest.raises(LoadError, match=r"tensor 'w' spans .*truncated"):
        GGUFFile(tmp_path / "data.gguf")
    # cut inside the header: the reader needs more than the file has
    for cut in (3, 20, 40, 60):
        (tmp_path / "head.gguf").write_bytes(good[:cut])
        with pytest.raises(LoadError, match="truncated header"):
            GGUFFile(tmp_path / "head.gguf")
    with open(gguf_path(), "rb") as f:
        assert read_header_from(f, first=4096).tensors == gguf_file().tensors
    with pytest.raises(LoadError, match="no tensor named"):
        gguf_file().raw("nope")
    with pytest.raises(LoadError, match="cannot open"):
        GGUFFile(tmp_path / "missing.gguf")
