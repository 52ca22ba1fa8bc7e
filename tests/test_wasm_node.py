"""The WebAssembly SIMD kernels without a browser: the built module's safety for Pyodide's heap, and every
case of tests/wasm_cases.py in Pyodide under Node (tests/wasm_node.mjs links the module as a page does).

The browser lanes run the same cases in e2e/test_page_wasm.py. A missing module or Node fails these tests
with the reason; nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from wasm_cases import CASES

from gpuport.wasm_module import check, module_path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "wasm_node.mjs"
NODE_TIMEOUT_S = 600

_RUN_ALL = """
import json, wasm_cases
outcomes = {}
for name in wasm_cases.CASES:
    try:
        wasm_cases.run(name)
        outcomes[name] = "passed"
    except BaseException as exc:
        outcomes[name] = f"{type(exc).__name__}: {exc}"
json.dumps(outcomes)
"""


def test_module_owns_no_data_and_no_stack():
    mod = check(module_path(ROOT))
    assert mod.dylink_memory_size == 0 and mod.data_segments == 0
    assert all(name != "__stack_pointer" for _, name, _ in mod.imports), mod.imports


_LOADER_REASONS = """
import { readFileSync } from "node:fs";
import { WASM_URL, loadWasmKernels } from "./web/wasm.js";
const good = new Uint8Array(readFileSync(new URL(WASM_URL)));
const linker = (fn) => ({ _module: { loadWebAssemblyModule: fn } });
const out = {
  missing: await loadWasmKernels(linker(() => null), new URL("file:///nonexistent/gpuport_simd.wasm")),
  garbage: await loadWasmKernels(linker(() => null), new Uint8Array([1, 2, 3])),
  no_linker: await loadWasmKernels({ _module: {} }, good),
  link_fails: await loadWasmKernels(linker(async () => { throw new Error("boom"); }), good),
  linked: await loadWasmKernels(linker(async () => ({ gp_abi: () => 1 })), good),
};
WebAssembly.validate = () => false;  // a runtime without SIMD128 rejects the probe module
out.no_simd = await loadWasmKernels(linker(() => null), good);
for (const v of Object.values(out)) v.kernels = v.kernels === null ? null : "present";
console.log(JSON.stringify(out));
"""


def test_loader_never_throws_and_says_why():
    """web/wasm.js resolves to {available: false, reason} for every way loading can fail."""
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    proc = subprocess.run([node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", "--input-type=module", "-e",
                           _LOADER_REASONS], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["linked"] == {"available": True, "reason": "", "url": got["linked"]["url"], "kernels": "present"}
    for key, needle in (("missing", "cannot load file:///nonexistent/gpuport_simd.wasm"),
                        ("garbage", "not a valid WebAssembly module"), ("no_linker", "loadWebAssemblyModule"),
                        ("link_fails", "boom"), ("no_simd", "no SIMD128")):
        assert got[key]["available"] is False and got[key]["kernels"] is None, (key, got[key])
        assert needle in got[key]["reason"], (key, got[key]["reason"])


@pytest.fixture(scope="session")
def node_outcomes() -> dict[str, str]:
    """Every wasm case, run once in one Pyodide under Node (loading it takes ~12 s)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: `make setup` installs the npm tools it needs", pytrace=False)
    proc = subprocess.run([node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", str(RUNNER)], input=_RUN_ALL,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"Pyodide under Node failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return json.loads(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", list(CASES))
def test_wasm_case_in_node(node_outcomes, name):
    outcome = node_outcomes.get(name, "not run")
    assert outcome == "passed", f"{name}: {outcome}"
