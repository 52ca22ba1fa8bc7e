"""Model parity cases, written once: pytest runs them natively (tests/models/test_minilm.py); a page can run the
same source in Pyodide (only numpy and gpuport are imported).

Each case is `async def name(rt, ...)`, raises AssertionError on failure and returns a small dict of
figures (cosines, timings) for the report.
"""

from __future__ import annotations

import time

import numpy as np
from gpuport import models

MIN_COSINE = 0.9999


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


async def load_minilm(rt, source=None):
    return await models.load("minilm-l6-v2", rt, source=source)


async def minilm_matches_reference(rt, fixture: dict, model=None, batch_size: int = 32) -> dict:
    """Every fixture sentence's embedding has cosine >= 0.9999 with sentence-transformers' (and unit norm)."""
    model = model or await load_minilm(rt)
    t0 = time.perf_counter()
    got = await model.embed(fixture["sentences"], batch_size=batch_size)
    seconds = time.perf_counter() - t0
    want = np.asarray(fixture["embeddings"], dtype=np.float64)
    assert got.shape == want.shape == (len(fixture["sentences"]), 384), (got.shape, want.shape)
    assert got.dtype == np.float32
    cos = cosines(got, want)
    worst = int(np.argmin(cos))
    assert cos.min() >= MIN_COSINE, (f"{rt.backend}: cosine {cos[worst]:.7f} < {MIN_COSINE} for sentence "
                                     f"{worst}: {fixture['sentences'][worst][:60]!r}")
    norms = np.linalg.norm(got.astype(np.float64), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5), norms
    return {"backend": rt.backend, "min_cosine": float(cos.min()), "worst": worst,
            "max_abs_diff": float(np.abs(got - want).max()), "seconds": seconds}


async def minilm_batch_equals_single(rt, texts: list[str], model=None) -> dict:
    """One padded batch gives each text the embedding it gets alone (padding is masked out)."""
    model = model or await load_minilm(rt)
    lengths = sorted(len(model.tokenizer.encode(t)) for t in texts)
    assert lengths[0] < lengths[-1], "pick texts of different lengths so the batch is padded"
    assert len(model.plan_batches(lengths, 32, max_padding=1e9)) == 1
    together = await model.embed(texts, batch_size=32, max_padding=1e9)
    alone = np.stack([(await model.embed([t]))[0] for t in texts])
    diff = float(np.abs(together - alone).max())
    assert diff < 2e-6, f"{rt.backend}: batched and single embeddings differ by {diff}"
    return {"backend": rt.backend, "max_abs_diff": diff}


async def minilm_order_preserved(rt, fixture: dict, model=None) -> dict:
    """Texts in a shuffled order, several batches of mixed lengths: rows come back in the caller's order."""
    model = model or await load_minilm(rt)
    n = len(fixture["sentences"])
    keep = [i for i in range(n) if len(fixture["sentences"][i]) < 200][:12]   # short ones: fast on software GPUs
    perm = [keep[j] for j in np.random.default_rng(7).permutation(len(keep))]
    got = await model.embed([fixture["sentences"][i] for i in perm], batch_size=3)
    want = np.asarray(fixture["embeddings"], dtype=np.float64)[perm]
    cos = cosines(got, want)
    assert cos.min() >= MIN_COSINE, f"{rt.backend}: row order lost (min cosine {cos.min():.6f})"
    empty = await model.embed([])
    assert empty.shape == (0, 384)
    return {"backend": rt.backend, "min_cosine": float(cos.min())}
