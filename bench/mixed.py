"""A mixed workload natively under backend="auto" vs always-GPU vs always-CPU vs the per-op oracle (the best
fixed backend for each item of the workload, measured in the same run). Prints auto/oracle (target
<= 1.15) and auto/always-GPU (target < 1). Every item ends with a read, in every mode.

    python bench/mixed.py [--repeats 5] [--no-model]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpuport as gp  # noqa: E402
from _harness import write_result  # noqa: E402

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "WebGPU runs compute shaders in the browser.",
             "NumPy is fast on small matrices.", "Device loss must never give a wrong answer."]


def build(rt, model):
    r = np.random.default_rng(0)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    sa, sb = rt.tensor(f(32, 64)), rt.tensor(f(64, 32))
    la, lb = rt.tensor(f(384, 384)), rt.tensor(f(384, 384))
    ex, ey = rt.tensor(f(256, 384)), rt.tensor(f(256, 384))
    vx = rt.tensor(f(4096))
    items = {
        "small_matmul x10": lambda: [rt.ops.matmul(sa, sb).numpy() for _ in range(10)][-1],
        "large_matmul 384": lambda: rt.ops.matmul(la, lb).numpy(),
        "elementwise 256x384": lambda: rt.ops.gelu(rt.ops.add(rt.ops.scale(ex, 0.5, 1.0), ey)).numpy(),
        "softmax+layer_norm": lambda: rt.ops.softmax(ex).numpy(),
        "vector ops 4096 x5": lambda: [rt.ops.mul(rt.ops.add(vx, vx), vx).numpy() for _ in range(5)][-1],
    }
    if model is not None:
        items["minilm embed x4"] = lambda: asyncio.run(model.embed(SENTENCES))
    return items


def open_mode(mode: str):
    return gp.open_sync(backend={"always-gpu": "webgpu", "always-cpu": "cpu"}.get(mode, "auto"))


def load_model(rt):
    try:
        return asyncio.run(gp.models.load("minilm-l6-v2", rt))
    except Exception as exc:  # noqa: BLE001 - the model is optional for this bench
        print(f"(MiniLM not loaded: {type(exc).__name__}: {exc})")
        return None


def time_items(items, repeats: int) -> dict[str, float]:
    out = {}
    for name, fn in items.items():
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        out[name] = statistics.median(samples)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    times: dict[str, dict[str, float]] = {}
    results_ok = {}
    ref = None
    for mode in ("always-cpu", "always-gpu", "auto"):
        rt = open_mode(mode)
        try:
            model = None if args.no_model else load_model(rt)
            items = build(rt, model)
            warm = args.warmup if mode == "auto" else 1   # auto: let the selector finish exploring
            for _ in range(warm):
                for fn in items.values():
                    fn()
            outs = {k: fn() for k, fn in items.items()}
            if ref is None:
                ref = outs
            results_ok[mode] = all(np.allclose(outs[k], ref[k], rtol=1e-3, atol=1e-3) for k in outs)
            times[mode] = time_items(items, args.repeats)
            if mode == "auto":
                chosen = rt.info()["selection"]["counts"]
        finally:
            rt.close()
    names = list(times["auto"])
    oracle = {k: min(times["always-cpu"][k], times["always-gpu"][k]) for k in names}
    total = {m: sum(t.values()) for m, t in times.items()}
    total["oracle"] = sum(oracle.values())
    print(f"{'item':24s} {'cpu ms':>10s} {'gpu ms':>10s} {'auto ms':>10s} {'oracle':>8s}")
    for k in names:
        best = "cpu" if times["always-cpu"][k] <= times["always-gpu"][k] else "gpu"
        print(f"{k:24s} {times['always-cpu'][k] * 1e3:10.2f} {times['always-gpu'][k] * 1e3:10.2f} "
              f"{times['auto'][k] * 1e3:10.2f} {best:>8s}")
    print(f"{'TOTAL':24s} {total['always-cpu'] * 1e3:10.2f} {total['always-gpu'] * 1e3:10.2f} "
          f"{total['auto'] * 1e3:10.2f} {total['oracle'] * 1e3:8.2f}")
    r_oracle = total["auto"] / total["oracle"]
    r_gpu = total["auto"] / total["always-gpu"]
    print(f"auto/oracle     = {r_oracle:.3f}  (target <= 1.15: {'PASS' if r_oracle <= 1.15 else 'FAIL'})")
    print(f"auto/always-GPU = {r_gpu:.4f}  (target < 1: {'PASS' if r_gpu < 1 else 'FAIL'})")
    print(f"results agree across modes: {results_ok}")
    print(f"auto's choices (op: backend counts, incl. warm-up): {chosen}")
    path = write_result("mixed", {
        "ms": {m: {k: round(v * 1e3, 3) for k, v in t.items()} for m, t in times.items()},
        "oracle_ms": {k: round(v * 1e3, 3) for k, v in oracle.items()},
        "total_ms": {k: round(v * 1e3, 3) for k, v in total.items()},
        "auto_over_oracle": round(r_oracle, 4), "auto_over_always_gpu": round(r_gpu, 5),
        "targets": {"auto_over_oracle": 1.15, "auto_over_always_gpu": 1.0},
        "results_agree": results_ok, "auto_choices": chosen, "repeats": args.repeats, "warmup": args.warmup})
    print("wrote", path)


if __name__ == "__main__":
    main()
