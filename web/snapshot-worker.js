// Makes one Pyodide memory snapshot (see snapshot.js) and stores it in IndexedDB with its SHA-256, then is terminated.
import * as idb from "./idb.js";

self.onmessage = async ({ data: { pyodideURL, key, preload, store } }) => {
  try {
    const { loadPyodide } = await import(new URL("pyodide.mjs", pyodideURL).href);
    const pyodide = await loadPyodide({ indexURL: pyodideURL, _makeSnapshot: true });
    pyodide.runPython(preload);
    const bytes = pyodide.makeMemorySnapshot();
    const digests = await idb.sha256([bytes]);
    if (digests === null) throw new Error("no crypto.subtle to record its sha256 with");
    await idb.put(store, key, { bytes, sha256: digests[0] });
    self.postMessage({ ok: true, bytes: bytes.length });
  } catch (e) {
    self.postMessage({ ok: false, error: String((e && e.message) || e) });
  }
};
