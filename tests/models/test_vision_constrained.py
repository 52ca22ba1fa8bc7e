"""The vision models on the constrained tier (wgpu-py on lavapipe, 4 MiB bindings): a 4000 x 3000 photograph (144 MB
as float32, 36 MB as RGB bytes) classified without ever being decoded whole, and many images embedded in batches
the tier's limits size. On the 64-wide clip-tiny checkpoint: the tier, not the model, is what is under test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import gpuport as gp
import numpy as np
from clip_files import checkpoint, photo_path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import asyncio, io, json, re, sys
    import numpy as np
    from PIL import Image
    import gpuport as gp
    sys.path.insert(0, "tests")
    from clip_files import checkpoint, photo_path

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    async def main():
        rt = await gp.open(backend="webgpu", tier="constrained")
        clip = await gp.models.load("clip-vit-base-patch32", rt, source=str(checkpoint("clip-tiny")))
        labels = ["cat", "dog", "cup of coffee"]
        await clip.classify(photo_path("chelsea.png"), labels)   # warm: pipelines, label embeddings
        photo = Image.open(photo_path("coffee.png")).convert("RGB").resize((4000, 3000), resample=3)
        out = {}
        for fmt in ("JPEG", "PNG"):
            buf = io.BytesIO()
            photo.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
            data = buf.getvalue()
            open("/proc/self/clear_refs", "w").write("5")
            base = status("VmRSS")
            top = await clip.classify(data, labels)
            s = clip.stats()
            out[fmt] = {"peak": status("VmHWM") - base, "largest": s["largest_image_buffer"], "top": top,
                        "vision_ran": s["vision_ran"], "binding": rt.binding_limit, "tier": rt.tier}
        del photo
        print(json.dumps(out))
        rt.close()

    asyncio.run(main())
""")


def test_a_4000x3000_photo_is_classified_within_the_tiers_budget():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    import json
    result = json.loads(run.stdout.strip().splitlines()[-1])
    float_size = 4000 * 3000 * 3 * 4
    for fmt, r in result.items():
        assert r["tier"] == "constrained" and r["vision_ran"] == ["webgpu"], r
        # the largest pixel buffer held: within the tier's 4 MiB binding budget, far below the image's float size
        assert r["largest"] <= r["binding"] == 4 << 20, (fmt, r)
        # the whole process's peak resident memory while it was classified: below a sixth of its float size
        assert r["peak"] < float_size / 6, (fmt, r["peak"] / 2**20)
        assert abs(sum(p for _, p in r["top"]) - 1) < 1e-6 and len(r["top"]) == 3


def test_many_images_go_in_batches_the_tier_sizes():
    async def run():
        rt = await gp.open(backend="webgpu", tier="constrained")
        try:
            clip = await gp.models.load("clip-vit-base-patch32", rt, source=str(checkpoint("clip-tiny")))
            photos = [photo_path(p).read_bytes() for p in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")]
            many = await clip.embed_images(photos * 2)
            stats = clip.stats()
            one = await clip.embed_images(photos[:1])
            return many, one, stats, clip.vision.max_batch()
        finally:
            rt.close()
    many, one, stats, batch = asyncio.run(run())
    # 50 tokens x 3072 patch values x 4 bytes a image: 6 images in a 4 MiB binding
    assert batch == 6 and stats["image_batch"] == 6 and stats["images"] == 8
    assert np.abs(many[:4] - many[4:]).max() < 1e-6 and np.abs(many[0] - one[0]).max() < 1e-5
