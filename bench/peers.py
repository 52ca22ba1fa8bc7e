"""MiniLM-L6 embeddings: gpuport against what a user would pick instead, in one run, interleaved.

- pages (Chromium on SwiftShader, Firefox ESR on lavapipe): transformers.js (npm, onnxruntime-web, on the
  fp32 ONNX export of the same weights; wasm at its default threads and at 2, and webgpu) against gpuport auto
  (the default), cpu and webgpu, each in its own page of the same browser;
- native: sentence-transformers (torch CPU) against gpuport auto and cpu, at 1 and at 2 threads (each
  system a worker process whose thread count is fixed by its environment).

Cases: 1 sentence, 8 sentences, one text of 256 tokens (bench/peers/texts.json). Within each case the
systems of a lane alternate repetition by repetition, after one discarded warm-up each; medians in ms and
ratios peer / gpuport (>= 1.0: gpuport faster). Every system's warm-up embeddings are compared with
sentence-transformers (cosine >= 0.9999 required of gpuport). Prints the table, writes
bench/results/peers.json and bench/results/peers.png.

Needs `make bench-setup` (bench venv, ONNX export, transformers.js under .cache/bench); downloads nothing.
Run: `make bench` (takes /tmp/gpuport-heavy.lock), or under that lock:
  .venv/bin/python bench/peers.py [--quick] [--lanes native,chromium,firefox] [--no-tjs-webgpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, dev_server  # noqa: E402
from _peers_lanes import (  # noqa: E402
    PEERS,
    GpuportPage,
    NativeSystem,
    SystemFailed,
    TjsPage,
    contention,
    cpu_jiffies,
    interleave,
    peer_server,
)
from _peers_report import MIN_COSINE, cosine_min, is_gpuport, summary, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LANES = ("native", "chromium", "firefox")
BROWSER_KIND = {"chromium": "chromium-webgpu", "firefox": "firefox"}
THREADS = (1, 2)


def native_env(threads: int, gpuport: bool) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS"):
        env[var] = str(threads)
    if gpuport:
        env["PYTHONPATH"] = str(ROOT / "py") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def st_worker(bench_dir: Path, threads: int) -> NativeSystem:
    return NativeSystem(f"st-{threads}t", [str(bench_dir / "venv" / "bin" / "python"), str(PEERS / "worker.py"), "st"],
                        native_env(threads, False))


def gpuport_worker(backend: str, threads: int) -> NativeSystem:
    return NativeSystem(f"gpuport-{backend}-{threads}t", [sys.executable, str(PEERS / "worker.py"), "gpuport", backend],
                        native_env(threads, True))


def start(make, name: str, failures: dict[str, str], log) -> list:
    """[the started system], or [] with the reason recorded: one system failing to start costs only itself."""
    try:
        s = make()
        log(f"  {name}: ready")
        return [s]
    except SystemFailed as exc:
        failures[name] = str(exc)
    except Exception as exc:  # a page that fails to load: its words go into the JSON
        failures[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    log(f"  {name}: FAILED to start: {failures[name][:300]}")
    return []


def machine_info() -> dict:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{cmd[0]}: {exc}"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "0")
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(int(mem) / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "loadavg_start": os.getloadavg(),
            "git_commit": run("git", "rev-parse", "HEAD"), "git_dirty": bool(run("git", "status", "--porcelain", "-uno"))}


def run_lane(lane: str, systems: list, texts: dict, args, log) -> dict:
    a, t0 = cpu_jiffies(os.getpid()), time.perf_counter()
    reps = args.native_reps if lane == "native" else args.reps
    results, embeddings, errors = interleave(systems, texts, reps, args.min_reps, args.budget_s, log, args.gap_s)
    return {"results": results, "embeddings": embeddings, "errors": errors,
            "contention": contention(a, cpu_jiffies(os.getpid()), time.perf_counter() - t0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 timed repetition per system and case")
    ap.add_argument("--lanes", default=",".join(LANES), help="comma-separated subset of " + ",".join(LANES))
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per system and case (after a warm-up)")
    ap.add_argument("--native-reps", type=int, default=25,
                    help="timed repetitions per native system and case (they take milliseconds)")
    ap.add_argument("--min-reps", type=int, default=3, help="repetitions a slow system gets even past --budget-s")
    ap.add_argument("--budget-s", type=float, default=12.0,
                    help="seconds a system may spend on one case before it stops at --min-reps")
    ap.add_argument("--gap-s", type=float, default=0.25,
                    help="idle seconds before each call: the previous system's OpenMP/OpenBLAS threads stop spinning")
    ap.add_argument("--no-tjs-webgpu", dest="tjs_webgpu", action="store_false",
                    help="skip transformers.js on WebGPU (its slowest device on these software adapters)")
    ap.add_argument("--gpuport-backends", default="auto,cpu,webgpu",
                    help="gpuport's pages to run (webgpu on these software adapters takes seconds a call)")
    ap.add_argument("--one-thread", action="store_true",
                    help="also gpuport's default page on one thread (start({threads: 1})): what its pool buys")
    ap.add_argument("--bench-dir", default=str(ROOT / ".cache" / "bench"))
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/peers[-quick].json)")
    args = ap.parse_args()
    if args.quick:
        args.reps = args.native_reps = args.min_reps = 1
    lanes = [x for x in args.lanes.split(",") if x]
    unknown = set(lanes) - set(LANES)
    if unknown:
        ap.error(f"unknown lanes {sorted(unknown)}; choose from {LANES}")
    bench_dir = Path(args.bench_dir)
    for need in ("venv/bin/python", "models/all-MiniLM-L6-v2/onnx/model.onnx", "js/node_modules/@huggingface/transformers",
                 "onnx_check.json"):
        if not (bench_dir / need).exists():
            print(f"{bench_dir / need} is missing: run `make bench-setup` first")
            return 2
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not os.environ.get("XDG_RUNTIME_DIR"):   # wgpu/Vulkan and the browsers want one (the Makefile sets it)
        xdg = Path(tempfile.gettempdir()) / f"xdg-runtime-{os.getuid()}"
        xdg.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(xdg)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    t_start = time.perf_counter()
    texts_doc = json.loads((PEERS / "texts.json").read_text())
    texts = {k: texts_doc[k] for k in ("short", "batch8", "long256")}
    meta = {"bench": "peers", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
            "args": {k: v for k, v in vars(args).items() if k != "out"}, "tokens": texts_doc["tokens"],
            "onnx_check": json.loads((bench_dir / "onnx_check.json").read_text()), "systems": {}, "failures": {},
            "contention": {}}
    failures: dict[str, str] = {}
    log("reference: sentence-transformers, 1 thread")
    ref_system = st_worker(bench_dir, 1)
    reference, st_tokens = {}, {}
    for case, batch in texts.items():
        out = ref_system.call(case, batch, True)
        reference[case], st_tokens[case] = out["embeddings"], out.get("tokens")
    meta["tokens_sentence_transformers"] = st_tokens
    if st_tokens != texts_doc["tokens"]:
        log(f"WARNING: token counts differ: gpuport's tokenizer {texts_doc['tokens']}, sentence-transformers {st_tokens}")

    all_results, cosines = {}, {}

    def record(lane: str, systems: list, out: dict) -> None:
        all_results[lane] = out["results"]
        failures.update({f"{lane}/{k}": v for k, v in out["errors"].items()})
        meta["contention"][lane] = out["contention"]
        for s in systems:
            meta["systems"][f"{lane}/{s.name}"] = s.info
        cosines[lane] = {}
        for case, by_system in out["embeddings"].items():
            for name, emb in by_system.items():
                cosines[lane].setdefault(name, {})[case] = round(cosine_min(emb, reference[case]), 7)

    if "native" in lanes:
        log("lane native")
        systems = [ref_system]
        for n in THREADS:
            if n != 1:
                systems += start(lambda: st_worker(bench_dir, n), f"st-{n}t", failures, log)
            for backend in ("auto", "cpu"):
                systems += start(lambda: gpuport_worker(backend, n), f"gpuport-{backend}-{n}t", failures, log)
        out = run_lane("native", systems, texts, args, log)
        for s in systems:
            s.close()
        record("native", systems, out)
    else:
        ref_system.close()

    page_lanes = [x for x in lanes if x != "native"]
    if page_lanes:
        from gpuport.testing.browsers import Browsers

        with dev_server() as gp_url, peer_server(bench_dir) as tjs_url:
            for lane in page_lanes:
                log(f"lane {lane}")
                browsers = Browsers()
                try:
                    browser = browsers.get(BROWSER_KIND[lane])
                    meta["machine"][f"{lane}_version"] = browser.version
                    systems = []
                    for device in ("wasm", "webgpu") if args.tjs_webgpu else ("wasm",):
                        systems += start(lambda: TjsPage(browser, tjs_url, device), f"tjs-{device}", failures, log)
                    # what a user's machine shows: onnxruntime-web asked for 2 threads (it picks 1 on 2 cores)
                    systems += start(lambda: TjsPage(browser, tjs_url, "wasm", 2), "tjs-wasm-2t", failures, log)
                    for backend in args.gpuport_backends.split(","):
                        systems += start(lambda: GpuportPage(browser, gp_url, backend, texts), f"gpuport-{backend}",
                                         failures, log)
                    if args.one_thread:   # gpuport's default before its pool of workers, in the same run
                        systems += start(lambda: GpuportPage(browser, gp_url, "auto", texts, threads=1),
                                         "gpuport-auto-1-thread", failures, log)
                    out = run_lane(lane, systems, texts, args, log)
                    for s in systems:
                        s.close()
                    record(lane, systems, out)
                finally:
                    browsers.close()

    meta["failures"] = failures
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    doc = summary(all_results, cosines, meta)
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / ("peers-quick.json" if args.quick else "peers.json")
    path.write_text(json.dumps(doc, indent=1))
    print()
    print(table(all_results, cosines))
    low = [f"{lane}/{s}: {min(c.values()):.6f}" for lane, by in cosines.items() for s, c in by.items()
           if is_gpuport(s) and min(c.values()) < MIN_COSINE]
    print(f"embeddings vs sentence-transformers: every gpuport system >= {MIN_COSINE}" if not low
          else "embeddings BELOW the required cosine: " + "; ".join(low))
    for lane, c in meta["contention"].items():
        print(f"{lane}: {c['wall_s']} s, other processes used {c['foreign_cpu_s']} CPU-s meanwhile "
              f"(steal {c['steal_s']} s, this bench {c['bench_cpu_s']} CPU-s)")
    for key, info in meta["systems"].items():
        after = info.get("after") if isinstance(info, dict) else None
        chosen = (after or {}).get("selection") if isinstance(after, dict) else None
        if chosen:
            print(f"{key} placed: " + ", ".join(f"{op} {counts}" for op, counts in chosen.get("counts", {}).items()))
    for name, why in failures.items():
        print(f"FAILED {name}: {why[:300]}")
    png = path.with_suffix(".png")
    chart = subprocess.run([str(bench_dir / "venv" / "bin" / "python"), str(PEERS / "chart.py"), str(path), str(png)],
                           capture_output=True, text=True)
    print(chart.stdout.strip() or chart.stderr.strip()[-2000:])
    print(f"wrote {path} ({doc['wall_s']} s)")
    return 1 if (low or failures) else 0


if __name__ == "__main__":
    sys.exit(main())
