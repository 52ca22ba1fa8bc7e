"""The greedy choice over a large vocabulary from a quarter of its bytes, still the float32 argmax.

A decode step's vocabulary product reads the whole float32 weight (Whisper tiny's 51,864 x 384: 80 MB), and at one
thread that read is most of a step. `VocabGreedy` reads an int8 copy instead (each row w_j as q_j times a scale s_j,
the largest |w_j| / 127; hostkernels/decoder.c `gp_project_q8`), then bounds what that changed, row by row. By
Cauchy-Schwarz |x.w_j - x.(s_j q_j)| <= |x| r_j, with r_j = |w_j - s_j q_j| measured once; a float32 sum of
K products errs by at most gamma |x| |w_j| in any order (gamma = (K + 1) u / (1 - (K + 1) u), u = 2^-24: one more
rounding for the scale). So the approximate logit and the float32 one differ by at most B_j = |x| c_j,
c_j = r_j + gamma (|w_j| + |s_j q_j|) (1% to spare). A row can be the float32 argmax only if its approximate logit
plus B_j reaches the largest approximate logit minus its own bound; those rows (1 to 27 of 51,864 on Whisper's
clips: a bound for all rows alike, the largest c_j, let up to 14,439 through) are recomputed from the float32 weight
and the largest chosen, the first of equals.

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
        gamma = (k + 1) * _U / (1 - (k + 1) * _U)
        self.weight = weight
        self.q8 = np.empty((n, k), np.int8)
        self.scale = np.empty(n, np.float32)
        self.bound = np.empty(n, np.float32)   # c_j: |approximate - float32 logit of row j| <= |x| c_j
        for r in range(0, n, _ROWS):
            w = weight[r:r + _ROWS]
            s = np.abs(w).max(axis=1, initial=0.0) / np.float32(127)
            s[s == 0] = 1.0
            q = np.clip(np.rint(w / s[:, None]), -127, 127)
            self.q8[r:r + _ROWS], self.scale[r:r + _ROWS] = q, s
            # in float32 (a page's NumPy is slow at float64): d = w - s q is off the true difference by at most
            # u (|s q| + |d|) <= 256 u s a value, so r_j <= |d| + sqrt(K) 256 u s_j; |s_j q_j| <= |w_j| + r_j
            d = w - s[:, None] * q
            res = np.sqrt(np.einsum("ij,ij->i", d, d, dtype=np.float32)) + np.float32(np.sqrt(k) * 256 * _U) * s
            norm = np.sqrt(np.einsum("ij,ij->i", w, w, dtype=np.float32))
            self.bound[r:r + _ROWS] = 1.01 * (res + np.float32(gamma) * (2 * norm + res))   # 1%: the sums' rounding
        for a in (self.q8, self.scale, self.bound):
            a.flags.writeable = False
        # a weight that is not finite gives a bound that is not: then choose() never decides
        self.decides = bool(np.isfinite(self.bound).all())
        self.widest = float(self.bound.max(initial=0.0)) if self.decides else math.inf

    def choose(self, x: np.ndarray, bias: np.ndarray | None = None) -> int | None:
        """The argmax of x (K,) @ W^T + bias (0 or -inf: suppressed tokens) as float32 logits give it; None where this
        cannot decide (a weight or x that is not finite, nothing finite to choose): the caller computes every logit."""
        norm = float(np.linalg.norm(x.astype(np.float64)))
        if not (self.decides and np.isfinite(norm)):
            return None
        z = hostops.project_q8(x, self.q8, self.scale)
        if bias is not None:
            z += bias
        top = float(z.max())
        if not np.isfinite(top):
            return None
        # first with the largest bound, in float32 (1% over 2 B covers the comparison's rounding): a few dozen rows
        # of 51,864 pass; then each of those with its own bound, in float64, against the largest approximate logit
        # less its bound among them: no higher than the whole vocabulary's, so no row that could win is dropped
        rows = np.flatnonzero(z >= top - 2.02 * norm * self.widest)
        near = z[rows].astype(np.float64)
        margin = self.bound[rows] * norm
        rows = rows[near + margin >= float((near - margin).max())]
        exact = self.weight[rows] @ x.astype(np.float32)
        if bias is not None:
            exact += bias[rows]
        if not rows.size or not np.isfinite(exact).all():
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
