// Makes one Pyodide memory snapshot (see snapshot.js) and stores it in IndexedDB with its SHA-256 and check (idb.js),
// then is terminated.
import * as idb from "./idb.js";

self.onmessage = async ({ data: { pyodideURL, key, preload, store } }) => {
  // each stage named before it starts: snapshot.js ends a worker that says nothing for too long, naming the stage
  const stage = (name) => self.postMessage({ stage: name });
  try {
    stage("importing pyodide.mjs");
    const { loadPyodide } = await import(new URL("pyodide.mjs", pyodideURL).href);
    stage("booting Pyodide");
    const pyodide = await loadPyodide({ indexURL: pyodideURL, _makeSnapshot: true });
    stage("importing the preloaded modules");
    pyodide.runPython(preload);
    stage("making the snapshot");
    const bytes = pyodide.makeMemorySnapshot();
    stage("hashing it");
    const digests = await idb.sha256([bytes]);
    if (digests === null) throw new Error("no crypto.subtle to record its sha256 with");
    stage("storing it in IndexedDB");
    await idb.put(store, key, { bytes, sha256: digests[0], check: await idb.checkWhenLoaded(bytes) });
    self.postMessage({ ok: true, bytes: bytes.length });
  } catch (e) {
    self.postMessage({ ok: false, error: String((e && e.message) || e) });
  }
};
