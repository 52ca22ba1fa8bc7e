"""One script of synchronous reads, written as a native script would be: float(x), int(x), bool(...), x.item(),
np.asarray(x), boolean indexing, unique_values, nonzero and the runtime API's tensor.numpy() on values that live on
the GPU. It runs unchanged natively (tests/xp/test_reads.py) and in pages (e2e/test_page.py: gpuport's own page and a
bare Pyodide, in Chromium and Firefox), where each read waits for the GPU inside the synchronous call (JSPI); where a
page cannot wait so, its first read raises gpuport.SyncReadUnavailable naming `await xp.read(x)`.

Its data are quarters of small integers: every sum it takes is exact in float32 whatever the order of its terms, so
the values match NumPy's exactly, on any device."""

from __future__ import annotations

from typing import Any

import numpy as np
from gpuport import xp


def script(rt: Any) -> dict[str, Any]:
    """The reads on runtime `rt` (opened as the platform opens one), as plain data; "ran": the namespace's calls that
    ran on the GPU."""
    v = (((np.arange(1000) * 37) % 101) - 50).astype(np.float32) / 4
    x = xp.asarray(v, device=rt)
    y = xp.abs(x) * 2 - 3                          # lazy: one fused kernel computes it when something reads it
    total = float(xp.sum(y))
    count = int(xp.count_nonzero(y > 15))
    any_big = bool(xp.any(y > 21.5))
    all_small = bool(xp.all(y < 30))
    big = y[y > 15]                                # boolean indexing: its shape depends on the values
    bins = xp.unique_values(xp.floor(y / 5))
    (zeros,) = xp.nonzero(x == 0)
    t = rt.tensor(v[:8].copy())
    return {
        "total": total, "count": count, "any_big": any_big, "all_small": all_small,
        "big_shape": list(big.shape), "big_first": np.asarray(big)[:5].tolist(), "big_max": xp.max(big).item(),
        "bins": np.asarray(bins).tolist(), "zeros": np.asarray(zeros).tolist(),
        "tensor": rt.ops.scale(t, 2.0, 1.0).numpy().tolist(),
        "ran": {k: v for k, v in rt.info()["ran"].items() if k.startswith("xp.") and v.get("webgpu")},
    }
