"""A whole MiniLM-L6 embedding natively on gpuport's cpu backend: the native C host kernels (hostops routing
as shipped) against GPUPORT_HOST_KERNELS=numpy (NumPy and its BLAS for every host op), at 1 and 2 BLAS
threads, one 256-token text and one 12-token sentence (bench/peers/texts.json).

Each system is a bench/peers/worker.py process (`gpuport cpu`, this checkout's package); repetitions
alternate between all four so machine noise hits them alike. Prints median ms per embed and writes
bench/results/host_forward.json (4 worker processes: pauses between embeds keep one's spinning BLAS
threads off the next one's cores). Run: flock /tmp/gpuport-heavy.lock env PYTHONPATH=py .venv/bin/python
bench/host_forward.py [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import write_result  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def start(kernels: str, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py"), "GPUPORT_HOST_KERNELS": "numpy" if kernels == "numpy" else "",
           **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    proc = subprocess.Popen([sys.executable, str(BENCH / "peers" / "worker.py"), "gpuport", "cpu"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = json.loads(proc.stdout.readline())
    assert ready.get("ready"), ready
    return proc


def embed(proc: subprocess.Popen, texts: list[str]) -> float:
    proc.stdin.write(json.dumps({"texts": texts, "embeddings": False}) + "\n")
    proc.stdin.flush()
    return float(json.loads(proc.stdout.readline())["ms"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--gap-s", type=float, default=0.3,
                    help="pause before each embed: OpenBLAS's threads spin after a call and would steal the "
                         "next worker's cores (4 processes share 2 here)")
    args = ap.parse_args()
    texts = json.loads((BENCH / "peers" / "texts.json").read_text())
    systems = {f"{k}-{t}t": start(k, t) for t in (1, 2) for k in ("c", "numpy")}
    results = {}
    try:
        for case in ("long256", "short"):
            times: dict[str, list[float]] = {name: [] for name in systems}
            for proc in systems.values():   # warm-up: first calls pack weights, allocate, load BLAS kernels
                for _ in range(3):
                    embed(proc, texts[case])
            for _ in range(args.reps):
                for name, proc in systems.items():
                    time.sleep(args.gap_s)
                    times[name].append(embed(proc, texts[case]))
            results[case] = {name: {"median_ms": statistics.median(ts), "min_ms": min(ts)} for name, ts in times.items()}
            for name, r in results[case].items():
                print(f"{case:<8} {name:<10} median {r['median_ms']:8.2f} ms  min {r['min_ms']:8.2f} ms")
    finally:
        for proc in systems.values():
            proc.stdin.close()
            proc.wait(timeout=30)
    print(f"wrote {write_result('host_forward', {'reps': args.reps, 'results': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
