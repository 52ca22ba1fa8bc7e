"""What a device offers (features, limits, adapter identity) and the tier that follows from it."""

from __future__ import annotations

from typing import Iterable

TIERS = ("full", "core", "constrained", "cpu")  # best first

# The WebGPU spec's default limits: what every conforming browser gives without asking for more.
SPEC_DEFAULT_LIMITS: dict[str, int] = {
    "maxBindGroups": 4,
    "maxBindingsPerBindGroup": 1000,
    "maxStorageBuffersPerShaderStage": 8,
    "maxUniformBuffersPerShaderStage": 12,
    "maxUniformBufferBindingSize": 65536,
    "maxStorageBufferBindingSize": 134217728,
    "minUniformBufferOffsetAlignment": 256,
    "minStorageBufferOffsetAlignment": 256,
    "maxBufferSize": 268435456,
    "maxComputeWorkgroupStorageSize": 16384,
    "maxComputeInvocationsPerWorkgroup": 256,
    "maxComputeWorkgroupSizeX": 256,
    "maxComputeWorkgroupSizeY": 256,
    "maxComputeWorkgroupSizeZ": 64,
    "maxComputeWorkgroupsPerDimension": 65535,
}

# Limits under which the f32 kernels as written cannot run unchanged (workgroup memory, invocations).
_CORE_NEEDS = ("maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup",
               "maxStorageBufferBindingSize")

# wgpu-native spells some features differently from the WebGPU spec.
_FEATURE_ALIASES = {"subgroup": "subgroups"}


def normalise_features(features: Iterable[str]) -> frozenset[str]:
    """Feature names as the WebGPU spec spells them."""
    return frozenset(_FEATURE_ALIASES.get(f, f) for f in features)


def detect_tier(backend: str, features: Iterable[str], limits: dict[str, int]) -> str:
    """The best tier a device serves: full (shader-f16), core (spec defaults), constrained, cpu."""
    if backend == "cpu":
        return "cpu"
    if any(limits.get(k, SPEC_DEFAULT_LIMITS[k]) < SPEC_DEFAULT_LIMITS[k] for k in _CORE_NEEDS):
        return "constrained"
    return "full" if "shader-f16" in set(features) else "core"


def resolve_tier(detected: str, requested: str | None) -> str:
    """The tier to run: the requested one if the device can serve it, else the best one below it."""
    if requested is None:
        return detected
    if requested not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, not {requested!r}")
    return TIERS[max(TIERS.index(requested), TIERS.index(detected))]
