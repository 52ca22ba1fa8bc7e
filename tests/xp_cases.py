"""Parity cases of the array namespace's generated kernels, written once like tests/cases.py's and registered into
its CASES: natively (tests/ops/test_kernels.py) and inside every browser lane's page (e2e/test_page.py, which
installs this module beside cases.py). Each family of generated WGSL (element-wise, reduce, scan, sort, search,
scatter, the generic product) is dispatched on the lane's device and checked against NumPy, and every function of
the element-wise table is compiled by each engine's compiler (naga, Tint); reads are awaited (`await xp.read(x)`),
as a page must. Small shapes: in a browser a pipeline costs a compile, and these cases run in the GPU lanes (the
device lists; the first two in the `variants` and `thread` subsets too) and on the cpu lists.

Tolerances: element-wise float32 +, -, * and comparisons are exact; exp within 4e-6 relative on [-2, 2] (WGSL's
exp: 3 + 2|x| ULP); sin of arguments up to 6 (reduced exactly by 2 pi first) within WGSL's 2**-11 absolute; sums of
n terms within n u sum|x| (u = 2**-24); integers exact.
"""

from __future__ import annotations

import numpy as np
from cases import case, close, rng
from gpuport import xp
from gpuport.xp.elementwise import ACCEPTS

U = 2.0 ** -24


def _grew(rt, before: dict, family: str) -> int:
    return xp.stats(rt)["dispatches"][family] - before[family] if rt.backend == "webgpu" else 0


@case(backends=("webgpu", "cpu", "variants", "thread"), device=("xp.multiply", "xp.exp", "xp.add", "xp.less", "xp.where",
                                                  "xp.sin", "xp.setitem"))
async def xp_elementwise_chain_is_one_dispatch_and_writes_in_place(rt):
    xp.use(rt)
    r = rng(91)
    v = r.uniform(-2, 2, (6, 10)).astype(np.float32)
    ints = r.integers(-128, 128, (6, 10)).astype(np.int8)
    x = xp.asarray(v, device=rt)
    before = dict(xp.stats(rt)["dispatches"])
    view = x[1::2, ::-2]                                           # strided and flipped: read in place
    y = xp.where(view < 0.5, xp.exp(view) * 2.0 + view, xp.sin(view * 3.0))   # 7 functions: one kernel
    got = await xp.read(y)
    vv = v[1::2, ::-2]
    low = vv < 0.5
    want = np.where(low, np.exp(vv) * np.float32(2) + vv, np.sin(vv * np.float32(3))).astype(np.float32)
    # exp: 3 + 2|x| ULP; sin of |x| up to 6 (reduced by 2 pi first, exactly): WGSL's 2**-11 absolute
    close(got, want, atol=np.where(low, 4e-6 * np.abs(want) + 1e-6, 2.0 ** -11), what="fused chain over a view")
    assert _grew(rt, before, "elementwise") in ((1,) if rt.backend == "webgpu" else (0,)), xp.stats(rt)
    wrapped = await xp.read(xp.asarray(ints, device=rt) * 3 + 100)  # int8 overflow wraps as NumPy's
    close(wrapped, (ints * np.int8(3) + np.int8(100)).astype(np.int8), what="int8 wrap")
    x[0, ::3] = -7.0                                               # in place, on the store's device
    v[0, ::3] = -7.0
    close(await xp.read(x), v, what="written in place")
    if rt.backend == "webgpu":
        assert _grew(rt, before, "scatter") == 1, xp.stats(rt)


@case(backends=("webgpu", "cpu", "variants", "thread"), device=("xp.sum", "xp.argmax", "xp.cumulative_sum", "xp.sort",
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


NUMPY_NAMES = {"acos": "arccos", "acosh": "arccosh", "asin": "arcsin", "asinh": "arcsinh", "atan": "arctan",
               "atanh": "arctanh", "atan2": "arctan2", "pow": "power", "bitwise_invert": "invert",
               "bitwise_left_shift": "left_shift", "bitwise_right_shift": "right_shift"}
SKIP = ("clip", "where", "imag", "conj", "real")   # clip and where have their own tests; the rest: complex-only


def _operands(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A function's two operands from `values`: acosh above 1; integer powers and shifts by 0..7 (NumPy refuses
    negative integer powers; the standard leaves shifts past the width undefined)."""
    if values.dtype.kind == "f":
        return (values + np.float32(1) if name == "acosh" else values), values[::-1].copy()
    second = np.roll(values, 1)
    if name == "pow" or "shift" in name:
        second = (second % 8).astype(values.dtype)
    return values, second


@case(device=("xp.concat", "xp.astype", "xp.pow", "xp.atan2", "xp.bitwise_left_shift"))
async def xp_every_table_function_compiles_and_matches_numpy(rt):
    """Every element-wise function of the table on float32, int32 and uint8 (the wrapped 8-bit path), stacked so
    that a few generated kernels hold them all: each engine's compiler accepts every helper, and each row matches
    NumPy (integers given to float functions as float32, as gpuport.xp computes them) within 1e-3 relative and 1e-5
    absolute: WGSL's accuracy table as tests/xp/oracle.py states it; integer results are exact within that."""
    xp.use(rt)
    f = np.linspace(0.1, 0.9, 8, dtype=np.float32)
    i = np.array([-7, -1, 0, 1, 2, 3, 100, 2 ** 30], np.int32)
    u = np.array([0, 1, 2, 3, 7, 100, 200, 255], np.uint8)
    for values in (f, i, u):
        kinds = ("floating", "real floating", "numeric", "real", "any") + \
            (("integer", "integer or bool") if values.dtype.kind != "f" else ())
        names = sorted(n for n, c in ACCEPTS.items() if c in kinds and n not in SKIP)
        rows, wants = [], []
        for name in names:
            fn = getattr(xp, name)
            binary = " of two " in fn.__doc__
            a, b = _operands(values, name)
            out = fn(xp.asarray(a, device=rt), xp.asarray(b, device=rt)) if binary else fn(xp.asarray(a, device=rt))
            rows.append(xp.astype(out, xp.float32))
            if ACCEPTS[name] in ("floating", "real floating") or name == "divide":
                a, b = a.astype(np.float32), b.astype(np.float32)
            with np.errstate(all="ignore"):
                want = getattr(np, NUMPY_NAMES.get(name, name))(*((a, b) if binary else (a,)))
            wants.append(np.asarray(want).astype(np.float32))
        got, want = await xp.read(xp.stack(rows)), np.stack(wants)
        with np.errstate(invalid="ignore"):
            ok = (np.isnan(got) & np.isnan(want)) | (got == want) | (np.abs(got - want) <= 1e-3 * np.abs(want) + 1e-5)
        bad = {names[k]: (got[k].tolist(), want[k].tolist()) for k in range(len(names)) if not ok[k].all()}
        assert not bad, f"{values.dtype}: differ from NumPy: {bad}"
