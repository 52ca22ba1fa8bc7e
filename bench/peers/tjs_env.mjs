// transformers.js (npm @huggingface/transformers, onnxruntime-web inside) set up fully offline: the library,
// ORT's wasm and the model come from the bench's own server. Shared by tjs.mjs (steady state) and
// startup.mjs (time to the first embedding); browserCache: whether the model files go to Cache Storage.
import { pipeline, env } from "/node_modules/@huggingface/transformers/dist/transformers.min.js";

export function configure({ browserCache }) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.useBrowserCache = browserCache;
  // a path, not a full URL: with "http://127.0.0.1:PORT/models/" transformers.js 4.3.1 skips its local
  // existence probe, loads no tokenizer and fails at the first call ("this.tokenizer is not a function")
  env.localModelPath = "/models/";
  const ORT = new URL("/node_modules/onnxruntime-web/dist/", location.href).href;
  // the file variant transformers.js would fetch from a CDN by default (".asyncify"), served locally
  env.backends.onnx.wasm.wasmPaths = {
    mjs: ORT + "ort-wasm-simd-threaded.asyncify.mjs",
    wasm: ORT + "ort-wasm-simd-threaded.asyncify.wasm",
  };
  return { pipeline, env };
}

export const OPTS = { pooling: "mean", normalize: true };
