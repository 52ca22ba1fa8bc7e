"""The backend boundary: one protocol (base.Backend), its WebGPU implementation (gpu.GPUBackend) for
native wgpu-py (native.py) and the page (browser.py, with its page I/O in pageio.py), NumPy (cpu.py), and
the one place a backend is chosen (auto.py)."""

from .auto import available, host_device, request_device
from .base import DTYPES, Backend, Pipeline

__all__ = ["DTYPES", "Backend", "Pipeline", "available", "host_device", "request_device"]
