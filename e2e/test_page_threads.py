"""The host kernels on every core of a page: the threaded WebAssembly build on a pool of Web Workers
(web/threads.js, gpuport.host.wasm_threads), started by gpuport.open() where the page is cross-origin isolated
(the dev server sends COOP/COEP); its workers join in the background (`await wasm_threads.ready()` waits for them).

- Every case of tests/wasm_cases.py runs on the pool's engine in Chromium and in Firefox, against the same
  NumPy references and tolerances as the one-thread build: answers do not depend on the thread count.
- MiniLM's embeddings and a SmolLM2 generation in a page run their layers on the pool (counted), and equal
  the one-thread build's within the kernels' tolerance (the same greedy tokens).
- A page served without COOP/COEP is not isolated: it runs on one thread, says why in rt.info(), and works.

Test ids read `test_threads_parity[<lane>-<case>]`. A lane whose pool did not start fails with the reason it
gave; nothing is skipped.
"""

from __future__ import annotations

import pytest
from e2e_matrix import lane_engines
from gpuport.host import wasm_threads
from gpuport.testing.pages import LanePool, PageSpec
from test_page_wasm import _page
from wasm_cases import CASES, IN_PLACE, WASM_ONLY

# Lanes whose browsers isolate a page served with COOP/COEP and start workers from Pyodide's worker or the
# main thread: Chromium (workers and main thread), Firefox (worker). WebKitGTK's cpu lane is checked below.
THREAD_LANES = ("chromium-cpu", "chromium-webgpu-main", "firefox-webgpu")
POOL_CASES = [c for c in CASES if c not in WASM_ONLY | IN_PLACE]
# every kernel case on the pool once per engine (V8, SpiderMonkey); the main thread's pool is started and checked above
PAIRS = [(lane, case) for lane in ("chromium-cpu", "firefox-webgpu") for case in POOL_CASES]

POOL = """
import gpuport
from gpuport.host import hostops, wasm_threads
await wasm_threads.ready()
{"available": wasm_threads.available(), "reason": wasm_threads.reason(), "threads": wasm_threads.threads(),
 "info": rt.info()["host_threads"], "isolated": bool(__import__("js").crossOriginIsolated)}
"""


@pytest.mark.parametrize("lane", THREAD_LANES)
def test_pool_started(lane_factory, lane):
    """open() started the pool (it joined once ready() returned): one thread per core the browser reports (this machine: 2), and rt.info() says
    whole layers run there."""
    got = lane_factory(lane).run(POOL)
    cores = lane_factory(lane).run("int(__import__('js').navigator.hardwareConcurrency)")
    assert got["isolated"], f"{lane}: the page is not cross-origin isolated"
    assert got["available"], f"{lane}: no pool: {got['reason']}"
    assert got["threads"] == min(16, max(1, cores)), (got, cores)
    _assert_pool_info(got)


def _assert_pool_info(got: dict) -> None:
    """The pool's report: its engine, its threads, what each kind of model call that found the workers asleep took
    each way, [median ms, tries] (a lane's page is shared: earlier tests' calls are in it), and how the latest call
    ran ("" before any)."""
    info = got["info"]
    assert info.keys() == {"engine", "threads", "asleep", "last_call"}, got
    assert info["last_call"] in ("", "awake", "woken", "alone", "one thread"), got
    assert info["engine"] == "wasm-threads" and info["threads"] == got["threads"], got
    for kind, ways in info["asleep"].items():
        assert ways and set(ways) <= {"woken", "alone"}, (kind, got)
        assert all(ms >= 0 and tries >= 1 for ms, tries in ways.values()), (kind, got)


# Where each lane's pool workers are made (web/threads.js poolWorker): by the page's thread under start()'s worker (one
# made inside that worker blocked Firefox ESR's start-up for ever, now and then), else where the pool starts (a bare
# Pyodide's own worker, a page's thread).
WORKERS_MADE = {"chromium-cpu": "made by the page's thread", "firefox-auto": "made by the page's thread",
                "firefox-webgpu": "made here", "chromium-webgpu-main": "made here"}


@pytest.mark.parametrize("lane", WORKERS_MADE)
def test_pool_workers_are_made_by_the_page_under_gpuport_s_worker(lane_factory, lane):
    got = lane_factory(lane).run(POOL.rstrip() + ' | {"workers": str(wasm_threads.ENGINE.pool.workers)}')
    assert got["available"] and got["threads"] >= 2, got
    assert got["workers"] == WORKERS_MADE[lane], got


@pytest.mark.parametrize("lane,case", PAIRS, ids=[f"{lane}-{case}" for lane, case in PAIRS])
def test_threads_parity(lane_factory, lane, case, coverage_matrix, request):
    page = _page(lane_factory, lane)
    calls = page.run(f"_previous = wasm_cases.use(__import__('gpuport.host.wasm_threads', fromlist=['x']))\n"
                     f"try:\n    _calls = wasm_cases.run({case!r})\nfinally:\n    wasm_cases.use(_previous)\n_calls")
    coverage_matrix.record(request.node.nodeid, [{"tier": "cpu", "host": {"wasm-threads": calls}}], None,
                           lane_engines(lane)[1], "pool")


MINILM = """
import numpy as np
from gpuport.host import hostops, wasm_kernels, wasm_threads; from gpuport import models
await wasm_threads.ready()
_m = await models.load("minilm-l6-v2", rt)
_texts = ["a short sentence", "the pool runs every layer of this one on two threads " * 12]
_before = dict(hostops.calls().get("encoder_layer", {}))
_pooled = await _m.embed(_texts)
_after = dict(hostops.calls().get("encoder_layer", {}))
_before_short = dict(hostops.calls().get("encoder_layer", {}))
await _m.embed(["short"])
_short = dict(hostops.calls().get("encoder_layer", {}))
# a sentence a quarter of a second later finds the workers lingering (hostkernels/pool.c: LINGER_MS), so awake
await __import__("asyncio").sleep(0.25)
await _m.embed(["short"])
_lingering_way = hostops.layer_threads()["last_call"]
# sentences 1.1 s apart, past the linger: each begins with the workers asleep, and the pool tries both ways. A
# woken call of ALONE_BELOW_MS or more is never tried alone (a slow hour made the sentence's woken calls that slow and
# this test saw only woken ones): lifted here, so that both ways run whatever this machine's speed
_sparse, _sparse_ways = [], []
_below, wasm_threads.ALONE_BELOW_MS = wasm_threads.ALONE_BELOW_MS, float("inf")
try:
    for _ in range(wasm_threads.TRIES + wasm_threads.ALONE_TRIES + 2):
        await __import__("asyncio").sleep(1.1)
        _sparse.append((await _m.embed(["short"]))[0])
        _sparse_ways.append(hostops.layer_threads()["last_call"])
finally:
    wasm_threads.ALONE_BELOW_MS = _below
_asleep = hostops.layer_threads()["asleep"]
# the one-thread build, on the same weights: the pool set aside for one call
_engine = wasm_threads.ENGINE.lib
wasm_threads.ENGINE.lib = None
try:
    _single = await _m.embed(_texts)
finally:
    wasm_threads.ENGINE.lib = _engine
{"asleep": _asleep, "lingering_way": _lingering_way, "sparse_ways": _sparse_ways,
 "sparse_diff": float(np.abs(np.array(_sparse) - _sparse[0]).max()),
 "pool_layers": _after.get("wasm-threads", 0) - _before.get("wasm-threads", 0),
 "short_on_pool": _short.get("wasm-threads", 0) - _before_short.get("wasm-threads", 0),
 "max_diff": float(np.abs(_pooled - _single).max()), "cos": [float(c) for c in (_pooled * _single).sum(1)]}
"""


def test_minilm_runs_its_layers_on_the_pool(lane_factory):
    """The batch's six layers ran on the pool, and so did a lone short sentence's (its products split by the
    weights' columns), and the embeddings equal the one-thread build's: the same kernels, in the same order per
    row (the pool splits rows, columns and heads, never a sum), so to rounding. A sentence a quarter of a second
    after another finds the workers lingering and uses them; sentences more than a second apart find them asleep:
    the pool tries waking them and running alone (PoolKernels.call)."""
    got = lane_factory("chromium-cpu").run(MINILM)
    assert got["pool_layers"] >= 6 and got["short_on_pool"] >= 6, got
    assert got["max_diff"] <= 1e-5, got
    assert got["lingering_way"] == "awake", got
    # a sentence begun with the workers asleep ran both ways (woken, and on this thread alone), to the same numbers
    ways = {way: seen[1] for kind in got["asleep"].values() for way, seen in kind.items()}
    assert ways.get("woken", 0) >= wasm_threads.TRIES and ways.get("alone", 0) >= wasm_threads.ALONE_TRIES, got
    # and each call's report says which way it went (rt.info()["host_threads"]["last_call"]); which ways the sparse
    # sentences took depends on what earlier tests' calls in this lane's page taught the pacing
    assert set(got["sparse_ways"]) <= {"woken", "alone", "awake"}, got
    assert {"woken", "alone"} & set(got["sparse_ways"]), got
    assert got["sparse_diff"] <= 1e-5, got


LLM = """
from gpuport.host import hostops, wasm_threads; from gpuport import models
await wasm_threads.ready()
_llm = await models.load("smollm2-135m-instruct", rt)
_prompt = [{"role": "user", "content": "What is the capital of France?"}]
_before = dict(hostops.calls().get("llama_block", {}))
_pooled = [t.id async for t in _llm.generate(_prompt, max_new_tokens=12, ignore_eos=True)]
_after = dict(hostops.calls().get("llama_block", {}))
_engine = wasm_threads.ENGINE.lib
wasm_threads.ENGINE.lib = None
try:
    _single = [t.id async for t in _llm.generate(_prompt, max_new_tokens=12, ignore_eos=True)]
finally:
    wasm_threads.ENGINE.lib = _engine
{"pool_forwards": _after.get("wasm-threads", 0) - _before.get("wasm-threads", 0), "pooled": _pooled,
 "single": _single}
"""


def test_generation_decodes_on_the_pool(lane_factory):
    """A SmolLM2 generation's forwards ran on the pool (its KV cache shadowed in the pool's memory), with the
    one-thread build's greedy tokens."""
    got = lane_factory("chromium-cpu").run(LLM)
    assert got["pool_forwards"] >= 12, got
    assert got["pooled"] == got["single"], got


NOT_ISOLATED = """
import numpy as np
from gpuport.host import hostops, wasm_threads; from gpuport import models
await wasm_threads.ready()
_m = await models.load("minilm-l6-v2", rt)
_e = await _m.embed(["one thread still embeds"])
{"isolated": bool(__import__("js").crossOriginIsolated), "info": rt.info()["host_threads"],
 "norm": float(np.linalg.norm(_e)), "layers": hostops.calls().get("encoder_layer", {})}
"""


@pytest.fixture(scope="module")
def plain_server_url():
    """The dev server without COOP/COEP: its pages are not cross-origin isolated."""
    from e2e_serve import served
    from gpuport.site.server import create_app

    yield from served(create_app(isolated=False), "the dev server without isolation")


# The two engines whose pages get a pool once isolated. WebKitGTK's page has one thread either way, and its lane says
# why (test_webkit_cpu_lane_says_where_its_layers_run); a MiniBrowser of its own for this page took 15 s of the suite.
@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_a_page_without_isolation_runs_on_one_thread_and_says_so(browsers, plain_server_url, kind):
    pool = LanePool(browsers, plain_server_url, {"plain": PageSpec(kind, "?backend=cpu&table=0&precompile=off")})
    try:
        got = pool.get("plain").run(NOT_ISOLATED)
    finally:
        pool.close()
    assert not got["isolated"], got
    assert got["info"]["engine"] == "wasm" and got["info"]["threads"] == 1, got
    assert "not cross-origin isolated" in got["info"]["reason"], got
    assert abs(got["norm"] - 1.0) < 1e-4 and got["layers"].get("wasm", 0) >= 6, got


def test_webkit_cpu_lane_says_where_its_layers_run(lane_factory):
    """WebKitGTK's cpu lane: whatever its engine allows (a pool, or one thread with the reason), said truthfully
    and working; its parity cases are test_page_wasm's. WebKitGTK 2.50 isolates the page but gives its worker no
    SharedArrayBuffer: one thread, and that reason."""
    got = lane_factory("webkit-cpu").run(POOL)
    if got["available"]:
        _assert_pool_info(got)
    else:
        assert got["info"]["threads"] == 1 and got["info"]["reason"] == got["reason"] != "", got

