import os
import tempfile

import pytest
from crash_log import enable

# The coverage matrix (docs/testing.md): the parity tests' proofs, checked with --require-coverage.
pytest_plugins = ["coverage_plugin"]

# Pipeline manifests and selector history go to a per-run directory, not the user's ~/.cache.
os.environ.setdefault("GPUPORT_CACHE", tempfile.mkdtemp(prefix="gpuport-test-cache-"))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    enable("crash.txt")
