// Pyodide under Node with gpuport's WebAssembly kernels linked in exactly as a page links them
// (web/wasm.js): a fast lane for tests/wasm_cases.py and for kernel work, no browser needed.
//   node tests/wasm_node.mjs < script.py    -> the script's last expression, as JSON on stdout
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadPyodide } from "../node_modules/pyodide/pyodide.mjs";
import { RELAXED_URL, WASM_URL, loadWasmKernels } from "../web/wasm.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const pyodide = await loadPyodide({ indexURL: `${root}.cache/pyodide/` });
await pyodide.loadPackage("numpy", { messageCallback: () => {} });
pyodide.mountNodeFS("/gpuport_src", `${root}py`);
pyodide.mountNodeFS("/gpuport_tests", `${root}tests`);
// Node's fetch has no file: URLs: hand over the bytes (a missing file still reports through the URL).
// GPUPORT_WASM_VARIANT picks the build: "simd128" (default) or "relaxed-simd" (needs Node's
// --experimental-wasm-relaxed-simd: Node 20 does not enable relaxed SIMD by default).
const variant = process.env.GPUPORT_WASM_VARIANT || "simd128";
const url = variant === "relaxed-simd" ? RELAXED_URL : WASM_URL;
const path = fileURLToPath(url);
const source = existsSync(path) ? new Uint8Array(readFileSync(path)) : url;
pyodide.runPython("import sys\nsys.path[:0] = ['/gpuport_src', '/gpuport_tests']");
// What gpuport.open() does in a page (backends/jsmodules.py), minus reading the wheel: the source tree here
// has no gpuport/web/ beside the package.
pyodide.globals.set("_gpuport_wasm", await loadWasmKernels(pyodide, [{ variant, source }]));
pyodide.runPython("from gpuport.host import wasm_kernels\nwasm_kernels.attach(_gpuport_wasm)\ndel _gpuport_wasm");
const result = await pyodide.runPythonAsync(readFileSync(0, "utf8"));
const plain = result && typeof result.toJs === "function"
  ? result.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false }) : result;
process.stdout.write(JSON.stringify(plain ?? null) + "\n");
