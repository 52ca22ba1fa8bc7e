"""Fault classes of bench/faults.py that need the native webgpu runtime: threads sharing one runtime
(finding 1), a failed batch (2), ids computed on the device (3)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import gpuport as gp
import numpy as np
from faults import NotSurvived, Tally, expect_close, expect_error
from gpuport.host import references as K

WORDS = "the a GPU runtime shares one queue across threads while sentences embed quickly under load".split()


# -- 1. threads sharing one runtime --------------------------------------------------------------------

def _chain(rt: Any, r: np.random.Generator) -> str:
    m, k, n = (int(v) for v in r.integers(1, 48, 3))
    x = r.standard_normal((m, k)).astype(np.float32)
    w = r.standard_normal((k, n)).astype(np.float32)
    got = rt.ops.softmax(rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w)))).numpy()
    return expect_close(got, K.softmax_ref(K.gelu_ref(K.matmul_ref(x, w))), what=f"chain {m}x{k}x{n}")


def _lost_or_right(rt: Any, r: np.random.Generator) -> str:
    """A chain whose batch may hold another thread's rejected dispatch: right, or a typed error."""
    try:
        return _chain(rt, r)
    except gp.GpuValidationError as exc:
        return f"{type(exc).__name__} (its batch held the other thread's bad dispatch)"


def _in_threads(n: int, work: Callable[[int], list[tuple[str, bool, str]]]) -> list[tuple[str, bool, str]]:
    out: list[list[tuple[str, bool, str]]] = [[] for _ in range(n)]

    def worker(i: int) -> None:
        try:
            out[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - a thread that died is a fault not survived
            out[i] = [(f"thread {i}", False, f"the thread died: {type(exc).__name__}: {exc}")]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        if t.is_alive():
            return [("threads", False, "a thread hung for 120 s")]
    return [row for rows in out for row in rows]


def _outcome(what: str, fn: Callable[[], str]) -> tuple[str, bool, str]:
    try:
        return what, True, fn()
    except NotSurvived as exc:
        return what, False, str(exc)
    except Exception as exc:  # noqa: BLE001
        return what, False, f"unexpected {type(exc).__name__}: {exc}"


def threads(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    runs, chains = (2, 10) if quick else (5, 40)
    rt = gp.open_sync(backend="webgpu")
    for run in range(runs):
        seeds = rng.integers(0, 2**31, 4)

        def work(i: int, run: int = run, seeds: Any = seeds) -> list[tuple[str, bool, str]]:
            r = np.random.default_rng(int(seeds[i]))
            return [_outcome(f"run {run} thread {i} chain {j} (matmul>gelu>softmax)", lambda: _chain(rt, r))
                    for j in range(chains)]
        for row in _in_threads(4, work):
            t.record(*row)
    bad = rt.kernel(DEVICE_ONLY_BAD)          # 3 threads of chains beside one queueing dispatches the device rejects

    def neighbour(i: int) -> list[tuple[str, bool, str]]:
        if i == 3:
            for _ in range(chains):
                bad.dispatch(1, rt.empty(4), uniforms=[1.0])
            return []
        r = np.random.default_rng(int(rng.integers(0, 2**31)) + i)
        return [_outcome(f"thread {i} chain {j} beside a failing thread", lambda: _lost_or_right(rt, r))
                for j in range(chains)]
    for row in _in_threads(4, neighbour):
        t.record(*row)
    for backend in ("auto", "cpu"):        # one run on each other kind of runtime (placement state is shared too)
        with gp.open_sync(backend=backend) as other:
            seeds = rng.integers(0, 2**31, 4)

            def work(i: int, other: Any = other, seeds: Any = seeds, backend: str = backend) -> list:
                r = np.random.default_rng(int(seeds[i]))
                return [_outcome(f"{backend} thread {i} chain {j}", lambda: _chain(other, r)) for j in range(chains)]
            for row in _in_threads(4, work):
                t.record(*row)
    model = asyncio.run(gp.models.load("minilm-l6-v2", rt))
    for rnd in range(1 if quick else 3):
        texts = [" ".join(rng.choice(WORDS, int(rng.integers(2, 14)))) for _ in range(4)]
        want = asyncio.run(model.embed(texts))          # the reference: the same model, alone

        def embed(i: int, rnd: int = rnd, texts: list = texts, want: Any = want) -> list[tuple[str, bool, str]]:
            got = asyncio.run(model.embed(texts))
            return [_outcome(f"round {rnd} thread {i} embedding {j}",
                             lambda j=j: expect_close(got[j], want[j], rtol=0, atol=1e-5, what="embedding"))
                    for j in range(len(texts))]
        for row in _in_threads(4, embed):
            t.record(*row)
    rt.close()


# -- 2. a failed batch ---------------------------------------------------------------------------------

TWO_BINDINGS = """@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(1) fn main() { b[0] = a[0]; }"""
ONE_BINDING = """@group(0) @binding(0) var<storage, read_write> d: array<f32>;
@compute @workgroup_size(1) fn main() { d[0] = 1.0; }"""
# A uniform buffer smaller than its struct: only the device sees it, so the whole batch is dropped.
DEVICE_ONLY_BAD = """struct P { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(1) fn main() { o[0] = p.d.x; }"""


def _good_ops(rt: Any, r: np.random.Generator) -> list[tuple[Any, np.ndarray, str]]:
    """1-3 good ops queued (not read): (tensor, expected, name)."""
    out = []
    for _ in range(int(r.integers(1, 4))):
        m, n = (int(v) for v in r.integers(1, 40, 2))
        x = r.standard_normal((m, n)).astype(np.float32)
        kind = r.choice(["scale", "add", "gelu", "matmul"])
        if kind == "scale":
            a, b = float(r.normal()), float(r.normal())
            out.append((rt.ops.scale(rt.tensor(x), a, b), K.scale_ref(x, a=a, b=b), kind))
        elif kind == "add":
            y = r.standard_normal((m, n)).astype(np.float32)
            out.append((rt.ops.add(rt.tensor(x), rt.tensor(y)), K.add_ref(x, y), kind))
        elif kind == "gelu":
            out.append((rt.ops.gelu(rt.tensor(x)), K.gelu_ref(x), kind))
        else:
            w = r.standard_normal((n, 7)).astype(np.float32)
            out.append((rt.ops.matmul(rt.tensor(x), rt.tensor(w)), K.matmul_ref(x, w), kind))
    return out


def _bad_dispatch(rt: Any, r: np.random.Generator, kernels: dict) -> tuple[str, Callable[[], None], tuple, str]:
    """(name, the dispatch, error types it may raise at once, a word the error must hold)."""
    one = rt.tensor(np.ones(4, np.float32))
    kind = r.choice(["alias", "too few bindings", "too many bindings", "negative workgroups",
                     "fractional workgroups", "oversized workgroups", "four dimensions", "device-only"])
    if kind == "alias":
        return kind, lambda: kernels["two"].dispatch(1, one, one), (gp.GpuValidationError,), "same buffer"
    if kind == "too few bindings":
        return kind, lambda: kernels["two"].dispatch(1, one), (gp.GpuValidationError,), "declares 2 storage"
    if kind == "too many bindings":
        extra = [rt.empty(4) for _ in range(int(r.integers(2, 5)))]
        return kind, lambda: kernels["one"].dispatch(1, *extra), (gp.GpuValidationError,), "declares 1 storage"
    if kind == "negative workgroups":
        wg = int(r.integers(-2**31, 0))
        wgs = r.choice([0, 1, 2])
        shape = [1, 1, 1][:wgs + 1]
        shape[int(r.integers(0, len(shape)))] = wg
        return f"{kind} {tuple(shape)}", lambda: kernels["one"].dispatch(tuple(shape), one), (ValueError,), "workgroup"
    if kind == "fractional workgroups":
        wg = float(r.integers(0, 1000)) + float(r.choice([0.1, 0.5, 0.9, 0.999]))
        return f"{kind} {wg}", lambda: kernels["one"].dispatch(wg, one), (TypeError,), "workgroup"
    if kind == "oversized workgroups":
        wg = int(r.integers(65536, 2**40))
        return f"{kind} {wg}", lambda: kernels["one"].dispatch((1, wg), one), (gp.LimitExceeded,), "65,535"
    if kind == "four dimensions":
        return kind, lambda: kernels["one"].dispatch((1, 1, 1, 1), one), (ValueError,), "workgroup"
    return kind, lambda: kernels["bad"].dispatch(1, rt.empty(4), uniforms=[1.0]), (), ""


def _read_good(tensor: Any, want: np.ndarray, name: str) -> str:
    """Read twice: each read is the right values or BatchFailed/GpuValidationError; never zeros."""
    seen = []
    for attempt in (1, 2):
        try:
            expect_close(tensor.numpy(), want, what=f"{name} read {attempt}")
            seen.append("correct")
        except gp.GpuValidationError as exc:
            seen.append(type(exc).__name__)
    if seen[0] == "correct" and seen[1] != "correct":
        raise NotSurvived(f"{name}: read correctly, then {seen[1]}")
    return f"{name}: {'/'.join(seen)}"


def failed_batch(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    rt = gp.open_sync(backend="webgpu")
    kernels = {"two": rt.kernel(TWO_BINDINGS), "one": rt.kernel(ONE_BINDING), "bad": rt.kernel(DEVICE_ONLY_BAD)}
    for i in range(15 if quick else 80):
        goods = _good_ops(rt, rng)
        name, dispatch, types, word = _bad_dispatch(rt, rng, kernels)

        def trial(goods: list = goods, dispatch: Callable = dispatch, types: tuple = types, word: str = word) -> str:
            said = expect_error(dispatch, types, word) if types else (dispatch() or "queued")
            reads = [_read_good(tensor, want, n) for tensor, want, n in goods]
            tensor, want, n = goods[-1]        # an op on a good output: right, or BatchFailed at once
            try:
                expect_close(rt.ops.scale(tensor, 1.0, 1.0).numpy(), want + 1, what=f"{n} + 1")
            except gp.BatchFailed:
                pass
            x = rng.standard_normal(9).astype(np.float32)
            expect_close(rt.ops.scale(rt.tensor(x), 2.0, 0.0).numpy(), 2 * x, what="a fresh op afterwards")
            if not types and all(r.endswith("correct/correct") for r in reads):
                raise NotSurvived("a dispatch the device must reject left no error at all")
            return f"{said[:90]}; {', '.join(reads)}"
        t.trial(f"{name} after {'+'.join(n for _, _, n in goods)}", trial)
    rt.close()


# -- 3. ids computed on the device -----------------------------------------------------------------------

ADD_IDS = """@group(0) @binding(0) var<storage, read> a: array<i32>;
@group(0) @binding(1) var<storage, read> b: array<i32>;
@group(0) @binding(2) var<storage, read_write> o: array<i32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&o)) { o[g.x] = a[g.x] + b[g.x]; }
}"""


def _ids(r: np.random.Generator, rows: int, bad: str) -> np.ndarray:
    n = int(r.integers(1, 40))
    ids = r.integers(0, rows, n).astype(np.int64)
    if bad != "none":
        picks = {"just past": [rows], "far past": [int(r.integers(rows, 2**31 - 1))], "int32 max": [2**31 - 1],
                 "minus one": [-1], "negative": [int(r.integers(-2**31, 0))], "int32 min": [-2**31],
                 "several": [rows + 1, -7, int(r.integers(rows, 10**6))]}[bad]
        where = r.choice(n, size=min(n, len(picks)), replace=False)
        ids[where] = picks[:len(where)]
    return ids.astype(np.int32)


def device_ids(t: Tally, rng: np.random.Generator, quick: bool) -> None:
    rt = gp.open_sync(backend="webgpu")
    add = rt.kernel(ADD_IDS)
    kinds = ["none", "just past", "far past", "int32 max", "minus one", "negative", "int32 min", "several"]
    for i in range(16 if quick else 64):
        bad = kinds[i % len(kinds)]
        rows, hidden = int(rng.integers(1, 60)), int(rng.integers(1, 17))
        table = rng.standard_normal((rows, hidden)).astype(np.float32)
        ids = _ids(rng, rows, bad)
        part = rng.integers(-2**20, 2**20, ids.size).astype(np.int64)
        a, b = part.astype(np.int32), (ids.astype(np.int64) - part)
        ok = (b >= -2**31) & (b < 2**31)
        a, b = np.where(ok, a, 0).astype(np.int32), np.where(ok, b, ids).astype(np.int32)   # a + b == ids

        def trial(bad: str = bad, table: np.ndarray = table, ids: np.ndarray = ids, a: Any = a, b: Any = b) -> str:
            on_device = rt.empty(ids.size, "int32")
            add.dispatch((ids.size + 63) // 64, rt.tensor(a), rt.tensor(b), on_device)
            shape = (ids.size,) if ids.size % 2 or rng.random() < 0.5 else (2, ids.size // 2)
            rows_t = rt.ops.embedding(on_device.reshape(shape), rt.tensor(table))
            later = rt.ops.scale(rows_t, 2.0, 1.0)      # computed from the rows before anything is read
            if bad == "none":
                expect_close(later.numpy(), 2 * table[ids].reshape(*shape, -1) + 1, what="scaled rows")
                return expect_close(rows_t.numpy(), table[ids].reshape(*shape, -1), rtol=0, atol=0,
                                    what="rows of good device ids")
            first, second = (later, rows_t) if rng.random() < 0.5 else (rows_t, later)
            said = expect_error(first.numpy, IndexError, "embedding", "outside the table")
            expect_error(second.numpy, IndexError, "outside the table")
            expect_error(later.numpy, IndexError, "outside the table")     # what was computed from them too
            if not any(str(v) in said for v in ids[(ids < 0) | (ids >= table.shape[0])]):
                raise NotSurvived(f"the error names no bad id: {said[:120]}")
            expect_error(rows_t.numpy, IndexError, "outside the table")    # never zero rows on a second read
            good = rng.integers(0, table.shape[0], 3).astype(np.int32)
            expect_close(rt.ops.embedding(rt.tensor(good), rt.tensor(table)).numpy(), table[good], rtol=0, atol=0,
                         what="embedding afterwards")
            return said
        t.trial(f"device ids ({bad}) into a {rows}-row table", trial)
    rt.close()
    for backend in ("webgpu", "cpu"):          # the same ids from the host: IndexError at the call
        with gp.open_sync(backend=backend) as r:
            for bad in kinds[1:]:
                rows = int(rng.integers(1, 60))
                ids = _ids(rng, rows, bad)
                table = r.tensor(np.zeros((rows, 4), np.float32))
                t.trial(f"host ids ({bad}) on {backend}", lambda ids=ids, table=table: expect_error(
                    lambda: r.ops.embedding(r.tensor(ids), table).numpy(), IndexError, "outside"))
