"""The backends: the platform a runtime runs on. One protocol (base.Backend) with its WebGPU implementation (gpu.py)
for wgpu-py natively (native.py) and the page's WebGPU (browser.py), NumPy (cpu.py), what a device offers and the
tier that follows (capabilities.py), the page's I/O (pageio.py) and JS half (jsmodules.py), and the one place a
backend is chosen (auto.py). The I/O contracts the page implements are in io.py.

Layer: above ops/; imports ops/, tensor/, host/, formats/, the floor. The only layer that imports js/pyodide.
"""

from .auto import available, host_device, request_device
from .base import DTYPES, Backend, Pipeline

__all__ = ["DTYPES", "Backend", "Pipeline", "available", "host_device", "request_device"]
