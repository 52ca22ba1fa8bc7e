import atexit
import os
import shutil
import tempfile

import pytest
from crash_log import enable

# The coverage matrix (docs/testing.md): the parity tests' proofs, checked with --require-coverage.
pytest_plugins = ["coverage_plugin"]

# Pipeline manifests and selector history go to a per-run directory, not the user's ~/.cache; xdist's workers
# inherit the variable, and the process that made the directory removes it.
if "GPUPORT_CACHE" not in os.environ:
    os.environ["GPUPORT_CACHE"] = tempfile.mkdtemp(prefix="gpuport-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GPUPORT_CACHE"], ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    enable("crash.txt")
