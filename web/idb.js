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

// A head start on a model's load, beside Pyodide's boot, from two sources:
// - storage (a warm visit): the chunks the page's last load read (Python records their keys under
//   "prefetch:<model url>" in "meta") are read and digested;
// - the network (start({models}): models the page says it will load): fetchAhead fetches each one's manifest, then
//   every chunk not in storage in Range requests, in file order, digests it, checks it against the manifest and
//   stores it. A chunk that fails any of that is left to Python, which fetches it itself, retries and reports.
//   With Pyodide in a Web Worker, fetchAhead runs on the page's thread, which is idle while the worker boots (on
//   the worker's own it finished 4.7 s into a cold visit in Chromium instead of with the boot), and posts what it
//   has to the worker, where receiveAhead takes it.
// takeWithDigest hands each over once; Python checks each digest against its own manifest as for any record, and
// counts what came over the network as downloaded. What nobody takes within PREFETCH_KEEP_MS is let go.
const PREFETCH_KEEP_MS = 120000;
const PREFETCH_MAX_AGE_MS = 30 * 24 * 3600 * 1000;   // records of models not loaded for a month are left alone
const SPAN_CHUNKS = 4;        // chunks per Range request, and
const SPANS_IN_FLIGHT = 4;    // requests at a time: the loader's own defaults (gpuport.loader)
const FETCH_AHEAD_MAX_BYTES = 512 << 20;   // held in memory until taken: the models' first 512 MiB
const MANIFEST_WAIT_MS = 10000;
const SPAN_WAIT_MS = 120000;   // a stalled request gives its chunks up to Python rather than hold its load
const prefetched = new Map();   // key -> Promise<{value, sha256, fetched, stored} | null>
const settlers = new Map();     // key -> resolve() of its pending record, for the network's chunks
// fetched_ms: when the network's part had settled every chunk (performance.now() where this module runs)
const prefetchState = { started: false, keys: 0, taken: 0, dropped: 0, fetched: 0, fetched_bytes: 0, failed: 0,
                        error: null, started_ms: null, fetched_ms: null };
let expected;                   // resolves once the network's part has said which chunks it fetches
const expectation = new Promise((resolve) => { expected = resolve; });
let registered = Promise.resolve();   // every key to be read ahead is in `prefetched` once this resolves

function problem(text) {
  prefetchState.error = prefetchState.error ? `${prefetchState.error}; ${text}` : text;
}

/** Start reading ahead from storage and, for `models` (absolute URLs of model folders holding manifest.json),
 * from the network: here with `fetchFn`, or, `elsewhere`, by a fetchAhead whose messages receiveAhead takes. */
export function prefetch({ models = [], elsewhere = false, fetchFn = globalThis.fetch } = {}) {
  if (prefetchState.started) return;
  prefetchState.started = true;
  prefetchState.started_ms = performance.now();
  if (models.length && !elsewhere) fetchAhead(models, receiveAhead, fetchFn);
  registered = (async () => {
    await fromStorage().catch((e) => problem(String(e)));
    if (!models.length) return;
    const late = new Promise((resolve) => setTimeout(resolve, MANIFEST_WAIT_MS * 2, "late"));
    if (await Promise.race([expectation, late]) === "late") problem("no word from the network's read-ahead");
  })().finally(() => {
    setTimeout(() => { prefetchState.dropped += prefetched.size; prefetched.clear(); }, PREFETCH_KEEP_MS);
  });
}

async function fromStorage() {
  const names = (await keys("meta")).filter((k) => typeof k === "string" && k.startsWith("prefetch:"));
  for (const name of names) {
    const record = JSON.parse(await get("meta", name));
    if (!record || !Array.isArray(record.keys) || Date.now() - record.at > PREFETCH_MAX_AGE_MS) continue;
    for (const key of record.keys) {
      if (prefetched.has(key)) continue;
      prefetched.set(key, getWithDigest("chunks", key).then((found) => found && { ...found, fetched: false },
                                                               () => null));
      prefetchState.keys += 1;
    }
  }
}

/** The network's part: deliver({expect: [keys], error}) once, then deliver({key, found}) for each of those keys
 * (found: {value, sha256, fetched: true, stored}, or null with `error`: left to Python). */
export async function fetchAhead(models, deliver, fetchFn = globalThis.fetch) {
  const plans = [];
  const errors = [];
  try {
    if (!(globalThis.crypto && crypto.subtle)) throw new Error("no crypto.subtle to check chunks with");
    const stored = new Set(await keys("chunks"));
    let budget = FETCH_AHEAD_MAX_BYTES;
    for (const base of models) {
      try {
        const plan = await planAhead(base, stored, budget, fetchFn);
        budget -= plan.bytes;
        plans.push(plan);
      } catch (e) {
        errors.push(`${base}: ${e.message}`);
      }
    }
  } catch (e) {
    errors.push(e.message);
  }
  deliver({ expect: plans.flatMap((p) => p.keys), error: errors.length ? errors.join("; ") : null });
  for (const plan of plans) {
    let next = 0;
    const worker = async () => {
      while (next < plan.spans.length) {
        const span = plan.spans[next++];
        await fetchSpan(plan, span, deliver, fetchFn).catch((e) => {   // every chunk settles: Python waits on each
          const error = `${plan.file} chunks ${span[0]}-${span[span.length - 1]}: ${e.message}`;
          for (const i of span) deliver({ key: `${plan.m.sha256}:${i}`, found: null, error });
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(SPANS_IN_FLIGHT, plan.spans.length) }, worker));
  }
}

// The model's manifest, and its chunks that storage lacks, within `budget` bytes, in spans of consecutive chunks.
async function planAhead(base, stored, budget, fetchFn) {
  const url = new URL("manifest.json", base).href;
  const res = await fetchFn(url, { cache: "no-store", signal: AbortSignal.timeout(MANIFEST_WAIT_MS) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const m = await res.json();
  if (!m || typeof m.sha256 !== "string" || typeof m.file !== "string" || !Array.isArray(m.chunks)) {
    throw new Error(`${url}: not a chunk manifest`);
  }
  const keys = [];
  const spans = [];
  let bytes = 0;
  m.chunks.forEach((c, i) => {
    const key = `${m.sha256}:${i}`;
    if (stored.has(key) || bytes + (c.end - c.start) > budget) return;
    bytes += c.end - c.start;
    keys.push(key);
    const span = spans[spans.length - 1];
    if (span && span[span.length - 1] === i - 1 && span.length < SPAN_CHUNKS) span.push(i); else spans.push([i]);
  });
  return { m, file: new URL(m.file, base).href, keys, spans, bytes };
}

async function fetchSpan({ m, file }, span, deliver, fetchFn) {
  const start = m.chunks[span[0]].start;
  const end = m.chunks[span[span.length - 1]].end;
  const res = await fetchFn(file, { headers: { Range: `bytes=${start}-${end - 1}` }, cache: "no-store",
                                    signal: AbortSignal.timeout(SPAN_WAIT_MS) });
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 206 || body.length !== end - start) {
    throw new Error(`HTTP ${res.status}, ${body.length} of ${end - start} bytes`);
  }
  // a copy per chunk: a stored view would store the whole span's buffer
  const parts = span.map((i) => body.slice(m.chunks[i].start - start, m.chunks[i].end - start));
  const digests = await sha256(parts);
  for (const [n, i] of span.entries()) {
    const key = `${m.sha256}:${i}`;
    if (digests[n] !== m.chunks[i].sha256) {
      deliver({ key, found: null, error: `${file} chunk ${i}: its sha256 does not match the manifest` });
      continue;
    }
    const stored = await put("chunks", key, parts[n]).then(() => true, () => false);
    deliver({ key, found: { value: parts[n], sha256: digests[n], fetched: true, stored } });
  }
}

/** Takes fetchAhead's messages (in a worker: what the page's thread posted). */
export function receiveAhead({ expect, key, found, error }) {
  if (error) problem(error);
  if (expect) {
    for (const k of expect) {
      if (prefetched.has(k)) continue;
      prefetched.set(k, new Promise((resolve) => settlers.set(k, resolve)));
      prefetchState.keys += 1;
    }
    if (!settlers.size) prefetchState.fetched_ms = performance.now();
    expected();
    return;
  }
  const settle = settlers.get(key);
  if (!settle) return;
  settlers.delete(key);
  if (found) {
    prefetchState.fetched += 1;
    prefetchState.fetched_bytes += found.value.length;
  } else {
    prefetchState.failed += 1;
  }
  if (!settlers.size) prefetchState.fetched_ms = performance.now();
  settle(found);
}

export function prefetchStatus() {
  return { ...prefetchState, waiting: prefetched.size };
}

// getWithDigest, from the read-ahead when it holds the key (each record is handed over once), with `fetched`:
// whether it came over the network, and then `stored`: whether it is in storage already.
export async function takeWithDigest(store, key) {
  if (store === "chunks") await registered;
  const pending = store === "chunks" ? prefetched.get(key) : undefined;
  if (pending) {
    prefetched.delete(key);
    const found = await pending;
    if (found) {
      prefetchState.taken += 1;
      return found;
    }
  }
  const found = await getWithDigest(store, key);
  return found && { ...found, fetched: false };
}
