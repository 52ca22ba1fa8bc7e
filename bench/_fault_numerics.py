"""Fault classes of bench/faults.py about values and arguments: NaN / Inf / huge / tiny / empty rows
against NumPy's reference on both backends (finding 4), bad arguments (finding 5). The comparisons and
their stated tolerances are tests/properties.py's (the same the Hypothesis tests use)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import gpuport as gp
import numpy as np
from faults import NotSurvived, Tally, expect_error

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from properties import check_op  # noqa: E402

ROW_KINDS = ["nan", "+inf", "-inf", "both infs", "huge", "huge and tiny", "tiny", "subnormal", "zeros", "empty"]
OPS = ["l2_normalize", "layer_norm", "softmax", "mean", "sum", "gelu", "scale", "mean_pool", "add", "mul", "matmul"]


def _matrix(r: np.random.Generator, kind: str) -> np.ndarray:
    rows, cols = int(r.integers(1, 9)), (0 if kind == "empty" else int(r.integers(1, 70)))
    x = r.standard_normal((rows, cols)).astype(np.float32)
    if kind in ("empty", "zeros") or not cols:
        x[...] = 0 if kind == "zeros" else x
        return x
    row = int(r.integers(0, rows))
    at = r.choice(cols, size=min(cols, 2), replace=False)
    sign = np.where(r.random(cols) < 0.5, -1.0, 1.0)
    if kind == "nan":
        x[row, at[0]] = np.nan
    elif kind in ("+inf", "-inf"):
        x[row, at[0]] = np.inf if kind == "+inf" else -np.inf
    elif kind == "both infs":
        x[row, at] = [np.inf, -np.inf][:len(at)]
    elif kind == "huge":
        x[row] = sign * 10.0 ** r.uniform(19, 38.5, cols)
    elif kind == "huge and tiny":
        x[row] = sign * 10.0 ** np.where(r.random(cols) < 0.5, r.uniform(19, 38, cols), r.uniform(-38, -30, cols))
    elif kind == "tiny":
        x[row] = sign * 10.0 ** r.uniform(-37.9, -30, cols)
    elif kind == "subnormal":
        x[row] = (sign * 10.0 ** r.uniform(-44.5, -38.5, cols)).astype(np.float32)
    return np.clip(x, -3.4e38, 3.4e38, where=np.isfinite(x), out=x)


def _inputs(op: str, x: np.ndarray, r: np.random.Generator) -> dict[str, Any]:
    n = x.shape[-1]
    if op == "layer_norm":
        return {"x": x, "gamma": r.standard_normal(n).astype(np.float32),
                "beta": r.standard_normal(n).astype(np.float32), "eps": 1e-5}
    if op == "softmax":   # tests/properties.py: finite logits are drawn within +-4 (chaotic beyond)
        return {"x": np.where(np.isfinite(x), np.clip(x, -4, 4), x).astype(np.float32)}
    if op == "mean_pool":
        return {"x": x.reshape(1, *x.shape), "mask": (r.random((1, x.shape[0])) < 0.8).astype(np.float32)}
    if op in ("add", "mul"):
        return {"a": x, "b": r.standard_normal(x.shape).astype(np.float32)}
    if op == "matmul":
        return {"a": x, "b": r.standard_normal((n, int(r.integers(1, 20)))).astype(np.float32), "transpose_b": False}
    if op == "scale":
        return {"x": x, "a": float(r.normal()), "b": float(r.normal())}
    return {"x": x}


def numerics(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    repeats = 1 if quick else 2
    for backend in ("webgpu", "cpu"):
        rt = gp.open_sync(backend=backend)
        for op in OPS:
            for kind in ROW_KINDS:
                for _ in range(repeats):
                    inputs = _inputs(op, _matrix(rng, kind), rng)

                    def trial(rt: Any = rt, op: str = op, inputs: dict = inputs) -> str:
                        try:
                            asyncio.run(check_op(rt, op, inputs))
                        except AssertionError as exc:
                            raise NotSurvived(f"disagrees with NumPy: {exc}") from None
                        return f"{op} agrees with NumPy on {inputs.get('x', inputs.get('a')).shape}"
                    t.trial(f"{op} on {backend}, a {kind} row", trial)
        rt.close()


# -- 5. bad arguments --------------------------------------------------------------------------------------

WG_MEMORY = ("var<workgroup> big: array<f32, {n}>;\n@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n"
             "@compute @workgroup_size(1) fn main() {{ big[0] = 1.0; o[0] = big[{last}]; }}")


def _argument_faults(rt: Any, r: np.random.Generator, backend: str) -> list[tuple[str, Any, Any, tuple[str, ...]]]:
    """(fault, call, error types, words the error must hold)."""
    width = 8 * int(r.integers(1, 5))
    q = rt.tensor(r.standard_normal((1, 3, width)).astype(np.float32))
    g = rt.tensor(np.ones(width, np.float32))
    m, k, n = (int(v) for v in r.integers(1, 30, 3))
    a, b = rt.tensor(np.ones((m, k), np.float32)), rt.tensor(np.ones((k + int(r.integers(1, 5)), n), np.float32))
    non_divisor = next(h for h in range(3, width + 2) if width % h)
    faults = [
        ("attention num_heads=2.5", lambda: rt.ops.attention(q, q, q, num_heads=2.5), TypeError, ("num_heads",)),
        ("attention num_heads='2'", lambda: rt.ops.attention(q, q, q, num_heads="2"), TypeError, ("num_heads",)),
        ("attention num_heads=None", lambda: rt.ops.attention(q, q, q, num_heads=None), TypeError, ("num_heads",)),
        (f"attention num_heads={non_divisor} (width {width})",
         lambda: rt.ops.attention(q, q, q, num_heads=non_divisor), ValueError, ("num_heads",)),
        ("attention num_heads=0", lambda: rt.ops.attention(q, q, q, num_heads=0), ValueError, ("num_heads",)),
        ("attention num_heads negative", lambda: rt.ops.attention(q, q, q, num_heads=-int(r.integers(1, 9))),
         ValueError, ("num_heads",)),
        ("empty((2**32, 2**32))", lambda: rt.empty((2**32, 2**32)), ValueError, ("int64",)),
        ("empty of a random overflowing shape", lambda: rt.empty(tuple(int(v) for v in r.integers(2**21, 2**31, 3))),
         ValueError, ("int64",)),
        ("empty((-1,))", lambda: rt.empty((-int(r.integers(1, 100)),)), ValueError, ("shape",)),
        ("empty((2.5, 3))", lambda: rt.empty((2.5, 3)), TypeError, ("integers",)),
        ("empty(('3',))", lambda: rt.empty(("3",)), TypeError, ("integers",)),
        ("kernel(bytes)", lambda: rt.kernel(b"@compute @workgroup_size(1) fn main() {}"), TypeError, ("decode",)),
        ("scale(x, 'x')", lambda: rt.ops.scale(q, "x"), TypeError, ("scale",)),
        ("scale(x, None)", lambda: rt.ops.scale(q, None), TypeError, ("scale",)),
        ("scale a beyond float32", lambda: rt.ops.scale(q, [2**200, 1e39, -3.5e38, -(10**400)][int(r.integers(0, 4))]),
         ValueError, ("within float32",)),
        ("matmul transpose_b='yes'", lambda: rt.ops.matmul(q, q, transpose_b="yes"), TypeError, ("transpose_b",)),
        ("layer_norm eps=-1", lambda: rt.ops.layer_norm(q, g, g, eps=-1.0), ValueError, ("eps",)),
        ("layer_norm eps=nan", lambda: rt.ops.layer_norm(q, g, g, eps=float("nan")), ValueError, ("eps",)),
        ("layer_norm eps='1e-5'", lambda: rt.ops.layer_norm(q, g, g, eps="1e-5"), TypeError, ("eps",)),
        (f"matmul {m}x{k} @ mismatched", lambda: rt.ops.matmul(a, b), ValueError, (f"({m}, {k})",)),
        ("softmax mask of the wrong width",
         lambda: rt.ops.softmax(q, rt.tensor(np.zeros(width + 1, np.float32))), ValueError, ("mask",)),
        ("embedding with float ids",
         lambda: rt.ops.embedding(rt.tensor(np.zeros(3, np.float32)), rt.tensor(np.ones((4, width), np.float32))),
         TypeError, ("ids",)),
    ]
    for dt in r.choice(["float64", "int64", "bool", "complex64", "uint8", "float16"], 3, replace=False):
        faults.append((f"tensor of {dt}", lambda dt=dt: rt.tensor(np.zeros(3, dt)), TypeError, (str(dt),)))
    if backend == "webgpu":
        words = int(r.integers(4097, 200000))
        faults += [
            (f"{words * 4:,} B of workgroup memory", lambda: rt.kernel(WG_MEMORY.format(n=words, last=words - 1)),
             gp.LimitExceeded, ("maxComputeWorkgroupStorageSize",)),
            ("an 8 GiB tensor", lambda: rt.empty(2**31), (gp.LimitExceeded, gp.OutOfMemory), ("bytes",)),
            ("shader garbage", lambda: rt.kernel("fn main( {" + "x" * int(r.integers(1, 9))), gp.ShaderCompileError,
             ("line",)),
        ]
    else:
        faults.append((f"cpu empty(1 << {int(r.integers(41, 45))})",
                       lambda: rt.empty(1 << int(r.integers(41, 45))), gp.OutOfMemory, ("cannot allocate",)))
    return faults


def arguments(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    for backend in ("webgpu", "cpu"):
        rt = gp.open_sync(backend=backend)
        for _ in range(1 if quick else 3):
            for what, call, types, words in _argument_faults(rt, rng, backend):
                t.trial(f"{what} on {backend}", lambda call=call, types=types, words=words: expect_error(
                    call, types, *words))
        if backend == "webgpu":   # the control: workgroup memory within the limit compiles and runs
            words = int(rng.integers(1, 4097))
            kernel_ok = WG_MEMORY.format(n=words, last=words - 1)

            def control(rt: Any = rt) -> str:
                out = rt.empty(1)
                rt.kernel(kernel_ok).dispatch(1, out)
                out.numpy()
                return f"{words * 4:,} B of workgroup memory compiles and runs"
            t.trial(f"{words * 4:,} B of workgroup memory (within the limit)", control)
        rt.close()
