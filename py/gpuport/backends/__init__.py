"""The backend boundary: one protocol, implemented by cpu (NumPy), native (wgpu-py) and browser (Pyodide).

`Backend` is the contract. `GPUBackend` implements everything WebGPU-shaped once (pipeline and layout
caches, limit checks, dispatch batching); a WebGPU backend only supplies the raw calls (`_create_*`,
`_submit`, `_read`). Dispatches are recorded and submitted as one batch on `flush()` or on a read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import LimitExceeded, UnsupportedFeature
from ..kernels import UNIFORM, Launch

DTYPES = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.uint32))


class Backend(ABC):
    """What every backend offers the runtime. Handles are opaque to everything but their backend."""

    name: str
    adapter_info: dict[str, Any]
    features: frozenset[str]
    limits: dict[str, int]

    @abstractmethod
    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A new uninitialised buffer for an array of this shape and dtype."""

    @abstractmethod
    def upload(self, array: np.ndarray) -> Any:
        """A new buffer holding a copy of a C-contiguous array."""

    @abstractmethod
    async def download(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The buffer's contents, after every recorded dispatch has run."""

    def download_sync(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Blocking read; only where the platform can block (not in a page)."""
        raise UnsupportedFeature(f"the {self.name} backend cannot read back synchronously: use `await tensor.read()`")

    @abstractmethod
    def run(self, launch: Launch) -> None:
        """Execute (or record) one built-in op."""

    def compile(self, source: str, entry_point: str = "main", constants: dict[str, float] | None = None,
                bindings: tuple[str, ...] | None = None, label: str = "kernel") -> Any:
        """A compute pipeline for user WGSL; `bindings=None` derives the layout from the shader."""
        raise UnsupportedFeature(f"WGSL kernels need a WebGPU backend; this runtime's backend is {self.name!r}")

    def dispatch(self, pipeline: Any, workgroups: tuple[int, int, int], handles: Sequence[Any],
                 uniforms: bytes | None = None) -> None:
        """Record one dispatch of a compiled pipeline."""
        raise UnsupportedFeature(f"WGSL kernels need a WebGPU backend; this runtime's backend is {self.name!r}")

    def flush(self) -> None:
        """Submit what was recorded; a no-op where nothing is deferred."""

    def close(self) -> None:
        """Release the device; the runtime refuses further use."""


@dataclass
class Dispatch:
    """One recorded dispatch: what a GPU backend encodes at flush."""

    pipeline: Any
    workgroups: tuple[int, int, int]
    handles: list[Any]
    uniforms: bytes | None
    bindings: tuple[str, ...] | None


@dataclass
class Pipeline:
    """A compiled pipeline plus what binding it needs."""

    raw: Any
    bindings: tuple[str, ...] | None
    key: str
    label: str
    compile_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def pipeline_key(source: str, entry_point: str, constants: dict[str, float] | None,
                 bindings: tuple[str, ...] | None) -> str:
    """A stable identity for a specialised pipeline (hash of WGSL, entry point, constants, layout)."""
    blob = json.dumps([source, entry_point, sorted((constants or {}).items()), bindings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class GPUBackend(Backend):
    """Everything WebGPU backends share; subclasses provide the raw device calls."""

    name = "webgpu"
    max_batch = 256  # a flush bounds host memory held by recorded dispatches
    fault: Any = None  # recovery's fault-injection hook: fault(point, nbytes) may raise (tests)

    def __init__(self) -> None:
        self._pipelines: dict[str, Pipeline] = {}
        self._pending: list[Dispatch] = []
        self._dummy: Any = None
        # Crossings of the backend boundary: a batch of N dispatches costs one submit, not N.
        self.stats = {"dispatches": 0, "submits": 0, "reads": 0, "bridge_calls": 0}
        self.manifest: Any = None        # pipelines.PipelineManifest, attached by the runtime once loaded
        self.manifest_store: Any = None  # where it is saved (a file natively, IndexedDB in a page)
        self.precompiling: set[str] = set()  # ops whose pipelines precompile() is still building

    # -- raw calls each WebGPU backend implements ------------------------------------------------
    @abstractmethod
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> Any: ...

    @abstractmethod
    def _create_pipeline(self, source: str, entry_point: str, constants: dict[str, float],
                         bindings: tuple[str, ...] | None, label: str) -> Any: ...

    @abstractmethod
    def _submit(self, batch: list[Dispatch]) -> None: ...

    @abstractmethod
    async def _read(self, handle: Any, nbytes: int) -> bytes | memoryview | np.ndarray: ...

    # -- shared implementation -----------------------------------------------------------------
    def _check_size(self, nbytes: int, what: str) -> None:
        for limit in ("maxStorageBufferBindingSize", "maxBufferSize"):
            value = self.limits.get(limit)
            if value is not None and nbytes > value:
                raise LimitExceeded(limit, value, nbytes, f"{what} of {nbytes:,} bytes")

    def _fault(self, point: str, nbytes: int = 0) -> None:
        if self.fault is not None:
            self.fault(point, nbytes)

    def destroy_for_test(self) -> None:
        """Lose the device as a driver reset would (recovery tests)."""
        raise NotImplementedError

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        self._check_size(nbytes, f"a {dtype} tensor of shape {shape}")
        self._fault("alloc", nbytes)
        return self._create_buffer(nbytes, None)

    def upload(self, array: np.ndarray) -> Any:
        self._check_size(array.nbytes, f"a {array.dtype} tensor of shape {array.shape}")
        self._fault("alloc", array.nbytes)
        return self._create_buffer(array.nbytes, array)

    def _read_blocking(self, handle: Any, nbytes: int) -> bytes | memoryview:
        """Blocking readback; backends that can block override it."""
        raise UnsupportedFeature(f"the {self.name} backend here cannot read back synchronously: "
                                 "use `await tensor.read()`")

    def _begin_read(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """Bytes to read back (0 for an empty tensor), after submitting everything recorded."""
        count = int(np.prod(shape, dtype=np.int64))
        if count:
            self.flush()
            self._fault("read", count)
            self.stats["reads"] += 1
        return count * np.dtype(dtype).itemsize

    async def download(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = self._begin_read(shape, dtype)
        return _as_array(await self._read(handle, nbytes) if nbytes else b"", shape, dtype)

    def download_sync(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = self._begin_read(shape, dtype)
        return _as_array(self._read_blocking(handle, nbytes) if nbytes else b"", shape, dtype)

    def compile(self, source: str, entry_point: str = "main", constants: dict[str, float] | None = None,
                bindings: tuple[str, ...] | None = None, label: str = "kernel") -> Pipeline:
        constants = {k: float(v) for k, v in (constants or {}).items()}
        key = pipeline_key(source, entry_point, constants, bindings)
        found = self._pipelines.get(key)
        if found is None:
            t0 = time.perf_counter()
            raw = self._create_pipeline(source, entry_point, constants, bindings, label)
            found = self._register(raw, source, entry_point, constants, bindings, label, key,
                                   (time.perf_counter() - t0) * 1e3)
        return found

    def _register(self, raw: Any, source: str, entry_point: str, constants: dict[str, float],
                  bindings: tuple[str, ...] | None, label: str, key: str, ms: float) -> Pipeline:
        found = Pipeline(raw, bindings, key, label, ms,
                         {"spec": (source, entry_point, dict(constants), bindings, label)})
        self._pipelines[key] = found
        if self.manifest is not None:
            self.manifest.record(key, label, source, entry_point, constants, bindings, ms)
        return found

    def forget(self, label: str) -> None:
        """Drop a pipeline that turned out not to compile: from the cache and from the manifest."""
        for key in [k for k, p in self._pipelines.items() if p.label == label]:
            del self._pipelines[key]
        if self.manifest is not None:
            self.manifest.forget(label)
            self.save_manifest()   # now: a runtime that never flushes again (auto on NumPy) must not keep it

    async def precompile(self, specs: Sequence[Any], on_done: Any) -> None:
        """Create the pipelines of `specs` (pipelines.PipelineSpec) ahead of use, calling
        on_done(spec, ms, error) as each resolves. wgpu-py creates pipelines synchronously, so natively
        they are built one after another, yielding to the event loop in between."""
        for spec in specs:
            t0 = time.perf_counter()
            error = None
            try:
                self.compile(spec.source, spec.entry_point, spec.constants_dict, spec.bindings, spec.label)
            except Exception as exc:  # a bad entry must not stop the others
                error = exc
            on_done(spec, (time.perf_counter() - t0) * 1e3, error)
            await asyncio.sleep(0)

    def save_manifest(self) -> None:
        """Persist the manifest if it gained pipelines (called at each flush; cheap when unchanged)."""
        if self.manifest is not None and self.manifest.dirty and self.manifest_store is not None:
            self.manifest.dirty = False
            self.manifest_store.save_soon(self.manifest.scope, self.manifest.to_json())

    def dispatch(self, pipeline: Pipeline, workgroups: tuple[int, int, int], handles: Sequence[Any],
                 uniforms: bytes | None = None) -> None:
        wg = tuple(int(w) for w in workgroups) + (1,) * (3 - len(workgroups))
        limit = self.limits.get("maxComputeWorkgroupsPerDimension", 65535)
        for axis, n in zip("xyz", wg):
            if n > limit:
                raise LimitExceeded("maxComputeWorkgroupsPerDimension", limit, n,
                                    f"a dispatch of {n:,} workgroups along {axis}")
        if 0 in wg:
            return
        self._pending.append(Dispatch(pipeline, wg, list(handles), uniforms, pipeline.bindings))
        self.stats["dispatches"] += 1
        if len(self._pending) >= self.max_batch:
            self.flush()

    def run(self, launch: Launch) -> None:
        k = launch.kernel
        pipe = self.compile(k.source, k.entry_point, launch.constants, k.bindings, k.name)
        handles = [t.handle if t is not None else self._dummy_buffer() for t in launch.inputs]
        handles.append(launch.output.handle)
        assert len(handles) == sum(1 for b in k.bindings if b != UNIFORM)
        self.dispatch(pipe, launch.workgroups, handles, launch.uniforms)

    def _dummy_buffer(self) -> Any:
        """Bound where an optional input (bias, mask) is absent; the shader never reads it."""
        if self._dummy is None:
            self._dummy = self._create_buffer(16, None)
        return self._dummy

    def _has_work(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        if self._has_work():
            if self._pending:
                self._fault("submit")
            batch, self._pending = self._pending, []
            self.stats["submits"] += 1
            self._submit(batch)
        self.save_manifest()

    @property
    def pipelines(self) -> dict[str, Pipeline]:
        return dict(self._pipelines)


def _as_array(raw: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).copy()


def available() -> list[str]:
    """Backends that can be opened in this process, best first."""
    from ..platform import IN_PYODIDE
    names = []
    if IN_PYODIDE:
        names.append("webgpu")
    else:
        try:
            import wgpu  # noqa: F401
            names.append("webgpu")
        except ImportError:
            pass
    names.append("cpu")
    return names
