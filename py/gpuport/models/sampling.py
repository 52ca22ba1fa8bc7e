"""Choosing the next token from a model's logits: greedy (temperature 0), temperature, top-k, top-p (nucleus) and
a repetition penalty, reproducible with a seed.

The order is Hugging Face's: repetition penalty on the raw logits (a seen token's logit divided by the penalty
when positive, multiplied when negative), then temperature, then top-k, then top-p over what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0: greedy (argmax); top_k 0: off; top_p 1: off; repetition_penalty 1: off; seed: None for
    fresh entropy, an int for a reproducible sequence."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = [("temperature", self.temperature, self.temperature >= 0),
                  ("top_k", self.top_k, isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0),
                  ("top_p", self.top_p, 0 < self.top_p <= 1),
                  ("repetition_penalty", self.repetition_penalty, self.repetition_penalty > 0)]
        for name, value, ok in checks:
            if not ok or not np.isfinite(value):
                raise ValueError(f"sampling: {name}={value!r} is out of range (temperature >= 0, top_k an int >= 0, "
                                 "0 < top_p <= 1, repetition_penalty > 0)")


class Sampler:
    """Picks token ids with one set of parameters and its own random generator."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def scores(self, logits: np.ndarray, history: Sequence[int] = ()) -> np.ndarray:
        """The logits after the repetition penalty and temperature, with tokens outside top-k / top-p at -inf
        (float64). At temperature 0 only the penalty applies."""
        p = self.params
        z = np.array(logits, dtype=np.float64).ravel()
        if p.repetition_penalty != 1.0 and len(history):
            seen = np.unique(np.asarray(history, dtype=np.int64))
            z[seen] = np.where(z[seen] > 0, z[seen] / p.repetition_penalty, z[seen] * p.repetition_penalty)
        if p.temperature == 0:
            return z
        z /= p.temperature
        if 0 < p.top_k < z.size:
            kth = np.partition(z, -p.top_k)[-p.top_k]
            z[z < kth] = -np.inf
        if p.top_p < 1.0:
            order = np.argsort(-z, kind="stable")
            probs = _softmax(z[order])
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1   # the smallest prefix reaching top_p
            z[order[keep:]] = -np.inf
        return z

    def draw(self) -> float:
        """The uniform number in [0, 1) the next sampled (temperature > 0) token is picked with: here or by the
        device's sampler (ops.sample_token), so a seed gives one sequence of draws wherever it runs."""
        return float(self.rng.random())

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """The next token id."""
        z = self.scores(logits, history)
        if self.params.temperature == 0:
            return int(np.argmax(z))
        cdf = np.cumsum(_softmax(z))
        return int(min(np.searchsorted(cdf, self.draw() * cdf[-1], side="right"), z.size - 1))


class SeenMask:
    """The token ids seen so far as a bit mask (bit i % 32 of uint32 word i // 32): the history the repetition
    penalty reads, in the form the device's sampler takes."""

    def __init__(self, vocab: int, ids: Sequence[int] = ()) -> None:
        self.words = np.zeros(-(-vocab // 32), np.uint32)
        for i in ids:
            self.add(i)

    def add(self, token: int) -> None:
        """Mark `token` seen."""
        self.words[token >> 5] |= np.uint32(1 << (token & 31))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


__all__ = ["Sampler", "SamplingParams", "SeenMask"]
