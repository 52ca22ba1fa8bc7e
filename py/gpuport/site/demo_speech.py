"""The demo page's microphone box, in Python (the page only captures audio and draws what `poll` returns): loads
Whisper once, transcribes the microphone's audio live as it arrives (Whisper.stream), and stops.

    speech = SpeechDemo(rt)                   # in the page: the runtime it opened
    speech.listen(48000)                      # the capture's sample rate; loading starts now
    speech.feed(samples)                      # float32 chunks as the page captures them
    speech.poll(0)                            # {"state", "events", "text", "partial", "figures", ...}
                                              # figures: heard_s, peak (the loudest sample), updates, load_s
    speech.stop()                             # the last window is transcribed, then state "done"
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import numpy as np

from .. import models

DEFAULT_MODEL = "whisper-tiny.en"


class SpeechDemo:
    """One model, one live transcription at a time."""

    def __init__(self, rt: Any, name: str = DEFAULT_MODEL, source: str | None = None, every: float = 1.0) -> None:
        self.rt, self.name, self.source, self.every = rt, name, source, every
        self.asr: Any = None
        self.events: list[dict] = []      # the load's progress stream (its events name their component)
        self.final: list[str] = []        # finished windows' text
        self.partial = ""                 # the window being filled
        self.state = "idle"               # idle | loading | listening | finishing | done | error
        self.error: str | None = None
        self.figures: dict[str, Any] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Future | None = None

    def listen(self, sample_rate: int) -> None:
        """Start a transcription of audio at `sample_rate` Hz fed by `feed` (loading the model first if need be)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("already listening: stop first")
        self.final, self.partial, self.error, self.figures = [], "", None, {"sample_rate": int(sample_rate)}
        self._queue = asyncio.Queue()
        self.state = "loading" if self.asr is None else "listening"
        self._task = asyncio.ensure_future(self._run(int(sample_rate)))

    def feed(self, samples: Any) -> None:
        """A chunk of captured audio (float32 mono)."""
        if self._queue is None or self.state in ("finishing", "done", "error"):
            raise RuntimeError("not listening: call listen() first")
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1).copy()
        self.figures["heard_s"] = self.figures.get("heard_s", 0.0) + len(chunk) / self.figures["sample_rate"]
        # the loudest sample so far (1.0: full scale): a microphone that delivers silence says so on the page
        peak = float(np.abs(chunk).max()) if chunk.size else 0.0
        self.figures["peak"] = max(self.figures.get("peak", 0.0), peak)
        self._queue.put_nowait(chunk)

    def stop(self) -> None:
        """End the audio: the last window is transcribed and the state becomes "done"."""
        if self._queue is not None and self.state in ("loading", "listening"):
            self.state = "finishing"
            self._queue.put_nowait(None)

    def poll(self, seen_events: int = 0) -> dict[str, Any]:
        """The state, the load events after the first `seen_events`, the text so far and the figures."""
        return {"state": self.state, "error": self.error, "events": self.events[seen_events:],
                "text": " ".join(t for t in self.final if t), "partial": self.partial, "figures": dict(self.figures),
                "backend": self.rt.backend, "tier": self.rt.tier}

    async def wait(self) -> dict[str, Any]:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        return self.poll()

    async def _chunks(self) -> AsyncIterator[np.ndarray]:
        # what arrived while a window was being transcribed comes as one piece: the live text then keeps up with the
        # microphone on a slow machine (one update per transcription), where one update per second of audio fell
        # further behind with every second heard
        while (chunk := await self._queue.get()) is not None:
            pieces = [chunk]
            while not self._queue.empty() and (chunk := self._queue.get_nowait()) is not None:
                pieces.append(chunk)
            yield np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            if chunk is None:
                return

    async def _run(self, rate: int) -> None:
        try:
            if self.asr is None:
                t0 = time.perf_counter()
                self.asr = await models.load(self.name, self.rt, source=self.source, on_progress=self.events.append)
                self.figures["load_s"] = time.perf_counter() - t0
            if self.state == "loading":
                self.state = "listening"
            async for piece in self.asr.stream(self._chunks(), rate, every=self.every):
                if piece.final:
                    self.final.append(piece.text)
                    self.partial = ""
                else:
                    self.partial = piece.text
                self.figures["updates"] = self.figures.get("updates", 0) + 1
                self.figures["audio_s"] = piece.end
            self.state = "done"
        except Exception as exc:   # shown in the page, as the chat shows its errors
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"


__all__ = ["DEFAULT_MODEL", "SpeechDemo"]
