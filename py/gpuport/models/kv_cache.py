"""KV caches of a generation (a llama's, Whisper's decoder): keys and values of every layer for positions 0..length-1.

`DeviceKVCache` keeps them on the runtime's device and appends each forward's new rows in place (kv_write.wgsl,
one dispatch per buffer the rows land in). Two layouts:
- contiguous: one (capacity, kv_heads*D) buffer per layer for K and for V, sized for the whole generation;
- partitioned (memory level >= 1, and always under the constrained tier): fixed-size blocks of `block` positions
  allocated as the sequence grows; kv_attention sees the blocks as one blocked tensor and the planner's
  partitioned_kv strategy runs one dispatch per block (online softmax across them).
`HostKVCache` is the llama host forward's (NumPy arrays, grown by whole blocks); `HostRowCache` the Whisper
decoder's on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ContextLengthExceeded
from ..tensor.storage import Blocks, Buffer, Storage
from ..tensor.tensor import Tensor

F32 = np.dtype(np.float32)


class DeviceKVCache:
    """Device-resident KV cache of `layers` layers, rows of `width` = kv_heads*head_dim floats."""

    def __init__(self, rt: Any, layers: int, width: int, capacity: int, *, block: int | None = None) -> None:
        self.rt, self.layers, self.width, self.capacity = rt, layers, width, capacity
        self.block = block                       # None: contiguous, sized for `capacity` at once
        self.length = 0
        # per layer: K buffers and V buffers (one each when contiguous; one per block when partitioned)
        self._k: list[list[Any]] = [[] for _ in range(layers)]
        self._v: list[list[Any]] = [[] for _ in range(layers)]
        self._rows_per_buffer = capacity if block is None else block
        if block is None:
            for i in range(layers):
                self._grow(i)

    @property
    def partitioned(self) -> bool:
        """Stored as fixed-size blocks (allocated on demand)."""
        return self.block is not None

    @property
    def allocated_rows(self) -> int:
        """Positions the buffers allocated so far can hold."""
        return len(self._k[0]) * self._rows_per_buffer if self.layers else 0

    @property
    def nbytes(self) -> int:
        """Device bytes the cache holds (K and V, every layer)."""
        return 2 * self.layers * self.allocated_rows * self.width * 4

    def _grow(self, layer: int) -> None:
        size = self._rows_per_buffer * self.width
        self._k[layer].append(self.rt.cache_buffer(size))
        self._v[layer].append(self.rt.cache_buffer(size))

    def reserve(self, new_rows: int) -> None:
        """Make room for `new_rows` more positions (ContextLengthExceeded past the capacity)."""
        need = self.length + new_rows
        if need > self.capacity:
            raise ContextLengthExceeded(self.capacity, need, "KV cache")
        while self.allocated_rows < need:
            for i in range(self.layers):
                self._grow(i)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write rows k, v (T, width) at positions length..length+T-1 of `layer` (reserve first), in place; the
        layer's cache as tensors of the allocated rows (blocked when partitioned) for kv_attention."""
        t = k.shape[0]
        per = self._rows_per_buffer
        for src, bufs in ((k, self._k[layer]), (v, self._v[layer])):
            r = self.length
            while r < self.length + t:
                b, off = divmod(r, per)
                n = min(per - off, self.length + t - r)
                self.rt.write_into(bufs[b], src, n * self.width, (r - self.length) * self.width, off * self.width)
                r += n
        return self.view(layer), self.view(layer, values=True)

    def view(self, layer: int, values: bool = False) -> Tensor:
        """The layer's K (or V) cache as a tensor of the allocated rows."""
        bufs = (self._v if values else self._k)[layer]
        rows = len(bufs) * self._rows_per_buffer
        if self.block is None:
            storage: Storage = Buffer(bufs[0])
        else:
            step = self.block * self.width
            storage = Blocks([i * step for i in range(len(bufs) + 1)], list(bufs))
        return Tensor(self.rt, storage, (rows, self.width), F32)

    def free(self) -> None:
        """Drop every buffer (the generation ended)."""
        self._k = [[] for _ in range(self.layers)]
        self._v = [[] for _ in range(self.layers)]
        self.length = 0


class HostKVCache:
    """The host forward's cache: k, v arrays (layers, rows, kv_heads, head_dim), grown by `block` rows at a time
    (the shape llama_ref.block writes into)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, block: int = 64) -> None:
        self.capacity, self.block = capacity, block
        self.k = np.zeros((layers, 0, kv_heads, head_dim), np.float32)
        self.v = np.zeros_like(self.k)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def reserve(self, new_rows: int) -> None:
        """Room for `new_rows` more positions (ContextLengthExceeded past the capacity)."""
        need = self.length + new_rows
        if need > self.capacity:
            raise ContextLengthExceeded(self.capacity, need, "KV cache")
        if need > self.k.shape[1]:
            rows = min(self.capacity, -(-need // self.block) * self.block)
            pad = ((0, 0), (0, rows - self.k.shape[1]), (0, 0), (0, 0))
            self.k, self.v = np.pad(self.k, pad), np.pad(self.v, pad)

    def free(self) -> None:
        self.k = self.v = np.zeros((0, 0, 0, 0), np.float32)
        self.length = 0


class HostRowCache:
    """Keys and values (layers, capacity, width) where a decoder runs on the host (Whisper's): rows appended to NumPy
    arrays, handed to kv_attention as host tensors of the rows so far (DeviceKVCache's interface), or written in
    place by a fused host step."""

    def __init__(self, rt: Any, layers: int, width: int, capacity: int) -> None:
        self.rt, self.capacity, self.length = rt, capacity, 0
        self.k = np.zeros((layers, capacity, width), np.float32)
        self.v = np.zeros_like(self.k)

    def reserve(self, new_rows: int) -> None:
        if self.length + new_rows > self.capacity:
            raise ContextLengthExceeded(self.capacity, self.length + new_rows, "the decoder's KV cache")

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[0]
        self.k[layer, self.length:end] = k.known_values()
        self.v[layer, self.length:end] = v.known_values()
        return self.rt.tensor(self.k[layer, :end]), self.rt.tensor(self.v[layer, :end])

    def free(self) -> None:
        self.k = self.v = np.zeros((0, 0, 0), np.float32)


__all__ = ["DeviceKVCache", "HostKVCache", "HostRowCache"]
