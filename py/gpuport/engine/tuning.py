"""Kernel variants chosen per adapter by measurement: at precompile time each register-blocked matmul
variant (kernels.RB_VARIANTS) runs on a MiniLM-sized product and the fastest of each layout is kept in the
pipeline manifest (scoped to the adapter, browser and features), so later starts reuse the choice without
measuring again.

Timing is wall time over several dispatches ended by one awaited read, candidates interleaved over rounds
(minimum per candidate), so it works on every backend, timestamp queries or not.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ops.kernels import RB_VARIANTS
from ..ops.launches import Part, rb_matmul_launch

if TYPE_CHECKING:
    from ..backends.base import Backend, Pause
    from ..ops.pipelines import PipelineManifest
    from ..placement import Planner

# One layer of an 8-sentence MiniLM batch: 96 tokens x 384 -> 384 (small enough to time in well under a
# second on a software adapter, large enough that every variant fills the device).
SHAPE = (96, 384, 384)
ROUNDS, REPEATS = 2, 4


def slot(layout: str) -> str:
    return f"matmul.{layout}"


def apply(manifest: "PipelineManifest | None", planner: "Planner") -> None:
    """Adopt the choices the manifest remembers for this adapter (unknown or mismatched ones are ignored)."""
    if manifest is None:
        return
    for layout in ("tb", "nb"):
        key = manifest.choices.get(slot(layout))
        block = RB_VARIANTS.get(key or "")
        if block is not None and block.layout == layout:
            planner.matmul_choice[layout] = key


async def tune_matmul(device: "Backend", planner: "Planner", manifest: "PipelineManifest | None",
                      force: bool = False, pause: "Pause | None" = None) -> dict[str, Any]:
    """Measure the register-blocked variants of each layout not yet chosen on this adapter (all of them
    when `force`), choose the fastest, remember it in `manifest`; `pause()` is awaited before each variant's
    measurement (a page's: until no call runs, which would share the cores and skew the timing). Returns {layout:
    {"chosen": key, "gflops": {key: GFLOP/s}, "measured": bool}}."""
    report: dict[str, Any] = {}
    if not planner.gpu:
        return report
    m, k, n = SHAPE
    rng = np.random.default_rng(0)
    a = Part(device.upload(rng.standard_normal((m, k)).astype(np.float32)), (m, k))
    out = Part(device.alloc((m, n), np.dtype(np.float32)), (m, n))
    weights = {"tb": Part(device.upload(rng.standard_normal((n, k)).astype(np.float32)), (n, k)),
               "nb": Part(device.upload(rng.standard_normal((k, n)).astype(np.float32)), (k, n))}
    for layout, b in weights.items():
        known = manifest.choices.get(slot(layout)) if manifest is not None else None
        candidates = [blk for blk in RB_VARIANTS.values() if blk.layout == layout and planner.fits(blk.kernel.name)]
        if not candidates:
            continue
        if known in RB_VARIANTS and not force:
            report[layout] = {"chosen": known, "gflops": {}, "measured": False}
            continue
        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            for blk in candidates:
                if pause is not None:
                    await pause()
                launch = rb_matmul_launch(blk, a, b, None, out)
                device.run(launch)                        # compiles it; the first run is not timed
                await device.download(out.buffer, (1,), np.dtype(np.float32))
                t0 = time.perf_counter()
                for _ in range(REPEATS):
                    device.run(launch)
                await device.download(out.buffer, (1,), np.dtype(np.float32))
                s = (time.perf_counter() - t0) / REPEATS
                best[blk.key] = min(best.get(blk.key, float("inf")), s)
        chosen = min(best, key=best.__getitem__)
        planner.matmul_choice[layout] = chosen
        if manifest is not None:
            manifest.choose(slot(layout), chosen)
            for key in best:   # the losers are not rebuilt at every start
                if key != chosen and key not in planner.matmul_choice.values():
                    manifest.forget(f"matmul_{key}")
        report[layout] = {"chosen": chosen, "measured": True,
                          "gflops": {key: round(2.0 * m * k * n / s / 1e9, 3) for key, s in best.items()}}
    return report
