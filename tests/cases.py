"""Kernel parity and error cases, written once: pytest runs them natively (tests/ops/test_kernels.py) and the
e2e lane runs the very same source inside Pyodide in each browser (e2e/test_page.py).

Each case is `async def name(rt)`; it raises AssertionError (or the wrong error) on failure.
Only numpy and gpuport are imported, so the module runs unchanged in a page. `run_case` is how every runner
calls one: on a device lane (a runtime pinned to its GPU) it asserts from `rt.info()["ran"]` that each op
the case declares (`device=`) ran on the device and that nothing ran on the host, so a parity case can never
pass by answering on NumPy. Cases that open a runtime of their own check it inside (`proves_on_device`).

Tolerances (float32, u = 2**-24 unit roundoff):
- add, mul, scale, embedding: the GPU does the same single f32 operation (scale may fuse to one fma):
  within 1 ulp, checked as rtol 2e-7.
- matmul: Higham's bound for a K-term dot product, |err| <= K*u*(|a| @ |b|) elementwise, doubled since
  the reference rounds too; summation order is all that differs, so this bound must hold.
- gelu: erf by A&S 7.1.26 (1.5e-7 abs) plus f32 exp: atol 1e-6.
- softmax, attention: exp and a sum over n keys in a different order: rtol 1e-5, atol 1e-6 (outputs <= 1).
- layer_norm, l2_normalize, sum, mean, mean_pool: n-term sums in a different order: relative error
  <= n*u; stated per case as atol proportional to n*u times the output's scale.
- conv1d: a matmul over the C_in*K (channel, tap) pairs (im2col), so matmul's bound with K = C_in*K and
  |a| @ |b| the convolution of |x| by |weight| (padding contributes exact zeros); with GELU as matmul's.
- stft_power: re and im are n_fft-term sums of x*w*cos (window and twiddles rounded once from float64, the
  product once, each fma once): |err| <= e = 2 (n_fft + 3) u S per frame, S = sum |x*w| (doubled for slack);
  the power re^2 + im^2 then errs by <= 2 e (|re| + |im|) + 2 e^2 <= 2 e sqrt(2 P) + 2 e^2, plus 4 u P for
  its own roundings (P the reference's power). The float64 reference is np.fft.rfft.
- log_mel: WGSL's log2 is within 3 ulp outside [0.5, 2] and 2**-21 absolute inside, so log10 = log2 * log10(2)
  errs by <= 3.6e-7 |L| + 1.5e-7 (plus u |L| for the product), the floor max(L) - 8 alike; (max + 4) / 4 adds
  one rounding: |err| <= 1.2e-7 (|L| + |M| + 12) + 4e-8 (L the value's log10, M the max's), doubled. Zero rows
  are exactly zero.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from fnmatch import fnmatch
from types import SimpleNamespace

import gpuport as gp
import numpy as np
from gpuport.formats.gguf import GGML_TYPE_IDS, TensorInfo
from gpuport.host import hostops, native_kernels, wasm_kernels, wasm_threads
from gpuport.host import references as K
from gpuport.host.quant import as_words, dequantize, q8_matmul_ref
from gpuport.models import audio
from gpuport.models import llama_ref as L
from gpuport.models.bpe import bytes_to_unicode
from gpuport.models.llama import Llama
from gpuport.models.sampling import Sampler, SamplingParams
from properties import PROPERTIES, check_seeded

U = 2.0 ** -24
CASES: dict[str, "Case"] = {}


class Case:
    """A case body, the lists it is on ("webgpu": the device parity list, "cpu", "auto"), and the ops (names as
    `rt.info()["ran"]` counts them; shell patterns allowed, "kernel:*") it proves on the lane's device."""

    def __init__(self, fn, backends: tuple[str, ...], device: tuple[str, ...], own: bool) -> None:
        self.fn, self.name, self.backends, self.device, self.own = fn, fn.__name__, backends, device, own

    async def __call__(self, rt):
        return await self.fn(rt)


def case(*, backends: tuple[str, ...] = ("webgpu", "cpu"), device: tuple[str, ...] = (), own: bool = False):
    """`own`: the case proves its `device` ops on a runtime it opens itself (with proves_on_device inside)."""
    def register(fn):
        CASES[fn.__name__] = Case(fn, backends, device, own)
        return fn
    return register


def names_for(backend: str) -> list[str]:
    return [n for n, c in CASES.items() if backend in c.backends]


def check_on_device(rt, before: dict, ops: tuple[str, ...], by_design: frozenset = frozenset()) -> None:
    """Since `before` (rt.info()["ran"]), each of `ops` ran on rt's device at least once and nothing ran on rt's
    host, but for the ops a case says its tier sends to the host by design (`by_design`)."""
    delta = {name: {where: n - before.get(name, {}).get(where, 0) for where, n in per.items()}
             for name, per in rt.info()["ran"].items()}
    on_host = {name: d for name, d in delta.items() if d.get("cpu", 0) > 0 and name not in by_design}
    assert not on_host, f"ran on the host, not the device: {on_host}"
    for op in ops:
        assert op in by_design or any(fnmatch(name, op) and d.get("webgpu", 0) > 0 for name, d in delta.items()), \
            f"{op} did not run on the device (what ran: { {n: d for n, d in delta.items() if any(d.values())} })"


def host_calls() -> dict:
    """Calls per SIMD host kernel so far, per engine that has them linked (the page's one-thread WebAssembly build,
    its pool, the native library)."""
    return {e.name: dict(e.calls) for e in (wasm_kernels.ENGINE, wasm_threads.ENGINE, native_kernels.ENGINE)}


def ran_snapshot(rt) -> dict:
    """What rt has run so far: dispatches per WGSL kernel, op calls per strategy; and the host kernels' calls."""
    return {"tier": rt.tier, "kernels": dict(rt.info()["kernels"]),
            "strategies": dict(rt.fallback.get_performance_metrics()["strategies"]), "host": host_calls()}


def _grown(before: dict, after: dict) -> dict:
    """Counts that grew (a counter lower than before was reset meanwhile: all of it is new)."""
    return {k: (n - before.get(k, 0) if n >= before.get(k, 0) else n) for k, n in after.items() if n != before.get(k, 0)}


def ran_delta(before: dict, after: dict) -> dict:
    """What ran between two snapshots of one runtime, and its tier."""
    host = {engine: _grown(before["host"].get(engine, {}), per) for engine, per in after["host"].items()}
    return {"tier": after["tier"], "kernels": _grown(before["kernels"], after["kernels"]),
            "strategies": _grown(before["strategies"], after["strategies"]), "host": {k: v for k, v in host.items() if v}}


# What the blocks of the case running now proved on runtimes of its own (proves_on_device), for run_case to report.
_PROVEN: list[dict] = []


@contextmanager
def proves_on_device(rt, *ops: str):
    """The block ran each of `ops` on rt's device at least once and nothing at all on rt's host."""
    before, snapshot = rt.info()["ran"], ran_snapshot(rt)
    yield
    check_on_device(rt, before, ops)
    _PROVEN.append(ran_delta(snapshot, ran_snapshot(rt)))


async def run_case(name: str, rt, device: bool) -> list[dict]:
    """Run one case; on a device lane (`device`: rt is pinned to its GPU), prove where its ops ran. A case may
    return the ops its lane's tier answers on the host by design (stating why, and asserting it). Returns what
    ran, one ran_delta per runtime (rt's, and each the case proved work on): the coverage matrix's proofs."""
    c = CASES[name]
    _PROVEN.clear()
    snapshot = ran_snapshot(rt)
    if not device:
        await c(rt)
    else:
        before = rt.info()["ran"]
        by_design = await c(rt) or ()
        check_on_device(rt, before, () if c.own else c.device, frozenset(by_design))
    return [ran_delta(snapshot, ran_snapshot(rt)), *_PROVEN]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def close(got: np.ndarray, want: np.ndarray, *, rtol: float = 0.0, atol: float | np.ndarray = 0.0,
          what: str = "") -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.float64))
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err - bound, -np.inf))), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} values out of tolerance; worst at {i}: "
                             f"got {got[i]!r}, want {want[i]!r} (max abs err {err.max():.3g})")


async def expect(exc_type, fn, *needles: str):
    """Run fn (sync or async, reading results if it returns a Tensor) and require exc_type with needles."""
    try:
        result = fn()
        if hasattr(result, "__await__"):
            result = await result
        if isinstance(result, gp.Tensor):
            await result.read()
    except exc_type as exc:
        text = str(exc)
        for needle in needles:
            assert needle in text, f"{exc_type.__name__} message lacks {needle!r}: {text}"
        return exc
    raise AssertionError(f"expected {exc_type.__name__}, nothing was raised")


# -- elementwise ------------------------------------------------------------------------------------

for _shape_a, _shape_b in [((1,), (1,)), ((7, 13), (7, 13)), ((7, 13), (13,)), ((3, 17, 33), (33,)),
                           ((3, 17, 33), (17, 33)), ((13,), (5, 13))]:
    for _op in ("add", "mul"):
        def _make(op=_op, sa=_shape_a, sb=_shape_b):
            async def fn(rt):
                r = rng(1)
                a = r.standard_normal(sa).astype(np.float32)
                b = r.standard_normal(sb).astype(np.float32)
                got = await getattr(rt.ops, op)(rt.tensor(a), rt.tensor(b)).read()
                close(got, getattr(K, f"{op}_ref")(a, b), rtol=2e-7, what=f"{op} {sa} {sb}")
            fn.__name__ = f"{op}_{'x'.join(map(str, sa))}_by_{'x'.join(map(str, sb))}"
            return fn
        case(device=(_op,))(_make())


@case(device=("scale",))
async def scale_odd(rt):
    x = rng(2).standard_normal((37, 129)).astype(np.float32)
    got = await rt.ops.scale(rt.tensor(x), 1.5, -0.25).read()
    close(got, K.scale_ref(x, a=1.5, b=-0.25), rtol=2e-7, atol=1e-7, what="scale")


@case(backends=("webgpu",), device=("scale",))
async def scale_large_two_dimensional_grid(rt):
    # 2**24 + 4097 elements need more than 65535 workgroups of 256: the grid spills into y (a GPU launch's
    # geometry: the cpu lists have nothing to learn from 16M host multiply-adds).
    n = (1 << 24) + 4097
    x = np.arange(n, dtype=np.float32) % 1021
    got = await rt.ops.scale(rt.tensor(x), 2.0, 1.0).read()
    close(got, K.scale_ref(x, a=2.0, b=1.0), rtol=2e-7, what="scale large")


for _shape in [(1,), (1, 1), (7, 13), (37, 129), (3, 17, 33)]:
    def _make(shape=_shape):
        async def fn(rt):
            x = (rng(3).standard_normal(shape) * 3).astype(np.float32)
            got = await rt.ops.gelu(rt.tensor(x)).read()
            close(got, K.gelu_ref(x), atol=1e-6, what=f"gelu {shape}")
        fn.__name__ = f"gelu_{'x'.join(map(str, shape))}"
        return fn
    case(device=("gelu",))(_make())


@case(backends=("cpu",))
async def gelu_reference_matches_exact_erf(rt):
    # The oracle itself: its vectorised erf against math.erf, so a GPU match means a true GELU.
    x = np.linspace(-8, 8, 4001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(K.gelu_ref(x.astype(np.float32)) - exact).max() < 1e-6


# -- matmul -----------------------------------------------------------------------------------------

def _matmul_case(name, a_shape, b_shape, *, bias=False, transpose_b=False, activation=None, seed=4):
    # Higham's bound on the product; with activation="gelu" carried through GELU, whose slope is at most
    # 1.13 in magnitude, plus GELU's own atol 1e-6 (A&S 7.1.26 and f32 exp: the gelu cases).
    async def fn(rt):
        r = rng(seed)
        a = r.uniform(-1, 1, a_shape).astype(np.float32)
        b = r.uniform(-1, 1, b_shape).astype(np.float32)
        n = b_shape[-2] if transpose_b else b_shape[-1]
        k = a_shape[-1]
        bv = r.uniform(-1, 1, (n,)).astype(np.float32) if bias else None
        before = rt.fallback.get_performance_metrics()["fused_epilogues"]
        got = await rt.ops.matmul(rt.tensor(a), rt.tensor(b), bias=rt.tensor(bv) if bias else None,
                                  transpose_b=transpose_b, activation=activation).read()
        want = K.matmul_ref(a, b, bv, transpose_b=transpose_b, activation=activation)
        bb = np.swapaxes(b, -1, -2) if transpose_b else b
        bound = 2 * (k + 1) * U * (np.abs(a) @ np.abs(bb) + (np.abs(bv) if bias else 0)) + 1e-30
        close(got, want, atol=bound if activation is None else 1.13 * bound + 1e-6, what=name)
        fused = rt.fallback.get_performance_metrics()["fused_epilogues"] - before
        # in the epilogue only where a register-blocked kernel ran it (K a multiple of 4 on the device)
        assert fused in (0, 1) and (fused == 0 or (activation and rt.backend == "webgpu")), fused
    fn.__name__ = name
    case(device=("matmul",))(fn)


_matmul_case("matmul_1x1_by_1x1", (1, 1), (1, 1))
_matmul_case("matmul_7x13_by_13x5", (7, 13), (13, 5))
_matmul_case("matmul_empty_inner_4x0_by_0x8_bias", (4, 0), (0, 8), bias=True)
_matmul_case("matmul_37x129_by_129x65_bias", (37, 129), (129, 65), bias=True)
_matmul_case("matmul_37x129_by_65x129_transposed", (37, 129), (65, 129), transpose_b=True)
_matmul_case("matmul_batched_3x17x33_by_33x19", (3, 17, 33), (33, 19), bias=True)
_matmul_case("matmul_batched_both_3x17x33_by_3x33x19", (3, 17, 33), (3, 33, 19))
_matmul_case("matmul_batched_both_transposed_2x3x9x40_by_2x3x11x40", (2, 3, 9, 40), (2, 3, 11, 40),
             transpose_b=True)
_matmul_case("matmul_large_256x384_by_384x1536_bias", (256, 384), (384, 1536), bias=True)
# K (and N without transpose_b) multiples of 4: the register-blocked variants, on rows and columns that are
# not multiples of their blocks (one row, one column, odd, several batches, large).
_matmul_case("matmul_rb_1x4_by_1x4_transposed", (1, 4), (1, 4), transpose_b=True)
_matmul_case("matmul_rb_37x100_by_53x100_transposed_bias", (37, 100), (53, 100), bias=True, transpose_b=True)
_matmul_case("matmul_rb_19x20_by_20x36_bias", (19, 20), (20, 36), bias=True)
_matmul_case("matmul_rb_batched_3x17x32_by_3x32x12", (3, 17, 32), (3, 32, 12))
_matmul_case("matmul_rb_large_200x1536_by_384x1536_transposed_bias", (200, 1536), (384, 1536), bias=True,
             transpose_b=True)


@case(backends=("webgpu",), device=("matmul",))
async def matmul_rb_every_variant_on_this_device(rt):
    # Tuning keeps one register-blocked variant per layout on an adapter, so the others would never run in the
    # parity list: each is chosen in turn here, on a shape that is no multiple of its blocks, with a bias and with
    # the GELU epilogue; the bound is _matmul_case's.
    from gpuport.ops.kernels import RB_VARIANTS
    planner = rt.placement.planner
    saved = dict(planner.matmul_choice)
    r = rng(47)
    try:
        for key, block in sorted(RB_VARIANTS.items()):
            tb = block.layout == "tb"
            m, k, n = 19, 36, 29 if tb else 28   # the (K, N) layout loads B as vec4 along N
            a = r.uniform(-1, 1, (m, k)).astype(np.float32)
            b = r.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
            bias = r.uniform(-1, 1, n).astype(np.float32)
            planner.matmul_choice[block.layout] = key
            bb = b.T if tb else b
            bound = 2 * (k + 1) * U * (np.abs(a) @ np.abs(bb) + np.abs(bias)) + 1e-30
            for activation in (None, "gelu"):
                got = await rt.ops.matmul(rt.tensor(a), rt.tensor(b), bias=rt.tensor(bias), transpose_b=tb,
                                          activation=activation).read()
                close(got, K.matmul_ref(a, b, bias, transpose_b=tb, activation=activation),
                      atol=bound if activation is None else 1.13 * bound + 1e-6, what=f"{key} {activation}")
            assert f"matmul_{key}" in rt.info()["kernels"], (key, rt.info()["kernels"])
    finally:
        planner.matmul_choice.update(saved)


# GELU in the epilogue (register-blocked shapes) and after the product (the rest), with and without bias.
_matmul_case("matmul_gelu_1x4_by_4x1", (1, 4), (4, 1), bias=True, activation="gelu", seed=7)
_matmul_case("matmul_gelu_7x13_by_13x5_no_bias", (7, 13), (13, 5), activation="gelu", seed=7)
_matmul_case("matmul_gelu_37x100_by_53x100_transposed", (37, 100), (53, 100), bias=True, transpose_b=True,
             activation="gelu", seed=7)
_matmul_case("matmul_gelu_batched_3x17x32_by_32x12", (3, 17, 32), (32, 12), bias=True, activation="gelu", seed=7)
_matmul_case("matmul_gelu_67x384_by_1536x384_transposed", (67, 384), (1536, 384), bias=True, transpose_b=True,
             activation="gelu", seed=7)


@case()
async def matmul_activation_must_be_known(rt):
    a = rt.tensor(np.ones((2, 4), np.float32))
    await expect(ValueError, lambda: rt.ops.matmul(a, a, transpose_b=True, activation="relu"),
                 "activation must be one of (None, 'gelu')", "'relu'")


# -- row-wise ---------------------------------------------------------------------------------------

for _shape in [(1,), (7, 13), (37, 129), (3, 17, 33), (5, 1000)]:
    def _make(shape=_shape):
        async def fn(rt):
            r = rng(5)
            x = (r.standard_normal(shape) * 4).astype(np.float32)
            m = np.where(r.random(shape[-1:]) < 0.3, -1e9, 0).astype(np.float32)
            full = np.where(r.random(shape) < 0.2, -1e4, 0).astype(np.float32)
            close(await rt.ops.softmax(rt.tensor(x)).read(), K.softmax_ref(x), rtol=1e-5, atol=1e-6,
                  what=f"softmax {shape}")
            close(await rt.ops.softmax(rt.tensor(x), mask=rt.tensor(m)).read(), K.softmax_ref(x, m),
                  rtol=1e-5, atol=1e-6, what=f"softmax row mask {shape}")
            close(await rt.ops.softmax(rt.tensor(x), mask=rt.tensor(full)).read(), K.softmax_ref(x, full),
                  rtol=1e-5, atol=1e-6, what=f"softmax full mask {shape}")
        fn.__name__ = f"softmax_{'x'.join(map(str, shape))}"
        return fn
    case(device=("softmax",))(_make())


for _shape in [(1,), (1, 1), (7, 13), (37, 129), (3, 17, 33), (4, 384)]:
    def _make(shape=_shape):
        async def fn(rt):
            r = rng(6)
            n = shape[-1]
            x = (r.standard_normal(shape) * 2 + 1).astype(np.float32)
            g = r.standard_normal(n).astype(np.float32)
            b = r.standard_normal(n).astype(np.float32)
            got = await rt.ops.layer_norm(rt.tensor(x), rt.tensor(g), rt.tensor(b), eps=1e-5).read()
            # normalised values are O(1) (scaled by |gamma|): n-term sums give ~n*u relative error
            close(got, K.layer_norm_ref(x, g, b, eps=1e-5), atol=1e-5 + 8 * n * U * (np.abs(g) + 1),
                  rtol=1e-5, what=f"layer_norm {shape}")
            # with a residual: the same bound on x + res, which the kernel and the reference round alike
            res = (r.standard_normal(shape) * 3).astype(np.float32)
            got = await rt.ops.layer_norm(rt.tensor(x), rt.tensor(g), rt.tensor(b), eps=1e-5,
                                          residual=rt.tensor(res)).read()
            close(got, K.layer_norm_ref(x, g, b, res, eps=1e-5), atol=1e-5 + 8 * n * U * (np.abs(g) + 1),
                  rtol=1e-5, what=f"layer_norm with a residual {shape}")
            s = (await rt.ops.sum(rt.tensor(x)).read(), await rt.ops.mean(rt.tensor(x)).read())
            scale_ = np.abs(x).sum(axis=-1)
            close(s[0], K.sum_ref(x), atol=2 * n * U * scale_, what=f"sum {shape}")
            close(s[1], K.mean_ref(x), atol=2 * n * U * scale_ / n + 1e-7, what=f"mean {shape}")
            close(await rt.ops.l2_normalize(rt.tensor(x)).read(), K.l2_normalize_ref(x),
                  atol=4 * n * U + 1e-7, what=f"l2_normalize {shape}")
        fn.__name__ = f"rowwise_{'x'.join(map(str, shape))}"
        return fn
    case(device=("layer_norm", "sum", "mean", "l2_normalize"))(_make())


@case(device=("l2_normalize",))
async def l2_normalize_zero_row_stays_zero(rt):
    x = np.zeros((2, 5), np.float32)
    x[1] = 3.0
    close(await rt.ops.l2_normalize(rt.tensor(x)).read(), K.l2_normalize_ref(x), atol=1e-7, what="l2 zero row")


# -- model ops --------------------------------------------------------------------------------------

for _ids_shape, _vocab, _hidden in [((1,), 1, 1), ((7,), 13, 5), ((3, 17), 101, 33), ((2, 128), 30522, 384)]:
    def _make(ids_shape=_ids_shape, vocab=_vocab, hidden=_hidden):
        async def fn(rt):
            r = rng(7)
            ids = r.integers(0, vocab, ids_shape).astype(np.int32)
            table = r.standard_normal((vocab, hidden)).astype(np.float32)
            got = await rt.ops.embedding(rt.tensor(ids), rt.tensor(table)).read()
            close(got, K.embedding_ref(ids, table), what=f"embedding {ids_shape} {vocab}x{hidden}")
            if "over_budget_strategies" in rt.info() and table.nbytes > rt.binding_limit:
                # a budgeted tier stores the table as blocks and no GPU gather serves blocks: the host has the
                # values, so it answers (the smaller tables prove the kernel on this lane's device)
                assert rt.fallback.get_performance_metrics()["last_strategy"]["embedding"] == "cpu"
                return {"embedding"}
        fn.__name__ = f"embedding_{'x'.join(map(str, ids_shape))}_vocab{vocab}x{hidden}"
        return fn
    case(device=("embedding",))(_make())


for _b, _sq, _sk, _heads, _d, _mask in [(1, 1, 1, 1, 1, False), (1, 7, 13, 1, 5, True), (2, 17, 33, 3, 11, True),
                                        (2, 12, 12, 12, 32, True), (1, 5, 300, 2, 64, True),
                                        (1, 3, 70, 1, 256, False),
                                        # attention_rows.wgsl (64+ queries): a partial last tile of rows and keys,
                                        # an odd head_dim, and one head of Whisper's encoder self-attention (1500
                                        # frames, head_dim 64; its other five heads are the same kernel's work again)
                                        (2, 65, 70, 3, 7, True), (1, 130, 300, 2, 64, True),
                                        (1, 1500, 1500, 1, 64, False)]:
    def _make(b=_b, sq=_sq, sk=_sk, heads=_heads, d=_d, use_mask=_mask):
        async def fn(rt):
            r = rng(8)
            q = r.standard_normal((b, sq, heads * d)).astype(np.float32)
            k = r.standard_normal((b, sk, heads * d)).astype(np.float32)
            v = r.standard_normal((b, sk, heads * d)).astype(np.float32)
            mask = None
            if use_mask:
                valid = r.integers(1, sk + 1, b)
                mask = np.where(np.arange(sk)[None, :] < valid[:, None], 0.0, -1e9).astype(np.float32)
            got = await rt.ops.attention(rt.tensor(q), rt.tensor(k), rt.tensor(v), heads,
                                         mask=rt.tensor(mask) if use_mask else None).read()
            close(got, K.attention_ref(q, k, v, mask, num_heads=heads), rtol=1e-4, atol=2e-5 * math.sqrt(d),
                  what=f"attention b{b} sq{sq} sk{sk} h{heads} d{d}")
        fn.__name__ = f"attention_b{b}_q{sq}_k{sk}_h{heads}_d{d}{'_masked' if use_mask else ''}"
        return fn
    case(device=("attention",))(_make())


# a text tower's causal self-attention: attention.wgsl, and attention_rows.wgsl from 64 queries (CLIP's 77 tokens)
for _b, _s, _heads, _d, _mask in [(2, 7, 2, 8, True), (1, 77, 8, 64, False), (2, 65, 3, 7, True)]:
    def _make(b=_b, s=_s, heads=_heads, d=_d, use_mask=_mask):
        async def fn(rt):
            r = rng(10)
            q, k, v = (r.standard_normal((b, s, heads * d)).astype(np.float32) for _ in range(3))
            mask = None
            if use_mask:
                mask = np.where(np.arange(s)[None, :] < r.integers(1, s + 1, b)[:, None], 0.0, -1e9).astype(np.float32)
            got = await rt.ops.attention(rt.tensor(q), rt.tensor(k), rt.tensor(v), heads,
                                         mask=rt.tensor(mask) if use_mask else None, causal=True).read()
            close(got, K.attention_ref(q, k, v, mask, num_heads=heads, causal=True), rtol=1e-4,
                  atol=2e-5 * math.sqrt(d), what=f"causal attention b{b} s{s} h{heads} d{d}")
        fn.__name__ = f"attention_causal_b{b}_s{s}_h{heads}_d{d}{'_masked' if use_mask else ''}"
        return fn
    case(device=("attention",))(_make())


# QuickGELU (CLIP's activation), on CLIP's MLP width and on the extremes: float32 exp and one division against the
# float64 reference, rtol 4e-6 (a few ulps), atol 1e-7 where the result is near 0
for _shape in [(1,), (7, 13), (2, 50, 3072)]:
    def _make(shape=_shape):
        async def fn(rt):
            r = rng(11)
            x = (r.standard_normal(shape) * 3).astype(np.float32)
            if x.size > 16:
                x.reshape(-1)[:14] = [0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 40.0, -40.0, 60.0, -60.0, 3e4, -3e4,
                                      1e30, -1e30]
            close(await rt.ops.quick_gelu(rt.tensor(x)).read(), K.quick_gelu_ref(x), rtol=4e-6, atol=1e-7,
                  what=f"quick_gelu {shape}")
        fn.__name__ = f"quick_gelu_{'x'.join(map(str, shape))}"
        return fn
    case(device=("quick_gelu",))(_make())


# a vision tower's patch gather (im2col of a stride-equals-kernel convolution): a copy, exact
for _b, _c, _h, _w, _p in [(1, 1, 2, 2, 1), (2, 3, 12, 8, 4), (1, 3, 224, 224, 32), (1, 3, 224, 224, 14)]:
    def _make(b=_b, c=_c, h=_h, w=_w, p=_p):
        async def fn(rt):
            x = rng(12).standard_normal((b, c, h, w)).astype(np.float32)
            got = await rt.ops.patchify(rt.tensor(x), p).read()
            want = K.patchify_ref(x, patch=p)
            assert got.shape == want.shape and np.array_equal(got, want), f"patchify {b}x{c}x{h}x{w} p{p}"
        fn.__name__ = f"patchify_{b}x{c}x{h}x{w}_p{p}"
        return fn
    case(device=("patchify",))(_make())


for _b, _s, _h in [(1, 1, 1), (2, 7, 13), (3, 17, 384)]:
    def _make(b=_b, s=_s, h=_h):
        async def fn(rt):
            r = rng(9)
            x = r.standard_normal((b, s, h)).astype(np.float32)
            lengths = r.integers(1, s + 1, b)
            m = (np.arange(s)[None, :] < lengths[:, None]).astype(np.float32)
            got = await rt.ops.mean_pool(rt.tensor(x), rt.tensor(m)).read()
            close(got, K.mean_pool_ref(x, m), atol=4 * s * U * np.abs(x).max() + 1e-7, what=f"mean_pool {b}x{s}x{h}")
        fn.__name__ = f"mean_pool_{b}x{s}x{h}"
        return fn
    case(device=("mean_pool",))(_make())


@case(backends=("webgpu", "cpu", "auto"), device=("matmul", "gelu", "l2_normalize"))
async def chained_ops_queue_and_read_once(rt):
    # Nothing waits between ops: one read at the end sees the whole chain.
    r = rng(10)
    x = r.standard_normal((9, 48)).astype(np.float32)
    w = r.standard_normal((48, 31)).astype(np.float32)
    b = r.standard_normal(31).astype(np.float32)
    y = rt.ops.l2_normalize(rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w), bias=rt.tensor(b))))
    want = K.l2_normalize_ref(K.gelu_ref(K.matmul_ref(x, w, b)))
    close(await y.read(), want, atol=1e-5, what="chain")


# -- Whisper's audio front end and encoder convolutions ---------------------------------------------------

def _over_budget_on_host(rt, op, *arrays) -> set | None:
    """On a budgeted tier (the constrained lane) an operand or result over the binding budget has no GPU
    strategy for these ops: the host answers from the known values (asserted here, returned as by design);
    the smaller cases prove the kernel on that lane's device."""
    if "over_budget_strategies" in rt.info() and max(a.nbytes for a in arrays) > rt.binding_limit:
        assert rt.fallback.get_performance_metrics()["last_strategy"][op] == "cpu"
        return {op}
    return None


# (T, C_in, C_out, K, stride, padding, bias, activation): T = 1, K = T + 2 padding, odd sizes, padding wider
# than K, steps and channels that are not multiples of the kernel's tile (1024 steps x 8 channels), and
# Whisper's two layers (tiny: 384 wide; 80 mels in).
for _t, _cin, _cout, _k, _stride, _pad, _bias, _act in [
        (1, 1, 1, 1, 1, 0, False, None), (1, 3, 5, 3, 1, 1, True, "gelu"), (7, 5, 9, 3, 2, 1, True, None),
        (37, 13, 33, 5, 3, 2, True, "gelu"), (50, 16, 8, 7, 1, 10, True, None), (1030, 7, 17, 4, 1, 0, False, "gelu"),
        (3000, 80, 384, 3, 1, 1, True, "gelu"), (3000, 384, 384, 3, 2, 1, True, "gelu")]:
    def _make(t=_t, cin=_cin, cout=_cout, k=_k, stride=_stride, pad=_pad, use_bias=_bias, act=_act):
        async def fn(rt):
            r = rng(130)
            x = r.uniform(-1, 1, (t, cin)).astype(np.float32)
            w = r.uniform(-1, 1, (cout, cin, k)).astype(np.float32)
            b = r.uniform(-1, 1, cout).astype(np.float32) if use_bias else None
            got = await rt.ops.conv1d(rt.tensor(x), rt.tensor(w), rt.tensor(b) if use_bias else None, stride=stride,
                                      padding=pad, activation=act).read()
            want = K.conv1d_ref(x, w, b, stride=stride, padding=pad, activation=act)
            scale_ = K.conv1d_ref(np.abs(x), np.abs(w), None if b is None else np.abs(b), stride=stride, padding=pad)
            bound = 2 * (cin * k + 1) * U * scale_.astype(np.float64) + 1e-30
            close(got, want, atol=bound if act is None else 1.13 * bound + 1e-6, what=name)
            return _over_budget_on_host(rt, "conv1d", x, w, want)
        name = (f"conv1d_{t}x{cin}_to_{cout}_k{k}_s{stride}_p{pad}{'_bias' if use_bias else ''}"
                f"{'_' + act if act else ''}")
        fn.__name__ = name
        return fn
    case(device=("conv1d",))(_make())


@case()
async def conv1d_arguments_are_validated_with_typed_errors(rt):
    x = rt.tensor(np.ones((2, 3), np.float32))
    w = rt.tensor(np.ones((4, 3, 3), np.float32))
    await expect(ValueError, lambda: rt.ops.conv1d(rt.tensor(np.ones(6, np.float32)), w), "x must be (T, C_in)", "(6,)")
    await expect(ValueError, lambda: rt.ops.conv1d(x, rt.tensor(np.ones((4, 3), np.float32))),
                 "weight must be (C_out, C_in, K)", "(4, 3)")
    await expect(ValueError, lambda: rt.ops.conv1d(x, rt.tensor(np.ones((4, 5, 3), np.float32))),
                 "weight (4, 5, 3) expects C_in=5 channels, x (2, 3) has 3")
    await expect(ValueError, lambda: rt.ops.conv1d(x, w), "kernel width K=3 exceeds", "2 + 2*0 = 2 steps")
    await expect(ValueError, lambda: rt.ops.conv1d(x, w, stride=0, padding=1), "conv1d: stride must be >= 1, got 0")
    await expect(TypeError, lambda: rt.ops.conv1d(x, w, stride=1.5, padding=1), "conv1d: stride must be an int")
    await expect(ValueError, lambda: rt.ops.conv1d(x, w, padding=-1), "conv1d: padding must be >= 0, got -1")
    await expect(ValueError, lambda: rt.ops.conv1d(x, w, padding=1, activation="relu"),
                 "activation must be one of (None, 'gelu')", "'relu'")
    await expect(ValueError, lambda: rt.ops.conv1d(x, w, rt.tensor(np.ones(3, np.float32)), padding=1),
                 "bias shape (3,) must be (4,)")
    await expect(TypeError, lambda: rt.ops.conv1d(rt.tensor(np.ones((2, 3), np.int32)), w, padding=1),
                 "conv1d: x must be float32, got int32")


def _speech_like(r, n: int) -> np.ndarray:
    """n samples at 16 kHz of something audio-shaped in [-1, 1]: drifting harmonics under a syllable-rate
    envelope, noise, and a silent second (exact zeros: frames whose power must be exactly 0)."""
    t = np.arange(n) / 16000.0
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    x = 0.3 * voiced + 0.02 * r.standard_normal(n)
    x[n // 3:n // 3 + 16000] = 0.0
    return np.clip(x, -1, 1).astype(np.float32)


# (samples, n_fft, hop, frames): one frame, n_fft 1, odd and prime-ish n_fft, fewer frames than fit, 512 and
# over 1024 points, frames across the kernel's 1024-frame tile, and Whisper's 30 s (480000 samples and 160
# zeros, reflect-padded by 200 on each side: 3001 frames of which it keeps 3000).
for _n, _n_fft, _hop, _frames in [(400, 400, 160, None), (5, 1, 2, None), (1000, 7, 3, None), (1001, 16, 5, 100),
                                  (5000, 512, 128, None), (3000, 1031, 97, None), (400 + 1029 * 160, 400, 160, None),
                                  (480400, 400, 160, 3000)]:
    def _make(n=_n, n_fft=_n_fft, hop=_hop, frames=_frames):
        async def fn(rt):
            r = rng(131)
            x = _speech_like(r, n) if n >= 16000 * 3 else r.uniform(-1, 1, n).astype(np.float32)
            got = await rt.ops.stft_power(rt.tensor(x), n_fft, hop, frames=frames).read()
            want = K.stft_power_ref(x, n_fft=n_fft, hop=hop, frames=frames)
            count = want.shape[0]
            idx = np.arange(count)[:, None] * hop + np.arange(n_fft)[None, :]
            s = np.abs(x.astype(np.float64)[idx] * K.hann_window(n_fft)).sum(axis=1, keepdims=True)
            e = 2 * (n_fft + 3) * U * s
            p_ = want.astype(np.float64)
            close(got, want, atol=2 * e * np.sqrt(2 * p_) + 2 * e * e + 4 * U * p_, what=name)
            assert count == (frames or 1 + (n - n_fft) // hop), count
        name = f"stft_power_{n}_n{n_fft}_hop{hop}" + (f"_frames{frames}" if frames else "")
        fn.__name__ = name
        return fn
    case(device=("stft_power",))(_make())


@case()
async def stft_power_arguments_are_validated_with_typed_errors(rt):
    s = rt.tensor(np.ones(880, np.float32))
    await expect(ValueError, lambda: rt.ops.stft_power(rt.tensor(np.ones((2, 400), np.float32))),
                 "signal must be one axis of samples (N,)", "(2, 400)")
    await expect(ValueError, lambda: rt.ops.stft_power(rt.tensor(np.ones(100, np.float32))),
                 "a signal of 100 samples is shorter than one frame of n_fft=400")
    await expect(ValueError, lambda: rt.ops.stft_power(s, frames=5),
                 "frames=5 exceeds the 4 whole frames of n_fft=400, hop=160 in 880 samples")
    await expect(ValueError, lambda: rt.ops.stft_power(s, frames=0), "stft_power: frames must be >= 1, got 0")
    await expect(ValueError, lambda: rt.ops.stft_power(s, hop=0), "stft_power: hop must be >= 1, got 0")
    await expect(TypeError, lambda: rt.ops.stft_power(s, n_fft=2.5), "stft_power: n_fft must be an int")
    await expect(TypeError, lambda: rt.ops.stft_power(rt.tensor(np.ones(880, np.int32))),
                 "stft_power: signal must be float32, got int32")


# (F, n_mels, start, rows, end, loudest): one value, rows past the end of mel (zero rows), a window inside, end
# before the window's end, end == start (all zero), and Whisper's: a whole 30 s window, the last window of 45 s
# of audio (1500 rows then 1500 zero rows), one cut from the middle. Power spans 11 decades up to 10**loudest:
# loud (3), most low values sit under the max - 8 floor; quiet (-3), the floor is -11 and the 1e-10 clamp
# decides them.
for _f, _mels, _start, _rows, _end, _top in [
        (1, 1, 0, None, None, 3), (1, 80, 0, 3, None, -3), (7, 5, 2, None, None, 3), (50, 13, 10, 60, 45, -3),
        (33, 9, 5, 10, 5, 3), (3000, 80, 0, 3000, 3000, 3), (4500, 80, 3000, 3000, 4500, -3),
        (3000, 80, 1000, 3000, 2500, -3)]:
    def _make(f=_f, n_mels=_mels, start=_start, rows=_rows, end=_end, top=_top):
        async def fn(rt):
            r = rng(132)
            mel = (10.0 ** r.uniform(top - 11, top, (f, n_mels))).astype(np.float32)   # and 5% exact zeros
            mel[r.random((f, n_mels)) < 0.05] = 0.0
            got = await rt.ops.log_mel(rt.tensor(mel), start=start, rows=rows, end=end).read()
            want = K.log_mel_ref(mel, start=start, rows=rows, end=end)
            kept = max(0, min(want.shape[0], (f if end is None else end) - start))
            logs = np.log10(np.maximum(mel.astype(np.float64), 1e-10))
            bound = 2 * (1.2e-7 * (np.abs(logs[start:start + kept]) + np.abs(logs.max()) + 12) + 4e-8)
            close(got[:kept], want[:kept], atol=bound, what=name)
            assert (got[kept:] == 0).all() and want.shape == got.shape, (got.shape, want.shape, kept)
        name = (f"log_mel_{f}x{n_mels}_start{start}" + (f"_rows{rows}" if rows else "") + (f"_end{end}" if end else "")
                + ("_quiet" if top < 0 else ""))
        fn.__name__ = name
        return fn
    case(device=("log_mel",))(_make())


@case(device=("log_mel",))
async def log_mel_nan_makes_every_kept_row_nan(rt):
    # as the reference: a NaN makes the max NaN, so the floor and every kept row; the zero rows stay zero
    mel = np.ones((4, 3), np.float32)
    mel[3, 1] = np.nan
    got = await rt.ops.log_mel(rt.tensor(mel), start=1, rows=4, end=3).read()
    assert np.isnan(got[:2]).all() and (got[2:] == 0).all(), got
    assert np.isnan(K.log_mel_ref(mel, start=1, rows=4, end=3)[:2]).all()


@case(device=("stft_power", "matmul", "log_mel"))
async def whisper_features_match_faster_whisper_reference(rt):
    # Whisper's front end as the model chains it (stft_power, the mel bank as a matmul, log_mel) on 3.2 s of a
    # speech-like signal (a gliding harmonic tone, noise, a pause), against gpuport.models.audio's float64 NumPy
    # reference, itself within 1e-5 of faster-whisper's (tests/models/test_whisper.py): 1e-4 in (log10 + 4) / 4 units
    # (0.09% in power), as tests/models/test_whisper.py holds the runtime's features on the native adapters
    t = np.arange(51200) / 16000
    f0 = 120 + 80 * t
    x = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / 16000) / k for k in range(1, 8)) * 0.2
    x = (x + rng(31).normal(0, 0.01, t.size)) * (np.abs(t - 1.6) > 0.3)
    x = x.astype(np.float32)
    frames = audio.feature_frames(len(x))
    power = rt.ops.stft_power(rt.tensor(audio.padded_for_stft(x)), audio.N_FFT, audio.HOP, frames=frames)
    mel = rt.ops.matmul(power, rt.tensor(audio.mel_filters()), transpose_b=True)
    got = await rt.ops.log_mel(mel, rows=frames + 7, end=frames - 1).read()
    want = audio.log_mel_reference(x)
    close(got[:frames - 1], want[:, :frames - 1].T, atol=1e-4, what="whisper features")
    assert (got[frames - 1:] == 0).all()


@case()
async def log_mel_arguments_are_validated_with_typed_errors(rt):
    mel = rt.tensor(np.ones((5, 3), np.float32))
    await expect(ValueError, lambda: rt.ops.log_mel(rt.tensor(np.ones(5, np.float32))), "mel must be (F, n_mels)", "(5,)")
    await expect(ValueError, lambda: rt.ops.log_mel(mel, start=5), "start=5 is past mel's last row (it has F=5 rows)")
    await expect(ValueError, lambda: rt.ops.log_mel(mel, start=-1), "log_mel: start must be >= 0, got -1")
    await expect(ValueError, lambda: rt.ops.log_mel(mel, rows=0), "log_mel: rows must be >= 1, got 0")
    await expect(TypeError, lambda: rt.ops.log_mel(mel, rows=2.0), "log_mel: rows must be an int")
    await expect(ValueError, lambda: rt.ops.log_mel(mel, end=6), "end=6 is past mel's F=5 rows")
    await expect(ValueError, lambda: rt.ops.log_mel(mel, start=2, end=1), "end=1 is before start=2")
    await expect(TypeError, lambda: rt.ops.log_mel(rt.tensor(np.ones((5, 3), np.int32))),
                 "log_mel: mel must be float32, got int32")


# -- user kernels -----------------------------------------------------------------------------------

USER_WGSL = """
override WG: u32 = 64u;
override FACTOR: f32 = 1.0;
struct Params { n: u32, offset: f32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < p.n) { dst[gid.x] = src[gid.x] * src[gid.x] * FACTOR + p.offset; }
}
"""


@case(backends=("webgpu",), device=("kernel:*",))
async def user_kernel_with_override_constant(rt):
    n = 1000
    x = rng(11).standard_normal(n).astype(np.float32)
    k = rt.kernel(USER_WGSL, entry_point="main", constants={"WG": 32, "FACTOR": 3.0})
    src, dst = rt.tensor(x), rt.empty(n)
    k.dispatch((math.ceil(n / 32), 1, 1), src, dst, uniforms=[n, 0.5])
    close(await dst.read(), (x * x * np.float32(3.0) + np.float32(0.5)).astype(np.float32), rtol=3e-7,
          what="user kernel")


@case(backends=("cpu",))
async def user_kernel_on_cpu_says_it_needs_webgpu(rt):
    await expect(gp.UnsupportedFeature, lambda: rt.kernel(USER_WGSL), "WebGPU", "entry point 'main'",
                 "pass reference=fn")


def _user_ref(src, dst, *, uniforms, workgroups):
    # USER_WGSL's NumPy twin (FACTOR = 3, WG = 32): only the invocations the dispatch has write
    n, offset = uniforms
    n = min(n, workgroups[0] * 32, dst.size)
    dst[:n] = src[:n] * src[:n] * np.float32(3.0) + np.float32(offset)


@case(backends=("webgpu", "cpu", "auto"), device=("kernel:*",))
async def user_kernel_with_reference_same_on_webgpu_and_cpu(rt):
    # The same kernel on this runtime (the WGSL on a GPU, the reference on the cpu tier) and on a cpu runtime
    # of its own: equal within the f32 rounding of x*x*3+offset (4 roundings; an fma may skip 2: 4u of the
    # magnitudes). Sizes 1, odd, and not multiples of the 32-wide workgroup; the last dispatch covers less
    # than n, so the tail keeps its old values on both.
    cpu = await gp.open(backend="cpu")
    try:
        for n, groups in ((1, 1), (7, 1), (33, 2), (1000, 32), (1000, 20)):
            x = rng(n).standard_normal(n).astype(np.float32)
            old = rng(n + 1).standard_normal(n).astype(np.float32)
            got = []
            for r in (rt, cpu):
                k = r.kernel(USER_WGSL, constants={"WG": 32, "FACTOR": 3.0}, reference=_user_ref)
                dst = r.tensor(old)
                k.dispatch(groups, r.tensor(x), dst, uniforms=[n, 0.5])
                got.append(await dst.read())
                ran = "gpu" if r.backend == "webgpu" else "reference"
                assert k.stats[ran] == 1 and sum(k.stats.values()) == 1, (r.backend, k.stats)
            m = min(n, groups * 32)
            want = np.concatenate([x[:m].astype(np.float64) ** 2 * 3 + 0.5, old[m:]])
            bound = 4 * U * (3 * x.astype(np.float64) ** 2 + np.abs(want))
            close(got[0], got[1], atol=bound, what=f"{rt.backend} vs cpu, n={n}")
            close(got[1], want.astype(np.float32), atol=bound, what=f"cpu vs float64, n={n}")
    finally:
        cpu.close()


# -- sampling: the next token id on the device (sample_token) ----------------------------------------------
# Greedy ids are exact (a comparison of the same float32 values; the data avoid near-ties between a penalized and
# an unpenalized logit, the one place float32's penalty could order two ids unlike the float64 reference). A
# sampled id is the reference's, or else one the float32 kernel may legitimately answer: an id whose CDF interval
# (cdf[id-1], cdf[id]] of the reference's weights comes within `tol` of the draw u * total (in practice the
# neighbouring id, and only when u * total lies that close to a boundary), under top-p for a kept set whose
# boundary's cumulative mass in the descending order lies within `tol` of top_p of the mass (float32 masses may
# cut one or a few ids off a flat tail either way).
# tol = 2 (n + 2) u S + sum_i w_i e_i (u = 2**-24, S the kept mass): any of the kernel's sums (a chunk or a
# strided share, at most ceil(V / 64) terms at the smallest workgroup, 64, then at most 8 levels of the tree or
# the scan) has n = ceil(V / 64) + 8 terms, within n u S (Higham, positive terms); the draw u * total (or top_p *
# total) as much again plus two roundings (u's to float32, the product). Each weight w_i = exp(d_i),
# d_i = (y_i - max) / T, is within e_i = 2**-21 (1 + |d_i| + (|y_i| + |max|) / T) relative: WGSL's exp (3 + 2|d|
# ulp), d's two roundings and the penalty's float32 rounding of y.

_SAMPLE = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "u": 0.0}


def _seen_mask(v, ids):
    words = np.zeros(-(-v // 32), np.uint32)
    for i in ids:
        words[i >> 5] |= np.uint32(1 << (i & 31))
    return words


async def _sample(rt, logits, seen=None, **kw):
    out = rt.ops.sample_token(rt.tensor(logits), None if seen is None else rt.tensor(seen), **kw)
    got = await out.read()
    assert out.dtype == np.uint32 and got.dtype == np.uint32 and got.shape == (1,), (out, got.dtype, got.shape)
    return int(got[0])


def _draw_tolerance(y, w, temperature):
    kept = w > 0
    top = np.abs(y).max(where=np.isfinite(y), initial=0.0)
    d = np.log(w[kept])
    n = -(-y.size // 64) + 8
    e = 2.0 ** -21 * (1 + np.abs(d) + (np.abs(np.where(np.isfinite(y[kept]), y[kept], 0)) + top) / temperature)
    return 2 * (n + 2) * U * w.sum() + float((w[kept] * e).sum())


def _check_draw(got, logits, seen, what, **kw):
    attrs = {**_SAMPLE, **kw}
    want = int(K.sample_token_ref(logits, seen, **attrs)[0])
    if got == want:
        return
    y = K.sample_token_scores(logits, seen, repetition_penalty=attrs["repetition_penalty"])
    assert attrs["temperature"] > 0 and not np.isnan(y).any() and 0 <= got < y.size, f"{what}: got {got}, want {want}"
    w = K.sample_token_weights(y, temperature=attrs["temperature"], top_k=attrs["top_k"])   # before top-p
    tol = _draw_tolerance(y, w, attrs["temperature"])
    bounds = [-np.inf]                           # the kept sets y >= b the kernel's float32 masses may choose
    if attrs["top_p"] < 1.0:
        order = np.argsort(-y, kind="stable")
        mass = np.cumsum(w[order])
        share = attrs["top_p"] * mass[-1]
        before = np.concatenate([[0.0], mass[:-1]])
        bounds = np.unique(y[order][(mass >= share - tol) & (before < share + tol)])
    for b in bounds:
        kept = np.where(y >= b, w, 0.0)
        cdf = np.cumsum(kept)
        goal = attrs["u"] * cdf[-1]
        exact = min(int(np.searchsorted(cdf, goal, side="right")), y.size - 1)
        ids = np.flatnonzero(kept > 0)
        at = int(np.searchsorted(ids, exact))
        prev = int(ids[at - 1]) if at > 0 else None                       # the kept neighbours of the exact id
        nxt = int(ids[at + 1]) if at + 1 < ids.size and ids[at] == exact else None
        if got == exact or (got == prev and goal - cdf[got] <= tol) or (got == nxt and cdf[exact] - goal <= tol):
            return
    raise AssertionError(f"{what}: got id {got}, want {want}: neither the exact draw nor a neighbour within tol "
                         f"{tol:.3g} of u * total for any of the {len(bounds)} kept sets within tol of top_p")


def _lm_logits(r, v, scale=2.0):
    """A language model's shape of logits: a flat tail and a head of up to 16 ids well above it."""
    x = r.standard_normal(v) * scale
    head = r.choice(v, min(16, v), replace=False)
    x[head] += r.uniform(2, 5, head.size) * scale
    return x.astype(np.float32)


for _v in (1, 3, 33, 257, 49152, 100003):
    def _make(v=_v):
        async def fn(rt):
            r = rng(150 + v % 97)
            x = r.standard_normal((1, v)).astype(np.float32)
            order = np.argsort(-x[0], kind="stable")
            seen = _seen_mask(v, np.concatenate([order[:3], r.integers(0, v, 20)]))
            got = await _sample(rt, x)
            assert got == int(np.argmax(x)) == int(K.sample_token_ref(x)[0]), (got, int(np.argmax(x)))
            for pen in (1.3, 0.5):
                got = await _sample(rt, x, seen, repetition_penalty=pen)
                want = int(K.sample_token_ref(x, seen, repetition_penalty=pen)[0])
                assert got == want, f"greedy V={v} penalty {pen}: got {got}, want {want}"
            if v >= 33:   # the max seen and divided by 1e3: the second largest id wins
                assert await _sample(rt, x[0], _seen_mask(v, order[:1]), repetition_penalty=1e3) == order[1]
        fn.__name__ = f"sample_token_greedy_v{v}"
        return fn
    case(backends=("webgpu", "cpu", "auto"), device=("sample_token",))(_make())


@case(device=("sample_token",))
async def sample_token_greedy_ties_nan_and_infinities(rt):
    # np.argmax's rules: the first index of the max (ties in different invocations' strides and chunks), -0 equal
    # to +0, a row of -inf answers 0, +inf is a max like any, a NaN counts as the max (the first NaN wins, a
    # negative NaN too) and a NaN answers its index when sampling as well (no distribution exists)
    v = 1000
    base = -np.abs(rng(151).standard_normal(v)).astype(np.float32) - 1

    def row(*pairs):
        x = base.copy()
        for at, value in pairs:
            x[at] = value
        return x

    rows = {  # name: (logits, np.argmax's answer after the penalty)
        "all equal": (np.full(v, 0.25, np.float32), 0),
        "ties 300 700 999": (row(([999, 700, 300], 5.0)), 300),
        "+0 at 5, -0 at 10": (row((10, -0.0), (5, 0.0)), 5),
        "-0 at 5, +0 at 10": (row((5, -0.0), (10, 0.0)), 5),
        "all -inf": (np.full(v, -np.inf, np.float32), 0),
        "+inf at 400 600": (row(([600, 400], np.inf)), 400),
        "NaN at 77 812, +inf at 3": (row(([812, 77], np.nan), (3, np.inf)), 77),
        "-NaN at 50": (row(([812, 77], np.nan), (50, -np.float32(np.nan))), 50),
        "negative max seen: multiplied": (row(([3, 7], -0.5)), 7),
    }
    for what, (x, numpy) in rows.items():
        seen = _seen_mask(v, [3, 77, 400] if "seen" in what or "NaN" in what or "inf" in what else [])
        got = await _sample(rt, x, seen, repetition_penalty=2.0)
        want = int(K.sample_token_ref(x, seen, repetition_penalty=2.0)[0])
        assert got == want == numpy, f"{what}: got {got}, reference {want}, numpy {numpy}"
        if "NaN" in what:
            assert await _sample(rt, x, temperature=0.7, top_k=5, top_p=0.5, u=0.5) == want, what


@case(device=("sample_token",))
async def sample_token_sampled_infinities_share_the_mass(rt):
    # at temperature > 0 the ids at a +inf max share the mass equally (the limit of the softmax), a row of -inf
    # is uniform, and -inf ids are never drawn; exactly: every weight is 1 or 0
    v = 77
    x = rng(152).standard_normal(v).astype(np.float32)
    x[[10, 40, 70]] = np.inf
    for u, want in ((0.0, 10), (0.34, 40), (0.66, 40), (0.67, 70), (0.999, 70)):
        assert await _sample(rt, x, temperature=0.5, u=u) == want == int(K.sample_token_ref(x, temperature=0.5, u=u)[0])
    x = np.full(v, -np.inf, np.float32)
    for u in (0.0, 0.5, 0.999):
        want = int(K.sample_token_ref(x, temperature=2.0, u=u)[0])
        assert await _sample(rt, x, temperature=2.0, u=u) == int(u * v) == want
    x = rng(153).standard_normal(v).astype(np.float32)
    x[::2] = -np.inf
    for u in (0.0, 0.3, 0.999):
        got = await _sample(rt, x, temperature=1.0, u=u)
        assert got % 2 == 1, got
        _check_draw(got, x, None, f"-inf ids u={u}", temperature=1.0, u=u)


_DRAWS = (0.0, 0.137, 0.5, 0.861, 0.999999)

for _v in (3, 33, 257, 49152, 100003):
    def _make(v=_v):
        async def fn(rt):
            x = rng(160 + v % 89).standard_normal((1, v)).astype(np.float32)
            for t in (0.7, 1.5):
                for u in _DRAWS:
                    got = await _sample(rt, x, temperature=t, u=u)
                    _check_draw(got, x, None, f"V={v} T={t} u={u}", temperature=t, u=u)
        fn.__name__ = f"sample_token_temperature_v{v}"
        return fn
    case(device=("sample_token",))(_make())


for _v in (257, 49152):
    def _make(v=_v):
        async def fn(rt):
            x = rng(170 + v % 83).standard_normal(v).astype(np.float32)
            for k in (1, 5, v - 1, v):
                for u in (0.0, 0.42, 0.999):
                    got = await _sample(rt, x, temperature=1.0, top_k=k, u=u)
                    _check_draw(got, x, None, f"V={v} top_k={k} u={u}", temperature=1.0, top_k=k, u=u)
                    if k == 1:
                        assert got == int(np.argmax(x)), (got, int(np.argmax(x)))
                    if k == 5:
                        assert got in np.argsort(-x)[:5], got
            # ties with the k-th largest value are all kept (the reference's z < kth -> -inf, not a prefix of the
            # sorted order): values on a grid, a flat temperature, draws across [0, 1)
            x = np.round(x)
            tied = np.flatnonzero(x >= np.sort(x)[-5])
            assert tied.size > 5, tied.size
            drawn = set()
            for u in np.linspace(0, 0.999, 40):
                got = await _sample(rt, x, temperature=3.0, top_k=5, u=float(u))
                _check_draw(got, x, None, f"V={v} tied top_k u={u}", temperature=3.0, top_k=5, u=float(u))
                assert got in tied, (got, tied)
                drawn.add(got)
            assert drawn - set(np.argsort(-x, kind="stable")[:5]), f"only the first 5 of {tied} drawn: {sorted(drawn)}"
        fn.__name__ = f"sample_token_top_k_v{v}"
        return fn
    case(device=("sample_token",))(_make())


for _v in (257, 49152, 100003):
    def _make(v=_v):
        async def fn(rt):
            x = _lm_logits(rng(180 + v % 79), v)
            for top_p in (0.1, 0.9):
                kw = {"temperature": 0.8, "top_p": top_p}
                for u in _DRAWS:
                    got = await _sample(rt, x, u=u, **kw)
                    _check_draw(got, x, None, f"V={v} top_p={top_p} u={u}", u=u, **kw)
        fn.__name__ = f"sample_token_top_p_v{v}"
        return fn
    case(device=("sample_token",))(_make())


for _v in (33, 49152):
    def _make(v=_v):
        async def fn(rt):
            r = rng(190 + v % 73)
            x = _lm_logits(r, v, 1.5)
            seen = _seen_mask(v, np.concatenate([np.argsort(-x)[:4], r.integers(0, v, 200)]))
            for pen, k, top_p in ((1.3, 40, 0.9), (0.7, 10, 0.5), (1.3, 0, 0.8)):
                kw = {"temperature": 0.9, "top_k": min(k, v - 3), "top_p": top_p, "repetition_penalty": pen}
                for u in _DRAWS:
                    got = await _sample(rt, x, seen, u=u, **kw)
                    _check_draw(got, x, seen, f"V={v} {kw} u={u}", u=u, **kw)
        fn.__name__ = f"sample_token_combined_penalty_top_k_top_p_v{v}"
        return fn
    case(device=("sample_token",))(_make())


@case(backends=("cpu",))
async def sample_token_reference_follows_the_sampler(rt):
    # the oracle itself against models.sampling.Sampler (ties aside, which these draws lack): the same id for a
    # seed, u being the first draw of the Sampler's seeded generator
    r = rng(195)
    for v in (1, 7, 300, 5000):
        x = (r.standard_normal(v) * 2).astype(np.float32)
        history = [int(i) for i in r.integers(0, v, 12)] + [int(np.argmax(x))]
        for t, k, p, pen in ((0.0, 0, 1.0, 1.0), (0.0, 0, 1.0, 1.5), (0.8, 0, 1.0, 1.0), (1.0, 20, 1.0, 1.0),
                             (0.7, 0, 0.9, 1.2), (1.2, 50, 0.5, 0.8), (0.5, 3, 0.3, 1.3)):
            for seed in range(5):
                want = Sampler(SamplingParams(t, k, p, pen, seed))(x, history)
                u = float(np.random.default_rng(seed).random())
                got = int(K.sample_token_ref(x, _seen_mask(v, history), temperature=t, top_k=k, top_p=p,
                                             repetition_penalty=pen, u=u)[0])
                assert got == want, (v, t, k, p, pen, seed, got, want)


@case(backends=("webgpu",), device=("sample_token",), own=True)
async def constrained_sample_token_on_small_workgroups(rt):
    # the constrained tier's 64 invocations (override WG): the same ids
    crt = await gp.open(backend=rt.backend, tier="constrained")
    try:
        assert crt.info()["strategies"]["sample_token"] == "simplified_shader", crt.info()["strategies"]
        for v in (33, 49152):
            r = rng(196)
            x = r.standard_normal(v).astype(np.float32)
            seen = _seen_mask(v, r.integers(0, v, 30))
            with proves_on_device(crt, "sample_token"):
                assert await _sample(crt, x, seen, repetition_penalty=1.3) == \
                    int(K.sample_token_ref(x, seen, repetition_penalty=1.3)[0])
                for u in _DRAWS:
                    kw = {"temperature": 0.9, "top_k": min(40, v - 1), "top_p": 0.9, "repetition_penalty": 1.3, "u": u}
                    _check_draw(await _sample(crt, x, seen, **kw), x, seen, f"constrained V={v} u={u}", **kw)
    finally:
        crt.close()


@case()
async def sample_token_arguments_are_validated_with_typed_errors(rt):
    x = rt.tensor(np.zeros((1, 40), np.float32))
    seen = rt.tensor(np.zeros(2, np.uint32))
    s = rt.ops.sample_token
    for bad in (0.0, 1.5, -0.1):
        await expect(ValueError, lambda: s(x, top_p=bad), f"sample_token: top_p must be in (0, 1] (1: off), got {bad}")
    await expect(ValueError, lambda: s(x, top_p=float("nan")), "sample_token: top_p must be finite")
    await expect(ValueError, lambda: s(x, temperature=-1.0), "sample_token: temperature must be finite >= 0.0")
    await expect(ValueError, lambda: s(x, temperature=float("inf")), "sample_token: temperature must be finite")
    await expect(ValueError, lambda: s(x, temperature=1e-40),
                 "sample_token: temperature must be 0 (greedy) or at least")
    await expect(ValueError, lambda: s(x, top_k=-1), "sample_token: top_k must be >= 0, got -1")
    await expect(TypeError, lambda: s(x, top_k=2.5), "sample_token: top_k must be an int")
    await expect(ValueError, lambda: s(x, repetition_penalty=0.0), "sample_token: repetition_penalty must be > 0")
    await expect(ValueError, lambda: s(x, u=1.0), "sample_token: u must be a uniform draw in [0, 1), got 1.0")
    await expect(ValueError, lambda: s(x, u=-0.5), "sample_token: u must be finite >= 0.0")
    await expect(ValueError, lambda: s(x, rt.tensor(np.zeros(3, np.uint32))),
                 "sample_token: seen must be (2,) uint32 words (a bit per id of V=40), got shape (3,)")
    await expect(ValueError, lambda: s(x, rt.tensor(np.zeros((1, 2), np.uint32))), "seen must be (2,)", "(1, 2)")
    await expect(TypeError, lambda: s(x, rt.tensor(np.zeros(2, np.int32))),
                 "sample_token: seen must be a uint32 bit mask, got int32")
    await expect(TypeError, lambda: s(x, rt.tensor(np.zeros(2, np.float32))), "seen must be a uint32 bit mask")
    await expect(TypeError, lambda: s(rt.tensor(np.zeros(40, np.int32))),
                 "sample_token: logits must be float32, got int32")
    await expect(ValueError, lambda: s(rt.tensor(np.zeros((2, 40), np.float32))),
                 "sample_token: logits must be one row of V >= 1 values, (1, V) or (V,), got (2, 40)")
    await expect(ValueError, lambda: s(rt.tensor(np.zeros((1, 0), np.float32))), "one row of V >= 1", "(1, 0)")
    await expect(TypeError, lambda: s(x, np.zeros(2, np.uint32)), "sample_token: seen must be a gpuport Tensor")
    assert (await s(x, seen).read()).tolist() == [0]   # the same call with a well-formed mask answers
    assert await _sample(rt, np.zeros((1, 40), np.float32), np.zeros(2, np.uint32), temperature=1.0, u=0.99) == 39


# -- errors -----------------------------------------------------------------------------------------

BROKEN_WGSL = """@group(0) @binding(0) var<storage, read_write> d: array<f32>;
@compute @workgroup_size(1)
fn main() {
  d[0] = undefined_name + 1.0;
}
"""


@case(backends=("webgpu",))
async def compile_error_names_line_and_column(rt):
    async def build_and_run():
        k = rt.kernel(BROKEN_WGSL)
        out = rt.empty(4)
        k.dispatch(1, out)
        return out
    exc = await expect(gp.ShaderCompileError, build_and_run, "undefined_name")
    assert exc.line == 4, f"line {exc.line} != 4: {exc}"
    assert exc.column is not None and exc.column >= 3, exc
    assert "line 4:" in str(exc), str(exc)


@case()
async def shape_mismatch_names_both_shapes(rt):
    a, b = rt.tensor(np.ones((4, 5), np.float32)), rt.tensor(np.ones((6, 3), np.float32))
    await expect(ValueError, lambda: rt.ops.matmul(a, b), "(4, 5)", "(6, 3)")
    await expect(ValueError, lambda: rt.ops.add(a, b), "(4, 5)", "(6, 3)")


@case()
async def dtype_mismatch_names_the_dtype(rt):
    a = rt.tensor(np.ones((4, 5), np.float32))
    i = rt.tensor(np.ones((4, 5), np.int32))
    await expect(TypeError, lambda: rt.ops.add(a, i), "int32", "float32")
    await expect(TypeError, lambda: rt.tensor(np.ones(3)), "float64")


@case()
async def embedding_id_out_of_range(rt):
    table = rt.tensor(np.ones((10, 4), np.float32))
    await expect(IndexError, lambda: rt.ops.embedding(rt.tensor(np.array([3, 10], np.int32)), table), "10", "10 rows")


@case(backends=("webgpu",))
async def tensor_beyond_binding_limit_names_the_limit(rt):
    info = rt.info()
    if "over_budget_strategies" in info:
        # A budgeted runtime (constrained tier) stores tensors over its binding budget as blocks instead.
        budget = info["limits"]["maxStorageBufferBindingSize"]
        t = rt.empty(budget // 4 + 1)
        assert t.blocked, "a tensor over the binding budget must be stored in blocks under a budget"
        return
    limit = info["limits"]["maxStorageBufferBindingSize"]
    exc = await expect(gp.LimitExceeded, lambda: rt.empty(limit // 4 + 1), "maxStorageBufferBindingSize",
                       f"{limit:,}")
    assert exc.limit == "maxStorageBufferBindingSize" and exc.value == limit


@case()
async def use_after_close_is_refused(rt):
    other = await gp.open(backend=rt.backend)
    t = other.tensor(np.ones(3, np.float32))
    other.close()
    await expect(gp.RuntimeClosed, lambda: other.tensor(np.ones(3, np.float32)), "closed")
    await expect(gp.RuntimeClosed, t.read, "closed")
    await expect(gp.RuntimeClosed, lambda: other.ops.gelu(t), "closed")


@case(backends=("webgpu",), device=("scale",))
async def batch_of_dispatches_crosses_the_boundary_a_constant_number_of_times(rt):
    return await _batch_crossings(rt)


async def _batch_crossings(rt):
    # N queued ops cost one submit and one read, whatever N is; in a page the JS bridge's own call
    # counter must agree (it counts every call that crosses from Python into JS).
    if rt.mode == "auto":
        # backend="auto" may place these tiny ops on NumPy: count crossings on an always-GPU runtime
        own = await gp.open(backend=rt.backend)
        try:
            return await _batch_crossings(own)
        finally:
            own.close()
    def counters():
        js_calls = None
        if gp.IN_PYODIDE:
            import gpuport_bridge
            js_calls = gpuport_bridge.stats.calls
        s = rt.device.stats
        return s["submits"] + s["reads"], js_calls

    x = rt.tensor(np.ones((4, 8), np.float32))
    await rt.ops.scale(x, 1.0, 0.0).read()  # compile outside the measured window
    costs = {}
    for n in (1, 10, 100):
        before, js_before = counters()
        y = x
        for _ in range(n):
            y = rt.ops.scale(y, 1.0, 1.0)
        got = await y.read()
        after, js_after = counters()
        close(got, np.full((4, 8), 1.0 + n, np.float32), what=f"chain of {n}")
        costs[n] = (after - before, None if js_before is None else js_after - js_before)
    assert costs[1] == costs[10] == costs[100], f"boundary crossings grow with the batch: {costs}"
    assert costs[1][0] == 2, f"expected one submit and one read per batch, got {costs}"


# -- tiers and fallback strategies (issue 4) ---------------------------------------------------------
# Each case opens its own runtime in the tier it needs and closes it. f16 tolerances (the full tier's
# kernels, precision="f16"; h = 2**-11, f16's unit roundoff):
# - matmul_f16: operands rounded to f16, products and sums in f32: |err| <= 2h (|a| @ |b|) + the f32 bound.
# - gelu_f16: erf in f16: |err| <= 2.5e-3 |x| + 1e-5.
# - softmax_f16: exp in f16 of z = x - max (z < -16 -> 0): atol 1e-3 (outputs <= 1), rtol 1e-2.
# - layer_norm_f16: statistics in f32, affine in f16: |err| <= 4h (|x_hat * gamma| + |beta|) + 1e-6.

async def _metrics_of(rt):
    return rt.fallback.get_performance_metrics()


@case(backends=("webgpu",), device=("matmul",), own=True)
async def constrained_matmul_weight_over_binding_budget(rt):
    # The acceptance case: a (384, 1536) weight (2.25 MiB) over a 1 MiB binding budget is stored as blocks;
    # layer decomposition runs one launch per block (row blocks: split-K, accumulating; a transposed
    # weight's row blocks: column blocks of C) and the answer is the reference's.
    budget = {"maxStorageBufferBindingSize": 1 << 20, "maxBufferSize": 1 << 20}
    crt = await gp.open(backend=rt.backend, tier="constrained", budget=budget)
    try:
        assert crt.tier == "constrained", crt.tier
        assert crt.info()["limits"]["maxStorageBufferBindingSize"] == 1 << 20
        r = rng(40)
        for tb in (False, True):
            a = r.uniform(-1, 1, (100, 384)).astype(np.float32)
            w = r.uniform(-1, 1, (1536, 384) if tb else (384, 1536)).astype(np.float32)
            bias = r.uniform(-1, 1, (1536,)).astype(np.float32)
            wt = crt.tensor(w)
            assert wt.blocked and len(wt.blocks) >= 3, wt
            crt.fallback.reset_metrics()
            with proves_on_device(crt, "matmul"):
                got = await crt.ops.matmul(crt.tensor(a), wt, bias=crt.tensor(bias), transpose_b=tb).read()
            m = await _metrics_of(crt)
            assert m["last_strategy"]["matmul"] == "layer_decomposition", m
            assert m["layer_operations"] >= len(wt.blocks), m
            assert m["memory_usage"]["largest_binding_bytes"] <= 1 << 20, m
            bb = w.T if tb else w
            bound = 2 * (384 + 1) * U * (np.abs(a) @ np.abs(bb) + np.abs(bias)) + 1e-30
            close(got, K.matmul_ref(a, w, bias, transpose_b=tb), atol=bound, what=f"layer decomposition tb={tb}")
    finally:
        crt.close()


@case(backends=("webgpu",), device=("gelu", "add", "softmax", "layer_norm", "sum"), own=True)
async def constrained_tiled_ops_over_binding_budget(rt):
    # A (600, 1000) activation (2.3 MiB) over a 1 MiB budget: elementwise and row-wise ops run per tile.
    crt = await gp.open(backend=rt.backend, tier="constrained",
                        budget={"maxStorageBufferBindingSize": 1 << 20, "maxBufferSize": 1 << 20})
    try:
        r = rng(41)
        x = (r.standard_normal((600, 1000)) * 2).astype(np.float32)
        g = r.standard_normal(1000).astype(np.float32)
        b = r.standard_normal(1000).astype(np.float32)
        xt = crt.tensor(x)
        assert xt.blocked, xt
        crt.fallback.reset_metrics()
        with proves_on_device(crt, "gelu", "add", "softmax", "layer_norm", "sum"):
            close(await crt.ops.gelu(xt).read(), K.gelu_ref(x), atol=1e-6, what="tiled gelu")
            close(await crt.ops.add(xt, crt.tensor(b)).read(), K.add_ref(x, b), rtol=2e-7, what="tiled add")
            close(await crt.ops.softmax(xt).read(), K.softmax_ref(x), rtol=1e-5, atol=1e-6, what="tiled softmax")
            close(await crt.ops.layer_norm(xt, crt.tensor(g), crt.tensor(b)).read(), K.layer_norm_ref(x, g, b),
                  rtol=1e-5, atol=1e-5 + 8 * 1000 * U * (np.abs(g) + 1), what="tiled layer_norm")
            res = x[::-1].copy()   # blocked like x: each block's residual rows are its own
            close(await crt.ops.layer_norm(xt, crt.tensor(g), crt.tensor(b), residual=crt.tensor(res)).read(),
                  K.layer_norm_ref(x, g, b, res), rtol=1e-5, atol=1e-5 + 8 * 1000 * U * (np.abs(g) + 1),
                  what="tiled layer_norm with a residual")
            close(await crt.ops.sum(xt).read(), K.sum_ref(x), atol=2 * 1000 * U * np.abs(x).sum(-1), what="tiled sum")
        m = await _metrics_of(crt)
        assert m["strategies"].get("tiled") == 6 and m["tiles"] >= 12, m
    finally:
        crt.close()


@case(backends=("webgpu",), device=("attention",), own=True)
async def constrained_attention_chunks_and_head_groups(rt):
    # The per-dispatch score budget splits attention: heads in groups when one head fits, query chunks
    # when it does not; a q over the binding budget runs per block. Every split matches the reference.
    r = rng(42)
    b_, sq, sk, heads, d = 2, 96, 80, 4, 16
    q = r.standard_normal((b_, sq, heads * d)).astype(np.float32)
    k = r.standard_normal((b_, sk, heads * d)).astype(np.float32)
    v = r.standard_normal((b_, sk, heads * d)).astype(np.float32)
    valid = np.array([sk, sk // 2])
    mask = np.where(np.arange(sk)[None, :] < valid[:, None], 0.0, -1e9).astype(np.float32)
    want = K.attention_ref(q, k, v, mask, num_heads=heads)
    for scores, strategy, binding in ((2 * sq * sk, "head_partitioning", 1 << 20),
                                      (sk * 10, "chunked_attention", 1 << 20),
                                      (1 << 30, "chunked_attention", 44 * 1024)):  # q blocked, k/v not
        crt = await gp.open(backend=rt.backend, tier="constrained",
                            budget={"maxAttentionScoresPerDispatch": scores, "maxStorageBufferBindingSize": binding,
                                    "maxBufferSize": binding})
        try:
            qt, kt = crt.tensor(q), crt.tensor(k)
            assert qt.blocked == (binding < 1 << 20) and not kt.blocked, (qt, kt)
            with proves_on_device(crt, "attention"):
                got = await crt.ops.attention(qt, kt, crt.tensor(v), heads, mask=crt.tensor(mask)).read()
            m = await _metrics_of(crt)
            assert m["last_strategy"]["attention"] == strategy, (scores, m)
            assert m["attention_dispatches"] > 1, m
            close(got, want, rtol=1e-4, atol=2e-5 * math.sqrt(d), what=f"{strategy} scores={scores}")
            # causal: each chunk of queries sees keys up to its own rows, whatever the split
            with proves_on_device(crt, "attention"):
                got = await crt.ops.attention(qt, kt, crt.tensor(v), heads, mask=crt.tensor(mask), causal=True).read()
            close(got, K.attention_ref(q, k, v, mask, num_heads=heads, causal=True), rtol=1e-4,
                  atol=2e-5 * math.sqrt(d), what=f"causal {strategy} scores={scores}")
        finally:
            crt.close()


@case(backends=("webgpu",))
async def constrained_embedding_table_over_budget_uses_cpu_on_known_values(rt):
    # A 30522 x 64 table (7.5 MiB) over the default 4 MiB budget has no GPU gather strategy; its values
    # and the ids are known on the host, so the cpu strategy serves it (no readback: none is needed).
    crt = await gp.open(backend=rt.backend, tier="constrained")
    try:
        r = rng(43)
        ids = r.integers(0, 30522, (2, 16)).astype(np.int32)
        table = r.standard_normal((30522, 64)).astype(np.float32)
        got = await crt.ops.embedding(crt.tensor(ids), crt.tensor(table)).read()
        m = await _metrics_of(crt)
        assert m["last_strategy"]["embedding"] == "cpu" and m["cpu_fallbacks"] == 1, m
        close(got, K.embedding_ref(ids, table), what="cpu strategy embedding")
    finally:
        crt.close()


@case(backends=("webgpu",), device=("matmul", "gelu"), own=True)
async def constrained_simplified_shaders_small_workgroups(rt):
    # The constrained budget allows 64 invocations and 4 KiB of workgroup memory: matmul runs the 8x8
    # matmul_small.wgsl, elementwise ops a 64-wide workgroup.
    crt = await gp.open(backend=rt.backend, tier="constrained")
    try:
        plan = crt.info()["strategies"]
        assert plan["matmul"] == "simplified_shader" and plan["gelu"] == "simplified_shader", plan
        r = rng(44)
        a = r.uniform(-1, 1, (2, 37, 129)).astype(np.float32)
        w = r.uniform(-1, 1, (2, 129, 65)).astype(np.float32)
        x = (r.standard_normal((37, 129)) * 3).astype(np.float32)
        with proves_on_device(crt, "matmul", "gelu"):
            got = await crt.ops.matmul(crt.tensor(a), crt.tensor(w)).read()
            close(got, K.matmul_ref(a, w), atol=2 * 130 * U * (np.abs(a) @ np.abs(w)) + 1e-30, what="matmul_small")
            close(await crt.ops.gelu(crt.tensor(x)).read(), K.gelu_ref(x), atol=1e-6, what="gelu WG=64")
        m = await _metrics_of(crt)
        assert m["strategies"] == {"simplified_shader": 2}, m
    finally:
        crt.close()


@case(backends=("webgpu",), device=("matmul", "gelu", "softmax", "layer_norm"), own=True)
async def full_tier_f16_kernels_or_f32_step_down(rt):
    # precision="f16": the f16 variants where the adapter has shader-f16 (the full tier), else f32 with
    # the f32 results. Either way no error, and the stated tolerances hold.
    frt = await gp.open(backend=rt.backend, precision="f16")
    try:
        f16 = frt.tier == "full"
        assert frt.precision == ("f16" if f16 else "f32"), frt.info()
        r = rng(45)
        h = 2.0 ** -11
        a = r.uniform(-1, 1, (37, 129)).astype(np.float32)
        w = r.uniform(-1, 1, (129, 65)).astype(np.float32)
        ab = np.abs(a) @ np.abs(w)
        with proves_on_device(frt, "matmul", "gelu", "softmax", "layer_norm"):
            got = await frt.ops.matmul(frt.tensor(a), frt.tensor(w)).read()
            close(got, K.matmul_ref(a, w), atol=(2 * h if f16 else 0) * ab + 2 * 130 * U * ab + 1e-30, what="matmul f16")
            x = (r.standard_normal((37, 129)) * 3).astype(np.float32)
            close(await frt.ops.gelu(frt.tensor(x)).read(), K.gelu_ref(x),
                  atol=(2.5e-3 * np.abs(x) + 1e-5) if f16 else 1e-6, what="gelu f16")
            m_ = np.where(r.random(129) < 0.3, -1e9, 0).astype(np.float32)
            close(await frt.ops.softmax(frt.tensor(x), mask=frt.tensor(m_)).read(), K.softmax_ref(x, m_),
                  rtol=1e-2 if f16 else 1e-5, atol=1e-3 if f16 else 1e-6, what="softmax f16")
            n = 384
            x2 = (r.standard_normal((4, n)) * 2 + 1).astype(np.float32)
            g = r.standard_normal(n).astype(np.float32)
            b = r.standard_normal(n).astype(np.float32)
            mean = x2.mean(-1, keepdims=True)
            xh = (x2 - mean) / np.sqrt(((x2 - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
            tol = 4 * h * (np.abs(xh * g) + np.abs(b)) + 1e-6 if f16 else 1e-5 + 8 * n * U * (np.abs(g) + 1)
            close(await frt.ops.layer_norm(frt.tensor(x2), frt.tensor(g), frt.tensor(b)).read(),
                  K.layer_norm_ref(x2, g, b), atol=tol, rtol=0 if f16 else 1e-5, what="layer_norm f16")
            # the residual halves x2 back: the same x_hat, so the same bound
            close(await frt.ops.layer_norm(frt.tensor(x2 / 2), frt.tensor(g), frt.tensor(b),
                                           residual=frt.tensor(x2 / 2)).read(),
                  K.layer_norm_ref(x2 / 2, g, b, x2 / 2), atol=tol, rtol=0 if f16 else 1e-5,
                  what="layer_norm f16 with a residual")
        m = await _metrics_of(frt)
        assert m["strategies"] == ({"f16": 5} if f16 else {"native": 5}), m
    finally:
        frt.close()


@case(backends=("webgpu",), device=("q4_1_matvec", "q8_0_matvec", "q4_1_matmul"), own=True)
async def full_tier_f16_quantized_kernels_or_f32_step_down(rt):
    # precision="f16": the quantized matvecs and the Q4_1 matmul in f16 where the adapter has shader-f16 (x and
    # each dequantized weight rounded to f16, a half-block's 16-term dot product in f16, half-block sums in f32:
    # 24 h (|W| @ |x|) beyond the f32 bound 2 (K+2) u (|W| @ |x|), as tests/host/test_quant_kernels.py states), else f32.
    frt = await gp.open(backend=rt.backend, precision="f16")
    try:
        f16 = frt.precision == "f16"
        r = rng(46)
        n, k, t = 40, 96, 5
        x = r.standard_normal((t, k)).astype(np.float32)
        frt.fallback.reset_metrics()
        with proves_on_device(frt, "q4_1_matvec", "q8_0_matvec", "q4_1_matmul"):
            for kind in ("Q4_1", "Q8_0"):
                raw = _llama_blocks(kind, n, k, r)
                words = as_words(raw)
                scale = np.abs(x) @ np.abs(dequantize(raw, kind, (n, k))).T
                bound = 2 * (k + 2) * U * scale + (24 * 2.0 ** -11 * scale if f16 else 0) + 1e-30
                wt = frt.tensor(words)
                got = await frt.ops.q_linear(frt.tensor(x), wt, kind, (n, k), row=2).read()
                ref = K.q4_1_matvec_ref if kind == "Q4_1" else K.q8_0_matvec_ref
                close(got, ref(words, x, n=n, k=k, row=2)[None], atol=bound[2:3], what=f"{kind} matvec")
                if kind == "Q4_1":
                    got = await frt.ops.q_linear(frt.tensor(x), wt, kind, (n, k)).read()
                    close(got, K.q4_1_matmul_ref(words, x, n=n, k=k), atol=bound, what="Q4_1 matmul")
        m = await _metrics_of(frt)
        assert m["strategies"] == ({"f16": 3} if f16 else {"native": 3}), m
    finally:
        frt.close()


@case(backends=("auto",))
async def auto_places_every_call_and_says_where(rt):
    # Under auto each call runs on the side the selector picks and is counted there; pinned, it runs where it is
    # told; every side agrees with the reference.
    assert rt.mode == "auto", rt.mode
    x = (rng(90).standard_normal((33, 65)) * 3).astype(np.float32)
    before = dict(rt.info()["ran"].get("gelu", {}))
    answers = [await rt.ops.gelu(rt.tensor(x)).read()]
    for side in ("webgpu", "cpu"):
        with rt.pinned(side):
            answers.append(await rt.ops.gelu(rt.tensor(x)).read())
    after = rt.info()["ran"]["gelu"]
    delta = {w: after.get(w, 0) - before.get(w, 0) for w in ("webgpu", "cpu")}
    assert sum(delta.values()) == 3 and delta["webgpu"] >= 1 and delta["cpu"] >= 1, delta
    for got in answers:
        close(got, K.gelu_ref(x), atol=1e-6, what="gelu under auto")
    assert sum(rt.info()["selection"]["counts"]["gelu"].values()) >= 3, rt.info()["selection"]


@case(backends=("webgpu",))
async def ops_during_precompilation_match_the_reference(rt):
    # Nothing waits for compilation: while precompile() builds an op's pipelines, a call of that op whose inputs the
    # host knows answers on NumPy; afterwards the same ops run on the GPU. Same results. Two ops' pipelines: the
    # behaviour, not the length of the list (the precompile tests build every pipeline).
    import asyncio
    fresh = await gp.open(backend=rt.backend)
    try:
        x = (rng(12).standard_normal((33, 40)) * 3).astype(np.float32)
        want = K.gelu_ref(K.softmax_ref(x))
        progress = []
        task = asyncio.ensure_future(fresh.precompile(ops=["gelu", "softmax"], on_progress=progress.append))
        await asyncio.sleep(0)
        during = await fresh.ops.gelu(fresh.ops.softmax(fresh.tensor(x))).read()   # softmax compiles last
        report = await task
        after = await fresh.ops.gelu(fresh.ops.softmax(fresh.tensor(x))).read()
        used = fresh.fallback.get_performance_metrics()["strategies"]
        # softmax's rtol 1e-5 carried through GELU (slope below 1.13), plus GELU's own atol 1e-6
        close(during, want, rtol=2e-5, atol=2e-6, what="during precompilation")
        close(after, want, rtol=2e-5, atol=2e-6, what="after precompilation")
        assert used.get("cpu", 0) >= 1 and used.get("native", 0) >= 2, used
        assert report["pipelines"] + report["already"] >= 2 and not report["failed"], report
        assert progress and progress[-1]["done"] == progress[-1]["total"], progress[-1:]
    finally:
        fresh.close()


@case(device=("add", "attention", "embedding", "gelu", "l2_normalize", "layer_norm", "matmul", "mean", "mean_pool",
              "mul", "scale", "softmax", "sum"))
async def properties_seeded(rt):
    # tests/properties.py's checks (NaN, +-inf, huge, tiny, empty axes) on seeded draws of every op: the
    # page's subset of what Hypothesis explores natively (tests/test_properties.py).
    assert await check_seeded(rt, examples=4, seed=2024) == 4 * len(PROPERTIES)


# -- reliability (issue 14): what a failed batch, bad device data and edge values do ---------------------

_DEVICE_ONLY_BAD = """struct P { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(1) fn main() { o[0] = p.d.x; }"""


@case(backends=("webgpu",))
async def failed_batch_outputs_raise_never_zeros(rt):
    # A uniform buffer smaller than its struct: only the device sees it, and it rejects the whole batch,
    # the good scale queued before it included. Its output must raise, not read back as zeros.
    own = await gp.open(backend="webgpu")   # an always-GPU runtime: auto could run the scale on NumPy
    try:
        await own.ops.scale(own.tensor(np.ones(4, np.float32)), 1.0, 0.0).read()
        good = own.ops.scale(own.tensor(np.arange(4, dtype=np.float32)), 2.0, 0.0)
        own.kernel(_DEVICE_ONLY_BAD).dispatch(1, own.empty(4), uniforms=[1.0])
        await expect(gp.GpuValidationError, good.read)          # the batch fails: raised once ...
        await expect(gp.BatchFailed, good.read, "never computed")   # ... and its outputs stay unreadable
        await expect(gp.BatchFailed, lambda: own.ops.add(good, own.tensor(np.ones(4, np.float32))))
        fresh = await own.ops.scale(own.tensor(np.arange(4, dtype=np.float32)), 2.0, 0.0).read()
        close(fresh, np.array([0, 2, 4, 6], np.float32), what="after a failed batch")
    finally:
        own.close()


@case(backends=("webgpu",))
async def embedding_ids_computed_on_the_gpu_raise_index_error(rt):
    own = await gp.open(backend="webgpu")
    try:
        table = own.tensor(np.arange(40, dtype=np.float32).reshape(10, 4))
        ids = own.empty(3, "int32")
        own.kernel("@group(0) @binding(0) var<storage, read_write> o: array<i32>;\n"
                   "@compute @workgroup_size(1) fn main() { o[0] = 1; o[1] = 999; o[2] = -7; }").dispatch(1, ids)
        rows = own.ops.embedding(ids, table)
        err = await expect(IndexError, rows.read, "is outside the table's 10 rows")
        assert "999" in str(err) or "-7" in str(err), err
        await expect(IndexError, rows.read, "outside the table")   # never the zero rows on a second read
        ok = await own.ops.embedding(own.tensor(np.array([1, 2], np.int32)), table).read()
        close(ok, np.arange(40, dtype=np.float32).reshape(10, 4)[[1, 2]], what="embedding after the error")
    finally:
        own.close()


@case(device=("l2_normalize",))
async def l2_normalize_propagates_nan_and_survives_huge_rows(rt):
    # 3e38's exponent is past 126: scaled by 2^-126, one normal factor (the product of two, 2^-64 each, was flushed
    # to 0 where a driver multiplied them first)
    x = np.array([[np.nan, 1, 2, 3], [3e20, 4e20, 0, 0], [3e-30, 4e-30, 0, 0], [0, 0, 0, 0], [3e38, 1e38, 0, 0]],
                 np.float32)
    got = await rt.ops.l2_normalize(rt.tensor(x)).read()
    assert np.isnan(got[0]).all(), got[0]
    close(got[1:], np.array([[0.6, 0.8, 0, 0], [3e-18, 4e-18, 0, 0], [0, 0, 0, 0], [0.9486833, 0.31622776, 0, 0]],
                            np.float32), rtol=1e-5, what="huge and tiny rows")


@case(device=("layer_norm",))
async def layer_norm_of_constant_and_huge_rows(rt):
    # A row holding 3e38 beside small values: NVIDIA's driver divided it by its peak as 1 / 3e38 (flushed to 0),
    # so the row was 0 / 0; then by two powers of two whose product (2^-128) it formed first and flushed; now by
    # one. A constant row's deviations are exactly 0 whatever its values' mantissas: with eps = 0 that is 0 / 0
    # (NaN, as the reference), with eps > 0 it is beta.
    n = 11
    g, b = np.linspace(0.5, 1.5, n).astype(np.float32), np.linspace(-1, 1, n).astype(np.float32)
    huge = np.array([[3e38, 1e-3, -2e-3, 1.0, -1.0, 0.5, 7e-4, 1e-30, 0.0, -3.0, 2.0]], np.float32)
    got = await rt.ops.layer_norm(rt.tensor(huge), rt.tensor(g), rt.tensor(b), eps=0.0).read()
    close(got, K.layer_norm_ref(huge, g, b, eps=0.0), rtol=1e-5, atol=1e-5, what="a row holding 3e38")
    const = np.full((2, n), 4.626519e16, np.float32)
    const[1] = 0.1
    nan_rows = await rt.ops.layer_norm(rt.tensor(const), rt.tensor(g), rt.tensor(b), eps=0.0).read()
    assert np.isnan(nan_rows).all(), nan_rows
    close(await rt.ops.layer_norm(rt.tensor(const), rt.tensor(g), rt.tensor(b), eps=1e-5).read(),
          np.broadcast_to(b, (2, n)), what="constant rows with eps > 0")


@case(device=("mean", "sum"))
async def mean_and_sum_of_empty_rows_match_numpy(rt):
    x = rt.tensor(np.zeros((3, 0), np.float32))
    assert np.isnan(await rt.ops.mean(x).read()).all()
    close(await rt.ops.sum(x).read(), np.zeros(3, np.float32), what="sum of empty rows")


@case()
async def arguments_are_validated_with_typed_errors(rt):
    q = rt.tensor(np.ones((1, 2, 8), np.float32))
    await expect(TypeError, lambda: rt.ops.attention(q, q, q, num_heads=2.5), "num_heads must be an int")
    await expect(ValueError, lambda: rt.empty((2 ** 32, 2 ** 32)), "more than int64")
    await expect(TypeError, lambda: rt.empty((2.5, 3)), "integers")
    await expect(TypeError, lambda: rt.ops.scale(q, "x"), "scale: a must be a real number")
    g = rt.tensor(np.ones(8, np.float32))
    await expect(ValueError, lambda: rt.ops.layer_norm(q, g, g, eps=-1.0), "eps must be finite >= 0")
    await expect(ValueError, lambda: rt.ops.layer_norm(q, g, g, residual=rt.tensor(np.ones((2, 8), np.float32))),
                 "residual shape (2, 8) must be x's (1, 2, 8)")
    await expect(TypeError, lambda: rt.kernel(b"@compute @workgroup_size(1) fn main() {}"), "decode")


@case(backends=("webgpu", "cpu", "auto"), device=("matmul", "gelu"))
async def profile_says_where_each_op_ran_and_how_long(rt):
    import json
    r = rng(81)
    x, w = rt.tensor(r.standard_normal((24, 40)).astype(np.float32)), rt.tensor(r.standard_normal((40, 16)).astype(np.float32))
    with rt.profile() as prof:
        y = rt.ops.gelu(rt.ops.matmul(x, w))
        await y.read()                      # device timestamps come back with a read
    data = prof.report()
    assert [o["op"] for o in data["ops"]] == ["matmul", "gelu"], data["ops"]
    for o in data["ops"]:
        assert o["where"] in ("webgpu", "cpu") and o["strategy"] and o["host_ms"] >= 0, o
        if o["where"] == "webgpu" and data["timing"] == "timestamp-query":
            assert o["device_ms"] is not None and o["kernels"], o
    on_device = data["ops"][-1]["where"] == "webgpu"     # then reading y moved its bytes to the host
    assert set(data["by_op"]) == {"matmul", "gelu"} and data["bytes_to_host"] >= (24 * 16 * 4 if on_device else 0)
    data = json.loads(prof.report("json"))
    assert data["backend"] == rt.mode and data["device"] == rt.backend
    assert "<table>" in prof.report("html") and "| matmul |" in prof.report("markdown")


@case(device=("scale",))
async def reshape_is_a_view_with_a_clear_error(rt):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = rt.tensor(x)
    close(await rt.ops.scale(t.reshape(6, 4), 2.0, 0.0).read(), (x.reshape(6, 4) * 2).astype(np.float32),
          what="reshape")
    close(await t.reshape((4, 6)).read(), x.reshape(4, 6), what="reshape read")
    await expect(ValueError, lambda: t.reshape(5, 5), "(2, 3, 4)", "(5, 5)")


# -- recovery (issue 7) ------------------------------------------------------------------------------

@case(backends=("webgpu",))
async def device_destroyed_mid_workload_is_recovered(rt):
    # A workload on its own runtime; halfway through, the device is destroyed (natively wgpu's
    # device.destroy(), in a page the bridge's loseDevice hook: GPUDevice.destroy()). The runtime opens a
    # new device, rebuilds its pipelines, re-uploads host-backed tensors and replays op outputs: the
    # results equal the reference, and the statistics show exactly one device-loss recovery.
    wrt = await gp.open(backend=rt.backend)
    try:
        r = rng(71)
        x = r.standard_normal((24, 48)).astype(np.float32)
        w = r.standard_normal((48, 32)).astype(np.float32)
        b = r.standard_normal(32).astype(np.float32)
        tx, tw, tb = wrt.tensor(x), wrt.tensor(w), wrt.tensor(b)
        h = wrt.ops.gelu(wrt.ops.matmul(tx, tw, bias=tb))
        first = await h.read()                       # the device has done real work before the loss
        s = wrt.ops.softmax(wrt.ops.scale(h, 0.5, 0.0))   # queued, not yet run
        wrt.device.destroy_for_test()
        y = wrt.ops.add(s, wrt.ops.scale(s, 1.0, 1.0))    # issued after the loss
        got = await y.read()
        again = await h.read()
        hr = K.gelu_ref(K.matmul_ref(x, w) + b)
        sr = K.softmax_ref((hr * 0.5).astype(np.float32))
        want = (sr + (sr + 1.0)).astype(np.float32)
        bound = 2 * 49 * U * (np.abs(x) @ np.abs(w) + np.abs(b)) + 1e-6
        close(first, hr, atol=bound, what="before the loss")
        close(again, hr, atol=bound, what="replayed after the loss")
        close(got, want, rtol=1e-5, atol=1e-5, what="workload across the loss")
        st = wrt.recovery.stats()
        assert st["device_losses"] == 1 and st["recoveries"] == 1 and st["failed_recoveries"] == 0, st
        assert st["restored_tensors"] >= 3, st
    finally:
        wrt.close()


# -- llama (issue 12) -----------------------------------------------------------------------------------
# A small random llama (2 blocks, dim 64, 4 heads over 2 KV heads, vocab 96, Q4_1 layers, Q8_0 tied embedding)
# built through the same source contract as the GGUF (a header with .metadata and .tensors, raw(name) -> stored
# bytes): the whole forward on this lane (the device forward on webgpu, the host forward on cpu) against the NumPy
# reference forward (models/llama_ref.py) on the same weights. Both are float32 on the same dequantized weights,
# so only accumulation order differs over 2 blocks: |err| <= 1e-4 * max|logit| (measured below 1e-6 relative).

def _llama_blocks(kind, n, k, r):
    nb = n * k // 32
    d = (r.standard_normal(nb) * 0.02).astype(np.float16).view(np.uint8).reshape(nb, 2)
    if kind == "Q4_1":
        m = (-8 * np.abs(d.view(np.float16).astype(np.float32))).astype(np.float16).view(np.uint8).reshape(nb, 2)
        return np.concatenate([d, m, r.integers(0, 256, (nb, 16), dtype=np.uint8)], axis=1).ravel()
    return np.concatenate([d, r.integers(0, 256, (nb, 32), dtype=np.uint8)], axis=1).ravel()


def _tiny_llama():
    r = rng(120)
    dim, ffn, vocab, layers = 64, 96, 96, 2
    meta = {"general.architecture": "llama", "llama.block_count": layers, "llama.context_length": 128,
            "llama.embedding_length": dim, "llama.feed_forward_length": ffn, "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2, "llama.rope.freq_base": 10000.0, "llama.vocab_size": vocab,
            "llama.attention.layer_norm_rms_epsilon": 1e-5, "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": list(bytes_to_unicode().values())[:vocab],
            "tokenizer.ggml.merges": [], "tokenizer.ggml.eos_token_id": 0}
    shapes = {"token_embd.weight": ("Q8_0", (vocab, dim)), "output_norm.weight": ("F32", (dim,))}
    for i in range(layers):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": ("F32", (dim,)), p + "ffn_norm.weight": ("F32", (dim,)),
                       p + "attn_q.weight": ("Q4_1", (dim, dim)), p + "attn_k.weight": ("Q4_1", (32, dim)),
                       p + "attn_v.weight": ("Q4_1", (32, dim)), p + "attn_output.weight": ("Q4_1", (dim, dim)),
                       p + "ffn_gate.weight": ("Q4_1", (ffn, dim)), p + "ffn_up.weight": ("Q4_1", (ffn, dim)),
                       p + "ffn_down.weight": ("Q4_1", (dim, ffn))})
    data = {n: (r.uniform(0.5, 1.5, s).astype(np.float32).view(np.uint8) if kind == "F32"
                else _llama_blocks(kind, s[0], s[1], r)) for n, (kind, s) in shapes.items()}
    tensors = {n: TensorInfo(n, tuple(reversed(s)), GGML_TYPE_IDS[kind], 0, data[n].size)
               for n, (kind, s) in shapes.items()}
    return SimpleNamespace(metadata=meta, tensors=tensors), data


@case(device=("q8_0_embedding", "rms_norm", "q4_1_matmul", "rope", "kv_attention", "add", "swiglu", "q8_0_matvec",
              "q4_1_matvec"))
async def llama_tiny_forward_matches_the_reference(rt):
    header, data = _tiny_llama()

    async def raw(name):
        return data[name]

    llm = await Llama.build(rt, header, raw)
    ids = [5, 17, 3, 90, 42, 42, 7]
    # Where the host's SIMD kernels run the forward, the reference multiplies as they do (8-bit activations,
    # quant.q8_matmul_ref); both then agree to float32 rounding except where a rounding moves an activation across
    # a step of its 8-bit grid (wasm_cases.wasm_llama_layers): 1% of the logits' scale. Elsewhere 1e-4 of it.
    kernels = hostops.layers() is not None and llm.on_host(len(ids))
    ref_model = L.LlamaRef(llm.config, L.LlamaWeights(
        llm.embd.matrix(True), llm._host_weights(), llm.vectors["output_norm.weight"], llm.embd.matrix(True)),
        linear=(lambda a, w: q8_matmul_ref(a, w)[0]) if kernels else L.qlinear)
    cache = ref_model.new_cache(len(ids) + 2)
    want = ref_model.forward(np.asarray(ids), cache)
    got = await llm.logits(ids)
    tol = (1e-2 if kernels else 1e-4) * float(np.abs(want).max())
    close(got, want, atol=tol, what="tiny llama first-step logits")
    steps = [t.id async for t in llm.generate(ids, max_new_tokens=3, ignore_eos=True)]
    for step in steps[:2]:                     # the device KV cache across decode steps, against the reference's
        top2 = np.sort(want)[-2:]
        if top2[1] - top2[0] > 2 * tol:        # an argmax no rounding within the tolerance can flip
            assert step == int(np.argmax(want)), (steps, int(np.argmax(want)))
        want = ref_model.forward(np.asarray([step]), cache)
    assert llm.stats()["generated_tokens"] == 3 and llm.session is None


# -- covering subsets (docs/testing.md) ------------------------------------------------------------------------------
# A lane that shares its engine with a lane running a whole list runs only what its own path adds. Each subset is a
# greedy set cover, by measured time, of the coverage matrix's rows that its lanes proved running the whole list
# (tests/coverage_matrix.py), plus the cases of the path itself; the matrix proves every run still fills them.
SUBSETS = {
    # a second lane of an engine whose first runs the whole device list (firefox-webgpu: naga, as natively): every
    # kernel variant and strategy once, f16 included, and what the bridge does beside the kernels
    "variants": ("chained_ops_queue_and_read_once", "rowwise_1x1", "log_mel_33x9_start5_rows10_end5", "add_7x13_by_13",
             "embedding_7_vocab13x5", "mul_7x13_by_7x13", "reshape_is_a_view_with_a_clear_error",
             "stft_power_5_n1_hop2", "conv1d_37x13_to_33_k5_s3_p2_bias_gelu", "profile_says_where_each_op_ran_and_how_long",
             "matmul_rb_1x4_by_1x4_transposed", "matmul_rb_every_variant_on_this_device", "mean_pool_2x7x13",
             "attention_b1_q3_k70_h1_d256", "attention_b2_q65_k70_h3_d7_masked", "sample_token_greedy_v3",
             "softmax_7x13", "user_kernel_with_override_constant", "attention_b1_q130_k300_h2_d64_masked",
             "llama_tiny_forward_matches_the_reference", "whisper_features_match_faster_whisper_reference",
             "mean_and_sum_of_empty_rows_match_numpy", "scale_odd", "full_tier_f16_kernels_or_f32_step_down",
             "full_tier_f16_quantized_kernels_or_f32_step_down", "constrained_simplified_shaders_small_workgroups",
             "constrained_attention_chunks_and_head_groups", "constrained_tiled_ops_over_binding_budget",
             "constrained_matmul_weight_over_binding_budget", "compile_error_names_line_and_column",
             "batch_of_dispatches_crosses_the_boundary_a_constant_number_of_times", "failed_batch_outputs_raise_never_zeros",
             "embedding_ids_computed_on_the_gpu_raise_index_error", "device_destroyed_mid_workload_is_recovered",
             "use_after_close_is_refused", "ops_during_precompilation_match_the_reference", "quick_gelu_7x13",
             "patchify_2x3x12x8_p4", "attention_causal_b2_s7_h2_d8_masked", "attention_causal_b2_s65_h3_d7_masked"),
    # the bridge driven from the page's own thread (chromium-webgpu-main, firefox-webgpu-main), its engine's kernels
    # proven from the worker: a user kernel, the array namespace's families (tests/xp_cases.py), queued ops read once,
    # batches, readback of a token id and of empty rows, errors, device loss, a model's forward with its KV cache
    "thread": ("chained_ops_queue_and_read_once", "reshape_is_a_view_with_a_clear_error", "sample_token_greedy_v3",
               "profile_says_where_each_op_ran_and_how_long", "user_kernel_with_override_constant",
               "compile_error_names_line_and_column", "mean_and_sum_of_empty_rows_match_numpy",
               "batch_of_dispatches_crosses_the_boundary_a_constant_number_of_times",
               "failed_batch_outputs_raise_never_zeros", "embedding_ids_computed_on_the_gpu_raise_index_error",
               "device_destroyed_mid_workload_is_recovered", "use_after_close_is_refused",
               "ops_during_precompilation_match_the_reference", "llama_tiny_forward_matches_the_reference"),
    # the constrained tier as the page's own runtime (chromium-tier-constrained): each kernel its plans dispatch at
    # 64 invocations, each over-budget strategy, and the limits it reports
    "constrained": ("matmul_gelu_7x13_by_13x5_no_bias", "rowwise_1x1", "embedding_3x17_vocab101x33", "log_mel_7x5_start2",
                    "conv1d_50x16_to_8_k7_s1_p10_bias", "reshape_is_a_view_with_a_clear_error",
                    "attention_b1_q3_k70_h1_d256", "mean_pool_3x17x384", "stft_power_5_n1_hop2", "add_7x13_by_13",
                    "mul_7x13_by_7x13", "sample_token_greedy_v3", "softmax_5x1000", "compile_error_names_line_and_column",
                    "attention_b1_q130_k300_h2_d64_masked", "llama_tiny_forward_matches_the_reference",
                    "constrained_attention_chunks_and_head_groups", "constrained_tiled_ops_over_binding_budget",
                    "constrained_matmul_weight_over_binding_budget", "tensor_beyond_binding_limit_names_the_limit",
                    "user_kernel_with_override_constant", "quick_gelu_7x13", "patchify_2x3x12x8_p4"),
    # a browser without WebGPU (chromium-noflag): auto falls back to the cpu tier; its WebAssembly kernels once each
    "fallback": ("conv1d_37x13_to_33_k5_s3_p2_bias_gelu", "softmax_5x1000", "attention_b2_q12_k12_h12_d32_masked",
                 "rowwise_37x129", "llama_tiny_forward_matches_the_reference", "matmul_37x129_by_129x65_bias",
                 "user_kernel_on_cpu_says_it_needs_webgpu", "user_kernel_with_reference_same_on_webgpu_and_cpu",
                 "chained_ops_queue_and_read_once", "arguments_are_validated_with_typed_errors"),
}
for _list, _names in SUBSETS.items():
    for _name in _names:
        CASES[_name].backends += (_list,)
