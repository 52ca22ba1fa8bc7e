"""Parity cases of the array namespace's generated kernels, written once like tests/cases.py's and registered into
its CASES: natively (tests/ops/test_kernels.py) and inside every browser lane's page (e2e/test_page.py, which
installs this module beside cases.py). Each family of generated WGSL (element-wise, reduce, scan, sort, search,
scatter, the generic product) is dispatched on the lane's device and checked against NumPy; reads are awaited
(`await xp.read(x)`), as a page must. Small shapes: in a browser a pipeline costs a compile, and these cases run in
four GPU lanes (the device lists and the main-thread subsets) and on the cpu lists.

Tolerances: element-wise float32 +, -, * and comparisons are exact; exp within 1e-6 relative on [-2, 2] (WGSL's
exp: 3 + 2|x| ULP); sums of n terms within n u sum|x| (u = 2**-24); integers exact.
"""

from __future__ import annotations

import numpy as np
from cases import case, close, rng
from gpuport import xp

U = 2.0 ** -24


def _grew(rt, before: dict, family: str) -> int:
    return xp.stats(rt)["dispatches"][family] - before[family] if rt.backend == "webgpu" else 0


@case(backends=("webgpu", "cpu", "main"), device=("xp.multiply", "xp.exp", "xp.add", "xp.less", "xp.where",
                                                  "xp.setitem"))
async def xp_elementwise_chain_is_one_dispatch_and_writes_in_place(rt):
    xp.use(rt)
    r = rng(91)
    v = r.uniform(-2, 2, (6, 10)).astype(np.float32)
    ints = r.integers(-128, 128, (6, 10)).astype(np.int8)
    x = xp.asarray(v, device=rt)
    before = dict(xp.stats(rt)["dispatches"])
    view = x[1::2, ::-2]                                           # strided and flipped: read in place
    y = xp.where(view < 0.5, xp.exp(view) * 2.0 + view, view)      # 5 functions: one generated kernel
    got = await xp.read(y)
    vv = v[1::2, ::-2]
    want = np.where(vv < 0.5, np.exp(vv) * np.float32(2) + vv, vv).astype(np.float32)
    close(got, want, rtol=4e-6, atol=1e-6, what="fused chain over a view")
    assert _grew(rt, before, "elementwise") in ((1,) if rt.backend == "webgpu" else (0,)), xp.stats(rt)
    wrapped = await xp.read(xp.asarray(ints, device=rt) * 3 + 100)  # int8 overflow wraps as NumPy's
    close(wrapped, (ints * np.int8(3) + np.int8(100)).astype(np.int8), what="int8 wrap")
    x[0, ::3] = -7.0                                               # in place, on the store's device
    v[0, ::3] = -7.0
    close(await xp.read(x), v, what="written in place")
    if rt.backend == "webgpu":
        assert _grew(rt, before, "scatter") == 1, xp.stats(rt)


@case(backends=("webgpu", "cpu", "main"), device=("xp.sum", "xp.argmax", "xp.cumulative_sum", "xp.sort",
                                                  "xp.searchsorted", "xp.matmul"))
async def xp_reduce_scan_sort_search_matmul_kernels(rt):
    xp.use(rt)
    r = rng(92)
    v = r.standard_normal((5, 37)).astype(np.float32)
    x = xp.asarray(v, device=rt)
    before = dict(xp.stats(rt)["dispatches"])
    s = await xp.read(xp.sum(x * x, axis=1))                      # the product fused into the reduction
    close(s, (v * v).sum(1), atol=37 * U * (v * v).sum(1) * 2 + 1e-6, what="sum of squares")
    close(await xp.read(xp.argmax(x, axis=0)), np.argmax(v, 0).astype(np.int32), what="argmax")
    c = await xp.read(xp.cumulative_sum(x, axis=1))
    close(c, np.cumsum(v, 1), atol=37 * U * np.cumsum(np.abs(v), 1) * 2 + 1e-6, what="cumulative_sum")
    close(await xp.read(xp.sort(x, axis=1)), np.sort(v, 1), what="sort")
    close(await xp.read(xp.argsort(x, axis=1, descending=True)),
          (36 - np.flip(np.argsort(np.flip(v, 1), 1, kind="stable"), 1)).astype(np.int32), what="argsort")
    edges = xp.asarray(np.array([-1.0, 0.0, 0.5, 2.0], np.float32), device=rt)
    close(await xp.read(xp.searchsorted(edges, x[0])), np.searchsorted([-1.0, 0.0, 0.5, 2.0], v[0]).astype(np.int32),
          what="searchsorted")
    a, b = r.integers(-9, 9, (3, 4)).astype(np.int32), r.integers(-9, 9, (4, 2)).astype(np.int32)
    close(await xp.read(xp.asarray(a, device=rt) @ xp.asarray(b, device=rt)), a @ b, what="int32 matmul")
    if rt.backend == "webgpu":
        for family in ("reduce", "scan", "sort", "search", "matmul"):
            assert _grew(rt, before, family) >= 1, (family, xp.stats(rt))
