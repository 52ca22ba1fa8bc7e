"""The plugin's results (test rows, outcomes over setup/call/teardown, headlines) and --gpuport-report's JSON
and HTML, from pytest-like reports; a whole run writing the report: tests/testing/test_testing_plugin.py, and one with
real browsers, opened in Chromium: e2e/test_user_project.py."""

from __future__ import annotations

import html.parser
import json
from types import SimpleNamespace

from gpuport.testing import report
from gpuport.testing.results import Cell, Results, headline, row_of


def _report(when: str, outcome: str, lane: str, row: str, longrepr=None, duration: float = 0.5):
    return SimpleNamespace(when=when, outcome=outcome, passed=outcome == "passed", failed=outcome == "failed",
                           skipped=outcome == "skipped", duration=duration, longrepr=longrepr,
                           user_properties=[("gpuport_lane", lane), ("gpuport_test", row)])


def test_a_row_is_the_node_id_without_its_lane():
    assert row_of("t.py::f[chromium]", "chromium") == "t.py::f"
    assert row_of("t.py::f[0.5-a-chromium-cpu]", "chromium-cpu") == "t.py::f[0.5-a]"
    assert row_of("t.py::C::f[native]", "native") == "t.py::C::f"


def test_a_cell_keeps_the_first_thing_that_went_wrong_and_all_the_time():
    cell = Cell()
    for when, outcome in (("setup", "passed"), ("call", "failed"), ("teardown", "failed")):
        cell.add(_report(when, outcome, "firefox", "t", longrepr="[firefox] failed in the page:\nTraceback "
                         "(most recent call last):\n  File \"t.py\", line 3\nAssertionError: assert 1 == 2"))
    assert (cell.outcome, cell.duration_s) == ("failed", 1.5)
    assert cell.message == "[firefox] failed in the page: AssertionError: assert 1 == 2"
    setup = Cell()
    setup.add(_report("setup", "failed", "webkit", "t", longrepr="Failed: lane webkit: no browser"))
    assert (setup.outcome, setup.message) == ("error", "lane webkit: no browser")
    skipped = Cell()
    skipped.add(_report("call", "skipped", "webkit", "t", longrepr=("t.py", 3, "Skipped: not in a page")))
    assert (skipped.outcome, skipped.message) == ("skipped", "Skipped: not in a page")


def test_a_try_that_lost_its_page_is_counted_not_kept():
    """pytest-rerunfailures reports the try it runs again as "rerun" (gpuport.testing.plugin.rerun_on_crash): the
    cell is the last try's, and says how many went before it."""
    cell = Cell()
    for when, outcome in (("setup", "passed"), ("call", "rerun"), ("setup", "passed"), ("call", "passed"),
                          ("teardown", "passed")):
        cell.add(_report(when, outcome, "chromium", "t", longrepr="PageCrashed: Page.evaluate: Target crashed"))
    assert (cell.outcome, cell.reruns, cell.message, cell.duration_s) == ("passed", 1, "", 2.5)
    results = Results()
    results.record(_report("call", "rerun", "chromium", "t"))
    results.record(_report("call", "passed", "chromium", "t"))
    assert report.build(results, ["chromium"])["tests"][0]["lanes"]["chromium"]["reruns"] == 1


def test_headline_reads_pytest_and_page_failures():
    assert headline("def f():\n>   assert x\nE   assert 0\nE    +  where 0 = g()") == "+  where 0 = g()"
    assert headline("Failed: [chromium] the page failed: gpuport.testing.pages.PageError: boom") == \
        "[chromium] the page failed: boom"
    assert headline("") == ""


class _Cells(html.parser.HTMLParser):
    """The matrix's cells (lane, class, link) and the ids of the page's sections."""

    def __init__(self) -> None:
        super().__init__()
        self.cells, self.ids, self._cell = [], set(), None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "td" and "data-lane" in a:
            self._cell = {"lane": a["data-lane"], "class": a.get("class"), "href": None}
            self.cells.append(self._cell)
        if tag == "a" and self._cell is not None:
            self._cell["href"] = a["href"]

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None


def test_report_json_and_html_show_each_test_by_each_lane_and_link_failures(tmp_path):
    results = Results()
    for lane in ("native", "chromium"):
        results.record(_report("call", "passed", lane, "t.py::ok[<b>]"))
    results.record(_report("call", "failed", "chromium", "t.py::bad", longrepr="E   assert '<script>' == 1"))
    results.merge({"worker": "gw0", "launched": ["chromium-webgpu"], "lanes": [
        {"lane": "chromium", "worker": "gw0", "browser": "chromium-webgpu", "browser_version": "156",
         "remote": "ws://gpu.invalid:3000/", "mode": "worker", "backend": "webgpu", "tier": "core",
         "adapter": {"vendor": "google", "device": "swiftshader", "is_fallback": True},
         "features": ["subgroups"], "open_s": 3.2, "error": None}]})
    data = report.write(tmp_path, results, ["native", "chromium", "firefox"])
    assert json.loads((tmp_path / "report.json").read_text()) == data
    assert data["lanes"] == ["native", "chromium"]   # firefox ran nothing
    assert data["counts"] == {"native": {"passed": 1}, "chromium": {"passed": 1, "failed": 1}}
    assert data["tests"][1] == {"test": "t.py::bad", "lanes": {"chromium": {
        "outcome": "failed", "duration_s": 0.5, "message": "assert '<script>' == 1",
        "detail": "E   assert '<script>' == 1"}}}
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "t.py::ok[&lt;b&gt;]" in page
    assert "chromium-webgpu 156" in page and "from ws://gpu.invalid:3000/" in page and "(fallback adapter)" in page
    parsed = _Cells()
    parsed.feed(page)
    assert [(c["lane"], c["class"]) for c in parsed.cells] == [
        ("native", "passed"), ("chromium", "passed"), ("native", "absent"), ("chromium", "failed")]
    link = parsed.cells[3]["href"]
    assert link.startswith("#") and link[1:] in parsed.ids
