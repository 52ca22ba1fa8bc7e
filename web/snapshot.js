// A memory snapshot of Pyodide's interpreter (Pyodide 0.27's _makeSnapshot / _loadSnapshot) to boot from: the
// interpreter starts without initialising again (bench/startup.py's "pyodide" stage). A site made by the dev server
// or `gpuport export` lists one (py/gpuport/pyodide_snapshot.py), which even a first visit boots from. Where the
// site has none or it does not restore, the page makes its own once it has started and is idle (host.js: no call
// for IDLE_MS), by a throwaway interpreter in a worker of its own (snapshot-worker.js): the interpreter that makes
// one cannot serve a page, as its JS globals are proxies that record paths. That one is kept in IndexedDB with its
// SHA-256. Every snapshot is checked before use; one that fails the check or does not restore is not booted from
// (a stored one is dropped), the interpreter boots as usual, and the page makes its own.
import * as idb from "./idb.js";
import { newWorker } from "./workers.js";

const STORE = "meta";

// Standard-library modules imported inside the snapshot so that a restored interpreter has them: those gpuport
// imports, those NumPy's import needs, and those Pyodide's loadPackage imports to unpack wheels (tarfile, csv, email)
// and to invalidate import caches (importlib.metadata). Measured with a warm visit of web/test.html (Chromium /
// Firefox): the packages stage 790-990 / 920-1130 ms -> 420-500 / 570-620 ms, `import gpuport` 350 -> 170 ms.
// Only pure-Python or built-in modules (js excepted: the interpreter that makes a snapshot has a stand-in for the
// page's globals): a snapshot cannot hold a loaded shared library (NumPy comes after it).
export const PRELOAD = "import asyncio, base64, collections, contextlib, csv, ctypes, dataclasses, datetime, " +
  "email.message, email.parser, email.utils, encodings.cp437, enum, functools, hashlib, html.entities, http.client, " +
  "importlib.metadata, inspect, itertools, json, logging, math, mmap, pathlib, pickle, platform, random, re, " +
  "statistics, struct, tarfile, tempfile, textwrap, threading, typing, unicodedata, urllib.parse, urllib.request, " +
  "warnings, weakref, __future__";

export const key = (pyodideURL) => `pyodide-snapshot:${pyodideURL}`;

const MAGIC = "GPSNAP01";

/** The site's snapshot file (py/gpuport/pyodide_snapshot.py: its pages of zeros left out) expanded into `into`
 * (zeroed memory of the snapshot's size, made here when null); an Error when it is not such a file. */
export function expand(file, into = null) {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.length < 20 || new TextDecoder().decode(file.subarray(0, 8)) !== MAGIC) {
    throw new Error("not a gpuport snapshot file");
  }
  const [size, page, pages] = [view.getUint32(8, true), view.getUint32(12, true), view.getUint32(16, true)];
  const out = into || new Uint8Array(size);
  if (out.length !== size || pages !== Math.ceil(size / page)) throw new Error(`a snapshot of ${size} bytes, not ${out.length}`);
  let at = 20 + Math.ceil(pages / 8);
  for (let i = 0; i < pages; i += 1) {
    if (file[20 + (i >> 3)] & (1 << (i & 7))) {
      const length = Math.min(page, size - i * page);
      if (at + length > file.length) throw new Error("a truncated snapshot file");
      out.set(file.subarray(at, at + length), i * page);
      at += length;
    }
  }
  if (at !== file.length) throw new Error(`${file.length - at} bytes past the snapshot's last page`);
  return out;
}

/** The stored snapshot's bytes when its SHA-256 checks out; {problem} when a record was there and is dropped;
 * null when there is none (or no IndexedDB, or no crypto.subtle to check one with). */
export async function load(pyodideURL) {
  let record;
  try {
    record = await idb.get(STORE, key(pyodideURL));
  } catch (e) {
    return null;
  }
  if (record === null) return null;
  let problem = null;
  if (!record || !(record.bytes instanceof Uint8Array) || typeof record.sha256 !== "string") {
    problem = "not a snapshot record";
  } else {
    const digests = await idb.sha256([record.bytes]);
    if (digests === null) return null;
    if (digests[0] !== record.sha256) problem = `its sha256 is ${digests[0].slice(0, 12)}..., not the recorded ${record.sha256.slice(0, 12)}...`;
  }
  if (problem === null) return { bytes: record.bytes };
  await drop(pyodideURL);
  return { problem };
}

/** The snapshot to boot from: the one stored in IndexedDB (made by a visit the site's could not serve), else the
 * site's ({url, sha256} from wheels/latest.json: pyodide_snapshot.py), fetched and checked beside the IndexedDB
 * lookup (or by the page: `fetchedElsewhere`, a promise of idb.fetchChecked's answer) and let go when a stored one is
 * there, then expanded (into `into` when given: zeroed memory of its size). {bytes, from: "stored" | "site", problems},
 * or {problems}: why a stored or listed one is not used (the caller reports them). */
export async function find(pyodideURL, site, into = null, fetchedElsewhere = null) {
  const abort = new AbortController();
  const fetched = site ? fetchedElsewhere || idb.fetchChecked(site, abort.signal) : null;
  const stored = await load(pyodideURL);
  if (stored && stored.bytes) {
    abort.abort();
    return { bytes: stored.bytes, from: "stored", problems: [] };
  }
  const problems = stored ? [stored.problem] : [];
  if (!site) return { problems };
  const { bytes, problem } = await fetched;
  if (!bytes) return { problems: [...problems, `the site's: ${problem}`] };
  try {
    return { bytes: expand(bytes, into), from: "site", problems };
  } catch (e) {
    if (into) into.fill(0, 0, 16);   // no snapshot's magic number: loadPyodide refuses what was expanded so far
    return { problems: [...problems, `the site's: ${e.message}`] };
  }
}

export async function drop(pyodideURL) {
  try {
    await idb.remove(STORE, key(pyodideURL));
  } catch (e) {
    // storage gone (private mode): nothing to drop
  }
}

/** Make and store a snapshot in a worker of its own; resolves to its size in bytes, rejects with the reason. */
export function makeInBackground(pyodideURL) {
  const worker = newWorker(new URL("./snapshot-worker.js", import.meta.url).href);
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      worker.terminate();
      if (data.ok) resolve(data.bytes); else reject(new Error(data.error));
    };
    worker.onerror = (e) => {
      worker.terminate();
      reject(new Error(e.message || "the snapshot worker did not load"));
    };
    worker.postMessage({ pyodideURL, key: key(pyodideURL), preload: PRELOAD, store: STORE });
  });
}
