// A small key-value store over IndexedDB, one object store per kind of data (manifests, chunks, timings).
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
