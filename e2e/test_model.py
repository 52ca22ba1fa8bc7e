"""MiniLM in the page: parity with sentence-transformers on every backend (auto, webgpu, cpu; Chromium, Firefox,
WebKitGTK; the host path on the WebAssembly SIMD kernels), the progressive
loader's progress stream and timeline, the IndexedDB chunk cache (second load: no model bytes over the
network), and faults injected with Playwright routing (Chromium routes a Web Worker's fetches too):
corrupt chunk, truncated body, 500, dropped connection, quota exceeded; nothing corrupt is cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuport.testing.pages import call_page

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_TEXT = (ROOT / "tests" / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8")
MODEL_CASES = (ROOT / "tests" / "model_cases.py").read_text(encoding="utf-8")
MODEL_URL = "/models/minilm-l6-v2/"
WEIGHTS = "/models/minilm-l6-v2/model.safetensors"

INSTALL_CASES = ("import sys, types, json\n"
                 "_m = types.ModuleType('model_cases')\n"
                 f"exec(compile({MODEL_CASES!r}, 'tests/model_cases.py', 'exec'), _m.__dict__)\n"
                 "sys.modules['model_cases'] = _m\n"
                 f"MODEL_FIXTURE = json.loads({FIXTURE_TEXT!r})\n")

LOAD = """
import time
from gpuport import models
_events = []
_t0 = time.perf_counter()
model = await models.load("minilm-l6-v2", rt, on_progress=_events.append)
{"seconds": time.perf_counter() - _t0, "stats": model.load_stats, "events": _events}
"""

# every cached chunk checked against the manifest, from inside the page
AUDIT_CACHE = """
import json, hashlib, gpuport_idb
from pyodide.http import pyfetch
_m = json.loads(await (await pyfetch("/models/minilm-l6-v2/manifest.json")).string())
_keys = [str(k) for k in (await gpuport_idb.keys("chunks")).to_py()]
_bad, _idx = [], []
for _k in _keys:
    if _k.startswith("file:"):
        continue
    _sha, _i = _k.split(":")
    _blob = (await gpuport_idb.get("chunks", _k)).to_bytes()
    _idx.append(int(_i))
    if _sha != _m["sha256"] or hashlib.sha256(_blob).hexdigest() != _m["chunks"][int(_i)]["sha256"]:
        _bad.append(_k)
{"chunks": sorted(_idx), "bad": _bad, "total": len(_m["chunks"])}
"""

# one cached chunk's record altered in IndexedDB (a flipped byte, as disk corruption would leave it), the digest and
# check it carries kept (web/idb.js asStored): its check, not a sha256, is what must catch it. Answers the key and the
# record's type.
CORRUPT_CACHED_CHUNK = """
import gpuport_idb
from pyodide.code import run_js
_k = next(str(k) for k in (await gpuport_idb.keys("chunks")).to_py() if str(k).endswith(":{i}"))
_type = await run_js('''async (key) => {{
  const db = await new Promise((ok, no) => {{ const q = indexedDB.open("gpuport"); q.onsuccess = () => ok(q.result);
                                             q.onerror = () => no(q.error); }});
  const record = await new Promise((ok) => {{ const q = db.transaction("chunks").objectStore("chunks").get(key);
                                             q.onsuccess = () => ok(q.result); }});
  const bytes = new Uint8Array(await record.arrayBuffer());
  bytes[100] ^= 0xff;
  await new Promise((ok, no) => {{ const tx = db.transaction("chunks", "readwrite");
    tx.objectStore("chunks").put(new Blob([bytes], {{ type: record.type }}), key);
    tx.oncomplete = ok; tx.onerror = () => no(tx.error); }});
  db.close();
  return record.type;
}}''')(_k)
[_k, _type]
"""

# what web/idb.js read ahead while this visit booted, and how much of it the load took
PREFETCH = """
import gpuport_idb
gpuport_idb.prefetchStatus().to_py()
"""
# ... once what it fetched is stored (the reader stores it as it comes: this waits for the last write)
STORED = """
import gpuport_idb
await gpuport_idb.storedAhead()
gpuport_idb.prefetchStatus().to_py()
"""

# one stored chunk altered (5) and one gone (9): what the next visit's read-ahead from storage finds
SPOIL_STORED = """
import gpuport_idb
keys = [str(k) for k in (await gpuport_idb.keys('chunks')).to_py()]
altered, gone = (next(k for k in keys if k.endswith(f':{i}')) for i in (5, 9))
record = await gpuport_idb.get('chunks', altered)
record[100] = record[100] ^ 0x55
await gpuport_idb.put('chunks', altered, record)
await gpuport_idb.remove('chunks', gone)
"""

# the browser's SHA-256 (what verifies chunks in a page) against hashlib on awkward sizes
BROWSER_SHA256 = """
import hashlib, gpuport_idb
from pyodide.ffi import to_js
_blobs = [b"", b"\\x01", bytes(range(256)) * 4097 + b"abc"]
_got = await gpuport_idb.sha256(to_js(_blobs))
{"browser": None if _got is None else [str(d) for d in _got], "hashlib": [hashlib.sha256(b).hexdigest() for b in _blobs]}
"""

CLEAR_CACHE = """
import gpuport_idb
for _k in (await gpuport_idb.keys("chunks")).to_py():
    await gpuport_idb.remove("chunks", _k)
len((await gpuport_idb.keys("chunks")).to_py())
"""


def _run(page, src):
    return call_page(page, "runPython", src)


def _loader(retries=1, cache="default"):
    return ("from gpuport.loading.loader import ProgressiveModelLoader\n"
            f"_ld = ProgressiveModelLoader({MODEL_URL!r}, None, retries={retries}, backoff_s=0.01"
            + (f", cache={cache}" if cache != "default" else "") + ")\n"
            "_ev = []\n_ld.register_progress_callback(_ev.append)\n")


LOAD_RAW = """
try:
    await _ld.load_tensors(upload=False)
    _out = {"ok": True}
except gpuport.LoadError as _e:
    _out = {"ok": False, "error": str(_e)}
_out.update(stats=_ld.stats(), notes=[e["note"] for e in _ev if e.get("note")])
_out
"""


# -- parity ------------------------------------------------------------------------------------------

# The full-size model once per browser engine: auto in Chromium and Firefox (the host side on these software adapters:
# V8's and SpiderMonkey's WebAssembly kernels), cpu in WebKitGTK (JavaScriptCore). Its forward on a GPU is proven
# natively (tests/models/test_minilm.py) and every kernel of it on each browser's GPU by the parity lanes.
PARITY_LANES = ["chromium-auto", "firefox-auto", "webkit-cpu"]
WHERE = """
_info = rt.info()
{"host_kernels": _info["host_kernels"], "counts": (_info.get("selection") or {}).get("counts", {})}
"""


@pytest.mark.parametrize("lane", PARITY_LANES)
def test_minilm_matches_sentence_transformers_in_the_page(lane_factory, lane):
    page = lane_factory(lane)
    page.run(INSTALL_CASES)
    stats = page.run("import model_cases\nfrom gpuport import models\n"
                     "_model = await models.load('minilm-l6-v2', rt)\n"
                     "await model_cases.minilm_matches_reference(rt, MODEL_FIXTURE, _model)")
    where = page.run(WHERE)
    print(f"\n{lane}: {stats} {where}")
    assert stats["backend"] == page.info["backend"]
    assert stats["min_cosine"] >= 0.9999, stats
    assert where["host_kernels"] == "wasm", where   # ops placed on the host ran on the SIMD kernels
    if lane in ("chromium-auto", "firefox-auto"):   # auto: each forward's placement is counted, and said
        assert sum(where["counts"].get("minilm.forward", {}).values()) >= 1, where


# -- progress, timeline, cache -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def _shared(chromium_webgpu, server_url):
    """One page for the tests that need an empty chunk cache, not a new profile: Pyodide in its Web Worker, and
    the model requests it makes (Playwright sees the worker's fetches in Chromium)."""
    context = chromium_webgpu.new_context()
    requests: list[tuple[str, str | None]] = []
    context.on("request", lambda r: requests.append((r.url, r.headers.get("range")))
               if "/models/" in r.url else None)
    page = context.new_page()
    page.goto(server_url + "/?table=0&precompile=off")
    _run(page, "1")
    yield context, page, requests
    context.close()


@pytest.fixture()
def fresh(_shared):
    """The shared page with an empty chunk cache, no routes and no requests recorded yet."""
    context, page, requests = _shared
    context.unroute_all()
    assert _run(page, CLEAR_CACHE) == 0
    requests.clear()
    yield _shared
    context.unroute_all()


def test_progress_timeline_second_load_from_cache_and_a_corrupt_cached_chunk_refetched(fresh):
    context, page, requests = fresh
    first = _run(page, LOAD)
    events = first["events"]
    stages = [e["stage"] for e in events]
    assert stages[0] == "manifest" and stages[-1] == "ready", stages
    t = [e["t_ms"] for e in events]
    pct = [e["percent"] for e in events if e["percent"] is not None]
    assert t == sorted(t) and pct == sorted(pct) and pct[-1] == 100, (t, pct)
    verify = [e for e in events if e["stage"] == "verify"]
    # the byte stages share one total, the weights' bytes (the file's 90,868,376 less header and pooler)
    assert verify[-1]["bytes_done"] == verify[-1]["bytes_total"] == 90_261_504
    assert {e["bytes_total"] for e in events if e["bytes_total"]} == {90_261_504}
    # the timeline: layer 0's tensors were on the GPU before the last chunk had arrived
    downloads = [e for e in events if e["stage"] == "download"]
    layer0 = [e for e in events if e["stage"] == "upload" and e["layer"] == "0"]
    last_layer0, last_chunk = max(e["t_ms"] for e in layer0), downloads[-1]["t_ms"]
    print("\ntimeline (ms): first chunk %.0f, embeddings uploaded %.0f, layer 0 uploaded %.0f, last chunk %.0f, "
          "layer 5 uploaded %.0f, ready %.0f" % (
              downloads[0]["t_ms"], max(e["t_ms"] for e in events if e["stage"] == "upload" and e["layer"] == "embeddings"),
              last_layer0, last_chunk, max(e["t_ms"] for e in events if e["stage"] == "upload" and e["layer"] == "5"),
              events[-1]["t_ms"]))
    assert last_layer0 < last_chunk, (last_layer0, last_chunk)
    assert first["stats"]["fetched_chunks"] == 87 and not first["stats"]["memory_only"], first["stats"]
    weights_requests = [r for r in requests if r[0].endswith(WEIGHTS)]
    assert len(weights_requests) == 2 + 22 and all(r[1] for r in weights_requests)  # header x2, 22 spans
    assert _run(page, AUDIT_CACHE) == {"chunks": list(range(87)), "bad": [], "total": 87}

    # the same profile, a reload: chunks come from IndexedDB, only the manifest goes over the network
    requests.clear()
    page.reload()
    second = _run(page, LOAD)
    assert second["stats"]["cached_chunks"] == 87 and second["stats"]["fetched_chunks"] == 0, second["stats"]
    assert second["stats"]["bytes_downloaded"] == 0
    assert [u for u, _ in requests] == [requests[0][0]] and requests[0][0].endswith("/manifest.json"), requests
    # ... read ahead while the page booted (the first load recorded which: its 3 small files, then its chunks), every
    # one handed to the load
    ahead = _run(page, PREFETCH)
    assert ahead["keys"] == 90 and ahead["taken"] == 90 and ahead["waiting"] == 0 and not ahead["error"], ahead
    print(f"load: network {first['seconds']:.2f} s, cache {second['seconds']:.2f} s")
    # the cache's records are verified by the browser's SHA-256, which agrees with hashlib
    digests = _run(page, BROWSER_SHA256)
    assert digests["browser"] is not None and digests["browser"] == digests["hashlib"], digests

    # a cached chunk altered on disk: the next visit drops it, fetches that chunk alone, and caches it again
    key, kind = _run(page, CORRUPT_CACHED_CHUNK.format(i=5))
    assert key.endswith(":5") and kind.startswith("application/x-gpuport-chunk; sha256="), (key, kind)
    requests.clear()
    page.reload()
    third = _run(page, LOAD)
    assert third["stats"]["cached_chunks"] == 86 and third["stats"]["fetched_chunks"] == 1, third["stats"]
    assert _run(page, PREFETCH)["taken"] == 90   # the altered record was read ahead too, and refused all the same
    notes = [e.get("note") or "" for e in third["events"]]
    assert any("cached chunk 5 failed its sha256 check" in n for n in notes), notes
    assert len([u for u, _ in requests if u.endswith(WEIGHTS)]) == 1, requests
    assert _run(page, AUDIT_CACHE) == {"chunks": list(range(87)), "bad": [], "total": 87}
    # and the cached model computes the same embeddings
    emb = _run(page, "import numpy as np\n(await model.embed(['A man is eating food.'])).tolist()")
    ref = json.loads(FIXTURE_TEXT)
    i = ref["sentences"].index("A man is eating food.") if "A man is eating food." in ref["sentences"] else None
    if i is not None:
        import numpy as np
        a, b = np.array(emb[0]), np.array(ref["embeddings"][i])
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.9999


EMBED = LOAD.replace('{"seconds"', '{"embedding": (await model.embed(["A man is eating food."]))[0].tolist(), "seconds"')


@pytest.mark.parametrize("worker", ["1", "0"])
def test_models_named_to_start_are_fetched_beside_the_boot_verified_and_stored(chromium_webgpu, server_url, worker):
    """start({models: ["minilm-l6-v2"]}) (the demo's ?preload=): the page fetches the model's chunks while Pyodide
    boots (on the page's thread when Pyodide is in its worker, else beside it) and checks each against the manifest;
    the load takes them (counted as downloaded, verified again) and fetches only what the read-ahead could not use,
    here chunk 8, corrupted in transit once; the page stores what it fetched as it came. The next visit reads every
    chunk ahead from storage; one altered there (5) is dropped and fetched again by the load, one gone (9) is read
    ahead from the network; every load computes the same embedding."""
    context = chromium_webgpu.new_context()
    requests: list[tuple[str, str | None]] = []
    context.on("request", lambda r: requests.append((r.url, r.headers.get("range")))
               if "/models/" in r.url else None)
    context.route("**" + WEIGHTS, _faults({FAULT_START: "corrupt"}, times=1))   # the read-ahead's span at 8 MiB: chunk 8 altered
    try:
        page = context.new_page()
        page.goto(server_url + f"/?table=0&precompile=off&preload=minilm-l6-v2&worker={worker}")
        _run(page, "1")
        first = _run(page, EMBED)
        ahead = _run(page, STORED)
        stats = first["stats"]
        assert stats["fetched_chunks"] == 87 and stats["read_ahead_chunks"] == 86, stats
        assert stats["cached_chunks"] == 0 and stats["bytes_downloaded"] >= 90_000_000, stats
        assert ahead["fetched"] == 86 and ahead["failed"] == 1 and ahead["taken"] == 86, ahead
        assert ahead["stored"] == 86 and ahead["unstored"] == 0 and ahead["store_failed"] == 0, ahead
        assert "chunk 8: its sha256 does not match the manifest" in ahead["error"], ahead
        weights = [r for _, r in requests if _.endswith(WEIGHTS)]
        # the read-ahead's 22 spans, then the load's own request for chunk 8 alone
        assert len(weights) == 23 and weights[-1] == f"bytes={8 << 20}-{(9 << 20) - 1}", weights
        assert _run(page, AUDIT_CACHE) == {"chunks": list(range(87)), "bad": [], "total": 87}
        notes = [e.get("note") or "" for e in first["events"]]
        assert any("86 fetched ahead by the page, 1 to download" in n for n in notes), notes

        # the next visit: everything from IndexedDB, the model's small files (config, vocabulary) read ahead with its
        # chunks, and one manifest fetched (the read-ahead's, handed to the load)
        requests.clear()
        page.reload()
        second = _run(page, EMBED)
        assert second["stats"]["cached_chunks"] == 87 and second["stats"]["fetched_chunks"] == 0, second["stats"]
        assert [u.rsplit("/", 1)[1] for u, _ in requests] == ["manifest.json"], requests
        ahead = _run(page, PREFETCH)
        assert ahead["fetched"] == 0 and ahead["read"] == 90 and ahead["taken"] == 90 and not ahead["error"], ahead
        assert second["embedding"] == first["embedding"]
        if worker == "0":
            return
        _run(page, SPOIL_STORED)
        page.reload()
        stats, ahead = _run(page, LOAD)["stats"], _run(page, STORED)
        assert stats["cached_chunks"] == 85 and stats["fetched_chunks"] == 2, (stats, ahead)
        assert ahead["read"] == 89 and ahead["fetched"] == 1 and ahead["taken"] == 90 and not ahead["failed"], ahead
    finally:
        context.close()


def test_a_visit_closed_at_its_first_result_leaves_a_complete_verified_cache(chromium_webgpu, server_url):
    """The read-ahead stores each span as it is verified, not when the page is next idle: a visit (the demo's
    defaults: Pyodide in its worker, ?preload=) closed the moment its first embedding is in hand leaves every chunk
    in IndexedDB, each matching the manifest, and the next visit downloads none of them."""
    context = chromium_webgpu.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&preload=minilm-l6-v2")
        first = _run(page, EMBED)
        assert first["stats"]["read_ahead_chunks"] == 87, first["stats"]
        page.close()
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off")
        assert _run(page, AUDIT_CACHE) == {"chunks": list(range(87)), "bad": [], "total": 87}
        second = _run(page, EMBED)
        assert second["stats"]["cached_chunks"] == 87 and second["stats"]["fetched_chunks"] == 0, second["stats"]
        assert second["embedding"] == first["embedding"]
    finally:
        context.close()


def test_a_firefox_visit_reads_ahead_from_the_network_then_the_next_from_storage(browsers, server_url):
    """Firefox's page thread reads ahead for its worker too: a first visit takes every chunk from the network's
    read-ahead and is closed at its first result, the next takes every chunk from storage's (one altered there is
    dropped and fetched again, one gone is read ahead from the network), and the loads compute the same embedding."""
    context = browsers.get("firefox").new_context()
    try:
        loads, page = [], None
        for _ in range(2):
            if page is not None:
                page.close()   # at the first result: what was read ahead is stored already
            page = context.new_page()
            page.goto(server_url + "/?table=0&precompile=off&preload=minilm-l6-v2")
            out = _run(page, EMBED)
            loads.append((out["stats"], _run(page, PREFETCH), out["embedding"]))
        _run(page, SPOIL_STORED)
        page.reload()
        spoiled = _run(page, LOAD)["stats"], _run(page, STORED)
        (cold, cold_ahead, a), (warm, warm_ahead, b) = loads
        assert cold["read_ahead_chunks"] == 87 and cold["fetched_chunks"] == 87, cold
        assert cold_ahead["fetched"] == 87 and cold_ahead["taken"] == 87 and not cold_ahead["error"], cold_ahead
        assert warm["cached_chunks"] == 87 and warm["fetched_chunks"] == 0, warm
        assert warm_ahead["read"] == 90 and warm_ahead["taken"] == 90 and not warm_ahead["error"], warm_ahead   # + 3 files
        assert a == b
        stats, ahead = spoiled
        assert stats["cached_chunks"] == 85 and stats["fetched_chunks"] == 2, (stats, ahead)
        assert ahead["read"] == 89 and ahead["fetched"] == 1 and ahead["taken"] == 90 and not ahead["failed"], ahead
    finally:
        context.close()


# how the cached records are stored, read from IndexedDB itself (web/idb.js hands bytes out either way); and every one
# turned into the typed array an earlier gpuport stored
STORED_AS = """async (convert) => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open("gpuport");
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const all = (mode, f) => new Promise((ok, no) => {
    const tx = db.transaction("chunks", mode);
    const out = f(tx.objectStore("chunks"));
    tx.oncomplete = () => ok(out.result);
    tx.onerror = () => no(tx.error);
  });
  const [keys, values] = [await all("readonly", (s) => s.getAllKeys()), await all("readonly", (s) => s.getAll())];
  const kinds = {};
  for (const v of values) {
    const kind = v instanceof Blob ? "Blob" : v.constructor.name;
    kinds[kind] = (kinds[kind] || 0) + 1;
  }
  if (convert) {
    const arrays = await Promise.all(values.map(async (v) => new Uint8Array(await v.arrayBuffer())));
    await all("readwrite", (s) => { keys.forEach((k, i) => s.put(arrays[i], k)); return {}; });
  }
  db.close();
  return kinds;
}"""


def test_cached_chunks_are_blobs_and_typed_array_records_still_read(browsers, server_url):
    """The cache stores each chunk and small file as a Blob (web/idb.js: Firefox hands 90 MB of Blob records back 2.5-3.5x
    faster than typed arrays); records an earlier gpuport stored as typed arrays are read as before, every chunk
    from the cache and the same embedding."""
    context = browsers.get("firefox").new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&preload=minilm-l6-v2")
        first = _run(page, EMBED)
        _run(page, STORED)
        # 87 chunks, config.json, sentence_bert_config.json and vocab.txt
        assert page.evaluate(STORED_AS, False) == {"Blob": 90}
        assert page.evaluate(STORED_AS, True) == {"Blob": 90}
        assert page.evaluate(STORED_AS, False) == {"Uint8Array": 90}
        page.reload()
        second = _run(page, EMBED)
        assert second["stats"]["cached_chunks"] == 87 and second["stats"]["fetched_chunks"] == 0, second["stats"]
        assert _run(page, PREFETCH)["read"] == 90 and second["embedding"] == first["embedding"]
    finally:
        context.close()


def test_a_model_named_to_start_that_does_not_exist_is_reported_and_holds_nothing_up(chromium_webgpu, server_url):
    """A name start() cannot find a manifest for: the read-ahead says so (prefetchStatus().error names the URL and
    the HTTP status), start() and other loads go on, and the load fetches for itself."""
    context = chromium_webgpu.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&preload=no-such-model")
        _run(page, "1")
        ahead = _run(page, PREFETCH)
        assert "/models/no-such-model/manifest.json: HTTP 404" in (ahead["error"] or ""), ahead
        assert ahead["keys"] == 0 and ahead["fetched"] == 0, ahead
        stats = _run(page, LOAD)["stats"]
        assert stats["fetched_chunks"] == 87 and stats["read_ahead_chunks"] == 0, stats
    finally:
        context.close()


def test_interrupted_load_resumes_and_new_manifest_invalidates(fresh, server_url):
    context, page, requests = fresh
    # the connection drops on every request from byte 40 MiB on: the load fails, verified chunks stay
    context.route("**" + WEIGHTS, lambda route: route.abort("connectionreset")
                  if int((route.request.headers.get("range") or "bytes=0-").split("=")[1].split("-")[0]) >= 40 << 20
                  else route.continue_())
    first = _run(page, _loader(retries=1) + LOAD_RAW)
    assert not first["ok"] and "model.safetensors" in first["error"] and "chunk" in first["error"], first
    audit = _run(page, AUDIT_CACHE)
    assert audit["bad"] == [] and 0 < len(audit["chunks"]) <= 40, audit
    context.unroute("**" + WEIGHTS)
    requests.clear()
    second = _run(page, _loader() + LOAD_RAW)
    assert second["ok"], second
    assert second["stats"]["cached_chunks"] == len(audit["chunks"]), (second["stats"], audit)
    assert second["stats"]["fetched_chunks"] == 87 - len(audit["chunks"])
    assert _run(page, AUDIT_CACHE)["chunks"] == list(range(87))

    # a new manifest (another file sha256): the old chunks go
    def new_manifest(route):
        r = route.fetch()
        m = r.json()
        m["sha256"] = "f" * 64
        route.fulfill(response=r, body=json.dumps(m))
    context.route("**/models/minilm-l6-v2/manifest.json", new_manifest)
    third = _run(page, _loader() + LOAD_RAW)
    context.unroute("**/models/minilm-l6-v2/manifest.json")
    assert third["ok"] and any("removed" in n for n in third["notes"]), third
    keys = _run(page, "import gpuport_idb\n[str(k) for k in (await gpuport_idb.keys('chunks')).to_py()]")
    assert not any(k.startswith("53aa51172d14") for k in keys) and sum(k.startswith("ffff") for k in keys) == 87


FAULT_START = 8 << 20   # the span that starts at 8 MiB (chunks 8-11)
SPAN = 4 << 20          # the loader's ranges: four 1 MiB chunks
FAULTS = ("corrupt", "truncated", "500", "dropped")


def _faults(kinds: dict[int, str], times: int):
    """A route handler: the first `times` requests of each span in `kinds` (its first byte -> a fault) are answered
    with that fault; every other request goes through."""
    left = dict.fromkeys(kinds, times)

    def handler(route):
        rng = route.request.headers.get("range") or ""
        start = next((s for s in kinds if rng.startswith(f"bytes={s}-")), None)
        if start is None or left[start] <= 0:
            return route.continue_()
        left[start] -= 1
        kind = kinds[start]
        if kind == "500":
            return route.fulfill(status=500, body="boom")
        if kind == "dropped":
            return route.abort("connectionreset")
        r = route.fetch()
        body = r.body()
        if kind == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0x55]) + body[101:]
            return route.fulfill(response=r, body=body)
        if kind == "truncated":   # the promised Content-Range, half the bytes
            return route.fulfill(status=206, headers={**r.headers, "content-length": str(len(body) // 2)},
                                 body=body[: len(body) // 2])
        raise AssertionError(kind)
    return handler


@pytest.mark.parametrize("kind", FAULTS)
def test_a_persistent_fault_fails_naming_the_chunk_and_nothing_corrupt_is_cached(fresh, kind):
    context, page, _ = fresh
    # 1 try + 1 retry, then LoadError naming the URL and the chunk; nothing bad cached
    context.route("**" + WEIGHTS, _faults({FAULT_START: kind}, times=10**6))
    failed = _run(page, _loader(retries=1) + LOAD_RAW)
    assert not failed["ok"], failed
    assert WEIGHTS in failed["error"] and "chunk" in failed["error"] and "after 2 attempts" in failed["error"], failed
    if kind == "corrupt":
        assert "chunk 8 failed its sha256 check" in failed["error"], failed
    audit = _run(page, AUDIT_CACHE)
    assert audit["bad"] == [] and not set(audit["chunks"]) & {8, 9, 10, 11}, audit


def test_one_bad_answer_of_each_kind_is_retried_and_the_cache_ends_complete_and_clean(fresh):
    """Each fault once, on four spans of one load (one full load rather than one per kind): each span's retry
    succeeds."""
    context, page, _ = fresh
    context.route("**" + WEIGHTS, _faults({FAULT_START + i * SPAN: kind for i, kind in enumerate(FAULTS)}, times=1))
    ok = _run(page, _loader(retries=2) + LOAD_RAW)
    assert ok["ok"] and ok["stats"]["retries"] == len(FAULTS), ok
    assert _run(page, AUDIT_CACHE) == {"chunks": list(range(87)), "bad": [], "total": 87}


SMALL_DISK = """
import js
from pyodide.ffi import JsException
from gpuport.backends.pageio import IndexedDBChunkCache

class SmallDisk(IndexedDBChunkCache):
    # IndexedDB with a 20 MiB budget: the estimate reports it, and a write past it fails with a real
    # DOMException QuotaExceededError (Playwright's Chromium contexts ignore CDP's
    # Storage.overrideQuotaForOrigin: estimate() kept reporting 10 GiB)
    def __init__(self, quota, use_estimate):
        super().__init__(use_estimate=use_estimate)
        self.quota, self.used = quota, 0

    async def estimate(self):
        return {"usage": self.used, "quota": self.quota} if self.use_estimate else None

    async def put(self, key, data, digest=None):
        if self.used + len(data) > self.quota:
            try:
                await js.eval("Promise.reject(new DOMException('The quota has been exceeded.', 'QuotaExceededError'))")
            except JsException as exc:
                self._raise(exc)
        self.used += len(data)
        await super().put(key, data, digest)
"""


def test_quota_exceeded_falls_back_to_memory(fresh):
    context, page, _ = fresh
    _run(page, SMALL_DISK)
    # the estimate says 20 MiB are free, the model needs 87: no caching at all, said in the stream
    by_estimate = _run(page, _loader(cache="SmallDisk(20 << 20, True)") + LOAD_RAW)
    assert by_estimate["ok"] and by_estimate["stats"]["memory_only"], by_estimate
    assert any("falling back to memory: storage estimate" in n for n in by_estimate["notes"]), by_estimate["notes"]
    assert _run(page, AUDIT_CACHE)["chunks"] == []
    # no estimate: the write itself fails with QuotaExceededError part way; memory from then on
    by_error = _run(page, _loader(cache="SmallDisk(20 << 20, False)") + LOAD_RAW)
    assert by_error["ok"] and by_error["stats"]["memory_only"], by_error
    assert any("quota exceeded" in n and "QuotaExceededError" in n for n in by_error["notes"]), by_error["notes"]
    audit = _run(page, AUDIT_CACHE)
    assert audit["bad"] == [] and 0 < len(audit["chunks"]) <= 20, audit


def test_demo_page_model_section(chromium_webgpu, server_url):
    """The demo page's model section: progress bar to 100 %, stage timings, a 6x6 heatmap, the tier."""
    from playwright.sync_api import expect

    context = chromium_webgpu.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&model=1")
        expect(page.locator("#model")).to_have_attribute("data-state", "done", timeout=180_000)
        assert page.locator("#model-progress").evaluate("p => p.value") == 100
        stages = page.locator("#model-stages tbody td:first-child").all_inner_texts()
        assert stages[0] == "manifest" and stages[-1] == "ready" and "upload" in stages, stages
        assert page.locator("#heatmap td.cell").count() == 36
        assert "tier core (webgpu)" in page.locator("#model-summary").inner_text()
        diag = page.locator("#heatmap tr:nth-child(2) td.cell").first.inner_text()
        assert diag == "1.00"
        assert page.locator("body").get_attribute("data-state") == "ready"   # the kernel side is untouched
    finally:
        context.close()
