"""The backend boundary: one protocol that declares everything the runtime and its collaborators use.

`cpu` (NumPy), `native` (wgpu-py) and `browser` (Pyodide) implement it; handles are opaque to everything
but their backend. The cpu backend implements the pipeline members as no-ops, so callers never ask
which backend they hold: they ask what it can do (`is_host`, `can_block`, `cannot_wait()`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

import numpy as np

from ..errors import UnsupportedFeature
from ..ops.kernels import Launch
from ..ops.pipelines import PipelineSpec
from ..platform import Waiting

DTYPES = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.uint32))
T = TypeVar("T")


class PipelineObserver(Protocol):
    """Told of every pipeline a device creates, drops or dispatches (the runtime's PipelineCache)."""

    def compiled(self, spec: PipelineSpec, ms: float) -> None: ...

    def failed(self, label: str) -> None: ...

    def dispatched(self, label: str) -> None: ...


@dataclass
class Pipeline:
    """A compiled pipeline of one device, and the spec it was made from."""

    raw: Any
    spec: PipelineSpec
    compile_ms: float = 0.0

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def bindings(self) -> tuple[str, ...] | None:
        return self.spec.bindings


OnDone = Callable[[PipelineSpec, float, Exception | None], None]
Pause = Callable[[], Awaitable[Any]]


class Backend(ABC):
    """What every backend offers. `is_host`: its buffers are host arrays (NumPy: ops run their references
    directly). `can_block`: reads (and opening a new device) can complete synchronously here."""

    name: str
    adapter_info: dict[str, Any]
    features: frozenset[str]
    limits: dict[str, int]
    browser: dict[str, Any] | None = None
    is_host: bool = False
    can_block: bool = True
    # False while a deferred device (backends/native.py) has not opened its adapter yet
    opened: bool = True
    observer: PipelineObserver | None = None
    # Fault injection (recovery tests): fault(point, nbytes) may raise at "alloc", "submit" and "read".
    fault: Callable[[str, int], None] | None = None
    # Profiling: where it can, the device times each dispatch and calls timer(labels, milliseconds) when
    # the timestamps come back (with the next read).
    timer: Callable[[list[str], list[float]], None] | None = None
    timestamps: bool = False

    def __init__(self) -> None:
        # Crossings of the backend boundary: a batch of N dispatches costs one submit, not N.
        self.stats = {"dispatches": 0, "submits": 0, "reads": 0, "bridge_calls": 0}

    @abstractmethod
    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A new uninitialised buffer for an array of this shape and dtype."""

    @abstractmethod
    def upload(self, array: np.ndarray) -> Any:
        """A new buffer holding a copy of a C-contiguous array."""

    @abstractmethod
    async def download(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The buffer's contents, after every recorded dispatch has run."""

    def cannot_wait(self) -> str | None:
        """Why a synchronous call cannot wait here for what the device answers asynchronously (a read, in a page),
        or None where it can: always where reads complete at once (`can_block`)."""
        return None if self.can_block else "this platform cannot wait for the GPU inside a synchronous call"

    def wait(self, waiting: Waiting[T]) -> T:
        """Finish inside this synchronous call a read that run_now left suspended on the device (only where
        cannot_wait() is None)."""
        waiting.close()
        raise UnsupportedFeature(f"the {self.name} backend cannot wait for the GPU inside a synchronous call")

    def run(self, launch: Launch) -> None:
        """Record one built-in kernel launch."""
        raise UnsupportedFeature(f"kernel launches need a WebGPU device; this runtime's backend is {self.name!r}")

    def compile(self, spec: PipelineSpec) -> Pipeline:
        """The compute pipeline of `spec` (created once per device); `spec.bindings=None` derives the
        layout from the shader."""
        raise UnsupportedFeature(f"WGSL kernels need a WebGPU backend; this runtime's backend is {self.name!r}")

    def dispatch(self, pipeline: Pipeline, workgroups: tuple[int, int, int], handles: Sequence[Any],
                 uniforms: bytes | None = None) -> None:
        """Record one dispatch of a compiled pipeline."""
        raise UnsupportedFeature(f"WGSL kernels need a WebGPU backend; this runtime's backend is {self.name!r}")

    @property
    def pipelines(self) -> dict[PipelineSpec, Pipeline]:
        """The pipelines this device has created."""
        return {}

    def forget(self, label: str) -> None:
        """Drop the pipelines of `label` (a shader that turned out not to compile)."""

    async def precompile(self, specs: Sequence[PipelineSpec], on_done: OnDone, pause: Pause | None = None) -> None:
        """Create the pipelines of `specs` ahead of use, calling on_done(spec, ms, error) as each resolves; `pause()`
        is awaited before each one starts (a page's: until no call is running)."""

    async def collect_timings(self) -> None:
        """Deliver the timestamps of submitted work to `timer` now (profiling)."""

    @property
    def pending(self) -> int:
        """Dispatches recorded and not yet submitted."""
        return 0

    def flush(self) -> None:
        """Submit what was recorded; a no-op where nothing is deferred."""

    def destroy_for_test(self) -> None:
        """Lose the device as a driver reset would (recovery tests)."""
        raise UnsupportedFeature(f"the {self.name} backend has no device to lose")

    def close(self) -> None:
        """Release the device; the runtime refuses further use."""
