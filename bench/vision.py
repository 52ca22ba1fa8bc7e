"""CLIP ViT-B/32 (the test set-up's random checkpoint, the published configuration): gpuport against what a user
would pick instead, in one run, interleaved.

- pages (Chromium on SwiftShader, Firefox ESR on lavapipe): transformers.js (npm, onnxruntime-web, on the same
  checkpoint exported to ONNX in its split-tower layout: bench/peers/export_clip.py; fp32; wasm at its default
  threads and at 2, and webgpu) against gpuport's default page (auto), each in its own page of the same browser;
- native: Hugging Face transformers on torch (CPU) against gpuport's default (auto), at 1 and at 2 threads (each
  system a worker process whose thread count is fixed by its environment).

Cases (bench/peers/vision_inputs.json): 1 and 16 images (from their PNG/JPEG bytes: decoding and preprocessing are
timed too), 1 and 16 texts, one 10-label zero-shot classification (the labels embedded every call: gpuport's label
cache is cleared first). Every system first runs every case --warmups times (discarded: the browsers'
WebAssembly tiers up meanwhile), then within each case the systems of a lane alternate repetition by repetition;
medians in ms and ratios peer / gpuport (>= 1.0: gpuport faster). Every system's first
output is compared with transformers' (cosine >= 0.9999 required of gpuport). In each browser WebAssembly's
multiply-add roof (bench/roof.c, bench/_roof.py) is measured before and after its systems, and gpuport's image tower
is reported in GFLOP/s against it. Prints the table, writes bench/results/vision.json and bench/results/vision.png.

Needs `make setup` (the checkpoint) and `make bench-setup` (bench venv, the ONNX export, transformers.js under
.cache/bench); downloads nothing. Run: `make bench-vision` (takes /tmp/gpuport-heavy.lock), or under that lock:
  .venv/bin/python bench/vision.py [--quick] [--lanes native,chromium,firefox] [--no-tjs-webgpu]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, dev_server  # noqa: E402
from _peers_lanes import (  # noqa: E402
    PEERS,
    GpuportPage,
    NativeSystem,
    TjsPage,
    contention,
    cpu_jiffies,
    interleave,
    peer_server,
)
from _peers_report import cosine_min, fmt_ms, medians  # noqa: E402
from _roof import ROOF_WASM, vision_tower_flops, wasm_roof  # noqa: E402
from peers import machine_info, start  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / ".cache" / "vision" / "clip-vit-base-patch32"
LANES = ("native", "chromium", "firefox")
BROWSER_KIND = {"chromium": "chromium-webgpu", "firefox": "firefox"}
THREADS = (1, 2)
CASES = {"image1": "1 image", "image16": "16 images", "text1": "1 text", "text16": "16 texts",
         "zeroshot10": "10-label zero-shot"}
MIN_COSINE = 0.9999
INPUTS = json.loads((PEERS / "vision_inputs.json").read_text())
CLIP_PAGE = {"page": "vision.html", "run": "tjsRun"}   # transformers.js's CLIP page (bench/peers/vision.html)
TITLE = ("CLIP ViT-B/32, gpuport's default vs its peer\n"
         "page: transformers.js best device; native: transformers on torch at the same threads")


def photos_dir() -> Path:
    import skimage
    return Path(skimage.__file__).resolve().parent / "data"


class VisionNative(NativeSystem):
    def call(self, case: str, _: Any, embeddings: bool) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"case": case, "embeddings": embeddings}) + "\n")
        self.proc.stdin.flush()
        return self._read()


def native(kind: str, python: str, threads: int) -> VisionNative:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS"):
        env[var] = str(threads)
    if kind == "gpuport":
        env["PYTHONPATH"] = str(ROOT / "py") + os.pathsep + env.get("PYTHONPATH", "")
    return VisionNative(f"{'gpuport-auto' if kind == 'gpuport' else 'hf'}-{threads}t",
                        [python, str(PEERS / "vision_worker.py"), kind, str(CHECKPOINT), str(photos_dir())], env)


GP_LOAD = """
import base64, json, time
import numpy as np
from gpuport import models
_inputs = json.loads({inputs!r})
_photos = [base64.b64decode(b) for b in {photos!r}]
_many = [_photos[i % len(_photos)] for i in range(16)]
_t = time.perf_counter()
_clip = await models.load("clip-vit-base-patch32", rt)
async def _case(name):
    if name == "zeroshot10":
        _clip.clear_labels()   # the peers embed the labels every call
        top = dict(await _clip.classify(_photos[0], _inputs["labels"], template=_inputs["template"]))
        return np.array([[top[label] for label in _inputs["labels"]]])
    if name.startswith("image"):
        return await _clip.embed_images(_photos[:1] if name == "image1" else _many)
    return await _clip.embed_texts(_inputs["texts"][:1 if name == "text1" else 16])
{{"load_ms": (time.perf_counter() - _t) * 1000}}
"""
GP_CALL = """
from gpuport.host import hostops as _hostops
_t = time.perf_counter()
_e = await _case({case!r})
_ms = (time.perf_counter() - _t) * 1000
{{"ms": _ms, "embeddings": _e.tolist() if {embeddings} else None,
  "stats": {{**_clip.last_stats, "pool": _hostops.layer_threads().get("last_call")}}}}
"""
GP_INFO = """
_i = rt.info()
{k: _i.get(k) for k in ("version", "backend", "tier", "adapter", "browser", "selection", "note")}
"""


def gpuport_page(browser: Any, url: str, photos: list[bytes]) -> GpuportPage:
    """gpuport's page at its defaults (auto), CLIP loaded from the dev server, the photographs handed over once."""
    load = GP_LOAD.format(inputs=json.dumps(INPUTS), photos=[base64.b64encode(p).decode() for p in photos])
    return GpuportPage(browser, url, "auto", {}, load=load, call_src=GP_CALL, info_src=GP_INFO)


def ratios(results: Mapping[str, Any]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{lane: {gpuport system: {case: {"peer", "ratio"}}}}: the peer is transformers.js's fastest device in a page,
    transformers on torch at the same threads natively; ratio = peer median / gpuport median."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for lane, cases in medians(results).items():
        for case, meds in cases.items():
            for system, ms in meds.items():
                if not system.startswith("gpuport-"):
                    continue
                if system.endswith("t"):
                    peer = "hf-" + system.rsplit("-", 1)[1]
                    peer = peer if peer in meds else None
                else:
                    tjs = [s for s in meds if s.startswith("tjs-")]
                    peer = min(tjs, key=meds.__getitem__) if tjs else None
                if peer is not None:
                    out.setdefault(lane, {}).setdefault(system, {})[case] = {"peer": peer,
                                                                            "ratio": round(meds[peer] / ms, 4)}
    return out


def table(results: Mapping[str, Any], cosines: Mapping[str, Any]) -> str:
    meds, rat = medians(results), ratios(results)
    head = f"{'lane':9} {'system':22}" + "".join(f"{v:>22}" for v in CASES.values()) + "   min cosine"
    lines = [head, "-" * len(head)]
    for lane, cases in meds.items():
        for system in dict.fromkeys(s for c in cases.values() for s in c):
            row = f"{lane:9} {system:22}"
            for case in CASES:
                ms = cases.get(case, {}).get(system)
                cell = "-" if ms is None else fmt_ms(ms)
                r = rat.get(lane, {}).get(system, {}).get(case)
                if r is not None:
                    cell += f" (x{r['ratio']:.2f})"
                row += f"{cell:>22}"
            cos = cosines.get(lane, {}).get(system)
            row += f"   {min(cos.values()):.6f}" if cos else ""
            lines.append(row)
    lines.append("(x r): peer median / gpuport median; peer = transformers.js's best device in a page, transformers "
                 "on torch at the same threads natively; >= 1.0 means gpuport is faster")
    return "\n".join(lines)


def tower_rates(results: Mapping[str, Any], roofs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{lane: {case: ...}} for the image cases of each page lane: gpuport's vision tower in GFLOP/s (its FLOPs over
    the median of its calls' own tower times, preprocessing left out) and as a fraction of the WebAssembly
    multiply-add roof measured on two threads in the same browser in this run; transformers.js's whole call (its
    preprocessing in) as the GFLOP/s its fastest configuration would need at least for the full model."""
    out: dict[str, dict[str, Any]] = {}
    for lane, roof in roofs.items():
        top = max(r["gflops"][2] for r in roof.values())
        for case, images in (("image1", 1), ("image16", 16)):
            got = results.get(lane, {}).get(case, {})
            gp = got.get("gpuport-auto", {}).get("stats") or []
            tjs = {s: median(r["runs_ms"]) for s, r in got.items() if s.startswith("tjs-") and r.get("runs_ms")}
            if not gp or not tjs:
                continue
            tower_ms = median(st["vision_ms"] for st in gp)
            gflops = vision_tower_flops(images) / (tower_ms * 1e6)
            peer = min(tjs, key=tjs.__getitem__)
            full = vision_tower_flops(images, keep_all_rows=True)
            out.setdefault(lane, {})[case] = {
                "roof_gflops_2_threads": top, "gpuport_tower_ms": round(tower_ms, 1),
                "gpuport_tower_gflops": round(gflops, 1), "gpuport_fraction_of_roof": round(gflops / top, 3),
                "peer": peer, "peer_ms": round(tjs[peer], 1),
                "peer_gflops_at_least": round(full / (tjs[peer] * 1e6), 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 timed repetition per system and case")
    ap.add_argument("--lanes", default=",".join(LANES), help="comma-separated subset of " + ",".join(LANES))
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per system and case (after the warm-ups)")
    ap.add_argument("--warmups", type=int, default=3,
                    help="discarded rounds over every case before any is timed (the browsers' WebAssembly tiers up)")
    ap.add_argument("--native-reps", type=int, default=9, help="timed repetitions per native system and case")
    ap.add_argument("--min-reps", type=int, default=3, help="repetitions a slow system gets even past --budget-s")
    ap.add_argument("--budget-s", type=float, default=20.0,
                    help="seconds a system may spend on one case before it stops at --min-reps")
    ap.add_argument("--gap-s", type=float, default=0.25, help="idle seconds before each call (threads go to sleep)")
    ap.add_argument("--no-tjs-webgpu", dest="tjs_webgpu", action="store_false",
                    help="skip transformers.js on WebGPU (its slowest device on these software adapters)")
    ap.add_argument("--bench-dir", default=str(ROOT / ".cache" / "bench"))
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/vision[-quick].json)")
    args = ap.parse_args()
    if args.quick:
        args.reps = args.native_reps = args.min_reps = args.warmups = 1
    lanes = [x for x in args.lanes.split(",") if x]
    if set(lanes) - set(LANES):
        ap.error(f"unknown lanes {sorted(set(lanes) - set(LANES))}; choose from {LANES}")
    bench_dir = Path(args.bench_dir)
    for need in ("venv/bin/python", "models/clip-vit-base-patch32/onnx/vision_model.onnx", ROOF_WASM,
                 "js/node_modules/@huggingface/transformers", "clip_onnx_check.json"):
        if not (bench_dir / need).exists():
            print(f"{bench_dir / need} is missing: run `make bench-setup` first")
            return 2
    if not (CHECKPOINT / "model.safetensors").is_file():
        print(f"{CHECKPOINT} is missing: run `make setup` first")
        return 2
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not os.environ.get("XDG_RUNTIME_DIR"):
        xdg = Path(tempfile.gettempdir()) / f"xdg-runtime-{os.getuid()}"
        xdg.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(xdg)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    t_start = time.perf_counter()
    payload = {case: None for case in CASES}
    meta = {"bench": "vision", "title": TITLE, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
            "args": {k: v for k, v in vars(args).items() if k != "out"}, "inputs": INPUTS,
            "onnx_check": json.loads((bench_dir / "clip_onnx_check.json").read_text()), "systems": {},
            "failures": {}, "contention": {}, "roof": {}}
    failures: dict[str, str] = {}
    bench_python = str(bench_dir / "venv" / "bin" / "python")
    log("reference: transformers on torch, 1 thread")
    ref_system = native("hf", bench_python, 1)
    reference = {case: ref_system.call(case, None, True)["embeddings"] for case in CASES}
    all_results, cosines = {}, {}

    def lane_run(lane: str, systems: list) -> None:
        a, t0 = cpu_jiffies(os.getpid()), time.perf_counter()
        reps = args.native_reps if lane == "native" else args.reps
        results, outputs, errors = interleave(systems, payload, reps, args.min_reps, args.budget_s, log, args.gap_s,
                                              args.warmups)
        for s in systems:
            s.close()
            meta["systems"][f"{lane}/{s.name}"] = s.info
        all_results[lane] = results
        failures.update({f"{lane}/{k}": v for k, v in errors.items()})
        meta["contention"][lane] = contention(a, cpu_jiffies(os.getpid()), time.perf_counter() - t0)
        cosines[lane] = {}
        for case, by_system in outputs.items():
            for name, emb in by_system.items():
                cosines[lane].setdefault(name, {})[case] = round(cosine_min(emb, reference[case]), 7)

    if "native" in lanes:
        log("lane native")
        systems = [ref_system]
        for n in THREADS:
            if n != 1:
                systems += start(lambda: native("hf", bench_python, n), f"hf-{n}t", failures, log)
            systems += start(lambda: native("gpuport", sys.executable, n), f"gpuport-auto-{n}t", failures, log)
        lane_run("native", systems)
    else:
        ref_system.close()

    def roof(browser: Any) -> dict[str, Any]:
        context = browser.new_context()
        try:
            page = context.new_page()
            got = wasm_roof(page, bench_dir)
        finally:
            context.close()
        log(f"  WebAssembly FMA roof: {got['gflops']} GFLOP/s by threads ({got['accumulators']} accumulators)")
        return got

    page_lanes = [x for x in lanes if x != "native"]
    if page_lanes:
        from gpuport.testing.browsers import Browsers

        photos = [(photos_dir() / p).read_bytes() for p in INPUTS["photos"]]
        with dev_server() as gp_url, peer_server(bench_dir, extra={"/photos/": str(photos_dir())}) as tjs_url:
            for lane in page_lanes:
                log(f"lane {lane}")
                browsers = Browsers()
                try:
                    browser = browsers.get(BROWSER_KIND[lane])
                    meta["machine"][f"{lane}_version"] = browser.version
                    systems = []
                    for device in ("wasm", "webgpu") if args.tjs_webgpu else ("wasm",):
                        systems += start(lambda: TjsPage(browser, tjs_url, device, **CLIP_PAGE), f"tjs-{device}",
                                         failures, log)
                    systems += start(lambda: TjsPage(browser, tjs_url, "wasm", 2, **CLIP_PAGE), "tjs-wasm-2t", failures,
                                     log)
                    systems += start(lambda: gpuport_page(browser, gp_url, photos), "gpuport-auto", failures, log)
                    # the roof before the systems' calls and after them: the machine's speed drifts
                    meta["roof"][lane] = {"before": roof(browser)}
                    lane_run(lane, systems)
                    meta["roof"][lane]["after"] = roof(browser)
                finally:
                    browsers.close()

    meta["failures"] = failures
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    rates = tower_rates(all_results, meta["roof"])
    doc = {**meta, "cases": CASES, "results": all_results, "median_ms": medians(all_results),
           "ratios": ratios(all_results), "tower_vs_roof": rates, "cosine_vs_transformers": cosines,
           "min_cosine_required": MIN_COSINE}
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / ("vision-quick.json" if args.quick else "vision.json")
    path.write_text(json.dumps(doc, indent=1))
    print()
    print(table(all_results, cosines))
    low = [f"{lane}/{s}: {min(c.values()):.6f}" for lane, by in cosines.items() for s, c in by.items()
           if s.startswith("gpuport-") and min(c.values()) < MIN_COSINE]
    print(f"outputs vs transformers: every gpuport system >= {MIN_COSINE}" if not low
          else "outputs BELOW the required cosine: " + "; ".join(low))
    for lane, cases in rates.items():
        for case, r in cases.items():
            print(f"{lane} {CASES[case]}: gpuport's tower {r['gpuport_tower_ms']} ms, "
                  f"{r['gpuport_tower_gflops']} GFLOP/s "
                  f"= {r['gpuport_fraction_of_roof']:.0%} of WebAssembly's multiply-add roof on 2 threads here "
                  f"({r['roof_gflops_2_threads']}); {r['peer']}'s whole call {r['peer_ms']} ms, at least "
                  f"{r['peer_gflops_at_least']} GFLOP/s")
    for lane, c in meta["contention"].items():
        print(f"{lane}: {c['wall_s']} s, other processes used {c['foreign_cpu_s']} CPU-s meanwhile "
              f"(steal {c['steal_s']} s, this bench {c['bench_cpu_s']} CPU-s)")
    for name, why in failures.items():
        print(f"FAILED {name}: {why[:300]}")
    png = path.with_suffix(".png")
    chart = subprocess.run([bench_python, str(PEERS / "chart.py"), str(path), str(png)], capture_output=True, text=True)
    print(chart.stdout.strip() or chart.stderr.strip()[-2000:])
    print(f"wrote {path} ({doc['wall_s']} s)")
    return 1 if (low or failures) else 0


if __name__ == "__main__":
    sys.exit(main())
