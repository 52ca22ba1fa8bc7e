"""Which device backs a runtime: the one place a backend is chosen and opened (as wgpu-py's backends/auto.py).

`open`, `open_sync` and recovery's reopen all come through `request_device`; natively it completes
without waiting (sync_wait drives it), in a page it awaits the browser's device.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..platform import IN_PYODIDE
from .base import Backend
from .cpu import CPUBackend

if TYPE_CHECKING:
    from .io import RecordStore


async def prepare_page() -> "asyncio.Task[None] | None":
    """In a page, register gpuport's JS half from the installed wheel (once; any Pyodide, any host) and begin
    linking the host kernels: the task to await, which runs beside the device request; nothing natively (None).
    Raises JsHalfMismatch or BackendUnavailable (see jsmodules); the task, ValueError for a bad kernels choice."""
    if not IN_PYODIDE:
        return None
    from .jsmodules import link_kernels, register  # page-only: imports js
    await register()
    return asyncio.ensure_future(link_kernels())


async def request_device(limits: str = "default", adapters: "RecordStore | None" = None) -> Backend:
    """A WebGPU device: the browser's in a page, wgpu-py's natively. Raises BackendUnavailable.
    `adapters`: natively, where the adapter's identity is stored there, the device opens on its first use
    (not in a page: its device calls cannot wait for one to open)."""
    if IN_PYODIDE:
        from .browser import BrowserBackend  # page-only: imports js
        return await BrowserBackend.create(limits)
    from .native import NativeBackend  # natively only: a page's start never imports wgpu-py's half
    return await NativeBackend.create(limits, adapters)


def host_device() -> Backend:
    """NumPy: the last tier."""
    return CPUBackend()


def available() -> list[str]:
    """Backends that can be opened in this process, best first."""
    if IN_PYODIDE:
        return ["webgpu", "cpu"]
    from .native import wgpu
    return (["webgpu"] if wgpu is not None else []) + ["cpu"]


__all__ = ["available", "host_device", "prepare_page", "request_device"]
