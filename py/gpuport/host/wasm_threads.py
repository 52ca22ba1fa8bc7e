"""The page's host kernels on every core: the threaded WebAssembly build (gpuport_simd_threads.wasm) on a pool of
Web Workers (web/threads.js), all sharing one memory of the module's own.

Pyodide's heap cannot be shared with workers, so unlike wasm_kernels (whose kernels read NumPy buffers in
place) this engine copies: every op of SimdKernels works here, its arrays copied into the pool's memory for
the call and its results copied back. What lives on is uploaded once, as the device path uploads to the GPU:
packed matmul weights and a llama block's stored blocks stay in the pool's memory for as long as their arrays
live, and a KV cache keeps a shadow there: the rows a call writes go back to NumPy's arrays (the truth), rows
it has not written come from them, and a model that rewrites rows in NumPy says so (rows_changed). So hostops sends it only whole layers (an encoder layer, a llama block, the head's product), where
the copies are small beside the work.

Page-only: `attach` takes what web/threads.js's startPool answered, and `start` attaches it once it has answered
(jsmodules.register starts the pool so: its workers join while the page goes on, and ops meanwhile run on one
thread; `await ready()` waits for it); anywhere else `available()` is False and `reason()` says why. `threads()`
is the pool's size, the caller included.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from contextlib import contextmanager
from typing import Any, Awaitable, Hashable, Iterator

import numpy as np

from ..errors import OutOfMemory
from .host_abi import ABI
from .simd_ops import SimdKernels, linked

_ALIGN = 64
_NOT_STARTED = ("not started: the threaded kernels exist only in a cross-origin isolated page, where "
                "gpuport.open() starts their workers (backends/jsmodules.py)")
_STARTING = "starting: the pool's workers are joining it (until then whole layers run on this thread)"


def _span(a: np.ndarray) -> int:
    """Bytes from an array's first element to the end of its last (a strided view spans its gaps)."""
    if a.flags.c_contiguous:
        return a.nbytes
    return int(sum((n - 1) * s for n, s in zip(a.shape, a.strides)) + a.itemsize) if a.size else 0


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class Arena:
    """First-fit allocation of 64-byte aligned blocks in the pool's memory above `start`. `grow(nbytes)`
    makes the memory at least that large and returns its size (it raises where the memory cannot grow)."""

    def __init__(self, start: int, size: int, grow: Any) -> None:
        start = -(-start // _ALIGN) * _ALIGN
        self.grow_to, self.end = grow, size
        self.free: list[tuple[int, int]] = [(start, size - start)] if size > start else []   # (address, bytes), sorted
        self.used: dict[int, int] = {}

    def alloc(self, nbytes: int) -> int:
        """The address of a new block of at least `nbytes`."""
        need = max(_ALIGN, -(-int(nbytes) // _ALIGN) * _ALIGN)
        for i, (at, size) in enumerate(self.free):
            if size >= need:
                self.free[i:i + 1] = [(at + need, size - need)] if size > need else []
                self.used[at] = need
                return at
        tail = self.free[-1] if self.free and self.free[-1][0] + self.free[-1][1] == self.end else None
        base = tail[0] if tail else self.end
        try:
            new_end = int(self.grow_to(base + need + max(need, 16 << 20)))   # room for the next ones too
        except Exception as exc:   # the engine's RangeError, as a JsException in a page
            raise OutOfMemory(f"the thread pool's memory cannot grow past {self.end} bytes to hold {need} more: "
                              f"{exc}") from None
        if new_end < base + need:
            raise OutOfMemory(f"the thread pool's memory cannot grow past {self.end} bytes to hold {need} more")
        if tail:
            self.free.pop()
        self.free.append((base, new_end - base))
        self.end = new_end
        return self.alloc(nbytes)

    def release(self, address: int) -> None:
        """Give a block back (neighbouring free blocks merge)."""
        size = self.used.pop(address)
        free = sorted(self.free + [(address, size)])
        merged: list[tuple[int, int]] = []
        for at, n in free:
            if merged and merged[-1][0] + merged[-1][1] == at:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((at, n))
        self.free = merged

    def in_use(self) -> int:
        """Bytes allocated now."""
        return sum(self.used.values())


class _Block:
    """A block of the arena, given back when this object is collected."""

    def __init__(self, arena: Arena, nbytes: int) -> None:
        self.address = arena.alloc(nbytes)
        weakref.finalize(self, arena.release, self.address)


class _Paced:
    """One kind of call begun with the workers asleep and run one way (woken, or alone): how many ran so, and the
    milliseconds of the latest (a woken call here takes its two-thread time or more than its one-thread time, in
    spells of a few calls: the latest says more about the next than a median of earlier ones)."""

    def __init__(self) -> None:
        self.ms = math.inf
        self.count = 0

    def add(self, ms: float) -> None:
        self.ms = ms
        self.count += 1


# a kind of call begun with the workers asleep runs woken TRIES times (woken, it takes its two-thread time or far
# more, by turns), then alone ALONE_TRIES times (one thread, no wake-up: CLIP's one text took 15.4-16.1 ms in 3 tries
# where woken it took 9.4-10.6, and those 3 tries were the median of the page bench's 7 calls), then the way whose
# latest call was faster, the other tried again every EXPLORE_EVERY[other] calls (the machine's load changes):
# woken, whose time moves with the machine's load, every 4; alone, steady, every 16. With medians of each way's
# last 5 calls and a try every 16, a spell of slow woken calls (the page's calibration beside them, say) had kept a
# sentence alone (8.9-10.5 ms a call) for the rest of the page bench's case in 4 of its 12 pages, where woken took
# 5.5-7.5 in most calls. A call that takes ALONE_BELOW_MS or more woken is never tried alone: alone it takes nearly
# twice its two-thread time, more than a worker's wake-up costs (8 sentences: 20-33 ms woken, 35-39 alone), where a
# sentence's layers take 5-14 ms woken and 8 alone.
TRIES, ALONE_TRIES, ALONE_BELOW_MS = 3, 1, 16.0
EXPLORE_EVERY = {"woken": 4, "alone": 16}


class _Shadow:
    """A KV cache's copy in the pool's memory: `valid` rows from the start match NumPy's."""

    def __init__(self, arena: Arena, cache: np.ndarray) -> None:
        self.block, self.block_bytes, self.valid = _Block(arena, cache.nbytes), cache.nbytes, 0


class PoolKernels(SimdKernels):
    """SimdKernels on the threaded build: arrays copied into the pool's memory per call (what lives on, kept)."""

    def __init__(self) -> None:
        super().__init__(None, _NOT_STARTED, name="wasm-threads")
        self.pool: Any = None
        self.arena: Arena | None = None
        # Per call: copies go to one block, bump-allocated and reset by _done (an arena allocation per copy cost
        # tens of microseconds in Pyodide, hundreds per decode step); a call needing more spills into blocks of
        # its own, and the next call's block is as large as this one's peak.
        self._temps: list[_Block] = []
        self._temp_block: _Block | None = None
        self._temp_size = self._temp_used = self._temp_peak = 0
        self._back: list[tuple[int, int, int]] = []   # (NumPy address, pool address, bytes) to copy back
        self._kept_at: dict[int, tuple[weakref.ref, _Block]] = {}
        self._shadows: dict[int, tuple[weakref.ref, _Shadow]] = {}
        self._scratch_block: _Block | None = None
        self._scratch_bytes = 0
        self.cap: int | None = None
        self._starting: asyncio.Future | None = None
        self._alone = False   # this call's layers run on this thread alone (call())
        self.last_way = ""    # how the latest call() ran: awake, woken, alone or one thread
        self._paced: dict[tuple[Hashable, str], _Paced] = {}
        self._asked: dict[Hashable, int] = {}

    def start(self, pending: Awaitable[Any]) -> None:
        """Attach the pool `pending` (web/threads.js's startPool) answers, once it has: gpuport.open() waited
        35-126 ms for its workers to join in warm Chromium visits, and nothing needs them before a model's
        first layers. Meanwhile available() is False and reason() says it is starting; a start that raises
        leaves its error as the reason."""
        self.attach(_Record(_STARTING))
        self._starting = task = asyncio.ensure_future(pending)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Future) -> None:
        if task is not self._starting:   # attached to another since
            return
        self._starting = None
        if task.cancelled():
            self.attach(_Record("its start was cancelled"))
        elif task.exception() is not None:
            self.attach(_Record(f"it did not start: {task.exception()}"))
        else:
            self.attach(task.result())

    async def ready(self) -> None:
        """Wait until the pool start() began has joined, or said why not (at once when none is starting)."""
        if self._starting is not None:
            await asyncio.wait([self._starting])

    def attach(self, record: Any) -> None:
        """Use the pool web/threads.js started (or its reason for starting none)."""
        self._starting = None
        self.clear_cache()
        self._paced.clear()
        self._asked.clear()
        self._kept_at.clear()
        self._shadows.clear()
        self._scratch_block, self._scratch_bytes = None, 0
        self._temps.clear()
        self._temp_block, self._temp_size, self._temp_used, self._temp_peak = None, 0, 0, 0
        if not record.available:
            self.lib, self.why, self.pool, self.arena = None, str(record.reason), None, None
            return
        self.lib, self.why = linked(record.kernels, "gpuport_simd_threads.wasm")
        self.pool = record if self.lib is not None else None
        self.arena = Arena(int(record.arenaStart), int(record.size()), record.grow) if self.pool else None

    def threads(self) -> int:
        """Threads the pool runs a kernel on (this one and its workers, at most use_threads'; 1 inside a call() that
        runs alone); 1 without a pool."""
        if not self.available() or self._alone:
            return 1
        return min(int(self.pool.threads), self.cap or int(self.pool.threads))

    @contextmanager
    def call(self, kind: Hashable) -> Iterator[None]:
        """One model call's layers (`kind`: what they are and their size, e.g. an encoder's width, depth and rows):
        on the workers where they are awake (spinning after a call just before, or lingering, up to a second after
        it: hostkernels/pool.c), told at once so they spin by its first phase; asleep, woken for it only where
        calls of this kind that began so ran faster woken than on this thread alone (woken TRIES times, alone
        ALONE_TRIES, then the way whose latest call was faster, the other again every EXPLORE_EVERY[other] calls).
        Here a worker asleep took longer to wake than one sentence's six layers, and, woken, slowed this thread:
        MiniLM's sentence 9-11 ms woken against 6 alone (Firefox and Chromium alike). A call that takes
        ALONE_BELOW_MS or more woken is not tried alone."""
        if self.threads() <= 1:
            self.last_way = "one thread"
            yield
            return
        if int(self.lib.gp_pool_awake()) > 0:
            self.last_way = "awake"
            self.lib.gp_pool_wake()   # a lingering worker's next tick finds it and spins until the first phase
            yield
            return
        way = self.last_way = self._way(kind)
        if way == "woken":
            self.lib.gp_pool_wake()   # now, so that the wake-up overlaps this thread's first phase
        self._alone = way == "alone"
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._alone = False
        self._paced.setdefault((kind, way), _Paced()).add((time.perf_counter() - t0) * 1e3)

    def _way(self, kind: Hashable) -> str:
        """"woken" or "alone" for a call of `kind` begun with the workers asleep (see call)."""
        woken, alone = self._paced.get((kind, "woken")), self._paced.get((kind, "alone"))
        if woken is None or woken.count < TRIES:
            return "woken"
        if woken.ms >= ALONE_BELOW_MS:
            return "woken"
        if alone is None or alone.count < ALONE_TRIES:
            return "alone"
        best, other = ("woken", "alone") if woken.ms <= alone.ms else ("alone", "woken")
        self._asked[kind] = asked = self._asked.get(kind, 0) + 1
        return other if asked % EXPLORE_EVERY[other] == 0 else best

    def paced(self) -> dict[str, dict[str, list[float]]]:
        """What call() measured: per kind of call, each way's latest ms and count (for reports)."""
        out: dict[str, dict[str, list[float]]] = {}
        for (kind, way), seen in self._paced.items():
            out.setdefault(str(kind), {})[way] = [round(seen.ms, 2), seen.count]
        return out

    def use_threads(self, n: int | None) -> None:
        """Run layers on at most `n` of the pool's threads from now on (None: all of them): to measure what the
        pool buys, or to leave cores to the page."""
        if n is not None and int(n) < 1:
            raise ValueError(f"use_threads: at least 1 thread, not {n}")
        self.cap = None if n is None else int(n)

    def memory_bytes(self) -> int:
        """The size of the pool's memory (it only grows)."""
        return int(self.pool.size()) if self.available() else 0

    # -- the hooks: copies between NumPy's memory and the pool's --------------------------------------------

    def _need(self, kernel: str | None = None) -> Any:
        # Every op calls this before its first copy: what a call that raised half-way left is dropped, never
        # copied back into arrays that may be gone.
        lib = super()._need(kernel)
        self._back.clear()
        self._reset_temps()
        return lib

    def _temp(self, nbytes: int) -> int:
        need = -(-nbytes // _ALIGN) * _ALIGN
        self._temp_peak += need
        if self._temp_used + need <= self._temp_size:
            assert self._temp_block is not None
            at = self._temp_block.address + self._temp_used
            self._temp_used += need
            return at
        assert self.arena is not None
        spill = _Block(self.arena, need)
        self._temps.append(spill)
        return spill.address

    def _reset_temps(self) -> None:
        self._temps.clear()
        if self._temp_peak > self._temp_size:
            assert self.arena is not None
            self._temp_block = None   # given back before the larger one is taken
            self._temp_size = max(self._temp_peak, 2 * self._temp_size)
            self._temp_block = _Block(self.arena, self._temp_size)
        self._temp_used = self._temp_peak = 0

    def _at(self, a: np.ndarray) -> int:
        n = _span(a)
        at = self._temp(n)
        if n:
            self.pool.put(at, _address(a), n)
        return at

    def _out(self, a: np.ndarray) -> int:
        n = _span(a)
        at = self._temp(n)
        self._back.append((_address(a), at, n))
        return at

    def _io(self, a: np.ndarray) -> int:
        at = self._at(a)
        self._back.append((_address(a), at, _span(a)))
        return at

    def _kept(self, a: np.ndarray) -> int:
        hit = self._kept_at.get(id(a))
        if hit is not None and hit[0]() is a:
            return hit[1].address
        assert self.arena is not None
        block = _Block(self.arena, _span(a))
        self.pool.put(block.address, _address(a), _span(a))
        kept, key = self._kept_at, id(a)
        self._kept_at[key] = (weakref.ref(a, lambda _r: kept.pop(key, None)), block)
        return block.address

    def _rows(self, cache: np.ndarray, start: int, count: int) -> int:
        # Keyed by the array the cache views and where it starts: a model passes a fresh view of the same
        # layer's rows every step.
        root = cache
        while isinstance(root.base, np.ndarray):
            root = root.base
        base = _address(cache)
        key = (id(root), base)
        hit = self._shadows.get(key)
        if hit is None or hit[0]() is not root or hit[1].block_bytes != cache.nbytes:
            assert self.arena is not None
            shadows = self._shadows
            hit = (weakref.ref(root, lambda _r: shadows.pop(key, None)), _Shadow(self.arena, cache))
            shadows[key] = hit
        shadow, row, at = hit[1], cache.strides[0], hit[1].block.address
        # Rows before `start` the kernel reads: the shadow holds them up to `valid` (rows it wrote, and that
        # went back to NumPy; rows_changed() forgets them when NumPy rewrites its own).
        lo = min(shadow.valid, start)
        if start > lo:
            self.pool.put(at + lo * row, base + lo * row, (start - lo) * row)
        shadow.valid = start + count
        self._back.append((base + start * row, at + start * row, count * row))
        return at

    def rows_changed(self, cache: np.ndarray) -> None:
        for key, (ref, shadow) in list(self._shadows.items()):
            root = ref()
            if root is not None and np.may_share_memory(root, cache):
                shadow.valid = 0

    def _done(self) -> None:
        for to, frm, n in self._back:
            if n:
                self.pool.take(to, frm, n)
        self._back.clear()
        self._reset_temps()

    def _buffer(self, nfloats: int) -> tuple[Any, int]:
        assert self.arena is not None
        block = _Block(self.arena, nfloats * 4)
        return block, block.address

    def _scratch(self, nfloats: int) -> int:
        if self._scratch_block is None or self._scratch_bytes < nfloats * 4:
            assert self.arena is not None
            self._scratch_block = None   # given back before the larger one is taken
            self._scratch_bytes = max(nfloats * 4, 2 * self._scratch_bytes)
            self._scratch_block = _Block(self.arena, self._scratch_bytes)
        return self._scratch_block.address


class _Record:
    """A pool record with no pool, and why (web/threads.js's unavailable() answers the same shape)."""

    available = False

    def __init__(self, reason: str) -> None:
        self.reason = reason


ENGINE = PoolKernels()
# The module's API is the engine's, as wasm_kernels' (tests/wasm_cases.py runs on either); _PACKED is for tests.
_PACKED, OPS = ENGINE.packed, ENGINE.ops
matmul, gelu, quick_gelu, softmax = ENGINE.matmul, ENGINE.gelu, ENGINE.quick_gelu, ENGINE.softmax
layer_norm, attention = ENGINE.layer_norm, ENGINE.attention
q_matmul, llama_block, llama_layers = ENGINE.q_matmul, ENGINE.llama_block, ENGINE.llama_layers
available, reason, clear_cache, measure = ENGINE.available, ENGINE.reason, ENGINE.clear_cache, ENGINE.measure
attach, start, ready, threads, use_threads = ENGINE.attach, ENGINE.start, ENGINE.ready, ENGINE.threads, ENGINE.use_threads

__all__ = ["ABI", "ENGINE", "OPS", "Arena", "PoolKernels", "attach", "attention", "available", "clear_cache", "gelu",
           "layer_norm", "llama_block", "llama_layers", "matmul", "measure", "q_matmul", "quick_gelu", "ready", "reason", "softmax", "start",
           "threads", "use_threads"]
