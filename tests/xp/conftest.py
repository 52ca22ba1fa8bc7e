"""The array namespace's tests run once per backend it runs on natively: the cpu tier (NumPy itself) and wgpu-py on
lavapipe; each test makes its runtime the namespace's default. NumPy is the oracle throughout."""

from __future__ import annotations

import os

# scikit-learn's array API dispatch refuses to start unless SciPy's array API support is on (test_sklearn.py)
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import gpuport as gp  # noqa: E402
import pytest  # noqa: E402
from gpuport import xp  # noqa: E402

from oracle import expect_flushing, flushes_subnormals  # noqa: E402

BACKENDS = ("cpu", "webgpu")
_RUNTIMES: dict[str, gp.Runtime] = {}
_FLUSHES: dict[str, bool] = {}


def runtime(backend: str) -> gp.Runtime:
    """One runtime per backend for the session (opening lavapipe costs a second)."""
    if backend not in _RUNTIMES or _RUNTIMES[backend].closed:
        _RUNTIMES[backend] = gp.open_sync(backend=backend)
        _FLUSHES[backend] = flushes_subnormals(_RUNTIMES[backend])
    return _RUNTIMES[backend]


@pytest.fixture(params=BACKENDS)
def rt(request):
    """The backend's runtime, the namespace's default for the test."""
    r = runtime(request.param)
    xp.use(r)
    expect_flushing(_FLUSHES[request.param])
    return r


def pytest_sessionfinish(session, exitstatus):
    for r in _RUNTIMES.values():
        r.close()
