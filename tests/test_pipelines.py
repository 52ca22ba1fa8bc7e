"""Pipeline manifest: recording, first-use order, scoping, staleness, corrupt storage never crashes."""

import asyncio
import json

from gpuport.pipelines import PipelineManifest, PipelineSpec, scope_key, sha256
from gpuport.stores import FileStore

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
        m = PipelineManifest.from_json("scope", text)
        assert m.entries == {} and m.repaired and m.dirty, text[:40]
    assert not PipelineManifest.from_json("scope", None).repaired


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
