"""What a native adapter is (its info, features and limits), kept between runs so that `backend="auto"` can open
the device only when placement first needs it.

Opening a wgpu adapter loads the Vulkan loader and every installed driver (on a machine without a GPU,
lavapipe and its LLVM: about 80 MB resident). A process whose work all stays on the host (a small model's
generation, where auto measured the host faster) never pays that. The runtime plans from the stored
identity; the real adapter is compared with it when it opens, and a record that no longer matches is
rewritten (records.RecordWarning says what changed).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..formats.records import (
    RecordError,
    need,
    need_dict,
    need_int,
    need_list,
    need_str,
    parse_json,
    report_bad_record,
)
from ..ops.pipelines import sha256
from .capabilities import normalise_features

# What selects the adapter besides open()'s arguments: another value is another adapter, so another record.
_SELECTING_ENV = ("WGPU_BACKEND_TYPE", "WGPU_ADAPTER_NAME", "WGPU_POWER_PREF", "VK_ICD_FILENAMES",
                  "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES")
_INFO_KEYS = ("vendor", "architecture", "device", "description", "backend_type")


class Identity:
    """An adapter's info, features and limits, as the device reported them."""

    def __init__(self, adapter_info: dict[str, Any], features: frozenset[str], limits: dict[str, int]) -> None:
        self.adapter_info, self.features, self.limits = adapter_info, features, limits

    def differences(self, other: "Identity") -> list[str]:
        """What differs from `other`, named (empty when they are the same adapter and device)."""
        out = [f"adapter {k}: {self.adapter_info.get(k)!r} -> {other.adapter_info.get(k)!r}"
               for k in sorted(set(self.adapter_info) | set(other.adapter_info))
               if self.adapter_info.get(k) != other.adapter_info.get(k)]
        if self.features != other.features:
            out.append(f"features: {sorted(self.features)} -> {sorted(other.features)}")
        out += [f"limit {k}: {self.limits.get(k)} -> {other.limits.get(k)}"
                for k in sorted(set(self.limits) | set(other.limits)) if self.limits.get(k) != other.limits.get(k)]
        return out


def scope(limits: str, power_preference: str, wgpu_version: str) -> str:
    """The record's key: open()'s arguments, the wgpu-py release and the environment that selects an adapter."""
    env = {k: os.environ.get(k) for k in _SELECTING_ENV}
    return "native-" + sha256(json.dumps([limits, power_preference, wgpu_version, env], sort_keys=True))[:24]


def to_json(found: Identity | None) -> str:
    """The record of `found`; of None: the adapter did not open, so the next run opens it at once."""
    if found is None:
        return json.dumps({"unavailable": True})
    return json.dumps({"adapter_info": found.adapter_info, "features": sorted(found.features),
                       "limits": found.limits}, sort_keys=True)


def read(text: str) -> Identity | None:
    """A stored identity, checked field by field (RecordError naming the field); None where the record says
    the adapter did not open last time."""
    data = need_dict(parse_json(text), "")
    if data == {"unavailable": True}:
        return None
    info = need(data, "adapter_info", need_dict)
    adapter_info: dict[str, Any] = {k: need(info, k, need_str, "adapter_info") for k in _INFO_KEYS}
    fallback = info.get("is_fallback")
    if not isinstance(fallback, bool):
        raise RecordError("adapter_info.is_fallback", "must be a boolean")
    adapter_info["is_fallback"] = fallback
    features = [need_str(f, f"features[{i}]") for i, f in enumerate(need(data, "features", need_list))]
    limits = {k: need_int(v, f"limits.{k}") for k, v in need(data, "limits", need_dict).items()}
    if not limits:
        raise RecordError("limits", "empty")
    return Identity(adapter_info, normalise_features(features), limits)


def load(text: str | None, key: str) -> Identity | None:
    """The identity stored under `key`, or None (none stored, or unusable: reported, to be rewritten)."""
    if text is None:
        return None
    try:
        return read(text)
    except RecordError as exc:
        report_bad_record("adapter", key, str(exc))
        return None
