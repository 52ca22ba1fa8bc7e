"""Where a pytest process's crash dump goes: a crash in native code (a driver's abort) ends pytest before it can say
which test ran, and CI keeps only the tail of the output. `make test` prints the head of the file (the crashing
thread's innermost frames) when a pytest process dies."""

import faulthandler
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def enable(default: str) -> None:
    """Dump every thread's frames to $GPUPORT_CRASH_LOG (else .cache/<default>) on a fatal signal. Call it from a
    `trylast` pytest_configure: pytest's own faulthandler, set up before, would send the dump to stderr."""
    path = Path(os.environ.get("GPUPORT_CRASH_LOG") or ROOT / ".cache" / default)
    path.parent.mkdir(parents=True, exist_ok=True)
    faulthandler.enable(path.open("w"), all_threads=True)
