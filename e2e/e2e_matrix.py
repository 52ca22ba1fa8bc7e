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
import xp_cases  # noqa: E402,F401 - registers gpuport.xp's cases among CASES
from cases import names_for  # noqa: E402
from coverage_matrix import BROWSER_ENGINES  # noqa: E402


@dataclass(frozen=True)
class LaneSpec:
    """What a lane loads, what it must detect, and which case list it runs: "webgpu" (the device parity list,
    on a runtime pinned to the GPU: each case proves from rt.info()["ran"] that its ops ran there), "auto"
    (auto's own cases), "cpu", or a covering subset (tests/cases.py SUBSETS: "variants", "thread", "constrained", "fallback") for a
    lane that shares its engine with one running a whole list."""

    browser: str          # a gpuport.testing.browsers.Browsers kind
    query: str            # the page's query string
    backend: str          # expected rt.info()["backend"]
    tier: str             # expected rt.info()["tier"]
    mode: str = "worker"  # "worker" or "main"
    cases: str = "webgpu"  # the case list it runs (tests/cases.py names_for)
    adapter: str | None = None     # a word the adapter info must contain
    features: tuple[str, ...] = ()  # features the adapter must offer
    note: str = ""
    # "" : gpuport's own embedding (index.html, start() from gpuport.js); "pyodide.html": a bare Pyodide that
    # micropip-installs the wheel, as PyScript or JupyterLite would, gpuport registering its JS half itself
    page: str = ""

    @property
    def placement(self) -> str:
        """The rt.mode it must open with: "auto" for the auto list, else its backend."""
        return "auto" if self.cases == "auto" else self.backend

    @property
    def device(self) -> bool:
        """Whether its cases prove their ops ran on the device (a runtime pinned to the GPU)."""
        return self.backend == "webgpu" and self.cases != "auto"

    @property
    def page_spec(self) -> PageSpec:
        """What the plugin's lane pool loads: the page with this lane's query."""
        return PageSpec(self.browser, f"{self.page}?{self.query}")


LANES: dict[str, LaneSpec] = {
    "chromium-webgpu": LaneSpec("chromium-webgpu", "backend=webgpu", "webgpu", "core", page="pyodide.html",
                                adapter="swiftshader", note="Chromium/SwiftShader (Tint), pinned to the device, "
                                "a bare Pyodide in a Web Worker, gpuport installed by micropip"),
    "chromium-webgpu-main": LaneSpec("chromium-webgpu", "backend=webgpu&worker=0", "webgpu", "core",
                                     mode="main", adapter="swiftshader", page="pyodide.html", cases="thread",
                                     note="Chromium/SwiftShader, pinned to the device, a bare Pyodide on the main "
                                     "thread, gpuport installed by micropip"),
    "chromium-auto": LaneSpec("chromium-webgpu", "table=0&precompile=off", "webgpu", "core", adapter="swiftshader",
                              cases="auto", note="Chromium/SwiftShader, backend auto: auto's own cases"),
    "chromium-cpu": LaneSpec("chromium-webgpu", "backend=cpu&table=0&precompile=off", "cpu", "cpu", cases="cpu",
                             note="Chromium with WebGPU available, backend forced to cpu"),
    "chromium-tier-constrained": LaneSpec("chromium-webgpu",
                                          "backend=webgpu&tier=constrained&worker=0&table=0&precompile=off",
                                          "webgpu", "constrained", mode="main", adapter="swiftshader",
                                          cases="constrained",
                                          note="Chromium/SwiftShader, ?tier=constrained, pinned to the device, "
                                          "gpuport.js's start() on the main thread"),
    "chromium-noflag": LaneSpec("chromium-noflag", "", "cpu", "cpu", cases="fallback", page="pyodide.html",
                                note="Chromium without --enable-unsafe-webgpu, a bare Pyodide (micropip): backend "
                                "auto must fall back to the cpu tier and its WebAssembly kernels"),
    # naga compiles Firefox's WGSL as it does wgpu-py's, whose native lane runs every list: Firefox's own path
    # (its WebGPU, the bridge from a worker) needs each kernel variant once, the covering "variants" subset
    "firefox-webgpu": LaneSpec("firefox", "backend=webgpu", "webgpu", "full", page="pyodide.html", cases="variants",
                               features=("shader-f16",), note="Firefox ESR/lavapipe (naga, shader-f16), pinned to "
                               "the device (WebDriver BiDi), a bare Pyodide in a Web Worker, gpuport installed "
                               "by micropip"),
    "firefox-webgpu-main": LaneSpec("firefox", "backend=webgpu&worker=0", "webgpu", "full", page="pyodide.html",
                                    mode="main", cases="thread", features=("shader-f16",), note="Firefox ESR/lavapipe, pinned to the "
                                    "device, a bare Pyodide on the main thread, gpuport installed by micropip"),
    "firefox-auto": LaneSpec("firefox", "table=0&precompile=off", "webgpu", "full", features=("shader-f16",),
                             cases="auto", note="Firefox ESR/lavapipe, backend auto: auto's own cases"),
    "webkit-cpu": LaneSpec("webkit", "table=0&precompile=off", "cpu", "cpu", cases="cpu",
                           note="WebKitGTK MiniBrowser (Selenium, Xvfb): navigator.gpu is null"),
}


def lane_engines(lane: str) -> tuple[str | None, str | None]:
    """The lane's (GPU engine, WebAssembly engine), as the coverage matrix names them."""
    return BROWSER_ENGINES[LANES[lane].browser.split("-")[0]]


def lane_cases(lane: str) -> list[str]:
    """The cases a lane runs: every case on its list."""
    return names_for(LANES[lane].cases)


# -- op names for the report ------------------------------------------------------------------------

_ERROR_MARKERS = ("error", "mismatch", "out_of_range", "beyond", "refused", "says_it_needs")
_OPS = ("matmul", "mean_pool", "attention", "embedding", "softmax", "rowwise", "gelu", "scale", "add", "mul",
        "chained", "user_kernel", "batch", "conv1d", "stft_power", "log_mel", "sample_token")


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
