"""Cold against warm start in Chromium: time to the first results of the whole kernel set.

Cold: a fresh browser profile (no IndexedDB manifest, no browser shader cache, no HTTP cache).
Baseline: a fresh profile with precompilation off, each pipeline compiled when first used.
Warm: the same profile reloaded: the manifest comes from IndexedDB and start-up precompiles every pipeline
with createComputePipelineAsync (`?precompile=await`) before the first op. Each figure is measured in the same run; the ratio cold/warm
is the point. Run: .venv/bin/python bench/precompile.py [--trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from _harness import CHROMIUM, CHROMIUM_ARGS, dev_server, write_result
from playwright.sync_api import sync_playwright

FIRST_RESULTS = """
import time
from gpuport.site.demo import kernel_table
report = await rt_precompile if "rt_precompile" in globals() else {"ms": 0.0, "pipelines": 0, "from_manifest": 0}
t1 = time.perf_counter()
rows = await kernel_table(rt, repeats=0)
{"precompile_ms": report["ms"], "first_results_ms": (time.perf_counter() - t1) * 1e3,
 "pipelines": report["pipelines"], "from_manifest": report["from_manifest"],
 "worst_err": max(r["max_abs_err"] for r in rows)}
"""


def one_load(page, url: str) -> dict:
    t0 = time.perf_counter()
    page.goto(url)
    timings = page.evaluate("async () => (await window.gpuportReady).timings")
    ready = time.perf_counter()
    result = page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", FIRST_RESULTS)
    done = time.perf_counter()
    return {"startup_ms": (ready - t0) * 1e3, "pyodide_total_ms": timings["total_ms"],
            "to_first_results_ms": (done - t0) * 1e3, **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    cold, warm, inline = [], [], []
    with dev_server() as base, sync_playwright() as p:
        url = base + "/?table=0&precompile=await"
        for trial in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="gpuport-profile-") as profile:
                ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = ctx.new_page()
                cold.append(one_load(page, url))
                warm.append(one_load(page, url))   # same profile: reload
                ctx.close()
            with tempfile.TemporaryDirectory(prefix="gpuport-profile-") as profile:
                # baseline: a fresh profile that compiles each pipeline on first use
                ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                inline.append(one_load(ctx.new_page(), base + "/?table=0&precompile=off"))
                ctx.close()
            print(f"trial {trial + 1}: cold {cold[-1]['to_first_results_ms']:.0f} ms "
                  f"(compile {cold[-1]['precompile_ms']:.0f}), warm {warm[-1]['to_first_results_ms']:.0f} ms "
                  f"(compile {warm[-1]['precompile_ms']:.0f}, from manifest {warm[-1]['from_manifest']})", flush=True)
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    summary = {k: {"cold_ms": round(med(cold, k), 1), "warm_ms": round(med(warm, k), 1),
                   "cold_over_warm": round(med(cold, k) / med(warm, k), 2)}
               for k in ("to_first_results_ms", "precompile_ms", "first_results_ms", "startup_ms")}
    summary["first_results_ms"]["compiled_on_first_use_ms"] = round(med(inline, "first_results_ms"), 1)
    summary["first_results_ms"]["first_use_over_precompiled"] = round(
        med(inline, "first_results_ms") / med(warm, "first_results_ms"), 2)
    assert all(r["from_manifest"] > 0 for r in warm), "warm loads did not read the manifest from IndexedDB"
    assert all(r["worst_err"] < 1e-3 for r in cold + warm)
    print("\nmedians over", args.trials, "trials (Chromium, SwiftShader):")
    for k, v in summary.items():
        print(f"  {k:<22} cold {v['cold_ms']:>8.1f} ms  warm {v['warm_ms']:>8.1f} ms  cold/warm {v['cold_over_warm']:.2f}x")
    f = summary["first_results_ms"]
    print(f"  first results without precompilation (compiled on first use): {f['compiled_on_first_use_ms']:.1f} ms,"
          f" {f['first_use_over_precompiled']:.2f}x the precompiled warm start")
    path = write_result("precompile_chromium", {"summary": summary, "cold": cold, "warm": warm,
                                                "compiled_on_first_use": inline})
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
