// Boots Pyodide with NumPy and the gpuport wheel (micropip only when installWheel is called), opens a runtime, and runs Python.
// The same code serves the Web Worker (worker.js) and the main-thread mode (gpuport.js).
// The JS half Python calls (the bridge, IndexedDB, the WebAssembly kernels and their pool) is registered here, from
// the modules this page loaded beside the boot: in any other Pyodide gpuport registers it from the installed wheel on
// open() (py/gpuport/backends/jsmodules.py), which took 35-110 ms of a warm Chromium visit's open stage (an import of
// each module's text from a blob: URL). The IndexedDB module must be this one in any case: what it read ahead during
// the boot (idb.readAhead, idb.receiveAhead) is what Python reads from. Python checks each module's VERSION.
import * as idb from "./idb.js";
import { serveRangesFromChunks } from "./ranges.js";
import * as snapshots from "./snapshot.js";
import * as wasm from "./wasm.js";
import * as wheels from "./wheels.js";

// The rest of the JS half, by the names jsmodules.py imports it under (its MODULES), asked for when the boot begins:
// imported statically, they made the worker begin its boot later (warm Firefox, 4 interleaved pairs: 1644 -> 1695 ms
// to the first embedding). One that does not load is left to Python, which loads it from the wheel and says why not.
const REST_OF_THE_JS_HALF = { gpuport_bridge: "./bridge.js", gpuport_threads: "./threads.js" };

function restOfTheJsHalf() {
  return Promise.all(Object.entries(REST_OF_THE_JS_HALF).map(async ([name, file]) => [name, await import(file)]))
    .then(Object.fromEntries, () => ({}));
}

export const STAGES = ["pyodide", "packages", "open", "precompile"];
// Work for the next visit (the Pyodide snapshot) starts once no call has run for this long: on a first visit it
// otherwise competes with the first result for the cores (bench/startup.py, cold: the first embedding 1.2 s later in
// Chromium and 3.4 s later in Firefox than without a snapshot).
export const IDLE_MS = 500;

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

function pythonError(e) {
  // PythonError carries the Python type name and the traceback text.
  return Object.assign(new Error(e.message), { name: e.type || e.name || "Error" });
}

// A status's words for an error: a Python one's type and message (its traceback's last line), not the traceback.
function reason(e) {
  if (!e.type) return e.message;
  const last = e.message.trim().split("\n").pop();
  const at = last.indexOf(`${e.type}: `);
  return `${e.type}: ${at >= 0 ? last.slice(at + e.type.length + 2) : last}`;
}

// typed array <-> NumPy dtype; getArray maps the buffer's struct format back.
const DTYPES = {
  Float32Array: "float32", Float64Array: "float64", Int8Array: "int8", Int16Array: "int16", Int32Array: "int32",
  Uint8Array: "uint8", Uint16Array: "uint16", Uint32Array: "uint32", BigInt64Array: "int64", BigUint64Array: "uint64",
};
const FORMATS = { f: "float32", d: "float64", b: "int8", h: "int16", i: "int32", l: "int32", q: "int64",
                  B: "uint8", H: "uint16", I: "uint32", L: "uint32", Q: "uint64", "?": "bool" };

// A module from source text; linecache lets tracebacks show its lines.
const ADD_MODULE = `
import linecache, sys, types
def _add_module(name, source, filename):
    module = types.ModuleType(name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)
    sys.modules[name] = module
_add_module
`;

const SEEN_AS_BOOTED = `import os, random, sys, time
random.seed()
del sys.modules["time"]
import time as _fresh
for _name in ("timezone", "altzone", "daylight", "tzname"):
    setattr(time, _name, getattr(_fresh, _name))
sys.modules["time"] = time`;

// timings.snapshot by where the snapshot restored came from (snapshot.js find)
const RESTORED = { site: "restored from the site", kept: "restored from the site's copy kept in this browser",
                   stored: "restored" };

// LANG as Emscripten sets it when the interpreter boots in a page
const locale = () => `${((globalThis.navigator && navigator.languages && navigator.languages[0]) || "C")
  .replace("-", "_")}.UTF-8`;

export class Host {
  constructor(pyodide, timings) {
    this.pyodide = pyodide;
    this.timings = timings;
    this.namespace = pyodide.globals;
    this.numpy = pyodide.pyimport("numpy");
    this.snapshot = Promise.resolve(timings.snapshot);
    this.calibration = Promise.resolve("at open");
    this.precompiled = Promise.resolve("not in the background");
    this.calls = 0;
    this.lastCall = performance.now();
    // what each task that waits for an idle page (start(), below) is doing now, or how it ended: background()
    this.tasks = { calibration: "at open", precompile: "not in the background", snapshot: timings.snapshot };
  }

  /** Each background task's state now, without waiting for it: {calibration, precompile, snapshot}, each
   * "waiting for an idle page", what it is doing ("measuring", "making: <stage>", ...) or how it ended (what
   * calibrationStatus(), precompileStatus() and snapshotStatus() resolve to). */
  background() {
    return { ...this.tasks };
  }

  /** Runs `task` as background task `name` once `after` has settled and the page is idle; its state shows in
   * background() (`doing` while it runs), its result (or "<failed>: <why>") once it ends. */
  _inBackground(name, after, doing, task, failed) {
    this.tasks[name] = "waiting for an idle page";
    return after.then(() => this.idle()).then(() => {
      this.tasks[name] = doing;
      return task();
    }).then((r) => r, (e) => `${failed}: ${reason(e)}`).then((r) => {
      this.tasks[name] = r;
      return r;
    });
  }

  /** Resolves once no call (runPython, setArray, getArray, installWheel) has run for `ms`. */
  async idle(ms = IDLE_MS) {
    for (;;) {
      const quiet = performance.now() - this.lastCall;
      if (this.calls === 0 && quiet >= ms) return;
      await new Promise((resolve) => setTimeout(resolve, this.calls ? ms : ms - quiet));
    }
  }

  async _call(fn) {
    this.calls++;
    try {
      return await fn();
    } finally {
      this.calls--;
      this.lastCall = performance.now();
    }
  }

  /** How the interpreter's memory snapshot (snapshot.js) went: "restored", "off", or, once the one being made
   * beside the page is stored, "made (N bytes)" or "not made: <why>". */
  snapshotStatus() {
    return this.snapshot;
  }

  /** How backend="auto"'s calibration went where start({calibrate: "idle"}) left it to an idle moment:
   * "measured", "stored" (a record was there), "none" (not auto), "not measured: <why>"; "at open" otherwise. */
  calibrationStatus() {
    return this.calibration;
  }

  /** How precompilation in the background went, once it has (start({precompile: "background"}), after the page was
   * idle): "done" or "failed: <why>"; "not in the background" otherwise. */
  precompileStatus() {
    return this.precompiled;
  }

  runPython(src) {
    return this._call(async () => {
      try {
        return plain(await this.pyodide.runPythonAsync(src, { globals: this.namespace }));
      } catch (e) {
        throw pythonError(e);
      }
    });
  }

  info() {
    return this.runPython("rt.info()");
  }

  /** `name` = a NumPy array with the typed array's values (one bulk copy into the WebAssembly heap). */
  setArray(name, array, shape = null) {
    this.lastCall = performance.now();
    const dtype = DTYPES[array && array.constructor && array.constructor.name];
    if (!dtype) throw new TypeError(`setArray: a typed array is needed (Float32Array, Int32Array, ...), got ${array}`);
    const flat = this.numpy.empty(array.length, dtype);
    const buffer = flat.getBuffer();
    try {
      buffer.data.set(array);
    } finally {
      buffer.release();
    }
    const value = shape && shape.length ? flat.reshape(...shape) : flat;
    this.namespace.set(name, value);
    if (value !== flat) value.destroy();
    flat.destroy();
  }

  /** The NumPy array `expr` evaluates to: {data (a typed array, one bulk copy), shape, dtype}. */
  getArray(expr) {
    return this._call(async () => {
      let value, array, buffer;
      try {
        value = await this.pyodide.runPythonAsync(expr, { globals: this.namespace });
        array = this.numpy.ascontiguousarray(value);
        buffer = array.getBuffer();
        const dtype = FORMATS[buffer.format.replace(/^[<>=@!]/, "")];
        if (!dtype) throw new TypeError(`getArray: dtype with buffer format ${buffer.format} has no typed array`);
        return { data: buffer.data.slice(), shape: Array.from(buffer.shape), dtype };
      } catch (e) {
        throw e.type ? pythonError(e) : e;
      } finally {
        if (buffer) buffer.release();
        if (array) array.destroy();
        if (value && typeof value.destroy === "function") value.destroy();
      }
    });
  }

  /** micropip.install(url): the user's own wheel (an absolute URL, or one relative to this module). */
  installWheel(url) {
    return this._call(async () => {
      await this.pyodide.loadPackage("micropip", { messageCallback: () => {} });
      const micropip = this.pyodide.pyimport("micropip");
      try {
        await micropip.install(url);
      } catch (e) {
        throw pythonError(e);
      } finally {
        micropip.destroy();
      }
    });
  }

  /** `import name` finds a module made from `source` (shown as `filename` in tracebacks). */
  addModule(name, source, filename = `<${name}>`) {
    if (!this._addModule) this._addModule = this.pyodide.runPython(ADD_MODULE, { globals: this.pyodide.toPy({}) });
    try {
      this._addModule(name, source, filename);
    } catch (e) {
      throw pythonError(e);
    }
  }
}

// Pyodide 0.27 takes no compiled interpreter: loadPyodide fetches its WebAssembly and instantiates it streaming. Where
// the page compiled it already (`interpreter`: a promise of {module} or {problem}, gpuport.js compileInterpreter),
// that call instantiates the page's module instead, for as long as `load` runs; timings.interpreter says which.
async function withInterpreter(interpreter, mark, load) {
  if (!interpreter) return load();
  const own = WebAssembly.instantiateStreaming;
  WebAssembly.instantiateStreaming = async (source, imports) => {
    const { module, problem } = await interpreter;
    mark.interpreter = module ? "compiled by the page" : `compiled by Pyodide: ${problem}`;
    if (!module) return own.call(WebAssembly, source, imports);
    // Pyodide's own fetch of the same 10 MB is not needed: stopped (Chromium, warm: it read on for 0.3-0.5 s beside
    // the boot), and made again should the page's module not instantiate
    const response = await Promise.resolve(source).catch(() => null);
    if (response && response.body) response.body.cancel().catch(() => {});
    try {
      return { module, instance: await WebAssembly.instantiate(module, imports) };
    } catch (e) {
      mark.interpreter = `compiled by Pyodide: the page's did not instantiate (${e.message})`;
      return own.call(WebAssembly, response ? fetch(response.url) : source, imports);
    }
  };
  try {
    return await load();
  } finally {
    WebAssembly.instantiateStreaming = own;
  }
}

/**
 * Boot Pyodide and gpuport. progress({stage, index, total, state: "start"|"done", ms}) follows the stages
 * (STAGES); while precompilation runs in the background it also reports {stage: "precompile", done, total}.
 */
export async function boot({ base = null, pyodideURL, wheelURL, chunked = {}, numpyArchive = null,
                             wheelArchive = null, numpyBytecode = null, siteSnapshot = null,
                             models = [], backend = "auto", tier = null,
                             limits = "default", precompile = "background", hostKernels = "auto", threads = "auto",
                             snapshot = true, calibrate = "idle", interpreter = null, siteSnapshotFetched = null,
                           archivesFetched = () => null },
                           progress = () => {}, readAheadOnPage = null) {
  wasm.defaultSources(hostKernels);   // a bad choice throws here, before anything loads
  if (!["idle", "open"].includes(calibrate)) throw new Error(`calibrate must be "idle" or "open", not ${calibrate}`);
  const t0 = performance.now();
  const mark = {};
  const stages = precompile === "await" ? STAGES : STAGES.slice(0, -1);
  let last = t0;
  const stage = async (name, key, fn) => {
    const index = stages.indexOf(name);
    progress({ stage: name, index, total: stages.length, state: "start", ms: performance.now() - t0 });
    const value = await fn();
    const now = performance.now();
    mark[key] = now - last;
    last = now;
    progress({ stage: name, index, total: stages.length, state: "done", ms: now - t0 });
    return value;
  };
  // Pyodide's loader is asked for first: its interpreter is the longest path of the boot
  const pyodideModule = import(new URL("pyodide.mjs", pyodideURL).href);
  // and the interpreter's JS (1.2 MB), which loadPyodide would import only once its loader is in; it defines
  // globalThis._createPyodideModule, which loadPyodide then uses (gpuport's worker imported both as it started: the
  // same modules, not fetched again)
  import(new URL("pyodide.asm.js", pyodideURL).href).catch(() => {});
  const jsHalf = restOfTheJsHalf();
  serveRangesFromChunks(chunked);
  // The first adapter request of a page starts the browser's side of WebGPU (Firefox: 36-63 ms of the open stage
  // on a warm visit). Asked now, beside the boot, and dropped: open()'s own request then takes 1 ms.
  if (backend !== "cpu" && globalThis.navigator && navigator.gpu) {
    navigator.gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() => {});
  }
  // NumPy, the gpuport wheel and NumPy's bytecode as the site's page archives, fetched, checked and inflated
  // beside the boot (wheels.js), here or by the page's thread (archivesFetched(key): a promise of what it inflated)
  const archive = (key, file, compile = []) => (file ? archivesFetched(key) || wheels.fetchArchive(file, compile)
    : Promise.resolve({ problem: "the site has none" }));
  const archives = Promise.all([archive("numpyArchive", numpyArchive, (numpyArchive && numpyArchive.libraries) || []),
                                archive("wheelArchive", wheelArchive, (wheelArchive && wheelArchive.libraries) || [])]);
  const bytecode = archive("numpyBytecode", numpyBytecode);
  // The model chunks this page read last time, and those of `models` that storage lacks, read ahead beside the boot
  // (web/idb.js readAhead), here or, when this is the page's worker, on the page's thread (readAheadOnPage(): it
  // may read storage now); gpuport's Python takes them through this same module, registered below. Storage is read
  // once the snapshot is (both come from IndexedDB, and the snapshot is on the critical path: bench/startup.py,
  // warm: the Pyodide stage 0.7 -> 1.4 s when they were read together).
  const readAhead = () => {
    if (typeof indexedDB === "undefined") return;
    idb.expectAhead(models);
    if (readAheadOnPage) readAheadOnPage(); else idb.readAhead({ models, deliver: idb.receiveAhead });
  };
  let restoredFrom = null;
  let numpyLinked = false;   // NumPy came imported with the snapshot: its files and libraries are in
  const pyodide = await stage("pyodide", "pyodide_ms", async () => {
    // The site's snapshot, its size listed, restores into memory made ready beside its fetch and check: loadPyodide
    // gets the interpreter ready meanwhile (the page's compiled module, else its own fetch and compile), held by
    // fsInit until the checked bytes are in. Memory that receives none stays zero, which loadPyodide refuses (no snapshot's magic number).
    const memory = snapshot && siteSnapshot && siteSnapshot.bytes ? new Uint8Array(siteSnapshot.bytes) : null;
    const found = snapshot ? snapshots.find(pyodideURL, siteSnapshot, memory, siteSnapshotFetched)
      : Promise.resolve({ problems: [] });
    found.then(readAhead);
    const { loadPyodide: pyodideLoad } = await pyodideModule;
    const loadPyodide = (options) => withInterpreter(interpreter, mark, () => pyodideLoad(options));
    const restore = async (options) => {
      const restored = await loadPyodide({ indexURL: pyodideURL, ...options });
      const { from, problems } = await found;
      // the site's snapshot holds NumPy imported: its libraries are linked back before any Python runs that could
      // reach NumPy's functions (snapshot.js linkNumpy); an interpreter that cannot take them is not booted from
      if (from !== "stored" && siteSnapshot && siteSnapshot.numpy) {
        const [numpy] = await archives;
        if (!numpy.files) throw new Error(`its NumPy cannot be linked back without NumPy's archive (${numpy.problem})`);
        if (siteSnapshot.numpy.archive_sha256 !== numpyArchive.sha256) {
          throw new Error("it was made with another NumPy archive than the site lists");
        }
        await snapshots.linkNumpy(restored, numpy, numpyArchive.file_name, siteSnapshot.numpy,
                                  { all: !wheels.LAZY_LIBRARIES });
        numpyLinked = true;
      }
      // a snapshot holds its maker's random state (every visit, and from the site's every user, would draw the
      // same numbers), locale and time zone (Node's C.UTF-8 and UTC for the site's): this page's, as a boot would
      // have them (Emscripten's own tzset, then the time module's constants from a fresh instance of it)
      const M = restored._module;
      M.__tzset_js(M._timezone, M._daylight, M.HEAPU32[M._tzname >>> 2], M.HEAPU32[(M._tzname >>> 2) + 1]);
      const scratch = restored.globals.get("dict")();   // not the page's namespace
      restored.runPython(`${SEEN_AS_BOOTED}\nos.environ["LANG"] = ${JSON.stringify(locale())}`, { globals: scratch });
      scratch.destroy();
      // and its maker's engine (Node's: no JSPI, no wasm-gc): how Python calls C, and run_sync, as this engine's boot
      // would have them (snapshot.js), so that a synchronous read can wait for the GPU
      mark.as_booted = snapshots.asBooted(restored);
      restoredFrom = from;
      mark.snapshot = `${RESTORED[from]}${problems.length ? ` (${problems.join("; ")})` : ""}`;
      return restored;
    };
    let early = null;
    if (memory) {
      // a stored snapshot of the same size goes in as well
      const filled = found.then(({ bytes }) => {
        if (bytes && bytes !== memory && bytes.length === memory.length) memory.set(bytes);
      });
      early = restore({ _loadSnapshot: memory, fsInit: () => filled });
      early.catch(() => {});   // reported below, once `found` says why
    }
    const { bytes, from, problems } = await found;
    if (bytes) {
      try {
        return await (early && bytes.length === memory.length ? early : restore({ _loadSnapshot: bytes }));
      } catch (e) {
        if (from === "stored") await snapshots.drop(pyodideURL);
        problems.push(`${from === "site" ? "the site's" : "it"} did not restore (${e.message})`);
      }
    }
    if (early) await early.catch(() => {});   // one interpreter at a time
    if (problems.length) mark.snapshot = `dropped: ${problems.join("; ")}`;
    return loadPyodide({ indexURL: pyodideURL });
  });
  const registered = { gpuport_idb: idb, gpuport_wasm: wasm, ...(await jsHalf) };
  for (const [name, module] of Object.entries(registered)) pyodide.registerJsModule(name, module);
  // NumPy (gpuport's only requirement) and the gpuport wheel, without micropip (loaded, with packaging, only when
  // installWheel needs it): from what was fetched beside the boot, else by Pyodide's loadPackage, both at once
  await stage("packages", "packages_ms", async () => {
    const [numpy, gpuport] = await archives;
    wasm.compiledAhead(gpuport.modules);   // the host kernels' build, for open() to link
    if (numpyLinked) {
      // gpuport came imported with the snapshot too: kept where this is the archive it was made with
      const imported = siteSnapshot.gpuport ? Boolean(gpuport.files && wheelArchive
                                                      && siteSnapshot.gpuport.archive_sha256 === wheelArchive.sha256)
        : null;
      if (imported === false) snapshots.forgetGpuport(pyodide);
      if (gpuport.files) {
        await wheels.install(pyodide, gpuport.files, { fileName: new URL(wheelURL).pathname.split("/").pop(),
                                                       name: "gpuport", channel: wheelURL, source: wheelURL });
      } else {
        await pyodide.loadPackage([wheelURL], { messageCallback: () => {} });
      }
      const how = gpuport.files ? "from the site's archive" : `by loadPackage: ${gpuport.problem}`;
      mark.packages = imported ? `NumPy and gpuport imported in the snapshot, gpuport's files ${how}`
        : `NumPy imported in the snapshot, gpuport ${how}${imported === false
          ? " (the snapshot's gpuport, of another archive, forgotten)" : ""}`;
      const linked = siteSnapshot.numpy.libraries.length;
      mark.numpy_libraries = `${linked} linked back from the snapshot${wheels.LAZY_LIBRARIES ? ", the rest on import"
        : `, the other ${Object.keys(numpy.files).filter((p) => p.endsWith(".so")).length - linked} loaded`}`;
    } else if (numpy.files && gpuport.files) {
      const { loaded, of, early } = await wheels.install(
        pyodide, numpy.files, { fileName: numpyArchive.file_name, name: "numpy", channel: "default channel",
                                source: "pyodide", libraries: wheels.LAZY_LIBRARIES ? numpyArchive.libraries || null : null,
                                modules: numpy.modules });
      await wheels.install(pyodide, gpuport.files, { fileName: new URL(wheelURL).pathname.split("/").pop(),
                                                     name: "gpuport", channel: wheelURL, source: wheelURL });
      mark.packages = `from the site's archives${archivesFetched("numpyArchive") ? " (inflated by the page's thread)" : ""}`;
      const ahead = early ? ` (${early} compiled beside the boot)` : "";
      mark.numpy_libraries = loaded === of ? `all ${of} at install${ahead}`
        : `${loaded} of ${of} at install${ahead}, the rest on import`;
    } else {
      await pyodide.loadPackage(["numpy", wheelURL], { messageCallback: () => {} });
      mark.packages = `loadPackage: ${numpy.problem || gpuport.problem}`;
    }
    // NumPy's modules compiled for this Pyodide: `import numpy` reads them instead of compiling its ~80 modules
    // again on every visit; Python checks each against its source's hash
    const { files, problem } = await bytecode;
    if (files) await wheels.install(pyodide, files);
    mark.numpy_bytecode = files ? "used" : `not used: ${problem}`;
  });
  await stage("open", "open_ms", async () => {
    // where gpuport's files are served (Python resolves default model URLs against it), and which build of
    // the WebAssembly kernels open() links (a missing .wasm, a browser without SIMD or "off" leaves the cpu
    // path on NumPy, and gpuport.host.wasm_kernels says why), on how many threads (gpuport.host.wasm_threads)
    const env = { GPUPORT_WASM_KERNELS: hostKernels, GPUPORT_THREADS: String(threads),
                  ...(base ? { GPUPORT_BASE: base } : {}) };
    pyodide.runPython(`import os\nos.environ.update(${JSON.stringify(env)})`);
    pyodide.globals.set("_gpuport_open_args",
                        pyodide.toPy({ backend, tier, limits, calibrate: calibrate === "idle" ? "later" : "open" }));
    // `import gpuport` timed apart from open(): the two parts of this stage a visit pays (rt.info()["open_ms"] splits
    // the second)
    await pyodide.runPythonAsync(
      "_gpuport_import_ms = __import__('time').perf_counter()\nimport gpuport\n" +
      "_gpuport_import_ms = (__import__('time').perf_counter() - _gpuport_import_ms) * 1e3\n" +
      "rt = await gpuport.open(**_gpuport_open_args)\ndel _gpuport_open_args");
    mark.import_ms = pyodide.globals.get("_gpuport_import_ms");
    pyodide.globals.delete("_gpuport_import_ms");
    mark.host_kernels_compiled = wasm.compiled();
  });
  // "await": the pipelines placement will send to the device (rt.precompile(): under auto, what this adapter ran
  // on the device before, from the IndexedDB manifest; on a fixed webgpu backend every op's) are built before
  // start() resolves; ops called meanwhile answer on NumPy. "background" builds them once the page is idle (below).
  // The report is `await rt_precompile` in Python either way.
  const precompileNow = (pause) => {
    pyodide.globals.set("_gpuport_progress", (done, total) => progress({ stage: "precompile", done, total }));
    pyodide.globals.set("_gpuport_pause", pause);
    return pyodide.runPythonAsync(
      "import asyncio\nrt_precompile = asyncio.ensure_future(rt.precompile(" +
      "on_progress=lambda e: _gpuport_progress(e['done'], e['total']), pause=_gpuport_pause))\nawait rt_precompile");
  };
  if (precompile === "await") await stage("precompile", "precompile_ms", () => precompileNow(null));
  mark.total_ms = performance.now() - t0;
  const restored = Boolean(mark.snapshot && mark.snapshot.startsWith("restored"));
  if (!snapshot) {
    mark.snapshot = "off";
  } else if (!restored) {
    // the next visit boots from a snapshot, made beside the page once it is idle (host.snapshot says how it went)
    mark.snapshot = `${mark.snapshot ? `${mark.snapshot}; ` : ""}making one`;
  }
  const host = new Host(pyodide, mark);
  // What waits for an idle page, one after the other (each takes the cores a first result needs): auto's
  // calibration on an adapter without a stored one (0.8 s in Chromium, 2.2 s in Firefox, measured at open on a first
  // visit of web/test.html), precompilation, then the snapshot.
  let after = Promise.resolve();
  if (calibrate === "idle") {
    const rt = pyodide.globals.get("rt");
    host.calibration = host._inBackground("calibration", after, "measuring", () => rt.calibrate(), "not measured")
      .finally(() => rt.destroy());
    after = host.calibration;
  }
  // Background precompilation, placed by the calibration: never beside a call (a first result, a forward on the
  // pool), and it stops starting pipelines while one runs: the browser compiles on the cores that call needs.
  if (precompile === "background") {
    host.precompiled = host._inBackground("precompile", after, "compiling",
                                          () => precompileNow(() => host.idle(0)).then(() => "done"), "failed");
    after = host.precompiled;
  }
  if (snapshot && !restored) {
    const onStage = (stage) => { host.tasks.snapshot = `making: ${stage}`; };
    host.snapshot = host._inBackground("snapshot", after, "making",
                                       () => snapshots.makeInBackground(pyodideURL, { onStage }), "not made");
  } else if (restoredFrom === "site") {
    // the site's, fetched: kept in this browser for the next visit
    host.snapshot = host._inBackground("snapshot", after, "keeping the site's",
                                       () => snapshots.keep(siteSnapshot).then((kept) => `${mark.snapshot}; ${kept}`),
                                       "not kept");
  }
  return host;
}
