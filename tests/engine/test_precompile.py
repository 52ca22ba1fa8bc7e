"""Precompilation natively: the manifest survives the process, corrupt files are repaired, ops don't wait."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import gpuport as gp
from gpuport.engine.pipeline_cache import PipelineCache, ShaderPrecompiler
from gpuport.loading.stores import FileStore
from gpuport.ops import kernels
from gpuport.ops.kernels import RB_DEFAULT
from gpuport.ops.opspecs import KERNEL_DEFS
from gpuport.ops.pipelines import PipelineManifest, PipelineSpec

SCRIPT = textwrap.dedent("""
    import asyncio, json, gpuport as gp
    async def main():
        rt = await gp.open(backend="webgpu")
        report = await rt.precompile(ops=["gelu", "matmul"])
        print(json.dumps({k: v for k, v in report.items() if k != "order"}))
        rt.close()
    asyncio.run(main())
""")


def run_process(cache):
    env = dict(os.environ, GPUPORT_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def expected_pipelines(report) -> int:
    """gelu + 4 tiled matmul variants + 6 register-blocked ones (2 layouts x no bias, bias, bias + GELU epilogue),
    and for each layout whose measurement chose another variant than the default, that variant's two bias ones."""
    return 11 + 2 * sum(report["tuning"][layout]["chosen"] != RB_DEFAULT[layout] for layout in RB_DEFAULT)


def test_the_next_process_reuses_the_disk_manifest_and_a_corrupt_one_is_ignored_and_rewritten(tmp_path):
    first = run_process(tmp_path)
    assert first["from_manifest"] == 0 and first["pipelines"] == expected_pipelines(first), first
    assert first["pipelines"] - first.get("tuned", 0) == 11, first   # what tuning's choice added is counted apart
    assert first["tuning"]["tb"]["measured"], first
    second = run_process(tmp_path)
    assert second["from_manifest"] == 11 and second["recorded_ms"] > 0, second
    assert not second["tuning"]["tb"]["measured"], second   # the choice came from the manifest

    (path,) = (tmp_path / "pipelines").glob("*.json")
    path.write_text("{corrupt")
    report = run_process(tmp_path)
    assert report["from_manifest"] == 0 and report["pipelines"] == expected_pipelines(report), report
    assert json.loads(path.read_text())["format"] == 1


def test_changed_shader_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    rt = gp.open_sync(backend="webgpu")
    asyncio.run(rt.precompile(ops=["gelu"]))
    rt.close()
    (path,) = (tmp_path / "pipelines").glob("*.json")
    data = json.loads(path.read_text())
    data["entries"][0]["source"] += "\n// edited"
    data["entries"][0]["source_sha256"] = __import__("hashlib").sha256(
        data["entries"][0]["source"].encode()).hexdigest()
    path.write_text(json.dumps(data))
    rt = gp.open_sync(backend="webgpu")
    report = asyncio.run(rt.precompile(ops=["gelu"]))
    rt.close()
    assert report["from_manifest"] == 0 and report["pipelines"] == 1, report


def test_shader_precompiler_helpers(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    with gp.open_sync(backend="webgpu") as rt:
        pre = ShaderPrecompiler(rt)
        essential = asyncio.run(pre.precompile_essential_shaders())
        assert essential["pipelines"] >= 6 and not essential["failed"]
        again = asyncio.run(pre.precompile_operation("matmul"))
        assert again["pipelines"] == 0 and again["already"] == 10   # 4 tiled + 6 register-blocked
    with gp.open_sync(backend="cpu") as cpu:
        assert asyncio.run(cpu.precompile())["pipelines"] == 0


def test_unknown_op_is_named(tmp_path):
    with gp.open_sync(backend="webgpu") as rt:
        try:
            asyncio.run(rt.precompile(ops=["convolution"]))
        except ValueError as exc:
            assert "convolution" in str(exc)
        else:
            raise AssertionError("no error")


AUTO = textwrap.dedent("""
    import asyncio, json, gpuport as gp
    import numpy as np
    async def main():
        rt = gp.open_sync()                       # backend="auto"
        paused = []
        async def pause():
            paused.append(1)
        report = await rt.precompile(pause=pause)
        x = rt.tensor(np.ones((8, 8), np.float32))
        with rt.pinned("webgpu"):                 # placement sends softmax to the device
            await rt.ops.softmax(x).read()
        print(json.dumps({"ops": report["ops"], "pipelines": report["pipelines"], "paused": len(paused),
                          "kernels": sorted(rt.info()["kernels"])}))
        rt.close()
    asyncio.run(main())
""")


def test_under_auto_precompile_builds_what_placement_ran_on_the_device_before(tmp_path):
    """backend="auto": rt.precompile() builds no op's pipelines of its own, only those this adapter ran on the device
    before (the manifest), so a software adapter where the host wins builds nothing it will not use; pause() is awaited
    before each pipeline starts."""
    def run() -> dict:
        env = dict(os.environ, GPUPORT_CACHE=str(tmp_path))
        out = subprocess.run([sys.executable, "-c", AUTO], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert "softmax" not in first["ops"] and "softmax" in first["kernels"], first   # a first run: softmax was not built
    assert "softmax" in second["ops"], second      # it ran on the device last time: built ahead now
    assert not {"conv1d", "rope", "stft_power"} & set(second["ops"]), second   # never ran there: never built
    assert second["paused"] == second["pipelines"] > 0, second


def test_loading_a_manifest_reads_the_sources_of_the_kernels_it_names_only(tmp_path, monkeypatch):
    """At open() the manifest's entries are checked against their kernels' current WGSL: an empty manifest (a software
    adapter's, where the host wins and nothing is recorded) reads no shader file, one naming gelu reads gelu's alone,
    and an entry whose source changed is still dropped (reading all 43 files cost a warm page's open() 23-45 ms)."""
    read = []
    source = kernels.shader_source
    monkeypatch.setattr(kernels, "shader_source", lambda name: read.append(name) or source(name))
    store = FileStore(tmp_path)
    cache = PipelineCache(store, "test")
    asyncio.run(cache.load())
    assert read == [] and cache.manifest.entries == {}

    gelu, matmul = KERNEL_DEFS["gelu"][1], KERNEL_DEFS["matmul"][1]
    manifest = PipelineManifest(cache.scope)
    manifest.record(PipelineSpec("gelu", source(gelu.shader), gelu.entry_point, (), gelu.bindings), 1.0)
    manifest.record(PipelineSpec("matmul", "// an older matmul\n", matmul.entry_point, (), matmul.bindings), 1.0)
    store.save_soon(cache.scope, manifest.to_json())
    asyncio.run(cache.load())
    assert sorted(read) == sorted({gelu.shader, matmul.shader})
    assert [e.label for e in cache.manifest.ordered()] == ["gelu"]
