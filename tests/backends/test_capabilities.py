"""Tier detection from synthetic features, limits and browser identities; the quirks table."""

import gpuport as gp
import pytest
from gpuport.backends.capabilities import (
    CONSTRAINED_BUDGET,
    QUIRKS,
    SAFARI_VERSIONS,
    SPEC_DEFAULT_LIMITS,
    detect,
    effective_limits,
    identify_browser,
    resolve_tier,
)

LIMITS = dict(SPEC_DEFAULT_LIMITS)
CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 "
             "Safari/537.36")
FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0"


def safari_ua(version):
    return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{version} Safari/605.1.15")


def chrome():
    return {"userAgent": CHROME_UA, "brands": ["Not=A?Brand/99", "Chromium/156", "Google Chrome/156"],
            "platform": "Linux x86_64"}


def safari(version, platform="MacIntel"):
    return {"userAgent": safari_ua(version), "brands": [], "platform": platform}


def firefox():
    return {"userAgent": FIREFOX_UA, "brands": [], "platform": "Linux x86_64"}


@pytest.mark.parametrize("features,limits,tier", [
    ({"shader-f16", "subgroups"}, LIMITS, "full"),
    ({"subgroups"}, LIMITS, "core"),                               # Chromium/SwiftShader
    (set(), LIMITS, "core"),
    ({"shader-f16"}, {**LIMITS, "maxStorageBufferBindingSize": 64 << 20}, "constrained"),
    (set(), {**LIMITS, "maxComputeWorkgroupStorageSize": 8192}, "constrained"),
    ({"subgroup", "shader-f16"}, {**LIMITS, "maxStorageBufferBindingSize": 1 << 30}, "full"),  # wgpu spelling
])
def test_tier_from_features_and_limits(features, limits, tier):
    caps = detect("webgpu", features, limits)
    assert caps.tier == tier, caps.reasons
    assert caps.reasons


def test_cpu_backend_is_cpu_tier():
    assert detect("cpu", {"shader-f16"}, {}).tier == "cpu"


def test_user_agent_alone_never_decides():
    # The same UA over different devices gives the devices' tiers; a UA can never raise a tier.
    for ident in (chrome(), safari("17.4"), firefox(), {"userAgent": "anything", "brands": [], "platform": ""}):
        assert detect("webgpu", {"shader-f16"}, LIMITS, {}, ident).tier == "full"
        assert detect("webgpu", set(), LIMITS, {}, ident).tier == "core"
        assert detect("cpu", set(), {}, {}, ident).tier == "cpu"
    # A Safari UA string inside a Chromium (client hints present) is Chromium: no Safari quirk applies.
    spoof = {"userAgent": safari_ua("15.0"), "brands": ["Chromium/156"], "platform": "MacIntel"}
    caps = detect("webgpu", {"shader-f16"}, LIMITS, {}, spoof)
    assert caps.browser.name == "chromium" and caps.tier == "full"
    # A Safari UA with nothing corroborating it (Linux platform, non-Apple adapter) is unconfirmed.
    caps = detect("webgpu", {"shader-f16"}, LIMITS, {"vendor": "mesa"}, safari("15.0", platform="Linux x86_64"))
    assert caps.browser.name == "safari" and not caps.browser.confirmed
    assert caps.tier == "full" and "safari" not in caps.quirks["applied"]


def test_identity_from_brands_ua_and_adapter():
    c = identify_browser(chrome())
    assert (c.name, c.version[:1], c.engine, c.confirmed) == ("chrome", (156,), "blink", True)
    assert "brands" in c.evidence
    f = identify_browser(firefox())
    assert (f.name, f.version[:1], f.engine, f.confirmed) == ("firefox", (153,), "gecko", True)
    s = identify_browser(safari("17.4", platform=""), {"vendor": "apple"})
    assert s.name == "safari" and s.version[:2] == (17, 4) and s.confirmed and "adapter" in s.evidence
    assert identify_browser(None) is None  # natively there is no browser


@pytest.mark.parametrize("version,label,tier,f16_kept", [
    ("15.6", "limited", "constrained", False),
    ("16.0", "tier1", "constrained", True),
    ("16.3", "tier1", "constrained", True),
    ("16.4", "tier1-enhanced", "full", True),
    ("17.0", "tier2", "full", True),
    ("26.0", "tier2", "full", True),
])
def test_safari_version_table(version, label, tier, f16_kept):
    caps = detect("webgpu", {"shader-f16", "subgroups"}, LIMITS, {"vendor": "apple"}, safari(version))
    assert caps.browser.confirmed
    assert caps.quirks["version_label"] == label
    assert caps.tier == tier, caps.reasons
    assert caps.has_f16 == f16_kept
    if version < "16.4":
        assert not caps.has_subgroups
        limits = effective_limits(caps, caps.tier)
        assert limits["maxComputeInvocationsPerWorkgroup"] == 64   # simplified shaders
    # the table is data in one place
    assert [row[1] for row in SAFARI_VERSIONS] == ["limited", "tier1", "tier1-enhanced", "tier2"]


def test_safari_quirk_never_adds_what_the_device_lacks():
    caps = detect("webgpu", set(), LIMITS, {"vendor": "apple"}, safari("26.0"))
    assert caps.tier == "core" and not caps.has_f16


def test_firefox_workgroup_preference_and_fallback_adapter_quirks():
    caps = detect("webgpu", {"shader-f16"}, LIMITS, {"is_fallback": True}, firefox())
    assert caps.quirks["elementwise_workgroup"] == QUIRKS["firefox"]["elementwise_workgroup"] == 256
    assert caps.quirks["software"] is True and "fallback_adapter" in caps.quirks["applied"]
    assert caps.is_fallback_adapter and caps.tier == "full"  # a software adapter keeps its real features
    # the fallback-adapter quirk comes from the adapter, whatever the UA says
    caps = detect("webgpu", set(), LIMITS, {"is_fallback": True}, chrome())
    assert caps.quirks["software"] is True and caps.tier == "core"


def test_resolve_and_budget():
    assert resolve_tier("full", "constrained") == "constrained"
    assert resolve_tier("core", "full") == "core"   # a tier the device lacks steps down
    with pytest.raises(ValueError):
        resolve_tier("full", "turbo")
    caps = detect("webgpu", {"shader-f16"}, LIMITS)
    lim = effective_limits(caps, "constrained")
    assert lim["maxStorageBufferBindingSize"] == CONSTRAINED_BUDGET["maxStorageBufferBindingSize"]
    lim = effective_limits(caps, "constrained", {"maxStorageBufferBindingSize": 1 << 20})
    assert lim["maxStorageBufferBindingSize"] == 1 << 20
    lim = effective_limits(caps, "constrained", {"maxStorageBufferBindingSize": 1 << 40})
    assert lim["maxStorageBufferBindingSize"] == LIMITS["maxStorageBufferBindingSize"]  # never above the device
    assert effective_limits(caps, "full") == LIMITS
    with pytest.raises(ValueError, match="unknown budget keys"):
        effective_limits(caps, "constrained", {"maxBogus": 1})


@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_runtime_reports_tier_and_strategies(backend):
    with gp.open_sync(backend=backend) as rt:
        info = rt.info()
        assert info["tier"] == rt.tier and set(info["strategies"]) >= {"matmul", "attention", "gelu"}
        assert all(v == "native" for v in info["strategies"].values()), info["strategies"]
    if backend == "webgpu":
        with gp.open_sync(backend=backend, tier="constrained", budget={"maxStorageBufferBindingSize": 1 << 20}) as rt:
            info = rt.info()
            assert info["tier"] == "constrained" and info["limits"]["maxStorageBufferBindingSize"] == 1 << 20
            assert info["device_limits"]["maxStorageBufferBindingSize"] == LIMITS["maxStorageBufferBindingSize"]
            assert info["strategies"]["matmul"] == "simplified_shader"
            assert info["over_budget_strategies"]["matmul"] == "layer_decomposition"
        with gp.open_sync(backend=backend, tier="core", precision="f16") as rt:
            assert rt.precision == "f32" and "precision_note" in rt.info()  # stepped down, no error
