"""bench/peers.py's arithmetic, output and schedule, without browsers, worker processes or timing."""

import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))
import _harness as harness  # noqa: E402
import _peers_lanes as lanes  # noqa: E402
import _peers_report as report  # noqa: E402


def rec(*runs, warmup=1000.0):
    return {"warmup_ms": warmup, "runs_ms": list(runs)}


RESULTS = {
    "native": {
        "short": {"st-1t": rec(30, 10, 20), "gpuport-cpu-1t": rec(5, 9, 4, 100), "st-2t": rec(8),
                  "gpuport-auto-2t": rec(16)},
        "long256": {"st-1t": rec(100), "gpuport-cpu-1t": rec(400)},
    },
    "chromium": {
        "short": {"tjs-wasm": rec(60), "tjs-webgpu": rec(3000), "gpuport-auto": rec(30), "gpuport-cpu": rec(120)},
        "batch8": {"tjs-wasm": rec(300), "tjs-webgpu": rec(200), "gpuport-auto": rec(400)},
        "long256": {"gpuport-auto": rec(1000)},   # its peer failed: no ratio
    },
}


def test_medians_ignore_warmups_and_take_the_middle():
    meds = report.medians(RESULTS)
    assert meds["native"]["short"]["st-1t"] == 20
    assert meds["native"]["short"]["gpuport-cpu-1t"] == 7   # even count: mean of the middle two (5, 9)
    with pytest.raises(ValueError, match="no repetitions"):
        report.median([])


def test_ratios_compare_with_the_right_peer():
    r = report.ratios(RESULTS)
    assert r["native"]["gpuport-cpu-1t"]["short"] == {"peer": "st-1t", "ratio": pytest.approx(20 / 7, abs=1e-4)}
    assert r["native"]["gpuport-cpu-1t"]["long256"]["ratio"] == 0.25          # gpuport 4x slower
    assert r["native"]["gpuport-auto-2t"]["short"] == {"peer": "st-2t", "ratio": 0.5}
    # in a page the peer is transformers.js's fastest device in that case
    assert r["chromium"]["gpuport-auto"]["short"] == {"peer": "tjs-wasm", "ratio": 2.0}
    assert r["chromium"]["gpuport-auto"]["batch8"] == {"peer": "tjs-webgpu", "ratio": 0.5}
    assert "long256" not in r["chromium"]["gpuport-auto"]
    assert "tjs-wasm" not in r["chromium"]                 # only gpuport systems get ratios


def test_thread_counts_and_labels():
    assert report.threads("st-2t") == 2 and report.threads("gpuport-cpu") is None
    assert report.label("gpuport-auto-1t") == "gpuport auto (default), 1 thread"
    assert report.label("st-2t") == "sentence-transformers (torch), 2 threads"
    assert report.label("tjs-wasm") == "transformers.js wasm"


def test_cosine_min():
    assert report.cosine_min([[1, 0], [0, 2]], [[2, 0], [0, 1]]) == pytest.approx(1.0)
    assert report.cosine_min([[1, 0], [1, 1]], [[1, 0], [1, 0]]) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        report.cosine_min([[1, 0]], [[1, 0], [0, 1]])


def test_table_shows_medians_ratios_and_low_cosines():
    cos = {"native": {"gpuport-cpu-1t": {"short": 0.99999, "long256": 0.9}, "st-1t": {"short": 1.0}}}
    text = report.table(RESULTS, cos)
    lines = {(line[:9].strip(), line[10:52].strip()): line for line in text.splitlines()[2:-1]}
    row = lines["native", "gpuport cpu, 1 thread"]
    assert "7.0 (x2.86)" in row and "400.0 (x0.25)" in row and "0.900000 LOW" in row
    assert "60.0" in lines["chromium", "transformers.js wasm"]
    order = [line[10:52].strip() for line in text.splitlines()[2:-1] if line.startswith("native")]
    assert order == ["sentence-transformers (torch), 1 thread", "gpuport cpu, 1 thread",
                     "sentence-transformers (torch), 2 threads", "gpuport auto (default), 2 threads"]


def test_summary_is_json_and_carries_everything():
    doc = json.loads(json.dumps(report.summary(RESULTS, {}, {"bench": "peers", "machine": {"cpus": 2}})))
    assert doc["bench"] == "peers" and doc["machine"] == {"cpus": 2}
    assert doc["results"]["native"]["short"]["st-1t"]["runs_ms"] == [30, 10, 20]
    assert doc["ratios"]["chromium"]["gpuport-auto"]["short"]["ratio"] == 2.0
    assert doc["min_cosine_required"] == 0.9999 and set(doc["cases"]) == {"short", "batch8", "long256"}


class Fake:
    """A system whose call returns fixed times and records the global order of calls."""

    def __init__(self, name, ms, calls, fail_on=None):
        self.name, self.ms, self.calls, self.fail_on = name, ms, calls, fail_on

    def call(self, case, texts, embeddings):
        self.calls.append((self.name, case, embeddings))
        if (case, embeddings) == self.fail_on:
            raise lanes.SystemFailed(f"{self.name}: the page crashed")
        return {"ms": self.ms, "embeddings": [[1.0, 0.0]] * len(texts) if embeddings else None}


def test_interleave_alternates_rotates_and_discards_warmups():
    calls = []
    a, b = Fake("tjs-wasm", 1.0, calls), Fake("gpuport-auto", 2.0, calls)
    results, emb, errors = lanes.interleave([a, b], {"short": ["x"]}, reps=3, min_reps=1, budget_s=60, log=lambda m: None)
    assert calls == [("tjs-wasm", "short", True), ("gpuport-auto", "short", True),      # warm-ups, embeddings kept
                     ("tjs-wasm", "short", False), ("gpuport-auto", "short", False),
                     ("gpuport-auto", "short", False), ("tjs-wasm", "short", False),    # rotated start
                     ("tjs-wasm", "short", False), ("gpuport-auto", "short", False)]
    assert results["short"]["gpuport-auto"] == {"warmup_ms": 2.0, "runs_ms": [2.0, 2.0, 2.0]}
    assert emb["short"]["tjs-wasm"] == [[1.0, 0.0]] and errors == {}


def test_interleave_warms_every_case_up_before_timing_any():
    calls = []
    a, b = Fake("tjs-wasm", 1.0, calls), Fake("gpuport-auto", 2.0, calls)
    results, emb, _ = lanes.interleave([a, b], {"short": ["x"], "batch8": ["x", "y"]}, reps=1, min_reps=1, budget_s=60,
                                       log=lambda m: None, warmups=2)
    warm = [(s, c, e) for c, e in (("short", True), ("batch8", True), ("short", False), ("batch8", False))
            for s in ("tjs-wasm", "gpuport-auto")]
    assert calls[:8] == warm, calls   # two rounds over both cases, the first keeping the embeddings
    assert calls[8:] == [("tjs-wasm", "short", False), ("gpuport-auto", "short", False),
                         ("tjs-wasm", "batch8", False), ("gpuport-auto", "batch8", False)]
    assert results["batch8"]["tjs-wasm"] == {"warmup_ms": 1.0, "runs_ms": [1.0]}
    assert emb["batch8"]["gpuport-auto"] == [[1.0, 0.0]] * 2


def test_interleave_budget_stops_slow_systems_at_min_reps():
    calls = []
    fast, slow = Fake("tjs-wasm", 10.0, calls), Fake("gpuport-webgpu", 5000.0, calls)
    results, _, _ = lanes.interleave([fast, slow], {"long256": ["x"]}, reps=5, min_reps=2, budget_s=8,
                                     log=lambda m: None)
    assert len(results["long256"]["tjs-wasm"]["runs_ms"]) == 5
    assert len(results["long256"]["gpuport-webgpu"]["runs_ms"]) == 2


def test_interleave_drops_a_failing_system_and_goes_on():
    calls = []
    ok, bad = Fake("gpuport-cpu", 1.0, calls), Fake("tjs-webgpu", 1.0, calls, fail_on=("batch8", True))
    results, _, errors = lanes.interleave([ok, bad], {"short": ["x"], "batch8": ["x", "y"]}, reps=2, min_reps=2,
                                          budget_s=60, log=lambda m: None)
    # dropped in the warm-up round, before any case was timed: its first short call is all it has
    assert results["short"]["tjs-webgpu"] == {"warmup_ms": 1.0, "runs_ms": []}
    assert "tjs-webgpu" not in results["batch8"] and len(results["batch8"]["gpuport-cpu"]["runs_ms"]) == 2
    assert len(results["short"]["gpuport-cpu"]["runs_ms"]) == 2
    assert errors == {"tjs-webgpu": "tjs-webgpu: the page crashed"}


def test_peer_server_serves_the_page_and_the_mounts(tmp_path):
    import urllib.request

    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text('{"ok": 1}')
    with lanes.peer_server(tmp_path) as url:
        with urllib.request.urlopen(url + "/models/m/config.json", timeout=60) as r:
            assert json.load(r) == {"ok": 1}
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(url + "/texts.json", timeout=60) as r:
            assert set(json.load(r)) >= {"short", "batch8", "long256"}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/models/../../etc/passwd", timeout=60)


def _note_inherited_modules_then_listen(port: int, path: str) -> None:
    import socketserver

    Path(path).write_text(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("wgpu", "gpuport"))))
    socketserver.TCPServer(("127.0.0.1", port), socketserver.BaseRequestHandler).serve_forever()


def test_bench_servers_start_in_a_fresh_interpreter_never_a_fork_of_one_holding_a_device(tmp_path):
    """The cause of this file's once-flaky peer-server test: the server was a fork of the pytest process, which holds
    wgpu devices from other tests; the child's first garbage collection that finalised an inherited device blocked
    for ever in vkDestroyDevice (lavapipe's pthread_cond_destroy waits for threads only the parent has), so a
    request hung without an answer. A server process must inherit no device: it is spawned, not forked."""
    import gpuport as gp
    import numpy as np

    rt = gp.open_sync(backend="webgpu")
    try:
        x = rt.tensor(np.ones((64, 64), np.float32))
        rt.ops.matmul(x, x).numpy()                       # this process holds a device that has run work
        seen = tmp_path / "modules.json"
        with harness.serving(_note_inherited_modules_then_listen, (str(seen),), "a probe server"):
            inherited = json.loads(seen.read_text())
        assert not inherited, f"the server process inherited {inherited} from its parent: it was forked"
    finally:
        rt.close()


def test_texts_have_the_stated_token_counts():
    from gpuport.models import default_source
    from gpuport.models.tokenizer import WordPieceTokenizer

    texts = json.loads((BENCH / "peers" / "texts.json").read_text())
    tok = WordPieceTokenizer.from_file(os.path.join(default_source("minilm-l6-v2"), "vocab.txt"), max_length=10_000)
    assert {k: [len(tok.encode(t)) for t in texts[k]] for k in ("short", "batch8", "long256")} == texts["tokens"]
    assert texts["tokens"]["long256"] == [256] and len(texts["batch8"]) == 8 and len(texts["short"]) == 1
