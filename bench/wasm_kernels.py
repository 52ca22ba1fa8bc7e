"""The page's WebAssembly SIMD kernels against NumPy (WebAssembly, no BLAS) in the same page, interleaved.

In Chromium and then Firefox (one browser at a time; Pyodide in the page's Web Worker, backend=cpu):
- matmul on MiniLM's shapes (M rows in {12, 96, 256}: one 12-token sentence, 8 of them, one 256-token
  text; K x N in {384x384, 384x1536, 1536x384}; weights in PyTorch's (out, in) layout, transpose_b, with
  bias): GFLOP/s of the wasm kernel with its packed weight cached (the model's steady state), of the wasm
  kernel packing the weight on every call, and of NumPy;
- ms per call of gelu, layer_norm, softmax (with a (B, 1, 1, S) mask) and attention at those sizes;
- a whole MiniLM-L6 encoder forward (6 layers, random weights of the real shapes, embeddings lookup and
  pooling left out) built from these ops, all-wasm against all-NumPy: what the cpu path would cost;
- the two builds of the kernels against each other (web/gpuport_simd.wasm, SIMD128, and
  web/gpuport_simd_relaxed.wasm, relaxed SIMD: FMAs), each instantiated in the same page with a memory of
  its own, gp_matmul_packed on MiniLM's shapes, interleaved: GFLOP/s of each and relaxed / SIMD128.

Every figure is a median over interleaved repeats (gpuport.host.wasm_kernels.measure); compare ratios within a
run. Run: flock /tmp/gpuport-heavy.lock .venv/bin/python bench/wasm_kernels.py [--browser chromium|firefox]
[--quick]. JSON: bench/results/wasm_kernels.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import CHROMIUM, CHROMIUM_ARGS, dev_server, write_result  # noqa: E402

FIREFOX = "/usr/bin/firefox-esr"
FIREFOX_PREFS = {"app.update.enabled": False, "browser.shell.checkDefaultBrowser": False,
                 "datareporting.policy.dataSubmissionEnabled": False,
                 "toolkit.telemetry.reportingpolicy.firstRun": False}

IN_PAGE = """
import math, numpy as np
from gpuport.host import references as K, wasm_kernels as W
assert W.available(), W.reason()
R, MIN_S = {repeats}, {min_s}
rng = np.random.default_rng(0)
WORKLOADS = {{"1 sentence": (1, 12), "8 sentences": (8, 12), "256 tokens": (1, 256)}}

def frozen(*shape, scale=0.05):
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    x.flags.writeable = False   # immutable: the wasm matmul caches its packed panels
    return x

matmul = []
for m in (12, 96, 256):
    for k, n in ((384, 384), (384, 1536), (1536, 384)):
        a = rng.standard_normal((1, m, k)).astype(np.float32)
        w, b = frozen(n, k), frozen(n)
        w_rw, b_rw = w.copy(), b.copy()
        res = W.measure("matmul", repeats=R, min_s=MIN_S, candidates={{
            "wasm": lambda: W.matmul(a, w, b, transpose_b=True),
            "wasm_pack_each_call": lambda: W.matmul(a, w_rw, b_rw, transpose_b=True),
            "numpy": lambda: K.matmul_ref(a, w, b, transpose_b=True)}})
        flop = 2.0 * m * k * n
        res.update(m=m, k=k, n=n, gflops={{c: flop / res[c + "_ms"] / 1e6 for c in ("wasm", "wasm_pack_each_call", "numpy")}})
        matmul.append(res)

rowwise = []
for label, (bsz, s) in WORKLOADS.items():
    rows = bsz * s
    x384 = rng.standard_normal((1, rows, 384)).astype(np.float32)
    x1536 = rng.standard_normal((1, rows, 1536)).astype(np.float32)
    g, beta = frozen(384, scale=1.0), frozen(384, scale=1.0)
    key_mask = np.zeros((bsz, s), np.float32)
    key_mask[:, s - s // 4:] = -1e9
    scores = rng.standard_normal((bsz, 12, s, s)).astype(np.float32)
    q, kk, v = (rng.standard_normal((bsz, s, 384)).astype(np.float32) for _ in range(3))
    for op, args, kw in (("gelu", (x1536,), {{}}), ("layer_norm", (x384, g, beta), {{"eps": 1e-12}}),
                         ("softmax", (scores, key_mask[:, None, None, :]), {{}}),
                         ("attention", (q, kk, v, key_mask), {{"num_heads": 12}})):
        res = W.measure(op, *args, repeats=R, min_s=MIN_S, **kw)
        res["workload"] = label
        rowwise.append(res)

layers = [dict(wq=frozen(384, 384), bq=frozen(384), wk=frozen(384, 384), bk=frozen(384), wv=frozen(384, 384),
               bv=frozen(384), wo=frozen(384, 384), bo=frozen(384), g1=frozen(384, scale=1.0), b1=frozen(384),
               wi=frozen(1536, 384), bi=frozen(1536), wo2=frozen(384, 1536), bo2=frozen(384),
               g2=frozen(384, scale=1.0), b2=frozen(384)) for _ in range(6)]

def forward(ops, x, mask, bsz, s):
    def lin(t, w, b):
        return ops["matmul"](t, w, b, transpose_b=True)
    for L in layers:
        qh, kh, vh = (lin(x, L[w], L[b]).reshape(bsz, s, 384) for w, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
        att = ops["attention"](qh, kh, vh, mask, num_heads=12).reshape(1, bsz * s, 384)
        x = ops["layer_norm"](lin(att, L["wo"], L["bo"]) + x, L["g1"], L["b1"], eps=1e-12)
        f = ops["gelu"](lin(x, L["wi"], L["bi"]))
        x = ops["layer_norm"](lin(f, L["wo2"], L["bo2"]) + x, L["g2"], L["b2"], eps=1e-12)
    return x

def stacked(*parts):
    out = np.concatenate(parts)
    out.flags.writeable = False
    return out

fused_layers = [K.EncoderLayer(wqkv=stacked(L["wq"], L["wk"], L["wv"]), bqkv=stacked(L["bq"], L["bk"], L["bv"]),
                               wo=L["wo"], bo=L["bo"], ln1_g=L["g1"], ln1_b=L["b1"], wi=L["wi"], bi=L["bi"],
                               wo2=L["wo2"], bo2=L["bo2"], ln2_g=L["g2"], ln2_b=L["b2"]) for L in layers]

def forward_fused(x, mask, bsz, s):   # what MiniLM's host forward runs in a page: one kernel call per layer
    x = x.reshape(bsz, s, 384)
    for L in fused_layers:
        x = W.ENGINE.encoder_layer(x, L, mask, num_heads=12, eps=1e-12)[0]
    return x.reshape(1, bsz * s, 384)

model = []
for label, (bsz, s) in WORKLOADS.items():
    x = rng.standard_normal((1, bsz * s, 384)).astype(np.float32)
    mask = np.zeros((bsz, s), np.float32)
    want = forward(W.REFERENCES, x, mask, bsz, s)
    err = float(np.abs(forward(W.OPS, x, mask, bsz, s) - want).max())
    err_fused = float(np.abs(forward_fused(x, mask, bsz, s) - want).max())
    res = W.measure("forward", repeats=R, min_s=0.0, candidates={{
        "wasm_fused": lambda: forward_fused(x, mask, bsz, s), "wasm": lambda: forward(W.OPS, x, mask, bsz, s),
        "numpy": lambda: forward(W.REFERENCES, x, mask, bsz, s)}})
    res.update(workload=label, tokens=bsz * s, max_abs_diff=err, max_abs_diff_fused=err_fused)
    model.append(res)

import sys
{{"matmul": matmul, "rowwise": rowwise, "model": model, "python": sys.version.split()[0], "numpy": np.__version__}}
"""

USER_AGENT = "async () => navigator.userAgent"

# In the page's main thread: both builds of the kernels, each linked against a memory of its own (no Pyodide),
# gp_matmul_packed on a packed (out, in) weight, 9 interleaved windows of 60 ms per build and shape.
BUILDS = """async () => {
  const shapes = [[12, 384, 1152], [12, 384, 1536], [12, 1536, 384], [256, 384, 1536], [256, 1536, 384]];
  const inst = {};
  for (const [name, file] of [["simd128", "gpuport_simd.wasm"], ["relaxed-simd", "gpuport_simd_relaxed.wasm"]]) {
    const bytes = await (await fetch(file)).arrayBuffer();
    if (!WebAssembly.validate(bytes)) continue;   // an engine without relaxed SIMD: the plain build only
    const memory = new WebAssembly.Memory({initial: 1600});
    const g = (v) => new WebAssembly.Global({value: "i32", mutable: false}, v);
    const env = {memory, __memory_base: g(0), __table_base: g(0),
                 __indirect_function_table: new WebAssembly.Table({initial: 0, element: "anyfunc"})};
    const {instance} = await WebAssembly.instantiate(bytes, {env});
    const f = new Float32Array(memory.buffer);
    for (let i = 0; i < f.length; i++) f[i] = ((i * 7919) % 1000) / 1000 - 0.5;
    inst[name] = instance.exports;
  }
  const out = [];
  for (const [M, K, N] of shapes) {
    const A = 1024, B = A + 4 * M * K + 64, P = B + 4 * K * N + 64;
    const gflops = {};
    for (const [name, e] of Object.entries(inst)) {
      e.gp_pack_b(B, K, N, 1, 0, P);
      gflops[name] = [];
    }
    for (let r = 0; r < 9; r++) for (const [name, e] of Object.entries(inst)) {
      const C = P + 4 * e.gp_packed_size(K, N) + 64;
      let calls = 0, t;
      const t0 = performance.now();
      do { e.gp_matmul_packed(A, M, K, K, P, N, C, N); calls++; t = performance.now() - t0; } while (t < 60);
      gflops[name].push(2 * M * K * N * calls / (t * 1e6));
    }
    const row = {m: M, k: K, n: N};
    for (const [name, v] of Object.entries(gflops)) row[name] = v.sort((a, b) => a - b)[4];
    out.push(row);
  }
  return out;
}"""


def launch(playwright, browser: str):
    if browser == "chromium":
        return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return playwright.firefox.launch(channel="moz-firefox", executable_path=FIREFOX, firefox_user_prefs=FIREFOX_PREFS)


def run_browser(playwright, url: str, browser: str, repeats: int, min_s: float) -> dict:
    b = launch(playwright, browser)
    try:
        page = b.new_page()
        page.goto(url + "/?backend=cpu&table=0&precompile=off")
        page.wait_for_function("() => window.gpuportReady !== undefined", timeout=60_000)
        t0 = time.monotonic()
        data = page.evaluate("async (src) => (await window.gpuportReady).runPython(src)",
                             IN_PAGE.format(repeats=repeats, min_s=min_s))
        data.update(browser=browser, version=b.version, user_agent=page.evaluate(USER_AGENT),
                    builds=page.evaluate(BUILDS), wall_s=round(time.monotonic() - t0, 1))
        return data
    finally:
        b.close()


def report(data: dict) -> None:
    print(f"\n## {data['browser']} {data['version']} (Pyodide {data['python']}, NumPy {data['numpy']}; "
          f"{data['wall_s']} s)\n")
    print("matmul, transpose_b + bias   GFLOP/s: wasm (cached pack) | wasm (pack each call) | NumPy | wasm/NumPy")
    for r in data["matmul"]:
        g = r["gflops"]
        print(f"  {r['m']:4d} x {r['k']:4d} x {r['n']:4d}   {g['wasm']:7.1f} | {g['wasm_pack_each_call']:7.1f} | "
              f"{g['numpy']:6.2f} | {g['wasm'] / g['numpy']:6.1f}x")
    print("\nrow-wise ops   ms: wasm | NumPy | NumPy/wasm")
    for r in data["rowwise"]:
        print(f"  {r['op']:10} {r['workload']:12} {str(r['shapes'][0]):18} {r['wasm_ms']:9.3f} | {r['numpy_ms']:9.3f} | "
              f"{r['numpy_ms'] / r['wasm_ms']:6.1f}x")
    print("\nthe two builds, gp_matmul_packed   GFLOP/s: SIMD128 | relaxed SIMD | relaxed/SIMD128")
    for r in data["builds"]:
        relaxed = r.get("relaxed-simd")
        print(f"  {r['m']:4d} x {r['k']:4d} x {r['n']:4d}   {r['simd128']:7.1f} | "
              + (f"{relaxed:7.1f} | {relaxed / r['simd128']:5.2f}x" if relaxed else "  (no relaxed SIMD here)"))
    print("\nMiniLM-L6 encoder forward (6 layers)   ms: one call per layer | op by op | NumPy | op by op / one call"
          " | NumPy / one call  (max |wasm - NumPy|: one call, op by op)")
    for r in data["model"]:
        print(f"  {r['workload']:12} {r['tokens']:4d} tokens {r['wasm_fused_ms']:9.1f} | {r['wasm_ms']:9.1f} | "
              f"{r['numpy_ms']:9.1f} | {r['wasm_ms'] / r['wasm_fused_ms']:5.2f}x | {r['numpy_ms'] / r['wasm_fused_ms']:6.1f}x"
              f"   ({r['max_abs_diff_fused']:.1e}, {r['max_abs_diff']:.1e})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--browser", choices=("chromium", "firefox", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="3 repeats of 10 ms windows instead of 5 of 30 ms")
    args = ap.parse_args(argv)
    repeats, min_s = (3, 0.01) if args.quick else (5, 0.03)
    from playwright.sync_api import sync_playwright

    browsers = ("chromium", "firefox") if args.browser == "both" else (args.browser,)
    results = []
    with dev_server() as url, sync_playwright() as pw:
        for browser in browsers:
            results.append(run_browser(pw, url, browser, repeats, min_s))
            report(results[-1])
    path = write_result("wasm_kernels", {"repeats": repeats, "min_window_s": min_s, "browsers": results})
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
