// Node, at build time: compile Python sources to the bytecode of the page's own CPython (Pyodide's), as
// checked-hash .pyc files in __pycache__ beside them. A page's file system lives in memory, so whatever its
// import compiles is compiled again on every visit; shipped in the wheel, these are read instead (Python
// checks each against its source's hash, so a changed source is still compiled).
//   node bytecode.mjs PYODIDE_DIR SOURCE_DIR        -> {"compiled": N} on stdout
import { pathToFileURL } from "node:url";

const [pyodideDir, sourceDir] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/` });
pyodide.mountNodeFS("/src", sourceDir);
const compiled = pyodide.runPython(`
import compileall, pathlib, py_compile
ok = compileall.compile_dir("/src", quiet=1, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
if not ok:
    raise RuntimeError("compileall failed on a source file")
len(list(pathlib.Path("/src").rglob("*.pyc")))
`);
process.stdout.write(JSON.stringify({ compiled }) + "\n");
