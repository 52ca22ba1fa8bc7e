// transformers.js (npm @huggingface/transformers, onnxruntime-web inside) on bench/vision.py's CLIP exported in its
// split-tower layout (bench/peers/export_clip.py), fully offline: the library, ORT's wasm, the model and the
// photographs all come from the bench's own server. bench/vision.py calls tjsLoad once, then tjsRun per repetition
// (timed here, in the page): each image from its file bytes (RawImage.fromBlob, the processor, the vision tower),
// each text through the tokenizer and the text tower, the zero-shot case both and the softmax.
import { configure } from "./tjs_env.mjs";
import {
  AutoProcessor, AutoTokenizer, CLIPTextModelWithProjection, CLIPVisionModelWithProjection, RawImage,
} from "/node_modules/@huggingface/transformers/dist/transformers.min.js";

const { env } = configure({ browserCache: false });
const MODEL = "clip-vit-base-patch32";
let tokenizer, processor, textModel, visionModel, inputs, photos;

window.tjsLoad = async ({ device, threads = null }) => {
  if (threads) env.backends.onnx.wasm.numThreads = threads;   // before the first session is created
  inputs = await (await fetch("vision_inputs.json")).json();
  photos = await Promise.all(inputs.photos.map(async (p) => (await fetch(`/photos/${p}`)).blob()));
  const t = performance.now();
  tokenizer = await AutoTokenizer.from_pretrained(MODEL);
  processor = await AutoProcessor.from_pretrained(MODEL);
  textModel = await CLIPTextModelWithProjection.from_pretrained(MODEL, { device, dtype: "fp32" });
  visionModel = await CLIPVisionModelWithProjection.from_pretrained(MODEL, { device, dtype: "fp32" });
  return { device, load_ms: performance.now() - t, transformers_js: env.version,
           onnxruntime_web: env.backends.onnx.versions?.web, wasm_threads: env.backends.onnx.wasm.numThreads,
           crossOriginIsolated: self.crossOriginIsolated, userAgent: navigator.userAgent };
};

function unit(rows) {
  return rows.map((r) => { const n = Math.hypot(...r); return r.map((x) => x / n); });
}

async function images(n) {
  const blobs = Array.from({ length: n }, (_, i) => photos[i % photos.length]);
  const raw = await Promise.all(blobs.map((b) => RawImage.fromBlob(b)));
  const { image_embeds } = await visionModel(await processor(raw));
  return unit(image_embeds.tolist());
}

async function texts(list) {
  const { text_embeds } = await textModel(tokenizer(list, { padding: true, truncation: true }));
  return unit(text_embeds.tolist());
}

const CASES = {
  image1: () => images(1),
  image16: () => images(16),
  text1: () => texts(inputs.texts.slice(0, 1)),
  text16: () => texts(inputs.texts.slice(0, 16)),
  zeroshot10: async () => {
    const labels = await texts(inputs.labels.map((l) => inputs.template.replace("{}", l)));
    const [image] = await images(1);
    const scale = 100.0;   // the checkpoint's logit_scale.exp() (ln 100, as trained)
    const logits = labels.map((l) => scale * l.reduce((s, x, i) => s + x * image[i], 0));
    const m = Math.max(...logits);
    const e = logits.map((x) => Math.exp(x - m));
    const z = e.reduce((s, x) => s + x, 0);
    return [e.map((x) => x / z)];
  },
};

window.tjsRun = async (key, embeddings) => {
  const t = performance.now();
  const out = await CASES[key]();
  const ms = performance.now() - t;
  return { ms, embeddings: embeddings ? out : null };
};
window.tjsReady = true;
document.getElementById("log").textContent = "ready";
