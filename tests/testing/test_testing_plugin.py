"""gpuport's pytest plugin without a browser: what runs in the page (module loader, assert rewriting, the
test runner, pytest's stand-in, arguments), the browsers' requirements, and the plugin itself in its native
lane (pytester, in a subprocess). The browser lanes: e2e/test_user_project.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import gpuport
import numpy as np
import pytest
from gpuport.testing import browsers, inpage, plugin, stand_in

pytest_plugins = ["pytester"]
PY = str(Path(gpuport.__file__).resolve().parents[1])

MODULE = '''
import pytest
calls = []

def side(v):
    calls.append(v)
    return v

def test_compares(n):
    assert side(2) == side(n)

def test_message_kept():
    assert 1 == 2, "my own words"

def test_chained():
    assert 1 < 2 < 0

class TestGroup:
    async def test_async(self, gp_runtime):
        print("from the page")
        assert gp_runtime == "RT"

def test_skips():
    pytest.skip("not here")
'''


def _run(module: str, qualname: str, **args) -> dict:
    return json.loads(asyncio.run(inpage.run_test(module, qualname, inpage.encode_args(args), "RT")))


@pytest.fixture(scope="module")
def page_module():
    inpage.add_module("pkg.test_page_module", MODULE, "/project/tests/test_page_module.py")
    yield sys.modules["pkg.test_page_module"]
    for name in ("pkg.test_page_module", "pkg"):
        sys.modules.pop(name, None)


def test_rewritten_assert_shows_both_operands_and_evaluates_each_once(page_module):
    page_module.calls.clear()
    assert _run("pkg.test_page_module", "test_compares", n=2)["outcome"] == "passed"
    result = _run("pkg.test_page_module", "test_compares", n=3)
    assert page_module.calls == [2, 2, 2, 3]
    assert result["outcome"] == "failed" and result["error"] == "AssertionError"
    assert "assert side(2) == side(n)\n  left:  2\n  right: 3" in result["message"]
    tb = result["traceback"]
    assert 'File "/project/tests/test_page_module.py", line 10, in test_compares' in tb
    assert "    assert side(2) == side(n)" in tb and "inpage.py" not in tb   # its own source line, no runner frames


def test_asserts_with_a_message_or_a_chain_are_left_alone(page_module):
    assert _run("pkg.test_page_module", "test_message_kept")["message"] == "my own words"
    assert _run("pkg.test_page_module", "test_chained")["message"] == ""


def test_class_methods_async_tests_stdout_and_skips(page_module):
    result = _run("pkg.test_page_module", "TestGroup.test_async")
    assert result["outcome"] == "passed" and result["stdout"] == "from the page\n", result
    assert _run("pkg.test_page_module", "test_skips") == {"outcome": "skipped", "message": "not here",
                                                          "stdout": "", "stderr": ""}
    assert sys.modules["pkg"].test_page_module is page_module


def test_arguments_cross_as_literals_and_arrays():
    values = {"n": 3, "pair": (1.5, "x"), "nested": {"a": [1, None, True]},
              "array": np.arange(6, dtype=np.float32).reshape(2, 3)}
    back = inpage.decode_args(inpage.encode_args(values))
    assert back["pair"] == (1.5, "x") and back["nested"] == {"a": [1, None, True]} and back["n"] == 3
    assert back["array"].dtype == np.float32 and back["array"].tolist() == values["array"].tolist()
    with pytest.raises(TypeError, match="'tmp' .* cannot be sent to the page"):
        inpage.encode_args({"tmp": Path("/tmp")})


def test_stand_in_behaves_like_pytest():
    assert 0.1 + 0.2 == stand_in.approx(0.3)
    assert [1.0, 2.0000001] == stand_in.approx([1, 2])
    assert np.array([1.0, 2.0]) == stand_in.approx(np.array([1.0, 2.0 + 1e-9]))
    assert not (np.array([1.0, 2.0]) == stand_in.approx(np.array([1.0, 2.1])))
    with stand_in.raises(ValueError, match="bad") as info:
        raise ValueError("a bad value")
    assert str(info.value) == "a bad value"
    with pytest.raises(AssertionError, match="DID NOT RAISE"):
        with stand_in.raises(ValueError):
            pass
    decorated = stand_in.mark.parametrize("x", [1])(stand_in.mark.gpuport(len))
    assert decorated is len and stand_in.fixture(len) is len and stand_in.fixture(scope="session")(len) is len
    with pytest.raises(stand_in.Skipped):
        stand_in.skip("why")


def test_missing_browser_names_the_path_the_variable_and_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUPORT_FIREFOX", str(tmp_path / "firefox"))
    reason = browsers.missing("firefox")
    assert str(tmp_path / "firefox") in reason and "$GPUPORT_FIREFOX" in reason and "firefox-esr" in reason
    monkeypatch.setattr(browsers, "sync_playwright", None)
    assert "gpuport[test]" in browsers.missing("chromium-webgpu") and "playwright" in browsers.missing("firefox")
    with pytest.raises(browsers.LaneError, match=r"gpuport\[test\]"):
        browsers.Browsers().get("chromium-webgpu")


# -- the plugin in a pytest run of its own (native lane; a browser lane that cannot start) ------------------

USER_TESTS = '''
import numpy as np
import pytest

@pytest.mark.gpuport
async def test_async(gp_runtime):
    x = gp_runtime.tensor(np.arange(4, dtype=np.float32))
    assert (await gp_runtime.ops.scale(x, 2.0, 1.0).read()).tolist() == [1, 3, 5, 7]

@pytest.mark.gpuport
@pytest.mark.parametrize("n", [1, 2])
def test_sync(gp_runtime, gp_lane, n):
    assert gp_lane == "native" and gp_runtime.backend in ("webgpu", "cpu") and n in (1, 2)

@pytest.mark.gpuport
async def test_fails(gp_runtime):
    assert await gp_runtime.ops.sum(gp_runtime.tensor(np.ones(3, np.float32))).read() == 4

def test_plain():
    assert True
'''


@pytest.fixture()
def user_project(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PY + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester


def test_native_lane_runs_sync_and_async_tests_with_lane_ids(user_project):
    result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", "--gpuport-lanes=native", "-v")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*test_async[[]native[]] PASSED*", "*test_sync[[]1-native[]] PASSED*",
                                 "*test_fails[[]native[]] FAILED*", "*test_plain PASSED*",
                                 "*gpuport lanes*", "native*1 failed, 3 passed*"])


def test_a_lane_whose_browser_is_missing_errors_with_the_reason(user_project, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUPORT_FIREFOX", str(tmp_path / "nothing"))
    result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", "--gpuport-lanes=firefox",
                                               "-k", "async", "-rE")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_async[[]firefox[]]*",
                                 f"lane firefox: firefox: {tmp_path / 'nothing'} is missing (from $GPUPORT_FIREFOX)*"])


def test_unknown_lane_is_a_usage_error(user_project):
    result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", "--gpuport-lanes=native,opera")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("unknown lane(s) ['opera']; choose from native, chromium, firefox, webkit, chromium-cpu, "
            "chromium-pyodide, firefox-pyodide, safari" in result.stderr.str())


def test_a_marked_test_without_gp_runtime_is_told_what_to_take(user_project):
    user_project.makepyfile(test_other="import pytest\n@pytest.mark.gpuport\ndef test_x():\n    pass\n")
    result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", "--gpuport-lanes=native", "test_other.py")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*takes the gp_runtime fixture*"])


# -- at scale: lent browsers, xdist, the report ------------------------------------------------------------

class _Options:
    """The little of pytest's Config that plugin.lane_specs reads."""

    def __init__(self, **options) -> None:
        self.options = {"--gpuport-connect": [], "--gpuport-webdriver": [], **options}

    def getoption(self, name):
        return self.options[name]


@pytest.mark.parametrize("options,words", [
    ({"--gpuport-connect": ["chromium=http://gpu-box.invalid:3000/"]}, "expected LANE=ws|wss://"),
    ({"--gpuport-connect": ["opera=ws://gpu-box.invalid:3000/"]}, "LANE one of chromium, firefox"),
    ({"--gpuport-connect": ["chromium=ws://a.invalid/", "chromium=ws://b.invalid/"]},
     "lane chromium is already lent by ws://a.invalid/"),
    ({"--gpuport-webdriver": ["chromium=http://gpu-box.invalid:4444"]}, "WebDriver lends webkit and safari"),
    ({"--gpuport-connect": ["safari=ws://gpu-box.invalid:3000/"]}, "safari is lent by safaridriver"),
])
def test_remote_lane_options_name_what_is_wrong(options, words):
    with pytest.raises(pytest.UsageError, match=re.escape(words)):
        plugin.lane_specs(_Options(**options))


def test_lent_lanes_keep_their_page_and_gpu_check():
    specs = plugin.lane_specs(_Options(**{"--gpuport-connect": ["firefox=ws://gpu-box.invalid:3000/"],
                                          "--gpuport-webdriver": ["safari=http://mac.invalid:4444"]}))
    assert specs["firefox"].remote == browsers.Remote("playwright", "ws://gpu-box.invalid:3000/")
    assert specs["safari"].uses_webdriver() and specs["safari"].gpu and not specs["firefox"].uses_webdriver()
    assert specs["chromium"] == plugin.LANES["chromium"]
    assert plugin.default_lanes(specs)[0] == ["native", "chromium", "firefox", "webkit", "chromium-cpu", "safari"]
    assert plugin.default_lanes()[0] == ["native", "chromium", "firefox", "webkit", "chromium-cpu"]   # this machine


def test_options_are_checked_before_anything_runs(user_project):
    for args, words in ((["--gpuport-serve-host", "0.0.0.0"], "give the address the remote browser reaches"),
                        (["--gpuport-connect", "opera=ws://gpu-box.invalid:3000/"], "LANE one of chromium")):
        result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
        assert words in result.stderr.str()


def test_a_webdriver_browser_elsewhere_cannot_reach_loopback_pages_and_says_so(user_project):
    """Nothing is sent to the endpoint (.invalid never resolves): the lane fails on what the plugin knows."""
    result = user_project.runpytest_subprocess("-p", "gpuport.testing.plugin", "-k", "async", "-rE",
                                               "--gpuport-lanes=webkit",
                                               "--gpuport-webdriver", "webkit=http://gpu-box.invalid:4444")
    result.stdout.fnmatch_lines(["gpuport lane webkit lent by http://gpu-box.invalid:4444",
                                 "*ERROR at setup of test_async[[]webkit[]]*",
                                 "*lane webkit: the WebDriver browser at http://gpu-box.invalid:4444 runs on another "
                                 "machine and cannot reach the plugin's pages on 127.0.0.1: pass --gpuport-serve-host*"])


def test_remote_endpoint_merges_its_launch_options_over_the_lanes_recipe():
    remote = browsers.Remote("playwright", 'ws://box.invalid:3000/pw?launch-options={"executablePath":"/opt/c",'
                                           '"args":["--x"]}&token=t')
    url, headers = remote.playwright_endpoint("chromium-webgpu")
    assert url == remote.endpoint == "ws://box.invalid:3000/pw?token=t"
    assert json.loads(headers["x-playwright-launch-options"]) == {"executablePath": "/opt/c", "args": ["--x"]}
    assert json.loads(browsers.Remote("playwright", "ws://h.invalid/").playwright_endpoint("firefox")[1][
        "x-playwright-launch-options"]) == {"firefoxUserPrefs": browsers.FIREFOX_PREFS}
    with pytest.raises(browsers.LaneError, match="launch-options is not JSON"):
        browsers.Remote("playwright", "ws://h.invalid/?launch-options={").playwright_endpoint("firefox")
    assert [browsers.Remote("webdriver", u).on_loopback() for u in (
        "http://127.0.0.2:1", "http://localhost:1", "http://[::1]:1", "http://10.0.0.1:1", "http://box.invalid")] == [
        True, True, True, False, False]
    assert browsers.missing("safari").startswith("safari runs on a Mac")
    assert browsers.missing("safari", browsers.Remote("webdriver", "http://mac.invalid:4444")) is None


def test_xdist_keeps_each_lane_on_one_worker_and_outcomes_match_one_process(user_project, monkeypatch, tmp_path):
    """-n 2 against -n 0 with the native lane and a chromium lane that cannot start (no browser is needed to
    see where xdist sent each test); the report of the -n 2 run merges both workers. With browsers:
    e2e/test_user_project.py."""
    monkeypatch.setenv("GPUPORT_CHROMIUM", str(tmp_path / "none"))
    args = ["-p", "gpuport.testing.plugin", "--gpuport-lanes=native,chromium", "-v"]
    serial = user_project.runpytest_subprocess(*args, "-n", "0")
    spread = user_project.runpytest_subprocess(*args, "-n", "2", f"--gpuport-report={tmp_path / 'report'}")
    outcome = re.compile(r"(test_user\.py::\S+) (PASSED|FAILED|ERROR)")
    serial_outcomes = dict(outcome.findall(serial.stdout.str()))
    spread_lines = re.findall(r"\[(gw\d)\] \[\s*\d+%\] (PASSED|FAILED|ERROR) (test_user\.py::\S+)", spread.stdout.str())
    assert len(serial_outcomes) == 9 and {t: o for _, o, t in spread_lines} == serial_outcomes, spread.stdout.str()
    # a browser lane on one worker (one page, one browser); the native lane, browserless, spreads
    assert len({w for w, _, t in spread_lines if t.endswith("chromium]")}) == 1, spread_lines
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["lanes"] == ["native", "chromium"]
    assert report["counts"] == {"native": {"passed": 3, "failed": 1}, "chromium": {"error": 4}}
    pages = {(page["lane"], page["worker"]) for page in report["lane_pages"]}
    assert {lane for lane, _ in pages} == {"native", "chromium"} and all(w.startswith("gw") for _, w in pages), pages
    assert [p["error"] for p in report["lane_pages"] if p["lane"] == "chromium"][0].startswith("lane chromium")
    assert report["browsers_launched"] == {}
    spread.stdout.fnmatch_lines(["native*1 failed, 3 passed*", "chromium*4 error*(gw?: lane chromium: *"])


RERUN_CONFTEST = """
from gpuport.testing.plugin import rerun_on_crash

def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in rerun_on_crash(config):
            item.add_marker(mark)
"""

RERUN_TESTS = """
from gpuport.testing.pages import PageCrashed, PageError

tries = {"lost": 0, "raw": 0}

def test_lost_its_page_once():
    tries["lost"] += 1
    if tries["lost"] == 1:
        raise PageCrashed("Page.evaluate: Target crashed")

def test_saw_playwrights_own_words_once():   # a test that drives the page itself
    tries["raw"] += 1
    if tries["raw"] == 1:
        raise RuntimeError("Page.evaluate: Target crashed")

def test_the_page_raised():
    raise PageError("ValueError: shape (3,) is not (4,)")
"""


def test_a_test_that_lost_its_page_runs_once_more_and_nothing_else_does(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PY + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeconftest(RERUN_CONFTEST)
    pytester.makepyfile(test_rerun=RERUN_TESTS)
    result = pytester.runpytest_subprocess("-p", "gpuport.testing.plugin", "--gpuport-lanes=native")
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "rerun": 2}
    result.stdout.fnmatch_lines(["*FAILED test_rerun.py::test_the_page_raised*"])
