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


def test_the_towers_flops_are_the_models_own_products_and_attention():
    """vision_tower_flops with every row through the last layer counts what the model's op list (the shapes
    placement prices) multiplies; gpuport's count drops the last layer's rows past each class token."""
    from _roof import vision_tower_flops
    from gpuport.models.vision import encoder_ops

    for images in (1, 16):
        seq, h = 50, 768
        flops = 2 * images * seq * 3072 * h + 2 * images * h * 512   # the patch product, the projection
        for op, shapes in encoder_ops(h, 3072, 12, "quick_gelu", images, seq):
            if op == "matmul":
                (m, k), (_, n) = shapes
                flops += 2 * m * k * n
            elif op == "attention":
                (b, s, d), _ = shapes
                flops += 2 * 2 * b * s * s * d
        assert vision_tower_flops(images, keep_all_rows=True) == flops
        dropped = (images * seq - images) * (2 * h * h + 2 * 2 * h * 3072 + 2 * 2 * seq * h)
        assert vision_tower_flops(images) == flops - dropped


def test_tower_rates_are_the_towers_own_time_against_the_same_runs_roof():
    stats = [{"vision_ms": ms} for ms in (1300.0, 1327.13, 1400.0)]
    results = {"chromium": {"image16": {"gpuport-auto": {**rec(1500, 1600, 1700), "stats": stats},
                                        "tjs-wasm": rec(4000), "tjs-wasm-2t": rec(2200, 2300, 2400)}}}
    roofs = {"chromium": {"before": {"gflops": {1: 57.0, 2: 110.0}}, "after": {"gflops": {1: 56.0, 2: 113.0}}}}
    got = vision.tower_rates(results, roofs)["chromium"]["image16"]
    assert got["roof_gflops_2_threads"] == 113.0 and got["gpuport_tower_ms"] == 1327.1
    assert got["gpuport_tower_gflops"] == 100.0 and got["gpuport_fraction_of_roof"] == 0.885
    assert got["peer"] == "tjs-wasm-2t" and got["peer_ms"] == 2300.0 and got["peer_gflops_at_least"] == 61.4
    assert "image1" not in vision.tower_rates(results, roofs)["chromium"]   # not measured: not reported
