"""What the page's pool of workers buys: the threaded host kernels (gpuport.host.wasm_threads) on 1 and on 2 threads,
and the one-thread build (wasm_kernels, NumPy's memory in place), on the same page and weights, interleaved.

Per browser (Chromium, Firefox), one cross-origin isolated page of the dev server, backend cpu:
- MiniLM on one 256-token text: the whole `model.embed` call (tokenizing included) and its host forward alone
  (`model.forward_host` on the tokenized text: 6 encoder layers, one kernel call each); and `model.embed` of one
  short sentence (median of 5);
- a SmolLM2 decode step (median seconds per token over a greedy generation after its first token; 30 llama
  blocks and the head per step).
Each repetition runs every configuration once, in rotated order; medians. The figures are ratios within the
run, the slower configuration's time / the faster one's (> 1.0: the first named is faster): pool on 2 threads
against pool on 1 thread (the scaling), pool on 2 threads against the one-thread build (what the page's default
gains), and pool on 1 thread against the one-thread build (what the pool costs on one thread).

The whole comparison runs --runs times (default 3), each with freshly launched browsers; each run prints its table,
and the end prints, per browser, case and comparison, the ratio in every run, the WORST of the runs (the lowest) and
their median (bench/_runs.py; no target is stated for this bench, so no verdict lines). Writes
bench/results/page_threads.json (every run under "runs", the combination under "across_runs") and a PNG (medians of
the runs against the one-thread build, the worst run marked).

Run under the lock: flock /tmp/gpuport-heavy.lock .venv/bin/python bench/page_threads.py [--browsers chromium]
[--reps 7] [--tokens 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import dev_server, draw_chart, write_result  # noqa: E402
from _runs import Key, across_runs, add_runs_argument  # noqa: E402
from _runs import report as run_report  # noqa: E402
from page_minilm import PARA, SHORT, launch  # noqa: E402

CONFIGS = {"pool, 2 threads": 2, "pool, 1 thread": 1, "one-thread build": 0}
# the cases' names (in the ratios and the across-runs table) and the key each is timed under in ONE's answer
CASES = {"embed_short": "short_s", "embed_256": "embed_s", "forward_256": "forward_s", "decode_step": "decode_step_s"}
# (system, peer): each ratio is the peer's median time / the system's (> 1.0: the system is faster)
COMPARISONS = (("pool, 2 threads", "pool, 1 thread"), ("pool, 2 threads", "one-thread build"),
               ("pool, 1 thread", "one-thread build"))
RATIO = "peer median / system median, > 1.0: the system faster, the worst run is the lowest"
TARGETS = ()   # no stated goal for the pool's gain (the acceptance of issue #47 is peers.py's and startup.py's)

LOAD = """
import numpy as np
from gpuport import models; from gpuport.host import wasm_threads
await wasm_threads.ready()
model = await models.load("minilm-l6-v2", rt)
llm = await models.load("smollm2-135m-instruct", rt)
ids = llm.prompt_ids([{{"role": "user", "content": "Tell me about the history of the printing press."}}])
_engine = wasm_threads.ENGINE.lib
def use(n):
    # 0: the one-thread build (the pool set aside); else the pool on n threads
    wasm_threads.ENGINE.lib = _engine if n else None
    wasm_threads.use_threads(n or None)
_long = [{para!r} * 8]
_short = [{short!r}]
_enc = model.tokenizer.encode(_long[0], model.config.max_seq_length)
_ids, _mask = np.array([_enc], np.int32), np.ones((1, len(_enc)), np.float32)
for _n in (2, 1, 0):   # warm each: packed weights, uploads, the engines' tiers
    use(_n)
    await model.embed(_long)
    [t async for t in llm.generate(ids, max_new_tokens=4, ignore_eos=True)]
use(2)
{{"threads": wasm_threads.threads(), "reason": wasm_threads.reason(), "backend": rt.backend,
  "prompt_tokens": len(ids)}}
"""

ONE = """
import time
use({n})
_t = time.perf_counter()
await model.embed(_long)
_embed = time.perf_counter() - _t
_t = time.perf_counter()
model.forward_host(_ids, _mask)
_forward = time.perf_counter() - _t
_shorts = []
for _ in range(5):
    _t = time.perf_counter()
    await model.embed(_short)
    _shorts.append(time.perf_counter() - _t)
_times, _t = [], time.perf_counter()
async for _tok in llm.generate(ids, max_new_tokens={tokens}, ignore_eos=True):
    _times.append(time.perf_counter() - _t)
_steps = sorted(b - a for a, b in zip(_times[1:], _times[2:]))
use(2)
{{"embed_s": _embed, "forward_s": _forward, "short_s": sorted(_shorts)[2], "decode_step_s": _steps[len(_steps) // 2], "ttft_s": _times[0]}}
"""


def bench_browser(pw, browser: str, url: str, reps: int, tokens: int) -> dict:
    b = launch(pw, browser)
    try:
        page = b.new_page()
        page.goto(url + "/?backend=cpu&table=0&precompile=off")
        run = lambda src: page.evaluate("async (s) => (await window.gpuportReady).runPython(s)", src)  # noqa: E731
        info = run(LOAD.format(para=PARA, short=SHORT))
        print(f"{browser}: {info}", flush=True)
        if info["threads"] < 2:
            raise SystemExit(f"{browser}: no pool of 2 threads in this page: {info['reason']}")
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        names = list(CONFIGS)
        for r in range(reps):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(run(ONE.format(n=CONFIGS[name], tokens=tokens)))
            print(f"  rep {r}: " + ", ".join(f"{k} {v[-1]['embed_s'] * 1e3:.0f} ms / {v[-1]['decode_step_s'] * 1e3:.1f} "
                                              f"ms" for k, v in runs.items()), flush=True)
        med = {name: {key: statistics.median(x[key] for x in rs) for key in rs[0]} for name, rs in runs.items()}
        return {"info": info, "runs": runs, "medians": med,
                "scaling": ratios(med, "pool, 2 threads", "pool, 1 thread"),
                "vs_one_thread_build": ratios(med, "pool, 2 threads", "one-thread build")}
    finally:
        b.close()


def ratios(medians: Mapping[str, Mapping[str, float]], system: str, peer: str) -> dict[str, float]:
    """{case: the peer's median / the system's} (> 1.0: `system` is faster)."""
    return {case: medians[peer][key] / medians[system][key] for case, key in CASES.items()}


def run_ratios(browsers: Mapping[str, Mapping[str, Any]]) -> dict[Key, float]:
    """One run's ratios for bench/_runs.py: per browser, case and comparison (COMPARISONS)."""
    return {(browser, case, system, peer): round(ratio, 6) for browser, res in browsers.items()
            for system, peer in COMPARISONS for case, ratio in ratios(res["medians"], system, peer).items()}


def print_run(results: Mapping[str, Any], index: int, n_runs: int) -> None:
    print(f"\nrun {index + 1} of {n_runs}: medians")
    print(f"{'browser':<10} {'config':<18} {'1 sentence ms':>14} {'256 tokens ms':>14} {'forward ms':>11} "
          f"{'decode step ms':>15}")
    for browser, res in results.items():
        for name, m in res["medians"].items():
            print(f"{browser:<10} {name:<18} {m['short_s'] * 1e3:>14.1f} {m['embed_s'] * 1e3:>14.1f} {m['forward_s'] * 1e3:>11.1f} "
                  f"{m['decode_step_s'] * 1e3:>15.2f}")
        s, v = res["scaling"], res["vs_one_thread_build"]
        print(f"{browser:<10} 2 threads / 1 thread: 1 sentence {s['embed_short']:.2f}x, 256 tokens {s['embed_256']:.2f}x "
              f"(its forward {s['forward_256']:.2f}x), decode step {s['decode_step']:.2f}x; vs the one-thread build: "
              f"{v['embed_short']:.2f}x, {v['embed_256']:.2f}x ({v['forward_256']:.2f}x), {v['decode_step']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--browsers", default="chromium,firefox")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=24, help="tokens generated per decode measurement (at least 3)")
    add_runs_argument(ap)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    runs: list[dict] = []
    with dev_server() as url, sync_playwright() as pw:
        for i in range(args.runs):
            print(f"run {i + 1} of {args.runs}", flush=True)
            # bench_browser launches its browser afresh: no run inherits another's pages, workers or compiled code
            runs.append({"browsers": {b: bench_browser(pw, b, url, args.reps, args.tokens)
                                      for b in args.browsers.split(",")}})
            print_run(runs[-1]["browsers"], i, args.runs)
            # written after every run: a later run that breaks leaves the earlier ones on disk
            section = across_runs([run_ratios(r["browsers"]) for r in runs], TARGETS, True, RATIO)
            path = write_result("page_threads", {"reps": args.reps, "tokens": args.tokens, "runs": runs,
                                                 "across_runs": section})
    print(draw_chart(Path(__file__).with_name("_threads_chart.py"), path, path.with_suffix(".png")))
    print()
    print(run_report(section, prefix="x"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
