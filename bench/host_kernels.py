"""gpuport's native C host kernels (gpuport.host.native_kernels: hostkernels/*.c built for this machine) against the
NumPy host kernels they replace (gpuport.host.hostops.*_np: BLAS matmul, blocked float32 element-wise code),
per op on MiniLM-L6's shapes (hidden 384, intermediate 1536, 12 heads; 12, 100 and 256 tokens, and 8
sentences of 12), in this process, interleaved (simd_ops.measure: median of repeats).

- matmul: A (M, K) against a read-only (out, in) weight with bias, transpose_b, as MiniLM's linear layers
  (the C kernel's packed panels cached: the model's steady state); M from 1 to 256;
- gelu (M, 1536), layer_norm (M, 384), softmax (1, 12, S, S) with a (1, 1, 1, S) mask, attention
  (B, S, 384) 12 heads with a key mask; S from 12 to 256 for attention to place its key threshold.

These numbers set hostops' native routing (_native_takes). BLAS threads come from the environment: run it
at 1 and at 2 threads. Run:
  flock /tmp/gpuport-heavy.lock env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=py \\
      .venv/bin/python bench/host_kernels.py [--quick]
JSON: bench/results/host_kernels_<threads>t.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import write_result  # noqa: E402
from gpuport.host import hostops as H  # noqa: E402
from gpuport.host import native_kernels as N  # noqa: E402
from gpuport.host.simd_ops import measure  # noqa: E402

HIDDEN, INTER, HEADS = 384, 1536, 12
MATMUL_ROWS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
MATMUL_KN = ((384, 1152), (384, 384), (384, 1536), (1536, 384))   # qkv fused, out, intermediate, output
ROWWISE_ROWS = (12, 96, 100, 256)
ATTENTION = ((1, 12), (8, 12), (1, 64), (1, 100), (1, 128), (1, 160), (1, 192), (1, 256))


def frozen(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    x.flags.writeable = False   # immutable: the C matmul caches its packed panels, as for a model's weights
    return x


def cases(rng: np.random.Generator, quick: bool) -> list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]:
    """(op, label, args, kwargs) for every measurement."""
    out = []
    rows = (1, 12, 48, 256) if quick else MATMUL_ROWS
    for k, n in MATMUL_KN:
        w, b = frozen(rng, n, k), frozen(rng, n)
        for m in rows:
            out.append(("matmul", f"{m}x{k}x{n}", (rng.standard_normal((m, k)).astype(np.float32), w, b),
                        {"transpose_b": True}))
    g, beta = frozen(rng, HIDDEN), frozen(rng, HIDDEN)
    for m in ROWWISE_ROWS:
        out.append(("gelu", f"{m}x{INTER}", (rng.standard_normal((m, INTER)).astype(np.float32),), {}))
        out.append(("layer_norm", f"{m}x{HIDDEN}", (rng.standard_normal((m, HIDDEN)).astype(np.float32), g, beta),
                    {"eps": 1e-12}))
    for bsz, s in ATTENTION:
        mask = np.zeros((bsz, s), np.float32)
        mask[:, s - s // 4:] = -1e9   # a padded quarter, as a batch of unequal sentences has
        scores = rng.standard_normal((bsz, HEADS, s, s)).astype(np.float32)
        out.append(("softmax", f"{bsz}x{HEADS}x{s}x{s}", (scores, mask[:, None, None, :]), {}))
        q, k, v = (rng.standard_normal((bsz, s, HIDDEN)).astype(np.float32) for _ in range(3))
        out.append(("attention", f"{bsz}x{s}x{HIDDEN} h{HEADS}", (q, k, v, mask), {"num_heads": HEADS}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")
    args = ap.parse_args()
    assert N.available(), f"native kernels unavailable: {N.reason()}"
    repeats, min_s = (3, 0.01) if args.quick else (7, 0.05)
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    rng = np.random.default_rng(0)
    rows = []
    print(f"BLAS threads: {threads}; C kernels single-threaded; ms per call, median of {repeats}")
    print(f"{'op':<11} {'shape':<22} {'C ms':>9} {'NumPy ms':>9} {'NumPy/C':>8}  routed to")
    for op, label, a, kw in cases(rng, args.quick):
        res = measure(op, *a, candidates={"c": N.OPS[op], "numpy": H.NUMPY[op]}, repeats=repeats, min_s=min_s, **kw)
        routed = N.ENGINE.name if H._native_takes(op, a, kw) else "numpy"
        res.update(label=label, speedup=res["numpy_ms"] / res["c_ms"], routed=routed)
        rows.append(res)
        print(f"{op:<11} {label:<22} {res['c_ms']:9.4f} {res['numpy_ms']:9.4f} {res['speedup']:8.2f}  {routed}")
    path = write_result(f"host_kernels_{threads}t", {"blas_threads": threads, "repeats": repeats,
                                                     "min_window_s": min_s, "results": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
