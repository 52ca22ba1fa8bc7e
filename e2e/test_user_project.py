"""gpuport's pytest plugin on a user's own project (examples/rowstats): one pytest command runs its tests
natively and in Chromium, Firefox, WebKitGTK, a Chromium cpu lane and bare Pyodide pages. Passing tests pass in each
lane; the deliberately failing one fails in each lane with the page's traceback; a missing browser is an error that
names it, never a skip. At scale: that command in two pytest-xdist workers (each browser lane on one worker, no
browser launched twice by a worker; one process against two is tests/testing/test_testing_plugin.py's), WebKit from
a WebDriver server; a lane runs in a browser lent by a Playwright server in another process; `--gpuport-report`
writes the test-by-lane matrix, checked here as a person sees it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from e2e_serve import free_port
from gpuport.testing.browsers import Xvfb, executable

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "examples" / "rowstats"
LANES = ["native", "chromium", "firefox", "webkit", "chromium-cpu"]
# bare Pyodide pages (web/pyodide.html) where micropip installs gpuport and the project, as PyScript or JupyterLite would
BARE = ["chromium-pyodide", "firefox-pyodide"]
PASSING = ["test_cosine_similarity_matches_numpy", "test_clamp_kernel[-0.5-0.5-{}]", "test_clamp_kernel[0.0-2.0-{}]",
           "test_runtime_has_a_backend"]
FAILING = "test_demo_failure_shows_the_page_traceback"
# What a Playwright server on this machine launches: Debian's Chromium with WebGPU on SwiftShader (a team's
# GPU machine would launch its own browser on its own adapter and need none of this).
LAUNCH = json.dumps({"executablePath": executable("chromium"),
                     "args": ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan",
                              "--disable-background-networking", "--disable-component-update", "--no-first-run"]})


def _pytest(out: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run pytest in the project (the plugin given with -p where its entry point is not installed);
    returns the process and {test name: (outcome, message, lane property)} from its JUnit XML."""
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    try:   # -v: should it ever time out, the output up to then names the test it was in
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "gpuport.testing.plugin", "-p", "no:cacheprovider",
                               f"--junitxml={junit}", "-rA", "-v", *args], cwd=PROJECT, capture_output=True, text=True,
                              timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT / "py"), **(env or {})))
    except subprocess.TimeoutExpired as exc:
        def tail(b: bytes | str | None) -> str:
            return (b.decode(errors="replace") if isinstance(b, bytes) else b or "")[-6000:]
        pytest.fail(f"pytest {' '.join(args)} ran past {exc.timeout} s; its output until then:\n{tail(exc.stdout)}\n"
                    f"stderr:\n{tail(exc.stderr)}")
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "") + "\n" + (child.text or "")
        lane = {p.get("name"): p.get("value") for p in case.iter("property")}.get("gpuport_lane")
        results[case.get("name")] = (outcome, message, lane)
    return done, results


@pytest.fixture(scope="module")
def every_lane(tmp_path_factory):
    """The project's whole suite in every lane (the bare Pyodide ones too: the same browsers serve them), with the
    report, as a team runs it at scale: in two pytest-xdist workers, and WebKit through a WebDriver server listening
    on a port, as on another machine, under an X server of its own (the e2e suite's own lanes are one process whose
    WebKit driver the plugin starts itself). Returns (the process, its results, the report's folder, the driver's
    URL)."""
    out = tmp_path_factory.mktemp("every-lane")
    xvfb = Xvfb()
    webdriver = f"http://127.0.0.1:{free_port()}"
    driver = subprocess.Popen([executable("webkit-driver"), f"--port={webdriver.rsplit(':', 1)[1]}"],
                              env=dict(os.environ, DISPLAY=xvfb.display), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        done, results = _pytest(out, "-n", "2", "-m", "", "--gpuport-lanes=" + ",".join(LANES + BARE),
                                f"--gpuport-webdriver=webkit={webdriver}", f"--gpuport-report={out / 'report'}")
    finally:
        driver.terminate()
        driver.wait(timeout=30)
        xvfb.close()
    return done, results, out / "report", webdriver


def test_the_project_runs_in_every_lane_and_its_failure_shows_the_page_traceback(every_lane):
    done, results, _, webdriver = every_lane
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 1, output   # the deliberate failure, nothing worse
    for lane in LANES:
        for name in PASSING:
            test = name.format(lane) if "{}" in name else f"{name}[{lane}]"
            assert results.get(test, ("missing",))[0] == "passed", (test, results.get(test), output)
            assert results[test][2] == lane   # the lane is a JUnit property of each test case
        outcome, message, _ = results[f"{FAILING}[{lane}]"]
        assert outcome == "failure", (lane, outcome, message)
        assert "assert sims[1, 1] == 0.5" in message and "test_rowstats.py" in message, message
        if lane != "native":   # the page's own traceback, its lane, and the operands the assert compared
            assert f"[{lane}] failed in the page" in message and "Traceback (most recent call last)" in message
            assert "left:  np.float32(" in message and "right: 0.5" in message, message
    assert len(results) == 5 * len(LANES + BARE), sorted(results)
    summary = done.stdout[done.stdout.index("gpuport lanes"):]
    assert re.search(rf"webkit +1 failed, 4 passed  \(gw\d: webkit MiniBrowser \S+ from {webdriver}; ", summary), summary


def test_bare_pyodide_lanes_install_gpuport_with_micropip_as_pyscript_does(every_lane):
    """chromium-pyodide and firefox-pyodide: web/pyodide.html, a plain loadPyodide() page, micropip installs
    gpuport and the project's wheel; the tests run there on WebGPU."""
    done, results, _, _ = every_lane
    for lane in BARE:
        for name in PASSING:
            test = name.format(lane) if "{}" in name else f"{name}[{lane}]"
            assert results.get(test, ("missing",))[0] == "passed", (test, results.get(test), done.stdout[-4000:])
        assert f"[{lane}] failed in the page" in results[f"{FAILING}[{lane}]"][1]
    summary = done.stdout[done.stdout.index("gpuport lanes"):]
    assert re.search(r"chromium-pyodide +1 failed, 4 passed  \(gw\d: chromium-webgpu .*; webgpu/core", summary), summary
    assert re.search(r"firefox-pyodide +1 failed, 4 passed  \(gw\d: firefox .*; webgpu/full", summary), summary


def test_two_workers_share_the_lanes_without_more_browsers(every_lane):
    """Every outcome above came from two xdist workers: each lane's page was loaded by one worker only, and no
    worker launched a browser kind twice."""
    done, results, report_dir, _ = every_lane
    assert all(lane for _, _, lane in results.values() if lane is not None)
    report = json.loads((report_dir / "report.json").read_text())
    launched = report["browsers_launched"]
    assert set(launched) == {"gw0", "gw1"}, launched
    for worker, keys in launched.items():
        assert len(keys) == len(set(keys)), (worker, keys)
    pages = [page["lane"] for page in report["lane_pages"] if page["lane"] != "native"]
    assert sorted(pages) == sorted(LANES[1:] + BARE), report["lane_pages"]
    assert {page["worker"] for page in report["lane_pages"]} == {"gw0", "gw1"}, report["lane_pages"]
    assert "browsers: gw0 launched" in done.stdout and "; gw1 launched" in done.stdout, done.stdout[-3000:]


def test_the_report_shows_the_matrix_in_a_browser(every_lane, browsers, tmp_path):
    _, results, report_dir, _ = every_lane
    data = json.loads((report_dir / "report.json").read_text())
    assert data["lanes"] == LANES + BARE and len(data["tests"]) == 5
    pages = {page["lane"]: page for page in data["lane_pages"]}
    assert pages["chromium"]["backend"] == "webgpu" and pages["chromium"]["adapter"]["vendor"] == "google"
    assert pages["firefox"]["tier"] == "full" and "shader-f16" in pages["firefox"]["features"]
    assert pages["webkit"]["browser_version"].startswith("MiniBrowser") and pages["native"]["browser_version"]
    page = browsers.get("chromium-webgpu").new_page()
    try:
        page.goto((report_dir / "report.html").as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert (tmp_path / "report.png").stat().st_size > 10_000
        for lane in LANES:
            failed = page.locator(f'#matrix tr[data-test$="{FAILING}"] td[data-lane="{lane}"]')
            assert failed.get_attribute("class") == "failed" and failed.inner_text().startswith("failed")
            target = failed.locator("a").get_attribute("href")
            assert "Traceback" in page.locator(target).inner_text() or lane == "native"
            assert "assert sims[1, 1] == 0.5" in page.locator(target).inner_text()
            assert page.locator(f'#matrix td.passed[data-lane="{lane}"]').count() == 4
            # a browser lane's page on one worker; the native lane on each worker its tests went to
            rows = page.locator(f'#lanes tr[data-lane="{lane}"]').count()
            assert rows == 1 or lane == "native" and 1 <= rows <= 2, (lane, rows)
        assert page.locator("#matrix td.passed").first.evaluate("e => getComputedStyle(e).backgroundColor") != \
            page.locator("#matrix td.failed").first.evaluate("e => getComputedStyle(e).backgroundColor")
    finally:
        page.close()


@pytest.fixture(scope="module")
def playwright_server():
    """`python -m playwright run-server` in a process group of its own on a free loopback port (--unsafe: it
    takes the client's executablePath and args). The group is stopped after: the Python wrapper runs the server in a
    Node child, which outlived a terminate of the wrapper alone (fresh-clone runs left it behind)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "playwright", "run-server", "--host", "127.0.0.1", "--port",
                             str(port), "--unsafe"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()   # "Listening on ws://127.0.0.1:PORT/" once it accepts connections
        if "Listening on" not in line:
            pytest.fail(f"the Playwright server did not start: {line}")
        yield f"ws://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_lane_in_a_browser_lent_by_a_playwright_server_on_pages_of_a_given_site(playwright_server, server_url,
                                                                                  tmp_path):
    """--gpuport-connect: the chromium lane's browser comes from a Playwright server in another process;
    --gpuport-url: its pages from a running gpuport site (here the dev server), the project's wheel from the
    plugin's own server on another origin (CORS)."""
    done, results = _pytest(tmp_path, "-m", "", "--gpuport-lanes=native,chromium", f"--gpuport-url={server_url}/",
                            f"--gpuport-connect=chromium={playwright_server}?launch-options={LAUNCH}")
    assert done.returncode == 1, done.stdout[-4000:]
    for name in PASSING:
        test = name.format("chromium") if "{}" in name else f"{name}[chromium]"
        assert results[test][0] == "passed", (test, results[test])
    assert results[f"{FAILING}[chromium]"][0] == "failure"
    assert "[chromium] failed in the page" in results[f"{FAILING}[chromium]"][1]
    summary = done.stdout[done.stdout.index("gpuport lanes"):]
    assert f"from {playwright_server}; webgpu/core on google swiftshader" in summary, summary
    assert "chromium-webgpu 156." in summary, summary


def test_a_lent_browser_without_webgpu_is_an_error_naming_the_lane(playwright_server, tmp_path):
    """The server launches Chromium without the WebGPU flags (the page falls back to the CPU): the chromium
    lane is there for WebGPU, so it fails to start rather than passing on the wrong tier."""
    launch = json.dumps({"executablePath": executable("chromium"), "args": ["--disable-background-networking"]})
    done, results = _pytest(tmp_path, "--gpuport-lanes=chromium", "-k", "backend",
                            f"--gpuport-connect=chromium={playwright_server}?launch-options={launch}")
    outcome, message, _ = results["test_runtime_has_a_backend[chromium]"]
    assert outcome == "error", (outcome, message)
    assert f"lane chromium: the browser from {playwright_server} has no WebGPU" in message, message
    assert "the page runs on backend cpu" in message, message


def test_an_unreachable_playwright_server_fails_fast_naming_the_lane(tmp_path):
    closed = f"ws://127.0.0.1:{free_port()}/"
    t0 = time.monotonic()
    done, results = _pytest(tmp_path, "--gpuport-lanes=chromium", "-k", "backend", f"--gpuport-connect=chromium={closed}")
    assert time.monotonic() - t0 < 60, "connecting to a closed port must not wait out a long timeout"
    outcome, message, _ = results["test_runtime_has_a_backend[chromium]"]
    assert outcome == "error" and f"lane chromium: chromium-webgpu: no browser from {closed}" in message, message
    assert "ECONNREFUSED" in message, message


def test_a_missing_browser_is_an_error_naming_it(tmp_path):
    bogus = str(tmp_path / "no-such-chromium")
    done, results = _pytest(tmp_path, "--gpuport-lanes=chromium", "-k", "runtime_has_a_backend",
                            env={"GPUPORT_CHROMIUM": bogus})
    assert done.returncode == 1, done.stdout[-3000:]
    outcome, message, _ = results["test_runtime_has_a_backend[chromium]"]
    assert outcome == "error", (outcome, message)
    assert bogus in message and "GPUPORT_CHROMIUM" in message and "chromium" in message, message
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout[-500:]
