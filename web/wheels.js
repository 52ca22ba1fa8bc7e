// Installs NumPy, the gpuport wheel and NumPy's bytecode into Pyodide's file system from JS, from the site's page
// archives (py/gpuport/site/page_archives.py: a zip of stored entries in one gzip stream): each is fetched and checked
// (sha256) beside the boot and inflated by the browser in one pass; its entries are written with FS.writeFile, and a
// wheel's shared libraries loaded as Pyodide's loadPackage loads them. loadPackage unpacks with Python's zipfile and
// then re-reads the standard library's zip index (importlib.invalidate_caches): 0.3-0.35 s of a warm visit's packages
// stage here, in Chromium and Firefox. Where the site has no archives or one cannot serve, host.js says why and uses
// loadPackage.
import { fetchChecked } from "./idb.js";

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

/** The entries of a zip of stored entries: {name: bytes (a view of `bytes`)}; an Error for anything else (deflated
 * or encrypted entries, zip64, a truncated archive). */
export function storedEntries(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = bytes.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== EOCD) end -= 1;
  if (end < 0) throw new Error("not a zip archive (no end of central directory)");
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  const files = {};
  const decoder = new TextDecoder();
  for (let i = 0; i < count; i += 1) {
    if (at + 46 > bytes.length || view.getUint32(at, true) !== CENTRAL) throw new Error(`entry ${i}: no central header`);
    const nameLength = view.getUint16(at + 28, true);
    const name = decoder.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    const size = view.getUint32(at + 24, true);
    const local = view.getUint32(at + 42, true);
    if (view.getUint16(at + 8, true) & 1) throw new Error(`${name}: encrypted`);
    if (view.getUint16(at + 10, true) !== 0) throw new Error(`${name}: deflated, not stored`);
    if (size === 0xffffffff || local === 0xffffffff) throw new Error(`${name}: zip64`);
    if (local + 30 > bytes.length || view.getUint32(local, true) !== LOCAL) throw new Error(`${name}: no local header`);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (start + size > bytes.length) throw new Error(`${name}: truncated`);
    if (!name.endsWith("/")) files[name] = bytes.subarray(start, start + size);
    at += 46 + nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
  }
  return files;
}

// Which of a wheel's shared libraries load at install. loadPackage loads every one, because a page's main thread may
// not compile a large WebAssembly module synchronously, as Python's import (dlopen) does; a worker may, so there only
// those the site's archive lists load at install (NumPy's: the 3 `import numpy` loads) and the others when an import
// needs them (16 of NumPy's 19: random, fft, lapack_lite). A warm visit of web/test.html, first embedding, 6 visits
// each, interleaved: Firefox 1911 -> 1839 ms, Chromium 1779 -> 1662 ms. (Loading those 3 on import as well: Chromium
// 1739, slower, as V8 compiles a module loaded asynchronously on background threads; Firefox 1776 in that run, but
// 1865 against 1818 in a second one of 8 visits each: no difference this machine shows.)
export const LAZY_LIBRARIES = typeof WorkerGlobalScope !== "undefined" && globalThis instanceof WorkerGlobalScope;

/** {files: {name: bytes}, modules: {name: promise of a WebAssembly.Module, or of null}} of the page archive
 * {url, sha256}, or {problem}. Its shared libraries named in `compile` are compiled as soon as they are inflated,
 * beside the rest of the boot (install() then only instantiates them). */
export async function fetchArchive(file, compile = []) {
  if (typeof DecompressionStream === "undefined") return { problem: "no DecompressionStream in this browser" };
  const { bytes, problem } = await fetchChecked(file);
  if (!bytes) return { problem };
  try {
    const zip = new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip")));
    const files = storedEntries(new Uint8Array(await zip.arrayBuffer()));
    const modules = {};
    for (const path of compile) if (files[path]) modules[path] = WebAssembly.compile(files[path]).catch(() => null);
    return { files, modules };
  } catch (e) {
    return { problem: `${file.url}: ${e.message}` };
  }
}

// Libraries compiled ahead go in as Emscripten's own preload plugin puts a .so in: instantiated and linked by its
// loadWebAssemblyModule (which takes a compiled module), its exports under preloadedWasm, where the dynamic loader
// looks first (Pyodide's loadDynlib then only records it). One that did not compile is left to that loader.
// With `link` each goes in with a handle, Emscripten's record of where a library's data and functions were put (its
// memory and table bases: the loader's way of loading a library again in another thread at the same places):
// "record" makes the handles (in Pyodide's memory, so a snapshot holds them); a list of [path, handle] from such a
// snapshot loads each library at the bases its handle records, over memory that already holds the library's data as
// the snapshot's interpreter left it: instantiating writes the library's initial data there, so that region is
// copied first and put back after.
async function preload(M, site, paths, modules, link) {
  if (typeof M.loadWebAssemblyModule !== "function" || !M.preloadedWasm) return { early: 0, handles: [] };
  const recorded = Array.isArray(link) ? new Map(link) : null;
  const handles = [];
  let early = 0;
  for (const path of paths) {   // with a recorded link, install() passes its paths in its order
    const module = await modules[path];
    const lib = `${site}/${path}`;
    if (recorded && !module) throw new Error(`${path} did not compile`);
    if (module && !M.preloadedWasm[lib]) {
      const handle = recorded ? recorded.get(path) : link === "record" ? M._calloc(HANDLE_BYTES, 1) : 0;
      let kept = null;
      if (recorded) {
        if (M.HEAPU8[handle + 8] !== 1) throw new Error(`${path}: no bases recorded at ${handle}`);
        const base = M.HEAPU32[(handle + 12) >>> 2];
        kept = [base, M.HEAPU8.slice(base, base + M.HEAPU32[(handle + 16) >>> 2])];
      }
      M.preloadedWasm[lib] = await M.loadWebAssemblyModule(module, { loadAsync: true, nodelete: true, allowUndefined: true },
                                                           lib, {}, handle || undefined);
      if (kept) M.HEAPU8.set(kept[1], kept[0]);
      if (handle) handles.push([path, handle]);
      early += 1;
    }
  }
  return { early, handles };
}

// Emscripten's handle (struct dso of its dynlink.c): a flag at +8 that the bases are recorded, then the memory base
// and size, the table base and size; its loader reads the library's bytes from +28 and +32 when set (zero here).
const HANDLE_BYTES = 36;

/** Write `files` ({relative path: bytes}, which the file system then owns: not to be changed after) under
 * site-packages; for a wheel ({fileName, name, channel, source}), do what loadPackage does after unpacking: record
 * the installer and source, load its shared libraries (`libraries`: the paths of those to load now, the others left
 * to Python's import; null: all; `modules`: compiled ones, from fetchArchive), and count it as loaded from `channel`
 * (not with link "record": a snapshot's maker must leave Pyodide's package list as it was). `link`: see preload.
 * Returns how many shared libraries were loaded, how many there are, how many of those loaded were compiled ahead
 * and, with `link`, the [path, handle] of each: {loaded, of, early, handles}. */
export async function install(pyodide, files,
                              { fileName = null, name = null, channel = null, source = null, libraries = null,
                                modules = {}, link = null } = {}) {
  const FS = pyodide.FS;
  const site = pyodide.runPython("import site\nsite.getsitepackages()[0]");
  const dynlibs = Object.keys(files).filter((p) => p.endsWith(".so"));
  const now = Array.isArray(link) ? link.map(([path]) => path)
    : libraries ? dynlibs.filter((p) => libraries.includes(p)) : dynlibs;
  const made = new Set();
  let linked = { early: 0, handles: [] };
  for (const [path, bytes] of Object.entries(files)) {
    const dir = `${site}/${path}`.replace(/\/[^/]*$/, "");
    if (!made.has(dir)) {
      FS.mkdirTree(dir);
      made.add(dir);
    }
    // the file system keeps the archive's own bytes (canOwn: a view, not a copy; a later write that grows a file
    // copies it first). Copying NumPy's 12 MB and gpuport's 4 MB, one fresh array per file, was 70-130 ms of a warm
    // Chromium visit's critical path (epoch marks: NumPy's files 47-59 -> 24-42 ms, gpuport's 42-77 -> 15-17;
    // Firefox 38-41 -> 20-31 and 24-26 -> 17-20)
    FS.writeFile(`${site}/${path}`, bytes, { canOwn: true });
  }
  if (fileName) {
    const distInfo = Object.keys(files).map((p) => p.split("/")[0]).find((p) => p.endsWith(".dist-info"));
    if (distInfo) {
      FS.writeFile(`${site}/${distInfo}/INSTALLER`, "pyodide.loadPackage");
      FS.writeFile(`${site}/${distInfo}/PYODIDE_SOURCE`, source);
    }
    linked = await preload(pyodide._module, site, now, modules, link);
    await pyodide._api.loadDynlibsFromPackage({ file_name: fileName }, now.map((p) => `${site}/${p}`));
    if (link !== "record") pyodide.loadedPackages[name] = channel;
  }
  // the finder for site-packages lists it again on the next import (all finders would re-read the standard
  // library's zip index too: 60-80 ms)
  pyodide.runPython(`import sys\nsys.path_importer_cache.pop(${JSON.stringify(site)}, None)`);
  return { loaded: fileName ? now.length : 0, of: dynlibs.length, early: linked.early, handles: linked.handles };
}
