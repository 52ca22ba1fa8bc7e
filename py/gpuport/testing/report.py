"""`--gpuport-report DIR`: the run's compatibility matrix of the user's own tests, each test by each lane,
as report.json (for tools) and report.html (one self-contained page: the matrix, each lane's browser,
version, adapter, tier and features, and every failure's page traceback, linked from its cell)."""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path
from typing import Any

from .results import OUTCOMES, Results


def build(results: Results, lanes: list[str]) -> dict[str, Any]:
    """The report as plain data: lanes in the order asked for, tests in the order they were first seen."""
    rows: dict[str, dict[str, Any]] = {}
    for (row, lane), cell in results.cells.items():
        entry = {"outcome": cell.outcome, "duration_s": round(cell.duration_s, 3)}
        if cell.outcome != "passed":
            entry.update(message=cell.message, detail=cell.longrepr[-20000:])
        if cell.reruns:
            entry["reruns"] = cell.reruns
        rows.setdefault(row, {})[lane] = entry
    seen = [lane for lane in lanes if any(lane in cells for cells in rows.values())]
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "lanes": seen,
        "lane_pages": sorted(results.lanes, key=lambda d: (seen.index(d["lane"]) if d["lane"] in seen else len(seen),
                                                            d.get("worker") or "")),
        "browsers_launched": {worker: keys for worker, keys in results.launched.items() if keys},
        "counts": {lane: results.counts().get(lane, {}) for lane in seen},
        "tests": [{"test": row, "lanes": cells} for row, cells in rows.items()],
    }


def write(directory: Path, results: Results, lanes: list[str]) -> dict[str, Any]:
    """report.json and report.html in `directory` (created); returns the report's data."""
    data = build(results, lanes)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    (directory / "report.html").write_text(render(data), encoding="utf-8")
    return data


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.passed { background: #dff3df; } td.failed { background: #f8d4d4; }
td.error { background: #f6e0b5; } td.skipped { background: #e8e8e8; } td.absent { background: #fff; color: #999; }
td .t { color: #666; font-size: 12px; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
code { font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _lane_row(page: dict) -> str:
    adapter = page.get("adapter") or {}
    adapter_text = ", ".join(str(v) for k, v in adapter.items() if v not in (None, "") and k != "is_fallback")
    if adapter.get("is_fallback"):
        adapter_text += " (fallback adapter)"
    browser = f"{page['browser']} {page.get('browser_version') or '?'}"
    where = f"<br><span class=t>from {_e(page['remote'])}</span>" if page.get("remote") else ""
    lost = "".join(f"<br><span class=t>{_e(why)}</span>" for why in
                   ([f"started again after: {page['restarted']}"] if page.get("restarted") else [])
                   + [f"page lost while running: {crash}" for crash in page.get("crashes") or []])
    state = (f"<td class=error>{_e(page['error'])}</td>" if page.get("error")
             else f"<td>{_e(page.get('open_s'))} s{lost}</td>")
    features = ", ".join(page.get("features") or []) or "-"
    return (f"<tr data-lane=\"{_e(page['lane'])}\"><td>{_e(page['lane'])}</td><td>{_e(page.get('worker') or '-')}</td>"
            f"<td>{_e(browser)}{where}</td><td>{_e(page.get('mode') or '-')}</td>"
            f"<td>{_e(page.get('backend'))} / {_e(page.get('tier'))}</td><td>{_e(adapter_text or '-')}</td>"
            f"<td>{_e(features)}</td>{state}</tr>")


def render(data: dict[str, Any]) -> str:
    """The report as one HTML page (no scripts, no external files)."""
    lanes = data["lanes"]
    head = "".join(f"<th>{_e(lane)}</th>" for lane in lanes)
    rows, details = [], []
    for test in data["tests"]:
        cells = []
        for lane in lanes:
            cell = test["lanes"].get(lane)
            if cell is None:
                cells.append(f"<td class=absent data-lane=\"{_e(lane)}\">not run</td>")
                continue
            text = f"{cell['outcome']} <span class=t>{cell['duration_s']:.2f} s</span>"
            if cell["outcome"] in ("failed", "error"):
                anchor = f"tb-{len(details) + 1}"
                text = f"<a href=\"#{anchor}\">{cell['outcome']}</a> <span class=t>{cell['duration_s']:.2f} s</span>"
                details.append(f"<section id=\"{anchor}\"><h3><code>{_e(test['test'])}</code> in {_e(lane)}: "
                               f"{cell['outcome']}</h3><p>{_e(cell['message'])}</p><pre>{_e(cell['detail'])}</pre>"
                               "</section>")
            elif cell["outcome"] == "skipped":
                text += f"<br><span class=t>{_e(cell['message'])}</span>"
            if cell.get("reruns"):
                text += f"<br><span class=t>run again {cell['reruns']}x: the browser lost its page</span>"
            cells.append(f"<td class={cell['outcome']} data-lane=\"{_e(lane)}\">{text}</td>")
        rows.append(f"<tr data-test=\"{_e(test['test'])}\"><th><code>{_e(test['test'])}</code></th>{''.join(cells)}</tr>")
    totals = "".join(
        "<td>" + _e(", ".join(f"{data['counts'][lane][o]} {o}" for o in OUTCOMES if data["counts"][lane].get(o)))
        + "</td>" for lane in lanes)
    launched = "; ".join(f"{worker}: {', '.join(keys) or 'none'}" for worker, keys in data["browsers_launched"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpuport lanes: compatibility report</title>
<style>{_STYLE}</style></head><body>
<h1>Compatibility report</h1>
<p>{len(data['tests'])} tests in {len(lanes)} lanes, {_e(data['created'])}.</p>
<table id="matrix"><thead><tr><th>test</th>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody><tfoot><tr><th>total</th>{totals}</tr></tfoot></table>
<h2>Lanes</h2>
<table id="lanes"><thead><tr><th>lane</th><th>worker</th><th>browser</th><th>Pyodide in</th><th>backend / tier</th>
<th>adapter</th><th>features</th><th>page ready</th></tr></thead><tbody>
{chr(10).join(_lane_row(page) for page in data['lane_pages'])}
</tbody></table>
<p>Browsers launched or connected, per process: {_e(launched or 'none')}.</p>
<h2>Failures</h2>
{chr(10).join(details) or '<p>None.</p>'}
</body></html>
"""
