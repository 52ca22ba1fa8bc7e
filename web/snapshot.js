// A memory snapshot of Pyodide's interpreter (Pyodide 0.27's _makeSnapshot / _loadSnapshot) to boot from: the
// interpreter starts without initialising again (bench/startup.py's "pyodide" stage). A site made by the dev server
// or `gpuport export` lists one (py/gpuport/site/pyodide_snapshot.py), which even a first visit boots from. Where the
// site has none or it does not restore, the page makes its own once it has started and is idle (host.js: no call
// for IDLE_MS), by a throwaway interpreter in a worker of its own (snapshot-worker.js): the interpreter that makes
// one cannot serve a page, as its JS globals are proxies that record paths. That one is kept in IndexedDB with its
// SHA-256. Every snapshot is checked before use; one that fails the check or does not restore is not booted from
// (a stored one is dropped), the interpreter boots as usual, and the page makes its own.
import * as idb from "./idb.js";
import * as wheels from "./wheels.js";
import { newWorker } from "./workers.js";

const STORE = "meta";

// Standard-library modules imported inside the snapshot so that a restored interpreter has them: those gpuport
// imports, those NumPy's import needs, and those Pyodide's loadPackage imports to unpack wheels (tarfile, csv, email)
// and to invalidate import caches (importlib.metadata). Measured with a warm visit of web/test.html (Chromium /
// Firefox): the packages stage 790-990 / 920-1130 ms -> 420-500 / 570-620 ms, `import gpuport` 350 -> 170 ms.
// Only pure-Python or built-in modules (js excepted: the interpreter that makes a snapshot has a stand-in for the
// page's globals): a snapshot cannot hold a loaded shared library (NumPy comes after it).
export const PRELOAD = "import asyncio, base64, collections, contextlib, csv, ctypes, dataclasses, datetime, " +
  "email.message, email.parser, email.utils, encodings.cp437, enum, functools, hashlib, html.entities, http.client, " +
  "importlib.metadata, inspect, itertools, json, logging, math, mmap, pathlib, pickle, platform, random, re, " +
  "statistics, struct, tarfile, tempfile, textwrap, threading, typing, unicodedata, urllib.parse, urllib.request, " +
  "warnings, weakref, __future__";

// Two picks Pyodide 0.27 makes as the interpreter initialises depend on the engine, and a snapshot keeps its maker's:
// the site's is made under Node 20, which has neither JSPI nor wasm-gc. So in every page restored from it
// - Python called C functions through a JS trampoline (CPython's _PyEM_TrampolineCall: where the engine has wasm-gc a
//   wasm function counts a C function's parameters and the call stays in WebAssembly; a preRun makes that function
//   for every boot, restores included, and records its pointer in _PyRuntime, where the snapshot's memory then
//   overwrote it with Node's 0). Beside being slower, a JS frame on the stack is one JSPI cannot suspend: a
//   synchronous read waiting for the GPU ended Pyodide with "SuspendError: trying to suspend JS frames";
// - pyodide.ffi.run_sync was the function that raises "WebAssembly stack switching not supported", although
//   can_run_sync() said yes.
// asBooted(pyodide) gives a restored interpreter this engine's picks. run_sync's is one word, the method's pointer
// (PyCFunctionObject.m_ml at +8 and PyMethodDef.ml_meth at +4 on wasm32), written only after checking that the
// method is run_sync and that the word is the other pick (RUN_SYNC_AS_BOOTED, run in the restored interpreter).
const RUN_SYNC_AS_BOOTED = `def _run_sync_as_booted():
    import ctypes
    import pyodide.ffi
    from pyodide_js._module import jspiSupported
    main = ctypes.CDLL(None)
    real, refusing = (ctypes.cast(getattr(main, name), ctypes.c_void_p).value
                      for name in ("run_sync", "run_sync_not_supported"))
    method = ctypes.c_uint32.from_address(id(pyodide.ffi.run_sync) + 8).value
    if ctypes.c_char_p(ctypes.c_uint32.from_address(method).value).value != b"run_sync":
        return "not changed: not the method layout of Pyodide 0.27"
    pointer = ctypes.c_uint32.from_address(method + 4)
    want, other = (real, refusing) if jspiSupported else (refusing, real)
    if pointer.value != other:
        return "as booted"
    pointer.value = want
    return "made as booted"
_run_sync_as_booted()`;

/** What asBooted changed in a restored interpreter, in words ("C calls: made as booted; run_sync: made as booted"). */
export function asBooted(pyodide) {
  const M = pyodide._module;
  let calls = "not changed: not Pyodide 0.27's runtime layout";
  if (Number.isInteger(M.__PyRuntime) && Number.isInteger(M.__PyEM_EMSCRIPTEN_COUNT_ARGS_OFFSET)
      && Number.isInteger(M._PyEM_CountArgsPtr)) {
    const slot = (M.__PyRuntime + M.HEAP32[M.__PyEM_EMSCRIPTEN_COUNT_ARGS_OFFSET >>> 2]) >>> 2;
    calls = M.HEAP32[slot] === M._PyEM_CountArgsPtr ? "as booted" : "made as booted";
    M.HEAP32[slot] = M._PyEM_CountArgsPtr;
  }
  const scratch = pyodide.globals.get("dict")();
  try {
    return `C calls: ${calls}; run_sync: ${pyodide.runPython(RUN_SYNC_AS_BOOTED, { globals: scratch })}`;
  } finally {
    scratch.destroy();
  }
}

// The site's snapshot holds NumPy imported (py/gpuport/site/pyodide_snapshot.py): a warm visit's `import numpy` (its
// ~80 modules and its extension modules' set-up) was the larger part of the import stage. A snapshot cannot hold
// a loaded shared library as such, only its data in memory; the libraries themselves (their code, and their places
// in WebAssembly's function table, where C's function pointers point) are loaded again at the bases the snapshot's
// maker recorded (wheels.js preload). That gives the same interpreter only when the restored one's function table
// is as the maker's was before NumPy, so it is checked before, and the table's new entries after (their number and
// a digest of what they are); a boot that fails either check does not use the snapshot.

/** FNV-1a over what each function table entry from `from` on is (its function's index and arity): equal tables,
 * equal digests, in Node and every browser. */
function tableDigest(M, from) {
  let hash = 0x811c9dc5;
  for (let i = from; i < M.wasmTable.length; i += 1) {
    const f = M.wasmTable.get(i);
    const text = f ? `${f.name}/${f.length};` : "-;";
    for (let j = 0; j < text.length; j += 1) hash = Math.imul(hash ^ text.charCodeAt(j), 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}

/** The snapshot maker's side: install NumPy's archive ({files, modules}: wheels.fetchArchive; `bytecode`: its
 * compiled modules, or null), load `libraries` recording their handles, `import numpy`; returns the record
 * linkNumpy needs: {libraries: [[path, handle]], table: [entries before, after], digest, dlopened: {handle: path}}. */
export async function importNumpy(pyodide, numpy, fileName, libraries, bytecode = null) {
  const M = pyodide._module;
  // where the engine has wasm-gc (the browsers), Pyodide's boot puts one function in the table first (its count-args
  // helper: asBooted): its slot is kept here too, so that NumPy's entries have the same places in every engine
  if (!M._PyEM_CountArgsPtr) M.wasmTable.grow(1);
  const before = M.wasmTable.length;
  const { handles } = await wheels.install(pyodide, numpy.files, { fileName, name: "numpy", source: "pyodide",
                                                                   modules: numpy.modules,
                                                                   libraries, link: "record" });
  if (handles.length !== libraries.length) throw new Error(`${libraries.length - handles.length} of NumPy's libraries did not compile`);
  if (bytecode) await wheels.install(pyodide, bytecode);
  // frozen: a restored interpreter runs Python before NumPy's libraries are back (loadPyodide's own), and a
  // collection then would call NumPy's functions through table entries that are not there yet
  pyodide.runPython("import numpy, gc\ngc.collect()\ngc.freeze()");
  // the handles Python's dlopen made for them: the loader answers a later dlsym through those
  const dlopened = {};
  for (const [handle, dso] of Object.entries(M.LDSO.loadedLibsByHandle)) if (Number(handle)) dlopened[handle] = dso.name;
  return { libraries: handles, table: [before, M.wasmTable.length], digest: tableDigest(M, before), dlopened };
}

// gpuport's modules need no such care (pure Python): the maker writes gpuport's files and imports it after NumPy; a
// restored interpreter is given the same files again (its later imports read them) and, where the page's archive is
// not the one the snapshot was made with, forgets the modules it holds.
const GPUPORT_MODULES = "[m for m in sys.modules if m.split('.')[0] == 'gpuport']";

/** The snapshot maker's side, after importNumpy: gpuport's page archive's `files` written to site-packages and
 * `import gpuport`; returns {modules: how many of gpuport's it imported}. */
export async function importGpuport(pyodide, files) {
  await wheels.install(pyodide, files);
  return { modules: pyodide.runPython(`import gc, sys, gpuport\ngc.collect()\ngc.freeze()\nlen(${GPUPORT_MODULES})`) };
}

/** A restored interpreter whose snapshot imported a gpuport other than the page installs: its modules forgotten, so
 * that `import gpuport` reads what was installed. Returns how many were. */
export function forgetGpuport(pyodide) {
  const scratch = pyodide.globals.get("dict")();
  try {
    return pyodide.runPython(`import sys\nforgotten = ${GPUPORT_MODULES}\nfor m in forgotten: del sys.modules[m]\n` +
                             "len(forgotten)", { globals: scratch });
  } finally {
    scratch.destroy();
  }
}

/** A restored interpreter's side: NumPy's archive installed and its libraries linked back as `linked` (importNumpy's
 * record) says, then with `all` its other libraries loaded (a page's main thread, which may not compile them when an
 * import asks: wheels.js LAZY_LIBRARIES); an Error saying what differs when the interpreter is not the one the
 * snapshot's maker had. */
export async function linkNumpy(pyodide, numpy, fileName, linked, { all = false } = {}) {
  const M = pyodide._module;
  // an engine without wasm-gc (WebKit here, Node) has no count-args helper: its slot stays empty
  if (!M._PyEM_CountArgsPtr && M.wasmTable.length === linked.table[0] - 1) M.wasmTable.grow(1);
  if (M.wasmTable.length !== linked.table[0]) {
    throw new Error(`its NumPy cannot be linked back: the function table has ${M.wasmTable.length} entries, ` +
                    `the snapshot's maker had ${linked.table[0]}`);
  }
  await wheels.install(pyodide, numpy.files, { fileName, name: "numpy", channel: "default channel", source: "pyodide",
                                               modules: numpy.modules, link: linked.libraries });
  const digest = tableDigest(M, linked.table[0]);
  if (M.wasmTable.length !== linked.table[1] || digest !== linked.digest) {
    throw new Error(`its NumPy linked back differently: ${M.wasmTable.length} function table entries (digest ` +
                    `${digest}), the snapshot's maker had ${linked.table[1]} (${linked.digest})`);
  }
  for (const [handle, path] of Object.entries(linked.dlopened)) M.LDSO.loadedLibsByHandle[handle] = M.LDSO.loadedLibsByName[path];
  if (all) {
    const site = pyodide.runPython("import site\nsite.getsitepackages()[0]");
    const done = new Set(linked.libraries.map(([path]) => path));
    const rest = Object.keys(numpy.files).filter((path) => path.endsWith(".so") && !done.has(path));
    await pyodide._api.loadDynlibsFromPackage({ file_name: fileName }, rest.map((path) => `${site}/${path}`));
  }
}

export const key = (pyodideURL) => `pyodide-snapshot:${pyodideURL}`;

const MAGIC = "GPSNAP01";

/** The site's snapshot file (py/gpuport/site/pyodide_snapshot.py: its pages of zeros left out) expanded into `into`
 * (zeroed memory of the snapshot's size, made here when null); an Error when it is not such a file. */
export function expand(file, into = null) {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.length < 20 || new TextDecoder().decode(file.subarray(0, 8)) !== MAGIC) {
    throw new Error("not a gpuport snapshot file");
  }
  const [size, page, pages] = [view.getUint32(8, true), view.getUint32(12, true), view.getUint32(16, true)];
  const out = into || new Uint8Array(size);
  if (out.length !== size || pages !== Math.ceil(size / page)) throw new Error(`a snapshot of ${size} bytes, not ${out.length}`);
  let at = 20 + Math.ceil(pages / 8);
  for (let i = 0; i < pages; i += 1) {
    if (file[20 + (i >> 3)] & (1 << (i & 7))) {
      const length = Math.min(page, size - i * page);
      if (at + length > file.length) throw new Error("a truncated snapshot file");
      out.set(file.subarray(at, at + length), i * page);
      at += length;
    }
  }
  if (at !== file.length) throw new Error(`${file.length - at} bytes past the snapshot's last page`);
  return out;
}

/** The stored snapshot's bytes when its check (idb.checkOf, where the record has one and the module is loaded) or else
 * its SHA-256 holds; {problem} when a record was there and is dropped; null when there is none (or no IndexedDB, or
 * no crypto.subtle to check one with). */
export async function load(pyodideURL) {
  let record;
  try {
    record = await idb.get(STORE, key(pyodideURL));
  } catch (e) {
    return null;
  }
  if (record === null) return null;
  let problem = null;
  if (!record || !(record.bytes instanceof Uint8Array) || typeof record.sha256 !== "string") {
    problem = "not a snapshot record";
  } else {
    const check = typeof record.check === "string" ? await idb.checkWhenLoaded(record.bytes) : null;
    if (check !== null) {
      if (check !== record.check) problem = `its check is ${check}, not the recorded ${record.check}`;
    } else {
      const digests = await idb.sha256([record.bytes]);
      if (digests === null) return null;
      if (digests[0] !== record.sha256) {
        problem = `its sha256 is ${digests[0].slice(0, 12)}..., not the recorded ${record.sha256.slice(0, 12)}...`;
      }
    }
  }
  if (problem === null) return { bytes: record.bytes };
  await drop(pyodideURL);
  return { problem };
}

// The site's snapshot file is kept in the origin private file system (OPFS) once a visit has fetched it, named by its
// SHA-256 and check (below), and read from there on the next visits: in Firefox, warm, 17.5 MB came from the HTTP
// cache 0.3 s after it was asked for and was checked 0.2 s after that, on a page thread busy with the rest of the
// boot; the kept copy reads in 45-110 ms (probe, warm Firefox: getFile().arrayBuffer() on the page's thread). A copy
// that fails its check is deleted.
const KEPT = "gpuport-snapshots";

async function keptFolder(create) {
  if (!globalThis.navigator || !navigator.storage || typeof navigator.storage.getDirectory !== "function") return null;
  try {
    return await (await navigator.storage.getDirectory()).getDirectoryHandle(KEPT, { create });
  } catch (e) {
    return null;   // none yet, or no OPFS here (a private window)
  }
}

// A kept copy is named by the site's SHA-256 and the check of its bytes (idb.checkOf), and read back the check is
// computed instead of the SHA-256, which held the Pyodide worker 45-100 ms in Chromium (crypto.subtle holds the thread
// that asks there) on the boot's path. Without the check module it is named by its SHA-256 alone and hashed.
const keptName = (sha256, check) => (check ? `${sha256}.${check}.bin` : `${sha256}.bin`);
const KEPT_NAME = /^([0-9a-f]{64})(?:\.([0-9a-f]{16}))?\.bin$/;

async function keptHandle(sha256) {
  const folder = await keptFolder(false);
  if (!folder) return null;
  try {
    for await (const [name, handle] of folder.entries()) {
      const named = KEPT_NAME.exec(name);
      if (named && named[1] === sha256 && handle.kind === "file") return handle;
    }
  } catch (e) {
    // the folder went away meanwhile
  }
  return null;
}

// A kept copy's bytes. A dedicated worker (gpuport's Pyodide worker) reads them in one synchronous call: in Chromium,
// warm, getFile().arrayBuffer() of 17.5 MB took 370 ms on a page thread busy with the boot's other files. Elsewhere,
// or where another tab holds the file's synchronous handle, through a File.
async function readKept(handle) {
  if (typeof handle.createSyncAccessHandle === "function") {
    let access = null;
    try {
      access = await handle.createSyncAccessHandle();
      const bytes = new Uint8Array(access.getSize());
      if (access.read(bytes, { at: 0 }) === bytes.length) return bytes;
    } catch (e) {
      // locked by another tab, or not a dedicated worker: read through a File below
    } finally {
      if (access) access.close();
    }
  }
  return new Uint8Array(await (await handle.getFile()).arrayBuffer());
}

/** The site's snapshot file {url, sha256}: {bytes, kept: true} from the copy kept in OPFS when its check holds
 * (keptCopy), else fetched and checked ({bytes, kept: false} or {problem}). The fetch starts beside the lookup (a
 * first visit's OPFS is made then: Firefox) and is let go once a kept copy is found. read: false answers {handle} for
 * a kept copy instead, its file handle for the Pyodide worker to read (keptCopy there): in Firefox's worker the same
 * lookup took 0.28 s (warm). */
export async function siteFile(site, signal = undefined, { read = true } = {}) {
  const abort = new AbortController();
  if (signal) signal.addEventListener("abort", () => abort.abort());
  const fetched = idb.fetchChecked(site, abort.signal).then((got) => ({ ...got, kept: false }));
  const handle = await keptHandle(site.sha256);
  if (!handle) return fetched;
  abort.abort();
  return read ? keptCopy(site, handle, signal) : { handle };
}

/** The kept copy of the site's snapshot file (`handle`): {bytes, kept: true} when its check holds; one that
 * does not is deleted, one that cannot be read (locked by another tab) is left, and the site's file is fetched
 * instead, the reason in `dropped`. */
export async function keptCopy(site, handle, signal = undefined) {
  let bytes = null;
  let dropped;
  try {
    bytes = await readKept(handle);
  } catch (e) {
    dropped = `the kept copy could not be read (${e.message})`;
  }
  if (bytes) {
    const kept = KEPT_NAME.exec(handle.name)[2];
    const check = kept ? await idb.checkWhenLoaded(bytes) : null;
    if (check !== null) {
      if (check === kept) return { bytes, kept: true };
      dropped = `the kept copy's check is ${check}, not the ${kept} it was kept with`;
    } else {
      const digests = await idb.sha256([bytes]);
      if (digests && digests[0] === site.sha256) return { bytes, kept: true };
      dropped = digests ? `the kept copy's sha256 is ${digests[0].slice(0, 12)}..., not ${site.sha256.slice(0, 12)}...`
        : "the kept copy could not be checked";
    }
    await forget(handle.name);
  }
  return { ...(await idb.fetchChecked(site, signal)), kept: false, dropped };
}

async function forget(name) {
  const folder = await keptFolder(false);
  if (folder) await folder.removeEntry(name).catch(() => {});
}

/** Keep the site's snapshot file in OPFS for the next visits (fetched again, from the HTTP cache, and checked before
 * it is written; any other kept file is deleted). Resolves to what was done, in words. */
export async function keep(site) {
  const folder = await keptFolder(true);
  if (!folder) return "not kept: no origin private file system here";
  const { bytes, problem } = await idb.fetchChecked(site);
  if (!bytes) return `not kept: ${problem}`;
  const name = keptName(site.sha256, await idb.checkWhenLoaded(bytes));
  try {
    const writable = await (await folder.getFileHandle(name, { create: true })).createWritable();
    await writable.write(bytes);
    await writable.close();
    for await (const other of folder.keys()) if (other !== name) await folder.removeEntry(other);
  } catch (e) {
    await forget(name);
    return `not kept: ${e.message}`;
  }
  return "kept for the next visit";
}

/** The snapshot to boot from: the one stored in IndexedDB (made by a visit the site's could not serve), else the
 * site's ({url, sha256} from wheels/latest.json: pyodide_snapshot.py), read (siteFile: the kept copy, else fetched and
 * checked) beside the IndexedDB lookup (or by the page: `fetchedElsewhere`, a promise of siteFile's answer) and let
 * go when a stored one is there, then expanded (into `into` when given: zeroed memory of its size).
 * {bytes, from: "stored" | "kept" | "site", problems}, or {problems}: why a stored, kept or listed one is not used
 * (the caller reports them). */
export async function find(pyodideURL, site, into = null, fetchedElsewhere = null) {
  const abort = new AbortController();
  // the page's thread (gpuport.js) fetches the site's file beside the boot, or hands over a kept copy's handle
  const fetched = site ? (fetchedElsewhere || siteFile(site, abort.signal))
    .then((got) => (got.handle ? keptCopy(site, got.handle, abort.signal) : got)) : null;
  const stored = await load(pyodideURL);
  if (stored && stored.bytes) {
    abort.abort();
    return { bytes: stored.bytes, from: "stored", problems: [] };
  }
  const problems = stored ? [stored.problem] : [];
  if (!site) return { problems };
  const { bytes, problem, kept, dropped } = await fetched;
  if (dropped) problems.push(dropped);
  if (!bytes) return { problems: [...problems, `the site's: ${problem}`] };
  try {
    return { bytes: expand(bytes, into), from: kept ? "kept" : "site", problems };
  } catch (e) {
    if (into) into.fill(0, 0, 16);   // no snapshot's magic number: loadPyodide refuses what was expanded so far
    return { problems: [...problems, `the site's: ${e.message}`] };
  }
}

export async function drop(pyodideURL) {
  try {
    await idb.remove(STORE, key(pyodideURL));
  } catch (e) {
    // storage gone (private mode): nothing to drop
  }
}

// A snapshot worker that says nothing for this long is ended: each of its stages (below) takes 0.3-3 s here, and a
// fresh clone's suite saw Firefox's sit for ever in one of them (2 of 5 runs, never alone: a host without this
// deadline would report nothing and make none on every later visit either). The next worker usually gets through.
export const STALL_S = 60;
const TRIES = 2;

class SnapshotStalled extends Error {}

function makeOnce(pyodideURL, workerURL, stallS, onStage) {
  const worker = newWorker(workerURL);
  return new Promise((resolve, reject) => {
    let stage = "starting the worker";
    let timer = null;
    const end = (settle, value) => { clearTimeout(timer); worker.terminate(); settle(value); };
    const watch = () => {
      clearTimeout(timer);
      timer = setTimeout(() => end(reject, new SnapshotStalled(
        `the snapshot worker said nothing for ${stallS} s after "${stage}" and was ended`)), stallS * 1000);
    };
    worker.onmessage = ({ data }) => {
      if (data.stage) { stage = data.stage; onStage(stage); watch(); return; }
      if (data.ok) end(resolve, data.bytes); else end(reject, new Error(data.error));
    };
    worker.onerror = (e) => end(reject, new Error(e.message || "the snapshot worker did not load"));
    watch();
    worker.postMessage({ pyodideURL, key: key(pyodideURL), preload: PRELOAD, store: STORE });
  });
}

/** Make and store a snapshot in a worker of its own; resolves to what happened ("made (N bytes)", with any worker
 * ended for stalling before it), rejects with the reason. `onStage(stage)` hears each stage the worker begins;
 * `workerURL` and `stallS` are for tests. */
export async function makeInBackground(pyodideURL, { workerURL = new URL("./snapshot-worker.js", import.meta.url).href,
                                                     stallS = STALL_S, onStage = () => {} } = {}) {
  const stalled = [];
  for (;;) {
    try {
      const bytes = await makeOnce(pyodideURL, workerURL, stallS, onStage);
      return `made (${bytes} bytes${stalled.length ? `; before it, ${stalled.join("; ")}` : ""})`;
    } catch (e) {
      if (!(e instanceof SnapshotStalled) || stalled.length + 1 >= TRIES) {
        throw stalled.length ? new Error(`${e.message}; before it, ${stalled.join("; ")}`) : e;
      }
      stalled.push(e.message);
    }
  }
}
