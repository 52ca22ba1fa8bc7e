"""The page's WebAssembly SIMD128 kernels (hostkernels/*.c), as drop-in replacements for kernels.py's NumPy
references: same signatures, float32 NumPy arrays in and out, one call into WebAssembly per op. Every op
placed on the host in a page reaches them through hostops.KERNELS (the one place that chooses them).

Page-only: the kernels live in Pyodide's own linear memory (web/wasm.js links them there and registers
the JS module `gpuport_wasm`), so they read and write NumPy buffers in place, by address. Anywhere else
(natively, or a page whose .wasm is missing or whose browser lacks SIMD128) `available()` is False and
`reason()` says why; calling an op then raises BackendUnavailable. `variant()` names the build the page
linked: relaxed SIMD (fused multiply-adds) where the engine has it, plain SIMD128 elsewhere. Natively the same sources run as a
shared library instead (native_kernels). The ops, the packed-weight cache and `measure` are simd_ops'.
"""

from __future__ import annotations

from typing import Any


from .host_abi import ABI
from .simd_ops import REFERENCES, SimdKernels, linked

try:  # registered by web/host.js in the page; absent natively
    import gpuport_wasm as _js  # type: ignore[import-not-found]
except ImportError:
    _js = None


def _link() -> tuple[Any, str]:
    if _js is None:
        return None, ("the gpuport_wasm JS module is not registered: the WebAssembly kernels exist only in a "
                      "gpuport page (web/host.js loads them)")
    if not _js.available:
        return None, str(_js.reason)
    return linked(_js.kernels, str(_js.url))


ENGINE = SimdKernels(*_link(), name="wasm")


def variant() -> str | None:
    """Which build of the kernels is linked: "relaxed-simd" (fused multiply-adds; Chromium, Firefox) or
    "simd128"; None when none is."""
    return str(_js.variant) if ENGINE.available() else None


def note() -> str:
    """What the loader noted on the way (a preferred build it could not use), "" when nothing."""
    return str(_js.reason) if ENGINE.available() else ""

# The module's API is the engine's (simd_ops); _K and _PACKED, the linked kernels and the packed-weight
# cache, are for tests.
_K, _PACKED, OPS = ENGINE.lib, ENGINE.packed, ENGINE.ops
matmul, gelu, softmax = ENGINE.matmul, ENGINE.gelu, ENGINE.softmax
layer_norm, attention = ENGINE.layer_norm, ENGINE.attention
available, reason, clear_cache, measure = ENGINE.available, ENGINE.reason, ENGINE.clear_cache, ENGINE.measure


__all__ = ["ABI", "ENGINE", "OPS", "REFERENCES", "attention", "available", "clear_cache", "gelu", "layer_norm",
           "matmul", "measure", "note", "reason", "softmax", "variant"]
