// The dedicated Web Worker that runs Pyodide by default: a message pump around host.js.
import { boot } from "./host.js";

let host = null;

self.onmessage = async ({ data }) => {
  const { id, op, args } = data;
  try {
    let value;
    if (op === "boot") {
      host = await boot(args);
      value = host.timings;
    } else if (op === "run") {
      value = await host.runPython(args.src);
    } else if (op === "info") {
      value = await host.info();
    } else {
      throw new Error(`unknown op ${op}`);
    }
    self.postMessage({ id, ok: true, value });
  } catch (e) {
    self.postMessage({ id, ok: false, error: { name: e.name, message: e.message } });
  }
};
