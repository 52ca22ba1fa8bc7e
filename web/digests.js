// SHA-256 of byte arrays (hex), by the browser's own (crypto.subtle), on a thread of its own where one is given.
// Chromium's crypto.subtle.digest holds the thread that calls it for as long as it hashes: a worker's 1 ms timer did
// not fire once in the 43-55 ms that 24 MiB took (Firefox's fired, with gaps of up to 16 ms). On a warm visit that
// was the snapshot (24 MB) holding the Pyodide worker's thread while the page's compiled interpreter waited in its
// queue, and the model chunks read ahead (90 MB for MiniLM) holding the page's. So start() makes one small worker
// that only hashes, for the page's thread and, over a MessagePort, for the Pyodide worker's.
// What goes there is a copy (a fraction of the hashing's cost, and the caller's bytes stay its own): a hashing
// thread that fails or does not answer in time (answerMs) costs nothing but the time, and the caller hashes itself.

/** The hashing worker's script: it answers {id, arrays} with {id, digests} (or {id, error}) on its own port and on
 * each port sent to it as {port}. */
export const WORKER_SOURCE = `"use strict";
const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
const serve = (port) => {
  port.onmessage = async ({ data }) => {
    if (data.port) { serve(data.port); return; }
    try {
      const digests = await Promise.all(data.arrays.map(async (a) => hex(await crypto.subtle.digest("SHA-256", a))));
      port.postMessage({ id: data.id, digests });
    } catch (e) {
      port.postMessage({ id: data.id, error: String(e && e.message || e) });
    }
  };
};
serve(self);
`;

// Below this many bytes in all a hash is quicker here than the round trip (a MiB hashes in about a millisecond);
// a model's chunks are about 1 MB each.
const ELSEWHERE_MIN_BYTES = 256 << 10;
// A healthy hashing thread answers within a second even for a model's hundreds of MB on a busy machine; one that has
// not after this long is given up for this call.
const answerMs = (bytes) => 2000 + 50 * (bytes >> 20);

let target = null;   // a Worker or MessagePort that answers {id, digests} or {id, error}
let nextId = 1;
const counts = { elsewhere: 0, here: 0 };
const pending = new Map();   // id -> {resolve, timer}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The hashing worker (terminate() it when done), or null where this thread cannot make one (no Worker, no Blob
 * URLs, a worker-src policy: then every hash is made where it is asked for). */
export function hashingWorker() {
  if (typeof Worker === "undefined" || typeof Blob === "undefined" || typeof URL.createObjectURL !== "function") return null;
  try {
    return new Worker(URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" })));
  } catch (e) {
    return null;
  }
}

/** A MessagePort to `worker` (hashingWorker's) for another thread: it passes the port to use(). */
export function portTo(worker) {
  const { port1, port2 } = new MessageChannel();
  worker.postMessage({ port: port1 }, [port1]);
  return port2;
}

/** Hash on `worker` (a hashing Worker or a port to one) from now on; null: here again. */
export function use(worker) {
  for (const { resolve, timer } of pending.values()) {
    clearTimeout(timer);
    resolve(null);
  }
  pending.clear();
  target = worker;
  if (!worker) return;
  worker.onmessage = ({ data }) => {
    const entry = pending.get(data.id);
    if (!entry) return;
    pending.delete(data.id);
    clearTimeout(entry.timer);
    entry.resolve(data.digests || null);
  };
  worker.onmessageerror = () => use(null);
  if ("onerror" in worker) worker.onerror = () => use(null);
}

function elsewhere(arrays) {
  const copies = arrays.map((a) => new Uint8Array(a));   // the view's bytes only, in a buffer of their own
  const id = nextId++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      resolve(null);
    }, answerMs(copies.reduce((sum, c) => sum + c.byteLength, 0)));
    pending.set(id, { resolve, timer });
    try {
      target.postMessage({ id, arrays: copies }, copies.map((c) => c.buffer));
    } catch (e) {
      pending.delete(id);
      clearTimeout(timer);
      resolve(null);
    }
  });
}

/** The SHA-256 (hex) of each byte array; null where there is no crypto.subtle (a page served over plain http from
 * another host is not a secure context). */
export async function sha256(arrays) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) return null;
  const list = Array.from(arrays, (a) => (ArrayBuffer.isView(a) ? new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
    : new Uint8Array(a)));
  if (target && list.reduce((sum, a) => sum + a.byteLength, 0) >= ELSEWHERE_MIN_BYTES) {
    const digests = await elsewhere(list);
    if (digests) {
      counts.elsewhere += list.length;
      return digests;
    }
  }
  counts.here += list.length;
  return Promise.all(list.map(async (a) => hex(await subtle.digest("SHA-256", a))));
}

/** How many arrays this thread has hashed on the hashing thread and here: {elsewhere, here}. */
export function hashed() {
  return { ...counts };
}
