"""Where this Python runs, and how code written once as a coroutine runs where nothing may wait.

`IN_PYODIDE` guards the page-only imports. `sync_wait` is gpuport's one sync/async mechanism (as wgpu-py's
`sync_wait`): the logic is written once as a coroutine; natively every await in it completes at once
(wgpu-py and NumPy calls are synchronous), so driving it without an event loop gives the blocking twin.
`within` bounds a page's wait on a browser promise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Awaitable, TypeVar

from .errors import NoAnswer, UnsupportedFeature

IN_PYODIDE = sys.platform == "emscripten"
try:
    import resource
except ImportError:   # Windows, Pyodide
    resource = None

T = TypeVar("T")


def peak_rss_bytes() -> int | None:
    """The most memory this process has held resident, natively (None where the OS does not say, and in a page:
    there backends.jsmodules.heap_bytes() gives Pyodide's WebAssembly memory)."""
    if resource is None or IN_PYODIDE:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)   # bytes on macOS, KiB on Linux


def sync_wait(awaitable: Awaitable[T], what: str = "this call") -> T:
    """Run `awaitable` to completion now, without an event loop. A bare yield (asyncio.sleep(0)) is
    passed over; awaiting anything that really suspends (a JS promise in a page, a thread) raises
    UnsupportedFeature: the caller must `await` instead."""
    steps: Any = awaitable.__await__()
    try:
        while True:
            if steps.send(None) is not None:
                steps.close()
                raise UnsupportedFeature(f"{what} cannot complete synchronously here: await it instead")
    except StopIteration as done:
        return done.value


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """`awaitable`'s result, or NoAnswer naming `what` when it has not settled in `seconds`. For a page's waits on the
    browser (it runs on the page's event loop): a promise the browser never settles fails instead of hanging the
    page's start-up."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise NoAnswer(f"{what}: no answer in {seconds:g} s") from None
