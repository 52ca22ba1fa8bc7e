// Loads gpuport's WebAssembly SIMD128 kernels (gpuport_simd.wasm, built by `make setup`) into Pyodide's own
// memory, for Python to import as the JS module `gpuport_wasm` (gpuport/wasm_kernels.py). Instantiation
// only: the kernels are C (web/wasm/), and Python calls them on NumPy buffers by address.
//
// Pyodide 0.27.7 keeps its WebAssembly.Memory private (pyodide._module.wasmMemory is undefined); its
// dynamic linker, Module.loadWebAssemblyModule (the one that links every C extension), resolves a side
// module's `env.memory` import to that Memory. The module is built as such a side module and owns no
// static data and no stack, so sharing the heap with Pyodide is safe.

export const WASM_URL = new URL("gpuport_simd.wasm", import.meta.url);

// The smallest module that uses a SIMD128 instruction (v128.const, drop): tells a runtime without SIMD
// from a corrupt or missing kernel file.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 23, 1, 21,
  0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26, 11]);

function unavailable(reason) {
  return { available: false, reason, url: String(WASM_URL), kernels: null };
}

async function fetchBytes(source) {
  if (source instanceof Uint8Array) return source;
  const res = await fetch(source);
  if (!res.ok) throw new Error(`HTTP ${res.status} for ${source} (run \`make setup\` to build it)`);
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * Instantiate the kernels in `pyodide`'s memory. `source`: the .wasm URL (default: beside this file,
 * whatever page embeds it) or its bytes. Never throws: resolves to {available, reason, url, kernels}.
 */
export async function loadWasmKernels(pyodide, source = WASM_URL) {
  if (typeof WebAssembly !== "object" || !WebAssembly.validate(SIMD_PROBE)) {
    return unavailable("this browser's WebAssembly has no SIMD128 support");
  }
  let bytes;
  try {
    bytes = await fetchBytes(source);
  } catch (e) {
    return unavailable(`cannot load ${source instanceof Uint8Array ? "the kernel bytes" : source}: ${e.message}`);
  }
  if (!WebAssembly.validate(bytes)) return unavailable(`${source} is not a valid WebAssembly module`);
  const link = pyodide._module && pyodide._module.loadWebAssemblyModule;
  if (typeof link !== "function") {
    return unavailable("this Pyodide has no Module.loadWebAssemblyModule to link the kernels into its memory");
  }
  try {
    const kernels = await link(bytes, { loadAsync: true, nodelete: true }, "gpuport_simd.wasm", {});
    return { available: true, reason: "", url: String(source instanceof Uint8Array ? WASM_URL : source), kernels };
  } catch (e) {
    return unavailable(`linking ${source} into Pyodide's memory failed: ${e.message}`);
  }
}
