"""Pipeline manifest: recording, first-use order, scoping, staleness, corrupt storage never crashes."""

import asyncio
import json
import os
import warnings

import pytest
from gpuport.formats.records import MAX_RECORD_BYTES, RecordWarning
from gpuport.loading.stores import FileStore
from gpuport.ops.pipelines import (
    MAX_ENTRIES,
    PipelineManifest,
    PipelineSpec,
    scope_key,
    sha256,
)

ADAPTER = {"vendor": "llvmpipe", "architecture": "", "device": "llvmpipe (LLVM 15)", "description": "Mesa"}


def spec(i, label):
    return PipelineSpec(label, f"// {label}\n", "main", (("X", float(i)),), ("read", "rw"))


def manifest_with(*labels):
    m = PipelineManifest("scope")
    for i, label in enumerate(labels):
        m.record(spec(i, label), 12.5)
    return m


def test_entries_keep_first_use_order_and_roundtrip():
    m = manifest_with("gelu", "matmul", "softmax")
    m.record(spec(0, "gelu"), 1.0)   # seen again: order kept
    again = PipelineManifest.from_json("scope", m.to_json())
    assert [e.label for e in again.ordered()] == ["gelu", "matmul", "softmax"]
    assert again.loaded == 3 and not again.repaired
    assert [e.label for e in again.ordered({"softmax", "gelu"})] == ["gelu", "softmax"]


def test_scope_changes_with_adapter_browser_features_and_version():
    base = scope_key(ADAPTER, None, ["shader-f16"], "0.1.0")
    assert base == scope_key(dict(ADAPTER), None, ["shader-f16"], "0.1.0")
    assert base != scope_key({**ADAPTER, "device": "other"}, None, ["shader-f16"], "0.1.0")
    assert base != scope_key(ADAPTER, {"userAgent": "Firefox/153"}, ["shader-f16"], "0.1.0")
    assert base != scope_key(ADAPTER, None, [], "0.1.0")
    assert base != scope_key(ADAPTER, None, ["shader-f16"], "0.2.0")


def test_foreign_or_corrupt_records_are_ignored_and_marked_for_rewrite():
    good = manifest_with("gelu").to_json()
    for text in ["{not json", "[]", json.dumps({"format": 1, "scope": "other", "entries": []}),
                 good.replace("gelu\\n", "tampered\\n"), json.dumps({"format": 99, "scope": "scope"})]:
        with pytest.warns(RecordWarning, match="pipelines record"):
            m = PipelineManifest.from_json("scope", text)
        assert m.entries == {} and m.repaired and m.dirty, text[:40]
    assert not PipelineManifest.from_json("scope", None).repaired


def _entry(**change):
    d = json.loads(manifest_with("gelu").to_json())
    d["entries"][0].update(change)
    return json.dumps(d)


def _nested(depth):
    return json.dumps({"format": 1, "scope": "scope", "entries": "HOLE"}).replace('"HOLE"', "[" * depth + "]" * depth)


# (what, stored text, what the report must name)
BAD_RECORDS = [
    ("nested 100000 deep", _nested(100000), "entries[0][0][0][0][0][0][0]: nested deeper than 8 levels"),
    ("objects nested 3000 deep", '{"a": ' * 3000 + "1" + "}" * 3000, "nested deeper"),
    ("5 MiB", json.dumps({"format": 1, "scope": "scope", "entries": [], "pad": "x" * (5 << 20)}), "over the"),
    ("format true", json.dumps({"format": True, "scope": "scope", "entries": []}), "format: True"),
    ("format 1.0", json.dumps({"format": 1.0, "scope": "scope", "entries": []}), "format: 1.0"),
    ("entries a number", json.dumps({"format": 1, "scope": "scope", "entries": 5}), "entries: must be a list"),
    ("entry a string", json.dumps({"format": 1, "scope": "scope", "entries": ["gelu"]}),
     "entries[0]: must be an object"),
    ("too many entries", json.dumps({"format": 1, "scope": "scope", "entries": [{}] * (MAX_ENTRIES + 1)}),
     "more than the 256"),
    ("constant a string", _entry(constants={"X": "1"}), "entries[0].constants['X']: must be a number"),
    ("constant NaN", _entry(constants={"X": float("nan")}), "entries[0].constants['X']"),
    ("order negative", _entry(order=-1), "entries[0].order"),
    ("order a float", _entry(order=1.5), "entries[0].order"),
    ("compile_ms infinite", _entry(compile_ms=float("inf")), "entries[0].compile_ms"),
    ("bindings a string", _entry(bindings="rw"), "entries[0].bindings"),
    ("binding a number", _entry(bindings=[1]), "entries[0].bindings[0]"),
    ("source_sha256 short", _entry(source_sha256="ab"), "entries[0].source_sha256"),
    ("key a number", _entry(key=7), "entries[0].key"),
    ("label missing", json.dumps({"format": 1, "scope": "scope", "entries": [
        {k: v for k, v in json.loads(manifest_with("gelu").to_json())["entries"][0].items() if k != "label"}]}),
     "entries[0].label: missing"),
    ("undecodable bytes", "{\ufffd}", "UTF-8"),
    ("empty", "", "not JSON"),
]


@pytest.mark.parametrize("what,text,named", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_are_ignored_reported_and_marked_for_rewrite(what, text, named):
    with pytest.warns(RecordWarning) as caught:
        m = PipelineManifest.from_json("scope", text)
    assert m.entries == {} and m.dirty and m.loaded == 0
    assert named in m.repaired, (named, m.repaired)
    (warning,) = caught
    assert "pipelines record" in str(warning.message) and "scope.json" in str(warning.message)
    assert named in str(warning.message) and "rewritten" in str(warning.message)
    assert len(str(warning.message)) < 600


def test_a_stored_key_is_recomputed_not_trusted():
    for text in (_entry(key="0" * 32), _entry(constants={"X": 7.0})):
        m = PipelineManifest.from_json("scope", text)
        (entry,) = m.ordered()
        assert entry.key == m.spec_of(entry).key != "0" * 32 and not m.repaired
    m.record(m.spec_of(entry), 1.0)      # the same pipeline again: recognised, not recorded twice
    assert len(m.entries) == 1


def test_a_sound_record_is_not_reported():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = PipelineManifest.from_json("scope", manifest_with("gelu", "matmul").to_json())
    assert m.loaded == 2 and m.repaired is None and not m.dirty


def test_file_store_reads_a_bounded_prefix_and_only_regular_files(tmp_path):
    store = FileStore(tmp_path)
    (tmp_path / "big.json").write_bytes(b"[" * (3 * MAX_RECORD_BYTES))
    text = asyncio.run(store.load("big"))
    assert len(text) == MAX_RECORD_BYTES + 1
    with pytest.warns(RecordWarning, match="over the"):
        assert PipelineManifest.from_json("big", text).repaired
    (tmp_path / "dir.json").mkdir()
    assert asyncio.run(store.load("dir")) is None
    os.mkfifo(tmp_path / "fifo.json")     # opening it would block: never opened
    assert asyncio.run(store.load("fifo")) is None
    (tmp_path / "latin.json").write_bytes(b'{"format": 1, "scope": "latin", "entries": [], "x": "\xe9"}')
    with pytest.warns(RecordWarning, match="UTF-8"):
        assert PipelineManifest.from_json("latin", asyncio.run(store.load("latin"))).repaired


def test_changed_shader_drops_its_entries():
    m = manifest_with("gelu", "matmul")
    assert m.drop_stale({"gelu": "// gelu\n", "matmul": "// matmul v2\n"}) == 1
    assert [e.label for e in m.ordered()] == ["gelu"]


def test_file_store_roundtrip(tmp_path):
    store = FileStore(tmp_path / "p")
    m = manifest_with("gelu")
    store.save_soon("s1", m.to_json())
    assert PipelineManifest.from_json("scope", asyncio.run(store.load("s1"))).loaded == 1
    assert asyncio.run(store.load("missing")) is None
    assert sha256("x") == sha256("x") != sha256("y")
