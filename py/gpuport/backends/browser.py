"""The browser webgpu backend: Python in Pyodide over web/bridge.js. The only module importing js/pyodide.

Handles are small Python objects holding the bridge's integer ids. Dispatches are recorded in Python and
cross to JS once per batch; arrays cross as views of Pyodide memory (the bridge copies them straight
into a mapped GPU buffer). JS errors become gpuport's typed errors here, at the boundary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import numpy as np

import gpuport_bridge as bridge  # registered by web/host.js before gpuport is imported
import gpuport_idb as idb        # web/idb.js, registered beside the bridge
import js
from pyodide.ffi import JsException, to_js

from ..capabilities import normalise_features
from ..errors import (BackendUnavailable, CompileMessage, DeviceLost, GpuValidationError, OutOfMemory,
                      ShaderCompileError)
from . import Dispatch, GPUBackend

UNIFORM_ALIGN = 256  # minUniformBufferOffsetAlignment's spec default


def _js(value: Any) -> Any:
    return to_js(value, dict_converter=js.Object.fromEntries)


class BufferHandle:
    """A GPU buffer owned by the bridge; when Python drops it, the id is released with the next submit."""

    __slots__ = ("id", "nbytes", "_backend")

    def __init__(self, backend: "BrowserBackend", buffer_id: int, nbytes: int) -> None:
        self.id, self.nbytes, self._backend = buffer_id, nbytes, backend

    def __del__(self) -> None:
        self._backend._released.append(self.id)


class BrowserBackend(GPUBackend):
    """navigator.gpu through the bridge (in a Web Worker or on the page's main thread)."""

    @classmethod
    async def create(cls, limits: str = "default") -> "BrowserBackend":
        if limits not in ("default", "adapter"):
            raise ValueError(f"limits must be 'default' or 'adapter', not {limits!r}")
        try:
            opened = (await bridge.open(_js({"limits": limits}))).to_py()
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
        self._creates: list[list[int]] = []  # output buffers not yet made in JS: they ride the next submit
        self._next_buffer = 1
        self._sources: dict[str, str] = {}
        self._closed = False

    def _call(self, name: str, *args: Any) -> Any:
        self.stats["bridge_calls"] += 1
        try:
            return getattr(bridge, name)(*args)
        except JsException as exc:
            raise _translate_js(exc) from None

    # -- raw calls -------------------------------------------------------------------------------
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> BufferHandle:
        buffer_id, self._next_buffer = self._next_buffer, self._next_buffer + 1
        if data is not None and data.nbytes:
            self._call("createBuffer", self._dev, buffer_id, nbytes, data.reshape(-1).view(np.uint8))
        else:
            self._creates.append([buffer_id, nbytes])
        return BufferHandle(self, buffer_id, nbytes)

    def _has_work(self) -> bool:
        return bool(self._pending or self._creates)

    def _create_pipeline(self, source: str, entry_point: str, constants: dict[str, float],
                         bindings: tuple[str, ...] | None, label: str) -> int:
        self._sources[label] = source
        return self._call("createPipeline", self._dev, source, entry_point, _js(constants),
                          _js(list(bindings)) if bindings is not None else None, label)

    def _submit(self, batch: list[Dispatch]) -> None:
        rows, blob = [], bytearray()
        for d in batch:
            ids = [h.id for h in d.handles]
            if d.uniforms is None:
                rows.append([d.pipeline.raw, *d.workgroups, ids, -1, 0])
            else:
                offset = len(blob)
                blob += d.uniforms
                blob += b"\0" * (-len(blob) % UNIFORM_ALIGN)
                rows.append([d.pipeline.raw, *d.workgroups, ids, offset, len(d.uniforms)])
        released, self._released = self._released, []
        creates, self._creates = self._creates, []
        self._call("submit", self._dev, _js(creates), _js(rows), bytes(blob) if blob else None, _js(released))

    async def _read(self, handle: BufferHandle, nbytes: int) -> bytes:
        self.stats["bridge_calls"] += 1
        try:
            result = await bridge.read(self._dev, handle.id, nbytes)
        except JsException as exc:
            raise _translate_js(exc) from None
        errors = result.errors.to_py()
        if errors:
            raise self._typed(errors)
        return result.data.to_bytes()

    async def precompile(self, specs: Sequence[Any], on_done: Any) -> None:
        """All of `specs` in flight at once through createComputePipelineAsync, started in first-use
        order; each is registered (and usable) the moment it resolves."""
        async def one(spec: Any) -> None:
            t0 = time.perf_counter()
            constants = spec.constants_dict
            self._sources[spec.label] = spec.source
            self.stats["bridge_calls"] += 1
            try:
                result = (await bridge.createPipelineAsync(
                    self._dev, spec.source, spec.entry_point, _js(constants),
                    _js(list(spec.bindings)) if spec.bindings is not None else None, spec.label)).to_py()
            except JsException as exc:
                on_done(spec, (time.perf_counter() - t0) * 1e3, _translate_js(exc))
                return
            ms = (time.perf_counter() - t0) * 1e3
            if result.get("id") is None:
                on_done(spec, ms, self._typed([result["error"]]))
                return
            from . import pipeline_key
            key = pipeline_key(spec.source, spec.entry_point, constants, spec.bindings)
            if key not in self._pipelines:
                self._register(result["id"], spec.source, spec.entry_point, constants, spec.bindings, spec.label,
                               key, ms)
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


class IndexedDBStore:
    """Text records in an IndexedDB object store (web/idb.js): pipeline manifests, selector history.
    Storage failing (quota, private mode) only loses the optimisation: loads give None, saves are dropped."""

    def __init__(self, store: str = "manifests", prefix: str = "") -> None:
        self.store, self.prefix = store, prefix

    async def load(self, scope: str) -> str | None:
        try:
            value = await idb.get(self.store, self.prefix + scope)
        except JsException:
            return None
        return value if isinstance(value, str) else None

    def save_soon(self, scope: str, text: str) -> None:
        async def save() -> None:
            try:
                await idb.put(self.store, self.prefix + scope, text)
            except JsException:
                pass
        asyncio.ensure_future(save())


def _translate_js(exc: JsException) -> Exception:
    text = str(exc)
    if "DeviceLost" in text or "device lost" in text.lower():
        return DeviceLost(text)
    return GpuValidationError(f"WebGPU call failed: {text}")


# -- the progressive model loader's page half (gpuport.loader) -------------------------------------------

class PyfetchTransport:
    """gpuport.loader's transport in a page: pyodide.http.pyfetch (fetch) with Range headers. `no-store`
    keeps the browser's HTTP cache out of it: the verified-chunk cache in IndexedDB is the only cache, and
    every byte that did come over the network is counted."""

    def __init__(self, cache_mode: str = "no-store") -> None:
        self.cache_mode = cache_mode

    async def get(self, url: str, headers: Any = None) -> Any:
        from pyodide.http import pyfetch

        from ..loader import Response, TransportError
        try:
            r = await pyfetch(url, headers=dict(headers or {}), cache=self.cache_mode)
            body = await r.bytes()
        except (JsException, OSError, ValueError) as exc:   # network error, connection dropped mid-body
            raise TransportError(f"connection failed: {exc}") from None
        return Response(int(r.status), {str(k).lower(): str(v) for k, v in dict(r.headers).items()}, body, url)


class IndexedDBChunkCache:
    """Verified chunks in IndexedDB (web/idb.js store "chunks"), the model's current sha in "meta".
    A QuotaExceededError becomes gpuport.loader.QuotaExceeded (the loader then keeps chunks in memory)."""

    def __init__(self, use_estimate: bool = True) -> None:
        self.use_estimate = use_estimate

    @staticmethod
    def _raise(exc: JsException) -> None:
        from ..loader import QuotaExceeded
        text = str(exc)
        if "QuotaExceeded" in text or "quota" in text.lower():
            raise QuotaExceeded(text) from None
        raise exc

    async def estimate(self) -> dict | None:
        if not self.use_estimate:
            return None
        try:
            est = await idb.estimate()
        except JsException:
            return None
        if est is None:
            return None
        est = est.to_py() if hasattr(est, "to_py") else est
        return {"usage": int(est.get("usage") or 0), "quota": int(est.get("quota") or 0)}

    async def get(self, key: str) -> bytes | None:
        value = await idb.get("chunks", key)
        if value is None:
            return None
        if hasattr(value, "to_bytes"):
            try:
                return value.to_bytes()
            except Exception:
                return js.Uint8Array.new(value).to_bytes()
        return None

    async def put(self, key: str, data: bytes) -> None:
        arr = js.Uint8Array.new(len(data))
        arr.assign(data)
        try:
            await idb.put("chunks", key, arr)
        except JsException as exc:
            self._raise(exc)

    async def remove(self, key: str) -> None:
        await idb.remove("chunks", key)

    async def keys(self) -> list[str]:
        return [str(k) for k in (await idb.keys("chunks")).to_py()]

    async def get_meta(self, key: str) -> str | None:
        value = await idb.get("meta", key)
        return value if isinstance(value, str) else None

    async def put_meta(self, key: str, value: str) -> None:
        try:
            await idb.put("meta", key, value)
        except JsException as exc:
            self._raise(exc)
