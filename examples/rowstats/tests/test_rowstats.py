"""rowstats' tests: each runs natively and in every browser lane (ids end in [native], [chromium], ...)."""

import numpy as np
import pytest
from rowstats import clamp, clamp_ref, cosine_similarity, cosine_similarity_ref

A = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 2, 3, 0]], dtype=np.float32)
B = np.array([[1, 0, 0, 0], [0, 0, 0, 5]], dtype=np.float32)


@pytest.mark.gpuport
async def test_cosine_similarity_matches_numpy(gp_runtime):
    got = await cosine_similarity(gp_runtime, A, B)
    assert got.shape == (3, 2)
    assert np.allclose(got, cosine_similarity_ref(A, B), atol=1e-6)


@pytest.mark.gpuport
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (0.0, 2.0)])
async def test_clamp_kernel(gp_runtime, lo, hi):
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    assert (await clamp(gp_runtime, x, lo, hi)).tolist() == clamp_ref(x, lo, hi).tolist()


@pytest.mark.gpuport
def test_runtime_has_a_backend(gp_runtime):   # sync tests run in each lane too
    assert gp_runtime.backend in ("webgpu", "cpu")
    assert gp_runtime.info()["tier"] in ("full", "core", "constrained", "cpu")


@pytest.mark.gpuport
@pytest.mark.demo_failure
async def test_demo_failure_shows_the_page_traceback(gp_runtime):
    sims = await cosine_similarity(gp_runtime, A, A)
    assert sims[1, 1] == 0.5   # wrong on purpose: a row's cosine with itself is 1
