"""The page's WebAssembly SIMD128 kernels (hostkernels/*.c), as drop-in replacements for kernels.py's NumPy
references: same signatures, float32 NumPy arrays in and out, one call into WebAssembly per op. Every op
placed on the host in a page reaches them through hostops.KERNELS (the one place that chooses them).

Page-only: the kernels live in Pyodide's own linear memory (web/wasm.js links them there when
gpuport.open() registers the JS half, and hands them to `attach`), so they read and write NumPy buffers in
place, by address. Anywhere else
(natively, or a page whose .wasm is missing or whose browser lacks SIMD128) `available()` is False and
`reason()` says why; calling an op then raises BackendUnavailable. `variant()` names the build the page
linked: relaxed SIMD (fused multiply-adds) where the engine has it, plain SIMD128 elsewhere. Natively the same sources run as a
shared library instead (native_kernels). The ops, the packed-weight cache and `measure` are simd_ops'.
"""

from __future__ import annotations

from typing import Any

from .host_abi import ABI
from .simd_ops import REFERENCES, SimdKernels, linked

_js: Any = None   # web/wasm.js's record of what it linked: {available, reason, url, variant, kernels}
_NOT_LINKED = ("not linked: the WebAssembly kernels exist only in a page, where gpuport.open() links them "
               "(backends/jsmodules.py)")

ENGINE = SimdKernels(None, _NOT_LINKED, name="wasm")


def attached() -> bool:
    """Whether the page's loader has reported (linked kernels or why not)."""
    return _js is not None


def attach(record: Any) -> None:
    """Use what web/wasm.js's loadWasmKernels linked (or its reason for linking nothing)."""
    global _js
    _js = record
    ENGINE.lib, ENGINE.why = linked(record.kernels, str(record.url)) if record.available else (None, str(record.reason))
    ENGINE.clear_cache()


def variant() -> str | None:
    """Which build of the kernels is linked: "relaxed-simd" (fused multiply-adds; Chromium, Firefox) or
    "simd128"; None when none is."""
    return str(_js.variant) if ENGINE.available() else None


def note() -> str:
    """What the loader noted on the way (a preferred build it could not use), "" when nothing."""
    return str(_js.reason) if ENGINE.available() else ""

# The module's API is the engine's (simd_ops); _PACKED, the packed-weight cache, is for tests.
_PACKED, OPS = ENGINE.packed, ENGINE.ops
matmul, gelu, quick_gelu, softmax = ENGINE.matmul, ENGINE.gelu, ENGINE.quick_gelu, ENGINE.softmax
layer_norm, attention = ENGINE.layer_norm, ENGINE.attention
q_matmul, llama_block, llama_layers = ENGINE.q_matmul, ENGINE.llama_block, ENGINE.llama_layers
available, reason, clear_cache, measure = ENGINE.available, ENGINE.reason, ENGINE.clear_cache, ENGINE.measure


__all__ = ["ABI", "ENGINE", "OPS", "REFERENCES", "attach", "attached", "attention", "available", "clear_cache", "gelu", "layer_norm", "llama_block", "llama_layers",
           "matmul", "measure", "note", "q_matmul", "quick_gelu", "reason", "softmax", "variant"]
