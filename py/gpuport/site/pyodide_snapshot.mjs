// Node, at build time: a memory snapshot of the page's Pyodide with web/snapshot.js's PRELOAD imported and, given
// NumPy's page archive, NumPy installed and imported as a page installs it (web/snapshot.js importNumpy), the one a
// page boots from on its first visit (the interpreter starts without initialising; py/gpuport/site/pyodide_snapshot.py).
// What it holds is the same in Node and in a page: the interpreter's memory, and no JS object beside its own.
//   node pyodide_snapshot.mjs PYODIDE_DIR SNAPSHOT_JS OUT [NUMPY_JSON]
//   NUMPY_JSON: {"archive": path, "bytecode": path or null, "file_name": the wheel's, "libraries": [paths],
//                "gpuport": the path of gpuport's page archive, imported after NumPy, or absent}
//   -> {"bytes": N, "numpy": importNumpy's record or null, "gpuport": importGpuport's or null} on stdout
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { gunzipSync } from "node:zlib";

const [pyodideDir, snapshotJs, out, numpyJson] = process.argv.slice(2);
try {
  const { PRELOAD, importGpuport, importNumpy } = await import(pathToFileURL(snapshotJs).href);
  const { storedEntries } = await import(new URL("wheels.js", pathToFileURL(snapshotJs)).href);
  const numpy = numpyJson ? JSON.parse(numpyJson) : null;
  const entries = (path) => storedEntries(new Uint8Array(gunzipSync(readFileSync(path))));
  const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
  const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, _makeSnapshot: true });
  // Emscripten under Node names the script as the program ("_" in the environment): a page's says ./this.program
  pyodide.runPython(`${PRELOAD}\nimport os\nos.environ["_"] = "./this.program"`);
  let linked = null;
  let gpuport = null;
  if (numpy) {
    const files = entries(numpy.archive);
    const modules = Object.fromEntries(numpy.libraries.map((path) => [path, WebAssembly.compile(files[path])]));
    linked = await importNumpy(pyodide, { files, modules }, numpy.file_name, numpy.libraries,
                               numpy.bytecode ? entries(numpy.bytecode) : null);
    if (numpy.gpuport) gpuport = await importGpuport(pyodide, entries(numpy.gpuport));
  }
  const bytes = pyodide.makeMemorySnapshot();
  writeFileSync(out, bytes);
  process.stdout.write(JSON.stringify({ bytes: bytes.length, numpy: linked, gpuport }) + "\n");
} catch (e) {
  // the message alone (a Python error's is its traceback): the stack runs through minified Pyodide
  process.stderr.write(`${(e && e.message) || e}\n`);
  process.exitCode = 1;
}
