"""`on_progress="bar"`: a model load's progress stream drawn as one terminal line (stderr by default).

    model = await gpuport.models.load("minilm-l6-v2", rt, on_progress="bar")

    minilm-l6-v2  upload    [##################------------]  61.3%  55.3/90.3 MB  41.2 MB/s  1.3 s

On a terminal the line is redrawn in place (at most every `min_interval_s`, and at every stage change); on
anything else (a log file, CI) it prints one line per stage as the stage ends, so logs are not flooded. Notes in the
stream (retries, cache fallbacks, "87 of 87 chunks from the cache") go on their own line above the bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

BAR = "bar"


class ProgressBar:
    """A callable for `on_progress`: draws the events it gets (see gpuport.loading.loader for their keys)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, min_interval_s: float = 0.1,
                 tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width, self.min_interval_s = width, min_interval_s
        isatty = getattr(self.stream, "isatty", None)
        self.tty = tty if tty is not None else bool(isatty and isatty())
        self.percent = 0.0
        self.stage: str | None = None
        self._t0 = time.perf_counter()
        self._drawn = 0.0
        self._line_open = False
        self._last: str | None = None
        self.finished = False

    def render(self, event: dict) -> str:
        """The bar line for `event` (what is drawn)."""
        percent = event.get("percent")
        done, total = int(event.get("bytes_done") or 0), int(event.get("bytes_total") or 0)
        if percent is None and total:
            percent = 100.0 * done / total
        if percent is not None:
            self.percent = max(self.percent, min(float(percent), 100.0))   # never goes back
        filled = int(round(self.width * self.percent / 100.0))
        elapsed = time.perf_counter() - self._t0
        parts = [f"{event.get('model') or 'load'}  {event.get('stage', ''):<8}",
                 f"[{'#' * filled}{'-' * (self.width - filled)}] {self.percent:5.1f}%"]
        if total:
            parts.append(f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
            if elapsed > 0 and done:
                parts.append(f"{done / 1e6 / elapsed:.1f} MB/s")
        parts.append(f"{elapsed:.1f} s")
        return "  ".join(parts)

    def __call__(self, event: dict) -> None:
        if self.finished:
            return
        stage = event.get("stage")
        note = event.get("note")
        if note:
            self._write_line(f"{event.get('model') or 'load'}: {note}")
        if stage == "retry" or (stage == "cache" and not event.get("bytes_total")):
            return   # notes, not stages: the bar stays on the stage it was drawing
        line = self.render(event)
        final = stage == "ready"
        changed = stage != self.stage
        self.stage = stage
        now = time.perf_counter()
        if self.tty:
            if final or changed or now - self._drawn >= self.min_interval_s:
                self.stream.write("\r" + line + "\x1b[K")
                self._line_open = True
                self._drawn = now
                if final:
                    self.stream.write("\n")
                    self._line_open = False
                self.stream.flush()
        else:   # one line per stage, as that stage ended
            if changed and self._last is not None:
                self._write_line(self._last)
            if final:
                self._write_line(line)
        self._last = line
        self.finished = final

    def _write_line(self, text: str) -> None:
        if self._line_open:   # a note while the bar is drawn: it goes above, the bar is redrawn below
            self.stream.write("\r\x1b[K")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()


def progress_callback(on_progress: Callable[[dict], Any] | str | None) -> Callable[[dict], Any] | None:
    """`on_progress` as a callable: "bar" -> a new ProgressBar on stderr; a callable or None as given."""
    if isinstance(on_progress, str):
        if on_progress != BAR:
            raise ValueError(f"on_progress={on_progress!r}: pass a callable taking an event dict, or \"bar\" "
                             "for a terminal progress bar")
        return ProgressBar()
    if on_progress is not None and not callable(on_progress):
        raise TypeError(f"on_progress must be a callable or \"bar\", got {type(on_progress).__name__}")
    return on_progress


__all__ = ["ProgressBar", "progress_callback"]
