"""Property checks of every op against its NumPy reference on awkward inputs: random shapes (empty axes,
1, odd sizes), values with NaN, +-inf, -0, subnormals and huge magnitudes. Written once, driven two ways:
by Hypothesis natively (tests/test_properties.py) and by a seeded NumPy generator inside the browser lanes
(the `properties_seeded` case in tests/cases.py). Only numpy and gpuport are imported, so it runs in a page.

A `Draw` hands out the random choices; each op's `make` builds its inputs from one, `run` calls the op,
`check` compares with the reference:
- NaN where the reference has NaN, the same infinity where it has one, and finite values within a bound
  stated per op (u = 2**-24): elementwise ops within 2 ulp (scale may fuse into one fma); matmul, sum,
  mean, mean_pool within the summation bound K*u*(sum of |terms|) computed in float64; gelu 1e-6 absolute
  (the erf polynomial); softmax, attention 1e-5 relative plus 1e-6 absolute on moderate inputs (large
  logits make softmax chaotic: tiny rounding differences of the scores flip it, so their finite values
  are drawn from +-4); layer_norm and l2_normalize relative to the row's conditioning.
- Where a reduction's terms can overflow float32 partway (sum of |terms| beyond float32's range), any
  answer is accepted: the order of summation decides and both orders are right.
- WGSL lets a GPU flush subnormal inputs and results to zero: an answer is also accepted when it matches
  the reference on the inputs with their subnormals flushed to zero, a result below TINY (float32's
  smallest normal) may read 0, and each bound adds the op's sensitivity times TINY (flushed products).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from gpuport.host import references as K

U = 2.0 ** -24
F32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).tiny)
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e-30, 3e38, -3e38, 1e20, -1e20, 1.0, -1.0)


class Draw:
    """Random choices from a NumPy generator (the page's seeded runs); Hypothesis supplies its own."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def floats(self, shape: tuple[int, ...], limit: float = F32_MAX, specials: bool = True) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        scale = self.rng.choice([1.0, 1e-3, 1e3, min(limit, 1e30)])
        x = (self.rng.standard_normal(n) * min(scale, limit)).astype(np.float32)
        if specials and n:
            picks = [s for s in SPECIALS if not np.isfinite(s) or abs(s) <= limit]
            where = self.rng.random(n) < self.rng.choice([0.0, 0.05, 0.3])
            x[where] = self.rng.choice(picks, int(where.sum()))
        return np.clip(x, -limit, limit, where=np.isfinite(x), out=x).reshape(shape)

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        return (self.rng.random(shape) < 0.7).astype(np.float32)


def _shape(d: Draw, ndim: int, empty: bool = True, max_dim: int = 33) -> tuple[int, ...]:
    return tuple(d.integer(0 if empty else 1, max_dim) for _ in range(ndim))


def _close(got: np.ndarray, want: np.ndarray, bound: np.ndarray | float, what: str,
           free: np.ndarray | None = None) -> None:
    """NaN where want is NaN, equal infinities, finite values within `bound`; `free` marks elements any
    answer may take (order-dependent overflow)."""
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs {want.shape}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.where(np.isnan(w), np.isnan(g),
                      np.where(np.isinf(w), g == w, np.isfinite(g) & (np.abs(g - w) <= bound)))
        ok |= (np.abs(w) < TINY) & (g == 0)
    if free is not None:
        ok |= np.broadcast_to(free, ok.shape)
    if not ok.all():
        i = np.unravel_index(int(np.argmin(ok)), ok.shape)
        b = bound if np.isscalar(bound) else np.broadcast_to(bound, ok.shape)[i]
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} values disagree; at {i}: got {got[i]!r}, "
                             f"want {want[i]!r} (bound {b!r})")


def _rowsum_bound(terms: np.ndarray, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(bound, free) of a sum over the last axis of `terms` (float64)."""
    n = terms.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        mag = np.nansum(np.abs(np.where(np.isinf(terms), 0, terms)), axis=-1)
    return scale * (n + 1) * U * mag + (n + 1) * TINY, mag > F32_MAX / 2


class OpProperty:
    """One op: how to draw its inputs, call it, and compare with its reference."""

    def __init__(self, make: Callable[[Draw], dict[str, Any]], run: Callable[[Any, dict[str, Any]], Any],
                 check: Callable[[np.ndarray, dict[str, Any]], None]) -> None:
        self.make, self.run, self.check = make, run, check


def _binary(op: str) -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        a_shape = _shape(d, d.integer(1, 3))
        b_shape = a_shape[len(a_shape) - d.integer(0, len(a_shape)):] or a_shape[-1:]
        return {"a": d.floats(a_shape), "b": d.floats(b_shape)}

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        want = getattr(K, f"{op}_ref")(x["a"], x["b"])
        a, b = np.abs(x["a"].astype(np.float64)), np.abs(x["b"].astype(np.float64))
        flush = TINY * (1 + (a + b if op == "mul" else 0))
        _close(got, want, 2 * U * np.abs(want.astype(np.float64)) + np.nan_to_num(flush, posinf=np.inf), op)
    return OpProperty(make, lambda rt, t: getattr(rt.ops, op)(t["a"], t["b"]), check)


def _scale() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        return {"x": d.floats(_shape(d, d.integer(1, 3))), "a": float(d.floats((1,), 1e6, False)[0]),
                "b": float(d.floats((1,), 1e6, False)[0])}

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        want = K.scale_ref(x["x"], a=x["a"], b=x["b"])
        prod = np.abs(x["x"].astype(np.float64) * x["a"])
        with np.errstate(over="ignore"):
            near = (prod > F32_MAX / 2) & np.isfinite(x["x"])   # fma or not decides overflow here
        flush = TINY * (1 + abs(x["a"]))
        _close(got, want, 2 * U * (prod + np.abs(want.astype(np.float64))) + flush, "scale", near)
    return OpProperty(make, lambda rt, t: rt.ops.scale(t["x"], t["a"], t["b"]), check)


def _gelu() -> OpProperty:
    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        _close(got, K.gelu_ref(x["x"]), 1e-6 + 2 * U * np.abs(x["x"].astype(np.float64)), "gelu")
    return OpProperty(lambda d: {"x": d.floats(_shape(d, d.integer(1, 3)))}, lambda rt, t: rt.ops.gelu(t["x"]),
                      check)


def _matmul() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        m, k, n = d.integer(1, 40), d.integer(1, 70), d.integer(1, 40)
        batch = (d.integer(1, 3),) if d.integer(0, 3) == 0 else ()
        tb = bool(d.integer(0, 1))
        out = {"a": d.floats(batch + (m, k), 1e15), "b": d.floats((n, k) if tb else (k, n), 1e15),
               "transpose_b": tb}
        if d.integer(0, 1):
            out["bias"] = d.floats((n,), 1e15)
        return out

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        a, b, bias = x["a"], x["b"], x.get("bias")
        want = K.matmul_ref(a, b, bias, transpose_b=x["transpose_b"])
        bb = np.swapaxes(b, -1, -2) if x["transpose_b"] else b
        with np.errstate(invalid="ignore", over="ignore"):
            mag = np.abs(np.nan_to_num(a.astype(np.float64), posinf=0, neginf=0)) @ \
                np.abs(np.nan_to_num(bb.astype(np.float64), posinf=0, neginf=0))
        if bias is not None:
            mag = mag + np.abs(np.nan_to_num(bias.astype(np.float64), posinf=0, neginf=0))
        with np.errstate(invalid="ignore", over="ignore"):
            flush = TINY * (np.abs(np.nan_to_num(a.astype(np.float64))).sum(-1, keepdims=True)
                            + np.abs(np.nan_to_num(bb.astype(np.float64))).sum(-2, keepdims=True) + a.shape[-1] + 1)
        _close(got, want, 2 * (a.shape[-1] + 2) * U * mag + flush, "matmul")
    return OpProperty(make, lambda rt, t: rt.ops.matmul(t["a"], t["b"], bias=t.get("bias"),
                                                        transpose_b=t["transpose_b"]), check)


def _reduce(op: str) -> OpProperty:
    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        v = x["x"].astype(np.float64)
        bound, free = _rowsum_bound(v)
        if op == "mean" and v.shape[-1]:
            bound = bound / v.shape[-1] + 2 * U * np.abs(np.where(np.isinf(v), 0, v).mean(axis=-1))
        _close(got, getattr(K, f"{op}_ref")(x["x"]), bound, op, free)
    return OpProperty(lambda d: {"x": d.floats(_shape(d, d.integer(1, 3)))},
                      lambda rt, t: getattr(rt.ops, op)(t["x"]), check)


def _softmax() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        shape = _shape(d, d.integer(1, 3))
        out = {"x": d.floats(shape, 4.0)}
        if shape[-1] and d.integer(0, 1):
            out["mask"] = np.where(d.mask(shape[-1:]) > 0, 0.0, -1e9).astype(np.float32)
        return out

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        want = K.softmax_ref(x["x"], x.get("mask"))
        _close(got, want, 1e-5 * np.abs(want.astype(np.float64)) + 1e-6, "softmax")
    return OpProperty(make, lambda rt, t: rt.ops.softmax(t["x"], t.get("mask")), check)


def _layer_norm() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        shape = _shape(d, d.integer(1, 3))
        n = shape[-1]
        return {"x": d.floats(shape), "gamma": d.floats((n,), 1e3, False), "beta": d.floats((n,), 1e3, False),
                "eps": float(d.integer(0, 2) and 10.0 ** -d.integer(3, 12))}

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        v = x["x"].astype(np.float64)
        want = K.layer_norm_ref(x["x"], x["gamma"], x["beta"], eps=x["eps"])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            n = max(v.shape[-1], 1)
            peak = np.max(np.abs(v), axis=-1, keepdims=True, initial=0)
            var = np.var(v, axis=-1, keepdims=True) if v.shape[-1] else np.zeros(v.shape[:-1] + (1,))
            cond = peak / np.sqrt(var + x["eps"])          # how much rounding of x the output amplifies
            flush = (n + 1) * TINY / np.sqrt(var + x["eps"])
            bound = ((8 * (n + 2) * U * cond + flush) * np.abs(x["gamma"]) + 4 * U * np.abs(x["beta"])
                     + 4 * U * np.abs(want.astype(np.float64)) + TINY)
        _close(got, want, np.nan_to_num(bound, nan=np.inf, posinf=np.inf), "layer_norm")
    return OpProperty(make, lambda rt, t: rt.ops.layer_norm(t["x"], t["gamma"], t["beta"], eps=t["eps"]), check)


def _l2_normalize() -> OpProperty:
    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        want = K.l2_normalize_ref(x["x"])
        v = x["x"].astype(np.float64)
        n = max(v.shape[-1], 1)
        with np.errstate(invalid="ignore", over="ignore"):
            norm = np.sqrt(np.nansum(np.where(np.isinf(v), 0, v) ** 2, axis=-1, keepdims=True))
        flush = 2 * n * TINY / np.maximum(norm, 1e-12)
        _close(got, want, 4 * (n + 2) * U * np.abs(want.astype(np.float64)) + 4 * (n + 2) * U *
               np.max(np.abs(np.nan_to_num(want.astype(np.float64))), axis=-1, keepdims=True, initial=0) + flush,
               "l2_normalize")
    return OpProperty(lambda d: {"x": d.floats(_shape(d, d.integer(1, 3)))},
                      lambda rt, t: rt.ops.l2_normalize(t["x"]), check)


def _embedding() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        vocab, hidden = d.integer(1, 50), d.integer(0, 20)
        ids = np.array([d.integer(0, vocab - 1) for _ in range(d.integer(0, 30))], np.int32)
        return {"ids": ids.reshape(_ids_shape(d, ids.size)), "table": d.floats((vocab, hidden))}

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        _close(got, K.embedding_ref(x["ids"], x["table"]), 0.0, "embedding")
    return OpProperty(make, lambda rt, t: rt.ops.embedding(t["ids"], t["table"]), check)


def _ids_shape(d: Draw, n: int) -> tuple[int, ...]:
    return (1, n) if n and d.integer(0, 1) else (n,)


def _attention() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        batch, sk, heads, hd = d.integer(1, 2), d.integer(1, 70), d.integer(1, 3), d.integer(1, 9)
        sq = d.integer(1, 9) + 60 * d.integer(0, 1)   # 61..69 queries: either side of attention_rows' 64
        shape_q, shape_k = (batch, sq, heads * hd), (batch, sk, heads * hd)
        out = {"q": d.floats(shape_q, 4.0), "k": d.floats(shape_k, 4.0), "v": d.floats(shape_k, 4.0), "heads": heads}
        if d.integer(0, 1):
            out["mask"] = np.where(d.mask((batch, sk)) > 0, 0.0, -1e9).astype(np.float32)
        return out

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        want = K.attention_ref(x["q"], x["k"], x["v"], x.get("mask"), num_heads=x["heads"])
        _close(got, want, 1e-4 * np.abs(want.astype(np.float64)) + 2e-5, "attention")
    return OpProperty(make, lambda rt, t: rt.ops.attention(t["q"], t["k"], t["v"], t["heads"], mask=t.get("mask")),
                      check)


def _mean_pool() -> OpProperty:
    def make(d: Draw) -> dict[str, Any]:
        batch, seq, hidden = d.integer(1, 3), d.integer(0, 20), d.integer(0, 20)
        return {"x": d.floats((batch, seq, hidden)), "mask": d.mask((batch, seq))}

    def check(got: np.ndarray, x: dict[str, Any]) -> None:
        terms = np.swapaxes(x["x"].astype(np.float64) * x["mask"][..., None], 1, 2)   # (B, H, S)
        count = np.maximum(x["mask"].sum(axis=1, keepdims=True), 1e-9)
        bound, free = _rowsum_bound(terms)
        want = K.mean_pool_ref(x["x"], x["mask"])
        _close(got, want, bound / count + 2 * U * np.abs(want.astype(np.float64)), "mean_pool", free)
    return OpProperty(make, lambda rt, t: rt.ops.mean_pool(t["x"], t["mask"]), check)


PROPERTIES: dict[str, OpProperty] = {
    "add": _binary("add"), "mul": _binary("mul"), "scale": _scale(), "gelu": _gelu(), "matmul": _matmul(),
    "sum": _reduce("sum"), "mean": _reduce("mean"), "softmax": _softmax(), "layer_norm": _layer_norm(),
    "l2_normalize": _l2_normalize(), "embedding": _embedding(), "attention": _attention(),
    "mean_pool": _mean_pool(),
}


def _flushed(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs with float32 subnormals replaced by zero (what a flushing GPU computes with)."""
    return {k: np.where(np.abs(v) < TINY, np.float32(0), v).astype(v.dtype)
            if isinstance(v, np.ndarray) and v.dtype == np.float32 else v for k, v in inputs.items()}


async def check_op(rt: Any, op: str, inputs: dict[str, Any]) -> None:
    """Run `op` on `rt` with `inputs` (arrays become tensors) and compare with the reference (on the
    inputs as given, or with their subnormals flushed)."""
    tensors = {k: rt.tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    got = await PROPERTIES[op].run(rt, tensors).read()
    with np.errstate(all="ignore"):
        try:
            PROPERTIES[op].check(got, inputs)
        except AssertionError:
            flushed = _flushed(inputs)
            if all(np.array_equal(flushed[k], v, equal_nan=True) for k, v in inputs.items()
                   if isinstance(v, np.ndarray)):
                raise
            PROPERTIES[op].check(got, flushed)


async def check_seeded(rt: Any, examples: int, seed: int) -> int:
    """`examples` seeded draws of every op; returns how many ran."""
    done = 0
    for i, op in enumerate(sorted(PROPERTIES)):
        d = Draw(np.random.default_rng(seed + i))
        for _ in range(examples):
            await check_op(rt, op, PROPERTIES[op].make(d))
            done += 1
    return done


__all__ = ["Draw", "PROPERTIES", "check_op", "check_seeded"]
