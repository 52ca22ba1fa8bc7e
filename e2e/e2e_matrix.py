"""The browser matrix's lanes (what each loads and must detect) and the op each parity case exercises.

Shared by conftest.py (which opens the lanes and writes the report) and test_page.py (which parametrizes
lane x case), hence a module of its own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gpuport.testing.pages import PageSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cases import names_for  # noqa: E402


@dataclass(frozen=True)
class LaneSpec:
    """What a lane loads and what it must detect. `cases` is the backend whose parity list it runs."""

    browser: str          # a gpuport.testing.browsers.Browsers kind
    query: str            # the demo page's query string
    backend: str          # expected rt.info()["backend"]
    tier: str             # expected rt.info()["tier"]
    mode: str = "worker"  # "worker" or "main"
    adapter: str | None = None     # a word the adapter info must contain
    features: tuple[str, ...] = ()  # features the adapter must offer
    note: str = ""

    @property
    def page_spec(self) -> PageSpec:
        """What the plugin's lane pool loads: the demo page with this lane's query."""
        return PageSpec(self.browser, "?" + self.query)


LANES: dict[str, LaneSpec] = {
    "chromium-webgpu": LaneSpec("chromium-webgpu", "table=0&precompile=off", "webgpu", "core", adapter="swiftshader",
                                note="Chromium/SwiftShader, backend auto, Pyodide in a Web Worker"),
    "chromium-webgpu-main": LaneSpec("chromium-webgpu", "backend=webgpu&worker=0&table=0&precompile=off", "webgpu", "core",
                                     mode="main", adapter="swiftshader",
                                     note="Chromium/SwiftShader, Pyodide on the main thread"),
    "chromium-cpu": LaneSpec("chromium-webgpu", "backend=cpu&table=0&precompile=off", "cpu", "cpu",
                             note="Chromium with WebGPU available, backend forced to cpu"),
    "chromium-tier-core": LaneSpec("chromium-webgpu", "tier=core&table=0&precompile=off", "webgpu", "core", adapter="swiftshader",
                                   note="Chromium/SwiftShader, ?tier=core"),
    "chromium-tier-constrained": LaneSpec("chromium-webgpu", "tier=constrained&table=0&precompile=off", "webgpu", "constrained",
                                          adapter="swiftshader", note="Chromium/SwiftShader, ?tier=constrained"),
    "chromium-noflag": LaneSpec("chromium-noflag", "table=0&precompile=off", "cpu", "cpu",
                                note="Chromium without --enable-unsafe-webgpu, backend auto must fall back"),
    "firefox-webgpu": LaneSpec("firefox", "table=0&precompile=off", "webgpu", "full", features=("shader-f16",),
                               note="Firefox ESR/lavapipe (WebDriver BiDi), backend auto"),
    "webkit-cpu": LaneSpec("webkit", "table=0&precompile=off", "cpu", "cpu",
                           note="WebKitGTK MiniBrowser (Selenium, Xvfb): navigator.gpu is null"),
}


def lane_cases(lane: str) -> list[str]:
    """The parity list a lane runs: every case for its backend."""
    return names_for(LANES[lane].backend)


# -- op names for the report ------------------------------------------------------------------------

_ERROR_MARKERS = ("error", "mismatch", "out_of_range", "beyond", "refused", "says_it_needs")
_OPS = ("matmul", "mean_pool", "attention", "embedding", "softmax", "rowwise", "gelu", "scale", "add", "mul",
        "chained", "user_kernel", "batch")


def op_of(case: str) -> str:
    """The op a case exercises: its name's prefix; error-path cases are "errors"."""
    if any(m in case for m in _ERROR_MARKERS):
        return "errors"
    if case.startswith("l2_normalize"):
        return "rowwise"
    for tier in ("constrained", "full"):  # the tiers' own strategy cases (chunking, f16 kernels)
        if case.startswith(tier + "_"):
            return f"{tier}-tier strategies"
    for op in _OPS:
        if case == op or case.startswith(op + "_"):
            return {"batch": "batching"}.get(op, op)
    return case.split("_", 1)[0]
