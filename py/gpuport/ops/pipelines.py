"""Pipeline specs and the pipeline manifest: every pipeline a runtime creates, remembered so the next start
can build them all up front (createComputePipelineAsync in the page) before the first op needs them.

A page cannot store compiled pipelines (the browser's own per-origin cache does that); what we keep is
the recipe: the specialised WGSL, entry point, constants, layout and first-use order. The manifest is
scoped to the adapter, the browser version, the enabled features and the gpuport version, so none of
those changing can ever reuse a stale entry; an entry whose WGSL no longer matches the shipped shader is
dropped; a corrupt, foreign, oversized or malformed record is ignored, reported and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from ..formats.records import (
    RecordError,
    need,
    need_dict,
    need_hex64,
    need_int,
    need_key,
    need_list,
    need_number,
    need_str,
    parse_json,
    report_bad_record,
    short_repr,
)

FORMAT = 1
MAX_ENTRIES = 256


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scope_key(adapter: dict[str, Any], browser: dict[str, Any] | None, features: Any, version: str) -> str:
    """Identity of everything that makes a compiled pipeline valid or not."""
    ident = {"adapter": {k: adapter.get(k) for k in ("vendor", "architecture", "device", "description")},
             "browser": (browser or {}).get("userAgent"), "features": sorted(features), "gpuport": version}
    return sha256(json.dumps(ident, sort_keys=True))[:24]


@dataclass(frozen=True)
class PipelineSpec:
    """Everything needed to create one pipeline (hashable: backends key their compiled pipelines by it)."""

    label: str
    source: str
    entry_point: str
    constants: tuple[tuple[str, float], ...]
    bindings: tuple[str, ...] | None
    # False: generated for one expression (gpuport.xp's kernels): the manifest keeps what a start needs, not every
    # expression a session evaluated (there may be thousands)
    remember: bool = True

    @property
    def constants_dict(self) -> dict[str, float]:
        return dict(self.constants)

    @cached_property
    def key(self) -> str:
        """A stable identity across processes (hash of WGSL, entry point, constants, layout)."""
        blob = json.dumps([self.source, self.entry_point, sorted(self.constants),
                           None if self.bindings is None else list(self.bindings)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class ManifestEntry:
    """How to rebuild one pipeline."""

    key: str
    label: str
    source: str
    source_sha256: str
    entry_point: str
    constants: dict[str, float]
    bindings: list[str] | None
    order: int
    compile_ms: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, field: str = "entry") -> "ManifestEntry":
        """An entry as to_json wrote it; RecordError naming the field when a type or the source's hash does
        not hold. The key is not taken on trust: it is recomputed from the WGSL, entry point, constants
        and layout it identifies."""
        need_dict(d, field)
        bindings = need_key(d, "bindings", field + ".bindings")
        if bindings is not None:
            bindings = [need_str(b, f"{field}.bindings[{i}]")
                        for i, b in enumerate(need_list(bindings, field + ".bindings"))]
        need(d, "key", need_str, field)
        entry = cls(key="", label=need(d, "label", need_str, field),
                    source=need(d, "source", need_str, field),
                    source_sha256=need(d, "source_sha256", need_hex64, field),
                    entry_point=need(d, "entry_point", need_str, field),
                    constants={k: need_number(v, f"{field}.constants[{k!r}]", minimum=None)
                               for k, v in need(d, "constants", need_dict, field).items()},
                    bindings=bindings, order=need(d, "order", need_int, field),
                    compile_ms=need_number(d.get("compile_ms", 0.0), field + ".compile_ms"))
        if sha256(entry.source) != entry.source_sha256:
            raise RecordError(field + ".source", f"does not match source_sha256 (entry {entry.label!r})")
        entry.key = spec_of(entry).key
        return entry


def spec_of(entry: ManifestEntry) -> PipelineSpec:
    """The spec an entry rebuilds."""
    return PipelineSpec(entry.label, entry.source, entry.entry_point, tuple(sorted(entry.constants.items())),
                        None if entry.bindings is None else tuple(entry.bindings))


@dataclass
class PipelineManifest:
    """The pipelines of one scope, in first-use order."""

    scope: str
    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    loaded: int = 0                  # entries that came from storage
    repaired: str | None = None      # why storage held something unusable (it is rewritten), else None
    dirty: bool = False
    # kernel variants chosen on this adapter by measurement (tuning.py), e.g. {"matmul.tb": "rb_tb16x8"}
    choices: dict[str, str] = field(default_factory=dict)

    def choose(self, slot: str, variant: str) -> None:
        """Remember the variant measured fastest for `slot` on this adapter."""
        if self.choices.get(slot) != variant:
            self.choices[slot] = variant
            self.dirty = True

    def record(self, spec: PipelineSpec, compile_ms: float) -> None:
        """Remember a pipeline the first time it is created (later creations keep the first order)."""
        key = spec.key
        if key in self.entries:
            return
        if len(self.entries) >= MAX_ENTRIES:
            # Keep the pipelines needed first (start-up matters most): give up the last-used one.
            last = max(self.entries.values(), key=lambda e: e.order)
            del self.entries[last.key]
        order = max((e.order for e in self.entries.values()), default=-1) + 1
        self.entries[key] = ManifestEntry(key, spec.label, spec.source, sha256(spec.source), spec.entry_point,
                                          spec.constants_dict, None if spec.bindings is None else list(spec.bindings),
                                          order, round(compile_ms, 3))
        self.dirty = True

    def forget(self, label: str) -> None:
        """Drop the entries of a pipeline that failed (it must not be retried at every start)."""
        for key in [k for k, e in self.entries.items() if e.label == label]:
            del self.entries[key]
            self.dirty = True

    def spec_of(self, entry: ManifestEntry) -> PipelineSpec:
        return spec_of(entry)

    def ordered(self, labels: set[str] | None = None) -> list[ManifestEntry]:
        found = [e for e in self.entries.values() if labels is None or e.label in labels]
        return sorted(found, key=lambda e: e.order)

    def drop_stale(self, current_sources: dict[str, str]) -> int:
        """Drop built-in entries whose WGSL changed since they were recorded (label -> current source)."""
        stale = [k for k, e in self.entries.items()
                 if e.label in current_sources and sha256(current_sources[e.label]) != e.source_sha256]
        for k in stale:
            del self.entries[k]
        if stale:
            self.dirty = True
        return len(stale)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "scope": self.scope, "choices": self.choices,
                           "entries": [asdict(e) for e in self.ordered()]})

    @classmethod
    def from_json(cls, scope: str, text: str | None) -> "PipelineManifest":
        """Parse a stored manifest; anything corrupt, foreign, of another format, too big or too deep yields
        an empty, repaired manifest (reported once as a records.RecordWarning, never an exception at
        start-up)."""
        manifest = cls(scope)
        if text is None:
            return manifest
        try:
            data = need_dict(parse_json(text), "manifest")
            if type(data.get("format")) is not int or data["format"] != FORMAT:   # true == 1.0 == 1 in Python
                raise RecordError("format", f"{short_repr(data.get('format'))}, expected {FORMAT}")
            if data.get("scope") != scope:
                raise RecordError("scope", f"{short_repr(data.get('scope'))}: another adapter's, browser's or "
                                  "gpuport version's record")
            entries = need(data, "entries", need_list)
            if len(entries) > MAX_ENTRIES:
                raise RecordError("entries", f"{len(entries)} entries, more than the {MAX_ENTRIES} ever kept")
            choices = need_dict(data.get("choices", {}), "choices")
            manifest.choices = {need_str(k, "choices key"): need_str(v, f"choices[{k!r}]") for k, v in choices.items()}
            for i, d in enumerate(entries):
                entry = ManifestEntry.from_dict(d, f"entries[{i}]")
                manifest.entries[entry.key] = entry
        except RecordError as exc:
            report_bad_record("pipelines", scope, str(exc))
            manifest = cls(scope, repaired=str(exc), dirty=True)
        manifest.loaded = len(manifest.entries)
        return manifest
