// The dedicated Web Worker that runs Pyodide by default: a message pump around host.js.
// Its modules are imported when the worker starts, all at once (a module graph is fetched a level at a time, each
// level a round trip to revalidate, so host.js's own imports are named here too), and so is Pyodide's loader
// (gpuport.js names its folder in this file's ?pyodide=): statically imported, this file ran its first line once all
// of these were in, and Pyodide's loader only began then (Firefox, warm: 0.1 s later). The interpreter's JS (1.2 MB,
// which defines the globalThis._createPyodideModule loadPyodide uses) likewise: its evaluation was the boot's longest
// wait once it began with the boot (Chromium, warm: 0.22 s from the boot's start to loadPyodide's first step; A/B,
// 6 visits each: 1596 -> 1503 ms to the first embedding, Firefox unchanged).
const pyodideURL = new URL(import.meta.url).searchParams.get("pyodide");
if (pyodideURL) {
  import(new URL("pyodide.mjs", pyodideURL).href).catch(() => {});
  import(new URL("pyodide.asm.js", pyodideURL).href).catch(() => {});
}
// Every import that failed is named: a module whose own import failed (host.js when wasm.js is missing) fails too,
// and which of the two rejected first varies from run to run.
const modules = Promise.allSettled(["./host.js", "./idb.js", "./ranges.js", "./snapshot.js", "./wasm.js", "./wheels.js",
                                    "./workers.js"].map((file) => import(file))).then((settled) => {
  const failed = settled.filter(({ status }) => status === "rejected").map(({ reason }) => reason.message);
  if (failed.length) throw new Error(failed.join("; "));
  return settled.map(({ value }) => value);
});

// It beats once a second until its boot has ended: a thread that stops for good while it starts cannot say so itself,
// and the page fails the start when the beats stop (gpuport.js viaWorker).
const beat = setInterval(() => self.postMessage({ beat: true }), 1000);

let host = null;
// Pool workers for web/threads.js, made by the page's thread (see poolWorker there): {port to talk to it, terminate}
let nextSpawn = 1;
self.gpuportSpawnWorker = (source) => {
  const { port1, port2 } = new MessageChannel();
  const id = nextSpawn++;
  self.postMessage({ spawnWorker: { id, source, port: port2 } }, [port2]);
  return { port: port1, terminate: () => self.postMessage({ terminateWorker: id }) };
};
// What the page's thread posts once it has it, by key: "interpreter" (compiled by gpuport.js compileInterpreter),
// "siteSnapshot" (read and checked: snapshot.js siteFile), each page archive it inflated ({files, modules} or
// {problem}: web/wheels.js fetchArchive) and each shared library it compiles ahead ("<archive key>:<path>")
const fromPage = new Map();
const awaited = (key) => {
  if (!fromPage.has(key)) {
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    fromPage.set(key, { promise, resolve });
  }
  return fromPage.get(key);
};
const METHODS = new Set(["runPython", "info", "setArray", "getArray", "installWheel", "addModule", "snapshotStatus",
                         "calibrationStatus", "precompileStatus", "background"]);
const progress = (event) => self.postMessage({ progress: event });

// messages wait for the modules, in the order they came
self.onmessage = async ({ data }) => {
  let boot, receiveAhead;
  try {
    [{ boot }, { receiveAhead }] = await modules;
  } catch (e) {
    clearInterval(beat);
    const message = `gpuport worker: its modules did not load (${e.message})`;
    if (data.id) self.postMessage({ id: data.id, ok: false, error: { name: "Error", message } });
    return;
  }
  if (data.interpreter) {
    awaited("interpreter").resolve(data.interpreter);
    return;
  }
  if (data.siteSnapshot) {
    awaited("siteSnapshot").resolve(data.siteSnapshot);
    return;
  }
  if (data.archive) {
    const { key, files, problem, compiling } = data.archive;
    const modules = Object.fromEntries(compiling.map((path) => [path, awaited(`${key}:${path}`).promise]));
    awaited(key).resolve(files ? { files, modules } : { problem });
    return;
  }
  if (data.archiveModules) {
    const { key, modules } = data.archiveModules;
    for (const [path, module] of Object.entries(modules)) awaited(`${key}:${path}`).resolve(module);
    return;
  }
  if (data.readAhead) {   // model chunks the page read ahead for this worker's Python (web/idb.js readAhead)
    receiveAhead(data.readAhead);
    return;
  }
  const { id, op, args } = data;
  try {
    let value;
    if (op === "boot") {
      // the page's thread reads model chunks ahead for this worker, storage once told it may (web/idb.js)
      const go = args[0].readAheadOnPage ? () => self.postMessage({ readAheadGo: true }) : null;
      host = await boot({ ...args[0], interpreter: args[0].interpreterFromPage ? awaited("interpreter").promise : null,
                          siteSnapshotFetched: args[0].snapshotFromPage ? awaited("siteSnapshot").promise : null,
                          archivesFetched: (key) => (args[0].archivesFromPage.includes(key) ? awaited(key).promise : null) },
                   progress, go).finally(() => clearInterval(beat));
      value = host.timings;
    } else if (METHODS.has(op)) {
      value = await host[op](...args);
    } else {
      throw new Error(`unknown op ${op}`);
    }
    // an array's buffer moves to the page instead of being copied
    const transfer = value && ArrayBuffer.isView(value.data) ? [value.data.buffer] : [];
    self.postMessage({ id, ok: true, value }, transfer);
  } catch (e) {
    self.postMessage({ id, ok: false, error: { name: e.name, message: e.message } });
  }
};
