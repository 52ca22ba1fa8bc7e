"""ViT image classification (Hugging Face's ViTForImageClassification: google/vit-base-patch16-224 and its kin) on
gpuport ops, the same code natively and in a page.

    vit = await gpuport.models.load("vit-base-patch16-224", rt, source="path/or/url/")
    top = await vit.classify(image, k=5)          # [(label, probability), ...] from config.json's id2label
    logits = await vit.logits([image, ...])      # (n, labels) float32, as the model's head gives them
    emb = await vit.embed_images([image, ...])   # (n, hidden) float32, unit length: the final class-token states

The tower is models/vision.py's (patch embedding with its bias, pre-norm layers with exact GELU, the final norm
of the class token), then the classifier; preprocessing is ViTImageProcessor's (224 x 224, bilinear, mean and std
0.5). One placement decision per forward, as CLIP's towers.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import LoadError
from ..host import hostops
from ..platform import sync_wait
from ..tensor.tensor import Tensor
from .checkpoint import load_components, open_checkpoint
from .images import ImageInput, ImageProcessor, ensure_pillow
from .vision import (
    VIT_VISION,
    TowerConfig,
    VisionTower,
    WeightSet,
    decode_budget,
    preprocess,
    preprocess_report,
    run_tower,
    vision_weight_names,
)

TEXT_FILES = ("config.json", "preprocessor_config.json")


def weight_names(cfg: TowerConfig) -> dict[str, list[str]]:
    """The tensors the model uses: one component, the vision tower and its classifier."""
    return {"vision": [*vision_weight_names(cfg, VIT_VISION), "classifier.weight", "classifier.bias"]}


class ViT:
    """A ViTForImageClassification checkpoint on one runtime (see the module doc)."""

    def __init__(self, rt: Any, cfg: TowerConfig, labels: Sequence[str], processor: ImageProcessor,
                 weights: Mapping[str, Any], name: str = "vit",
                 on_upload: Callable[[str, int], None] | None = None) -> None:
        self.rt, self.config, self.labels, self.processor, self.name = rt, cfg, list(labels), processor, name
        ws = WeightSet(rt, weights, name, on_upload)
        self.tower = VisionTower(rt, cfg, ws, VIT_VISION)
        self.classifier = (ws.take("classifier.weight", (len(self.labels), cfg.hidden)),
                           ws.take("classifier.bias", (len(self.labels),)))
        self.load_stats: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}

    @property
    def dim(self) -> int:
        """The embeddings' width (hidden_size)."""
        return self.config.hidden

    async def forward(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray]:
        """(final class-token states (n, hidden), logits (n, labels)) of `images`, both from one forward, in batches
        as large as the tier's limits allow."""
        t0 = time.perf_counter()
        prepared = await preprocess(self.processor, images, decode_budget(self.rt))
        t_pre = time.perf_counter()
        n, step = len(prepared), self.tower.max_batch()
        cls, logits = np.zeros((n, self.dim), np.float32), np.zeros((n, len(self.labels)), np.float32)
        where = set()
        w, b = self.classifier
        c = self.config
        for i in range(0, n, step):
            pixels = np.stack([p.pixels for p in prepared[i:i + step]])
            batch = len(pixels)

            def device(px: np.ndarray = pixels) -> tuple[Tensor, Tensor]:
                states = self.tower.forward(px)
                return states, self.rt.ops.matmul(states, w, bias=b, transpose_b=True)

            def host(px: np.ndarray = pixels) -> tuple[np.ndarray, np.ndarray]:
                states = self.tower.forward_host(px)
                return states, hostops.matmul(states, w.known_values(), b.known_values(), transpose_b=True)

            ops = (*self.tower.ops(batch), ("matmul", ((batch, c.hidden), (c.hidden, len(self.labels)))))
            (cls[i:i + batch], logits[i:i + batch]), ran = await run_tower(
                self.rt, f"{self.name}.vision", ops, self.tower.host_ready(),
                self.tower.upload,
                device, host)
            where.add(ran)
        self.last_stats.update(images=n, image_batch=step, preprocess_ms=round((t_pre - t0) * 1e3, 2),
                               vision_ms=round((time.perf_counter() - t_pre) * 1e3, 2), vision_ran=sorted(where),
                               **preprocess_report(prepared))
        return cls, logits

    async def logits(self, images: Sequence[ImageInput]) -> np.ndarray:
        """The classifier's logits (len(images), labels) float32."""
        return (await self.forward(images))[1]

    async def embed_images(self, images: Sequence[ImageInput], normalize: bool = True) -> np.ndarray:
        """The final class-token states (len(images), hidden) float32 (after the final norm), unit length unless
        normalize=False: the image's embedding."""
        cls = (await self.forward(images))[0]
        return hostops.l2_normalize(cls) if normalize else cls

    async def classify(self, image: ImageInput, k: int = 5) -> list[tuple[str, float]]:
        """The `k` likeliest labels of one image with their softmax probabilities, the likeliest first."""
        z = (await self.logits([image]))[0].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:max(1, k)]
        return [(self.labels[i], float(p[i])) for i in top]

    def encode_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """embed_images without an event loop, where the runtime can block (natively)."""
        return sync_wait(self.embed_images(images), "ViT.encode_images")

    def stats(self) -> dict[str, Any]:
        """The last call's stages (ms), where the tower ran, the batch size and the largest decoded image buffer;
        the load's."""
        return {**self.last_stats, "load": dict(self.load_stats), "backend": self.rt.backend, "tier": self.rt.tier}

    def __repr__(self) -> str:
        return f"ViT({self.name!r}, backend={self.rt.backend!r}, labels={len(self.labels)})"


def parse(files: Mapping[str, str]) -> tuple[TowerConfig, list[str], ImageProcessor]:
    """config.json (the tower, id2label) and preprocessor_config.json."""
    try:
        config = json.loads(files["config.json"])
        pre = json.loads(files["preprocessor_config.json"])
    except ValueError as exc:
        raise LoadError(f"ViT: a config file is not JSON: {exc}") from None
    if config.get("model_type") not in (None, "vit"):
        raise LoadError(f"config.json: model_type {config.get('model_type')!r} is not a ViT")
    cfg = TowerConfig.from_hf(config, "ViT")
    id2label = config.get("id2label") or {}
    try:
        labels = [str(id2label[str(i)]) for i in range(len(id2label))]
    except KeyError as exc:
        raise LoadError(f"config.json: id2label has no label {exc}") from None
    if not labels:
        raise LoadError("config.json: no id2label (a ViTForImageClassification checkpoint names its labels)")
    return cfg, labels, ImageProcessor.from_config(pre)


async def load(name: str, rt: Any, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
               loader_options: dict, options: dict) -> ViT:
    """models.load's family loader: a ViT from a Hugging Face checkpoint folder or URL (models/checkpoint.py), its
    tensors uploaded as they arrive."""
    if options:
        raise TypeError(f"{name}: unknown options {sorted(options)}")
    await ensure_pillow()
    ckpt = await open_checkpoint(name, source, progress, chunk_size_mb, loader_options, TEXT_FILES)
    cfg, labels, processor = parse(ckpt.files)
    components = weight_names(cfg)
    ckpt.name_components(components)
    made: list[ViT] = []

    def attach(component: str, tensors: dict[str, Any]) -> None:
        uploaded, total = 0, sum(4 * math.prod(t.shape) for t in tensors.values())

        def on_upload(tensor: str, nbytes: int) -> None:
            nonlocal uploaded
            uploaded += nbytes
            progress(stage="upload", done=uploaded, total=total, tensor=tensor, component=component)

        made.append(ViT(rt, cfg, labels, processor, tensors, name, on_upload))

    await load_components(ckpt, rt, components, attach, progress)
    model = made[0]
    model.load_stats = ckpt.stats
    progress(stage="ready", done=0, total=0, percent=100.0)
    return model


__all__ = ["TEXT_FILES", "ViT", "load", "parse", "weight_names"]
