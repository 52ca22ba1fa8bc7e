// Loads gpuport's WebAssembly SIMD128 kernels (gpuport_simd.wasm, built by `make setup`) into Pyodide's own
// memory, for Python to use (gpuport/host/wasm_kernels.py). Instantiation only: the kernels are C (hostkernels/),
// and Python calls them on NumPy buffers by address. Python imports this module from the installed wheel's
// text (gpuport/backends/jsmodules.py) and hands it the .wasm files' bytes.
//
// Pyodide 0.27.7 keeps its WebAssembly.Memory private (pyodide._module.wasmMemory is undefined); its
// dynamic linker, Module.loadWebAssemblyModule (the one that links every C extension), resolves a side
// module's `env.memory` import to that Memory. The module is built as such a side module and owns no
// static data and no stack, so sharing the heap with Pyodide is safe.

export const VERSION = "0.1.0";   // gpuport's version: Python refuses a JS half of another release

// Beside this module where it is served; imported from a blob: URL (the wheel's text) it has no folder, and
// the names stand for the files.
function beside(name) {
  try {
    return new URL(name, import.meta.url);
  } catch (e) {
    return name;
  }
}
export const WASM_URL = beside("gpuport_simd.wasm");
// The same kernels built with relaxed SIMD (f32x4.relaxed_madd, a fused multiply-add where the CPU has one):
// loaded instead wherever the engine validates relaxed SIMD (Chromium and Firefox do, WebKit does not).
export const RELAXED_URL = beside("gpuport_simd_relaxed.wasm");

// The smallest module that uses a SIMD128 instruction (v128.const, drop): tells a runtime without SIMD
// from a corrupt or missing kernel file.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 23, 1, 21,
  0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26, 11]);
// Three v128.const, f32x4.relaxed_madd (0xfd 0x105), drop: validates only where relaxed SIMD is on.
const RELAXED_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 62, 1, 60,
  0, ...[0, 1, 2].flatMap(() => [253, 12, ...new Array(16).fill(0)]), 253, 133, 2, 26, 11]);

/** Whether this engine runs relaxed SIMD (and so gets the relaxed build of the kernels). */
export function hasRelaxedSimd() {
  return typeof WebAssembly === "object" && WebAssembly.validate(RELAXED_PROBE);
}

/**
 * The builds to try, best first: [{variant, source, url?}], source a URL or the module's bytes (then `url`
 * names where they came from). `choice`
 * (start({hostKernels})): "auto" (the relaxed build where the engine has relaxed SIMD, SIMD128 otherwise),
 * "simd128" (the portable build: the same bits on every CPU, where relaxed_madd may or may not fuse),
 * "relaxed-simd", or "off" (none: the cpu path runs on NumPy).
 */
export function defaultSources(choice = "auto") {
  const plain = { variant: "simd128", source: WASM_URL };
  const relaxed = { variant: "relaxed-simd", source: RELAXED_URL };
  const table = { auto: hasRelaxedSimd() ? [relaxed, plain] : [plain], simd128: [plain], "relaxed-simd": [relaxed],
                  off: [] };
  if (!(choice in table)) throw new Error(`hostKernels must be one of ${Object.keys(table).join(", ")}, not ${choice}`);
  return table[choice];
}

/** The file of the build `choice` links first, as a path in the gpuport wheel (its page archive): what a page
 * compiles ahead, beside the boot (gpuport.js, host.js), for loadWasmKernels to link without compiling. */
export function kernelFiles(choice = "auto") {
  return defaultSources(choice).slice(0, 1).map(({ source }) => `gpuport/web/${String(source).split("/").pop()}`);
}

// Kernel builds compiled ahead, by file name: {path in the wheel: promise of a WebAssembly.Module, or of null}.
// Linked in place of the bytes Python hands over (the same file: the archive is the installed wheel's): in a warm
// Firefox visit, compiling them inside gpuport.open() took ~100 ms of its start while the engine was still
// optimising Pyodide's own code on both cores.
const ahead = new Map();
let linkedAhead = null;   // whether the build linked last came compiled ahead

export function compiledAhead(modules) {
  for (const [path, module] of Object.entries(modules || {})) ahead.set(path.split("/").pop(), module);
}

/** How the kernels were compiled, in words, once loadWasmKernels linked a build (null before). */
export function compiled() {
  return linkedAhead === null ? null : linkedAhead ? "beside the boot" : "when linked";
}

export function unavailable(reason, url = WASM_URL) {
  return { available: false, reason, url: String(url), variant: null, kernels: null };
}

function label(source) {
  return source instanceof Uint8Array ? "the kernel bytes" : String(source);
}

async function fetchBytes(source) {
  if (source instanceof Uint8Array) return source;
  const res = await fetch(source);
  if (!res.ok) throw new Error(`HTTP ${res.status} for ${source} (run \`make setup\` to build it)`);
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * Instantiate the kernels in `pyodide`'s memory: the first of `sources` (see defaultSources) that loads
 * and links. Never throws: resolves to {available, reason, url, variant, kernels}; `reason` also notes a
 * preferred build that could not be used before a fallback that could.
 */
export async function loadWasmKernels(pyodide, sources = defaultSources()) {
  if (!sources.length) return unavailable("turned off (start({hostKernels: \"off\"}))");
  if (typeof WebAssembly !== "object" || !WebAssembly.validate(SIMD_PROBE)) {
    return unavailable("this browser's WebAssembly has no SIMD128 support");
  }
  const link = pyodide._module && pyodide._module.loadWebAssemblyModule;
  const failures = [];
  let url = WASM_URL;
  for (const { variant, source, url: named } of sources) {
    url = named || (source instanceof Uint8Array ? (variant === "relaxed-simd" ? RELAXED_URL : WASM_URL) : source);
    const compiled = await ahead.get(String(url).split("/").pop());
    let bytes;
    try {
      bytes = compiled || await fetchBytes(source);
    } catch (e) {
      failures.push(`cannot load ${label(source)}: ${e.message}`);
      continue;
    }
    if (!compiled && !WebAssembly.validate(bytes)) {
      failures.push(`${label(source)} is not a valid WebAssembly module`);
      continue;
    }
    if (typeof link !== "function") {
      return unavailable("this Pyodide has no Module.loadWebAssemblyModule to link the kernels into its memory", url);
    }
    try {
      const kernels = await link(bytes, { loadAsync: true, nodelete: true }, String(url).split("/").pop(), {});
      const reason = failures.length ? `${variant} build used; ${failures.join("; ")}` : "";
      linkedAhead = Boolean(compiled);
      return { available: true, reason, url: String(url), variant, kernels };
    } catch (e) {
      failures.push(`linking ${label(source)} into Pyodide's memory failed: ${e.message}`);
    }
  }
  return unavailable(failures.join("; "), url);
}
