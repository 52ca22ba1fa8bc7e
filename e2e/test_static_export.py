"""`gpuport export` on a plain static host: `python -m http.server` (no HTTP Range, no CORS, no gpuport code)
serves the export; the demo page and its MiniLM section (`?model=1`) run in Chromium and Firefox with every
request staying on that origin. And a page on another origin embeds gpuport from the export
(examples/embed/index.html): typed arrays in and out, its own module, its own wheel."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpuport.site.export import export_site
from gpuport.testing.browsers import LaneError
from gpuport.testing.site import StaticServer, build_project_wheel

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_site(tmp_path_factory.mktemp("export") / "site", models=["minilm-l6-v2"])


@pytest.fixture(scope="module")
def http_server(exported, tmp_path_factory):
    """`python -m http.server` on the export; yields (url, the server's access log path)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("http-server") / "access.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                 "--directory", str(exported)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"python -m http.server did not start: {log.read_text()}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/", log
    proc.terminate()
    proc.wait(timeout=10)


# In the page, after the demo's result: once none of MiniLM's ops has pipelines still compiling in the background
# (asked from JS: the background compilation pauses while Python runs a call), one more forward, and the ops it ran on
# the device (rt.info()'s counts before and after), with what says why where none did.
SECOND_FORWARD = """async () => {
  const gp = await window.gpuportReady;
  const ops = ["embedding", "add", "layer_norm", "matmul", "attention", "mean_pool", "l2_normalize"];
  const t0 = performance.now();
  while (performance.now() - t0 < 120000) {
    const busy = await gp.runPython("sorted(rt.pipelines.busy)");
    if (!busy.some((op) => ops.includes(op))) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const waited_s = (performance.now() - t0) / 1000;
  return { waited_s, ...(await gp.runPython(`
_before = {op: n.get("webgpu", 0) for op, n in rt.info()["ran"].items()}
await _demo["model"].embed(["a forward once the pipelines are built"])
{"on_device": [op for op, n in rt.info()["ran"].items() if n.get("webgpu", 0) > _before.get(op, 0)],
 "busy": sorted(rt.pipelines.busy), "ran": rt.info()["ran"], "recovery": rt.recovery.stats(),
 "last": str(rt.placement.last), "tier": rt.tier, "mode": rt.mode}`)) };
}"""


def _browser(browsers, kind: str):
    try:
        return browsers.get(kind)
    except LaneError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_export_runs_the_demo_and_minilm_from_python_http_server(browsers, http_server, kind):
    """The demo from the export: MiniLM from chunk files (no Range) in both browsers, in Chromium pinned to the
    page's WebGPU (its kernels from the export's wheel, compiled and run there). tests/site/test_export.py checks
    that the export holds every shader; the demo's kernel table runs in e2e/test_page.py, every kernel in each
    lane."""
    from playwright.sync_api import expect

    url, log = http_server
    context = _browser(browsers, kind).new_context()   # a fresh profile: no cached model chunks
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    try:
        page = context.new_page()
        page.goto(url + ("?model=1&table=0&backend=webgpu" if kind == "chromium-webgpu" else "?model=1&table=0"))
        expect(page.locator("#model")).to_have_attribute("data-state", "done", timeout=300_000)
        assert page.locator("#heatmap td.cell").count() == 36
        assert page.locator("#heatmap tr:nth-child(2) td.cell").first.inner_text() == "1.00"
        assert page.locator("#boot-stages li.done").count() >= 3   # start-up stages with their times
        summary = page.locator("#model-summary").inner_text()
        assert kind != "chromium-webgpu" or "(webgpu)" in summary, summary
        if kind == "chromium-webgpu":
            # MiniLM's kernels run on the page's device once their pipelines are built. The demo's own forward
            # may come first: an op whose pipelines are still compiling in the background answers on NumPy (the
            # planner's "pipelines still precompiling"), and the rest of that forward follows its host output
            # (a loaded machine did that). So a forward once MiniLM's pipelines are built is the one counted.
            got = page.evaluate(SECOND_FORWARD)
            assert {"matmul", "attention", "layer_norm"} <= set(got["on_device"]), json.dumps(got)
    finally:
        context.close()
    elsewhere = [u for u in requests if not u.startswith(url) and not u.startswith(("data:", "blob:"))]
    assert not elsewhere, f"requests outside {url}: {elsewhere}"
    assert any(u.endswith("/gpuport.js") for u in requests), requests
    # the weights came from this server as chunk files (Range emulated in the page): all 87 of them
    served = log.read_text(errors="replace")
    chunks = {line.split("model.safetensors.chunks/")[1][:5] for line in served.splitlines()
              if "model.safetensors.chunks/" in line and '" 200 ' in line}
    assert len(chunks) == 87, f"{len(chunks)} chunk files served"


@pytest.mark.parametrize("kind", ["chromium-webgpu", "firefox"])
def test_a_page_on_another_origin_embeds_gpuport(browsers, exported, tmp_path, kind):
    """examples/embed/index.html on its own origin loads gpuport.js from the export's (CORS) origin:
    setArray/getArray round-trip, addModule, installWheel (examples/rowstats), a correct result."""
    from playwright.sync_api import expect

    page_dir = tmp_path / "page"
    page_dir.mkdir()
    shutil.copy(ROOT / "examples" / "embed" / "index.html", page_dir / "index.html")
    wheel = build_project_wheel(ROOT / "examples" / "rowstats", page_dir)
    files = StaticServer(exported, cors=True)
    pages = StaticServer(page_dir)
    context = _browser(browsers, kind).new_context()
    try:
        assert files.url != pages.url
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{pages.url}index.html?gpuport={files.url}&wheel={pages.url}{wheel.name}")
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=180_000)
        result = page.evaluate("window.exampleResult")
        assert result["shape"] == [3, 4] and result["dtype"] == "float32" and result["type"] == "Float32Array", result
        assert result["maxError"] < 1e-6, result
        assert result["wheel"] == {"package": "rowstats", "diagonal_error": pytest.approx(0, abs=1e-5)}, result
        assert not errors, errors
    finally:
        context.close()
        files.close()
        pages.close()
