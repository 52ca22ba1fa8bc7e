"""CLIP (Hugging Face's CLIPModel checkpoints: openai/clip-vit-base-patch32, -base-patch16, -large-patch14, ...) on
gpuport ops: image and text embeddings and zero-shot classification, the same code natively and in a page.

    clip = await gpuport.models.load("clip-vit-base-patch32", rt, source="path/or/url/")
    img = await clip.embed_images([png_bytes, "photo.jpg", array])   # (n, 512) float32, unit length
    txt = await clip.embed_texts(["a photo of a cat", "a photo of a dog"])
    top = await clip.classify(image, ["cat", "dog"], template="a photo of a {}")   # [("cat", 0.93), ("dog", 0.07)]

The text tower: token and position embeddings, pre-norm layers with QuickGELU and causal self-attention, the final
norm of each text's first <|endoftext|> (the largest id where the config keeps CLIP's legacy eos_token_id 2, as
transformers pools), the text projection. The vision tower (models/vision.py): the patch embedding, pre_layrnorm,
the layers, post_layernorm of the class token, the visual projection. Embeddings are L2-normalised; classify's
probabilities are the softmax over labels of logit_scale.exp() times the cosines, as CLIPModel's logits_per_image.
Each tower is one placement decision (device or host, the host running each layer as one C call); a label's
embedding is computed once and kept, by its text.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import LoadError
from ..host import hostops
from ..platform import sync_wait
from ..tensor.tensor import Tensor
from .checkpoint import Components, load_components, open_checkpoint
from .clip_tokenizer import CLIPTokenizer
from .images import ImageInput, ImageProcessor, ensure_pillow
from .vision import (
    CLIP_LAYER,
    CLIP_VISION,
    Encoder,
    OpShapes,
    Tower,
    TowerConfig,
    VisionTower,
    WeightSet,
    decode_budget,
    layer_weight_names,
    preprocess,
    preprocess_report,
    run_tower,
    vision_weight_names,
)

LABEL_CACHE = 4096      # label embeddings kept (by text) for classify
LEGACY_EOS = 2          # transformers' text configs from before its PR #24773: pool at the largest id


@dataclass(frozen=True)
class CLIPConfig:
    """config.json of a CLIPModel: the two towers, the projection width, how the text tower pools."""

    text: TowerConfig
    vision: TowerConfig
    projection: int
    eos_token_id: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPConfig":
        if d.get("model_type") not in (None, "clip"):
            raise LoadError(f"config.json: model_type {d.get('model_type')!r} is not a CLIP model")
        text, vision = d.get("text_config") or {}, d.get("vision_config") or {}
        cfg = cls(TowerConfig.from_hf({"vocab_size": 49408, "max_position_embeddings": 77, **text}, "CLIP text tower"),
                  TowerConfig.from_hf({"image_size": 224, **vision}, "CLIP vision tower"),
                  int(d.get("projection_dim", 512)), int(text.get("eos_token_id", LEGACY_EOS)))
        if not cfg.vision.patch:
            raise LoadError("config.json: the vision config has no patch_size")
        return cfg


def text_weight_names(cfg: CLIPConfig) -> list[str]:
    return ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
            "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias", "text_projection.weight",
            *layer_weight_names(cfg.text, "text_model.encoder.layers.", CLIP_LAYER)]


def weight_names(cfg: CLIPConfig) -> dict[str, list[str]]:
    """The tensors each tower uses, by component (the text tower's carries the logit scale)."""
    return {"text": ["logit_scale", *text_weight_names(cfg)],
            "vision": [*vision_weight_names(cfg.vision, CLIP_VISION), "visual_projection.weight"]}


class TextTower(Tower):
    """Token ids (B, S) -> the final norm of each text's pooled token (B, hidden), then the projection. The token
    table stays on the host: only B S of its rows are read per call, and on the device it would be 100-150 MB (past
    a 128 MiB binding for L/14) for one gather."""

    def __init__(self, rt: Any, cfg: CLIPConfig, ws: WeightSet) -> None:
        self.rt, self.cfg, c = rt, cfg, cfg.text
        h = c.hidden
        self.tokens = ws.values("text_model.embeddings.token_embedding.weight", (c.vocab, h))
        self.positions = ws.take("text_model.embeddings.position_embedding.weight", (c.positions, h))
        self.final = (ws.take("text_model.final_layer_norm.weight", (h,)), ws.take("text_model.final_layer_norm.bias", (h,)))
        self.projection = ws.take("text_projection.weight", (cfg.projection, h))
        self.encoder = Encoder(rt, c, ws, "text_model.encoder.layers.", CLIP_LAYER)
        self._weights_known()

    def tensors(self) -> Iterator[Tensor]:
        yield from (self.positions, *self.final, self.projection)
        yield from self.encoder.tensors()

    def pooled_rows(self, ids: np.ndarray) -> np.ndarray:
        """Each text's pooled row in the flattened (B S) batch: its first <|endoftext|>, or under the legacy
        eos_token_id the first largest id (transformers' two rules)."""
        eos = self.cfg.eos_token_id
        at = ids.argmax(axis=-1) if eos == LEGACY_EOS else (ids == eos).argmax(axis=-1)
        return (np.arange(ids.shape[0]) * ids.shape[1] + at).astype(np.int32)

    def ops(self, batch: int, seq: int) -> OpShapes:
        c = self.cfg.text
        return (("add", ((batch, seq, c.hidden), (seq, c.hidden))),
                *self.encoder.ops(batch, seq), ("layer_norm", ((batch, c.hidden),)),
                ("matmul", ((batch, c.hidden), (c.hidden, self.cfg.projection))))

    def forward(self, ids: np.ndarray) -> Tensor:
        """Text embeddings (B, projection), not normalised, queued on the device."""
        rt, ops, c = self.rt, self.rt.ops, self.cfg.text
        batch, seq = ids.shape
        x = ops.add(rt.tensor(self.tokens[ids]), ops.embedding(rt.tensor(np.arange(seq, dtype=np.int32)), self.positions))
        x = self.encoder.forward(x, causal=True)
        pooled = ops.embedding(rt.tensor(self.pooled_rows(ids)), x.reshape((batch * seq, c.hidden)))
        return ops.matmul(ops.layer_norm(pooled, *self.final, c.eps), self.projection, transpose_b=True)

    def forward_host(self, ids: np.ndarray) -> np.ndarray:
        """forward() on the host, without the padding: each text's tokens up to its pooled one (causal attention:
        none after it reaches it), the texts one after another (16 texts of 5 to 11 tokens: 127 rows, not 176),
        and the tokens every text begins with made once (causal: they are the same rows in every text; the first
        token at least, a zero-shot template's words: 10 labels' 70 rows become 25)."""
        c = self.cfg.text
        batch, seq = ids.shape
        at = self.pooled_rows(ids) - np.arange(batch) * seq   # each text's pooled position
        lengths = at + 1
        prefix = shared_prefix(ids, lengths)
        positions = self.positions.known_values()
        x = np.concatenate([self.tokens[ids[0, :prefix]] + positions[:prefix]]
                           + [self.tokens[row[prefix:n]] + positions[prefix:n] for row, n in zip(ids, lengths)])
        pooled = self.encoder.forward_host(np.ascontiguousarray(x[None], np.float32), "last", causal=True,
                                           lengths=(lengths - prefix).astype(np.int32), prefix=prefix)
        pooled = hostops.layer_norm(pooled, *(p.known_values() for p in self.final), eps=c.eps)
        return hostops.matmul(pooled, self.projection.known_values(), transpose_b=True)


def shared_prefix(ids: np.ndarray, lengths: np.ndarray) -> int:
    """How many first tokens every text of a batch (of two or more) shares, short of each text's last (its pooled
    row is its own); 0 for one text."""
    if len(ids) < 2:
        return 0
    limit = int(lengths.min()) - 1
    same = (ids[:, :limit] == ids[:1, :limit]).all(axis=0)
    return int(limit if same.all() else same.argmin())


def _normalized(x: np.ndarray) -> np.ndarray:
    return hostops.l2_normalize(np.ascontiguousarray(x, np.float32))


class CLIP:
    """Both towers of a CLIP checkpoint on one runtime, its tokenizer and image processor (see the module doc).

    `text` and `vision` become usable separately (a loader that has only one tower's weights yet passes only those:
    see load); `stats()` says where each tower ran and how long each stage took."""

    def __init__(self, rt: Any, cfg: CLIPConfig, tokenizer: CLIPTokenizer, processor: ImageProcessor,
                 name: str = "clip") -> None:
        self.rt, self.config, self.tokenizer, self.processor, self.name = rt, cfg, tokenizer, processor, name
        self.text: TextTower | None = None
        self.vision: VisionTower | None = None
        self.projection: Tensor | None = None
        self.logit_scale = 1.0   # exp(logit_scale): the text tower's weights bring it
        self._labels: OrderedDict[str, np.ndarray] = OrderedDict()
        self.components: Components | None = None   # a load still bringing towers in (see load)
        self.load_stats: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}

    def attach_text(self, weights: Mapping[str, Any], on_upload: Callable[[str, int], None] | None = None) -> None:
        """The text tower from its weights (text_weight_names and logit_scale)."""
        ws = WeightSet(self.rt, weights, self.name, on_upload)
        self.logit_scale = math.exp(float(ws.values("logit_scale", ()).reshape(())))
        self.text = TextTower(self.rt, self.config, ws)

    def attach_vision(self, weights: Mapping[str, Any], on_upload: Callable[[str, int], None] | None = None) -> None:
        """The vision tower and the visual projection from their weights."""
        ws = WeightSet(self.rt, weights, self.name, on_upload)
        self.vision = VisionTower(self.rt, self.config.vision, ws, CLIP_VISION)
        self.projection = ws.take("visual_projection.weight", (self.config.projection, self.config.vision.hidden))

    @property
    def dim(self) -> int:
        """The embeddings' width (projection_dim)."""
        return self.config.projection

    async def tower(self, name: str) -> Any:
        """The `name` tower ("text" or "vision"), once its weights are in: a load with a priority returns before the
        other tower is, and a call that needs it waits here (raising the load's error if it failed)."""
        if getattr(self, name) is None and self.components is not None:
            await self.components.wait(name)
        got = getattr(self, name)
        if got is None:
            raise RuntimeError(f"{self.name}: no {name} tower (build it with attach_{name})")
        return got

    # -- images ----------------------------------------------------------------------------------------
    async def embed_images(self, images: Sequence[ImageInput], normalize: bool = True) -> np.ndarray:
        """Image embeddings (len(images), dim) float32, unit length unless normalize=False: PNG/JPEG bytes, paths,
        (H, W, 3) uint8 arrays or PIL images, preprocessed as CLIPImageProcessor does, embedded in batches as large
        as the tier's limits allow (VisionTower.max_batch)."""
        vision = await self.tower("vision")
        t0 = time.perf_counter()
        prepared = await preprocess(self.processor, images, decode_budget(self.rt))
        t_pre = time.perf_counter()
        out = np.zeros((len(prepared), self.dim), np.float32)
        where = set()
        step = vision.max_batch()
        for i in range(0, len(prepared), step):
            pixels = np.stack([p.pixels for p in prepared[i:i + step]])
            out[i:i + step], ran = await self._vision_forward(vision, pixels)
            where.add(ran)
        self.last_stats.update(images=len(prepared), image_batch=step, preprocess_ms=_ms(t0, t_pre),
                               vision_ms=_ms(t_pre, time.perf_counter()), vision_ran=sorted(where),
                               **preprocess_report(prepared))
        return _normalized(out) if normalize else out

    async def _vision_forward(self, vision: VisionTower, pixels: np.ndarray) -> tuple[np.ndarray, str]:
        projection = self.projection
        assert projection is not None

        def device() -> tuple[Tensor]:
            return (self.rt.ops.matmul(vision.forward(pixels), projection, transpose_b=True),)

        def host() -> tuple[np.ndarray]:
            return (hostops.matmul(vision.forward_host(pixels), projection.known_values(), transpose_b=True),)

        c = self.config.vision
        ops = (*vision.ops(len(pixels)), ("matmul", ((len(pixels), c.hidden), (c.hidden, self.dim))))
        (out,), where = await run_tower(self.rt, f"{self.name}.vision", ops, vision.host_ready(),
                                        vision.upload, device, host)
        return out, where

    # -- texts -----------------------------------------------------------------------------------------
    async def embed_texts(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Text embeddings (len(texts), dim) float32, unit length unless normalize=False; each text tokenized as
        CLIPTokenizer does (77 tokens at most), the batch padded with <|endoftext|> on the device (causal attention:
        padding never reaches a pooled token) and run without its padding on the host."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings; wrap one text as [text]")
        text = await self.tower("text")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        t0 = time.perf_counter()
        ids = self.tokenizer.batch(texts)

        def device() -> tuple[Tensor]:
            return (text.forward(ids),)

        def host() -> tuple[np.ndarray]:
            return (text.forward_host(ids),)

        (out,), where = await run_tower(self.rt, f"{self.name}.text", text.ops(*ids.shape), text.host_ready(),
                                     text.upload, device, host)
        self.last_stats.update(texts=len(texts), text_tokens=int(ids.shape[1]), text_ms=_ms(t0, time.perf_counter()),
                               text_ran=[where])
        return _normalized(out) if normalize else out

    async def label_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        """Unit text embeddings of `labels`, each computed once and kept by its text (the LABEL_CACHE last)."""
        missing = list(dict.fromkeys(t for t in labels if t not in self._labels))
        if missing:
            for t, e in zip(missing, await self.embed_texts(missing)):
                self._labels[t] = e
        for t in labels:
            self._labels.move_to_end(t)
        while len(self._labels) > LABEL_CACHE:
            self._labels.popitem(last=False)
        self.last_stats["labels_computed"] = len(missing)
        return np.stack([self._labels[t] for t in labels])

    def clear_labels(self) -> None:
        """Forget the label embeddings classify keeps (the next classify embeds its labels again)."""
        self._labels.clear()

    async def classify(self, image: ImageInput, labels: Sequence[str], template: str = "a photo of a {}"
                       ) -> list[tuple[str, float]]:
        """Zero-shot classification of one image among `labels` (each put into `template`): (label, probability)
        pairs, the likeliest first; the probabilities are CLIP's softmax over labels of logit_scale * cosine."""
        if isinstance(labels, str) or not labels:
            raise ValueError("classify needs a list of one or more labels")
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no {{}} for the label")
        texts = await self.label_embeddings([template.format(label) for label in labels])
        image_emb = (await self.embed_images([image]))[0]
        logits = self.logit_scale * (texts @ image_emb).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return sorted(zip(labels, (float(x) for x in p)), key=lambda lp: -lp[1])

    def logits_per_image(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """CLIPModel's logits_per_image from unit embeddings: logit_scale.exp() times their cosines."""
        return (self.logit_scale * (np.asarray(image_embeds) @ np.asarray(text_embeds).T)).astype(np.float32)

    def encode_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """embed_images without an event loop, where the runtime can block (natively)."""
        return sync_wait(self.embed_images(images), "CLIP.encode_images")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """embed_texts without an event loop, where the runtime can block (natively)."""
        return sync_wait(self.embed_texts(texts), "CLIP.encode_texts")

    def stats(self) -> dict[str, Any]:
        """The last calls' stages (ms), where each tower ran, the image batch size, the largest decoded image
        buffer and what decoded and resized the images (`decoded_by`, `resized_by`); the load's: when each tower was ready (ms from its start), its requests and bytes, and natively
        the process's peak resident memory once it finished (`peak_rss_bytes`)."""
        ready = dict(self.components.ready) if self.components is not None else {}
        return {**self.last_stats, "load": {**self.load_stats, "ready_ms": ready}, "backend": self.rt.backend,
                "tier": self.rt.tier}

    def __repr__(self) -> str:
        return (f"CLIP({self.name!r}, backend={self.rt.backend!r}, text={self.text is not None}, "
                f"vision={self.vision is not None})")


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1e3, 2)


def build(rt: Any, files: Mapping[str, str], weights: Mapping[str, Any], name: str = "clip",
          on_upload: Callable[[str, int], None] | None = None) -> CLIP:
    """A CLIP from its small files' texts (config.json, vocab.json, merges.txt, preprocessor_config.json) and its
    weights (both towers'; a loader that streams them attaches the towers one by one instead)."""
    model = skeleton(rt, files, name)
    model.attach_text(weights, on_upload)
    model.attach_vision(weights, on_upload)
    return model


def skeleton(rt: Any, files: Mapping[str, str], name: str = "clip") -> CLIP:
    """A CLIP without towers yet: its config, tokenizer and image processor."""
    cfg = CLIPConfig.from_dict(_json(files, "config.json"))
    tokenizer = CLIPTokenizer.from_files(files["vocab.json"], files["merges.txt"], context=cfg.text.positions)
    processor = ImageProcessor.from_config(_json(files, "preprocessor_config.json"))
    return CLIP(rt, cfg, tokenizer, processor, name)


def _json(files: Mapping[str, str], fname: str) -> dict:
    try:
        return json.loads(files[fname])
    except ValueError as exc:
        raise LoadError(f"{fname}: not JSON: {exc}") from None


TEXT_FILES = ("config.json", "vocab.json", "merges.txt", "preprocessor_config.json")
# read on the host only: the text tower gathers its rows there (TextTower)
HOST_ONLY = ("text_model.embeddings.token_embedding.weight",)


async def load(name: str, rt: Any, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
               loader_options: dict, options: dict) -> CLIP:
    """models.load's family loader: a CLIP from a Hugging Face checkpoint folder or URL (models/checkpoint.py). The
    two towers' chunks are fetched in turns (with a manifest), each progress event of a tensor naming its
    `component` ("text", "vision"), and each tower is attached the moment its own tensors are in; load returns when
    both are. Option `priority="text"` (or "vision"): that tower's chunks are asked for first (the other's follow,
    the requests in flight overlapping) and load returns as soon as it is usable, the other still loading (calls that
    need it wait for it; `await model.components.done()` for the whole load)."""
    priority = options.pop("priority", None)
    if options:
        raise TypeError(f"{name}: unknown options {sorted(options)} (CLIP takes priority=)")
    if priority not in (None, "text", "vision"):
        raise ValueError(f"priority must be 'text', 'vision' or None, got {priority!r}")
    t0 = time.perf_counter()
    await ensure_pillow()
    ckpt = await open_checkpoint(name, source, progress, chunk_size_mb, loader_options, TEXT_FILES)
    model = skeleton(rt, ckpt.files, name)
    parts = weight_names(model.config)
    order = [priority, *(c for c in parts if c != priority)] if priority else list(parts)
    components = {c: parts[c] for c in order}
    ckpt.name_components(components)
    model.components = Components(order)
    model.load_stats = ckpt.stats

    def attach(component: str, tensors: dict[str, Any]) -> None:
        uploaded, total = 0, sum(4 * math.prod(t.shape) for t in tensors.values())

        def on_upload(tensor: str, nbytes: int) -> None:   # a local folder's arrays, uploaded here
            nonlocal uploaded
            uploaded += nbytes
            progress(stage="upload", done=uploaded, total=total, tensor=tensor, component=component)

        (model.attach_text if component == "text" else model.attach_vision)(tensors, on_upload)
        model.components.attached(component, round((time.perf_counter() - t0) * 1e3, 1))
        progress(stage="ready", component=component, done=0, total=0)

    async def whole() -> None:
        await load_components(ckpt, rt, components, attach, progress, HOST_ONLY, interleave=priority is None)
        progress(stage="ready", done=0, total=0, percent=100.0)

    task = model.components.run(whole())
    if priority is None:
        await task
    else:
        await model.components.wait(priority)
    return model


__all__ = ["CLIP", "CLIPConfig", "HOST_ONLY", "LABEL_CACHE", "TEXT_FILES", "TextTower", "build", "load", "skeleton",
           "text_weight_names", "weight_names"]
