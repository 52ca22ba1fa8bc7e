"""The native webgpu backend: wgpu-py (Vulkan/Metal/DX12; lavapipe on a machine with no GPU)."""

from __future__ import annotations

import re
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import (
    BackendUnavailable,
    DeviceLost,
    GpuValidationError,
    OutOfMemory,
    ShaderCompileError,
    classify,
)
from ..formats.records import RecordWarning
from ..ops.pipelines import PipelineSpec
from . import identity
from .capabilities import SPEC_DEFAULT_LIMITS, normalise_features
from .gpu import Dispatch, GPUBackend
from .identity import Identity

if TYPE_CHECKING:
    from .io import RecordStore

try:
    import wgpu
except ImportError:  # the package works without wgpu; only this backend needs it
    wgpu = None

_BUFFER_TYPES = {"read": "read-only-storage", "rw": "storage", "error": "storage", "uniform": "uniform"}
_WANTED_FEATURES = ("shader-f16", "subgroup", "timestamp-query")
# One adapter-and-device request at a time in this process: two threads opening runtimes at once aborted the process
# inside wgpu-native (a fresh clone's make test: request_adapter in one thread beside request_device in another;
# upstream, gfx-rs/wgpu#10010 and #10234: concurrent adapter and device creation crashes on Vulkan).
_OPENING = threading.Lock()


def _kebab(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "-" + m.group(1).lower(), name)


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.capitalize() for part in rest)


class NativeBackend(GPUBackend):
    """wgpu-py device. `limits="default"` asks for the WebGPU spec defaults so native runs fail
    where a browser would; `limits="adapter"` takes everything the adapter offers.

    Made with `stored` (an identity kept from an earlier run, see identity.py), it opens the adapter on its first device call,
    not before: `opened` says whether it has."""

    def __init__(self, limits: str = "default", power_preference: str = "high-performance",
                 stored: Identity | None = None, remember: Callable[[Identity | None], None] | None = None) -> None:
        super().__init__()
        if wgpu is None:
            raise BackendUnavailable("the webgpu backend needs wgpu-py: pip install wgpu")
        if limits not in ("default", "adapter"):
            raise ValueError(f"limits must be 'default' or 'adapter', not {limits!r}")
        self._limits_mode, self._power = limits, power_preference
        self._remember = remember
        self._raw: Any = None
        self._stored = stored
        self._staging = None
        self._layouts: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        if stored is None:
            self._open()
        else:
            self.adapter_info, self.features, self.limits = dict(stored.adapter_info), stored.features, \
                dict(stored.limits)

    @classmethod
    async def create(cls, limits: str = "default", store: "RecordStore | None" = None) -> "NativeBackend":
        """A device; given the `store` of adapter records, one that opens on first use where this adapter's
        identity is stored there (the first run opens now and stores it)."""
        if store is None:
            return cls(limits)
        key = identity.scope(limits, "high-performance", wgpu.__version__ if wgpu else "")
        return cls(limits, stored=identity.load(await store.load(key), key), remember=lambda found: store.save_soon(key, identity.to_json(found)))

    @property
    def opened(self) -> bool:
        return self._raw is not None

    @property
    def _device(self) -> Any:
        if self._raw is None:
            self._open()
        return self._raw

    def _open(self) -> None:
        with _OPENING:
            self._open_alone()

    def _open_alone(self) -> None:
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference=self._power)
        except Exception as exc:  # wgpu-native raises a plain RuntimeError when no driver loads
            adapter, problem = None, f"no WebGPU adapter: {exc}"
        else:
            problem = "no WebGPU adapter (is a Vulkan driver such as lavapipe installed?)"
        if adapter is None:
            if self._stored is not None:
                # planned from a stored identity that this machine no longer has: the next open() opens at
                # once (and steps down to the host, saying why); recovery handles this runtime's loss
                if self._remember is not None:
                    self._remember(None)
                raise DeviceLost(f"the recorded WebGPU adapter did not open: {problem}")
            raise BackendUnavailable(problem)
        features = [f for f in _WANTED_FEATURES if f in adapter.features]
        required = {}
        if self._limits_mode == "default":
            adapter_limits = {_camel(k): v for k, v in adapter.limits.items()}
            required = {_kebab(k): min(v, adapter_limits.get(k, v)) for k, v in SPEC_DEFAULT_LIMITS.items()}
        self._raw = adapter.request_device_sync(required_features=features, required_limits=required)
        self._queue = self._raw.queue
        info = adapter.info
        found = Identity({
            "vendor": info.get("vendor", ""), "architecture": info.get("architecture", ""),
            "device": info.get("device", ""), "description": info.get("description", ""),
            "is_fallback": info.get("adapter_type", "") == "CPU",
            "backend_type": info.get("backend_type", ""),
        }, normalise_features(self._raw.features),
            {_camel(k): int(v) for k, v in self._raw.limits.items() if isinstance(v, int)})
        self.adapter_info, self.features, self.limits = found.adapter_info, found.features, found.limits
        changed = self._stored.differences(found) if self._stored is not None else None
        if changed:
            warnings.warn(f"gpuport: the adapter differs from the one recorded, whose identity this runtime "
                          f"planned with; the record is rewritten: {'; '.join(changed)}", RecordWarning,
                          stacklevel=4)
        if self._remember is not None and (self._stored is None or changed):
            self._remember(found)

    # -- raw calls -------------------------------------------------------------------------------
    def _create_buffer(self, nbytes: int, data: np.ndarray | None) -> Any:
        try:
            if data is not None and data.nbytes > 0:
                return self._device.create_buffer_with_data(data=memoryview(data).cast("B"), usage=self._usage)
            return self._device.create_buffer(size=max(4, nbytes), usage=self._usage)
        except wgpu.GPUOutOfMemoryError as exc:
            raise OutOfMemory(f"allocating {nbytes:,} bytes failed: {exc}") from None
        except wgpu.GPUValidationError as exc:
            raise _typed(exc, f"allocating {nbytes:,} bytes") from None

    def _layout(self, bindings: tuple[str, ...]) -> tuple[Any, Any]:
        found = self._layouts.get(bindings)
        if found is None:
            bgl = self._device.create_bind_group_layout(entries=[
                {"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": _BUFFER_TYPES[b]}}
                for i, b in enumerate(bindings)])
            found = (bgl, self._device.create_pipeline_layout(bind_group_layouts=[bgl]))
            self._layouts[bindings] = found
        return found

    def _create_pipeline(self, spec: PipelineSpec) -> Any:
        label, source = spec.label, spec.source
        try:
            module = self._device.create_shader_module(code=source, label=label)
        except wgpu.GPUValidationError as exc:
            raise ShaderCompileError(label, _compiler_text(exc), source=source) from None
        if spec.bindings is None:
            layout, bgl = "auto", None
        else:
            bgl, layout = self._layout(spec.bindings)
        try:
            pipe = self._device.create_compute_pipeline(
                layout=layout, label=label,
                compute={"module": module, "entry_point": spec.entry_point, "constants": spec.constants_dict})
        except (wgpu.GPUValidationError, wgpu.GPUPipelineError) as exc:
            text = _compiler_text(exc)
            if "entry point" in text.lower() or "override" in text.lower():
                raise ShaderCompileError(label, text, source=source) from None
            raise GpuValidationError(f"creating pipeline {label!r}: {text}") from None
        return (pipe, bgl if bgl is not None else pipe.get_bind_group_layout(0))

    def _submit(self, batch: list[Dispatch]) -> None:
        device, usage = self._device, wgpu.BufferUsage
        blob, offsets = self._uniform_blob(batch)
        ubuf = device.create_buffer_with_data(data=blob, usage=usage.UNIFORM) if blob else None
        timed = self._timed()
        queries = device.create_query_set(type="timestamp", count=2 * len(batch)) if timed else None
        encoder = device.create_command_encoder()
        cpass = None
        try:
            for i, (d, offset) in enumerate(zip(batch, offsets)):
                if timed:   # one pass per dispatch: a pass is what timestamps bracket
                    cpass = encoder.begin_compute_pass(timestamp_writes={
                        "query_set": queries, "beginning_of_pass_write_index": 2 * i,
                        "end_of_pass_write_index": 2 * i + 1})
                elif cpass is None:
                    cpass = encoder.begin_compute_pass()
                pipe, bgl = d.pipeline.raw
                entries = [{"binding": j, "resource": {"buffer": b, "offset": 0, "size": b.size}}
                           for j, b in enumerate(d.handles)]
                if offset >= 0:
                    entries.append({"binding": len(d.handles),
                                    "resource": {"buffer": ubuf, "offset": offset, "size": len(d.uniforms)}})
                cpass.set_pipeline(pipe)
                cpass.set_bind_group(0, device.create_bind_group(layout=bgl, entries=entries))
                cpass.dispatch_workgroups(*d.workgroups)
                if timed:
                    cpass.end()
            if not timed:
                cpass.end()
            if timed:
                stamps = device.create_buffer(size=16 * len(batch), usage=usage.QUERY_RESOLVE | usage.COPY_SRC)
                encoder.resolve_query_set(queries, 0, 2 * len(batch), stamps, 0)
                self._timings.append((stamps, [d.pipeline.label for d in batch]))
            self._queue.submit([encoder.finish()])
        except wgpu.GPUValidationError as exc:
            raise _typed(exc, f"submitting {len(batch)} dispatches") from None

    async def _read(self, reads: list[tuple[Any, int]]) -> list[bytes]:
        try:
            return self._read_staged(reads)
        except Exception as exc:  # noqa: BLE001 - wgpu raises plain errors on a lost device
            raise _typed(exc, f"reading {sum(n for _, n in reads):,} bytes") from None

    def _read_staged(self, reads: list[tuple[Any, int]]) -> list[bytes]:
        # One MAP_READ staging buffer, grown on demand: much faster than queue.read_buffer's fresh one.
        # Every buffer of `reads` is copied in by one submission and mapped once.
        offsets, total = [], 0
        for _, nbytes in reads:
            offsets.append(total)
            total += -(-nbytes // 8) * 8
        if self._staging is None or self._staging.size < total:
            self._staging = self._device.create_buffer(
                size=max(total, 1 << 16), usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
        encoder = self._device.create_command_encoder()
        for (handle, nbytes), offset in zip(reads, offsets):
            encoder.copy_buffer_to_buffer(handle, 0, self._staging, offset, nbytes)
        self._queue.submit([encoder.finish()])
        self._staging.map_sync(wgpu.MapMode.READ, 0, total)
        try:
            whole = self._staging.read_mapped(0, total, copy=False)
            return [bytes(whole[o:o + n]) for (_, n), o in zip(reads, offsets)]
        finally:
            self._staging.unmap()

    def destroy_for_test(self) -> None:
        self._device.destroy()

    def close(self) -> None:
        self._pending.clear()
        self._pipelines.clear()
        if self._raw is not None:
            self._raw.destroy()


def _typed(exc: Exception, what: str) -> Exception:
    """wgpu's exception as gpuport's typed error (device lost, out of memory, timeout, validation)."""
    typed = classify(exc, what)
    if typed is exc:
        return GpuValidationError(f"{what}: {_compiler_text(exc)}")
    return typed


def _compiler_text(exc: Exception) -> str:
    """wgpu-py's message minus its boilerplate header, keeping naga's full text (with wgsl:LINE:COL)."""
    text = str(exc)
    text = re.sub(r"^Validation Error\s*\n\s*Caused by:\s*\n\s*In wgpu\w+\s*\n", "", text)
    return text.strip()

