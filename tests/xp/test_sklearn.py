"""scikit-learn 1.6 on gpuport.xp arrays (array_api_dispatch=True), against the same estimators on NumPy float32:
PCA, LinearDiscriminantAnalysis and Ridge(solver="svd") fit and transform/predict the digits data set (1797 x 64,
values 0-16, shipped with scikit-learn); MinMaxScaler, KernelCenterer and pairwise kernels and metrics too.

Tolerance: both sides compute in float32 and differ only in the order of their sums (the device's tree reductions
and tiled products against NumPy's pairwise sums and BLAS): each mean, covariance or product sums at most 1797 terms,
so each errs by at most 1797 u = 1.1e-4 (u = 2**-24) of the sum of its terms' magnitudes; the SVD runs on the host
(NumPy's LAPACK, the same on both sides) on inputs that close. So results agree within 2e-4 of their scale (the
largest magnitude of the reference), components up to the SVD's sign, and LDA's class predictions all but where two
classes tie within that tolerance."""

from __future__ import annotations

import gpuport as gp
import numpy as np
import pytest
import sklearn
from gpuport import xp
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import Ridge
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
from sklearn.metrics.pairwise import (chi2_kernel, cosine_similarity, linear_kernel, polynomial_kernel, rbf_kernel,
                                      sigmoid_kernel)
from sklearn.preprocessing import KernelCenterer, MinMaxScaler

X, Y = load_digits(return_X_y=True)
X = X.astype(np.float32)
RTOL = 2e-4


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= RTOL * np.abs(want).max(), f"{what}: max error {err:.3g} beyond {RTOL} of {np.abs(want).max():.3g}"


def _devices_ran_the_products(rt, before):
    """On the GPU the products ran there (gpuport's matmul), and nothing but the SVD's factorisation on the host."""
    ran = rt.info()["ran"]
    if rt.backend != "webgpu":
        return
    grown = ran["matmul"]["webgpu"] - before.get("matmul", {}).get("webgpu", 0)
    assert grown >= 1, ran
    on_host = {k for k, v in ran.items() if v.get("cpu", 0) > before.get(k, {}).get("cpu", 0)}
    assert on_host <= {"xp.linalg.svd"}, on_host


@pytest.mark.parametrize("estimator", ["pca", "lda", "ridge"])
def test_estimators_fit_gpuport_arrays_like_numpy(rt, estimator):
    make = {"pca": lambda: PCA(n_components=8, svd_solver="full"),
            "lda": lambda: LinearDiscriminantAnalysis(solver="svd"),
            "ridge": lambda: Ridge(alpha=1.0, solver="svd")}[estimator]
    target = {"pca": (), "lda": (Y,), "ridge": (Y.astype(np.float32),)}[estimator]
    ref = make().fit(X, *target)
    before = rt.info()["ran"]
    with sklearn.config_context(array_api_dispatch=True):
        est = make().fit(xp.asarray(X), *[xp.asarray(t.astype(np.int32) if t.dtype.kind == "i" else t) for t in target])
        if estimator == "ridge":
            _close(est.predict(xp.asarray(X)), ref.predict(X), "ridge predictions")
            _close(est.coef_, ref.coef_, "ridge coefficients")
        else:
            got, want = np.asarray(est.transform(xp.asarray(X))), ref.transform(X)
            _close(np.abs(got), np.abs(want), f"{estimator} transform (up to the SVD's signs)")
        if estimator == "pca":
            _close(est.explained_variance_ratio_, ref.explained_variance_ratio_, "explained variance ratio")
            _close(np.abs(np.asarray(est.components_)), np.abs(ref.components_), "components")
        if estimator == "lda":
            agree = (np.asarray(est.predict(xp.asarray(X))) == ref.predict(X)).mean()
            assert agree >= 0.999, agree
    _devices_ran_the_products(rt, before)


def test_transformers_kernels_and_metrics(rt):
    part = X[:200]
    a = xp.asarray(part)
    with sklearn.config_context(array_api_dispatch=True):
        _close(MinMaxScaler().fit_transform(a), MinMaxScaler().fit_transform(part), "MinMaxScaler")
        k = part[:50, :50]
        _close(KernelCenterer().fit_transform(xp.asarray(k)), KernelCenterer().fit_transform(k), "KernelCenterer")
        for fn, kw in ((cosine_similarity, {}), (linear_kernel, {}), (polynomial_kernel, {"degree": 2, "gamma": 1e-3}),
                       (sigmoid_kernel, {"gamma": 1e-3}), (chi2_kernel, {"gamma": 0.01})):
            _close(fn(a[:40], a[:30], **kw), fn(part[:40], part[:30], **kw), fn.__name__)
        assert abs(float(r2_score(a[:, 10], a[:, 11])) - r2_score(part[:, 10], part[:, 11])) < 1e-5
        assert abs(float(mean_squared_error(a[:, 10], a[:, 11])) - mean_squared_error(part[:, 10], part[:, 11])) < 1e-4
        y = xp.asarray(Y[:200].astype(np.int32))
        assert abs(float(accuracy_score(y, xp.flip(y))) - accuracy_score(Y[:200], Y[:200][::-1])) < 1e-7
        # scikit-learn 1.6 computes float32 distances in float64 chunks (_max_precision_float_dtype): a typed error
        with pytest.raises(gp.UnsupportedDType, match="float64"):
            rbf_kernel(a[:4], a[:3])
