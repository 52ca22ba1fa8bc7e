"""What a device offers (features, limits, adapter identity, the browser around it) and the tier that follows.

    caps = detect(backend, features, limits, adapter_info, browser)   # a Capabilities record
    caps.tier                                                          # full | core | constrained | cpu

Rules, in order (each one can only lower the tier, never raise it):
1. The device decides first: no WebGPU -> cpu; limits below the spec defaults -> constrained;
   shader-f16 -> full, else core.
2. Per-browser knowledge lives in one table, QUIRKS (plus SAFARI_VERSIONS). A quirk may switch features
   off, cap the tier, lower the budget, or ask for smaller workgroups; it never adds a feature or raises
   a tier. So a user agent can make gpuport more careful, never more daring.
3. The browser's identity never rests on the user agent alone: UA client hints (`brands`, Chromium only)
   win over the UA string, and a UA-only claim (Safari, Firefox) is accepted only when the platform or
   the adapter agrees with it. An unconfirmed claim is recorded, and no quirk applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

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

# The constrained tier's runtime budget: well below the device's limits, so chunked and tiled strategies
# really run. `gp.open(tier="constrained", budget={...})` overrides any key. Keys are WebGPU limit names,
# plus gpuport's own `maxAttentionScoresPerDispatch` (query x key x head scores one attention dispatch may
# evaluate: bounds the time of one dispatch, which GPU watchdogs kill when it runs too long).
CONSTRAINED_BUDGET: dict[str, int] = {
    "maxStorageBufferBindingSize": 4 << 20,
    "maxBufferSize": 4 << 20,
    "maxComputeInvocationsPerWorkgroup": 64,
    "maxComputeWorkgroupSizeX": 64,
    "maxComputeWorkgroupSizeY": 64,
    "maxComputeWorkgroupStorageSize": 4096,
    "maxAttentionScoresPerDispatch": 1 << 18,
}
BUDGET_KEYS = frozenset(CONSTRAINED_BUDGET)

# wgpu-native spells some features differently from the WebGPU spec.
_FEATURE_ALIASES = {"subgroup": "subgroups"}


def normalise_features(features: Iterable[str]) -> frozenset[str]:
    """Feature names as the WebGPU spec spells them."""
    return frozenset(_FEATURE_ALIASES.get(f, f) for f in features)


# --- the quirks table: every piece of per-browser / per-adapter knowledge, as data -------------------

# Safari's WebGPU support by version (the level each release shipped), read as restrictions:
#   shader compilation "limited" -> simplified shaders (64-invocation workgroups, no f16, no subgroups);
#   memory management "basic"    -> the constrained tier with a 64 MiB binding budget (layer processing).
# Rows are (first version, label, quirk); the last row whose version <= the browser's applies.
SAFARI_VERSIONS: tuple[tuple[tuple[int, int], str, dict[str, Any]], ...] = (
    ((0, 0), "limited", {"tier_cap": "constrained", "features_off": ("shader-f16", "subgroups"),
                         "simplified_shaders": True, "budget": {"maxStorageBufferBindingSize": 64 << 20,
                                                                "maxBufferSize": 64 << 20},
                         "four_bit": False, "kv_cache": False}),
    ((16, 0), "tier1", {"tier_cap": "constrained", "features_off": ("subgroups",), "simplified_shaders": True,
                        "budget": {"maxStorageBufferBindingSize": 64 << 20, "maxBufferSize": 64 << 20},
                        "four_bit": "partial", "kv_cache": False}),
    ((16, 4), "tier1-enhanced", {"features_off": ("subgroups",), "four_bit": "partial", "kv_cache": False}),
    ((17, 0), "tier2", {"four_bit": "partial", "kv_cache": "partial"}),
)

QUIRKS: dict[str, dict[str, Any]] = {
    # Keyed by browser name (confirmed identity only) or by an adapter fact ("fallback_adapter").
    "safari": {"versions": SAFARI_VERSIONS},
    # Firefox: compute runs best with 256x1x1 workgroups; mapAsync callbacks are
    # delivered on a ~100 ms poll (measured on Firefox ESR 153 on lavapipe), so every readback costs up to that: batch, read once.
    "firefox": {"elementwise_workgroup": 256, "readback_latency_ms": 100},
    "chrome": {},
    "edge": {},
    # isFallbackAdapter (SwiftShader, lavapipe): a software rasteriser. It keeps its tier (the features
    # are real), but f16 gives it no speed, and the CPU usually wins: strategies and the selector read this.
    "fallback_adapter": {"software": True, "f16_speedup": False},
}


# --- browser identity ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BrowserIdentity:
    """Who runs the page, as far as the evidence goes. `confirmed` is False for an uncorroborated claim."""

    name: str                      # chrome, edge, opera, chromium, firefox, safari, unknown
    version: tuple[int, ...] = ()
    engine: str = "unknown"        # blink, gecko, webkit
    confirmed: bool = False
    evidence: tuple[str, ...] = ()

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version_str, "engine": self.engine,
                "confirmed": self.confirmed, "evidence": list(self.evidence)}


_BRAND_NAMES = (("microsoft edge", "edge"), ("opera", "opera"), ("google chrome", "chrome"),
                ("chromium", "chromium"))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def identify_browser(browser: Mapping[str, Any] | None, adapter_info: Mapping[str, Any] | None = None
                     ) -> BrowserIdentity | None:
    """The browser from {userAgent, brands, platform} (as web/bridge.js sends it), checked against the adapter.

    Natively (`browser` is None) there is no browser: None.
    """
    if not browser:
        return None
    ua = str(browser.get("userAgent") or "")
    platform = str(browser.get("platform") or "")
    brands = [str(b) for b in (browser.get("brands") or [])]
    vendor = str((adapter_info or {}).get("vendor") or "").lower()

    # 1. UA client hints: sent by Chromium-family browsers only, and not rewritten by UA-spoofing switches.
    parsed = []
    for b in brands:
        name, _, ver = b.rpartition("/") if "/" in b else (b, "", "")
        parsed.append((name.strip().lower(), _version(ver)))
    for needle, name in _BRAND_NAMES:
        for brand, ver in parsed:
            if needle in brand:
                ua_agrees = name in ("chromium", "chrome", "opera") and "Chrome/" in ua or name == "edge" and "Edg" in ua
                ev = ("brands",) + (("userAgent",) if ua_agrees else ())
                return BrowserIdentity(name, ver, "blink", True, ev)

    # 2. The UA string, accepted only when something other than the UA agrees.
    m_ff = re.search(r"Firefox/([\d.]+)", ua)
    m_sf = re.search(r"Version/([\d.]+).*Safari/", ua)
    if m_ff and "Gecko/" in ua and not brands:
        # No UA-CH (Chromium always sends it in a secure context) and a Gecko token: Firefox.
        return BrowserIdentity("firefox", _version(m_ff.group(1)), "gecko", bool(platform),
                               ("userAgent", "no-client-hints") + (("platform",) if platform else ()))
    if m_sf and "Chrome/" not in ua and "Chromium/" not in ua and not brands:
        apple_platform = platform.startswith(("Mac", "iPhone", "iPad", "iPod"))
        apple_adapter = vendor == "apple"
        ev = ("userAgent", "no-client-hints") + (("platform",) if apple_platform else ()) + \
             (("adapter",) if apple_adapter else ())
        return BrowserIdentity("safari", _version(m_sf.group(1)), "webkit", apple_platform or apple_adapter, ev)
    if "Chrome/" in ua and not brands:
        # A Chromium UA without client hints: an old Chromium, an embedded view, or a spoofed string.
        m = re.search(r"Chrome/([\d.]+)", ua)
        return BrowserIdentity("chromium", _version(m.group(1)) if m else (), "blink", False, ("userAgent",))
    return BrowserIdentity("unknown", (), "unknown", False, ("userAgent",) if ua else ())


def quirks_for(identity: BrowserIdentity | None, adapter_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The quirks that apply: the confirmed browser's (Safari's by version), then the adapter's."""
    out: dict[str, Any] = {}
    applied: list[str] = []
    if identity is not None and identity.confirmed and identity.name in QUIRKS:
        entry = dict(QUIRKS[identity.name])
        versions = entry.pop("versions", None)
        out.update(entry)
        applied.append(identity.name)
        if versions:
            row = None
            for first, label, quirk in versions:
                if identity.version[:2] >= first:
                    row = (label, quirk)
            if row is not None:
                out.update(row[1])
                out["version_label"] = row[0]
                applied.append(f"{identity.name}:{row[0]}")
    if (adapter_info or {}).get("is_fallback"):
        out.update(QUIRKS["fallback_adapter"])
        applied.append("fallback_adapter")
    out["applied"] = applied
    return out


# --- the record -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    """Everything gpuport decides from: the device's own facts, the browser around it, the quirks."""

    backend: str
    features: frozenset[str]
    limits: dict[str, int]
    adapter: dict[str, Any] = field(default_factory=dict)
    browser: BrowserIdentity | None = None
    quirks: dict[str, Any] = field(default_factory=dict)
    tier: str = "cpu"
    reasons: tuple[str, ...] = ()

    @property
    def has_f16(self) -> bool:
        """The device runs f16 kernels (shader-f16): the full tier."""
        return "shader-f16" in self.features

    @property
    def has_subgroups(self) -> bool:
        """The device offers subgroups (kernel variants that use them)."""
        return "subgroups" in self.features

    @property
    def is_fallback_adapter(self) -> bool:
        """The adapter is a software fallback (SwiftShader, lavapipe): the host often wins there."""
        return bool(self.adapter.get("is_fallback"))

    def as_dict(self) -> dict[str, Any]:
        """The capabilities as plain JSON-ready data (what `rt.info()` and the report show)."""
        return {"backend": self.backend, "tier": self.tier, "features": sorted(self.features),
                "is_fallback_adapter": self.is_fallback_adapter,
                "browser": self.browser.as_dict() if self.browser else None,
                "quirks": {k: v for k, v in self.quirks.items()}, "reasons": list(self.reasons)}


def _lower(tier: str, cap: str) -> str:
    return TIERS[max(TIERS.index(tier), TIERS.index(cap))]


def detect(backend: str, features: Iterable[str], limits: Mapping[str, int],
           adapter_info: Mapping[str, Any] | None = None, browser: Mapping[str, Any] | None = None) -> Capabilities:
    """The Capabilities record of a device: its usable features and limits, identity, quirks and tier."""
    adapter = dict(adapter_info or {})
    identity = identify_browser(browser, adapter)
    feats = normalise_features(features)
    lims = {k: int(v) for k, v in limits.items()}
    if backend == "cpu":
        return Capabilities("cpu", frozenset(), lims, adapter, identity, {"applied": []}, "cpu",
                            ("no WebGPU device: NumPy",))
    quirks = quirks_for(identity, adapter)
    reasons: list[str] = []
    off = set(quirks.get("features_off", ())) & feats
    if off:
        feats = feats - off
        reasons.append(f"quirk {quirks['applied']}: features off {sorted(off)}")
    small = [k for k in _CORE_NEEDS if lims.get(k, SPEC_DEFAULT_LIMITS[k]) < SPEC_DEFAULT_LIMITS[k]]
    if small:
        tier = "constrained"
        reasons.append(f"limits below the spec defaults: {small}")
    elif "shader-f16" in feats:
        tier = "full"
        reasons.append("shader-f16")
    else:
        tier = "core"
        reasons.append("no shader-f16: f32 kernels")
    cap = quirks.get("tier_cap")
    if cap and TIERS.index(cap) > TIERS.index(tier):
        tier = _lower(tier, cap)
        reasons.append(f"quirk {quirks['applied']}: tier capped at {cap}")
    return Capabilities(backend, frozenset(feats), lims, adapter, identity, quirks, tier, tuple(reasons))


def resolve_tier(detected: str, requested: str | None) -> str:
    """The tier to run: the requested one if the device can serve it, else the best one below it."""
    if requested is None:
        return detected
    if requested not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, not {requested!r}")
    return TIERS[max(TIERS.index(requested), TIERS.index(detected))]


def effective_limits(caps: Capabilities, tier: str, budget: Mapping[str, int] | None = None) -> dict[str, int]:
    """The limits ops plan against: the device's, lowered by the constrained budget and by quirks.

    Only the constrained tier takes CONSTRAINED_BUDGET; a user `budget` or a quirk's budget applies in any
    GPU tier, and nothing here ever exceeds what the device itself offers.
    """
    if tier == "cpu":
        return {}
    unknown = set(budget or {}) - BUDGET_KEYS - set(SPEC_DEFAULT_LIMITS)
    if unknown:
        raise ValueError(f"unknown budget keys {sorted(unknown)}; known: {sorted(BUDGET_KEYS)}")
    out = dict(caps.limits)
    wanted: dict[str, int] = {}
    if tier == "constrained":
        wanted.update(CONSTRAINED_BUDGET)
    for source in (caps.quirks.get("budget") or {}, budget or {}):
        for k, v in source.items():
            wanted[k] = min(int(v), wanted.get(k, int(v))) if source is not budget else int(v)
    if caps.quirks.get("simplified_shaders"):
        for k in ("maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY"):
            wanted[k] = min(wanted.get(k, 64), 64)
    for k, v in wanted.items():
        out[k] = min(v, caps.limits[k]) if k in caps.limits else v
    return out
