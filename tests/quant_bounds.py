"""The error bound the quantized kernels are held to (see tests/host/test_quant_kernels.py's docstring): the weights'
elementwise magnitudes and the check, shared with the llama ops' tests."""

from __future__ import annotations

import numpy as np
from gpuport.host.quant import QuantMatrix

U, UH = 2.0 ** -24, 2.0 ** -11


def abs_weights(w: QuantMatrix) -> np.ndarray:
    """|d|*q + |m| (Q4_1) or |d|*|q| (Q8_0) elementwise, float64: the magnitudes the kernels multiply."""
    n, k = w.shape
    if w.kind == "Q4_1":
        b = w.raw.reshape(-1, 20)
        d = np.abs(b[:, 0:2].copy().view("<f2").astype(np.float64))
        m = np.abs(b[:, 2:4].copy().view("<f2").astype(np.float64))
        q = np.concatenate([b[:, 4:] & 0x0F, b[:, 4:] >> 4], axis=1).astype(np.float64)
        return (d * q + m).reshape(n, k)
    b = w.raw.reshape(-1, 34)
    d = np.abs(b[:, 0:2].copy().view("<f2").astype(np.float64))
    return (d * np.abs(b[:, 2:].view(np.int8).astype(np.float64))).reshape(n, k)


def check_bound(got: np.ndarray, want: np.ndarray, scale: np.ndarray, k: int, *, f16: bool = False,
                what: str = "") -> float:
    """|got - want| <= 2 (K+2) u scale (+ 24 u_h scale for f16 arithmetic); returns the worst err/bound."""
    assert got.shape == want.shape and got.dtype == np.float32, (got.shape, want.shape, got.dtype)
    bound = 2 * (k + 2) * U * scale + (24 * UH * scale if f16 else 0.0)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), -1))), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} outside the bound; worst at {i}: got {got[i]!r}, "
                             f"want {want[i]!r}, err {err[i]:.3g} > bound {bound[i]:.3g}")
    return float((err / np.maximum(bound, 1e-300)).max())
