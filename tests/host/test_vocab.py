"""gpuport.host.vocab.VocabGreedy: the greedy choice from a vocabulary's int8 copy is the float32 argmax, even where
the int8 copy orders the best rows the other way, and its log-probabilities are the float32 logits' own.

The float32 answer is NumPy's float32 product (any summation order is within the bound VocabGreedy allows for);
log-probabilities are held to 1e-5 against references.greedy_ref (float32 exp summed in double, as the kernel's) plus
twice Higham's bound on one logit (the reference's logits are NumPy's, summed in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
from gpuport.host import hostops
from gpuport.host.references import greedy_ref
from gpuport.host.vocab import VocabGreedy


def frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def float32_choice(w: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None) -> int:
    z = w @ x
    return int(np.argmax(z if bias is None else z + bias))


@pytest.fixture(scope="module")
def vocab() -> VocabGreedy:
    r = np.random.default_rng(7)
    return VocabGreedy(frozen((r.standard_normal((5003, 96)) * 0.05).astype(np.float32)))


def test_the_int8_copy_is_each_row_rounded_and_every_bound_holds(vocab):
    w = vocab.weight.astype(np.float64)
    back = vocab.q8.astype(np.float64) * vocab.scale[:, None]
    # half a step at most, and the float32 quotient w / s a rounding off (127 u steps)
    assert np.all(np.abs(back - w) <= (0.5 + 128 * 2.0 ** -24) * vocab.scale[:, None])
    assert np.abs(vocab.q8).max() == 127 and vocab.q8.dtype == np.int8
    r = np.random.default_rng(8)
    for _ in range(20):
        x = (r.standard_normal(96) * r.uniform(0.1, 50)).astype(np.float32)
        err = np.abs(hostops.project_q8(x, vocab.q8, vocab.scale) - vocab.weight @ x)
        assert np.all(err <= np.linalg.norm(x.astype(np.float64)) * vocab.bound)
        assert err.max() > 1e-3 * np.linalg.norm(x) * vocab.bound.max()   # not the float32 weight passed through


def test_choices_equal_the_float32_argmax(vocab):
    r = np.random.default_rng(9)
    bias = np.zeros(vocab.weight.shape[0], np.float32)
    bias[r.integers(0, bias.size, 500)] = -np.inf
    for i in range(50):
        x = (r.standard_normal(96) * 20).astype(np.float32)
        b = None if i % 2 else bias
        assert vocab.choose(x, b) == float32_choice(vocab.weight, x, b)


def test_rows_the_int8_copy_orders_wrongly_are_decided_by_float32():
    # Both rows have 1.27 as their largest value (scale 0.01). Row 3's other values all sit just below a midpoint
    # between int8 steps (rounded down to 0.5), row 11's are 0.5 but one just above a midpoint (rounded up): in float32
    # row 3 leads by ~31 half-steps, in int8 row 11 leads by one step. Without the exact check within the rows' bounds
    # (a margin of 0) row 11 would win.
    r = np.random.default_rng(10)
    w = (r.standard_normal((40, 64)) * 0.01).astype(np.float32)
    step = 0.01
    w[3] = 0.5 + 0.49 * step
    w[11] = 0.5
    w[11, 1] = 0.5 + 0.51 * step
    w[3, 0] = w[11, 0] = 1.27
    vocab = VocabGreedy(frozen(w))
    x = np.ones(64, np.float32)
    approx = hostops.project_q8(x, vocab.q8, vocab.scale)
    assert approx[11] > approx[3] and w[3] @ x > w[11] @ x
    assert vocab.choose(x) == 3 == float32_choice(w, x)
    bias = np.zeros(40, np.float32)
    bias[3] = -np.inf                                         # suppressed: the next best
    assert vocab.choose(x, bias) == 11 == float32_choice(w, x, bias)


def test_log_probabilities_are_the_float32_logits_own(vocab):
    r = np.random.default_rng(11)
    xs = (r.standard_normal((70, 96)) * 20).astype(np.float32)   # past one 64-row product
    bias = np.zeros(vocab.weight.shape[0], np.float32)
    bias[:7] = -np.inf
    tokens = [vocab.choose(x, bias) for x in xs]
    tokens[5] = tokens[5] + 1 if tokens[5] + 1 < bias.size else 8   # not the argmax: its own log-probability
    for x, tok, got in zip(xs, tokens, vocab.logprobs(xs, tokens, bias)):
        z = (vocab.weight @ x).astype(np.float32)
        best, lp = greedy_ref(z, bias)
        # each logit within Higham's bound of the kernel's (another summation order); the token's and the
        # log-sum-exp's move by at most that much each
        rounding = 2 * (96 + 1) * 2.0 ** -24 * float((np.abs(vocab.weight) @ np.abs(x)).max())
        assert abs(got - (lp - float(z[best]) + float(z[tok]))) <= 1e-5 + 2 * rounding
    with pytest.raises(ValueError, match="2 rows for 1 tokens"):
        vocab.logprobs(xs[:2], tokens[:1])


def test_what_the_copy_cannot_decide_is_left_to_the_float32_logits(vocab):
    x = np.ones(96, np.float32)
    assert vocab.choose(np.full(96, np.inf, np.float32)) is None
    assert vocab.choose(np.full(96, np.nan, np.float32)) is None
    assert vocab.choose(x, np.full(vocab.weight.shape[0], -np.inf, np.float32)) is None   # nothing finite
    for bad in (np.nan, np.inf):
        w = np.array(vocab.weight)
        w[17, 3] = bad
        assert VocabGreedy(frozen(w)).choose(x) is None
    zero = VocabGreedy(frozen(np.zeros((4, 8), np.float32)))   # all-zero rows: scale 1, every logit 0, the first
    assert zero.choose(np.ones(8, np.float32)) == 0
    with pytest.raises(ValueError, match="read-only float32"):
        VocabGreedy(np.zeros((4, 4), np.float32))
