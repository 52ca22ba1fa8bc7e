"""gpuport.loading.progress_bar: on_progress="bar" draws a model load on the terminal; the events it draws have one
total for every byte stage (natively, from the installed MiniLM package)."""

from __future__ import annotations

import asyncio
import io
import re

import gpuport as gp
import pytest
from gpuport import models
from gpuport.loading.progress_bar import ProgressBar, progress_callback


def events(payload: int) -> list[dict]:
    half = payload // 2
    return [
        {"stage": "manifest", "bytes_done": 0, "bytes_total": 0, "percent": 0.0, "note": "6 chunks of 1 MiB"},
        {"stage": "download", "bytes_done": half, "bytes_total": payload, "percent": 25.0},
        {"stage": "retry", "bytes_done": 0, "bytes_total": 0, "percent": 25.0, "note": "chunk 3: HTTP 500; retry 1/3"},
        {"stage": "download", "bytes_done": payload, "bytes_total": payload, "percent": 50.0},
        {"stage": "upload", "bytes_done": payload, "bytes_total": payload, "percent": 100.0},
        {"stage": "ready", "bytes_done": payload, "bytes_total": payload, "percent": 100.0},
    ]


def test_a_log_gets_one_line_per_stage_and_the_notes():
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    for e in events(4_000_000):
        bar({**e, "model": "tiny"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "tiny: 6 chunks of 1 MiB"
    assert [ln.split()[1] for ln in lines if not ln.startswith("tiny:")] == ["manifest", "download", "upload",
                                                                          "ready"]
    assert "tiny: chunk 3: HTTP 500; retry 1/3" in lines
    download = next(ln for ln in lines if ln.split()[1] == "download")
    assert "[#####-----]  50.0%" in download and "4.0/4.0 MB" in download   # as the stage ended
    assert lines[-1].startswith("tiny  ready") and "[##########] 100.0%" in lines[-1]


def test_a_terminal_line_is_redrawn_in_place_and_ends_with_a_newline():
    out = io.StringIO()
    bar = ProgressBar(out, width=10, min_interval_s=0.0, tty=True)
    for e in events(4_000_000):
        bar(e)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\r") >= 5
    redraws = [seg for seg in text.split("\r") if seg.startswith("load ")]
    percents = [float(re.search(r"(\d+\.\d)%", seg).group(1)) for seg in redraws]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert "load: chunk 3: HTTP 500; retry 1/3\n" in text   # a note gets its own line above the bar
    bar({"stage": "upload", "percent": 10.0})                # after "ready" nothing more is drawn
    assert out.getvalue() == text


def test_progress_callback_accepts_bar_callables_and_none():
    assert isinstance(progress_callback("bar"), ProgressBar)
    assert progress_callback(None) is None
    assert progress_callback(print) is print
    with pytest.raises(ValueError, match="'tqdm'.*\"bar\""):
        progress_callback("tqdm")
    with pytest.raises(TypeError, match="callable or \"bar\""):
        progress_callback(3)


def test_native_minilm_load_totals_agree_and_the_bar_draws_it(capsys):
    rt = gp.open_sync(backend="cpu")
    seen: list[dict] = []
    asyncio.run(models.load("minilm-l6-v2", rt, on_progress=seen.append))
    totals = {e["stage"]: e["bytes_total"] for e in seen if e["bytes_total"]}
    assert set(totals) == {"download", "upload", "compile", "ready"}
    assert set(totals.values()) == {90_261_504}, totals   # the weights' bytes; the file has 90,868,376
    pct = [e["percent"] for e in seen]
    assert pct == sorted(pct) and pct[-1] == 100.0

    asyncio.run(models.load("minilm-l6-v2", rt, on_progress="bar"))
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("minilm-l6-v2  ready") and "100.0%" in err[-1] and "90.3/90.3 MB" in err[-1]
    assert any(ln.startswith("minilm-l6-v2  download") and "90.3/90.3 MB" in ln for ln in err)
    rt.close()
