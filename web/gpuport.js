// gpuport in a page: `const gp = await start(); await gp.runPython("...")`.
// Pyodide runs in a dedicated Web Worker by default (WebGPU works in workers), or on the main thread.
// Every default URL resolves against this file's own location, not the page's: a page on any path or
// origin loads gpuport from wherever its files are (a cross-origin host must send CORS headers).

import { readAhead } from "./idb.js";
import { chunkedFetch } from "./ranges.js";
import { keptCopy, siteFile } from "./snapshot.js";
import { kernelFiles } from "./wasm.js";
import { fetchArchive } from "./wheels.js";
import { newWorker } from "./workers.js";

export const PYODIDE_CDN = "https://cdn.jsdelivr.net/pyodide/v0.27.7/full/";
export const HERE = new URL("./", import.meta.url).href;

function absolute(url, base = globalThis.location.href) {
  return new URL(url, base).href;
}

// The wheel to install, the files py/gpuport/site/site_files.py lists ({url, sha256} each: NumPy and gpuport as page
// archives, NumPy's bytecode, the Pyodide snapshot) and the model files stored as chunk files (static exports), from
// <base>wheels/latest.json; its URLs are relative to it.
async function siteFiles(base, wheelURL) {
  if (wheelURL) {
    return { wheelURL: absolute(wheelURL), chunked: {}, numpyArchive: null, wheelArchive: null, numpyBytecode: null,
             siteSnapshot: null };
  }
  const url = absolute("wheels/latest.json", base);
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`gpuport: cannot find the gpuport wheel (${url}: HTTP ${res.status})`);
  const site = await res.json();
  const chunked = {};
  for (const [path, file] of Object.entries(site.chunked || {})) {
    const fileURL = absolute(path, base);
    chunked[fileURL] = { ...file, chunks: absolute(file.chunks, fileURL) };
  }
  const checked = (file) => (file ? { ...file, url: absolute(file.url, url) } : null);
  return { wheelURL: absolute(site.gpuport, url), chunked, numpyArchive: checked(site.numpy),
           wheelArchive: checked(site.gpuport_archive), numpyBytecode: checked(site.numpy_bytecode),
           siteSnapshot: checked(site.snapshot) };
}

// A model's folder (manifest.json and its file): a name is one of gpuport's (gpuport.models: <base>models/<name>/,
// where Python looks by default), anything with a "/" a URL relative to the page.
function modelFolders(models, base) {
  if (!Array.isArray(models)) throw new TypeError(`gpuport: models must be an array of names or URLs, not ${models}`);
  return models.map((m) => {
    if (typeof m !== "string" || !m) throw new TypeError(`gpuport: models: ${JSON.stringify(m)} is not a name or URL`);
    const url = m.includes("/") ? absolute(m) : absolute(`models/${m}/`, base);
    return url.endsWith("/") ? url : `${url}/`;
  });
}

// Pyodide's interpreter, fetched and compiled from the moment start() is called: the worker's loadPyodide would begin
// it 0.1 s later (after its own module graph and Pyodide's loader), and compiling it is the longest path of the boot.
// {module} or {problem}; host.js hands the module to loadPyodide.
function compileInterpreter(pyodideURL) {
  if (typeof WebAssembly.compileStreaming !== "function") {
    return Promise.resolve({ problem: "no WebAssembly.compileStreaming here" });
  }
  return WebAssembly.compileStreaming(fetch(new URL("pyodide.asm.wasm", pyodideURL)))
    .then((module) => ({ module }), (e) => ({ problem: `the page could not compile it: ${e.message}` }));
}

// The site's page archives, by their keys in start()'s arguments (siteFiles)
const ARCHIVES = ["numpyArchive", "wheelArchive", "numpyBytecode"];

function remoteError(error) {
  return Object.assign(new Error(error.message), { name: error.name });
}

// The worker beats once a second until its boot has ended (worker.js); beats that stop for `frozenS` mean its thread
// stopped for good (Firefox's navigator.gpu.requestAdapter() in a worker has, beside another page's start in the same
// browser), which no deadline inside the worker can catch: the start then fails, naming the stage (WorkerFrozen).
function viaWorker(worker, args, interpreter, onProgress, frozenS) {
  interpreter.then((compiled) => {
    try {
      worker.postMessage({ interpreter: compiled });
    } catch (e) {   // a module this browser cannot send to a worker: the worker compiles its own
      worker.postMessage({ interpreter: { problem: `it could not be sent to the worker: ${e.message}` } });
    }
  });
  // the site's snapshot, fetched and checked here as soon as the site's list says where it is (the worker would
  // start 0.1-0.2 s later), its bytes moved to the worker; a copy kept in this browser the worker reads itself
  if (args.snapshot && args.siteSnapshot) {
    const site = args.siteSnapshot;
    siteFile(site, undefined, { read: false }).then(async (fetched) => {
      if (fetched.handle) {
        try {
          worker.postMessage({ siteSnapshot: fetched });
          return;
        } catch (e) {   // a browser that cannot send a file handle to a worker: read here
          fetched = await keptCopy(site, fetched.handle);
        }
      }
      worker.postMessage({ siteSnapshot: fetched }, fetched.bytes ? [fetched.bytes.buffer] : []);
    });
    args = { ...args, snapshotFromPage: true };
  }
  // the site's page archives likewise, each inflated here and its entries moved to the worker in one buffer, then
  // the shared libraries it compiles ahead (web/wheels.js fetchArchive). Fetched by the worker, which boots Pyodide
  // meanwhile, they came 0.1-0.2 s after its interpreter was ready (Firefox, warm visits).
  const archives = ARCHIVES.filter((key) => args[key]);
  for (const key of archives) {
    fetchArchive(args[key], args[key].libraries || []).then(async ({ files, modules, problem }) => {
      const buffers = files ? [...new Set(Object.values(files).map((bytes) => bytes.buffer))] : [];
      worker.postMessage({ archive: { key, files, problem, compiling: Object.keys(modules || {}) } }, buffers);
      if (!modules) return;
      const compiled = Object.fromEntries(await Promise.all(
        Object.entries(modules).map(async ([path, module]) => [path, await module])));
      worker.postMessage({ archiveModules: { key, modules: compiled } });
    });
  }
  args = { ...args, interpreterFromPage: true, archivesFromPage: archives };
  let storageGo = () => {};
  if (typeof indexedDB !== "undefined") {
    // model chunks read ahead on this thread, idle while the worker boots, and posted to it as they come
    readAhead({ models: args.models, fetchFn: chunkedFetch(args.chunked),
                storageGo: new Promise((resolve) => { storageGo = resolve; }),
                deliver: (message) => worker.postMessage({ readAhead: message },
                                                         ArrayBuffer.isView(message.found && message.found.value)
                                                           ? [message.found.value.buffer] : []) });
    args = { ...args, readAheadOnPage: true };
  }
  let nextId = 1;
  const waiting = new Map();
  const spawned = new Map();   // id -> {pool, url}: a pool worker made here for the worker's web/threads.js
  const stop = ({ pool, url }) => {
    pool.terminate();
    URL.revokeObjectURL(url);
  };
  let heard = performance.now();
  let stage = "worker";
  worker.onmessage = ({ data }) => {
    heard = performance.now();
    if (data.beat) return;
    if (data.spawnWorker) {
      const { id, source, port } = data.spawnWorker;
      const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
      const pool = new Worker(url);
      pool.postMessage({ port }, [port]);
      spawned.set(id, { pool, url });
      return;
    }
    if (data.terminateWorker) {
      if (spawned.has(data.terminateWorker)) stop(spawned.get(data.terminateWorker));
      spawned.delete(data.terminateWorker);
      return;
    }
    if (data.readAheadGo) {
      storageGo();
      return;
    }
    if (data.progress) {
      if (data.progress.state === "start") stage = data.progress.stage;
      onProgress(data.progress);
      return;
    }
    const entry = waiting.get(data.id);
    waiting.delete(data.id);
    if (data.ok) entry.resolve(data.value); else entry.reject(remoteError(data.error));
  };
  worker.onerror = (e) => {
    for (const entry of waiting.values()) entry.reject(new Error(`gpuport worker failed: ${e.message || "it did not load"}`));
    waiting.clear();
  };
  const call = (op, callArgs = [], transfer = []) => new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, args: callArgs }, transfer);
  });
  const booted = call("boot", [args]);
  const watch = setInterval(() => {
    const silent = (performance.now() - heard) / 1000;
    if (silent < frozenS) return;
    worker.terminate();
    const frozen = Object.assign(new Error(`gpuport's Pyodide worker stopped answering for ${silent.toFixed(0)} s in its `
                                           + `${stage} stage: its thread is blocked (ended)`), { name: "WorkerFrozen" });
    for (const entry of waiting.values()) entry.reject(frozen);
    waiting.clear();
  }, 1000);
  booted.finally(() => clearInterval(watch)).catch(() => {});
  return booted.then((timings) => ({
    mode: "worker",
    timings,
    runPython: (src) => call("runPython", [src]),
    info: () => call("info"),
    setArray: (name, array, shape = null) => call("setArray", [name, array, shape]),
    getArray: (expr) => call("getArray", [expr]),
    installWheel: (url) => call("installWheel", [absolute(url)]),
    addModule: (name, source, filename) => call("addModule", [name, source, filename]),
    snapshotStatus: () => call("snapshotStatus"),
    calibrationStatus: () => call("calibrationStatus"),
    precompileStatus: () => call("precompileStatus"),
    background: () => call("background"),
    close: () => {
      worker.terminate();
      for (const entry of spawned.values()) stop(entry);
      spawned.clear();
    },
  }));
}

async function onMainThread(args, interpreter, onProgress) {
  const { boot } = await import("./host.js");
  const host = await boot({ ...args, interpreter }, onProgress);
  return {
    mode: "main",
    timings: host.timings,
    runPython: (src) => host.runPython(src),
    info: () => host.info(),
    setArray: async (name, array, shape = null) => host.setArray(name, array, shape),
    getArray: (expr) => host.getArray(expr),
    installWheel: (url) => host.installWheel(absolute(url)),
    addModule: async (name, source, filename) => host.addModule(name, source, filename),
    snapshotStatus: () => host.snapshotStatus(),
    calibrationStatus: () => host.calibrationStatus(),
    precompileStatus: () => host.precompileStatus(),
    background: async () => host.background(),
    close: () => {},
  };
}

/**
 * Start gpuport. Options: base (where gpuport's files are; default: this module's folder), worker (default
 * true), pyodideURL (default `${base}pyodide/`; PYODIDE_CDN or cdn: true for the official CDN), wheelURL
 * (default from `${base}wheels/latest.json`), backend ("auto"|"webgpu"|"cpu"), tier, limits
 * ("default"|"adapter"), precompile ("background" (default): once the page is idle, build the pipelines placement
 * will send to the device (under auto, what this adapter ran on it before), starting none while a call runs;
 * "await": before resolving; "off"), hostKernels ("auto" (default): the cpu path's
 * WebAssembly kernels in their relaxed-SIMD build where the engine has it; "simd128": the portable build,
 * the same bits on every CPU; "off": NumPy only), threads ("auto" (default): whole layers of the cpu path on
 * a pool of workers, one per core (navigator.hardwareConcurrency), where the page is cross-origin isolated;
 * a number: that many; 1: one thread), snapshot (default true: boot Pyodide from a verified memory
 * snapshot: the site's (wheels/latest.json), else one kept in IndexedDB, made once the page is idle; false: never),
 * models (names of gpuport's models, e.g. "minilm-l6-v2", or URLs of model folders, that the page will load: their
 * chunks that IndexedDB lacks are fetched and verified beside the boot instead of when Python asks, and stored
 * as they come; in Python, `gpuport_idb.prefetchStatus()` says how it went and a load's stats count them
 * as downloaded), calibrate ("idle" (default): on an adapter without a stored calibration, backend "auto" places every op on the host until
 * the page has been idle, then measures both sides and stores it; "open": measure before resolving),
 * frozenS (default 30: the worker's thread silent that long while it starts fails the start, WorkerFrozen),
 * onProgress({stage, index, total, state, ms}) for the start-up stages (pyodide, packages (NumPy and the gpuport
 * wheel), open, precompile) and {stage: "precompile", done, total}.
 * Resolves to {mode, timings, base, runPython(src), info(), setArray(name, typedArray, shape),
 * getArray(expr) -> {data, shape, dtype}, installWheel(url), addModule(name, source), snapshotStatus(),
 * calibrationStatus(), precompileStatus() (each resolves once its task has ended), background() (their states now,
 * without waiting), close()};
 * timings.snapshot says how Pyodide booted ("restored from the site", "restored" (from IndexedDB), "making one",
 * "dropped: <why>; making one", "off"), timings.interpreter who compiled its WebAssembly ("compiled by the page" from
 * start() on, or "compiled by Pyodide: <why>"), timings.packages and timings.numpy_libraries how NumPy and the wheel
 * were installed.
 */
export async function start(options = {}) {
  const {
    base = HERE, worker = true, cdn = false, backend = "auto", tier = null, limits = "default",
    precompile = "background", hostKernels = "auto", threads = "auto", snapshot = true, calibrate = "idle",
    models = [], onProgress = () => {}, frozenS = 30,
  } = options;
  const kernels = kernelFiles(hostKernels);   // a bad choice throws here, before anything loads
  if (!(typeof frozenS === "number" && frozenS > 0)) throw new TypeError(`gpuport: frozenS must be a number of seconds > 0, not ${frozenS}`);
  const baseURL = absolute(base.endsWith("/") ? base : base + "/");
  const pyodideURL = absolute(options.pyodideURL || (cdn ? PYODIDE_CDN : absolute("pyodide/", baseURL)));
  const folders = modelFolders(models, baseURL);
  // the worker fetches and compiles its modules while the site's list is fetched (Firefox, warm: ~30 ms); made
  // before the interpreter's compile begins, whose threads would compete with its start
  const workerURL = new URL("./worker.js", import.meta.url);
  workerURL.searchParams.set("pyodide", pyodideURL);
  const pyodideWorker = worker ? newWorker(workerURL.href) : null;
  const interpreter = compileInterpreter(pyodideURL);
  let site;
  try {
    site = await siteFiles(baseURL, options.wheelURL);
  } catch (e) {
    if (pyodideWorker) pyodideWorker.terminate();
    throw e;
  }
  // the host kernels' build open() will link is compiled ahead from the wheel's archive, as NumPy's libraries are
  if (site.wheelArchive) site.wheelArchive = { ...site.wheelArchive, libraries: kernels };
  const args = { base: baseURL, pyodideURL, ...site, models: folders,
                 backend, tier, limits, precompile, hostKernels, threads, snapshot, calibrate };
  const gp = await (worker ? viaWorker(pyodideWorker, args, interpreter, onProgress, frozenS)
    : onMainThread(args, interpreter, onProgress));
  return { ...gp, base: baseURL };
}
