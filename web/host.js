// Boots Pyodide with NumPy, micropip and the gpuport wheel, opens a runtime, and runs Python.
// The same code serves the Web Worker (worker.js) and the main-thread mode (gpuport.js).
import * as bridge from "./bridge.js";
import * as idb from "./idb.js";
import { loadWasmKernels } from "./wasm.js";

function plain(value) {
  // Python results cross as plain JS data (dicts -> objects); anything else stays a string.
  if (value && typeof value.toJs === "function") {
    try {
      return value.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
    } catch (e) {
      return String(value);
    } finally {
      value.destroy();
    }
  }
  return value;
}

export class Host {
  constructor(pyodide, timings) {
    this.pyodide = pyodide;
    this.timings = timings;
    this.namespace = pyodide.globals;
  }

  async runPython(src) {
    try {
      return plain(await this.pyodide.runPythonAsync(src, { globals: this.namespace }));
    } catch (e) {
      // PythonError carries the Python type name and the traceback text.
      throw Object.assign(new Error(e.message), { name: e.type || e.name || "Error" });
    }
  }

  info() {
    return this.runPython("rt.info()");
  }
}

export async function boot({ pyodideURL, wheelURL, backend = "auto", tier = null, limits = "default",
                             precompile = "background" }) {
  const t0 = performance.now();
  const mark = {};
  const { loadPyodide } = await import(new URL("pyodide.mjs", pyodideURL).href);
  const pyodide = await loadPyodide({ indexURL: pyodideURL });
  mark.pyodide_ms = performance.now() - t0;
  await pyodide.loadPackage(["numpy", "micropip"], { messageCallback: () => {} });
  mark.numpy_ms = performance.now() - t0 - mark.pyodide_ms;
  pyodide.registerJsModule("gpuport_bridge", bridge);
  pyodide.registerJsModule("gpuport_idb", idb);
  // The WebAssembly SIMD kernels of the cpu path, linked into Pyodide's memory; never throws: a missing
  // .wasm or a browser without SIMD leaves {available: false, reason} for gpuport.wasm_kernels to report.
  const tw = performance.now();
  pyodide.registerJsModule("gpuport_wasm", await loadWasmKernels(pyodide));
  mark.wasm_ms = performance.now() - tw;
  const micropip = pyodide.pyimport("micropip");
  await micropip.install(wheelURL);
  micropip.destroy();
  mark.wheel_ms = performance.now() - t0 - mark.pyodide_ms - mark.numpy_ms - mark.wasm_ms;
  pyodide.globals.set("_gpuport_open_args", pyodide.toPy({ backend, tier, limits }));
  await pyodide.runPythonAsync("import gpuport\nrt = await gpuport.open(**_gpuport_open_args)\ndel _gpuport_open_args");
  mark.open_ms = performance.now() - t0 - mark.pyodide_ms - mark.numpy_ms - mark.wasm_ms - mark.wheel_ms;
  // Pipelines from the IndexedDB manifest (or every op's, on a first visit) are built now; ops called
  // meanwhile answer on NumPy. "await" holds start() until they are ready; the report is
  // `await rt_precompile` in Python either way.
  if (precompile !== "off") {
    const t1 = performance.now();
    await pyodide.runPythonAsync("import asyncio\nrt_precompile = asyncio.ensure_future(rt.precompile())" +
      (precompile === "await" ? "\nawait rt_precompile" : ""));
    if (precompile === "await") mark.precompile_ms = performance.now() - t1;
  }
  mark.total_ms = performance.now() - t0;
  return new Host(pyodide, mark);
}
