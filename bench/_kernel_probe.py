"""What bench/kernels.py measures on one runtime, natively or, as source, inside a page (only numpy and gpuport):
the device's roofs (an FMA microbenchmark, a read-reduce and a copy bandwidth microbenchmark) and every kernel's
GFLOP/s and GB/s, interleaved over rounds so the roofs and the kernels see the same machine.

Timing: each measurement grows a batch of dispatches ended by one awaited read until the batch takes at least
MIN_S (so a browser's readback latency is amortised), then takes the best of ROUNDS interleaved rounds. Ops
also run inside rt.profile(): where the adapter offers timestamp queries their device time is reported too.
"""

import time

import numpy as np
from gpuport.ops.kernels import RB_VARIANTS, shader_source

FMA_WGSL = """
struct P { n: u32, a: f32, _0: u32, _1: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> p: P;
// 8 independent vec4 FMA chains per invocation: no loads in the loop, so this is the FMA roof.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var x0 = vec4<f32>(f32(id.x) * 1e-6); var x1 = x0 + 1.0; var x2 = x0 + 2.0; var x3 = x0 + 3.0;
  var x4 = x0 + 4.0; var x5 = x0 + 5.0; var x6 = x0 + 6.0; var x7 = x0 + 7.0;
  let a = vec4<f32>(p.a);
  let b = vec4<f32>(0.5);
  for (var i = 0u; i < p.n; i++) {
    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);
    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);
  }
  out[id.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}
"""

READ_WGSL = """
struct P { per: u32, n4: u32, _0: u32, _1: u32 }
@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
// Read-reduce: workgroup w sums its contiguous chunk of per * 64 vec4, neighbouring invocations on
// neighbouring vec4 (per * 64 * workgroups == n4: every index is in range); 4 independent sums.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(global_invocation_id) id: vec3<u32>) {
  var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0); var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
  var i = wid.x * p.per * 64u + li;
  for (var r = 0u; r < p.per; r += 4u) {
    s0 += X[i]; s1 += X[i + 64u]; s2 += X[i + 128u]; s3 += X[i + 192u];
    i += 256u;
  }
  out[id.x] = s0 + s1 + s2 + s3;
}
"""

COPY_WGSL = """
struct P { n4: u32, _0: u32, _1: u32, _2: u32 }
@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> Y: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = id.y * nwg.x * 64u + id.x;
  if (i < p.n4) { Y[i] = X[i]; }
}
"""

MIN_S, ROUNDS = 0.25, 3
# MiniLM-L6 on 8 sentences of 16 tokens: 128 rows; its weights (out, in) as PyTorch stores them (transpose_b).
MATMULS = [(128, 384, 384), (128, 384, 1536), (128, 1536, 384)]
TOKENS, SEQ, HIDDEN, FFN, HEADS = 128, 16, 384, 1536, 12
# SmolLM2-135M decode: one token through its FFN up (1536 x 576) and down (576 x 1536) weights and the tied
# Q8_0 output head (49152 x 576).
QUANT = [("q4_1_matvec", "Q4_1", 1536, 576), ("q4_1_matvec", "Q4_1", 576, 1536), ("q8_0_matvec", "Q8_0", 49152, 576)]


async def timed(fn, read):
    """Seconds per call of fn() (it queues dispatches): a batch grown until it takes MIN_S and ten times the
    read's own latency (Firefox delivers readbacks on a ~100 ms poll), one read at the end, that latency
    (an empty read's, measured first) taken off."""
    fn()
    await read()
    lat = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        await read()
        lat = min(lat, time.perf_counter() - t0)
    want = max(MIN_S, 10 * lat)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        await read()
        s = time.perf_counter() - t0
        if s >= want or n >= 4096:
            return max(s - lat, 1e-9) / n
        n *= max(2, min(16, int(want / max(s, 1e-4)) + 1))


class Item:
    """One measured thing: its work (flops, bytes it must move) and how to run it."""

    def __init__(self, name, group, flops, nbytes, fn, read, op=None, note=""):
        self.name, self.group, self.flops, self.nbytes = name, group, flops, nbytes
        self.fn, self.read, self.op, self.note = fn, read, op, note
        self.best = float("inf")
        self.device_ms = None


def _reader(t):
    async def read():
        await t.read()
    return read


def roofs(rt, rng, big=False):
    """The roofs' three microbenchmarks. big: sized for a discrete GPU (a million FMA invocations, 128 MiB read
    by half a million: more than its L2 holds and enough work in flight to fill it); else for the software
    adapters and browsers (4 MiB, about a MiniLM weight and more)."""
    fma = rt.kernel(FMA_WGSL)
    fma_groups, iters = (16384 if big else 512), 1024
    threads = 64 * fma_groups
    fma_out = rt.empty((threads, 4))
    read = rt.kernel(READ_WGSL)
    n4 = min(1 << 23, rt.device.limits["maxStorageBufferBindingSize"] // 16) if big else 1 << 18
    x = rt.tensor(rng.standard_normal((n4, 4)).astype(np.float32))
    read_groups = 8192 if big else 256
    rthreads = 64 * read_groups
    red_out = rt.empty((rthreads, 4))
    copy = rt.kernel(COPY_WGSL)
    y = rt.empty((n4, 4))
    groups = n4 // 64
    gx = min(groups, 16384)
    return [
        Item("fma_peak", "roof", threads * iters * 8 * 4 * 2, 0,
             lambda: fma.dispatch((fma_groups, 1, 1), fma_out, uniforms=[iters, 0.999]), _reader(fma_out)),
        Item("read_bandwidth", "roof", 0, n4 * 16,
             lambda: read.dispatch((read_groups, 1, 1), x, red_out, uniforms=[n4 // rthreads, n4, 0, 0]), _reader(red_out)),
        Item("copy_bandwidth", "roof", 0, 2 * n4 * 16,
             lambda: copy.dispatch((gx, groups // gx, 1), x, y, uniforms=[n4, 0, 0, 0]), _reader(y)),
    ]


def kernels(rt, rng, variants=True):
    ops = rt.ops
    items = []
    for m, k, n in MATMULS:
        a = rt.tensor(rng.standard_normal((m, k)).astype(np.float32))
        w = rt.tensor((rng.standard_normal((n, k)) * 0.05).astype(np.float32))
        b = rt.tensor(np.zeros(n, np.float32))
        flops, nbytes = 2 * m * k * n, 4 * (m * k + n * k + n + m * n)
        kinds = ["tiled", "register-blocked"] if variants else ["default"]
        for kind in kinds:
            holder = {}

            def fn(a=a, w=w, b=b, kind=kind, holder=holder):
                planner = rt.placement.planner
                saved = dict(planner.matmul_choice)
                if kind == "tiled":
                    planner.matmul_choice.clear()
                try:
                    holder["y"] = ops.matmul(a, w, bias=b, transpose_b=True)
                finally:
                    planner.matmul_choice.clear()
                    planner.matmul_choice.update(saved)

            async def read(holder=holder):
                await holder["y"].read()
            label = "matmul" if kind == "default" else f"matmul[{kind}]"
            items.append(Item(f"{label} {m}x{k}x{n}", "matmul", flops, nbytes, fn, read, op="matmul"))
    x = rt.tensor(rng.standard_normal((TOKENS, FFN)).astype(np.float32))
    h = rt.tensor(rng.standard_normal((TOKENS, HIDDEN)).astype(np.float32))
    g, beta = rt.tensor(np.ones(HIDDEN, np.float32)), rt.tensor(np.zeros(HIDDEN, np.float32))
    batch = TOKENS // SEQ
    scores = rt.tensor(rng.standard_normal((batch, HEADS, SEQ, SEQ)).astype(np.float32))
    q, kk, v = (rt.tensor(rng.standard_normal((batch, SEQ, HIDDEN)).astype(np.float32)) for _ in range(3))
    mask = rt.tensor(np.zeros((batch, SEQ), np.float32))
    row = [
        # (name, flops (an exp or erf counted as one), bytes, op call)
        ("gelu 128x1536", TOKENS * FFN * 20, 8 * TOKENS * FFN, lambda: ops.gelu(x)),
        ("layer_norm 128x384", TOKENS * HIDDEN * 8, 8 * TOKENS * HIDDEN + 8 * HIDDEN, lambda: ops.layer_norm(h, g, beta)),
        ("softmax 8x12x16x16", scores.size * 5, 8 * scores.size, lambda: ops.softmax(scores)),
        ("attention 8x16x384 (12 heads)", 4 * batch * SEQ * SEQ * HIDDEN + 5 * batch * HEADS * SEQ * SEQ,
         16 * batch * SEQ * HIDDEN + 4 * batch * SEQ, lambda: ops.attention(q, kk, v, HEADS, mask=mask)),
    ]
    for name, flops, nbytes, call in row:
        holder = {}

        def fn(call=call, holder=holder):
            holder["y"] = call()

        async def read(holder=holder):
            await holder["y"].read()
        items.append(Item(name, "row-wise", flops, nbytes, fn, read, op=name.split()[0]))
    for shader, kind, n, k in QUANT:
        block_bytes = 20 if kind == "Q4_1" else 34
        nbytes_w = n * k // 32 * block_bytes
        words = rng.integers(0, 2 ** 16, (nbytes_w + 3) // 4, dtype=np.uint32)   # f16 scales stay finite
        wt = rt.tensor(words)
        xv = rt.tensor(rng.standard_normal(k).astype(np.float32))
        yv = rt.empty((n,))
        kern = rt.kernel(shader_source(f"{shader}.wgsl"))
        groups = -(-n // 32)   # 4 rows per lane group of 8 lanes, 64 invocations
        items.append(Item(f"{shader} {n}x{k}", "quantized", 2 * n * k, nbytes_w + 4 * (k + n),
                          lambda kern=kern, wt=wt, xv=xv, yv=yv, groups=groups, n=n, k=k: kern.dispatch(
                              (min(groups, 65535), -(-groups // 65535), 1), wt, xv, yv,
                              uniforms=[n, k, 0, 0, 0, 0, 0, 0]), _reader(yv)))
    return items


def flops_per_load(key):
    """FLOPs per vec4 load a register-blocked variant issues (its load roof is this times the load rate)."""
    b = RB_VARIANTS[key]
    return 8 * b.rows * b.cols / (b.rows + b.cols) if b.layout == "tb" else 32 * b.rows * b.cols / (b.rows + 4 * b.cols)


async def run(rt, quick=False, big=False):
    """Measure the roofs (sized for a discrete GPU where `big`) and every kernel on `rt`; returns plain data
    (JSON-able)."""
    global MIN_S, ROUNDS
    if quick:
        MIN_S, ROUNDS = 0.1, 2
    rng = np.random.default_rng(0)
    tuning = await rt.precompile(ops=["matmul"])
    items = roofs(rt, rng, big) + kernels(rt, rng)
    for _ in range(ROUNDS):
        for it in items:
            it.best = min(it.best, await timed(it.fn, it.read))
    if rt.device.timestamps:
        for it in items:
            if it.op is None:
                continue
            with rt.profile() as prof:
                it.fn()
                await it.read()
            entry = prof.report()["by_op"].get(it.op) or {}
            it.device_ms = entry.get("device_ms") or None
    info = rt.info()
    peak = next(it for it in items if it.name == "fma_peak")
    bw = next(it for it in items if it.name == "read_bandwidth")
    fma_gflops = peak.flops / peak.best / 1e9
    read_gbs = bw.nbytes / bw.best / 1e9
    rows = []
    for it in items:
        s = it.best
        dev_s = it.device_ms / 1e3 if it.device_ms else None
        gflops = it.flops / s / 1e9
        gbs = it.nbytes / s / 1e9
        row = {"name": it.name, "group": it.group, "ms": round(s * 1e3, 4), "gflops": round(gflops, 3),
               "gbs": round(gbs, 3), "fma_fraction": round(gflops / fma_gflops, 4),
               "read_bw_fraction": round(gbs / read_gbs, 4),
               "device_ms": None if dev_s is None else round(dev_s * 1e3, 4)}
        if it.name.startswith("matmul[register-blocked]"):
            key = rt.placement.planner.matmul_choice["tb"]
            # load roof: the measured vec4 load rate times the FLOPs the chosen variant does per vec4 load
            load_roof = read_gbs / 16 * flops_per_load(key)
            row.update(variant=key, load_roof_gflops=round(load_roof, 3),
                       load_roof_fraction=round(gflops / load_roof, 4))
        rows.append(row)
    return {"backend": info["backend"], "tier": info["tier"], "adapter": info.get("adapter"),
            "browser": info.get("browser"), "timestamps": bool(rt.device.timestamps),
            "fma_gflops": round(fma_gflops, 3), "read_gbs": round(read_gbs, 3),
            "tuning": tuning.get("tuning"), "matmul_choice": dict(rt.placement.planner.matmul_choice),
            "min_s": MIN_S, "rounds": ROUNDS, "rows": rows}
