"""The WebAssembly SIMD kernels without a browser: the built module's safety for Pyodide's heap, and every
case of tests/wasm_cases.py on the plain SIMD128 build in Pyodide under Node (tests/wasm_node.mjs links the module
as a page does).

The browser lanes run the same cases in e2e/test_page_wasm.py. A missing module or Node fails these tests
with the reason; nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from gpuport.host.wasm_module import (
    MODULE_NAME,
    RELAXED_MODULE_NAME,
    check,
    module_path,
)
from wasm_cases import CASES

ROOT = Path(__file__).resolve().parents[2]
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
"""


@pytest.mark.parametrize("name", [MODULE_NAME, RELAXED_MODULE_NAME])
def test_module_owns_no_data_and_no_stack(name):
    mod = check(module_path(ROOT, name))
    assert mod.dylink_memory_size == 0 and mod.data_segments == 0
    assert all(name != "__stack_pointer" for _, name, _ in mod.imports), mod.imports


_LOADER_REASONS = """
import { readFileSync } from "node:fs";
import { RELAXED_URL, WASM_URL, defaultSources, hasRelaxedSimd, loadWasmKernels } from "./web/wasm.js";
const good = new Uint8Array(readFileSync(new URL(WASM_URL)));
const linker = (fn) => ({ _module: { loadWebAssemblyModule: fn } });
const plain = (source) => [{ variant: "simd128", source }];
const gone = new URL("file:///nonexistent/gpuport_simd_relaxed.wasm");
const out = {
  missing: await loadWasmKernels(linker(() => null), plain(new URL("file:///nonexistent/gpuport_simd.wasm"))),
  garbage: await loadWasmKernels(linker(() => null), plain(new Uint8Array([1, 2, 3]))),
  no_linker: await loadWasmKernels({ _module: {} }, plain(good)),
  link_fails: await loadWasmKernels(linker(async () => { throw new Error("boom"); }), plain(good)),
  linked: await loadWasmKernels(linker(async () => ({ gp_abi: () => 1 })), plain(good)),
  // the relaxed build missing: the plain one is linked, and the reason says what was skipped
  fallback: await loadWasmKernels(linker(async () => ({ gp_abi: () => 1 })),
                                  [{ variant: "relaxed-simd", source: gone }, ...plain(good)]),
};
const relaxed = { node: hasRelaxedSimd(), sources: defaultSources().map((s) => [s.variant, String(s.source)]) };
let bogus = "";
try { defaultSources("fastest"); } catch (e) { bogus = e.message; }
WebAssembly.validate = () => false;  // a runtime without SIMD128 rejects the probe module
out.no_simd = await loadWasmKernels(linker(() => null), plain(good));
for (const v of Object.values(out)) v.kernels = v.kernels === null ? null : "present";
out.off = await loadWasmKernels(linker(() => null), defaultSources("off"));
console.log(JSON.stringify({ ...out, relaxed, bogus, relaxedUrl: String(RELAXED_URL), wasmUrl: String(WASM_URL) }));
"""


def _node_json(script: str, *flags: str) -> dict:
    node = shutil.which("node")
    assert node, "node is missing: `make setup` installs the npm tools it needs"
    proc = subprocess.run([node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", *flags, "--input-type=module",
                           "-e", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_loader_never_throws_and_says_why():
    """web/wasm.js resolves to {available: false, reason} for every way loading can fail."""
    got = _node_json(_LOADER_REASONS)
    assert got["linked"] == {"available": True, "reason": "", "url": got["linked"]["url"], "variant": "simd128",
                             "kernels": "present"}
    for key, needle in (("missing", "cannot load file:///nonexistent/gpuport_simd.wasm"),
                        ("garbage", "not a valid WebAssembly module"), ("no_linker", "loadWebAssemblyModule"),
                        ("link_fails", "boom"), ("no_simd", "no SIMD128"), ("off", "turned off")):
        assert got[key]["available"] is False and got[key]["kernels"] is None, (key, got[key])
        assert needle in got[key]["reason"], (key, got[key]["reason"])
    fallback = got["fallback"]
    assert fallback["available"] is True and fallback["variant"] == "simd128", fallback
    assert "cannot load file:///nonexistent/gpuport_simd_relaxed.wasm" in fallback["reason"], fallback
    assert got["bogus"] == "hostKernels must be one of auto, simd128, relaxed-simd, off, not fastest", got["bogus"]


def test_loader_prefers_the_relaxed_build_where_the_engine_has_relaxed_simd():
    """Node 20 validates relaxed SIMD only with --experimental-wasm-relaxed-simd: the probe tells the two
    apart, and the default sources follow it (relaxed build first, the plain one as the fallback)."""
    plain, flagged = _node_json(_LOADER_REASONS), _node_json(_LOADER_REASONS, "--experimental-wasm-relaxed-simd")
    assert plain["relaxed"] == {"node": False, "sources": [["simd128", plain["wasmUrl"]]]}, plain["relaxed"]
    assert flagged["relaxed"] == {"node": True, "sources": [["relaxed-simd", flagged["relaxedUrl"]],
                                                            ["simd128", flagged["wasmUrl"]]]}, flagged["relaxed"]


@pytest.fixture(scope="session")
def node_outcomes() -> dict[str, str]:
    """Every wasm case, run in one Pyodide under Node (loading it takes ~12 s), on the plain build only: the relaxed
    one runs every case in V8 and SpiderMonkey in the browser lanes (e2e/test_page_wasm.py), where Node 20 has relaxed
    SIMD only behind a flag; the plain one runs in the browsers in JavaScriptCore alone."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: `make setup` installs the npm tools it needs", pytrace=False)
    script = _RUN_ALL + "\nassert wasm_cases.W.variant() == 'simd128', wasm_cases.W.variant()\njson.dumps(outcomes)\n"
    proc = subprocess.run([node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", str(RUNNER)], input=script,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"Pyodide under Node failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return json.loads(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", list(CASES))
def test_wasm_case_in_node(node_outcomes, name):
    outcome = node_outcomes.get(name, "not run")
    assert outcome == "passed", f"{name}: {outcome}"
