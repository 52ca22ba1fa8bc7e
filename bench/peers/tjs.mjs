// transformers.js (npm @huggingface/transformers, onnxruntime-web inside) on the fp32 ONNX export of
// all-MiniLM-L6-v2, fully offline: the library, ORT's wasm and the model all come from bench/peers.py's
// server. bench/peers.py calls tjsLoad once, then tjsEmbed per repetition (timed here, in the page).
import { configure, OPTS } from "./tjs_env.mjs";

const { pipeline, env } = configure({ browserCache: false });
let extractor = null;
let texts = null;

async function adapterInfo() {
  if (!navigator.gpu) return null;
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info || {};
  return { vendor: i.vendor, architecture: i.architecture, description: i.description };
}

window.tjsLoad = async ({ device, threads = null }) => {
  texts = await (await fetch("texts.json")).json();
  if (threads) env.backends.onnx.wasm.numThreads = threads;   // before the first session is created
  const t = performance.now();
  extractor = await pipeline("feature-extraction", "all-MiniLM-L6-v2", { device, dtype: "fp32" });
  return { device, load_ms: performance.now() - t, transformers_js: env.version,
           onnxruntime_web: env.backends.onnx.versions?.web, wasm_threads: env.backends.onnx.wasm.numThreads,
           crossOriginIsolated: self.crossOriginIsolated, userAgent: navigator.userAgent,
           adapter: device === "webgpu" ? await adapterInfo() : null };
};

window.tjsEmbed = async (key, embeddings) => {
  const t = performance.now();
  const res = await extractor(texts[key], OPTS);
  const ms = performance.now() - t;
  return { ms, embeddings: embeddings ? res.tolist() : null };
};
window.tjsReady = true;
document.getElementById("log").textContent = "ready";
