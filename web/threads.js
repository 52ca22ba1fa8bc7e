// The threaded host kernels (gpuport_simd_threads.wasm): one module instantiated on the Pyodide thread and on
// a pool of Web Workers, all on one shared WebAssembly.Memory the module owns (Pyodide's heap cannot be
// shared). The pool itself is C (hostkernels/pool.c): each worker calls gp_pool_worker and sleeps in
// memory.atomic.wait32 between jobs; the caller's thread takes parts too and only spins, so it may be the
// page's main thread. This file starts the workers and copies bytes between Pyodide's heap and the pool's
// memory; Python (gpuport/host/wasm_threads.py) decides what lives where. Imported from the wheel's text
// (gpuport/backends/jsmodules.py), like wasm.js.
//
// Shared memory needs a cross-origin isolated page (COOP: same-origin, COEP: require-corp, which gpuport's
// servers and `gpuport export` send); elsewhere startPool answers {available: false, reason} and the kernels
// run on one thread.

export const VERSION = "0.1.0";   // gpuport's version: Python refuses a JS half of another release

const PAGE = 65536;
const WORKER_STACK = 256 * 1024;   // each worker's shadow stack, carved from the heap above __heap_base
const MAX_PAGES = 32768;           // 2 GiB: the module's --max-memory
const START_MS = 10000;            // how long the workers may take to join before the pool gives up

// A classic worker from a blob: it needs no file beside this module (which itself comes from the wheel). Its orders
// come as its first message, or, for a worker the page's thread made (poolWorker), over the port that message brings.
const WORKER_SOURCE = `const start = async (data, reply) => {
  try {
    const env = { memory: data.memory, gp_clock_ms: () => performance.now() };
    const { exports } = await WebAssembly.instantiate(data.module, { env });
    exports.__stack_pointer.value = data.stack;
    reply({ ok: true });
    exports.gp_pool_worker(data.slot);
  } catch (e) {
    reply({ ok: false, error: String((e && e.message) || e) });
  }
};
onmessage = ({ data }) => {
  if (data.port) data.port.onmessage = (e) => start(e.data, (m) => data.port.postMessage(m));
  else start(data, postMessage);
};`;

/** Why this context cannot share memory with workers, or "" when it can. */
export function isolationProblem() {
  if (globalThis.crossOriginIsolated === false) {
    return "the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and " +
           "Cross-Origin-Embedder-Policy: require-corp)";
  }
  if (typeof SharedArrayBuffer !== "function") return "SharedArrayBuffer is unavailable";
  if (typeof Worker !== "function") return "this context cannot start Web Workers";
  return "";
}

/** The threads a pool should have by default: every core the browser reports. */
export function defaultThreads() {
  return Math.max(1, Math.min(16, (globalThis.navigator && navigator.hardwareConcurrency) || 1));
}

/** The record of a pool that did not start, and why. */
export function unavailable(reason) {
  return { available: false, reason, threads: 1 };
}

function joined(worker) {
  return new Promise((resolve) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (e) => resolve({ ok: false, error: e.message || "the worker script failed" });
  });
}

// A pool worker: {onmessage, onerror, postMessage, terminate}. Where gpuport's own worker offers it
// (web/worker.js gpuportSpawnWorker), the page's thread makes it and this end talks to it over a MessagePort: a
// `new Worker()` made inside that worker blocked it for ever in Firefox ESR, in one cold start-up in 4 to 45 here
// (test.html, preload=smollm2; the step logs stopped at the first pool worker's constructor). Elsewhere (a host's
// own worker: PyScript, JupyterLite; a page's thread) it is made here.
function poolWorker(url) {
  const spawn = globalThis.gpuportSpawnWorker;
  if (typeof spawn !== "function") return new Worker(url);
  const { port, terminate } = spawn(WORKER_SOURCE);
  return { set onmessage(f) { port.onmessage = f; }, set onerror(f) {}, postMessage: (m) => port.postMessage(m),
           terminate };
}

/**
 * Start `threads` threads (this one and threads - 1 workers) on the kernels in `bytes` (a Uint8Array of
 * gpuport_simd_threads.wasm). `pyodide` is the Pyodide whose heap the copies read and write. Never throws:
 * {available: false, reason, threads: 1}, or {available: true, reason: "", threads, kernels, workers (where they
 * were made: poolWorker), arenaStart, put, take, grow, size}.
 */
export async function startPool(pyodide, bytes, threads = defaultThreads()) {
  const problem = isolationProblem();
  if (problem) return unavailable(problem);
  threads = Math.max(1, Math.floor(threads));
  if (threads < 2) return unavailable(`${threads} thread asked for`);
  let module, memory, exports;
  try {
    module = await WebAssembly.compile(bytes);
    memory = new WebAssembly.Memory({ initial: 256, maximum: MAX_PAGES, shared: true });
    // gp_clock_ms: what times a worker's spin before it sleeps (hostkernels/pool.c)
    ({ exports } = await WebAssembly.instantiate(module, { env: { memory, gp_clock_ms: () => performance.now() } }));
  } catch (e) {
    return unavailable(`the threaded kernels do not load: ${e.message}`);
  }
  const heapBase = exports.__heap_base.value;
  const workers = [];
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  try {
    const replies = [];
    for (let slot = 1; slot < threads; slot++) {
      const worker = poolWorker(url);
      workers.push(worker);
      replies.push(joined(worker));
      worker.postMessage({ module, memory, slot, stack: heapBase + slot * WORKER_STACK });
    }
    const late = new Promise((resolve) => setTimeout(() => resolve({ ok: false, error: "timed out" }), START_MS));
    for (const reply of replies) {
      const got = await Promise.race([reply, late]);
      if (!got.ok) throw new Error(`a worker did not start: ${got.error}`);
    }
    const deadline = performance.now() + START_MS;
    while (exports.gp_pool_workers() < threads - 1) {   // they join just after their reply
      if (performance.now() > deadline) throw new Error("the workers did not join the pool");
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  } catch (e) {
    for (const worker of workers) worker.terminate();
    return unavailable(e.message);
  } finally {
    URL.revokeObjectURL(url);
  }
  const heap = () => pyodide._module.HEAPU8;   // read per call: Pyodide replaces it when its memory grows
  return {
    available: true, reason: "", threads, kernels: exports,
    workers: typeof globalThis.gpuportSpawnWorker === "function" ? "made by the page's thread" : "made here",
    arenaStart: heapBase + threads * WORKER_STACK,
    /** Copy n bytes from Pyodide's heap at `from` to the pool's memory at `to`. */
    put(to, from, n) { new Uint8Array(memory.buffer, to, n).set(heap().subarray(from, from + n)); },
    /** Copy n bytes from the pool's memory at `from` to Pyodide's heap at `to`. */
    take(to, from, n) { heap().set(new Uint8Array(memory.buffer, from, n), to); },
    /** Grow the memory to at least `bytes`; its new size. */
    grow(bytes) {
      const pages = Math.ceil(bytes / PAGE) - memory.buffer.byteLength / PAGE;
      if (pages > 0) memory.grow(pages);
      return memory.buffer.byteLength;
    },
    size() { return memory.buffer.byteLength; },
  };
}
