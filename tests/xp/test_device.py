"""The namespace on the GPU: element-wise chains fused into one dispatch (counted), views read in place, the kernel
families each counted as they dispatch, lazy arrays that keep the values they were made from, the limits of what
one kernel binds, and the generated WGSL within the portable subset naga and Tint both accept."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
from conftest import runtime
from gpuport import xp
from gpuport.xp import device as xp_device
from oracle import assert_same


def _dispatches(rt):
    return dict(xp.stats(rt)["dispatches"])


def test_a_chain_of_eight_element_wise_functions_on_a_million_elements_is_one_dispatch():
    rt = runtime("webgpu")
    v = np.random.default_rng(1).random(1 << 20, dtype=np.float32)
    x = xp.asarray(v, device=rt)
    before, fused = _dispatches(rt), xp.stats(rt)["fused_functions"]
    y = xp.sqrt(xp.abs(xp.sin(x * 2.0 + 1.0) - x / 3.0)) * 0.5     # 8 functions, lazy until read
    assert _dispatches(rt) == before
    got = np.asarray(y)
    after = _dispatches(rt)
    assert after["elementwise"] == before["elementwise"] + 1 and sum(after.values()) == sum(before.values()) + 1
    assert xp.stats(rt)["fused_functions"] == fused + 8
    want = np.sqrt(np.abs(np.sin(v * 2 + 1) - v / 3)) * 0.5
    # sqrt(|d|) * 0.5 carries the square root of d's error where d nears 0 (1.5e-5 from NVIDIA's sin, within WGSL's
    # bound, where d was 4e-6); squared, each value is |d| / 4 and carries d's own error: sin's and the cancellation's
    np.testing.assert_allclose(got.astype(np.float64) ** 2, want.astype(np.float64) ** 2, rtol=1e-5, atol=1e-6)


def test_views_are_read_in_place_by_every_kernel_family():
    rt = runtime("webgpu")
    v = np.random.default_rng(2).standard_normal((64, 48)).astype(np.float32)
    x = xp.asarray(v, device=rt)
    view = xp.flip(x.T, axis=0)[::2]            # a strided, flipped view: no copy
    before = _dispatches(rt)
    s = xp.sum(xp.exp(view), axis=1)            # a reduction of a fused chain over a view: one dispatch
    np.testing.assert_allclose(np.asarray(s), np.exp(np.flip(v.T, 0)[::2]).sum(1), rtol=1e-4)
    after = _dispatches(rt)
    assert after["reduce"] == before["reduce"] + 1 and after["elementwise"] == before["elementwise"]
    c = xp.cumulative_sum(view * 2, axis=1)
    np.testing.assert_allclose(np.asarray(c), np.cumsum(np.flip(v.T, 0)[::2] * 2, 1), rtol=1e-4, atol=1e-4)
    o = xp.sort(view, axis=1)
    assert_same(np.asarray(o), np.sort(np.flip(v.T, 0)[::2], 1))
    final = _dispatches(rt)
    assert final["scan"] == after["scan"] + 1 and final["sort"] > after["sort"]
    assert final["elementwise"] == after["elementwise"] + 1   # the sorted values: one gather at the positions


def test_chains_past_what_one_kernel_binds_are_evaluated_in_parts():
    rt = runtime("webgpu")
    arrays = [xp.asarray(np.full(5, i, np.float32), device=rt) for i in range(12)]
    before = _dispatches(rt)["elementwise"]
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a                        # 12 stores: more than one kernel may bind (6 here)
    assert_same(np.asarray(total), np.full(5, sum(range(12)), np.float32))
    parts = _dispatches(rt)["elementwise"] - before
    assert xp_device.max_inputs(rt) == 6   # the spec's 8 storage buffers per stage, less two outputs
    assert parts == 3, parts               # the first 6 stores; their sum and the next 5; that and the last


def test_generated_wgsl_stays_in_the_portable_subset():
    """DESIGN.md's traps between naga and Tint: no barrier inside non-uniform control flow, no pointer parameters,
    no NaN test by x != x, no 64-bit types; every kernel family's WGSL as the device compiled it."""
    rt = runtime("webgpu")
    a = xp.asarray(np.arange(40, dtype=np.float32).reshape(5, 8), device=rt)
    np.asarray(xp.sum(a, axis=1)), np.asarray(xp.argmax(a, axis=0)), np.asarray(xp.cumulative_sum(a, axis=1))
    np.asarray(xp.sort(a, axis=1)), np.asarray(xp.unique_values(a)), np.asarray(xp.isnan(a) != (a > 3))
    b = xp.asarray(np.arange(40, dtype=np.float32), device=rt)
    b[xp.asarray(np.array([1, 2], np.int32))] = 5.0
    np.asarray(b), np.asarray(xp.asarray(np.ones((3, 4), np.int32), device=rt) @ xp.asarray(np.ones((4, 2), np.int32), device=rt))
    sources = [spec.source for spec in rt.device.pipelines if spec.label.startswith("xp_")]
    families = {spec.label.split(":")[0] for spec in rt.device.pipelines if spec.label.startswith("xp_")}
    assert families >= {"xp_elementwise", "xp_reduce", "xp_scan", "xp_sort", "xp_scatter", "xp_matmul"}, families
    for source in sources:
        assert "ptr<" not in source and not re.search(r"\b[if]64\b", source)
        assert not re.search(r"\b(\w+) != \1\b", source)
        blocks: list[str] = []   # the headers of the blocks a line is in
        for line in source.splitlines():
            if "workgroupBarrier" in line:   # only in the entry point, or in its loops over uniform bounds
                inner = blocks[blocks.index(next(b for b in blocks if b.startswith("fn main"))) + 1:]
                assert all(b.startswith("for (") and "lid" not in b and "gid" not in b for b in inner), inner
            for ch in line:
                if ch == "{":
                    blocks.append(line.strip())
                elif ch == "}":
                    blocks.pop()


def test_the_namespaces_own_runtime_stores_what_it_learned_at_exit(tmp_path):
    """A script that never names a runtime gets one opened by the namespace, closed at exit: the products it timed
    are in the selector's record afterwards (before, only a runtime's close or its calibration wrote it). What it
    timed is what its selector held at its last line. How many of the five products that is depends on where auto
    placed them: on a loaded machine the record held 4 (one slow host sample, then three on the adapter)."""
    script = ("import json\nimport numpy as np\nfrom gpuport import xp\n"
              "x = xp.asarray(np.ones((64, 64), np.float32))\n"
              "for _ in range(5):\n    np.asarray(x @ x)\n"
              "stats = x.device.placement.auto.selector.to_dict()['stats']\n"
              "print(json.dumps([r for r in stats if r[0] == 'matmul']))\n")
    env = {**os.environ, "GPUPORT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    learned = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(r[4] for r in learned) >= 1, learned
    records = list((tmp_path / "selector").glob("*.json"))
    assert len(records) == 1, records
    rows = json.loads(records[0].read_text())["stats"]
    assert [r for r in rows if r[0] == "matmul"] == learned, (rows, learned)
