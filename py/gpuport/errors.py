"""Typed errors: every backend raises these, so a page and a native run fail the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass


class GpuportError(Exception):
    """Base class of every error gpuport raises on purpose."""


class BackendUnavailable(GpuportError):
    """The requested backend cannot run here (no adapter, no wgpu, not in a browser)."""


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


class OutOfMemory(GpuportError):
    """The device could not allocate what was asked."""


class DeviceLost(GpuportError):
    """The GPU device was lost (driver reset, destroy(), tab in background too long)."""


class GpuTimeout(GpuportError):
    """A GPU operation (a readback, a map) did not finish in time: transient, retried with backoff."""


class UnsupportedFeature(GpuportError):
    """The backend or tier lacks a feature this call needs (shader-f16, custom WGSL on CPU...)."""


class LimitExceeded(GpuportError, ValueError):
    """A tensor or dispatch goes beyond a device limit; names the limit and its value."""

    def __init__(self, limit: str, value: int, requested: int, what: str) -> None:
        self.limit = limit
        self.value = value
        self.requested = requested
        super().__init__(f"{what} needs {requested:,} but the device limit {limit} is {value:,}")


class LoadError(GpuportError):
    """A model or file could not be loaded intact (names the URL and the chunk)."""


__all__ = [
    "BackendUnavailable", "CompileMessage", "DeviceLost", "GpuTimeout", "GpuValidationError", "GpuportError",
    "LimitExceeded", "LoadError", "OutOfMemory", "RuntimeClosed", "ShaderCompileError",
    "UnsupportedFeature",
]
