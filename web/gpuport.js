// gpuport in a page: `const gp = await start(); await gp.runPython("...")`.
// Pyodide runs in a dedicated Web Worker by default (WebGPU works in workers), or on the main thread.

export const PYODIDE_CDN = "https://cdn.jsdelivr.net/pyodide/v0.27.7/full/";

function absolute(url) {
  return new URL(url, globalThis.location.href).href;
}

async function wheelURL(given) {
  if (given) return absolute(given);
  const res = await fetch(absolute("/wheels/latest.json"), { cache: "no-store" });
  if (!res.ok) throw new Error(`gpuport: cannot find the gpuport wheel (/wheels/latest.json: HTTP ${res.status})`);
  return absolute((await res.json()).gpuport);
}

function remoteError(error) {
  return Object.assign(new Error(error.message), { name: error.name });
}

function viaWorker(args) {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  let nextId = 1;
  const waiting = new Map();
  worker.onmessage = ({ data }) => {
    const entry = waiting.get(data.id);
    waiting.delete(data.id);
    if (data.ok) entry.resolve(data.value); else entry.reject(remoteError(data.error));
  };
  worker.onerror = (e) => {
    for (const entry of waiting.values()) entry.reject(new Error(`gpuport worker failed: ${e.message}`));
    waiting.clear();
  };
  const call = (op, callArgs) => new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, args: callArgs });
  });
  return call("boot", args).then((timings) => ({
    mode: "worker",
    timings,
    runPython: (src) => call("run", { src }),
    info: () => call("info"),
    close: () => worker.terminate(),
  }));
}

async function onMainThread(args) {
  const { boot } = await import("./host.js");
  const host = await boot(args);
  return {
    mode: "main",
    timings: host.timings,
    runPython: (src) => host.runPython(src),
    info: () => host.info(),
    close: () => {},
  };
}

/**
 * Start gpuport. Options: worker (default true), pyodideURL (default the server's /pyodide/; pass
 * PYODIDE_CDN or cdn: true for the official CDN), wheelURL, backend ("auto"|"webgpu"|"cpu"),
 * tier, limits ("default"|"adapter"), precompile ("background" (default): build the manifest's pipelines
 * while the first ops run on NumPy; "await": before resolving; "off"). Resolves to
 * {mode, timings, runPython(src), info(), close()}.
 */
export async function start(options = {}) {
  const {
    worker = true, cdn = false, pyodideURL = cdn ? PYODIDE_CDN : "/pyodide/",
    backend = "auto", tier = null, limits = "default", precompile = "background",
  } = options;
  const args = {
    pyodideURL: absolute(pyodideURL), wheelURL: await wheelURL(options.wheelURL), backend, tier, limits, precompile,
  };
  return worker ? viaWorker(args) : onMainThread(args);
}
