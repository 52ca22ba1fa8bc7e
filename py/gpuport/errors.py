"""Typed errors: every backend raises these, so a page and a native run fail the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass


class GpuportError(Exception):
    """Base class of every error gpuport raises on purpose."""


class BackendUnavailable(GpuportError):
    """The requested backend cannot run here (no adapter, no wgpu, not in a browser)."""


class JsHalfMismatch(BackendUnavailable):
    """A JS module the page registered for gpuport (the bridge, IndexedDB, WebAssembly loader) is from
    another gpuport release than the installed wheel."""


class RuntimeClosed(GpuportError):
    """The runtime (or the tensor's runtime) was closed; open a new one."""


@dataclass(frozen=True)
class CompileMessage:
    """One message of the shader compiler, positioned in the WGSL source (1-based)."""

    line: int
    column: int
    text: str
    kind: str = "error"


_LOCATION = re.compile(r":(\d+):(\d+)")


class ShaderCompileError(GpuportError):
    """WGSL did not compile. Carries line, column and the compiler's full text."""

    def __init__(self, label: str, compiler_text: str, messages: list[CompileMessage] | None = None,
                 source: str | None = None) -> None:
        self.label = label
        self.compiler_text = compiler_text
        self.messages = list(messages or [])
        if not self.messages:
            # naga puts the position in its text as "wgsl:LINE:COL"; Tint gives structured messages.
            m = _LOCATION.search(compiler_text)
            if m:
                self.messages.append(CompileMessage(int(m.group(1)), int(m.group(2)), compiler_text))
        first = self.messages[0] if self.messages else None
        self.line = first.line if first else None
        self.column = first.column if first else None
        where = f" at line {self.line}:{self.column}" if first else ""
        snippet = ""
        if first and source:
            lines = source.splitlines()
            if 0 < first.line <= len(lines):
                snippet = f"\n  {first.line} | {lines[first.line - 1]}"
        super().__init__(f"WGSL compile error in {label!r}{where}: {compiler_text.strip()}{snippet}")


class GpuValidationError(GpuportError):
    """The GPU rejected a call (bad binding, bad size, bad pipeline)."""


class BatchFailed(GpuValidationError):
    """A tensor's values were never computed: the batch of dispatches that would have written them was
    rejected by the device (names that failure). Reading it, or using it in another op, raises this."""


class OutOfMemory(GpuportError):
    """The device could not allocate what was asked."""


class DeviceLost(GpuportError):
    """The GPU device was lost (driver reset, destroy(), tab in background too long)."""


class GpuTimeout(GpuportError):
    """A GPU operation (a readback, a map) did not finish in time: transient, retried with backoff."""


class NoAnswer(GpuportError):
    """The browser never settled a request gpuport waits on in a page (an adapter, a storage read, a module import)
    within its deadline; names the request and the wait."""


class UnsupportedFeature(GpuportError):
    """The backend or tier lacks a feature this call needs (shader-f16, custom WGSL on CPU...)."""


class UnsupportedDType(UnsupportedFeature, TypeError):
    """An array of a data type the runtime cannot hold: WebGPU has no 64-bit or complex types (float64, int64,
    uint64, complex64, complex128), and float16 needs an adapter with shader-f16. Names the dtype."""

    def __init__(self, dtype: object, why: str) -> None:
        self.dtype = str(dtype)
        super().__init__(f"{self.dtype} arrays cannot be held here: {why}")


class SyncReadUnavailable(UnsupportedFeature):
    """A synchronous read (float(x), bool(x), x.item(), np.asarray(x), a data-dependent shape, tensor.numpy()) of
    values that live only on a GPU that cannot be waited on here: a page without WebAssembly JSPI, or Python entered
    through a synchronous call (pyodide.ffi.can_run_sync() is False). The message says why and names its async
    twin, `await xp.read(x)` (`await tensor.read()`)."""


class LimitExceeded(GpuportError, ValueError):
    """A tensor or dispatch goes beyond a device limit; names the limit and its value."""

    def __init__(self, limit: str, value: int, requested: int, what: str) -> None:
        self.limit = limit
        self.value = value
        self.requested = requested
        super().__init__(f"{what} needs {requested:,} but the device limit {limit} is {value:,}")


class ContextLengthExceeded(GpuportError, ValueError):
    """A prompt plus the tokens to generate exceed the model's context length (or the cache's capacity)."""

    def __init__(self, limit: int, requested: int, what: str) -> None:
        super().__init__(f"{what}: {requested} positions exceed the context length of {limit}")
        self.limit, self.requested = limit, requested


class AudioError(GpuportError, ValueError):
    """Audio that cannot be transcribed as given (integer samples, NaN or Inf, a file that is not WAV...)."""


class LoadError(GpuportError):
    """A model or file could not be loaded intact (names the URL and the chunk)."""


class ReferenceFailed(GpuportError):
    """A user kernel's NumPy reference (`rt.kernel(..., reference=fn)`) raised, returned a value instead
    of writing its outputs in place, or cannot take the arguments a dispatch gives it; names the kernel."""


class ReferenceMismatch(GpuportError, AssertionError):
    """`check=True`: the GPU and a user kernel's reference disagree beyond the tolerance. Names the kernel,
    the binding, the largest absolute difference, where it occurs, and the tolerance."""

    def __init__(self, kernel: str, binding: int, name: str, index: tuple[int, ...], gpu: float, reference: float,
                 max_abs: float, bad: int, size: int, rtol: float, atol: float) -> None:
        self.kernel, self.binding, self.name, self.index = kernel, binding, name, index
        self.gpu, self.reference, self.max_abs = gpu, reference, max_abs
        self.bad, self.size, self.rtol, self.atol = bad, size, rtol, atol
        super().__init__(f"kernel {kernel!r}: @binding({binding}) {name}: the GPU and the reference disagree at "
                         f"{bad} of {size} values; largest abs difference {max_abs:.6g} at index {index} (GPU "
                         f"{gpu!r}, reference {reference!r}); tolerance |gpu - reference| <= atol + rtol*|reference| "
                         f"with rtol={rtol:g}, atol={atol:g}")


class TensorLost(DeviceLost):
    """This tensor's values died with the device and have no host copy or replayable lineage."""


# -- classification: whatever a backend raised, as one of the errors above ---------------------------

_LOST_WORDS = ("device is lost", "device lost", "devicelost", "device was lost", "parent device is lost",
               "device has been lost", "instance dropped", "is destroyed", "device destroyed")
_OOM_WORDS = ("out of memory", "outofmemory", "out-of-memory", "allocation failed", "not enough memory",
              "failed to allocate")
_TIMEOUT_WORDS = ("timed out", "timeout", "time out")
_UNSUPPORTED_WORDS = ("not supported", "unsupported", "feature", "not enabled")


def classify(exc: BaseException, what: str = "") -> Exception:
    """The typed gpuport error for any failure a backend raised (typed errors pass through unchanged,
    except a validation error whose text says the device is lost, which becomes DeviceLost)."""
    text = str(exc)
    low = text.lower()
    where = f"{what}: " if what else ""
    if isinstance(exc, (DeviceLost, OutOfMemory, GpuTimeout, ShaderCompileError, UnsupportedFeature)):
        return exc
    if any(w in low for w in _LOST_WORDS):
        return DeviceLost(f"{where}the GPU device was lost: {_last_lines(text)}")
    if type(exc).__name__ == "GPUOutOfMemoryError" or any(w in low for w in _OOM_WORDS):
        return OutOfMemory(f"{where}{_last_lines(text)}")
    if isinstance(exc, TimeoutError) or any(w in low for w in _TIMEOUT_WORDS):
        return GpuTimeout(f"{where}{_last_lines(text)}")
    if isinstance(exc, GpuportError):
        return exc
    if type(exc).__name__ in ("GPUValidationError", "GPUPipelineError", "GPUInternalError"):
        if "shader" in low or "wgsl" in low:
            return ShaderCompileError(what or "shader", text)
        if any(w in low for w in _UNSUPPORTED_WORDS) and "missing" in low:
            return UnsupportedFeature(f"{where}{text}")
        return GpuValidationError(f"{where}{text}")
    return exc if isinstance(exc, Exception) else GpuportError(text)


def _last_lines(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-2:]) if lines else text


__all__ = [
    "AudioError", "BackendUnavailable", "BatchFailed", "CompileMessage", "DeviceLost", "GpuTimeout", "GpuValidationError", "GpuportError",
    "JsHalfMismatch", "LimitExceeded", "LoadError", "NoAnswer", "OutOfMemory", "ReferenceFailed", "ReferenceMismatch", "RuntimeClosed", "ShaderCompileError", "SyncReadUnavailable", "TensorLost",
    "UnsupportedDType", "UnsupportedFeature", "classify",
]
