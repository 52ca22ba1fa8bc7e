// Node, at build time: a memory snapshot of the page's Pyodide with web/snapshot.js's PRELOAD imported, the one a
// page boots from on its first visit (the interpreter starts without initialising; py/gpuport/site/pyodide_snapshot.py).
// What it holds is the same in Node and in a page: the interpreter's memory, and no JS object beside its own.
//   node pyodide_snapshot.mjs PYODIDE_DIR SNAPSHOT_JS OUT   -> {"bytes": N} on stdout
import { writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pyodideDir, snapshotJs, out] = process.argv.slice(2);
try {
  const { PRELOAD } = await import(pathToFileURL(snapshotJs).href);
  const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
  const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, _makeSnapshot: true });
  // Emscripten under Node names the script as the program ("_" in the environment): a page's says ./this.program
  pyodide.runPython(`${PRELOAD}\nimport os\nos.environ["_"] = "./this.program"`);
  const bytes = pyodide.makeMemorySnapshot();
  writeFileSync(out, bytes);
  process.stdout.write(JSON.stringify({ bytes: bytes.length }) + "\n");
} catch (e) {
  // the message alone (a Python error's is its traceback): the stack runs through minified Pyodide
  process.stderr.write(`${(e && e.message) || e}\n`);
  process.exitCode = 1;
}
