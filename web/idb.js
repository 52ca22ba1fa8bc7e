// A small key-value store over IndexedDB, one object store per kind of data (manifests, chunks, timings),
// and the browser's SHA-256, which verifies what goes into it and comes out of it.
// Errors (quota, private mode, blocked) reject with the DOMException's name so Python can react.

export const VERSION = "0.1.0";   // gpuport's version: Python refuses a JS half of another release

const DB_NAME = "gpuport";
const STORES = ["manifests", "chunks", "meta"];
let opening = null;

function database() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => {
        for (const name of STORES) if (!req.result.objectStoreNames.contains(name)) req.result.createObjectStore(name);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => { opening = null; reject(req.error); };
      req.onblocked = () => { opening = null; reject(new Error("IndexedDB open blocked")); };
    });
  }
  return opening;
}

function request(store, mode, fn) {
  return database().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const req = fn(tx.objectStore(store));
    let result;
    req.onsuccess = () => { result = req.result; };
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error || req.error);
    tx.onabort = () => reject(tx.error || req.error || new Error("IndexedDB transaction aborted"));
  }));
}

export function get(store, key) {
  return request(store, "readonly", (s) => s.get(key)).then((v) => (v === undefined ? null : v));
}

export function put(store, key, value) {
  return request(store, "readwrite", (s) => s.put(value, key));
}

export function remove(store, key) {
  return request(store, "readwrite", (s) => s.delete(key));
}

export function keys(store) {
  return request(store, "readonly", (s) => s.getAllKeys());
}

export async function estimate() {
  if (!globalThis.navigator || !navigator.storage || !navigator.storage.estimate) return null;
  const { usage, quota } = await navigator.storage.estimate();
  return { usage, quota };
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The sha256 (hex) of each byte array, by the browser's native SHA-256 (crypto.subtle: a MiB in about a
// millisecond, several times Pyodide's hashlib); null where there is no crypto.subtle (a page served over plain
// http from another host is not a secure context), and Python hashes itself.
export async function sha256(arrays) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) return null;
  return Promise.all(Array.from(arrays, async (a) => hex(await subtle.digest("SHA-256", a))));
}

// A record and its sha256 in one crossing: {value, sha256} (sha256 null: not bytes, or no crypto.subtle), or null.
export async function getWithDigest(store, key) {
  const value = await get(store, key);
  if (value === null) return null;
  const digests = ArrayBuffer.isView(value) || value instanceof ArrayBuffer ? await sha256([value]) : null;
  return { value, sha256: digests ? digests[0] : null };
}

// A head start for a warm visit: the model chunks a page read last time (Python records their keys under
// "prefetch:<model url>" in "meta") are read and digested while Pyodide boots, and handed over by
// takeWithDigest; Python checks each digest against its manifest as for any record. What nobody takes within
// PREFETCH_KEEP_MS is let go (a page that no longer loads that model holds none of it).
const PREFETCH_KEEP_MS = 120000;
const PREFETCH_MAX_AGE_MS = 30 * 24 * 3600 * 1000;   // records of models not loaded for a month are left alone
const prefetched = new Map();   // key -> Promise<{value, sha256} | null>
const prefetchState = { started: false, keys: 0, taken: 0, dropped: 0, error: null };

export function prefetch() {
  if (prefetchState.started) return;
  prefetchState.started = true;
  (async () => {
    const names = (await keys("meta")).filter((k) => typeof k === "string" && k.startsWith("prefetch:"));
    for (const name of names) {
      const record = JSON.parse(await get("meta", name));
      if (!record || !Array.isArray(record.keys) || Date.now() - record.at > PREFETCH_MAX_AGE_MS) continue;
      for (const key of record.keys) {
        if (prefetched.has(key)) continue;
        prefetched.set(key, getWithDigest("chunks", key).catch(() => null));
        prefetchState.keys += 1;
      }
    }
    setTimeout(() => { prefetchState.dropped += prefetched.size; prefetched.clear(); }, PREFETCH_KEEP_MS);
  })().catch((e) => { prefetchState.error = String(e); });
}

export function prefetchStatus() {
  return { ...prefetchState, waiting: prefetched.size };
}

// getWithDigest, from the prefetch when it holds the key (each prefetched record is handed over once).
export async function takeWithDigest(store, key) {
  const pending = store === "chunks" ? prefetched.get(key) : undefined;
  if (pending) {
    prefetched.delete(key);
    const found = await pending;
    if (found) {
      prefetchState.taken += 1;
      return found;
    }
  }
  return getWithDigest(store, key);
}
