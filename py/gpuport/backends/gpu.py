"""What every WebGPU backend shares: pipeline caching, limit checks, dispatch batching, readback.

A WebGPU backend supplies only the raw device calls (`_create_buffer`, `_create_pipeline`, `_submit`,
`_read`). Dispatches are recorded and submitted as one batch on `flush()` or on a read.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import BatchFailed, LimitExceeded
from ..ops import wgsl
from ..ops.kernels import ERROR, UNIFORM, WRITE, Launch
from ..ops.pipelines import PipelineSpec
from .base import Backend, OnDone, Pause, Pipeline


@dataclass
class Dispatch:
    """One recorded dispatch: what a GPU backend encodes at flush."""

    pipeline: Pipeline
    workgroups: tuple[int, int, int]
    handles: list[Any]
    uniforms: bytes | None

    def written(self) -> list[Any]:
        """The buffers this dispatch writes (all of them where a user's WGSL cannot be read)."""
        kinds = self.pipeline.bindings
        if kinds is not None:
            storage = [k for k in kinds if k != UNIFORM]
            return [h for h, k in zip(self.handles, storage) if k == WRITE]
        rw = wgsl.written_bindings(self.pipeline.spec.source)
        return [h for i, h in enumerate(self.handles) if rw is None or i in rw]


class GPUBackend(Backend):
    """Everything WebGPU backends share; subclasses provide the raw device calls."""

    name = "webgpu"
    # a flush bounds host memory held by recorded dispatches (~200 bytes each); 1024 keeps a SmolLM2 decode step
    # (~520 dispatches) in one submit
    max_batch = 1024

    UNIFORM_ALIGN = 256   # minUniformBufferOffsetAlignment's spec default: every batch packs its uniforms

    def __init__(self) -> None:
        super().__init__()
        self.stats.update({"bytes_to_device": 0, "bytes_to_host": 0})
        # Timestamp buffers of submitted batches (profiling): (buffer, labels), read with the next readback.
        self._timings: list[tuple[Any, list[str]]] = []
        self._pipelines: dict[PipelineSpec, Pipeline] = {}
        self._pending: list[Dispatch] = []
        self._dummy: Any = None
        # Buffers a failed batch would have written: never read back as if computed (no silent zeros).
        self._failed: "weakref.WeakKeyDictionary[Any, Exception]" = weakref.WeakKeyDictionary()
        # The error buffer kernels that can meet invalid data report into (embedding ids), and the outputs
        # of such dispatches since the last read: the next read checks it (one extra 16-byte copy).
        self._errors: Any = None
        self._reporting: list[weakref.ref] = []
        # Their outputs and everything computed from them since (followed as dispatches are queued, while
        # every input is alive): a bad id taints all of it, or those would read back as silent zeros.
        self._suspects: "weakref.WeakSet[Any]" = weakref.WeakSet()
    # -- raw calls each WebGPU backend implements ------------------------------------------------
    @abstractmethod
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> Any: ...

    @abstractmethod
    def _create_pipeline(self, spec: PipelineSpec) -> Any: ...

    @abstractmethod
    def _submit(self, batch: list[Dispatch]) -> None: ...

    @abstractmethod
    async def _read(self, reads: list[tuple[Any, int]]) -> list[bytes]:
        """The first nbytes of each (buffer, nbytes), after everything submitted has run (one round trip)."""

    # -- shared implementation -----------------------------------------------------------------
    def _check_size(self, nbytes: int, what: str) -> None:
        for limit in ("maxStorageBufferBindingSize", "maxBufferSize"):
            value = self.limits.get(limit)
            if value is not None and nbytes > value:
                raise LimitExceeded(limit, value, nbytes, f"{what} of {nbytes:,} bytes")

    def _fault(self, point: str, nbytes: int = 0) -> None:
        if self.fault is not None:
            self.fault(point, nbytes)

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        self._check_size(nbytes, f"a {dtype} tensor of shape {shape}")
        self._fault("alloc", nbytes)
        return self._create_buffer(nbytes, None)

    def upload(self, array: np.ndarray) -> Any:
        self._check_size(array.nbytes, f"a {array.dtype} tensor of shape {array.shape}")
        self._fault("alloc", array.nbytes)
        self.stats["bytes_to_device"] += array.nbytes
        return self._create_buffer(array.nbytes, array)

    @property
    def timestamps(self) -> bool:
        """Whether submitted dispatches can be timed on the device (the timestamp-query feature)."""
        return "timestamp-query" in self.features

    def _timed(self) -> bool:
        return self.timer is not None and self.timestamps

    def _uniform_blob(self, batch: list[Dispatch]) -> tuple[bytes, list[int]]:
        """Every dispatch's uniforms in one buffer, each at an aligned offset (-1: none)."""
        blob, offsets = bytearray(), []
        for d in batch:
            if d.uniforms is None:
                offsets.append(-1)
                continue
            offsets.append(len(blob))
            blob += d.uniforms
            blob += b"\0" * (-len(blob) % self.UNIFORM_ALIGN)
        return bytes(blob), offsets

    def poison(self, written: Sequence[Any], failure: Exception) -> None:
        """The device rejected the batch that would have written these buffers: reading one, or computing
        from it, raises BatchFailed naming `failure`."""
        why = f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}"
        self.mark_invalid(written, BatchFailed(f"a tensor it uses was never computed, because the batch of "
                                               f"dispatches that would have written it failed ({why})"))

    def mark_invalid(self, handles: Sequence[Any], error: Exception) -> None:
        """Reading these buffers, or computing from them, raises (a copy of) `error`."""
        for h in handles:
            self._failed[h] = error

    def _check_computed(self, handles: Sequence[Any], what: str) -> None:
        for h in handles:
            error = self._failed.get(h) if h is not None else None
            if error is not None:
                raise type(error)(f"{what}: {error}")

    async def download(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = math.prod(shape)
        if not count:
            return np.zeros(shape, dtype)
        self.flush()
        self._check_computed([handle], "reading a tensor")
        self._fault("read", count)
        self.stats["reads"] += 1
        nbytes = count * np.dtype(dtype).itemsize
        self.stats["bytes_to_host"] += nbytes
        reads = [(handle, nbytes)]
        checking = bool(self._reporting)
        if checking:
            reads.append((self._errors, 16))
        timings, self._timings = self._timings, []
        reads += [(buf, 16 * len(labels)) for buf, labels in timings]
        raw = await self._read(reads)
        for (_, labels), stamps in zip(timings, raw[len(raw) - len(timings):]):
            self._deliver(labels, stamps)
        if checking:
            self._check_errors(raw[1])
        return np.frombuffer(raw[0], dtype=dtype, count=count).reshape(shape).copy()

    async def collect_timings(self) -> None:
        """Read back the timestamps of every submitted batch now (without reading a tensor)."""
        self.flush()
        timings, self._timings = self._timings, []
        if timings:
            raw = await self._read([(buf, 16 * len(labels)) for buf, labels in timings])
            for (_, labels), stamps in zip(timings, raw):
                self._deliver(labels, stamps)

    def _deliver(self, labels: list[str], stamps: bytes) -> None:
        """Begin/end timestamps (ns) of each dispatch, as milliseconds to the profiler."""
        if self.timer is not None:
            t = np.frombuffer(stamps, dtype=np.uint64, count=2 * len(labels)).astype(np.float64)
            self.timer(labels, ((t[1::2] - t[0::2]) / 1e6).tolist())

    def _check_errors(self, raw: bytes) -> None:
        """What kernels reported since the last read: an invalid id marks those dispatches' outputs and
        raises IndexError naming it."""
        flag, value, limit, _ = np.frombuffer(raw, dtype=np.uint32, count=4).tolist()
        reporting, self._reporting = self._reporting, []
        suspects, self._suspects = list(self._suspects), weakref.WeakSet()
        if not flag:
            return
        self._errors = None   # a fresh, zeroed one for the next reporting dispatch
        bad = value - (1 << 32) if value >= 1 << 31 else value   # int32 ids arrive as their bit pattern
        error = IndexError(f"embedding: id {bad} is outside the table's {limit} rows (ids computed on the GPU; "
                           "its rows were written as zeros)")
        self.mark_invalid(suspects + [h for r in reporting if (h := r()) is not None], error)
        raise error

    def compile(self, spec: PipelineSpec) -> Pipeline:
        found = self._pipelines.get(spec)
        if found is None:
            t0 = time.perf_counter()
            raw = self._create_pipeline(spec)
            found = self._register(raw, spec, (time.perf_counter() - t0) * 1e3)
        return found

    def _register(self, raw: Any, spec: PipelineSpec, ms: float) -> Pipeline:
        found = self._pipelines[spec] = Pipeline(raw, spec, ms)
        if self.observer is not None:
            self.observer.compiled(spec, ms)
        return found

    @property
    def pipelines(self) -> dict[PipelineSpec, Pipeline]:
        return dict(self._pipelines)

    def forget(self, label: str) -> None:
        for spec in [s for s in self._pipelines if s.label == label]:
            del self._pipelines[spec]
        if self.observer is not None:
            self.observer.failed(label)

    async def precompile(self, specs: Sequence[PipelineSpec], on_done: OnDone, pause: Pause | None = None) -> None:
        """wgpu-py creates pipelines synchronously, so natively they are built one after another,
        yielding to the event loop in between (the page backend overrides this with async creation)."""
        for spec in specs:
            if pause is not None:
                await pause()
            t0 = time.perf_counter()
            error = None
            try:
                self.compile(spec)
            except Exception as exc:  # a bad entry must not stop the others
                error = exc
            on_done(spec, (time.perf_counter() - t0) * 1e3, error)
            await asyncio.sleep(0)

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
        self._check_computed(handles, f"dispatching {pipeline.label!r}")
        d = Dispatch(pipeline, wg, list(handles), uniforms)
        if self._suspects and any(h in self._suspects for h in d.handles):
            self._suspects.update(d.written())
        self._pending.append(d)
        self.stats["dispatches"] += 1
        if self.observer is not None:
            self.observer.dispatched(pipeline.label)
        if len(self._pending) >= self.max_batch:
            self.flush()

    def run(self, launch: Launch) -> None:
        handles = [t.buffer if t is not None else self._dummy_buffer() for t in launch.inputs]
        handles.append(launch.output.buffer)
        if ERROR in launch.kernel.bindings:
            if self._errors is None:
                self._errors = self._create_buffer(16, np.zeros(4, np.uint32))
            handles.append(self._errors)
            self._reporting.append(weakref.ref(launch.output.buffer))
            self._suspects.add(launch.output.buffer)
        self.dispatch(self.compile(launch.spec), launch.workgroups, handles, launch.uniforms)

    def _dummy_buffer(self) -> Any:
        """Bound where an optional input (bias, mask) is absent; the shader never reads it."""
        if self._dummy is None:
            self._dummy = self._create_buffer(16, None)
        return self._dummy

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _has_work(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        if self._has_work():
            if self._pending:
                self._fault("submit")
            batch, self._pending = self._pending, []
            self.stats["submits"] += 1
            try:
                self._submit(batch)
            except Exception as exc:
                self.poison([h for d in batch for h in d.written()], exc)
                raise
