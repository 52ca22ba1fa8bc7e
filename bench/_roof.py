"""WebAssembly's fused multiply-add roof, measured in a bench's own page in the same run as what it is compared
with (bench/roof.c, built by `make bench-setup`): GFLOP/s on 1 and on N threads, each thread a Web Worker
running the module's loop, all N at once. A page's host kernels run on at most this; bench/vision.py reports its
tower's GFLOP/s as a fraction of it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

ROOF_WASM = "fma_roof.wasm"
VARIANTS = (12, 16, 24)   # accumulators per loop step (bench/roof.c); the fastest one is the roof
ITERATIONS = 100_000      # loop steps per call: about 0.2 ms at the roof, so a window's clock reads cost nothing

# Workers from a blob: each instantiates the compiled module it is sent, then on "go" calls fma_roof_<acc> for
# `ms` and answers with how many calls it made and how long they took. All of a measurement's workers are ready
# before any starts, so the N threads run at once.
ROOF_JS = """async ({ b64, threads, variants, iterations, ms, windows }) => {
  const module = await WebAssembly.compile(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  const source = `onmessage = async ({ data }) => {
    const exports = (await WebAssembly.instantiate(data.module)).exports;
    onmessage = ({ data: go }) => {
      const f = exports["fma_roof_" + go.acc];
      f(go.iterations);
      const t0 = performance.now();
      let calls = 0;
      while (performance.now() - t0 < go.ms) { f(go.iterations); calls++; }
      postMessage({ calls, ms: performance.now() - t0 });
    };
    postMessage("ready");
  };`;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const answer = (w) => new Promise((resolve) => { w.onmessage = ({ data }) => resolve(data); });
  const workers = [];
  try {
    for (let i = 0; i < Math.max(...threads); i++) {
      const w = new Worker(url);
      const ready = answer(w);
      w.postMessage({ module });
      await ready;
      workers.push(w);
    }
    const rate = async (n, acc) => {   // GFLOP/s of n threads at once: the best of `windows` windows
      let best = 0;
      for (let k = 0; k < windows; k++) {
        const got = await Promise.all(workers.slice(0, n).map((w) => {
          const answered = answer(w);
          w.postMessage({ acc, iterations, ms });
          return answered;
        }));
        best = Math.max(best, got.reduce((s, r) => s + (r.calls * iterations * acc * 8) / (r.ms * 1e6), 0));
      }
      return best;
    };
    const one = {};
    for (const acc of variants) one[acc] = await rate(1, acc);
    const acc = variants.reduce((a, b) => (one[b] > one[a] ? b : a));
    const out = { accumulators: acc, one_thread_by_accumulators: one, gflops: {} };
    for (const n of threads) out.gflops[n] = n === 1 ? one[acc] : await rate(n, acc);
    return out;
  } finally {
    for (const w of workers) w.terminate();
    URL.revokeObjectURL(url);
  }
}"""


def wasm_roof(page: Any, bench_dir: Path, threads: tuple[int, ...] = (1, 2), ms: int = 250,
              windows: int = 3) -> dict[str, Any]:
    """The roof in Playwright `page` (any page of the browser under test): {"accumulators", "gflops": {threads:
    GFLOP/s}, "one_thread_by_accumulators"}."""
    b64 = base64.b64encode((bench_dir / ROOF_WASM).read_bytes()).decode()
    got = page.evaluate(ROOF_JS, {"b64": b64, "threads": list(threads), "variants": list(VARIANTS),
                                  "iterations": ITERATIONS, "ms": ms, "windows": windows})
    got["gflops"] = {int(n): round(g, 1) for n, g in got["gflops"].items()}
    got["one_thread_by_accumulators"] = {int(a): round(g, 1) for a, g in got["one_thread_by_accumulators"].items()}
    return got


def encoder_flops(rows: int, sequences: int, seq: int, hidden: int, ffn: int, layers: int, last_rows: int) -> int:
    """Multiply-adds x 2 of a pre-norm encoder's products and attention (norms and activations left out: they are
    not multiply-adds). `rows` = sequences x seq; the last layer makes its QKV product for every row, and its
    attention, output projection and MLP for `last_rows` rows only (gpuport's towers keep the class or pooled
    token's)."""
    per_row = 2 * hidden * 3 * hidden + 2 * hidden * hidden + 2 * 2 * hidden * ffn
    attention = 2 * 2 * sequences * seq * seq * hidden   # QK^T and AV
    full = (layers - 1) * (rows * per_row + attention)
    kept = 2 * hidden * hidden + 2 * 2 * hidden * ffn + 2 * 2 * seq * hidden
    return full + rows * 2 * hidden * 3 * hidden + last_rows * kept


def vision_tower_flops(images: int, *, keep_all_rows: bool = False, image_size: int = 224, patch: int = 32,
                       channels: int = 3, hidden: int = 768, ffn: int = 3072, layers: int = 12,
                       projection: int = 512) -> int:
    """FLOPs of a vision tower for `images` (CLIP ViT-B/32 by default): the patch product over every token row (the
    class rows are zero rows of it), the encoder, the projection. gpuport's last layer keeps each image's class
    token only; `keep_all_rows`: every row through it, as the exported model (transformers.js's) computes it."""
    seq = (image_size // patch) ** 2 + 1
    rows = images * seq
    patch_product = 2 * rows * channels * patch * patch * hidden
    kept = rows if keep_all_rows else images
    encoder = encoder_flops(rows, images, seq, hidden, ffn, layers, kept)
    return patch_product + encoder + 2 * images * hidden * projection
