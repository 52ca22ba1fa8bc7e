// A small key-value store over IndexedDB, one object store per kind of data (manifests, chunks, timings), the
// browser's SHA-256, which verifies what goes into it, and the check a stored record carries (checkOf), which
// verifies what comes out of it.
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

// Each record of `keys` from one read-only transaction, every request issued at once: each(key, value) as it
// arrives (value null where there is none); resolves once the transaction completes.
function getEach(store, keys, each) {
  return database().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(store, "readonly");
    const s = tx.objectStore(store);
    for (const key of keys) {
      const req = s.get(key);
      req.onsuccess = () => each(key, req.result === undefined ? null : req.result);
    }
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  }));
}

// Chunks are stored as Blobs: IndexedDB hands a Blob record over by reference and its bytes are read as a file's,
// where a typed array record comes through the storage backend: a warm visit's 87 MiniLM chunks (90 MB) read back
// in 110-160 ms against 395 in Firefox (in Chromium 200-240 against 150-190, measured in a quiet browser). Records
// stored as typed arrays read as before.
// A chunk stored with the sha256 it was verified by carries that digest and a check of its bytes (checkOf) in its
// Blob's type. Read back, the check is computed instead of the SHA-256: a warm visit's 90 MB of MiniLM chunks took
// 120-180 ms of SHA-256 (crypto.subtle, which holds the thread that asks in Chromium). The check is 64 bits (XXH32 with
// seeds 0 and 1, one pass, web/gpuport_simd_check.wasm from pagekernels/check.c): the same 87 MiB in 50-70 ms in a
// fresh Chromium page, 35 in Firefox, copies into its window included; a warm Chromium visit's read-ahead ends 200 ms
// sooner (docs/page.md has what the visit gained). A stored record's flipped bit, torn write or other record's bytes
// fail it as they fail the sha256; a download is verified by its sha256 as before. Where the module is not loaded (a
// host that imports this file from a blob: URL and gives it no bytes: useCheck) chunks are stored without a check and
// hashed when read back, and a record that carries one is hashed too.
const CHUNK_TYPE = "application/x-gpuport-chunk";
const CARRIED = /^application\/x-gpuport-chunk; sha256=([0-9a-f]{64}); check=([0-9a-f]{16})$/;
export const asStored = (store, value, sha256 = null) => {
  if (store !== "chunks" || !ArrayBuffer.isView(value)) return value;
  const check = sha256 ? checkOf(value) : null;
  return new Blob([value], { type: check ? `${CHUNK_TYPE}; sha256=${sha256}; check=${check}` : "" });
};

async function bytesOf(value) {
  return value instanceof Blob ? new Uint8Array(await value.arrayBuffer()) : value;
}

export function get(store, key) {
  return request(store, "readonly", (s) => s.get(key)).then((v) => (v === undefined ? null : bytesOf(v)));
}

/** Store `value` under `key`; `sha256`: a chunk's digest, verified, that its record carries (see asStored). */
export async function put(store, key, value, sha256 = null) {
  await checking;
  return request(store, "readwrite", (s) => s.put(asStored(store, value, sha256), key));
}

// Reads and writes wait for the module's load (it starts as this file is imported, long before the first), at most
// CHECK_WAIT_MS: a server that has not answered for the .wasm by then leaves this page without it.
const CHECK_WAIT_MS = 3000;
let checker = null;    // the check module's exports, once loaded
let checking = null;   // its load: settles once it has loaded or failed to
useCheck(beside("gpuport_simd_check.wasm"));

// Beside this module where it is served (as web/wasm.js finds its files); null from a blob: or data: URL
function beside(name) {
  try {
    const url = new URL(name, import.meta.url);
    return url.protocol === "blob:" || url.protocol === "data:" ? null : url;
  } catch (e) {
    return null;   // imported from a blob: URL, which nothing resolves against
  }
}

/** Load the check module from `source` (its URL, or its bytes: a host that imported this file from a blob: URL
 * hands them over; null: none), in place of any loaded before; resolves to whether it loaded. Until it has, and where
 * it does not, chunks are stored without a check. */
export function useCheck(source) {
  checker = null;
  const load = (async () => {
    if (source === null || typeof WebAssembly !== "object") return false;
    try {
      const { instance } = source instanceof URL
        ? await WebAssembly.instantiateStreaming(fetch(source, { signal: AbortSignal.timeout(CHECK_WAIT_MS) }))
        : await WebAssembly.instantiate(source);
      if (checking === load) checker = instance.exports;   // not when a later call replaced it
      return checking === load;
    } catch (e) {
      return false;   // no such file (a site built without it), or no WebAssembly SIMD here
    }
  })();
  checking = load;
  return load;
}

/** checkOf(bytes) once the module's load has settled: null without it. */
export async function checkWhenLoaded(bytes) {
  await checking;
  return checkOf(bytes);
}

const hex8 = (x) => x.toString(16).padStart(8, "0");

/** XXH32 of `bytes` (a typed array or ArrayBuffer) with seeds 0 and 1: 16 hex digits, or null without the module. */
export function checkOf(bytes) {
  if (checker === null) return null;
  const data = bytes instanceof Uint8Array ? bytes
    : ArrayBuffer.isView(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      : new Uint8Array(bytes);
  const { memory, gp_check_window, gp_check_window_bytes, gp_check_begin, gp_check_stripes, gp_check_end } = checker;
  const at = gp_check_window();
  const size = gp_check_window_bytes();
  const n = data.length;
  const whole = n - (n % 16);
  gp_check_begin();
  for (let from = 0; from < whole; from += size) {
    const part = Math.min(size, whole - from);
    new Uint8Array(memory.buffer, at, part).set(data.subarray(from, from + part));
    gp_check_stripes(part);
  }
  new Uint8Array(memory.buffer, at, n - whole).set(data.subarray(whole));
  const out = new Uint32Array(memory.buffer, gp_check_end(n - whole, n >>> 0, n < 16 ? 1 : 0), 2);
  return hex8(out[0]) + hex8(out[1]);
}

// `entries` ([key, value, sha256]) in one read-write transaction on an open `db`, every put() issued before this
// returns: IndexedDB copies a value as put() is called, so the caller may transfer the values right after. Resolves
// once the transaction commits; rejects with why it did not (QuotaExceededError, ...).
function putEach(db, store, entries) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, "readwrite");
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
    const s = tx.objectStore(store);
    for (const [key, value, sha256] of entries) s.put(asStored(store, value, sha256), key);
  });
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

/** {bytes} of `url` when its SHA-256 is `sha256`, else {problem}; `signal` aborts the fetch. */
export async function fetchChecked({ url, sha256: expected }, signal = undefined) {
  try {
    const res = await fetch(url, { signal });
    if (!res.ok) return { problem: `HTTP ${res.status} for ${url}` };
    const bytes = new Uint8Array(await res.arrayBuffer());
    const digests = await sha256([bytes]);
    if (digests === null) return { problem: "no crypto.subtle to check it with" };
    if (digests[0] === expected) return { bytes };
    return { problem: `${url}: its sha256 is ${digests[0].slice(0, 12)}..., not ${expected.slice(0, 12)}...` };
  } catch (e) {
    return { problem: `${url}: ${e.message}` };
  }
}

// A record and its sha256 in one crossing: {value, sha256} (sha256 null: not bytes, or no crypto.subtle), or null.
export async function getWithDigest(store, key) {
  const record = await request(store, "readonly", (s) => s.get(key));
  return withDigest(record === undefined ? null : record);
}

/** A stored record's bytes and their sha256: the one it carries where its check holds (asStored), else computed;
 * {value, sha256}, or null for no record. A record whose check fails answers a sha256 of "check failed": no
 * manifest's digest, so that the reader drops it and fetches the chunk again. */
export async function withDigest(record) {
  if (record === null) return null;
  const value = await bytesOf(record);
  await checking;
  const carried = record instanceof Blob && checker !== null ? CARRIED.exec(record.type) : null;
  if (carried) return { value, sha256: checkOf(value) === carried[2] ? carried[1] : "check failed" };
  const digests = ArrayBuffer.isView(value) || value instanceof ArrayBuffer ? await sha256([value]) : null;
  return { value, sha256: digests ? digests[0] : null };
}

// A head start on a model's load, beside Pyodide's boot. readAhead reads from two sources:
// - storage (a warm visit): the chunks the page's last load read (Python records their keys under
//   "prefetch:<model url>" in "meta"), read and digested once `storageGo` resolves (after Pyodide's snapshot is
//   read: both come from IndexedDB, and the snapshot is on the critical path);
// - the network (start({models}): models the page says it will load): each one's manifest, then every chunk not in
//   storage in Range requests, in file order, digested and checked against the manifest. A chunk that fails any of
//   that is left to Python, which fetches it itself, retries and reports. What came is stored as it comes, one
//   transaction per span, from the reader's thread (deliver({stored}) or deliver({storeFailed}) says how each went),
//   so a visit that ends at its first result leaves a complete cache behind it.
// It runs on the page's thread when Pyodide is in a Web Worker (that thread is idle while the worker boots; on the
// worker's own, a cold visit's chunks arrived 4.7 s into the visit in Chromium instead of with the boot, and a warm
// visit's reading slowed it by 0.2 s in Chromium, measured interleaved) and posts its messages to the worker;
// receiveAhead takes them where Python runs. takeWithDigest hands each record over once; Python checks each digest
// against its own manifest as for any record, and counts what came over the network as downloaded. What nobody
// takes within PREFETCH_KEEP_MS is let go.
const PREFETCH_KEEP_MS = 120000;
const PREFETCH_MAX_AGE_MS = 30 * 24 * 3600 * 1000;   // records of models not loaded for a month are left alone
const SPAN_CHUNKS = 4;        // chunks per Range request, and
const SPANS_IN_FLIGHT = 4;    // requests at a time: the loader's own defaults (gpuport.loading.loader)
const FETCH_AHEAD_MAX_BYTES = 512 << 20;   // held in memory until taken: the models' first 512 MiB
const MANIFEST_WAIT_MS = 10000;
const SPAN_WAIT_MS = 120000;   // a stalled request gives its chunks up to Python rather than hold its load

/** Read ahead: deliver({expect: [keys]}) for every key before deliver({ready: true}), and deliver({key, found})
 * for each (found: {value, sha256, fetched}, or null, with `error` when something failed: left to Python).
 * `models`: absolute URLs of model folders holding manifest.json. */
export async function readAhead({ models = [], deliver, fetchFn = globalThis.fetch, storageGo = Promise.resolve() }) {
  const fail = (error) => deliver({ error });
  const network = models.length ? planNetwork(models, fetchFn, fail).catch((e) => { fail(e.message); return []; })
    : Promise.resolve([]);
  let stored = [];
  try {
    await storageGo;
    stored = await planStorage();
  } catch (e) {
    fail(String(e));
  }
  deliver({ expect: stored });
  const plans = await network;
  const fetching = plans.flatMap((plan) => plan.keys);
  deliver({ expect: fetching, manifests: plans.map((plan) => [plan.url, plan.text]) });
  deliver({ ready: true });
  // what the network fetches is what storage lacked when planned: the network delivers it
  const fetched = new Set(fetching);
  await readStored(stored.filter((key) => !fetched.has(key)), deliver).catch((e) => fail(`reading stored chunks: ${e}`));
  for (const plan of plans) await fetchPlan(plan, deliver, fetchFn);
}

// The stored chunks in one transaction, all asked for at once (one transaction and one request at a time: 87 chunks
// of MiniLM took 0.85-1.0 s in a warm Firefox visit, and the model's load waited for the last ones), each delivered
// once digested; a key the transaction did not deliver settles as missing.
async function readStored(keys, deliver) {
  const left = new Set(keys);
  const digested = [];
  try {
    await getEach("chunks", keys, (key, value) => {
      left.delete(key);
      digested.push(withDigest(value).catch(() => null)
        .then((found) => deliver({ key, found: found && { ...found, fetched: false } })));
    });
  } finally {
    await Promise.all(digested);
    for (const key of left) deliver({ key, found: null });
  }
}

async function planStorage() {
  const names = (await keys("meta")).filter((k) => typeof k === "string" && k.startsWith("prefetch:"));
  const wanted = new Set();
  for (const name of names) {
    const record = JSON.parse(await get("meta", name));
    if (!record || !Array.isArray(record.keys) || Date.now() - record.at > PREFETCH_MAX_AGE_MS) continue;
    for (const key of record.keys) wanted.add(key);
  }
  return [...wanted];
}

// Each model's manifest, and its chunks that storage lacks, within the byte budget, in spans of consecutive chunks.
async function planNetwork(models, fetchFn, fail) {
  if (!(globalThis.crypto && crypto.subtle)) throw new Error("no crypto.subtle to check chunks with");
  const stored = new Set(await keys("chunks"));
  const plans = [];
  let budget = FETCH_AHEAD_MAX_BYTES;
  for (const base of models) {
    try {
      const plan = await planModel(base, stored, budget, fetchFn);
      budget -= plan.bytes;
      plans.push(plan);
    } catch (e) {
      fail(`${base}: ${e.message}`);
    }
  }
  return plans;
}

async function planModel(base, stored, budget, fetchFn) {
  const url = new URL("manifest.json", base).href;
  const res = await fetchFn(url, { cache: "no-store", signal: AbortSignal.timeout(MANIFEST_WAIT_MS) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const text = await res.text();
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    m = null;
  }
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
  return { m, url, text, file: new URL(m.file, base).href, keys, spans, bytes };
}

async function fetchPlan(plan, deliver, fetchFn) {
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

async function fetchSpan({ m, file }, span, deliver, fetchFn) {
  const start = m.chunks[span[0]].start;
  const end = m.chunks[span[span.length - 1]].end;
  const res = await fetchFn(file, { headers: { Range: `bytes=${start}-${end - 1}` }, cache: "no-store",
                                    signal: AbortSignal.timeout(SPAN_WAIT_MS) });
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 206 || body.length !== end - start) {
    throw new Error(`HTTP ${res.status}, ${body.length} of ${end - start} bytes`);
  }
  // a copy per chunk: a view would keep (and store) the whole span's buffer
  const parts = span.map((i) => body.slice(m.chunks[i].start - start, m.chunks[i].end - start));
  const digests = await sha256(parts);
  const good = [];
  for (const [n, i] of span.entries()) {
    const key = `${m.sha256}:${i}`;
    if (digests[n] === m.chunks[i].sha256) good.push([key, parts[n], digests[n]]);
    else deliver({ key, found: null, error: `${file} chunk ${i}: its sha256 does not match the manifest` });
  }
  const db = good.length ? await database().catch((e) => e) : null;
  await checking;   // so that what is stored carries its check
  const stored = storeSpan(db, good);   // copies them: deliver may transfer them
  for (const [key, value, digest] of good) deliver({ key, found: { value, sha256: digest, fetched: true } });
  const keys = good.map(([key]) => key);
  if (keys.length) {
    await stored.then(() => deliver({ stored: keys }),
                      (e) => deliver({ storeFailed: keys, error: `storing ${keys.join(", ")}: ${e.name}: ${e.message}` }));
  }
}

// Issues the puts of verified chunks before it returns (see putEach); `db`: the open database, or why it is not.
function storeSpan(db, entries) {
  if (!entries.length) return Promise.resolve();
  if (!(db instanceof IDBDatabase)) return Promise.reject(db);
  try {
    return putEach(db, "chunks", entries);
  } catch (e) {   // DataCloneError, InvalidStateError (the database closing): thrown by put() itself
    return Promise.reject(e);
  }
}

// Where Python runs: the records readAhead delivers, until taken, and the keys of those it fetched, until the
// reader says they are stored. settled_ms: when the last expected one came (performance.now() where this runs).
const prefetched = new Map();   // key -> Promise<{value, sha256, fetched} | null>
const settlers = new Map();     // key -> resolve() of its pending record
const unstored = new Set();     // keys fetched and not yet said stored (or not)
const manifests = new Map();    // manifest URL -> its text as the read-ahead fetched it, until taken
let manifestsComing = new Set();   // the manifest URLs of the models read ahead (expectAhead)
const prefetchState = { expecting: false, ready: false, keys: 0, read: 0, fetched: 0, fetched_bytes: 0, failed: 0,
                        taken: 0, dropped: 0, stored: 0, store_failed: 0, error: null, settled_ms: null };
let ready;
const allExpected = new Promise((resolve) => { ready = resolve; });
let settled;
const allSettled = new Promise((resolve) => { settled = resolve; });
let stored;
const allStored = new Promise((resolve) => { stored = resolve; });

function problem(text) {
  prefetchState.error = prefetchState.error ? `${prefetchState.error}; ${text}` : text;
}

/** A read-ahead is under way (here, or on the page's thread), of `models` (their folders' URLs) and what storage
 * holds: takeWithDigest waits until it has said which records it delivers, takeManifest for those models'. */
export function expectAhead(models = []) {
  if (prefetchState.expecting) return;
  prefetchState.expecting = true;
  manifestsComing = new Set(models.map((folder) => new URL("manifest.json", folder).href));
  setTimeout(() => {   // a reader that never says: nothing waits for it
    if (!prefetchState.ready) receiveAhead({ error: "no word from the read-ahead", ready: true });
  }, MANIFEST_WAIT_MS * 2);
}

/** Takes readAhead's messages (in a worker: those the page's thread posted). */
export function receiveAhead({ expect, manifests: texts, ready: isReady, key, found, error, stored: storedKeys,
                               storeFailed }) {
  if (error) problem(error);
  for (const [url, text] of texts || []) manifests.set(url, text);
  for (const k of expect || []) {
    if (prefetched.has(k)) continue;
    prefetched.set(k, new Promise((resolve) => settlers.set(k, resolve)));
    prefetchState.keys += 1;
  }
  if (key !== undefined && settlers.has(key)) {
    const settle = settlers.get(key);
    settlers.delete(key);
    if (!found) prefetchState.failed += 1;
    else if (found.fetched) {
      prefetchState.fetched += 1;
      prefetchState.fetched_bytes += found.value.length;
      unstored.add(key);
    } else {
      prefetchState.read += 1;
    }
    settle(found);
  }
  for (const k of storedKeys || []) if (unstored.delete(k)) prefetchState.stored += 1;
  for (const k of storeFailed || []) if (unstored.delete(k)) prefetchState.store_failed += 1;
  if (isReady && !prefetchState.ready) {
    prefetchState.ready = true;
    ready();
    setTimeout(() => {
      prefetchState.dropped += prefetched.size;
      prefetched.clear();
      manifests.clear();
      manifestsComing.clear();
    }, PREFETCH_KEEP_MS);
  }
  if (prefetchState.ready && !settlers.size && prefetchState.settled_ms === null) {
    prefetchState.settled_ms = performance.now();
    settled();
  }
  if (prefetchState.settled_ms !== null && !unstored.size) stored();
}

export function prefetchStatus() {
  return { ...prefetchState, waiting: prefetched.size, unstored: unstored.size };
}

/** Resolves once every chunk the read-ahead fetched is stored, or failed to be (counted, and said in `error`: the
 * next visit fetches those again); at once where there is no read-ahead. */
export function storedAhead() {
  return prefetchState.expecting ? allStored : Promise.resolve();
}

/** The text of the manifest at `url` as the read-ahead fetched it this visit (handed over once), or null: the
 * loader then fetches it (a page that reads a model ahead fetched its manifest 0.5 s before the load asked for it,
 * which asked the server again: 50-70 ms of a warm visit's load in Firefox). */
export async function takeManifest(url) {
  if (!manifestsComing.has(url)) return null;
  await allExpected;
  const text = manifests.get(url);
  manifests.delete(url);
  manifestsComing.delete(url);
  return text === undefined ? null : text;
}

/** takeWithDigest of each of `keys`, in one crossing from Python: their answers in order. */
export function takeManyWithDigest(store, keys) {
  return Promise.all(Array.from(keys, (key) => takeWithDigest(store, key)));
}

// getWithDigest, from the read-ahead when it holds the key (each record is handed over once), with `fetched`:
// whether it came over the network (the read-ahead stores it: the load does not).
export async function takeWithDigest(store, key) {
  if (store === "chunks" && prefetchState.expecting) await allExpected;
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
