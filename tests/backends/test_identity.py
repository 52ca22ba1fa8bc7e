"""backends/identity.py and the deferred native device: under auto, the adapter opens when placement first needs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gpuport as gp
import numpy as np
import pytest
from gpuport.backends import identity, native
from gpuport.errors import DeviceLost
from gpuport.formats.records import RecordError, RecordWarning

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPORT_CACHE", str(tmp_path))
    return tmp_path


def record(cache: Path) -> Path:
    (found,) = (cache / "adapter").glob("native-*.json")
    return found


def test_first_open_records_the_adapter_and_the_next_opens_it_on_first_use(cache):
    with gp.open_sync() as first:
        assert first.device.opened and first.info()["device_open"] is True
        adapter = first.info()["adapter"]
    stored = json.loads(record(cache).read_text())
    assert stored["adapter_info"]["device"] == adapter["device"]
    with gp.open_sync() as rt:
        assert not rt.device.opened and rt.info()["device_open"] is False
        assert rt.info()["adapter"] == adapter and rt.tier == first.tier and rt.limits == first.limits
        x = np.arange(1, 8, dtype=np.float32)
        with rt.pinned("cpu"):
            np.testing.assert_array_equal(rt.ops.scale(rt.tensor(x), 2.0, 0.0).numpy(), 2 * x)
        assert not rt.device.opened   # host work never opens it
        with rt.pinned("webgpu"):
            y = rt.ops.scale(rt.tensor(x), 2.0, 1.0).numpy()
        np.testing.assert_array_equal(y, 2 * x + 1)
        assert rt.device.opened and rt.info()["ran"]["scale"]["webgpu"] >= 1


def test_an_explicit_webgpu_backend_opens_at_once(cache):
    gp.open_sync().close()
    with gp.open_sync(backend="webgpu") as rt:
        assert rt.device.opened


def test_a_corrupt_record_is_reported_the_device_opened_now_and_the_record_rewritten(cache):
    gp.open_sync().close()
    record(cache).write_text('{"adapter_info": {"vendor": 3}}')
    with pytest.warns(RecordWarning, match=r"adapter_info\.vendor: must be a string"):
        rt = gp.open_sync()
    with rt:
        assert rt.device.opened
    identity.read(record(cache).read_text())   # sound again


def test_an_adapter_that_differs_from_its_record_is_named_and_recorded(cache):
    gp.open_sync().close()
    stored = json.loads(record(cache).read_text())
    stored["limits"]["maxBufferSize"] += 1
    stored["adapter_info"]["driver_note"] = "ignored"   # keys outside the identity do not matter
    stored["adapter_info"]["backend_type"] = "Metal"   # outside the pipelines' scope: no recalibration
    record(cache).write_text(json.dumps(stored))
    with gp.open_sync() as rt:
        assert not rt.device.opened
        with pytest.warns(RecordWarning, match=r"adapter backend_type: 'Metal' -> 'Vulkan'.*limit maxBufferSize"):
            with rt.pinned("webgpu"):
                rt.ops.scale(rt.tensor(np.ones(3, np.float32)), 1.0, 0.0).numpy()
    assert json.loads(record(cache).read_text())["limits"]["maxBufferSize"] == stored["limits"]["maxBufferSize"] - 1


def test_a_recorded_adapter_that_is_gone_is_a_device_loss_and_the_next_open_steps_down(cache, monkeypatch):
    gp.open_sync().close()
    with gp.open_sync() as rt:
        monkeypatch.setattr(native.wgpu.gpu, "request_adapter_sync", lambda **kw: None)
        with pytest.raises(DeviceLost, match="the recorded WebGPU adapter did not open: no WebGPU adapter"):
            rt.device.upload(np.ones(4, np.float32))
    assert json.loads(record(cache).read_text()) == {"unavailable": True}
    with gp.open_sync() as rt:
        assert rt.backend == "cpu" and "webgpu unavailable: no WebGPU adapter" in rt.info()["note"]


@pytest.mark.parametrize("text, field", [
    ("[]", "must be an object"),
    ('{"features": [], "limits": {"a": 1}}', "adapter_info: missing"),
    ('{"adapter_info": {"vendor": "", "architecture": "", "device": "", "description": "", "backend_type": "",'
     ' "is_fallback": 1}, "features": [], "limits": {"a": 1}}', "adapter_info.is_fallback: must be a boolean"),
    ('{"adapter_info": {"vendor": "", "architecture": "", "device": "", "description": "", "backend_type": "",'
     ' "is_fallback": true}, "features": [7], "limits": {"a": 1}}', r"features\[0\]: must be a string"),
    ('{"adapter_info": {"vendor": "", "architecture": "", "device": "", "description": "", "backend_type": "",'
     ' "is_fallback": true}, "features": [], "limits": {"a": -1}}', "limits.a: -1 is out of range"),
    ('{"adapter_info": {"vendor": "", "architecture": "", "device": "", "description": "", "backend_type": "",'
     ' "is_fallback": true}, "features": [], "limits": {}}', "limits: empty"),
])
def test_read_names_the_field_that_is_wrong(text, field):
    with pytest.raises(RecordError, match=field):
        identity.read(text)


def test_the_scope_follows_what_selects_an_adapter(monkeypatch):
    monkeypatch.delenv("WGPU_ADAPTER_NAME", raising=False)
    plain = identity.scope("default", "high-performance", "0.1")
    assert plain == identity.scope("default", "high-performance", "0.1")
    assert plain != identity.scope("adapter", "high-performance", "0.1")
    assert plain != identity.scope("default", "high-performance", "0.2")
    monkeypatch.setenv("WGPU_ADAPTER_NAME", "llvmpipe")
    assert plain != identity.scope("default", "high-performance", "0.1")


GENERATE = """
import asyncio, json, sys
import gpuport as gp
from gpuport import models
rt = gp.open_sync()
llm = asyncio.run(models.load("smollm2-135m-instruct", rt))
async def go():
    return [t.id async for t in llm.generate(llm.prompt_ids([{"role": "user", "content": "Hi"}]), max_new_tokens=4)]
asyncio.run(go())
maps = open("/proc/self/maps").read()
print(json.dumps({"placement": llm.stats()["placement"], "device_open": rt.info()["device_open"],
                  "vulkan_loaded": "libvulkan" in maps}))
"""


def test_a_generation_that_auto_keeps_on_the_host_never_loads_the_gpu_driver(cache):
    env = dict(os.environ, GPUPORT_CACHE=str(cache))
    runs = [json.loads(subprocess.run([sys.executable, "-c", GENERATE], env=env, cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[0]["device_open"] and runs[0]["vulkan_loaded"]   # the first run measures the device
    second = runs[1]
    # where auto places the generation on the device (a real GPU), it opens it; on the host it never does
    assert second["device_open"] == (second["placement"] != "host") == second["vulkan_loaded"]
