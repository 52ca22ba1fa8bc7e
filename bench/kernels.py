"""Every GPU kernel as a fraction of the device's own roofs, measured in the same run: natively (wgpu-py on
lavapipe) and in Chromium (WebGPU on SwiftShader) and Firefox (WebGPU on lavapipe).

In each lane (one at a time; the page's Pyodide in its Web Worker, backend=webgpu) bench/_kernel_probe.py
measures, interleaved over rounds: the FMA peak (8 independent vec4 FMA chains per invocation, no loads),
the read bandwidth (a read-reduce over 16 MiB, neighbouring invocations on neighbouring vec4) and a copy;
then matmul on MiniLM's shapes (8 sentences x 16 tokens = 128 rows; 384x384, 384x1536, 1536x384; weights
(out, in) with bias) with the tiled kernel (before) and the register-blocked variant chosen by measurement
at precompile (after), gelu, layer_norm, softmax, attention, and the quantized q4_1/q8_0 matvec kernels on
SmolLM2's decode shapes. Each kernel's GFLOP/s and GB/s (the bytes it must move) are divided by the FMA peak
and the read bandwidth; the register-blocked matmul also by its load roof (the measured vec4 load rate times
the FLOPs it does per vec4 load it issues: on software adapters loads, not FMAs, are the roof).

Run: flock /tmp/gpuport-heavy.lock .venv/bin/python bench/kernels.py [--lanes native,chromium,firefox] [--quick]
JSON: bench/results/kernels.json; PNG: bench/results/kernels.png (matplotlib: this python's, else the bench venv's
.cache/bench/venv from `make bench-setup`; without either the PNG is skipped and the message says so).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    RESULTS,
    dev_server,
    draw_chart,
    write_result,
)

HERE = Path(__file__).resolve().parent
PROBE = HERE / "_kernel_probe.py"
CHART = HERE / "_kernels_chart.py"
FIREFOX = "/usr/bin/firefox-esr"
FIREFOX_PREFS = {"dom.webgpu.enabled": True, "gfx.webgpu.ignore-blocklist": True, "app.update.enabled": False,
                 "browser.shell.checkDefaultBrowser": False, "datareporting.policy.dataSubmissionEnabled": False,
                 "toolkit.telemetry.reportingpolicy.firstRun": False}
LANES = ("native", "chromium", "firefox")


def run_native(quick: bool) -> dict:
    import _kernel_probe
    import gpuport as gp

    async def go():
        rt = await gp.open(backend="webgpu")
        try:
            return await _kernel_probe.run(rt, quick)
        finally:
            rt.close()
    data = asyncio.run(go())
    data["lane"] = "native"
    return data


def run_browser(pw, url: str, lane: str, quick: bool) -> dict:
    if lane == "chromium":
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    else:
        browser = pw.firefox.launch(channel="moz-firefox", executable_path=FIREFOX, firefox_user_prefs=FIREFOX_PREFS)
    try:
        page = browser.new_page()
        page.goto(url + "/?backend=webgpu&table=0&precompile=off")
        page.wait_for_function("() => window.gpuportReady !== undefined", timeout=120_000)
        src = PROBE.read_text() + f"\nawait run(rt, {quick})\n"
        t0 = time.monotonic()
        data = page.evaluate("async (src) => (await window.gpuportReady).runPython(src)", src)
        data.update(lane=lane, version=browser.version, wall_s=round(time.monotonic() - t0, 1))
        return data
    finally:
        browser.close()


def report(data: dict) -> None:
    print(f"\n## {data['lane']}: {data['backend']} ({data['tier']}), {adapter_name(data)}; device time from "
          f"{'timestamp queries and ' if data['timestamps'] else ''}wall time over batches ended by a read")
    print(f"roofs: FMA peak {data['fma_gflops']:.2f} GFLOP/s, read bandwidth {data['read_gbs']:.2f} GB/s; matmul "
          f"variant chosen here: {data['matmul_choice']}\n")
    print(f"  {'kernel':42} {'ms':>9} {'GFLOP/s':>8} {'GB/s':>7} {'of FMA':>7} {'of read':>8} {'of load roof':>12}")
    for r in data["rows"]:
        lr = f"{r['load_roof_fraction']:12.1%}" if "load_roof_fraction" in r else f"{'':12}"
        print(f"  {r['name']:42} {r['ms']:9.3f} {r['gflops']:8.2f} {r['gbs']:7.2f} {r['fma_fraction']:7.1%} "
              f"{r['read_bw_fraction']:8.1%} {lr}")


def adapter_name(data: dict) -> str:
    a = data.get("adapter") or {}
    return " / ".join(str(a[k]) for k in ("vendor", "device", "description") if a.get(k)) or "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", default=",".join(LANES), help="comma-separated: native, chromium, firefox")
    ap.add_argument("--quick", action="store_true", help="shorter batches (0.1 s) and 2 rounds instead of 0.25 s x 3")
    args = ap.parse_args(argv)
    lanes = [x for x in args.lanes.split(",") if x]
    unknown = set(lanes) - set(LANES)
    if unknown:
        ap.error(f"unknown lanes {sorted(unknown)}; known: {', '.join(LANES)}")
    results: list[dict] = []

    def done(data: dict) -> Path:   # written after every lane: a lane that fails later loses nothing
        results.append(data)
        report(data)
        return write_result("kernels", {"quick": args.quick, "lanes": results})

    path = done(run_native(args.quick)) if "native" in lanes else RESULTS / "kernels.json"
    browsers = [x for x in lanes if x != "native"]
    if browsers:
        from playwright.sync_api import sync_playwright
        with dev_server() as url, sync_playwright() as pw:
            for lane in browsers:
                path = done(run_browser(pw, url, lane, args.quick))
    print(f"\nJSON: {path}")
    print(draw_chart(CHART, path, RESULTS / "kernels.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
