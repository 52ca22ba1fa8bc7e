"""What every WebGPU backend shares: pipeline caching, limit checks, dispatch batching, readback.

A WebGPU backend supplies only the raw device calls (`_create_buffer`, `_create_pipeline`, `_submit`,
`_read`). Dispatches are recorded and submitted as one batch on `flush()` or on a read.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LimitExceeded
from ..kernels import UNIFORM, Launch
from ..pipelines import PipelineSpec
from .base import Backend, OnDone, Pipeline


@dataclass
class Dispatch:
    """One recorded dispatch: what a GPU backend encodes at flush."""

    pipeline: Pipeline
    workgroups: tuple[int, int, int]
    handles: list[Any]
    uniforms: bytes | None


class GPUBackend(Backend):
    """Everything WebGPU backends share; subclasses provide the raw device calls."""

    name = "webgpu"
    max_batch = 256  # a flush bounds host memory held by recorded dispatches

    def __init__(self) -> None:
        super().__init__()
        self._pipelines: dict[PipelineSpec, Pipeline] = {}
        self._pending: list[Dispatch] = []
        self._dummy: Any = None

    # -- raw calls each WebGPU backend implements ------------------------------------------------
    @abstractmethod
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> Any: ...

    @abstractmethod
    def _create_pipeline(self, spec: PipelineSpec) -> Any: ...

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

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        self._check_size(nbytes, f"a {dtype} tensor of shape {shape}")
        self._fault("alloc", nbytes)
        return self._create_buffer(nbytes, None)

    def upload(self, array: np.ndarray) -> Any:
        self._check_size(array.nbytes, f"a {array.dtype} tensor of shape {array.shape}")
        self._fault("alloc", array.nbytes)
        return self._create_buffer(array.nbytes, array)

    async def download(self, handle: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        if not count:
            return np.zeros(shape, dtype)
        self.flush()
        self._fault("read", count)
        self.stats["reads"] += 1
        raw = await self._read(handle, count * np.dtype(dtype).itemsize)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).copy()

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

    async def precompile(self, specs: Sequence[PipelineSpec], on_done: OnDone) -> None:
        """wgpu-py creates pipelines synchronously, so natively they are built one after another,
        yielding to the event loop in between (the page backend overrides this with async creation)."""
        for spec in specs:
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
        self._pending.append(Dispatch(pipeline, wg, list(handles), uniforms))
        self.stats["dispatches"] += 1
        if len(self._pending) >= self.max_batch:
            self.flush()

    def run(self, launch: Launch) -> None:
        handles = [t.handle if t is not None else self._dummy_buffer() for t in launch.inputs]
        handles.append(launch.output.handle)
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
            self._submit(batch)
