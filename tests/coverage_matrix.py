"""The suite's covering design (docs/testing.md) as data, and the matrix a run fills against it.

A cell is (row, column). A row is what is proven: a WGSL kernel variant (`kernel:<name>`, a user kernel as
`kernel:user`, a family of gpuport.xp's generated kernels as `kernel:xp_<family>`), a device strategy (`strategy:<name>`) or a host kernel (`host:<op>`). A column is where:
`<engine>/<thread>/<tier>`, e.g. `dawn/worker/core`. A host kernel is one of gpuport's C kernels' entry points as
simd_ops exposes them (matmul, gelu, softmax, layer_norm, attention, encoder_layer, q_matmul, llama_layers, decoder_layers,
matmul_threads, greedy). A test proves a cell when it ran the row's work there and
checked the answer against its NumPy reference: the parity cases of tests/cases.py (run_case returns what ran, from
rt.info() and the fallback manager's counters) natively (tests/ops/test_kernels.py) and in every browser lane
(e2e/test_page.py), with the array namespace's cases of tests/xp_cases.py among them, and the WebAssembly kernel
cases (e2e/test_page_wasm.py).

The design requires: every kernel variant on the device once per GPU engine (f16 variants where the engine has
shader-f16); from each thread a page drives a browser's device from (its Web Worker, its own thread) a user kernel and
each family of the array namespace's kernels, since the bridge differs by thread and the compiler does not; every
device strategy of the constrained tier in a browser and natively, and every kernel the constrained tier dispatches,
at its small workgroups, once (Dawn); f16 step-down in each f16 engine; every host kernel once per WebAssembly engine
and natively, and on the page's pool of workers in Chromium and Firefox. Lanes that share an engine prove only what
their own path adds, never the whole list again.

`make test` runs both pytest processes with `--require-coverage`: each writes its part of the matrix under
e2e/report/ and fails when a required cell of its engines is empty; e2e/e2e_coverage.py merges the parts into
e2e/report/coverage.md.
"""

from __future__ import annotations

import json
from collections import defaultdict
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterable

DEVICE_ENGINES = {
    "dawn": "Chromium's Dawn (Tint) on SwiftShader",
    "wgpu-firefox": "Firefox ESR's wgpu (naga) on lavapipe",
    "wgpu-native": "wgpu-py (naga) on lavapipe",
}
HOST_ENGINES = {
    "v8": "gpuport's WebAssembly kernels in V8 (Chromium)",
    "spidermonkey": "gpuport's WebAssembly kernels in SpiderMonkey (Firefox)",
    "javascriptcore": "gpuport's WebAssembly kernels in JavaScriptCore (WebKitGTK)",
    "native": "gpuport's C kernels built for this machine",
}
# which engines a browser kind (gpuport.testing.browsers) runs on: (device engine, WebAssembly engine)
BROWSER_ENGINES = {"chromium": ("dawn", "v8"), "firefox": ("wgpu-firefox", "spidermonkey"),
                   "webkit": (None, "javascriptcore")}
F16_ENGINES = ("wgpu-firefox", "wgpu-native")   # shader-f16: lavapipe has it, SwiftShader does not
# the threads a page drives a browser's device from, each proving the bridge's own kernels (required's `bridged`)
THREADS = {"dawn": ("worker", "main"), "wgpu-firefox": ("worker", "main")}
# The constrained tier's device strategies (placement/planner.py), in a browser and natively.
CONSTRAINED = ("layer_decomposition", "tiled", "chunked_attention", "head_partitioning", "simplified_shader")

REPORT_DIR = Path(__file__).resolve().parents[1] / "e2e" / "report"


def required(kernels: Iterable[str], constrained: Iterable[str], host_ops: Iterable[str],
             bridged: Iterable[str] = ("user",)) -> list[tuple[str, str]]:
    """The design's required cells as (row pattern, column pattern); a cell is filled when any proven cell
    matches both. `kernels`: every built-in kernel name (opspecs.KERNEL_DEFS); `constrained`: those the constrained
    tier's plans dispatch (the planner's answer: matmul_small, not the tiled or register-blocked matmuls); `host_ops`:
    the SIMD host kernels; `bridged`: the kernels each thread a page drives its device from must dispatch (what the
    bridge does differently there: a user's kernel compiled from the page's source, the array namespace's families)."""
    cells = []
    for engine in DEVICE_ENGINES:   # a kernel compiles and computes alike whichever thread submits it
        cells += [(f"kernel:{name}", f"{engine}/*/*") for name in [*kernels, "user"]
                  if engine in F16_ENGINES or not name.endswith("_f16")]
    for engine, threads in THREADS.items():   # a page's Web Worker and its own thread bridge to the device differently
        cells += [(f"kernel:{name}", f"{engine}/{thread}/*") for thread in threads for name in bridged]
    for engine in ("dawn", "wgpu-native"):
        cells += [(f"strategy:{s}", f"{engine}/*/constrained") for s in CONSTRAINED]
    # the constrained tier specialises its kernels (64 invocations, 4 KiB of workgroup memory): each of them, once
    cells += [(f"kernel:{name}", "dawn/*/constrained") for name in constrained]
    cells += [("strategy:f16", f"{engine}/*/full") for engine in F16_ENGINES]
    cells += [(f"host:{op}", f"{engine}/*/*") for op in host_ops for engine in HOST_ENGINES]
    # the threaded build on a page's pool of workers, in each browser engine that isolates pages
    cells += [(f"host:{op}", f"{engine}/pool/*") for op in host_ops for engine in ("v8", "spidermonkey")]
    return cells


def kernel_row(label: str) -> str:
    """The matrix row of a dispatched pipeline's label: a user kernel (entry@hash), a family of gpuport.xp's generated
    kernels (xp_<family>:hash, one per expression), or a built-in kernel by its name."""
    if "@" in label:
        return "kernel:user"
    return f"kernel:{label.split(':')[0]}" if label.startswith("xp_") else f"kernel:{label}"


def rows_of(ran: dict[str, Any], device: str | None, host: str | None) -> list[tuple[str, str]]:
    """(row, engine) for what a case ran (cases.ran_delta: kernels, strategies, host kernel calls per engine)."""
    out = []
    if device is not None:
        for label in ran.get("kernels", {}):
            out.append((kernel_row(label), device))
        for strategy in ran.get("strategies", {}):
            if strategy not in ("native", "cpu"):
                out.append((f"strategy:{strategy}", device))
    if host is not None:
        for kernels in ran.get("host", {}).values():   # the one-thread build and the pool are the same engine's
            out += [(f"host:{kernel}", host) for kernel in kernels]
    return sorted(set(out))


class Matrix:
    """The proven cells of a run: (row, column) -> the tests that proved it."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], list[str]] = defaultdict(list)

    def record(self, test: str, proofs: list[dict[str, Any]], device: str | None, host: str | None,
               thread: str) -> None:
        """What `test` proved: one ran delta per runtime it checked (cases.run_case), each with that runtime's tier."""
        for ran in proofs:
            for row, engine in rows_of(ran, device, host):
                tests = self.cells[(row, f"{engine}/{thread}/{ran.get('tier', 'cpu')}")]
                if test not in tests:
                    tests.append(test)

    def merge(self, other: "Matrix") -> None:
        for cell, tests in other.cells.items():
            self.cells[cell] += [t for t in tests if t not in self.cells[cell]]

    def filled(self, row: str, column: str) -> list[str]:
        """The tests proving any cell that matches (row pattern, column pattern)."""
        return [t for (r, c), tests in self.cells.items() if fnmatch(r, row) and fnmatch(c, column) for t in tests]

    def missing(self, cells: Iterable[tuple[str, str]], engines: Iterable[str] | None = None,
                only: str = "*") -> list[tuple[str, str]]:
        """The required cells (of `engines`, rows matching `only`) that no test proved."""
        wanted = set(engines) if engines is not None else None
        return [(r, c) for r, c in cells if fnmatch(r, only) and (wanted is None or c.split("/")[0] in wanted)
                and not self.filled(r, c)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"row": r, "column": c, "tests": t} for (r, c), t in sorted(self.cells.items())]
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Matrix":
        m = cls()
        for item in json.loads(path.read_text(encoding="utf-8")):
            m.cells[(item["row"], item["column"])] = list(item["tests"])
        return m

    def to_markdown(self, cells: list[tuple[str, str]]) -> str:
        """Rows by columns, each proven cell naming its first test and how many more; required and empty: MISSING."""
        columns = sorted({c for _, c in self.cells} | {c for _, c in cells if "*" not in c})
        rows = sorted({r for r, _ in self.cells} | {r for r, _ in cells if "*" not in r})
        need = set(self.missing(cells))
        lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for row in rows:
            out = []
            for col in columns:
                tests = self.cells.get((row, col), [])
                out.append(f"{_short(tests[0])}{f' (+{len(tests) - 1})' if len(tests) > 1 else ''}" if tests else "")
            lines.append(f"| {row} | " + " | ".join(out) + " |")
        if need:
            lines += ["", "Required and empty:", *[f"- **MISSING** {r} on {c}" for r, c in sorted(need)]]
        return "\n".join(lines) + "\n"


def _short(test: str) -> str:
    return test.split("::")[-1].replace("test_parity[", "[").replace("test_case[", "[")
