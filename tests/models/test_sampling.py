"""Token sampling (gpuport.models.sampling): greedy, temperature, top-k, top-p, repetition penalty, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from gpuport.models.sampling import Sampler, SamplingParams

LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 2.5, 0.0], np.float32)


def frequencies(params: SamplingParams, n: int = 20000, history=()) -> np.ndarray:
    s = Sampler(params)
    return np.bincount([s(LOGITS, history) for _ in range(n)], minlength=LOGITS.size) / n


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_greedy_is_argmax():
    assert Sampler(SamplingParams())(LOGITS) == 1
    assert Sampler(SamplingParams(repetition_penalty=2.0))(LOGITS, [1]) == 4   # 3/2 < 2.5


def test_temperature_follows_the_softmax():
    """20000 draws: each frequency within 4 standard deviations of softmax(z / T)."""
    for t in (0.5, 1.0, 2.0):
        want = softmax(LOGITS.astype(np.float64) / t)
        got = frequencies(SamplingParams(temperature=t, seed=1))
        assert np.all(np.abs(got - want) <= 4 * np.sqrt(want * (1 - want) / 20000) + 1e-12), (t, got, want)


def test_top_k_and_top_p_cut_the_tail():
    got = frequencies(SamplingParams(temperature=1.0, top_k=2, seed=2))
    assert set(np.nonzero(got)[0]) == {1, 4}
    np.testing.assert_allclose(got[[1, 4]], softmax(np.array([3.0, 2.5])), atol=0.02)
    # sorted: 1 (0.459), 4 (0.278), 2 (0.169), 0 (0.062), ...; cumulative 0.459, 0.738, 0.907: the smallest prefix
    # reaching top_p is kept
    assert set(np.nonzero(frequencies(SamplingParams(temperature=1.0, top_p=0.4, seed=3)))[0]) == {1}
    assert set(np.nonzero(frequencies(SamplingParams(temperature=1.0, top_p=0.6, seed=3)))[0]) == {1, 4}
    assert set(np.nonzero(frequencies(SamplingParams(temperature=1.0, top_p=0.8, seed=3)))[0]) == {1, 4, 2}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    z = Sampler(SamplingParams(repetition_penalty=2.0)).scores(LOGITS, [1, 3, 1])
    np.testing.assert_array_equal(z, [1.0, 1.5, 2.0, -2.0, 2.5, 0.0])


def test_a_seed_reproduces_the_sequence():
    p = SamplingParams(temperature=1.3, top_k=4, top_p=0.9, seed=42)
    a, b = Sampler(p), Sampler(p)
    assert [a(LOGITS) for _ in range(50)] == [b(LOGITS) for _ in range(50)]


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_k=-1), dict(top_k=1.5), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(repetition_penalty=0.0), dict(temperature=float("nan"))])
def test_bad_parameters_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)
