"""MiniLM-L6 embeddings in a page, per backend (auto / cpu / webgpu), in Chromium and Firefox: the three cases
of issue 11 (one short sentence, 8 sentences, one 256-token text; the peer bench's texts), median ms per
`model.embed` after a warm-up call, and where auto ran the work (its per-op counts).

One browser at a time, a fresh page per backend (each opens its own runtime: auto calibrates at open).
Run under the lock: flock /tmp/gpuport-heavy.lock .venv/bin/python bench/page_minilm.py [--browsers chromium]
[--backends auto,cpu] [--runs 5] [--budget-s 20]. JSON: bench/results/page_minilm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import CHROMIUM, CHROMIUM_ARGS, dev_server, write_result  # noqa: E402
from gpuport.testing.browsers import FIREFOX_PREFS  # noqa: E402

FIREFOX = "/usr/bin/firefox-esr"

SHORT = "Rain is expected in the mountains by tomorrow night."
BATCH8 = [SHORT, "He fixed the old bicycle in the garage.", "Our team shipped the new release on Friday.",
          "The museum opens its doors at ten.", "A cat sleeps on the warm windowsill.",
          "Vectors with similar meaning lie close together.", "The orchestra tuned their instruments quietly.",
          "Fresh snow covered the quiet village streets."]
PARA = ("Browsers now run compute shaders through WebGPU, and Python runs in them through Pyodide. It exposes the "
        "capabilities of current GPU hardware to web pages, so that programs written in JavaScript or WebAssembly "
        "can run compute shaders written in WGSL. Machine learning libraries use it to run neural networks such as "
        "sentence embedding models directly in the browser, without sending any data to a server. ")
CASES = {"1 sentence": [SHORT], "8 sentences": BATCH8, "256 tokens": [PARA * 8]}  # truncated to 256 tokens

LOAD = """
from gpuport import models
model = await models.load("minilm-l6-v2", rt)
from gpuport.host import wasm_kernels as _w
{"backend": rt.backend, "wasm": _w.available(), "wasm_reason": _w.reason()}
"""

EMBED = """
import time
_texts = {texts!r}
await model.embed(_texts)          # warm: pipelines, packed weights, selector samples for these shapes
_times, _t_all = [], time.perf_counter()
while len(_times) < {runs} and (len(_times) < 2 or time.perf_counter() - _t_all < {budget_s}):
    _t = time.perf_counter()
    await model.embed(_texts)
    _times.append((time.perf_counter() - _t) * 1e3)
_sel = rt.info().get("selection") or {{}}
{{"ms": sorted(_times)[len(_times) // 2], "all_ms": [round(t, 1) for t in _times],
  "tokens": max(len(model.tokenizer.encode(t, 256)) for t in _texts), "counts": _sel.get("counts")}}
"""


def launch(pw, browser: str):
    if browser == "chromium":
        return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return pw.firefox.launch(channel="moz-firefox", executable_path=FIREFOX, firefox_user_prefs=FIREFOX_PREFS)


def run(pw, url: str, browser: str, backend: str, runs: int, budget_s: float) -> dict:
    b = launch(pw, browser)
    try:
        page = b.new_page()
        page.goto(f"{url}/?backend={backend}&table=0&precompile=off")
        page.wait_for_function("() => window.gpuportReady !== undefined", timeout=60_000)

        def py(src: str):
            return page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", src)

        row = {"load": py(LOAD), "cases": {}}
        for name, texts in CASES.items():
            row["cases"][name] = py(EMBED.format(texts=texts, runs=runs, budget_s=budget_s))
            print(f"  {browser:8} {backend:6} {name:12} {row['cases'][name]['ms']:9.1f} ms", flush=True)
        return row
    finally:
        b.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--browsers", default="chromium,firefox")
    ap.add_argument("--backends", default="auto,cpu,webgpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=20.0, help="stop repeating a case after this (min 2 runs)")
    ap.add_argument("--out", default="page_minilm")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    results: dict = {}
    with dev_server() as url, sync_playwright() as pw:
        for browser in args.browsers.split(","):
            for backend in args.backends.split(","):
                t0 = time.monotonic()
                results[f"{browser}-{backend}"] = r = run(pw, url, browser, backend, args.runs, args.budget_s)
                r["wall_s"] = round(time.monotonic() - t0, 1)
    path = write_result(args.out, {"results": results})
    print(json.dumps({k: {c: round(v["ms"], 1) for c, v in r["cases"].items()} for k, r in results.items()}))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
