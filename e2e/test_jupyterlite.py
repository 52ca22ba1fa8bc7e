"""gpuport in a JupyterLite notebook: the site examples/jupyterlite/build.py makes (offline, the kernel on the
verified local Pyodide 0.27.7, gpuport's wheel in the site's piplite index) served with MiniLM's weights
by examples/jupyterlite/serve.py; Chromium with WebGPU opens examples/jupyterlite/gpuport.ipynb in the
Notebook UI, runs all cells from the Run menu, and the cells' printed outputs are checked: backend webgpu,
a user WGSL kernel's result (on the GPU), MiniLM embeddings (shape, unit norm, cosines against
sentence-transformers). arrays.ipynb likewise: gpuport.xp on the GPU with synchronous reads, scikit-learn
estimators on gpuport arrays against NumPy's in the same kernel, a matplotlib figure, timings. Every request the page
and its workers make goes to the loopback origin. A site that cannot be built fails the test with the build's own
words; nothing is skipped."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from e2e_serve import served
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "jupyterlite"
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
BUILD_TIMEOUT_S = 900          # a first build installs the tool venv from PyPI
RUN_TIMEOUT_MS = 420_000       # kernel start, gpuport's device calibration, MiniLM's 90 MB on SwiftShader
KERNEL_START_TIMEOUT_MS = 180_000   # Pyodide's boot in the kernel's worker; ~7 s on an idle machine
STDERR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
KERNEL_STATUS = ".jp-Notebook-ExecutionIndicator"


# examples/jupyterlite/serve.py as a module (examples/ is no package): the site's path and its app
_spec = importlib.util.spec_from_file_location("gpuport_jupyterlite_serve", EXAMPLE / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)


@pytest.fixture(scope="module")
def lite_site() -> Path:
    """The built site: build.py is idempotent, so an up-to-date site costs a second (and the gpuport wheel in
    it is rebuilt from the working tree)."""
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(EXAMPLE / "build.py")], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        pytest.fail(f"the JupyterLite site could not be built (exit {done.returncode}):\n"
                    f"{done.stderr.strip() or done.stdout.strip()}", pytrace=False)
    print(f"jupyterlite build: {time.monotonic() - t0:.1f} s")
    return serve.SITE


@pytest.fixture(scope="module")
def lite_url(lite_site: Path):
    """serve.py's app (the site, /models/ with Range) on a free loopback port."""
    yield from served(serve.create_app(lite_site), "the JupyterLite site server")


def _printed(text: str) -> dict[str, str]:
    """The `label: value` lines the notebook's cells print."""
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def _off_origin(requests: list[str], origin: str) -> list[str]:
    """The requested URLs not on `origin`; blob: URLs of the origin are made in the page (gpuport imports its
    JS half from the wheel's text), not fetched."""
    return sorted({url for url in requests if not url.startswith((origin + "/", f"blob:{origin}/"))})


def _reference_cosines() -> list[float]:
    emb = np.array([FIXTURE["embeddings"][FIXTURE["sentences"].index(s)] for s in SENTENCES], dtype=np.float64)
    return [float(emb[i] @ emb[j]) for i, j in ((0, 1), (0, 2), (1, 2))]


# What the kernel's Pyodide logs when it dies: JupyterLite's drive (the kernel's /drive, each file operation a
# round trip to the page through a SharedArrayBuffer in a cross-origin isolated site) can hand Pyodide's file system
# bad JSON ("Bad control character in string literal in JSON"; upstream: jupyterlite/jupyterlite#1412, #1071), which
# Pyodide treats as fatal; the kernel then shows [*] for ever. Seen here 2 times in ~10 loops of these tests beside a
# unit-test load, while the kernel initialised (micropip's install, importing through the drive's working directory).
KERNEL_DIED = re.compile(r"fatal error|fatal_error", re.IGNORECASE)
POLL_MS = 2_000
QUEUED_MS = 30_000


def _choose_run_all(page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _run_all(context, lite_url: str, notebook: str, code_cells: int, last_words: str):
    """One attempt: open `notebook`, Run All Cells, wait for `last_words` in the last cell's output, a traceback,
    the kernel's death or the timeout. Returns (page, outputs, requests, console, problem or None, whether the
    kernel died, seconds)."""
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))   # the kernel's worker's too
    console: list[str] = []   # the page's and its workers' (the kernel's): what a run that fails said
    page = context.new_page()
    page.on("console", lambda message: console.append(f"page {message.type}: {message.text}"))
    page.on("worker", lambda worker: worker.on(
        "console", lambda message: console.append(f"worker {worker.url.rsplit('/', 1)[-1]} {message.type}: "
                                                  f"{message.text}")))
    t0 = time.monotonic()
    page.goto(f"{lite_url}/notebooks/index.html?path={notebook}")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    expect(cells).to_have_count(code_cells, timeout=60_000)
    # Run All before the kernel is up can leave every cell queued and never run: run once the toolbar says the
    # kernel is idle
    status = page.locator(KERNEL_STATUS)
    try:
        expect(status).to_have_attribute("data-status", "idle", timeout=KERNEL_START_TIMEOUT_MS)
    except AssertionError:
        pytest.fail(f"{notebook}: the kernel did not start in {KERNEL_START_TIMEOUT_MS / 1000:.0f} s "
                    f"(its status: {status.get_attribute('data-status')!r})", pytrace=False)
    _choose_run_all(page)
    # Run All queues every cell at once ([*]): a choice that queued nothing (once in a loaded run: the status said
    # idle, every prompt stayed [ ] for the whole 420 s) is made again, saying so
    queued = page.locator(".jp-Notebook .jp-InputPrompt").filter(has_text=re.compile(r"\[(\*|\d+)\]"))
    try:
        expect(queued.first).to_be_attached(timeout=QUEUED_MS)
    except AssertionError:
        print(f"{notebook}: Run All Cells queued no cell in {QUEUED_MS / 1000:.0f} s (the kernel's status: "
              f"{status.get_attribute('data-status')!r}); choosing it again")
        _choose_run_all(page)

    # Run All stops at a cell that raises: wait for the last cell's output or for a traceback. Attached,
    # not visible: the notebook renders only the cells in view, the others stay in the DOM, hidden.
    last = cells.last.locator(".jp-OutputArea").filter(has_text=last_words)
    failed = page.locator(STDERR_OUTPUT).filter(has_text=re.compile(r"Traceback|Error"))
    problem, died = None, False
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while True:
        try:
            expect(last.or_(failed).first).to_be_attached(timeout=POLL_MS)
            break
        except AssertionError:
            died = any(KERNEL_DIED.search(line) for line in console)
            if died or time.monotonic() > deadline:
                problem = ("stopped: the kernel's Pyodide suffered a fatal error" if died else
                           f"did not finish in {RUN_TIMEOUT_MS / 1000:.0f} s (the kernel's status: "
                           f"{status.get_attribute('data-status')!r})")
                break
    ran_s = time.monotonic() - t0
    # read from the DOM as it is: the notebook renders only the cells in view, so a locator may wait for ever
    outputs, prompts = page.evaluate("""() => {
        const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
        return [cells.map((cell) => (cell.querySelector('.jp-OutputArea') || {}).textContent ?? ''),
                cells.map((cell) => (cell.querySelector('.jp-InputPrompt') || {}).textContent ?? 'not rendered')];
    }""")
    if problem is None and failed.count():
        problem = f"raised:\n{failed.first.text_content()}"
    if problem is not None:
        # each cell's prompt says which one ran ([n]), runs ([*]) or waits ([ ]); the first errors and the last
        # requests and console lines say what the kernel was doing
        errors = [line for line in console if " error: " in line][:12]
        problem = (f"{problem}\noutputs so far: {outputs}\nprompts: {prompts}\nthe last requests: {requests[-12:]}\n"
                   f"the first errors:\n" + "\n".join(errors) + "\nthe last console lines:\n" +
                   "\n".join(console[-25:]) + f"\nrequests off the site's origin: {_off_origin(requests, lite_url)}")
    return page, outputs, requests, problem, died, ran_s


@contextmanager
def notebook_run(browser, lite_url: str, notebook: str, code_cells: int, last_words: str):
    """Open `notebook` in the Notebook UI and Run All Cells from the Run menu; once the last cell's output says
    `last_words`, yield (the page, each code cell's output text, every URL the page and its workers requested). A
    traceback, a run that does not finish or a request off the site's origin fails the test. A kernel whose Pyodide
    died (KERNEL_DIED: JupyterLite's drive, not gpuport) is given one more run in a fresh context, saying so; a
    second death fails the test."""
    for attempt in (1, 2):
        context = browser.new_context()
        try:
            page, outputs, requests, problem, died, ran_s = _run_all(context, lite_url, notebook, code_cells,
                                                                     last_words)
        except BaseException:
            context.close()
            raise
        if problem is None:
            break
        context.close()
        if died and attempt == 1:
            print(f"jupyterlite {notebook}: the kernel died on the first run, running it again:\n{problem}")
            continue
        pytest.fail(f"{notebook} {problem}", pytrace=False)
    try:
        print(f"jupyterlite {notebook}: opened and ran all cells in {ran_s:.1f} s"
              f"{' (the second run)' if attempt == 2 else ''}")
        off_origin = _off_origin(requests, lite_url)
        assert not off_origin, f"requests off the site's origin (a CDN?): {off_origin}"
        yield page, outputs, requests
    finally:
        context.close()


def test_notebook_runs_gpuport(chromium_webgpu, lite_url):
    with notebook_run(chromium_webgpu, lite_url, "gpuport.ipynb", 4, "matmuls on the device:") as run:
        _, outputs, requests = run
    opened, kernel, embedded = (_printed(text) for text in outputs[1:])
    assert opened["backend"] == "webgpu", outputs[1]
    assert opened["host kernels"].startswith("wasm-"), outputs[1]   # the wheel's .wasm linked in the kernel
    assert kernel["saxpy first values"] == "[1.  1.5 2.  2.5]", outputs[2]
    assert float(kernel["saxpy max abs error"]) == 0.0, outputs[2]
    assert int(kernel["saxpy dispatches on the GPU"]) == 1, outputs[2]   # the WGSL ran, not its NumPy twin
    assert embedded["embedding shape"] == "(3, 384)", outputs[3]
    norms = [float(v) for v in embedded["embedding norms"].split()]
    assert norms == pytest.approx([1.0] * 3, abs=1e-4), outputs[3]
    cosines = [float(v) for v in embedded["cosines (0,1) (0,2) (1,2)"].split()]
    assert cosines == pytest.approx(_reference_cosines(), abs=1e-3), outputs[3]   # sentence-transformers'
    assert float(embedded["webgpu vs auto, max abs difference"]) <= 1e-5, outputs[3]
    assert int(embedded["matmuls on the device"]) > 0, outputs[3]   # the pinned forward ran on WebGPU

    # the log saw the kernel's worker: Pyodide, the gpuport wheel and the model came from this origin
    for expected in ("/static/pyodide/pyodide.asm.wasm", "/static/pyodide/numpy-", "/pypi/gpuport-",
                     "/models/minilm-l6-v2/"):
        assert any(url.startswith(lite_url + expected) for url in requests), f"no request for {expected}"


def test_arrays_notebook_runs_scikit_learn_on_the_gpu(chromium_webgpu, lite_url):
    """examples/jupyterlite/arrays.ipynb: gpuport.xp arrays on the GPU with reads written as natively (the kernel's
    Pyodide waits for the GPU inside the call: JSPI), a fused expression, scikit-learn's PCA, LinearDiscriminantAnalysis
    and Ridge(solver="svd") on gpuport arrays within tests/xp/test_sklearn.py's tolerance of the same estimators on
    NumPy in the same kernel, their products on the device, a matplotlib figure, and timings against NumPy. Pyodide's
    scikit-learn, SciPy and matplotlib and PyPI's array-api-compat come from the site."""
    with notebook_run(chromium_webgpu, lite_url, "arrays.ipynb", 6, "timed workloads:") as (page, outputs, requests):
        figures = page.locator(".jp-Notebook .jp-CodeCell").nth(4).locator(".jp-OutputArea img").count()
    opened, fused, sklearn_, _, timed = (_printed(text) for text in outputs[1:6])
    assert opened["backend"] == "webgpu", outputs[1]
    assert fused["GPU dispatches for the 8 functions"] == "{'elementwise': 1}", outputs[2]   # one fused kernel
    assert fused["and for the 8 functions and their sum"] == "{'reduce': 2}", outputs[2]    # fused into the sum
    assert float(fused["sum, relative difference from NumPy"]) < 1e-5, outputs[2]
    # WGSL's sin is within 2**-11 of exact (SwiftShader uses much of that), halved by the chain; float32 rounding
    assert float(fused["max abs difference from NumPy"]) <= 2**-12 + 1e-5, outputs[2]
    far, numpy_far = fused["values beyond 3.5"].split(" NumPy: ")
    assert int(far) == int(numpy_far) > 0, outputs[2]                   # boolean indexing read its count back
    assert fused["distinct floors of |x|"] == "[0, 1, 2, 3, 4]", outputs[2]
    tolerance = 2e-4   # tests/xp/test_sklearn.py's RTOL: float32 sums of at most 1797 terms in another order
    assert float(sklearn_["PCA transform, max difference from NumPy's over its scale (up to the SVD's signs)"]) \
        <= tolerance, outputs[3]
    assert float(sklearn_["LDA predictions equal to NumPy's"]) >= 0.999, outputs[3]
    assert float(sklearn_["Ridge predictions, max difference from NumPy's over their scale"]) <= tolerance, outputs[3]
    assert int(sklearn_["matmuls on the device"]) >= 3, outputs[3]      # rt.info()["ran"]: the products on WebGPU
    assert figures == 1, f"the plot cell shows {figures} images: {outputs[4]}"
    rows = [line.split() for line in outputs[5].splitlines() if re.search(r"\d+\.\d+\s+\d+\.\d+$", line)]
    assert len(rows) == int(timed["timed workloads"]) == 5 and all(float(r[-1]) > 0 for r in rows), outputs[5]
    for expected in ("/static/pyodide/scikit_learn-", "/static/pyodide/scipy-", "/static/pyodide/matplotlib-",
                     "/pypi/array_api_compat-"):
        assert any(url.startswith(lite_url + expected) for url in requests), f"no request for {expected}"
