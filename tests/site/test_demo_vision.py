"""gpuport.site.demo_vision natively on the cpu backend (clip-tiny): the demo page's image box loads CLIP with its
text tower first, classifies the images it was handed (an unreadable one named, not fatal), and says where each
tower ran and how long each stage took."""

from __future__ import annotations

import asyncio

import gpuport as gp
import numpy as np
from clip_files import checkpoint, photo_path
from gpuport.site.demo_vision import VisionDemo


def test_the_image_box_classifies_what_it_was_handed():
    async def run():
        rt = await gp.open(backend="cpu")
        try:
            demo = VisionDemo(rt, source=str(checkpoint("clip-tiny")))
            demo.load()
            demo.add_image(np.frombuffer(photo_path("coffee.png").read_bytes(), np.uint8), "coffee.png")
            demo.add_image(np.frombuffer(b"not an image", np.uint8), "notes.txt")
            result = await demo.classify(["a cup of coffee", " a cat ", ""], "a photo of {}")
            again = await demo.classify(["a cup of coffee", "a cat"])
            return result, again, demo.poll()
        finally:
            rt.close()
    result, again, poll = asyncio.run(run())
    coffee, notes = result["images"]
    assert [label for label, _ in coffee["top"]] in (["a cup of coffee", "a cat"], ["a cat", "a cup of coffee"])
    assert abs(sum(p for _, p in coffee["top"]) - 1) < 1e-3 and "not an image" in notes["error"]
    assert result["stats"]["vision_ran"] == ["cpu"] and result["stats"]["labels_computed"] == 2
    assert again["stats"]["labels_computed"] == 0
    assert poll["state"] == "ready" and set(poll["ready"]) == {"text", "vision"} and poll["figures"]["load_s"] >= 0
    assert any(e.get("component") == "text" for e in poll["events"])
