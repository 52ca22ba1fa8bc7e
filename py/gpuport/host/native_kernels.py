"""gpuport's SIMD kernels natively: hostkernels/*.c (the page's WebAssembly kernels) built for this machine as
`.cache/native/libgpuport_simd.so` (`make setup`; the sources are written on clang's generic vectors, so
here they run the CPU's full width) and called through ctypes on NumPy buffers in place. Same API as
wasm_kernels; hostops routes host ops here where they win (measured by bench/host_kernels.py).

The library is found at GPUPORT_NATIVE_KERNELS (a path, or "off" to leave it unloaded), else beside the
checkout this package runs from. Without it (an installed wheel, a checkout where `make setup` has not
run, Pyodide) `available()` is False and `reason()` says why; importing never fails, and the host ops
stay NumPy's.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from ..platform import IN_PYODIDE
from .host_abi import ABI, EXPORTS
from .simd_ops import REFERENCES, SimdKernels, linked

ENV = "GPUPORT_NATIVE_KERNELS"
LIBRARY = Path(".cache") / "native" / "libgpuport_simd.so"   # relative to the checkout, made by `make setup`

# host_abi's kinds as ctypes: pointers are NumPy buffers' addresses, passed as plain integers.
_CTYPES: dict[str, Any] = {"void": None, "int": ctypes.c_int, "float": ctypes.c_float, "pointer": ctypes.c_void_p}


def library_path() -> Path:
    """Where the library is looked for: $GPUPORT_NATIVE_KERNELS, else the checkout's .cache/native/."""
    setting = os.environ.get(ENV, "")
    if setting and setting != "off":
        return Path(setting)
    return Path(__file__).resolve().parents[3] / LIBRARY


def _load() -> tuple[Any, str]:
    if IN_PYODIDE:
        return None, "in a page the host kernels are the WebAssembly build (wasm_kernels)"
    if os.environ.get(ENV) == "off":
        return None, f"{ENV}=off"
    path = library_path()
    if not path.is_file():
        return None, f"{path} is missing: `make setup` builds it (make {LIBRARY})"
    try:
        lib = ctypes.CDLL(str(path))
        for export in EXPORTS:
            fn = getattr(lib, export.name)
            fn.restype, fn.argtypes = _CTYPES[export.result_kind], [_CTYPES[p.kind] for p in export.params]
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}; rebuild it with `make {LIBRARY}`"
    return linked(lib, str(path))


ENGINE = SimdKernels(*_load(), name="native-simd")
# The module's API is the engine's (simd_ops); _K and _PACKED, the linked kernels and the packed-weight
# cache, are for tests.
_K, _PACKED, OPS = ENGINE.lib, ENGINE.packed, ENGINE.ops
matmul, gelu, quick_gelu, softmax = ENGINE.matmul, ENGINE.gelu, ENGINE.quick_gelu, ENGINE.softmax
layer_norm, attention = ENGINE.layer_norm, ENGINE.attention
q_matmul, llama_block, llama_layers = ENGINE.q_matmul, ENGINE.llama_block, ENGINE.llama_layers
available, reason, clear_cache, measure = ENGINE.available, ENGINE.reason, ENGINE.clear_cache, ENGINE.measure


__all__ = ["ABI", "ENGINE", "ENV", "LIBRARY", "OPS", "REFERENCES", "attention", "available", "clear_cache", "gelu",
           "layer_norm", "llama_block", "llama_layers", "library_path", "matmul", "measure", "q_matmul", "quick_gelu", "reason", "softmax"]
