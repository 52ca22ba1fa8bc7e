"""MiniLM-L6 sentence embeddings: throughput per backend and load time, all measured in one run.

- embeddings per second for short sentences (8-12 tokens) and 256-token texts (truncated as
  sentence-transformers does), on native webgpu (lavapipe), native cpu (NumPy), page webgpu (Chromium /
  SwiftShader, Pyodide in a Web Worker) and page cpu (NumPy in WebAssembly); ratios against native cpu;
- load time of the model in the page from the network (fresh profile) against from the IndexedDB cache
  (the same profile reloaded), and natively from the dev server URL;
- a chunk-size sweep of the loader (natively and in the page, download + verify only) that chose
  gpuport.loading.loader.DEFAULT_CHUNK_MB.

Run: .venv/bin/python bench/model.py [--quick]. JSON: bench/results/model.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import CHROMIUM, CHROMIUM_ARGS, dev_server, write_result  # noqa: E402

SHORT = ["A man is eating food.", "The girl is carrying a baby.", "A man is riding a horse.",
         "A woman is playing violin.", "Two men pushed carts through the woods.", "A cheetah runs after its prey.",
         "The new movie is awesome.", "It is raining in the city tonight."]
LONG_BASE = ("Sentence embeddings map text to vectors so that similar meanings lie close together; they power "
             "search, clustering and deduplication. ")
LONG = [(f"Document {i}. " + LONG_BASE * 12) for i in range(4)]   # > 256 tokens each: truncated to 256

EMBED = """
import time
_texts = {texts!r}
await model.embed(_texts[:1])          # warm: pipelines for these shapes
_times = []
for _ in range({repeats}):
    _t = time.perf_counter()
    await model.embed(_texts)
    _times.append(time.perf_counter() - _t)
{{"n": len(_texts), "seconds": sorted(_times)[len(_times) // 2], "tokens": max(len(model.tokenizer.encode(t)) for t in _texts)}}
"""

LOAD = """
import time
from gpuport import models
_t = time.perf_counter()
model = await models.load("minilm-l6-v2", rt)
{"seconds": time.perf_counter() - _t, "stats": model.load_stats}
"""

SWEEP = """
import time
from gpuport.loading.loader import ProgressiveModelLoader
_ld = ProgressiveModelLoader("/models/minilm-l6-v2/", None, chunk_size_mb={mb}, cache=None)
_t = time.perf_counter()
await _ld.load_tensors(upload=False)
{{"seconds": time.perf_counter() - _t, "requests": _ld.stats()["requests"]}}
"""


def native(url: str, repeats: int, sweep_mbs) -> dict:
    import gpuport as gp
    from gpuport import models
    from gpuport.loading.loader import ProgressiveModelLoader

    out = {}
    for backend in ("cpu", "webgpu"):
        rt = gp.open_sync(backend=backend)
        t = time.perf_counter()
        model = asyncio.run(models.load("minilm-l6-v2", rt, source=url + "/models/minilm-l6-v2/"))
        load_s = time.perf_counter() - t
        row = {"load_from_url_s": round(load_s, 3)}
        for name, texts in (("short", SHORT), ("256_tokens", LONG)):
            asyncio.run(model.embed(texts[:1]))
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                asyncio.run(model.embed(texts))
                times.append(time.perf_counter() - t)
            s = statistics.median(times)
            row[name] = {"n": len(texts), "seconds": round(s, 4), "per_s": round(len(texts) / s, 2)}
        out[f"native-{backend}"] = row
        rt.close()
    sweep = {}
    for mb in sweep_mbs:
        times = []
        for _ in range(3):
            ld = ProgressiveModelLoader(url + "/models/minilm-l6-v2/", None, chunk_size_mb=mb, cache=None)
            t = time.perf_counter()
            asyncio.run(ld.load_tensors(upload=False))
            times.append(time.perf_counter() - t)
        sweep[str(mb)] = round(statistics.median(times), 3)
    out["native_chunk_sweep_s"] = sweep
    return out


def page_run(page, src):
    return page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", src)


def in_page(url: str, repeats: int, sweep_mbs) -> dict:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for backend in ("webgpu", "cpu"):
            ctx = browser.new_context()   # a fresh profile: empty IndexedDB
            model_bytes = {"n": 0}
            ctx.on("requestfinished", lambda r: model_bytes.__setitem__("n", model_bytes["n"] + (
                r.sizes()["responseBodySize"] if "model.safetensors" in r.url else 0)))
            page = ctx.new_page()
            page.goto(f"{url}/?table=0&precompile=off&backend={backend}")
            page_run(page, "1")
            net = page_run(page, LOAD)
            net_bytes = model_bytes["n"]
            model_bytes["n"] = 0
            page.reload()
            page_run(page, "1")
            cached = page_run(page, LOAD)
            row = {"load_network_s": round(net["seconds"], 3), "load_cache_s": round(cached["seconds"], 3),
                   "network_over_cache": round(net["seconds"] / cached["seconds"], 2),
                   "model_bytes_network_first": net_bytes, "model_bytes_network_second": model_bytes["n"],
                   "cached_chunks_second": cached["stats"]["cached_chunks"]}
            for name, texts in (("short", SHORT), ("256_tokens", LONG)):
                r = page_run(page, EMBED.format(texts=texts, repeats=repeats))
                row[name] = {"n": r["n"], "seconds": round(r["seconds"], 4), "per_s": round(r["n"] / r["seconds"], 2),
                             "tokens": r["tokens"]}
            if backend == "webgpu":
                sweep = {}
                for mb in sweep_mbs:
                    times = [page_run(page, SWEEP.format(mb=mb))["seconds"] for _ in range(2)]
                    sweep[str(mb)] = round(min(times), 3)
                row["chunk_sweep_s"] = sweep
            out[f"page-{backend}"] = row
            ctx.close()
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one repeat, fewer chunk sizes")
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    sweep = (1, 4, 16) if args.quick else (1, 2, 4, 8, 16)
    with dev_server() as url:
        results = native(url, repeats, sweep)
        results.update(in_page(url, max(1, repeats - 2), sweep))
    base = results["native-cpu"]
    ratios = {}
    for key in ("native-webgpu", "native-cpu", "page-webgpu", "page-cpu"):
        ratios[key] = {n: round(results[key][n]["per_s"] / base[n]["per_s"], 3) for n in ("short", "256_tokens")}
    path = write_result("model", {"results": results, "ratio_vs_native_cpu": ratios,
                                  "short_texts": SHORT, "long_text_tokens": 256})
    print(f"{'backend':15} {'short/s':>9} {'256tok/s':>9} {'x native cpu (short, 256)':>28}")
    for key, r in ratios.items():
        row = results[key]
        print(f"{key:15} {row['short']['per_s']:9.2f} {row['256_tokens']['per_s']:9.2f} {r['short']:13.3f} {r['256_tokens']:13.3f}")
    for key in ("page-webgpu", "page-cpu"):
        r = results[key]
        print(f"{key}: load from network {r['load_network_s']} s ({r['model_bytes_network_first']} model bytes), "
              f"from cache {r['load_cache_s']} s ({r['model_bytes_network_second']} model bytes) -> x{r['network_over_cache']}")
    print("native load from URL:", {k: results[k]["load_from_url_s"] for k in ("native-cpu", "native-webgpu")})
    print("chunk sweep native (s):", results["native_chunk_sweep_s"])
    print("chunk sweep page (s):", results["page-webgpu"].get("chunk_sweep_s"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
