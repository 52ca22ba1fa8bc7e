"""gpuport.host.wasm_threads, the page's engine for the threaded kernels, natively: its copies between NumPy's memory and
the pool's (what is uploaded once, what per call, what comes back), its arena and its KV cache shadows.

The pool here is a stand-in for web/threads.js's: its memory a NumPy buffer of its own (not the arrays'), its
kernels the native library called at that buffer's addresses (host_abi's table says which parameters are
pointers), its put/take plain memmoves. So every case of tests/wasm_cases.py runs through the engine's copy
logic against the NumPy references, as e2e/test_page_threads.py runs them on the real pool in the pages.
"""

from __future__ import annotations

import asyncio
import ctypes
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import wasm_cases
from cases import close
from gpuport.errors import BackendUnavailable, OutOfMemory
from gpuport.host import native_kernels as N
from gpuport.host import references as K
from gpuport.host import wasm_threads as T
from gpuport.host.host_abi import EXPORTS
from gpuport.host.quant import q8_matmul_ref
from gpuport.models import llama_ref as LR
from wasm_cases import CASES, IN_PLACE, WASM_ONLY

CAPACITY = 256 << 20   # the stand-in's memory: reserved at once (its address must not move), grown into


class _Kernels:
    """The native library with each pointer parameter offset by the stand-in memory's base."""

    def __init__(self, base: int) -> None:
        for export in EXPORTS:
            fn = getattr(N.ENGINE.lib, export.name)
            pointers = [i for i, p in enumerate(export.params) if p.kind == "pointer"]
            setattr(self, export.name, self._offset(fn, pointers, base))

    @staticmethod
    def _offset(fn: Any, pointers: list[int], base: int) -> Any:
        def call(*args: Any) -> Any:
            return fn(*(base + a if i in pointers and a else a for i, a in enumerate(args)))
        return call


class StandIn:
    """web/threads.js's pool record, natively (see the module docstring)."""

    def __init__(self, size: int = 1 << 20, start: int = 4096) -> None:
        self.memory = np.zeros(CAPACITY, np.uint8)
        self.base = self.memory.__array_interface__["data"][0]
        self.available, self.reason, self.threads, self.arenaStart = True, "", 2, start
        self.kernels = _Kernels(self.base)
        self.bytes, self.puts, self.takes = size, 0, 0

    def put(self, to: int, frm: int, n: int) -> None:
        assert 0 < to and to + n <= self.bytes, (to, n, self.bytes)
        ctypes.memmove(self.base + to, frm, n)
        self.puts += 1

    def take(self, to: int, frm: int, n: int) -> None:
        assert 0 < frm and frm + n <= self.bytes, (frm, n, self.bytes)
        ctypes.memmove(to, self.base + frm, n)
        self.takes += 1

    def grow(self, nbytes: int) -> int:
        if nbytes > CAPACITY:
            raise RuntimeError("RangeError: WebAssembly.Memory.grow(): Maximum memory size exceeded")
        self.bytes = max(self.bytes, -(-nbytes // 65536) * 65536)
        return self.bytes

    def size(self) -> int:
        return self.bytes


@pytest.fixture
def pool():
    assert N.available(), f"native SIMD kernels unavailable: {N.reason()}"
    stand_in = StandIn()
    T.attach(stand_in)
    previous = wasm_cases.use(T)
    yield stand_in
    wasm_cases.use(previous)
    T.attach(SimpleNamespace(available=False, reason="detached by the test"))


def test_attach_reports_the_pool(pool):
    assert T.available() and T.reason() == "" and T.threads() == 2
    assert T.ENGINE.memory_bytes() == pool.bytes
    T.use_threads(1)
    assert T.threads() == 1
    T.use_threads(8)
    assert T.threads() == 2   # never more than the pool has
    T.use_threads(None)
    assert T.threads() == 2
    with pytest.raises(ValueError, match="at least 1"):
        T.use_threads(0)


def test_a_call_begun_with_the_workers_asleep_wakes_them_only_where_that_ran_faster(pool, monkeypatch):
    """PoolKernels.call: workers awake (spinning or lingering) are used at once, and told so; asleep, a kind of call
    runs woken TRIES times, alone ALONE_TRIES, then the faster way, the other tried again every EXPLORE_EVERY[other]
    calls (woken more often than alone); a kind of call of its own learns on its own. The stand-in's clock: woken
    10 ms; alone 6 for a sentence, 16 for CLIP's one text."""
    state = {"awake": 0, "woken": 0, "now": 0.0}
    monkeypatch.setattr(pool.kernels, "gp_pool_awake", lambda: state["awake"], raising=False)
    monkeypatch.setattr(pool.kernels, "gp_pool_wake", lambda: state.__setitem__("woken", state["woken"] + 1),
                        raising=False)
    monkeypatch.setattr(T.time, "perf_counter", lambda: state["now"])
    sentence, text = ("encoder", 384, 6, 4), ("encoder", 512, 12, 7)
    alone_s = {sentence: 0.006, text: 0.016}

    def call(kind=sentence):
        before = state["woken"]
        with T.ENGINE.call(kind):
            threads = T.threads()
            state["now"] += (alone_s[kind] if threads == 1 else 0.010) if state["awake"] == 0 else 0.004
        return "awake" if state["awake"] else "woken" if state["woken"] > before else "alone" if threads == 1 else "?"

    state["awake"] = 1   # spinning or lingering: used, and told at once (a lingering worker then spins)
    assert [call() for _ in range(3)] == ["awake"] * 3 and T.ENGINE.paced() == {} and state["woken"] == 3
    state["awake"] = 0
    tried = T.TRIES + T.ALONE_TRIES
    every = T.EXPLORE_EVERY
    assert every["woken"] < every["alone"]
    ways = [call() for _ in range(tried + every["woken"])]   # woken 10 ms: under ALONE_BELOW_MS
    assert ways[:tried] == ["woken"] * T.TRIES + ["alone"] * T.ALONE_TRIES, ways
    rest = ways[tried:]
    assert rest.count("woken") == 1 and rest[every["woken"] - 1] == "woken" and set(rest) == {"alone", "woken"}, rest
    paced = T.ENGINE.paced()[str(sentence)]
    assert paced["alone"] == [6.0, T.ALONE_TRIES + every["woken"] - 1] and paced["woken"][1] == T.TRIES + 1, paced
    assert T.threads() == 2   # after a call alone, the pool's threads again
    # another kind learns afresh; where alone is slower, one try of it and then woken, alone tried less often
    ways = [call(text) for _ in range(tried + every["alone"])]
    assert ways[:tried] == ["woken"] * T.TRIES + ["alone"] * T.ALONE_TRIES, ways
    assert ways[tried:].count("alone") == 1 and ways[tried + every["alone"] - 1] == "alone", ways
    # a call that takes ALONE_BELOW_MS woken (8 sentences: 20-33 ms here) is never tried alone
    long = ("encoder", 384, 6, 9)
    for _ in range(T.TRIES + 4):
        with T.ENGINE.call(long):
            assert T.threads() == 2
            state["now"] += T.ALONE_BELOW_MS / 1e3
    assert set(T.ENGINE.paced()[str(long)]) == {"woken"}


def test_one_fast_try_of_the_slower_way_brings_the_calls_back_to_it(pool, monkeypatch):
    """A spell of slow woken calls (the machine busy) makes a kind of call run alone; each way is judged by its latest
    call, so the first try of woken after the spell that beats alone brings the next calls back to woken (a median of
    the last few would have waited for the spell's times to leave it); a try that does not beat it changes nothing."""
    state = {"now": 0.0, "woken_ms": 12.0}
    monkeypatch.setattr(pool.kernels, "gp_pool_awake", lambda: 0, raising=False)
    monkeypatch.setattr(pool.kernels, "gp_pool_wake", lambda: None, raising=False)
    monkeypatch.setattr(T.time, "perf_counter", lambda: state["now"])
    kind = ("encoder", 384, 6, 4)

    def call():
        with T.ENGINE.call(kind):
            way = "alone" if T.threads() == 1 else "woken"
            state["now"] += (9.0 if way == "alone" else state["woken_ms"]) / 1e3
        return way

    every = T.EXPLORE_EVERY["woken"]
    slow = [call() for _ in range(T.TRIES + T.ALONE_TRIES + every)]   # woken 12 ms, alone 9: alone wins
    assert slow[-every:] == ["alone"] * (every - 1) + ["woken"], slow
    assert [call() for _ in range(every)] == ["alone"] * (every - 1) + ["woken"]   # 12 again: no better
    state["woken_ms"] = 6.0   # the spell is over
    ways = [call() for _ in range(every + 3)]
    assert ways == ["alone"] * (every - 1) + ["woken"] * 4, ways
    assert T.ENGINE.paced()[str(kind)]["woken"][0] == 6.0


def test_without_a_pool_it_says_why():
    T.attach(SimpleNamespace(available=False, reason="the page is not cross-origin isolated"))
    assert not T.available() and T.threads() == 1 and "isolated" in T.reason()
    with pytest.raises(BackendUnavailable, match="isolated"):
        T.gelu(np.ones(3, np.float32))


def test_a_pool_starting_in_the_background_is_attached_once_it_has_joined():
    """start() returns at once (gpuport.open() no longer waits for the workers): until the pool answers, layers run
    on one thread and reason() says it is starting; ready() waits for it."""
    assert N.available(), f"native SIMD kernels unavailable: {N.reason()}"
    stand_in = StandIn()

    async def visit() -> list:
        joined = asyncio.Event()

        async def start_pool() -> StandIn:
            await joined.wait()
            return stand_in

        T.start(start_pool())
        seen = [(T.available(), T.threads(), T.reason())]
        await asyncio.sleep(0)
        seen.append((T.available(), T.threads(), T.reason()))
        joined.set()
        await T.ready()
        seen.append((T.available(), T.threads(), T.reason()))
        await T.ready()   # nothing starting: at once
        return seen

    try:
        starting, still, ready = asyncio.run(visit())
        assert starting == still and not starting[0] and starting[1] == 1 and starting[2].startswith("starting"), starting
        assert ready == (True, 2, ""), ready
        assert T.gelu(np.ones(3, np.float32)).shape == (3,)
    finally:
        T.attach(SimpleNamespace(available=False, reason="detached by the test"))


def test_a_pool_that_fails_to_start_leaves_its_error_as_the_reason():
    async def failing() -> None:
        raise RuntimeError("threads.js did not load")

    async def visit() -> tuple:
        T.start(failing())
        await T.ready()   # the error is the reason, not raised here
        return T.available(), T.threads(), T.reason()

    assert asyncio.run(visit()) == (False, 1, "it did not start: threads.js did not load")


def test_a_pool_attached_while_another_starts_is_not_replaced_by_it(pool):
    async def visit() -> None:
        other = asyncio.Event()

        async def late() -> SimpleNamespace:
            await other.wait()
            return SimpleNamespace(available=False, reason="the late one")

        T.start(late())
        T.attach(pool)
        other.set()
        await asyncio.sleep(0.01)

    asyncio.run(visit())
    assert T.available() and T.reason() == "", T.reason()


@pytest.mark.parametrize("case", [c for c in CASES if c not in WASM_ONLY | IN_PLACE])
def test_kernel_cases_through_the_copies(pool, case):
    wasm_cases.run(case)


def test_temporaries_are_given_back_and_weights_kept_while_they_live(pool):
    r = np.random.default_rng(1)
    w = r.standard_normal((64, 48)).astype(np.float32)
    w.flags.writeable = False
    x = r.standard_normal((5, 48)).astype(np.float32)
    arena = T.ENGINE.arena
    close(T.matmul(x, w, transpose_b=True), x @ w.T, atol=1e-4, what="matmul")
    kept = arena.in_use()   # the packed weight (and the scratch block) stay
    for _ in range(3):
        T.matmul(x, w, transpose_b=True)
    assert arena.in_use() == kept, "per-call copies were not given back"
    del w
    assert arena.in_use() < kept, "the packed panels outlived their weight"


def test_a_call_that_fails_half_way_copies_nothing_back(pool):
    x = np.ones((4, 64), np.float32)
    sentinel = np.full((4, 64), 7, np.float32)
    T.ENGINE._out(sentinel)   # what a call that raised after its first copy leaves behind
    T.gelu(x)                 # the next call drops it
    assert (sentinel == 7).all() and not T.ENGINE._back and T.ENGINE._temp_used == 0


def test_kv_shadow_follows_numpys_rows(pool):
    """The cache's rows are NumPy's: rows rewritten there (a forward redone in NumPy, said with rows_changed) are
    what the next call reads, a rewound cache is written again from its new start, and a fresh view of the same
    rows each call (as the model passes them) keeps one shadow, uploaded once."""
    r = np.random.default_rng(3)
    dim, heads, kvh, ffn = 64, 4, 2, 96
    layer = wasm_cases._qlayer(r, dim, heads, kvh, ffn)
    hd = dim // heads
    weights = tuple(m.raw for m in (layer.wq, layer.wk, layer.wv, layer.wo, layer.w_gate, layer.w_up, layer.w_down))
    block = T.llama_block((layer.attn_norm, layer.ffn_norm), weights, "Q4_1", heads=heads, kv_heads=kvh, eps=1e-5)
    config = LR.LlamaConfig(1, dim, heads, kvh, ffn, 100, 1e-5, 10000.0, 16)

    def step(cache: LR.KVCache, kc: np.ndarray, vc: np.ndarray, x: np.ndarray, kernel: bool) -> np.ndarray:
        start, t = cache.length, x.shape[0]
        cos, sin = LR.rope_angles(np.arange(start, start + t), hd, 10000.0)
        want = LR.block(x, layer, 0, cache, cos, sin, config, linear=lambda a, w: q8_matmul_ref(a, w)[0])
        cache.length = start + t
        if not kernel:   # NumPy's forward: its rows written into the engine's cache arrays too
            kc[start:start + t] = cache.k[0, start:start + t].reshape(t, -1)
            vc[start:start + t] = cache.v[0, start:start + t].reshape(t, -1)
            T.ENGINE.rows_changed(kc)
            T.ENGINE.rows_changed(vc)
            return want
        got = x.copy()
        T.llama_layers(got, start, cos, sin, [block], [kc], [vc], threads=2)
        scale = float(np.abs(want).max())
        assert np.abs(got - want).max() <= 0.01 * scale
        return got

    cache = LR.KVCache(config, 16)
    kc, vc = (np.zeros((16, kvh * hd), np.float32) for _ in range(2))
    xs = [r.standard_normal((t, dim)).astype(np.float32) for t in (5, 1, 1, 2, 1)]
    step(cache, kc, vc, xs[0], True)
    shadows = len(T.ENGINE._shadows)
    puts = pool.puts
    step(cache, kc[:], vc[:], xs[1], True)   # new views of the same arrays: no new shadow, no cache rows put
    assert len(T.ENGINE._shadows) == shadows and pool.puts - puts <= 3, (pool.puts - puts)
    step(cache, kc, vc, xs[1], False)        # redone on NumPy: the shadow must pick its row up
    step(cache, kc, vc, xs[2], True)
    kc[6] += 100.0                           # a row the kernel wrote, rewritten in NumPy afterwards (and said)
    cache.k[0, 6] += 100.0
    T.ENGINE.rows_changed(kc)
    step(cache, kc, vc, xs[3], True)         # reads the rewritten row: the reference does too
    cache.length = 3                          # rewound: rows from 3 on are written again
    step(cache, kc, vc, xs[4], True)
    for got, want in ((kc[:cache.length], cache.k[0, :cache.length]), (vc[:cache.length], cache.v[0, :cache.length])):
        scale = float(np.abs(want).max())
        assert np.abs(got - want.reshape(got.shape)).max() <= 0.01 * scale


def test_the_arena_grows_and_says_when_it_cannot(pool):
    a = T.ENGINE.arena
    before = pool.bytes
    big = a.alloc(8 << 20)
    assert pool.bytes >= before + (8 << 20) and big % 64 == 0
    a.release(big)
    with pytest.raises(OutOfMemory, match="cannot grow"):
        a.alloc(CAPACITY)


def test_arena_first_fit_and_merging():
    grown = []
    arena = T.Arena(100, 100 + 64 * 10, lambda n: grown.append(n) or n)
    blocks = [arena.alloc(64) for _ in range(4)]
    assert blocks == [128, 192, 256, 320] and blocks[0] % 64 == 0
    arena.release(blocks[1])
    arena.release(blocks[2])
    assert arena.alloc(100) == 192          # the two freed neighbours merged
    assert arena.alloc(1) == 384            # then the first block that fits
    arena.release(blocks[0])
    assert arena.in_use() == 64 * 4
    assert arena.alloc(64 * 20) == 448 and grown    # beyond the end: the free tail grown


def test_encoder_layer_on_the_pool_equals_the_reference(pool):
    """Both of encoder.c's splits on the pool: 18 rows by the weights' columns, 1030 (past COLUMN_ROWS) by rows."""
    r = np.random.default_rng(5)
    big = wasm_cases._encoder_layer(r, 16, 24)
    x = r.standard_normal((2, 515, 16)).astype(np.float32)
    out, bad = T.ENGINE.encoder_layer(x, big, None, num_heads=2, eps=1e-12, threads=2)
    assert bad == 0
    close(out, K.encoder_layer_ref(x, big, None, num_heads=2, eps=1e-12), atol=2e-4, what="encoder layer by rows")
    layer = wasm_cases._encoder_layer(r, 64, 128)
    x = r.standard_normal((2, 9, 64)).astype(np.float32)
    puts = pool.puts
    out, bad = T.ENGINE.encoder_layer(x, layer, None, num_heads=4, eps=1e-12, threads=2)
    assert bad == 0
    close(out, K.encoder_layer_ref(x, layer, None, num_heads=4, eps=1e-12), atol=2e-4, what="encoder layer")
    first = pool.puts - puts
    T.ENGINE.encoder_layer(x, layer, None, num_heads=4, eps=1e-12, threads=2)
    assert pool.puts - puts - first < first, "the layer's weights were uploaded again"
