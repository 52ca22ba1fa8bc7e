"""Reading values back, once, in one place: every synchronous read of the namespace (float(x), int(x), bool(x),
x.item(), np.asarray(x), a data-dependent shape) goes through `wait`, and every one has an async twin built on the
same coroutine (`await xp.read(x)`).

Natively a read completes at once (wgpu-py maps synchronously), so `wait` drives the coroutine to its end. In a
page a read of GPU values awaits the browser: where Pyodide can suspend the call's stack (JSPI, pyodide.ffi.run_sync)
`wait` does, and the read returns as natively; elsewhere it raises SyncReadUnavailable naming `await xp.read(x)`.
Values the host already holds are read without awaiting anything, in every page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

import numpy as np

from ..errors import SyncReadUnavailable
from ..platform import Waiting, run_now, sync_wait
from .device import download
from .graph import View

if TYPE_CHECKING:
    from ..runtime import Runtime

T = TypeVar("T")


def wait(make: Callable[[bool], Awaitable[T]], rt: "Runtime", what: str) -> T:
    """Run a read to its end synchronously: `make(blocking)` is its coroutine (blocking: driven without an event
    loop, so a retry sleeps rather than awaits). The one synchronous read of gpuport.xp."""
    device = rt.device
    if device.can_block:
        return sync_wait(make(True), what)
    result = run_now(make(False))   # a page: host-held values need no await, and complete here
    if not isinstance(result, Waiting):
        return result
    why = device.cannot_wait()
    if why is not None:
        result.close()
        raise SyncReadUnavailable(f"{what} reads values that live on the GPU, and {why}. Instead, "
                                  "`await xp.read(x)` (the async twin of every synchronous read) gives them as a "
                                  "NumPy array")
    return device.wait(result)


async def view_values(view: View, blocking: bool) -> np.ndarray:
    """A view's values as a read-only NumPy view (its store read back first where only the device holds it)."""
    await download(view.store, blocking)
    return view.host_array()
