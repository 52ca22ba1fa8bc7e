// What a page that embeds one sentence with transformers.js does on load (its default wasm device, model
// files kept in Cache Storage as the library does by default); bench/startup.py reads window.tjsFirst.
import { configure, OPTS } from "./tjs_env.mjs";

const { pipeline } = configure({ browserCache: true });
window.tjsFirst = (async () => {
  const extractor = await pipeline("feature-extraction", "all-MiniLM-L6-v2", { device: "wasm", dtype: "fp32" });
  const loaded = performance.now();
  const res = await extractor(["A man is eating food."], OPTS);
  return { first_ms: performance.now(), stages: { library_and_model_ms: loaded, embed_ms: performance.now() - loaded },
           embedding: res.tolist()[0] };
})();
