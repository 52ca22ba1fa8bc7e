"""bench/vision.py's arithmetic and table, without browsers, worker processes or timing."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))
import vision  # noqa: E402


def rec(*runs):
    return {"warmup_ms": 1000.0, "runs_ms": list(runs)}


RESULTS = {
    "native": {"image16": {"hf-1t": rec(300, 320, 310), "gpuport-auto-1t": rec(150), "hf-2t": rec(200),
                           "gpuport-auto-2t": rec(250)},
               "text1": {"gpuport-auto-1t": rec(10)}},   # its peer failed: no ratio
    "firefox": {"zeroshot10": {"tjs-wasm": rec(90), "tjs-wasm-2t": rec(60), "tjs-webgpu": rec(900),
                               "gpuport-auto": rec(30)}},
}


def test_ratios_against_the_right_peer():
    r = vision.ratios(RESULTS)
    assert r["native"]["gpuport-auto-1t"]["image16"] == {"peer": "hf-1t", "ratio": 2.0667}
    assert r["native"]["gpuport-auto-2t"]["image16"] == {"peer": "hf-2t", "ratio": 0.8}
    assert "text1" not in r["native"]["gpuport-auto-1t"]
    assert r["firefox"]["gpuport-auto"]["zeroshot10"] == {"peer": "tjs-wasm-2t", "ratio": 2.0}   # the best device


def test_table_shows_medians_ratios_and_cosines():
    text = vision.table(RESULTS, {"firefox": {"gpuport-auto": {"zeroshot10": 0.99999}}})
    assert "30.0 (x2.00)" in text and "0.999990" in text and "16 images" in text
    assert set(vision.CASES) == {"image1", "image16", "text1", "text16", "zeroshot10"}
