"""Where this Python runs, and how code written once as a coroutine runs where nothing may wait.

`IN_PYODIDE` guards the page-only imports. `sync_wait` is gpuport's one sync/async mechanism (as wgpu-py's
`sync_wait`): the logic is written once as a coroutine; natively every await in it completes at once
(wgpu-py and NumPy calls are synchronous), so driving it without an event loop gives the blocking twin. `run_now`
is its first half: it drives a coroutine up to its first real suspension and hands back the rest (`Waiting`), which
a page that can suspend a call's stack (Pyodide's run_sync, on JSPI) finishes while the browser settles the promise.
`within` bounds a page's wait on a browser promise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Awaitable, Generator, Generic, TypeVar

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


class Waiting(Generic[T]):
    """A coroutine `run_now` stepped until it really suspended on `pending` (the future of a JS promise, a timer):
    awaiting this object finishes it under whichever event loop task awaits it; `close()` abandons it."""

    def __init__(self, steps: Generator[Any, None, T], pending: Any) -> None:
        self._steps, self._pending = steps, pending

    def __await__(self) -> Generator[Any, None, T]:
        pending = self._pending
        while True:
            thrown = None
            try:
                yield pending   # the awaiting task resumes us once the future is done, as it would the coroutine
            except BaseException as exc:   # cancelled, or closed: the coroutine decides what happens
                thrown = exc
            try:
                pending = self._steps.send(None) if thrown is None else self._steps.throw(thrown)
            except StopIteration as done:
                return done.value

    def close(self) -> None:
        self._steps.close()


def run_now(awaitable: Awaitable[T]) -> "T | Waiting[T]":
    """Drive `awaitable` without an event loop: its value if it completes (a bare yield, asyncio.sleep(0), is passed
    over), else a `Waiting` holding the rest from its first real suspension (a JS promise in a page, a thread)."""
    steps: Any = awaitable.__await__()
    try:
        while True:
            pending = steps.send(None)
            if pending is not None:
                return Waiting(steps, pending)
    except StopIteration as done:
        return done.value


def sync_wait(awaitable: Awaitable[T], what: str = "this call") -> T:
    """Run `awaitable` to completion now, without an event loop. Awaiting anything that really suspends raises
    UnsupportedFeature: the caller must `await` instead."""
    result = run_now(awaitable)
    if isinstance(result, Waiting):
        result.close()
        raise UnsupportedFeature(f"{what} cannot complete synchronously here: await it instead")
    return result


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """`awaitable`'s result, or NoAnswer naming `what` when it has not settled in `seconds`. For a page's waits on the
    browser (it runs on the page's event loop): a promise the browser never settles fails instead of hanging the
    page's start-up."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise NoAnswer(f"{what}: no answer in {seconds:g} s") from None
