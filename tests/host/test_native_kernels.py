"""The native build of gpuport's SIMD kernels (gpuport.host.native_kernels: hostkernels/*.c compiled for this machine
into .cache/native/libgpuport_simd.so by `make setup`).

Every case of tests/wasm_cases.py (the page's kernel cases: tile edges, 1x1, odd sizes, batched and
broadcast operands, MiniLM shapes, masks, the packed-weight cache, IEEE edges through hostops) runs here
on the native engine, with the same tolerances, justified there. The tests below add what only the native
build has: larger products, its routing in hostops (measured thresholds), threads, and the library's
absence. A missing library fails these tests with its path; nothing is skipped.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import wasm_cases
from cases import U, close
from gpuport.host import hostops as H
from gpuport.host import native_kernels as N
from gpuport.host import references as K
from gpuport.ops.opspecs import OPS
from wasm_cases import CASES, WASM_ONLY, check_matmul

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def native():
    """The native engine, bound for wasm_cases; fails, naming the file, when the library is not loaded."""
    assert N.available(), f"native SIMD kernels unavailable: {N.reason()}"
    previous = wasm_cases.use(N)
    yield N
    wasm_cases.use(previous)


@pytest.mark.parametrize("name", [n for n in CASES if n not in WASM_ONLY])
def test_wasm_case_natively(native, name, coverage_matrix, request):
    calls = wasm_cases.run(name)
    coverage_matrix.record(request.node.nodeid, [{"tier": "cpu", "host": {"native-simd": calls}}], device=None,
                           host="native", thread="main")


def test_makefile_builds_the_library_gpuport_loads():
    make = (ROOT / "Makefile").read_text()
    assert re.search(rf"^NATIVE_LIB\s*:=\s*{re.escape(str(N.LIBRARY))}\s*$", make, re.M), N.LIBRARY
    assert N.library_path() == ROOT / N.LIBRARY or os.environ.get(N.ENV)


def _uniform(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return r.uniform(-1, 1, shape).astype(np.float32)


def test_large_products(native):
    # Past the L2 row blocking (65536 / kb rows) and with a row count that is no multiple of the tile; k in blocks
    # (more than 192 steps and more than 3 tiles' rows: two near-equal blocks, six, an uneven last one) with a last
    # panel narrower than the tile's columns, which runs over all of k at once.
    r = np.random.default_rng(20)
    for m, k, n in ((25, 193, 65), (257, 1000, 67), (33, 385, 32)):
        check_matmul(_uniform(r, (m, k)), _uniform(r, (k, n)), _uniform(r, (n,)), what=f"{m}x{k}x{n}")
    a, w, b = _uniform(r, (300, 384)), _uniform(r, (384, 1536)), _uniform(r, (1536,))
    check_matmul(a, w, b, what="300x384x1536")
    check_matmul(_uniform(r, (301, 1536)), _uniform(r, (383, 1536)), transpose_b=True, what="301x1536x383^T")
    # C past L2 and a wide weight: row blocks of 64 rows (their partial sums kept in L2: matmul.c CB), the last 4;
    # each output's sum keeps its order however the rows are blocked, so a row equals that row alone to the bit.
    wide_a, wide_w = _uniform(r, (260, 400)), _uniform(r, (2100, 400))
    check_matmul(wide_a, wide_w, transpose_b=True, what="260x400x2100^T")
    whole = N.matmul(wide_a, wide_w, transpose_b=True)
    for i in (0, 63, 64, 200, 259):
        assert np.array_equal(whole[i:i + 1], N.matmul(wide_a[i:i + 1], wide_w, transpose_b=True)), i
    w.flags.writeable = b.flags.writeable = False
    check_matmul(a, w, b, what="300x384x1536, packed and cached")


def _delta(before: dict[str, dict[str, int]], op: str) -> dict[str, int]:
    after = H.calls().get(op, {})
    return {e: n - before.get(op, {}).get(e, 0) for e, n in after.items() if n - before.get(op, {}).get(e, 0)}


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_hostops_routes_by_the_measured_rules(native, monkeypatch, blas_threads):
    if os.environ.get(H.ENV, "").lower() == "numpy":
        assert H.backend_name() == "numpy" and set(H.engines().values()) == {"numpy"}, H.engines()
        return
    assert H.backend_name() == "native-simd", (H.backend_name(), H.reason())
    assert H.engines() == {"matmul": "native-simd", "gelu": "native-simd", "quick_gelu": "native-simd",
                           "softmax": "native-simd",
                           "layer_norm": "native-simd", "attention": "native-simd", "l2_normalize": "numpy"}
    r = np.random.default_rng(21)
    w, bias = _uniform(r, (1152, 384)), _uniform(r, (1152,))
    w.flags.writeable = bias.flags.writeable = False
    monkeypatch.setattr(H, "_BLAS_THREADS", blas_threads)
    lo, hi = H._NATIVE_MATMUL_MIN_ROWS, H._NATIVE_MATMUL_MAX_ROWS_MT
    N.clear_cache()
    packs = N.ENGINE.packs
    # one BLAS thread: the C kernel from 2 rows on; several: up to hi rows, then the BLAS on every core
    beyond = "native-simd" if blas_threads == 1 else "numpy"
    expect = {1: "numpy", lo: "native-simd", hi: "native-simd", hi + 1: beyond, 200: beyond}
    for m, engine in expect.items():
        a = _uniform(r, (m, 384))
        before = H.calls()
        got = OPS["matmul"].run_host([a, w, bias], {"transpose_b": True})
        assert _delta(before, "matmul") == {engine: 1}, (m, _delta(before, "matmul"))
        close(got, K.matmul_ref(a, w, bias, transpose_b=True), atol=2 * 385 * U * (np.abs(a) @ np.abs(w.T) + np.abs(bias)),
              what=f"hostops matmul {m} rows")
    assert N.ENGINE.packs == packs + 1, "the read-only weight was packed more than once"
    before = H.calls()
    H.matmul(_uniform(r, (lo, 384)), w.copy(), bias, transpose_b=True)   # writable: packing per call loses
    assert _delta(before, "matmul") == {"numpy": 1}
    x = r.standard_normal((12, 1536)).astype(np.float32)
    before = H.calls()
    H.gelu(x)
    H.layer_norm(x, x[0], x[1], eps=1e-12)
    assert all(_delta(before, op) == {"native-simd": 1} for op in ("gelu", "layer_norm")), H.calls()
    for n in (3, 128, 129, 300):   # the C kernels run the CPU's full width: every row length is theirs
        scores = r.standard_normal((2, 12, 7, n)).astype(np.float32)
        before = H.calls()
        close(H.softmax(scores), K.softmax_ref(scores), rtol=1e-5, atol=1e-6, what=f"hostops softmax n={n}")
        assert _delta(before, "softmax") == {"native-simd": 1}, (n, _delta(before, "softmax"))
    for s in (2, 64, 65, 256):
        q, k, v = (r.standard_normal((1, s, 64)).astype(np.float32) for _ in range(3))
        before = H.calls()
        got = H.attention(q, k, v, None, num_heads=2)
        assert _delta(before, "attention") == {"native-simd": 1}, (s, _delta(before, "attention"))
        close(got, K.attention_ref(q, k, v, None, num_heads=2), rtol=1e-4, atol=2e-5 * math.sqrt(32),
              what=f"hostops attention {s} keys")


def test_non_finite_answers_are_numpys(native):
    # A NaN or infinity anywhere: the C answer is discarded and NumPy's kernel answers (hostops' rule).
    r = np.random.default_rng(22)
    x = r.standard_normal((4, 300)).astype(np.float32)
    x[1, 7], x[2, 9] = np.nan, np.inf
    for op, args in (("gelu", (x,)), ("softmax", (x,)), ("layer_norm", (x, x[0] * 0 + 1, x[0] * 0))):
        before = H.calls()
        got = H.KERNELS[op](*args)
        with np.errstate(all="ignore"):
            want = H.NUMPY[op](*args)
        assert np.array_equal(np.isnan(got), np.isnan(want)), op
        assert np.array_equal(got[np.isfinite(want)], want[np.isfinite(want)]), op
        if H.backend_name() == "native-simd":
            assert _delta(before, op) == {"numpy": 1}, (op, _delta(before, op))
    assert np.isnan(N.softmax(x)[1]).all() and np.isnan(N.gelu(x)[1, 7]), "the C kernels hid a NaN"


def test_threads_get_their_own_scratch(native):
    # ctypes releases the GIL inside a kernel: concurrent calls must not share scratch space.
    r = np.random.default_rng(23)
    jobs = []
    for i in range(8):
        a, b = _uniform(r, (20 + i, 96)), _uniform(r, (64 + 8 * i, 96))
        q, k, v = (r.standard_normal((1, 30 + i, 64)).astype(np.float32) for _ in range(3))
        jobs.append((a, b, q, k, v))
    errors: list[str] = []

    def work(a, b, q, k, v):
        for _ in range(20):
            got = N.matmul(a, b, transpose_b=True)
            if not np.allclose(got, a @ b.T, atol=1e-4):
                errors.append(f"matmul {a.shape}")
            att = N.attention(q, k, v, None, num_heads=2)
            if not np.allclose(att, K.attention_ref(q, k, v, None, num_heads=2), atol=1e-4):
                errors.append(f"attention {q.shape}")

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _probe(env: dict[str, str]) -> str:
    code = ("import gpuport\nfrom gpuport.host import hostops as H, native_kernels as N\n"
            "print(N.available(), H.backend_name(), sorted(set(H.engines().values())), H.reason(), sep='|')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "py"), **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_without_the_library_gpuport_imports_and_says_why():
    got = _probe({N.ENV: "/nonexistent/libgpuport_simd.so", H.ENV: ""})
    assert got == "False|numpy|['numpy']|/nonexistent/libgpuport_simd.so is missing: `make setup` builds it " \
                  f"(make {N.LIBRARY})", got
    assert _probe({N.ENV: "off", H.ENV: ""}) == f"False|numpy|['numpy']|{N.ENV}=off"


def test_host_kernels_numpy_forces_numpy():
    assert _probe({H.ENV: "numpy"}).split("|")[1:] == ["numpy", "['numpy']", f"{H.ENV}=numpy"]


def test_blas_threads_follow_the_environment(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert H.blas_threads() >= 1   # the CPUs this process may use
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert H.blas_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert H.blas_threads() == 2
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert H.blas_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "all")   # not a count: the next setting decides
    assert H.blas_threads() == 2


def test_encoder_layer_on_threads_gives_the_one_thread_answer(native):
    """Natively the fused layer spreads over the library's pool (hostkernels/pool.c): QKV rows, heads, rows;
    or, up to encoder.c's COLUMN_ROWS (1024) rows, each product by its weight's column panels. Parts start at
    whole 4-row tiles, whole panels and whole heads, so every value is computed exactly as on one thread: the
    answers are identical, and the reference's. Shapes: rows that are no multiple of the tile or of the thread
    count, fewer heads than threads, a padded batch, both splits (up to 66 rows: columns; 1030: rows)."""
    r = np.random.default_rng(24)
    for b, s, h, heads, f in ((1, 13, 48, 4, 64), (3, 7, 24, 2, 40), (2, 33, 384, 12, 1536), (1, 2, 16, 1, 8),
                              (2, 515, 24, 2, 40)):
        layer = wasm_cases._encoder_layer(r, h, f)
        x = r.standard_normal((b, s, h)).astype(np.float32)
        mask = np.zeros((b, s), np.float32)
        mask[-1, s // 2 + 1:] = -1e9
        one, bad = N.ENGINE.encoder_layer(x, layer, mask, num_heads=heads, eps=1e-12, threads=1)
        assert bad == 0
        close(one, K.encoder_layer_ref(x, layer, mask, num_heads=heads, eps=1e-12), atol=2e-4,
              what=f"encoder layer b{b} s{s} h{h}")
        for threads in (2, 3, 5):
            got, bad = N.ENGINE.encoder_layer(x, layer, mask, num_heads=heads, eps=1e-12, threads=threads)
            assert bad == 0 and np.array_equal(got, one), (b, s, h, threads, float(np.abs(got - one).max()))


def test_encoder_layer_from_many_python_threads_at_once(native):
    """Python threads share the pool: a caller that finds it busy runs its parts itself (never waits on
    another's job), a job uses no more workers than it asked for, and every caller gets its own answer."""
    r = np.random.default_rng(25)
    layer = wasm_cases._encoder_layer(r, 64, 96)
    xs = [r.standard_normal((2, 40, 64)).astype(np.float32) for _ in range(6)]
    want = [N.ENGINE.encoder_layer(x, layer, None, num_heads=4, eps=1e-12, threads=1)[0] for x in xs]
    # a 5-thread job first grows the pool: its extra workers must stay out of the 2-thread jobs below
    # (whose scratch holds 2 threads' attention panels)
    assert np.array_equal(N.ENGINE.encoder_layer(xs[0], layer, None, num_heads=4, eps=1e-12, threads=5)[0], want[0])
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(20):
                got[i] = N.ENGINE.encoder_layer(xs[i], layer, None, num_heads=4, eps=1e-12, threads=2)[0]
                assert np.array_equal(got[i], want[i])
        except BaseException as exc:   # reported below, with the thread's index
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not errors and all(not t.is_alive() for t in workers), errors
    assert len(got) == len(xs)
