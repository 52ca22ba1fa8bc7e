"""CLIP on gpuport ops against Hugging Face transformers (fixtures made by tests/fixtures/make_clip_fixture.py on the
generated checkpoints of tests/clip_files.py): the full-size ViT-B/32 once on the cpu backend (the C kernels, a layer
per call) and once on the device (wgpu-py on lavapipe); L/14's shape and the logic on small checkpoints of the real
widths, on the cpu backend.

Tolerance: the embeddings are compared as unit vectors (what embed_images and embed_texts return). Both sides sum in
float32 in different orders; each product's error is a few K u |a||b| at most (K <= 3072 terms, u = 2^-24) and
typically sqrt(K) u, and the pre-norm towers carry it through 12 layers without growth (each layer norm rescales):
measured <= 2.3e-7 per component and cosine >= 0.9999998 here. Asserted: max abs <= 1e-5 and cosine >= 0.99999.
"""

from __future__ import annotations

import asyncio
import base64

import gpuport as gp
import numpy as np
import pytest
from clip_files import checkpoint, model_reference, photo_path
from gpuport.errors import LoadError
from gpuport.models import clip as C

MAX_ABS = 1e-5
MIN_COSINE = 0.99999


def _ref(name: str, key: str, rows: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(model_reference(name)[key]), np.float32).reshape(rows, -1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def check_embeddings(got: np.ndarray, want: np.ndarray, what: str) -> tuple[float, float]:
    """(min cosine, max abs) of unit `got` against `want`, asserted within the module's bounds."""
    want = _unit(want)
    cos = float((got * want).sum(-1).min())
    err = float(np.abs(got - want).max())
    assert cos >= MIN_COSINE and err <= MAX_ABS, f"{what}: cosine {cos}, max abs {err}"
    return cos, err


async def equal_to_transformers(name: str, backend: str, photos: int | None = None,
                                texts: tuple[int, ...] | None = None) -> dict:
    """Load `name` on `backend`, embed the reference's first `photos` photos and its texts at `texts` (all by
    default), compare with transformers'."""
    ref = model_reference(name)
    rt = await gp.open(backend=backend)
    try:
        model = await gp.models.load(name if name.startswith("clip-vit") else "clip-vit-base-patch32", rt,
                                     source=str(checkpoint(name)))
        n_photos, rows = photos or len(ref["photos"]), list(texts or range(len(ref["texts"])))
        images = await model.embed_images([photo_path(p).read_bytes() for p in ref["photos"][:n_photos]])
        embedded = await model.embed_texts([ref["texts"][i] for i in rows])
        assert model.tokenizer.batch(ref["texts"]).tolist() == [row[:77] for row in ref["input_ids"]]
        check_embeddings(images, _ref(name, "image_embeds", len(ref["photos"]))[:n_photos], f"{name} images on {backend}")
        check_embeddings(embedded, _ref(name, "text_embeds", len(ref["texts"]))[rows], f"{name} texts on {backend}")
        logits = model.logits_per_image(images, embedded)
        want = _ref(name, "logits_per_image", len(ref["photos"]))[:n_photos][:, rows]
        assert np.abs(logits - want).max() <= 100 * 2 * MAX_ABS
        return model.stats()
    finally:
        rt.close()


# Every photo and text on the host; on lavapipe (a CPU computing the GPU's work, beside the browser lanes) two photos
# and three texts: a short one, the empty one and the one truncated at 77 tokens, padded into one batch.
@pytest.mark.parametrize(("backend", "photos", "texts"), [("cpu", None, None), ("webgpu", 2, (0, 4, 6))])
def test_vit_b32_equals_transformers(backend, photos, texts):
    stats = asyncio.run(equal_to_transformers("clip-vit-base-patch32", backend, photos, texts))
    assert stats["vision_ran"] == [backend] and stats["text_ran"] == [backend], stats
    # the photographs decoded whole by Pillow and resized by the kernels (make setup builds them), whatever the tower
    assert stats["decoded_by"] == ["whole"] and stats["resized_by"] == ["native-simd"], stats


def test_l14_shape_equals_transformers():
    """L/14's widths, 14-pixel patches (257 tokens) and 768-wide projections."""
    stats = asyncio.run(equal_to_transformers("clip-l14-tiny", "cpu"))
    assert stats["images"] == 4 and stats["text_tokens"] == 77


@pytest.fixture(scope="module")
def small():
    """The 2-layer B/32 on the cpu backend, with its runtime's own event loop."""
    loop = asyncio.new_event_loop()
    rt = loop.run_until_complete(gp.open(backend="cpu"))
    model = loop.run_until_complete(gp.models.load("clip-vit-base-patch32", rt, source=str(checkpoint("clip-b32-small"))))
    yield loop, model
    rt.close()
    loop.close()


def test_padding_never_reaches_the_pooled_token(small):
    loop, model = small
    alone = loop.run_until_complete(model.embed_texts(["a cat"]))
    padded = loop.run_until_complete(model.embed_texts(["a cat", "a much longer text about cats " * 6]))
    assert np.abs(alone[0] - padded[0]).max() < 1e-6


def test_pooling_follows_both_eos_rules(small):
    _, model = small
    ids = np.array([[49406, 320, 49407, 49407], [49406, 49407, 49406, 49407]])
    text = model.text
    assert list(text.pooled_rows(ids)) == [2, 5]   # legacy eos 2: the first largest id
    text.cfg = C.CLIPConfig(model.config.text, model.config.vision, model.config.projection, 49407)
    try:
        assert list(text.pooled_rows(ids)) == [2, 5]   # the first <|endoftext|>
        assert list(text.pooled_rows(np.array([[49406, 5, 49407, 9, 49407]]))) == [2]
    finally:
        text.cfg = model.config


def test_texts_that_begin_alike_make_their_first_tokens_once(small, monkeypatch):
    """A batch's shared first tokens (causal: the same rows in every text) are made once on the host, and the
    embeddings are the unshared batch's within 1e-6 (each text's queries meet the same keys in the same order; the
    prefix's rows, made against its own keys alone, may sum their softmax in another order: a float32 ulp)."""
    loop, model = small
    texts = [f"a photo of a {label}" for label in ("cat", "dog", "red fox", "cup of coffee")]
    ids = model.tokenizer.batch(texts)
    lengths = model.text.pooled_rows(ids) - np.arange(len(ids)) * ids.shape[1] + 1
    assert C.shared_prefix(ids, lengths) == 5   # <|startoftext|> a photo of a
    assert C.shared_prefix(ids[:1], lengths[:1]) == 0
    assert C.shared_prefix(ids[[0, 0]], lengths[[0, 0]]) == lengths[0] - 1   # the same text twice: all but its last
    for batch in (texts, texts[:1] * 2, ["a cat", "the cat"]):
        shared = loop.run_until_complete(model.embed_texts(batch))
        with monkeypatch.context() as m:
            m.setattr(C, "shared_prefix", lambda ids, lengths: 0)
            unshared = loop.run_until_complete(model.embed_texts(batch))
        assert np.abs(shared - unshared).max() <= 1e-6, batch


def test_classify_is_clips_softmax_and_labels_are_cached(small):
    loop, model = small
    ref = model_reference("clip-b32-small")
    labels = ref["texts"][:4]
    probs = dict(loop.run_until_complete(model.classify(photo_path(ref["photos"][1]).read_bytes(), labels,
                                                        template="{}")))
    logits = _ref("clip-b32-small", "logits_per_image", 4)[1, :4].astype(np.float64)
    want = np.exp(logits - logits.max())
    want /= want.sum()
    assert np.abs(np.array([probs[t] for t in labels]) - want).max() < 1e-4
    assert model.stats()["labels_computed"] == 4
    top = loop.run_until_complete(model.classify(photo_path("coffee.png"), labels, template="{}"))
    assert model.stats()["labels_computed"] == 0, "label embeddings are kept by text"
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and abs(sum(p for _, p in top) - 1) < 1e-9


def test_auto_places_each_tower_as_a_whole():
    async def run():
        rt = await gp.open(backend="auto")
        try:
            model = await gp.models.load("clip-vit-base-patch32", rt, source=str(checkpoint("clip-b32-small")))
            images = await model.embed_images([photo_path(p).read_bytes() for p in model_reference("clip-b32-small")["photos"]])
            check_embeddings(images, _ref("clip-b32-small", "image_embeds", 4), "auto")
            await model.embed_texts(["a cat", "a dog"])
            ran = rt.info()["ran"]
            return model.stats(), ran
        finally:
            rt.close()
    stats, ran = asyncio.run(run())
    # one decision per tower and call: where it went is counted once, not op by op on the host
    assert set(stats["vision_ran"]) <= {"cpu", "webgpu"} and set(stats["text_ran"]) <= {"cpu", "webgpu"}
    for tower, where in (("vision", stats["vision_ran"][0]), ("text", stats["text_ran"][0])):
        if where == "cpu":
            assert ran[f"clip-vit-base-patch32.{tower}"] == {"cpu": 1}, ran
    assert "encoder_layer" not in ran and not ran.get("matmul", {}).get("cpu"), ran


def test_load_errors(tmp_path):
    folder = checkpoint("clip-b32-small")

    async def load(source, **options):
        rt = await gp.open(backend="cpu")
        try:
            return await gp.models.load("clip-vit-base-patch32", rt, source=str(source), **options)
        finally:
            rt.close()
    with pytest.raises(ValueError, match="priority"):
        asyncio.run(load(folder, priority="audio"))
    with pytest.raises(TypeError, match="unknown options"):
        asyncio.run(load(folder, pretranspose=True))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in C.TEXT_FILES:
        (broken / f).write_bytes((folder / f).read_bytes())
    (broken / "model.safetensors").symlink_to(checkpoint("vit-b16-small") / "model.safetensors")
    with pytest.raises(LoadError, match="no tensor named 'logit_scale'"):
        asyncio.run(load(broken))
    with pytest.raises(LoadError, match="no package ships"):
        asyncio.run(gp.models.load("clip-vit-base-patch32", None))
