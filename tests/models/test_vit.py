"""ViT image classification on gpuport ops against Hugging Face's ViTForImageClassification (fixtures made by
tests/fixtures/make_clip_fixture.py on the generated checkpoints of tests/clip_files.py): the full-size
vit-base-patch16-224's logits once on the cpu backend and once on the device; the rest on the 2-layer one.

Tolerance: the logits are O(3); float32 sums of up to 3072 terms in another order, 12 pre-norm layers (see
test_clip.py): measured <= 5.5e-6 absolute, cosine >= 0.99999994. Asserted: max abs <= 1e-4, cosine >= 0.99999.
"""

from __future__ import annotations

import asyncio
import base64

import gpuport as gp
import numpy as np
import pytest
from clip_files import checkpoint, model_reference, photo_path


def _ref(name: str, key: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(model_reference(name)[key]), np.float32).reshape(4, -1)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    err = float(np.abs(got - want).max())
    assert cos.min() >= 0.99999 and err <= 1e-4, f"{what}: cosine {cos.min()}, max abs {err}"


async def _run(name: str, backend: str, photos: int) -> tuple[np.ndarray, np.ndarray, list, dict]:
    rt = await gp.open(backend=backend)
    try:
        vit = await gp.models.load("vit-base-patch16-224", rt, source=str(checkpoint(name)))
        images = [photo_path(p).read_bytes() for p in model_reference(name)["photos"][:photos]]
        emb, logits = await vit.forward(images)
        stats = vit.stats()
        top = await vit.classify(images[0], k=3) if backend == "cpu" else []
        return logits, emb, top, stats
    finally:
        rt.close()


# One photo on the device: the tower is models/vision.py's, whose batch of photos on the device test_clip.py runs (2 on
# ViT-B/32); lavapipe takes ~5 s a ViT-B/16 photo.
@pytest.mark.parametrize("backend,photos", [("cpu", 4), ("webgpu", 1)])
def test_vit_b16_logits_equal_transformers(backend, photos):
    logits, emb, top, stats = asyncio.run(_run("vit-base-patch16-224", backend, photos))
    _close(logits, _ref("vit-base-patch16-224", "logits")[:photos], f"logits on {backend}")
    _close(emb, _ref("vit-base-patch16-224", "cls")[:photos], f"CLS states on {backend}")
    assert stats["vision_ran"] == [backend] and stats["image_batch"] >= photos


def test_classify_is_the_softmax_of_the_logits():
    logits, _, top, stats = asyncio.run(_run("vit-b16-small", "cpu", 4))
    z = _ref("vit-b16-small", "logits")[0].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    want = np.argsort(-p, kind="stable")[:3]
    assert [label for label, _ in top] == [f"class {i}" for i in want]
    assert np.abs(np.array([q for _, q in top]) - p[want]).max() < 1e-5
    _close(logits, _ref("vit-b16-small", "logits"), "the small checkpoint's logits")
