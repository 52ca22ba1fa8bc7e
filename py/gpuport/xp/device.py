"""The namespace on one runtime's device: stores allocated and uploaded, generated kernels compiled and dispatched
(with recovery around them, counted per kernel family), lazy expressions evaluated, device values read back.

Generated pipelines are labelled `xp_<family>:<hash of the WGSL>` (rt.info()["kernels"] counts dispatches per label,
the coverage matrix per family); a device compiles each once and reuses it for every shape and scalar value. They
stay out of the pipeline manifest: they are made per expression, and a session may evaluate thousands.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import LimitExceeded
from ..ops.kernels import grid
from ..ops.pipelines import PipelineSpec
from .codegen import Builder, store_conversion
from .dtypes import REPS, WORDS, from_words, word_values
from .graph import Expr, Store, View, size_of

if TYPE_CHECKING:
    from ..runtime import Runtime

FAMILIES = ("elementwise", "reduce", "scan", "sort", "search", "scatter", "matmul")


@dataclass
class Stats:
    """What one runtime's namespace dispatched: per kernel family, and the element-wise functions fused into
    each element-wise dispatch."""

    dispatches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0))
    fused_functions: int = 0     # element-wise functions evaluated by element-wise dispatches, in all
    compiled: set[str] = field(default_factory=set)   # the generated pipelines' labels

    def as_dict(self) -> dict[str, object]:
        return {"dispatches": dict(self.dispatches), "fused_functions": self.fused_functions,
                "pipelines": len(self.compiled)}


_STATS: "weakref.WeakKeyDictionary[Runtime, Stats]" = weakref.WeakKeyDictionary()
_SPECS: dict[tuple[str, str], PipelineSpec] = {}


def stats(rt: "Runtime") -> Stats:
    """The namespace's counters on `rt`."""
    found = _STATS.get(rt)
    if found is None:
        found = _STATS[rt] = Stats()
    return found


def workgroup_size(rt: "Runtime") -> int:
    """The elementwise workgroup size the runtime's planner uses (the tier's, a power of two)."""
    return rt.placement.planner.wg()


def max_groups(rt: "Runtime") -> int:
    return int(rt.limits.get("maxComputeWorkgroupsPerDimension", 65535))


def max_inputs(rt: "Runtime") -> int:
    """Input stores one generated kernel may bind: the stage's storage buffers less the outputs (two at most)."""
    return int(rt.limits.get("maxStorageBuffersPerShaderStage", 8)) - 2


# -- stores ---------------------------------------------------------------------------------------------------

def new_store(rt: "Runtime", dtype: np.dtype, size: int) -> Store:
    """A store of `size` values on the device (uninitialised: a kernel writes it)."""
    store = Store(rt, dtype, size)
    store.tensor = _alloc(rt, dtype, size, None)
    return store


def _alloc(rt: "Runtime", dtype: np.dtype, size: int, words: np.ndarray | None):
    word = WORDS[REPS[dtype].word]
    nbytes = max(size, 1) * 4
    if rt.memory.needs_blocks(nbytes):
        limit = rt.limits["maxStorageBufferBindingSize"]
        raise LimitExceeded("maxStorageBufferBindingSize", limit, nbytes,
                            f"a {dtype} array of {size:,} elements (gpuport.xp binds whole arrays)")
    with rt.lock:
        return rt.memory.alloc((max(size, 1),), word, host=words, oom=False)


def upload(store: Store) -> None:
    """Give a host store its device copy (both sides then hold the values)."""
    if store.tensor is not None:
        return
    assert store.host is not None
    words = word_values(store.host) if store.size else np.zeros(1, WORDS[REPS[store.dtype].word])
    store.tensor = _alloc(store.rt, store.dtype, store.size, words)


def written_on_device(store: Store) -> None:
    """A kernel wrote the store in place: its host copy no longer describes it."""
    store.host = None
    if store.tensor is not None:
        store.tensor.host = None


async def download(store: Store, blocking: bool) -> np.ndarray:
    """The store's values on the host, read back once and kept (both sides then hold them)."""
    if store.host is None:
        assert store.tensor is not None
        words = await store.rt.memory.read(store.tensor, blocking)
        store.host = np.ascontiguousarray(from_words(words.reshape(-1)[:store.size], store.dtype))
    return store.host


# -- dispatch -------------------------------------------------------------------------------------------------

def run(rt: "Runtime", family: str, source: str, builder: Builder, outputs: list[Store],
        workgroups: tuple[int, int, int]) -> None:
    """Compile (once per device) and dispatch a generated kernel: the builder's stores bind first, then
    `outputs`, then its uniform words."""
    key = (family, source)
    spec = _SPECS.get(key)
    if spec is None:
        label = f"xp_{family}:{hashlib.sha256(source.encode()).hexdigest()[:10]}"
        bindings = ("read",) * len(builder.stores) + ("rw",) * len(outputs) + ("uniform",)
        spec = _SPECS[key] = PipelineSpec(label, source, "main", (), bindings, remember=False)
    inputs = list(builder.stores)
    for s in inputs:
        upload(s)
    uniforms = builder.uniform_bytes()
    st = stats(rt)

    def go() -> None:
        pipeline = rt.device.compile(spec)
        st.compiled.add(spec.label)
        rt.device.dispatch(pipeline, workgroups, [s.tensor.buffer for s in inputs + outputs], uniforms)

    with rt.lock:
        rt.recovery.call(go, spec.label)
    st.dispatches[family] += 1
    for out in outputs:
        written_on_device(out)


def flat_groups(rt: "Runtime", invocations: int) -> tuple[int, int, int]:
    """Workgroups covering `invocations` threads of this runtime's workgroup size (over x and y past the limit)."""
    return grid(max(1, math.ceil(invocations / workgroup_size(rt))), max_groups(rt))


def thread_index(wg: int) -> str:
    """The WGSL of a thread's flat index over a grid made by flat_groups."""
    return f"  let i = gid.x + gid.y * nwg.x * {wg}u;\n"


def evaluate(rt: "Runtime", expr: Expr, functions: int = 0) -> View:
    """A lazy expression computed into a new store (one dispatch); `functions`: how many element-wise functions
    the dispatch fuses (counted)."""
    n = size_of(expr.shape)
    out = new_store(rt, expr.dtype, n)
    if n:
        b = Builder(reserved=1)
        b.words[0] = n
        fn = b.function(expr)
        rep = REPS[expr.dtype]
        wg = workgroup_size(rt)
        body = thread_index(wg) + f"  if (i < p.w[0].x) {{ out[i] = {store_conversion(rep, f'{fn}(i)')}; }}\n"
        run(rt, "elementwise", b.source([("out", rep.word)], body, wg), b, [out], flat_groups(rt, n))
        stats(rt).fused_functions += functions
    return View.whole(out, expr.shape)
