"""The browser webgpu backend: Python in Pyodide over web/bridge.js (with pageio.py and jsmodules.py, the only modules
that import js/pyodide).

Handles are small Python objects holding the bridge's integer ids. Dispatches are recorded in Python and
cross to JS once per batch; arrays cross as views of Pyodide memory (the bridge copies them straight
into a mapped GPU buffer). JS errors become gpuport's typed errors here, at the boundary.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from typing import Any, Sequence

import gpuport_bridge as bridge  # registered by jsmodules.register (open() runs it before this import)
import js
import numpy as np
from pyodide.ffi import JsException, can_run_sync, run_sync, to_js

from ..errors import (
    BackendUnavailable,
    CompileMessage,
    DeviceLost,
    GpuValidationError,
    NoAnswer,
    OutOfMemory,
    ShaderCompileError,
    SyncReadUnavailable,
)
from ..ops.pipelines import PipelineSpec
from ..platform import Waiting, within
from .base import OnDone, Pause, T
from .capabilities import normalise_features
from .gpu import Dispatch, GPUBackend

# Pipelines compiling at once in precompile(). The browser's GPU process goes on compiling what a page asked for
# after the page is gone: with every pipeline in flight at once, reloading a page during its background
# precompilation left the next visit's open() waiting 17-25 s behind the last one's compiles (Chromium on
# SwiftShader, 2 cores); a few at a time keep the compiler's threads busy and leave little behind.
PRECOMPILE_IN_FLIGHT = 4
# What Pyodide 0.27's run_sync raises where its interpreter chose, when it initialised, that the engine has no JSPI
_NO_STACK_SWITCHING = "WebAssembly stack switching not supported in this JavaScript runtime"
# How long open() waits for the browser's adapter and device (Firefox's first request of a cold visit: 1-3 s here).
# Past it, backend="auto" goes on on the host and says why; an adapter that answers later is left unused.
DEVICE_WAIT_S = 20.0


def _js(value: Any) -> Any:
    return to_js(value, dict_converter=js.Object.fromEntries)


class BufferHandle:
    """A GPU buffer owned by the bridge; when Python drops it, the id is released with the next submit."""

    __slots__ = ("id", "nbytes", "_backend", "__weakref__")

    def __init__(self, backend: "BrowserBackend", buffer_id: int, nbytes: int) -> None:
        self.id, self.nbytes, self._backend = buffer_id, nbytes, backend

    def __del__(self) -> None:
        self._backend._released.append(self.id)


class BrowserBackend(GPUBackend):
    """navigator.gpu through the bridge (in a Web Worker or on the page's main thread)."""

    can_block = False   # every readback and device request is a JS promise

    @classmethod
    async def create(cls, limits: str = "default") -> "BrowserBackend":
        if limits not in ("default", "adapter"):
            raise ValueError(f"limits must be 'default' or 'adapter', not {limits!r}")
        try:
            opened = (await within(bridge.open(_js({"limits": limits})), DEVICE_WAIT_S,
                                   "navigator.gpu's adapter and device request")).to_py()
        except NoAnswer as exc:
            raise BackendUnavailable(str(exc)) from None
        except JsException as exc:
            raise BackendUnavailable(f"WebGPU device request failed: {exc}") from None
        if "error" in opened:
            raise BackendUnavailable(opened["error"])
        return cls(opened)

    def __init__(self, opened: dict[str, Any]) -> None:
        super().__init__()
        self._dev = opened["handle"]
        self.adapter_info = dict(opened["adapter"])
        self.features = normalise_features(opened["features"])
        self.limits = {k: int(v) for k, v in opened["limits"].items()}
        self.browser = dict(opened["browser"])
        self._released: list[int] = []
        # What each batch since the last read writes: a batch the device rejects (its error scope names
        # its number) has those buffers marked as never computed.
        self._batches: dict[int, list[weakref.ref]] = {}
        self._batch_seq = 0
        # buffers not yet made in JS, [id, nbytes, offset of their initial bytes in the uploads or -1]: they ride
        # the next submit, with the uploads' bytes in one blob
        self._creates: list[list[int]] = []
        self._uploads: list[bytes] = []
        self._upload_bytes = 0
        self._next_buffer = 1
        self._sources: dict[str, str] = {}
        self._closed = False

    def cannot_wait(self) -> str | None:
        # can_run_sync(): the engine has JSPI and Python was entered through a promising call (runPythonAsync, an
        # asyncio task: each of their steps is); a plain runPython from JS has no stack to suspend
        if can_run_sync():
            return None
        return ("this page cannot wait for the GPU inside a synchronous call (that needs WebAssembly JSPI and Python "
                "entered through runPythonAsync or an asyncio task: pyodide.ffi.can_run_sync() is False here)")

    def wait(self, waiting: Waiting[T]) -> T:
        """Suspend this call's WebAssembly stack until the browser has answered (run_sync): the page's event loop
        runs meanwhile, settling the promise the read awaits."""
        try:
            return run_sync(waiting)
        except RuntimeError as exc:
            if str(exc) != _NO_STACK_SWITCHING:
                raise
            waiting.close()
            raise SyncReadUnavailable(
                "pyodide.ffi.can_run_sync() is True but run_sync cannot switch stacks: this interpreter was restored "
                "from a memory snapshot made where WebAssembly JSPI was unavailable (Node). Await the read instead, "
                "or boot without that snapshot") from None

    def _call(self, name: str, *args: Any) -> Any:
        self.stats["bridge_calls"] += 1
        try:
            return getattr(bridge, name)(*args)
        except JsException as exc:
            raise _translate_js(exc) from None

    # -- raw calls -------------------------------------------------------------------------------
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> BufferHandle:
        """A buffer made in JS with the next submit, with a copy of `data` (taken now) as its bytes."""
        buffer_id, self._next_buffer = self._next_buffer, self._next_buffer + 1
        offset = -1
        if data is not None and data.nbytes:
            offset = self._upload_bytes
            self._uploads.append(data.tobytes())
            self._upload_bytes += data.nbytes
        self._creates.append([buffer_id, nbytes, offset])
        return BufferHandle(self, buffer_id, nbytes)

    def _has_work(self) -> bool:
        return bool(self._pending or self._creates)

    def _create_pipeline(self, spec: PipelineSpec) -> int:
        self._sources[spec.label] = spec.source
        return self._call("createPipeline", self._dev, *_pipeline_args(spec))

    def _submit(self, batch: list[Dispatch]) -> None:
        blob, offsets = self._uniform_blob(batch)
        rows = [[d.pipeline.raw, *d.workgroups, [h.id for h in d.handles], offset,
                 len(d.uniforms) if offset >= 0 else 0] for d, offset in zip(batch, offsets)]
        released, self._released = self._released, []
        creates, self._creates = self._creates, []
        uploads, self._uploads, self._upload_bytes = b"".join(self._uploads), [], 0
        self._batch_seq += 1
        self._batches[self._batch_seq] = [weakref.ref(h) for d in batch for h in d.written()]
        stamps = None
        if self._timed():   # the bridge times each dispatch and resolves the stamps into this buffer
            stamps = BufferHandle(self, self._next_buffer, 16 * len(batch))
            self._next_buffer += 1
            self._timings.append((stamps, [d.pipeline.label for d in batch]))
        self._call("submit", self._dev, self._batch_seq, _js(creates), _js(rows), blob or None, _js(released),
                   stamps.id if stamps is not None else -1, uploads or None)

    async def _read(self, reads: list[tuple[BufferHandle, int]]) -> list[bytes]:
        self.stats["bridge_calls"] += 1
        try:
            result = await bridge.read(self._dev, _js([[h.id, n] for h, n in reads]))
        except JsException as exc:
            raise _translate_js(exc) from None
        errors = result.errors.to_py()
        batches, self._batches = self._batches, {}   # every earlier batch's error scope has resolved now
        if errors:
            failure = self._typed(errors)
            for e in errors:
                m = re.match(r"batch (\d+) of", e["label"])
                if m:
                    self.poison([h for r in batches.get(int(m.group(1)), []) if (h := r()) is not None], failure)
            raise failure
        return [part.to_bytes() for part in result.data]

    async def precompile(self, specs: Sequence[PipelineSpec], on_done: OnDone, pause: Pause | None = None) -> None:
        """`specs` through createComputePipelineAsync, PRECOMPILE_IN_FLIGHT at a time, started in first-use
        order; each is registered (and usable) the moment it resolves. With `pause`, none starts while a call runs
        (the browser compiles on the cores the call's work needs: the pool's, SwiftShader's)."""
        window = asyncio.Semaphore(PRECOMPILE_IN_FLIGHT)

        async def one(spec: PipelineSpec) -> None:
            async with window:   # timed within: the compile's own time, not the wait for a place
                if pause is not None:
                    await pause()
                t0 = time.perf_counter()
                self._sources[spec.label] = spec.source
                self.stats["bridge_calls"] += 1
                try:
                    result = (await bridge.createPipelineAsync(self._dev, *_pipeline_args(spec))).to_py()
                except JsException as exc:
                    on_done(spec, (time.perf_counter() - t0) * 1e3, _translate_js(exc))
                    return
                ms = (time.perf_counter() - t0) * 1e3
            if result.get("id") is None:
                on_done(spec, ms, self._typed([result["error"]]))
                return
            if spec not in self._pipelines:
                self._register(result["id"], spec, ms)
            on_done(spec, ms, None)

        await asyncio.gather(*(one(spec) for spec in specs))

    def _typed(self, errors: list[dict[str, Any]]) -> Exception:
        """The most telling error first: a compile error explains the validation errors it causes."""
        order = {"compile": 0, "device-lost": 1, "out-of-memory": 2, "validation": 3}
        first = sorted(errors, key=lambda e: order.get(e["kind"], 9))[0]
        kind, label, text = first["kind"], first["label"], first["text"]
        for e in errors:
            if e["kind"] == "compile":
                self.forget(e["label"])
        if kind == "compile":
            messages = [CompileMessage(int(m["line"]), int(m["column"]), m["text"]) for m in first["messages"]]
            return ShaderCompileError(label, text, messages, source=self._sources.get(label))
        if kind == "device-lost":
            return DeviceLost(f"the GPU device was lost: {text}")
        if kind == "out-of-memory":
            return OutOfMemory(f"{label}: {text}")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return GpuValidationError(f"{label}: {text}{more}")

    def destroy_for_test(self) -> None:
        bridge.loseDevice(self._dev)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.clear()
            bridge.close(self._dev)


def _pipeline_args(spec: PipelineSpec) -> tuple[Any, ...]:
    """createPipeline's arguments after the device: source, entry point, constants, layout, label."""
    return (spec.source, spec.entry_point, _js(spec.constants_dict),
            _js(list(spec.bindings)) if spec.bindings is not None else None, spec.label)


def _translate_js(exc: JsException) -> Exception:
    text = str(exc)
    if "DeviceLost" in text or "device lost" in text.lower():
        return DeviceLost(text)
    return GpuValidationError(f"WebGPU call failed: {text}")
