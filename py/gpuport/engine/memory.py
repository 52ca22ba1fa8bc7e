"""Device memory of one runtime: allocation (one buffer, or blocks of whole rows over the binding budget),
the memory budget and the out-of-memory ladder, residency moves to the device, readback, and the live
tensors recovery restores after a device loss."""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import LimitExceeded, OutOfMemory
from ..tensor.storage import Blocks, Buffer, Deferred, HostArray
from ..tensor.tensor import Tensor

if TYPE_CHECKING:
    from ..runtime import Runtime


class DeviceMemory:
    """Allocates the runtime's tensors on its device. `stores_blocks`: tensors over the binding budget are
    stored as blocks (only under a budget: the constrained tier, a quirk's or the caller's)."""

    def __init__(self, rt: "Runtime", stores_blocks: bool, budget_bytes: int | None) -> None:
        self.rt = rt
        self.stores_blocks = stores_blocks
        self.budget_bytes = budget_bytes
        self.live: "weakref.WeakSet[Tensor]" = weakref.WeakSet()   # GPU tensors, restored after a device loss
        # Bytes of device storage alive: each allocation's storage is shared by its views and counted once,
        # released when the last of them is gone (no scan of the live tensors per allocation).
        self._device_bytes = 0

    def needs_blocks(self, nbytes: int) -> bool:
        """Whether a tensor of this size is stored as blocks."""
        return self.stores_blocks and nbytes > self.rt.limits.get("maxStorageBufferBindingSize", nbytes)

    def track(self, t: Tensor) -> Tensor:
        if not t.on_host:
            self.live.add(t)
        return t

    def device_bytes(self) -> int:
        """Bytes of GPU buffers this runtime's tensors hold (views share their source's buffers)."""
        return self._device_bytes

    def _held(self, t: Tensor) -> Tensor:
        """Count t's new device storage until it is gone."""
        self._device_bytes += t.nbytes
        weakref.finalize(t.storage, self._release, t.nbytes)
        return t

    def _release(self, nbytes: int) -> None:
        self._device_bytes -= nbytes

    def alloc(self, shape: Sequence[int], dtype: np.dtype, host: np.ndarray | None = None,
              bounds: list[int] | None = None, oom: bool = True) -> Tensor:
        """A tensor on the device (tracked for recovery). Out of memory: recovery's ladder (retry, blocks,
        host). While a page waits for a new device: a deferred tensor, built on recovery."""
        rt = self.rt
        shape = tuple(int(s) for s in shape)
        if rt.lost and not rt.device.can_block:
            return self.track(Tensor(rt, Deferred(), shape, np.dtype(dtype), host))
        outside_op = rt.executor.depth == 0   # inside an op, a device loss retries the whole op instead
        if rt.lost and outside_op:
            rt.recovery.recover()
        try:
            if self.budget_bytes is not None:
                nbytes = math.prod(shape) * np.dtype(dtype).itemsize
                used = self.device_bytes()
                if used + nbytes > self.budget_bytes:
                    raise OutOfMemory(f"allocating {nbytes:,} bytes would exceed the runtime's memory budget of "
                                      f"{self.budget_bytes:,} bytes ({used:,} in use)")
            t = rt.recovery.call(lambda: self.alloc_raw(shape, dtype, host, bounds), "allocation", recover=outside_op)
        except OutOfMemory as exc:
            if not oom:
                raise
            t = rt.recovery.on_oom(exc, shape, np.dtype(dtype), host)
        return self.track(t)

    def alloc_raw(self, shape: tuple[int, ...], dtype: np.dtype, host: np.ndarray | None = None,
                  bounds: list[int] | None = None) -> Tensor:
        """A tensor on the device: one buffer, or blocks of whole rows when it exceeds the binding budget."""
        rt, device = self.rt, self.rt.device
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        nbytes = size * dtype.itemsize
        if bounds is None and not self.needs_blocks(nbytes):
            buffer = device.upload(host) if host is not None else device.alloc(shape, dtype)
            # the cpu backend's buffers are NumPy arrays: the host holds the values
            if device.is_host:
                return Tensor(rt, HostArray(buffer), shape, dtype, host)
            return self._held(Tensor(rt, Buffer(buffer), shape, dtype, host))
        limit = min(rt.limits.get("maxStorageBufferBindingSize", nbytes), rt.limits.get("maxBufferSize", nbytes))
        if bounds is None:
            per = limit // dtype.itemsize
            unit = shape[-1] if len(shape) >= 2 and 0 < shape[-1] <= per else 1
            step = max(unit, per // unit * unit)
            bounds = list(range(0, size, step)) + [size]
        for s, e in zip(bounds, bounds[1:]):
            if (e - s) * dtype.itemsize > limit:
                raise LimitExceeded("maxStorageBufferBindingSize", limit, (e - s) * dtype.itemsize,
                                    f"a block of a {dtype} tensor of shape {tuple(shape)}")
        flat = host.reshape(-1) if host is not None else None
        buffers = [device.upload(np.ascontiguousarray(flat[s:e])) if flat is not None
                   else device.alloc((e - s,), dtype) for s, e in zip(bounds, bounds[1:])]
        return self._held(Tensor(rt, Blocks(bounds, buffers), shape, dtype, host))

    def to_device(self, t: Tensor) -> None:
        """Move a host-resident tensor onto the GPU (it keeps its host values: known_values still works)."""
        host = t.known_values()
        moved = self.alloc(t.shape, t.dtype, host=np.ascontiguousarray(host), oom=False)
        if moved.on_host:
            raise OutOfMemory("no room on the device for a host-resident input")
        t.storage = moved.storage
        if t.host is None:
            t.host = host
        self.track(t)

    async def read(self, t: Tensor, blocking: bool = False) -> np.ndarray:
        """t's values, after every queued op that writes them has run (recovering a lost device first)."""
        with self.rt.lock:
            return await self.rt.recovery.call_async(lambda: self._read_once(t), "read", blocking)

    async def _read_once(self, t: Tensor) -> np.ndarray:
        t.usable()
        values = t.storage.values()
        if values is not None:
            return values.copy()
        device = self.rt.device
        if t.blocked:
            parts = [await device.download(b, (e - s,), t.dtype) for s, e, b in t.blocks.chunks()]
            return np.concatenate(parts).reshape(t.shape)
        return await device.download(t.buffer, t.shape, t.dtype)
