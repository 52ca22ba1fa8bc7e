"""The demo page's image box, in Python (the page only picks or receives the images and draws what `poll` and
`classify` return): loads a CLIP checkpoint once (the text tower first: labels can be embedded before the vision
tower is in), then classifies each image among the labels typed, with each stage's time and where each tower ran.

    demo = VisionDemo(rt, source="/models/clip-vit-base-patch32/")
    demo.load()                                # starts loading; poll() follows it
    demo.add_image(np.frombuffer(png, np.uint8), "cat.png")
    await demo.classify(["a cat", "a dog"], "a photo of {}")   # {"images": [{"name", "top": [[label, p], ...]}], ...}
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import numpy as np

from .. import models

DEFAULT_MODEL = "clip-vit-base-patch32"


class VisionDemo:
    """One CLIP, the images the page handed over, one classification at a time."""

    def __init__(self, rt: Any, source: str | None = None, name: str = DEFAULT_MODEL) -> None:
        self.rt, self.name, self.source = rt, name, source
        self.clip: Any = None
        self.events: list[dict] = []           # the load's progress stream (each event names its tower)
        self.images: list[tuple[str, bytes]] = []
        self.state = "idle"                     # idle | loading | ready | error
        self.error: str | None = None
        self.figures: dict[str, Any] = {}
        self._task: asyncio.Future | None = None

    def load(self) -> None:
        """Start loading the model, its text tower first (a no-op once started)."""
        if self._task is None:
            self.state = "loading"
            self._task = asyncio.ensure_future(self._load())

    async def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.clip = await models.load(self.name, self.rt, source=self.source, on_progress=self.events.append,
                                          priority="text")
            await self.clip.components.done()
            self.figures["load_s"] = round(time.perf_counter() - t0, 2)
            self.state = "ready"
        except Exception as exc:   # shown in the page, as the chat shows its errors
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"

    def add_image(self, data: np.ndarray, name: str) -> int:
        """An image's file bytes (uint8, as the page read them); its index."""
        self.images.append((name, np.asarray(data, np.uint8).tobytes()))
        return len(self.images) - 1

    def clear_images(self) -> None:
        self.images.clear()

    async def classify(self, labels: Sequence[str], template: str = "a photo of {}") -> dict[str, Any]:
        """Every image handed over, classified among `labels`: its probabilities (the likeliest first), with the
        stages' times (ms), where each tower ran, the image batch and the largest decoded image buffer."""
        self.load()
        while self.clip is None and self.state == "loading":
            await asyncio.sleep(0.05)
        if self.clip is None:
            raise RuntimeError(self.error or "the model did not load")
        labels = [label.strip() for label in labels if label.strip()]
        t0 = time.perf_counter()
        await self.clip.label_embeddings([template.format(label) for label in labels])   # once, before any image
        computed = self.clip.stats()["labels_computed"]
        results = []
        for name, data in self.images:
            try:
                top = await self.clip.classify(data, labels, template=template)
                results.append({"name": name, "top": [[label, round(p, 4)] for label, p in top]})
            except Exception as exc:   # one unreadable file does not stop the others
                results.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
        stats = {**self.clip.stats(), "labels_computed": computed}
        return {"images": results, "total_ms": round((time.perf_counter() - t0) * 1e3, 1),
                "stats": {k: stats.get(k) for k in ("preprocess_ms", "vision_ms", "text_ms", "vision_ran", "text_ran",
                                                   "labels_computed", "image_batch", "largest_image_buffer")},
                "ready_ms": stats["load"].get("ready_ms", {}), "backend": self.rt.backend, "tier": self.rt.tier}

    def poll(self, seen_events: int = 0) -> dict[str, Any]:
        """The state, the load events after the first `seen_events`, the towers ready and the figures."""
        ready = dict(self.clip.components.ready) if self.clip is not None and self.clip.components else {}
        return {"state": self.state, "error": self.error, "events": self.events[seen_events:], "ready": ready,
                "figures": dict(self.figures), "backend": self.rt.backend, "tier": self.rt.tier}


__all__ = ["DEFAULT_MODEL", "VisionDemo"]
