"""gpuport's pytest plugin on a user's own project (examples/rowstats): one pytest command runs its tests
natively and in Chromium, Firefox, WebKitGTK and a Chromium cpu lane. Passing tests pass in each lane; the
deliberately failing one fails in each lane with the page's traceback; a missing browser is an error that
names it, never a skip."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "examples" / "rowstats"
LANES = ["native", "chromium", "firefox", "webkit", "chromium-cpu"]
PASSING = ["test_cosine_similarity_matches_numpy", "test_clamp_kernel[-0.5-0.5-{}]", "test_clamp_kernel[0.0-2.0-{}]",
           "test_runtime_has_a_backend"]
FAILING = "test_demo_failure_shows_the_page_traceback"


def _pytest(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run pytest in the project (the plugin given with -p where its entry point is not installed);
    returns the process and {test name: (outcome, message)} from its JUnit XML."""
    junit = tmp_path / "junit.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "gpuport.testing.plugin", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", "-rA", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT / "py"), **(env or {})))
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "") + "\n" + (child.text or "")
        results[case.get("name")] = (outcome, message)
    return done, results


def test_the_project_runs_in_every_lane_and_its_failure_shows_the_page_traceback(tmp_path):
    done, results = _pytest(tmp_path, "-m", "", "--gpuport-lanes=" + ",".join(LANES))
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 1, output   # the deliberate failure, nothing worse
    for lane in LANES:
        for name in PASSING:
            test = name.format(lane) if "{}" in name else f"{name}[{lane}]"
            assert results.get(test, ("missing",))[0] == "passed", (test, results.get(test), output)
        outcome, message = results[f"{FAILING}[{lane}]"]
        assert outcome == "failure", (lane, outcome, message)
        assert "assert sims[1, 1] == 0.5" in message and "test_rowstats.py" in message, message
        if lane != "native":   # the page's own traceback, its lane, and the operands the assert compared
            assert f"[{lane}] failed in the page" in message and "Traceback (most recent call last)" in message
            assert "left:  np.float32(" in message and "right: 0.5" in message, message
    assert len(results) == 5 * len(LANES), sorted(results)
    assert "gpuport lanes" in done.stdout and "webkit" in done.stdout


def test_a_missing_browser_is_an_error_naming_it(tmp_path):
    bogus = str(tmp_path / "no-such-chromium")
    done, results = _pytest(tmp_path, "--gpuport-lanes=chromium", "-k", "runtime_has_a_backend",
                            env={"GPUPORT_CHROMIUM": bogus})
    assert done.returncode == 1, done.stdout[-3000:]
    outcome, message = results["test_runtime_has_a_backend[chromium]"]
    assert outcome == "error", (outcome, message)
    assert bogus in message and "GPUPORT_CHROMIUM" in message and "chromium" in message, message
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout[-500:]


def test_lanes_load_their_pages_from_a_given_site(tmp_path, server_url):
    """--gpuport-url: the pages come from a running gpuport site (here the dev server), the project's wheel
    from the plugin's own server on another origin (CORS)."""
    done, results = _pytest(tmp_path, "--gpuport-lanes=chromium", "-k", "cosine", f"--gpuport-url={server_url}/")
    assert done.returncode == 0, done.stdout[-3000:]
    assert results == {"test_cosine_similarity_matches_numpy[chromium]": ("passed", "")}
