"""The greedy choice over a large vocabulary from half its bytes, still the float32 argmax.

A decode step's vocabulary product reads the whole float32 weight (Whisper tiny's 51,864 x 384: 80 MB), and at one
thread that read is most of a step. `VocabGreedy` reads a bfloat16 copy (each weight rounded to nearest) instead
(hostkernels/decoder.c `gp_project_bf16`), then bounds what that changed. Rounding to bfloat16's 8 significant bits
moves a weight by at most 2^-8 |w| (plus 2^-134 below float32's normal range), so by Cauchy-Schwarz
|x.w_j - x.h_j| <= |x| (2^-8 |w_j| + sqrt(K) 2^-134); a float32 sum of K products errs by at most
gamma_K |x| |w_j| in any order (gamma_K = K u / (1 - K u), u = 2^-24), |h_j| <= (1 + 2^-8) |w_j|. So the approximate
logit and the float32 one differ by at most B = |x| c, c = max_j |w_j| (2^-8 + gamma_K (2 + 2^-8)) + sqrt(K) 2^-134,
made once (1% to spare). Only a row within 2B of the largest approximate logit can be the float32 argmax; those
rows (1 to 5 of 51,864 on Whisper's clips) are recomputed from the float32 weight and the largest chosen, the first
of equals.

The log-probabilities need every logit: `logprobs` computes them for many steps afterwards in one product (the
float32 weight streamed once for all of them, not once a step).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import hostops

_U = 2.0 ** -24    # float32's unit roundoff
_ROWS = 4096       # rows of the weight converted at a time: bounded temporaries while the copy is made


class VocabGreedy:
    """Greedy choices against a read-only float32 weight (N, K) (a decoder's tied vocabulary)."""

    def __init__(self, weight: np.ndarray) -> None:
        if weight.dtype != np.float32 or weight.ndim != 2 or weight.flags.writeable:
            raise ValueError(f"VocabGreedy: a read-only float32 (N, K) weight, not {weight.dtype} {weight.shape}")
        n, k = weight.shape
        gamma = k * _U / (1 - k * _U)
        self.weight = weight
        self.bf16 = np.empty((n, k), np.uint16)
        squares = [0.0]
        for r in range(0, n, _ROWS):
            w = weight[r:r + _ROWS]
            u = w.view(np.uint32)
            self.bf16[r:r + _ROWS] = (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16   # round to nearest even
            squares.append(float(np.einsum("ij,ij->i", w, w).max(initial=0.0)))
        self.bf16.flags.writeable = False
        # c: |approximate - float32 logit| <= |x| c for every row; a weight that is not finite (or a norm that
        # overflows) makes it NaN or inf, and then choose() never decides
        largest = math.sqrt(float(np.max(squares)))
        self.bound = 1.01 * (largest * (2.0 ** -8 + gamma * (2 + 2.0 ** -8)) + math.sqrt(k) * 2.0 ** -134)

    def choose(self, x: np.ndarray, bias: np.ndarray | None = None) -> int | None:
        """The argmax of x (K,) @ W^T + bias (0 or -inf: suppressed tokens) as float32 logits give it; None where this
        cannot decide (a non-finite x, logit or bound, or nothing finite): the caller computes every logit."""
        z = hostops.project_bf16(x, self.bf16)
        if bias is not None:
            z += bias
        top = float(z.max())
        margin = 2.0 * float(np.linalg.norm(x.astype(np.float64))) * self.bound
        if not (np.isfinite(top) and np.isfinite(margin)):
            return None
        rows = np.flatnonzero(z >= top - margin)
        exact = self.weight[rows] @ x.astype(np.float32)
        if bias is not None:
            exact += bias[rows]
        if not np.isfinite(exact).all():
            return None
        return int(rows[int(np.argmax(exact))])

    def logprobs(self, xs: np.ndarray, tokens: Sequence[int], bias: np.ndarray | None = None) -> list[float]:
        """The log-probability of tokens[i] under softmax(xs[i] @ W^T + bias), every logit float32: one product for
        all the rows, then the kernels' one-pass log-sum-exp per row."""
        if len(xs) != len(tokens):
            raise ValueError(f"logprobs: {len(xs)} rows for {len(tokens)} tokens")
        out: list[float] = []
        for r in range(0, len(tokens), 64):   # at most 64 rows of logits (13 MB for Whisper's vocabulary) at once
            logits = hostops.project(np.ascontiguousarray(xs[r:r + 64], np.float32), self.weight)
            for z, tok in zip(logits, tokens[r:r + 64]):
                best, lp = hostops.greedy(z, bias)
                out.append(lp - float(z[best]) + float(z[tok]) if best != tok else lp)
        return out
