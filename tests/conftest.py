import faulthandler
import os
import tempfile
from pathlib import Path

import pytest

# Pipeline manifests and selector history go to a per-run directory, not the user's ~/.cache.
os.environ.setdefault("GPUPORT_CACHE", tempfile.mkdtemp(prefix="gpuport-test-cache-"))

CRASH_LOG = Path(__file__).resolve().parent.parent / ".cache" / "crash.txt"


@pytest.hookimpl(trylast=True)   # after pytest's own faulthandler, which would send the dump to stderr
def pytest_configure(config: pytest.Config) -> None:
    """A crash in native code (a driver's abort) ends pytest before it can say which test ran. The dump goes to a
    file whose head, the crashing thread's innermost frames, `make test` prints last: CI keeps only the tail."""
    CRASH_LOG.parent.mkdir(exist_ok=True)
    faulthandler.enable(CRASH_LOG.open("w"), all_threads=True)
