"""The runtime's pipeline cache: what outlives a device. It keeps the pipeline manifest (loaded at open,
saved as pipelines are created), the specs this runtime compiled (rebuilt on a new device after a loss)
and which ops are still precompiling, and it runs precompilation. Devices only hold their own compiled
pipelines and tell the cache (as its PipelineObserver) what they create or drop.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..backends.io import RecordStore
from ..ops.opspecs import ALIASES, KERNEL_DEFS, OPS
from ..ops.pipelines import PipelineManifest, PipelineSpec, scope_key

if TYPE_CHECKING:
    from ..backends.base import Backend, Pause
    from ..placement import Planner

ESSENTIAL_OPS = ("matmul", "add", "gelu", "layer_norm", "softmax", "attention")
# kernel name -> the op it serves (variants serve their op)
_OP_OF = {name: spec.name for name, (spec, _) in KERNEL_DEFS.items()}


class PipelineCache:
    """Owned by a runtime; attached to each device it uses in turn."""

    def __init__(self, store: RecordStore, version: str) -> None:
        self.store, self.version = store, version
        self.manifest: PipelineManifest | None = None
        self.scope = ""
        self.busy: set[str] = set()                       # ops whose pipelines precompile() is building
        self.used: dict[PipelineSpec, None] = {}         # specs compiled in this runtime, in order
        self.profiler: Any = None                        # a profiler.Profile while one is open
        self.ran: Counter[str] = Counter()               # dispatches per kernel (its pipeline's label), every device
        self.recording = True                            # whether created pipelines enter the manifest

    def attach(self, device: "Backend") -> None:
        """Observe `device` (the first one, or the new one after a device loss)."""
        self.scope = scope_key(device.adapter_info, device.browser, device.features, self.version)
        device.observer = self

    async def load(self) -> None:
        """Adopt the stored manifest (corrupt, foreign or stale parts are dropped and rewritten)."""
        manifest = PipelineManifest.from_json(self.scope, await self.store.load(self.scope))
        # only the kernels it names: reading all 43 WGSL files the first time took 23-45 ms of a warm page's open(),
        # whose manifest on a software adapter names none
        labels = {entry.label for entry in manifest.entries.values()}
        manifest.drop_stale({name: k.source for name, (_, k) in KERNEL_DEFS.items() if name in labels})
        manifest.loaded = len(manifest.entries)
        manifest.dirty = manifest.dirty or manifest.repaired is not None   # a repaired record is rewritten at once
        self.manifest = manifest
        self.save()

    def save(self) -> None:
        """Persist the manifest if it changed (cheap when it did not)."""
        if self.manifest is not None and self.manifest.dirty:
            self.manifest.dirty = False
            self.store.save_soon(self.scope, self.manifest.to_json())

    @contextmanager
    def unrecorded(self) -> Iterator[None]:
        """Pipelines created in the block stay out of the manifest: work no placement sent to the device (auto's
        calibration), which the next start must not build ahead."""
        self.recording = False
        try:
            yield
        finally:
            self.recording = True

    # -- PipelineObserver ---------------------------------------------------------------------------------
    def compiled(self, spec: PipelineSpec, ms: float) -> None:
        self.used[spec] = None
        if self.profiler is not None:
            self.profiler.compiled(spec.label, ms)
        if self.manifest is not None and self.recording and spec.remember:
            self.manifest.record(spec, ms)
            if not self.busy:   # precompile() saves once at its end
                self.save()

    def dispatched(self, label: str) -> None:
        self.ran[label] += 1

    def failed(self, label: str) -> None:
        """A pipeline that turned out not to compile: never retried at a later start. Saved at once: a
        runtime on NumPy (auto) may never flush again."""
        self.used = {s: None for s in self.used if s.label != label}
        if self.manifest is not None:
            self.manifest.forget(label)
            self.save()

    # -- precompilation -------------------------------------------------------------------------------------
    async def precompile(self, device: "Backend", planner: "Planner", ops: Sequence[str] | None = None,
                         on_progress: Callable[[dict[str, Any]], None] | None = None, own: bool = True,
                         pause: "Pause | None" = None) -> dict[str, Any]:
        """Create every pipeline the manifest remembers (or those of `ops`) plus, with `own`, each op's own, in
        first-use order, on `device` (`pause` awaited before each starts). Returns a report: pipelines (created
        now), from_manifest, already (existed), failed, ms, recorded_ms (their stored compile time: far above ms
        means a warm shader cache), order, ops (those whose pipelines it built)."""
        t0 = time.perf_counter()
        report: dict[str, Any] = {"pipelines": 0, "from_manifest": 0, "already": 0, "failed": [], "ms": 0.0,
                                  "recorded_ms": 0.0, "order": []}
        names = list(OPS) if ops is None else [ALIASES.get(o, o) for o in ops]
        unknown = [n for n in names if n not in OPS]
        if unknown:
            raise ValueError(f"precompile: unknown ops {unknown}; known: {sorted(OPS)}")
        specs: dict[PipelineSpec, None] = {}
        stored: set[PipelineSpec] = set()
        for entry in self.manifest.ordered() if self.manifest is not None else []:
            if ops is None or _OP_OF.get(entry.label) in names:
                spec = self.manifest.spec_of(entry)
                specs[spec] = None
                stored.add(spec)
                report["recorded_ms"] += entry.compile_ms
        for op in names if own else ():
            specs.update(dict.fromkeys(planner.pipeline_specs(op)))
        have = device.pipelines
        todo = [s for s in specs if s not in have]
        report["already"] = len(specs) - len(todo)
        left: dict[str, int] = {}
        for spec in todo:
            if spec.label in _OP_OF:
                left[_OP_OF[spec.label]] = left.get(_OP_OF[spec.label], 0) + 1
        self.busy = set(left)
        done = 0

        def on_done(spec: PipelineSpec, ms: float, error: Exception | None) -> None:
            nonlocal done
            done += 1
            op = _OP_OF.get(spec.label)
            if op in left:
                left[op] -= 1
                if not left[op]:
                    self.busy.discard(op)
            if error is None:
                report["pipelines"] += 1
                report["order"].append(spec.label)
                report["from_manifest"] += spec in stored
            else:
                report["failed"].append({"label": spec.label, "error": str(error)})
                device.forget(spec.label)
            if on_progress is not None:
                on_progress({"stage": "compile", "done": done, "total": len(todo), "label": spec.label,
                             "ms": round(ms, 2), "error": None if error is None else str(error)})

        try:
            await device.precompile(todo, on_done, pause)
        finally:
            self.busy = set()
        report["ops"] = sorted({_OP_OF[label] for label in report["order"] if label in _OP_OF})
        report["ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        report["recorded_ms"] = round(report["recorded_ms"], 2)
        self.save()
        return report

    async def rebuild(self, device: "Backend") -> int:
        """After a device loss: create on `device` every pipeline this runtime had compiled. Returns how
        many were rebuilt (one that no longer compiles raises later, in the op that needs it)."""
        built = []
        await device.precompile(list(self.used), lambda spec, ms, err: built.append(err is None))
        return sum(built)


class ShaderPrecompiler:
    """Precompilation by op group (the essential ops, one op) over `Runtime.precompile`."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    async def precompile_essential_shaders(self, on_progress: Any = None) -> dict[str, Any]:
        """The pipelines of the ops every transformer needs, plus what the manifest remembers of them."""
        return await self.rt.precompile(ops=ESSENTIAL_OPS, on_progress=on_progress)

    async def precompile_operation(self, name: str, on_progress: Any = None) -> dict[str, Any]:
        return await self.rt.precompile(ops=[name], on_progress=on_progress)
