"""Vision transformers on gpuport ops: the pre-norm encoder that CLIP's two towers and ViT are made of, the patch
embedding (a stride-equals-kernel convolution as `patchify` + one `matmul`), a vision tower, and ViT image
classification (google/vit-base-patch16-224 and any ViTForImageClassification checkpoint).

    vit = await gpuport.models.load("vit-base-patch16-224", rt, source="path/or/url/")
    top = await vit.classify(image)            # [(label, probability), ...], the likeliest first
    emb = await vit.embed_images(images)       # (n, 768) float32, unit length: the final CLS states

A tower runs in one of two ways, decided for the whole forward (placement's `whole`): op by op on the device
(`rt.ops`: layer_norm, three linear layers, attention, add, the MLP with GELU or QuickGELU), or on the host with each
layer one call into the C kernels (hostops.encoder_layers: pre-norm, the page's pool of workers or the native
library's threads). Under `auto` each tower is one placement decision, learned from how long each side took.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import LoadError, UnsupportedFeature
from ..host import hostops
from ..host.references import ENCODER_ACTIVATIONS, EncoderLayer
from ..placement import HostBytes
from ..tensor.tensor import Tensor
from ..types import HOST, Decision
from .images import ImageInput, ImageProcessor, Preprocessed, decode_in_page

OpShapes = tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]
DECODE_BUDGET = 64 << 20    # bytes an image may take decoded before it is decoded in strips (or scaled by libjpeg)
MAX_BATCH = 32              # images in one forward at most, wherever the tier's limits allow more


@dataclass(frozen=True)
class TowerConfig:
    """One transformer tower's shape (a Hugging Face config's, or one of CLIP's two sub-configs)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    eps: float
    activation: str
    image_size: int = 0      # vision towers
    patch: int = 0
    channels: int = 3
    vocab: int = 0           # text towers
    positions: int = 0

    @classmethod
    def from_hf(cls, d: Mapping[str, Any], what: str) -> "TowerConfig":
        """From config.json's keys (hidden_size, num_hidden_layers, ...); LoadError naming what is wrong."""
        try:
            cfg = cls(int(d["hidden_size"]), int(d["num_hidden_layers"]), int(d["num_attention_heads"]),
                      int(d["intermediate_size"]), float(d.get("layer_norm_eps", 1e-5)), str(d.get("hidden_act", "gelu")),
                      int(d.get("image_size", 0)), int(d.get("patch_size", 0)), int(d.get("num_channels", 3)),
                      int(d.get("vocab_size", 0)), int(d.get("max_position_embeddings", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"{what}: config.json lacks or mistypes {exc}") from None
        if cfg.activation not in ENCODER_ACTIVATIONS:
            raise UnsupportedFeature(f"{what}: hidden_act {cfg.activation!r} (gpuport runs "
                                     f"{' and '.join(ENCODER_ACTIVATIONS)})")
        if cfg.hidden % cfg.heads:
            raise LoadError(f"{what}: hidden_size {cfg.hidden} is not a multiple of {cfg.heads} heads")
        if cfg.patch and cfg.image_size % cfg.patch:
            raise LoadError(f"{what}: image_size {cfg.image_size} is not whole patches of {cfg.patch}")
        return cfg

    @property
    def tokens(self) -> int:
        """A vision tower's sequence: the class token and the patches."""
        return 1 + (self.image_size // self.patch) ** 2


class WeightSet:
    """A checkpoint's tensors by name (arrays, or Tensors a loader already uploaded), taken one by one: shape and
    dtype checked, uploaded to the runtime, `on_upload(name, bytes)` told. The arrays are given up (made read-only,
    as rt.tensor(copy=False) makes them), so the host kernels pack each weight once, a reshaped one too."""

    def __init__(self, rt: Any, weights: Mapping[str, Any], model: str,
                 on_upload: Callable[[str, int], None] | None = None) -> None:
        self.rt, self.weights, self.model, self.on_upload = rt, weights, model, on_upload

    def _given(self, name: str, shape: tuple[int, ...]) -> Any:
        if name not in self.weights:
            raise LoadError(f"{self.model}: weight {name!r} is missing")
        given = self.weights[name]
        got = tuple(given.shape)
        if got != shape or np.dtype(given.dtype) != np.float32:
            raise LoadError(f"{self.model}: weight {name!r} is {np.dtype(given.dtype)} {got}, expected float32 {shape}")
        return given

    def take(self, name: str, shape: tuple[int, ...], as_shape: tuple[int, ...] | None = None) -> Tensor:
        """The weight on the runtime (`as_shape`: seen under another shape of the same size)."""
        given = self._given(name, shape)
        if isinstance(given, Tensor):
            return given.reshape(as_shape) if as_shape else given
        arr = np.asarray(given)
        arr.flags.writeable = False
        t = self.rt.tensor(arr.reshape(as_shape) if as_shape else arr, copy=False)
        if self.on_upload is not None:
            self.on_upload(name, arr.nbytes)
        return t

    def values(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The weight's values on the host (a Tensor a loader uploaded keeps them)."""
        given = self._given(name, shape)
        values = given.known_values() if isinstance(given, Tensor) else np.asarray(given)
        if values is None:
            raise LoadError(f"{self.model}: weight {name!r} lives only on the device")
        if self.on_upload is not None and not isinstance(given, Tensor):
            self.on_upload(name, values.nbytes)
        return values


# Each layer's weights, by role, and their names under a layer's prefix in transformers' two layouts.
ROLES = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_g", "ln1_b", "wi", "bi", "wo2", "bo2", "ln2_g", "ln2_b")
CLIP_LAYER = dict(zip(ROLES, (
    "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
    "layer_norm1.weight", "layer_norm1.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    "layer_norm2.weight", "layer_norm2.bias")))
VIT_LAYER = dict(zip(ROLES, (
    "attention.attention.query.weight", "attention.attention.query.bias", "attention.attention.key.weight",
    "attention.attention.key.bias", "attention.attention.value.weight", "attention.attention.value.bias",
    "attention.output.dense.weight", "attention.output.dense.bias", "layernorm_before.weight",
    "layernorm_before.bias", "intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight",
    "output.dense.bias", "layernorm_after.weight", "layernorm_after.bias")))


def layer_shapes(cfg: TowerConfig) -> dict[str, tuple[int, ...]]:
    h, f = cfg.hidden, cfg.ffn
    return {"wq": (h, h), "wk": (h, h), "wv": (h, h), "wo": (h, h), "wi": (f, h), "wo2": (h, f), "bi": (f,),
            **{r: (h,) for r in ("bq", "bk", "bv", "bo", "ln1_g", "ln1_b", "bo2", "ln2_g", "ln2_b")}}


def layer_weight_names(cfg: TowerConfig, prefix: str, names: Mapping[str, str]) -> list[str]:
    """The tensors of a tower's layers, `prefix` + layer index + "." + each role's name."""
    return [f"{prefix}{i}.{names[r]}" for i in range(cfg.layers) for r in ROLES]


@cache
def encoder_ops(h: int, f: int, layers: int, act: str, batch: int, seq: int) -> OpShapes:
    """A pre-norm encoder's ops and shapes, for placement's cost of a whole forward (made once per size)."""
    n = batch * seq
    layer = (("layer_norm", ((n, h),)), ("matmul", ((n, h), (h, 3 * h))), ("attention", ((batch, seq, h), (batch, seq, h))),
             ("matmul", ((n, h), (h, h))), ("add", ((n, h), (n, h))), ("layer_norm", ((n, h),)),
             ("matmul", ((n, h), (h, f))), (act, ((n, f),)), ("matmul", ((n, f), (f, h))), ("add", ((n, h), (n, h))))
    return layer * layers


class Encoder:
    """A tower's pre-norm transformer layers on one runtime: `forward` op by op on `rt.ops`, `forward_host` one C
    call per layer (hostops.encoder_layers: x stays in the kernels' memory between them); `causal` attention for a
    text tower."""

    def __init__(self, rt: Any, cfg: TowerConfig, ws: WeightSet, prefix: str, names: Mapping[str, str]) -> None:
        self.rt, self.cfg = rt, cfg
        shapes = layer_shapes(cfg)
        self.layers = [{r: ws.take(f"{prefix}{i}.{names[r]}", shapes[r]) for r in ROLES} for i in range(cfg.layers)]
        self._host: list[EncoderLayer] | None = None

    def tensors(self) -> Iterator[Tensor]:
        for layer in self.layers:
            yield from layer.values()

    def ops(self, batch: int, seq: int) -> OpShapes:
        c = self.cfg
        return encoder_ops(c.hidden, c.ffn, c.layers, c.activation, batch, seq)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        """x (B, S, H) through every layer on the device; nothing waits."""
        ops, c = self.rt.ops, self.cfg
        batch, seq, h = x.shape
        x = x.reshape((1, batch * seq, h))

        def linear(y: Tensor, w: Tensor, b: Tensor, **kw: Any) -> Tensor:
            return ops.matmul(y, w, bias=b, transpose_b=True, **kw)

        for L in self.layers:
            y = ops.layer_norm(x, L["ln1_g"], L["ln1_b"], c.eps)
            q, k, v = (linear(y, L[w], L[b]).reshape((batch, seq, h)) for w, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
            a = ops.attention(q, k, v, c.heads, causal=causal).reshape((1, batch * seq, h))
            x = ops.add(x, linear(a, L["wo"], L["bo"]))
            y = ops.layer_norm(x, L["ln2_g"], L["ln2_b"], c.eps)
            f = (linear(y, L["wi"], L["bi"], activation="gelu") if c.activation == "gelu"
                 else ops.quick_gelu(linear(y, L["wi"], L["bi"])))
            x = ops.add(x, linear(f, L["wo2"], L["bo2"]))
        return x.reshape((batch, seq, h))

    def host_layers(self) -> list[EncoderLayer] | None:
        """The layers as read-only host arrays, Q, K and V stacked (one product), made once; None where a weight
        lives only on the device."""
        if self._host is None:
            values = [{r: t.known_values() for r, t in L.items()} for L in self.layers]
            if any(v is None for layer in values for v in layer.values()):
                return None
            self._host = [_host_layer(v, self.cfg.activation) for v in values]
        return self._host

    def forward_host(self, x: np.ndarray, keep: str, causal: bool = False,
                     lengths: np.ndarray | None = None, prefix: int = 0) -> np.ndarray:
        """The final states (B, H) of the one row a tower reads of each sequence b, its first (keep="first": the class
        token) or its last (keep="last": the pooled end-of-text), through every layer on the host, each layer one C
        call where the kernels take it. x is (B, S, H) float32, or with `lengths` (1, T, H): B sequences of those
        lengths one after another, no padding. The other rows matter to the last layer only as keys and values:
        the kernels make none of them past its QKV product (an image's 50 rows: 9/12 of its products not made).
        `prefix` (causal, with lengths): x's first rows begin every sequence (hostops.encoder_layers)."""
        layers = self.host_layers()
        if layers is None:
            raise ValueError("forward_host: a weight lives only on the device (use forward)")
        c = self.cfg
        return hostops.encoder_layers(x, layers, num_heads=c.heads, eps=c.eps, causal=causal, lengths=lengths,
                                      keep=keep, prefix=prefix)


def _host_layer(v: Mapping[str, np.ndarray], activation: str) -> EncoderLayer:
    wqkv = np.concatenate([v["wq"], v["wk"], v["wv"]], axis=0)
    bqkv = np.concatenate([v["bq"], v["bk"], v["bv"]])
    wqkv.flags.writeable = bqkv.flags.writeable = False
    return EncoderLayer(wqkv=wqkv, bqkv=bqkv, wo=v["wo"], bo=v["bo"], ln1_g=v["ln1_g"], ln1_b=v["ln1_b"], wi=v["wi"],
                        bi=v["bi"], wo2=v["wo2"], bo2=v["bo2"], ln2_g=v["ln2_g"], ln2_b=v["ln2_b"], pre_norm=True,
                        activation=activation)


@dataclass(frozen=True)
class VisionNames:
    """Where a vision tower's tensors are in a checkpoint (CLIP's and ViT's layouts differ)."""

    patch_weight: str
    patch_bias: str | None
    class_embedding: str
    class_shape: Callable[[int], tuple[int, ...]]
    positions: str
    positions_shape: Callable[[int, int], tuple[int, ...]]
    pre_norm: str | None       # CLIP's pre_layrnorm (transformers' spelling)
    layers: str
    layer_names: Mapping[str, str]
    final_norm: str             # CLIP's post_layernorm (on the class token), ViT's layernorm


CLIP_VISION = VisionNames(
    "vision_model.embeddings.patch_embedding.weight", None, "vision_model.embeddings.class_embedding", lambda h: (h,),
    "vision_model.embeddings.position_embedding.weight", lambda t, h: (t, h), "vision_model.pre_layrnorm",
    "vision_model.encoder.layers.", CLIP_LAYER, "vision_model.post_layernorm")
VIT_VISION = VisionNames(
    "vit.embeddings.patch_embeddings.projection.weight", "vit.embeddings.patch_embeddings.projection.bias",
    "vit.embeddings.cls_token", lambda h: (1, 1, h), "vit.embeddings.position_embeddings", lambda t, h: (1, t, h), None,
    "vit.encoder.layer.", VIT_LAYER, "vit.layernorm")


def vision_weight_names(cfg: TowerConfig, names: VisionNames) -> list[str]:
    out = [names.patch_weight, names.class_embedding, names.positions, f"{names.final_norm}.weight",
           f"{names.final_norm}.bias", *layer_weight_names(cfg, names.layers, names.layer_names)]
    if names.patch_bias:
        out.append(names.patch_bias)
    if names.pre_norm:
        out += [f"{names.pre_norm}.weight", f"{names.pre_norm}.bias"]
    return out


class Tower:
    """What placement asks of a tower before each forward: `upload` (its HostBytes) and `host_ready()`. A subclass sets
    `encoder` and calls `_weights_known()` once its weights are all taken."""

    encoder: Encoder

    def tensors(self) -> Iterator[Tensor]:
        raise NotImplementedError

    def _weights_known(self) -> None:
        self.upload = HostBytes(self.tensors())
        self._ready = False

    def host_ready(self) -> bool:
        """Whether the host has every weight's values (forward_host can run). Once it has, it keeps them (a move to
        the device and recovery keep them), so a yes is remembered: a text's placement asked 197 tensors per call."""
        if not self._ready:
            self._ready = (self.encoder.host_layers() is not None
                           and all(t.known_values() is not None for t in self.tensors()))
        return self._ready


class VisionTower(Tower):
    """Pixels (B, C, H, W) -> the final norm of each image's class token (B, hidden): the patch embedding (patchify +
    one matmul; the class embedding, the convolution's bias and the positions folded into one table at load), the
    optional pre-norm, the encoder, the final norm on the class rows."""

    def __init__(self, rt: Any, cfg: TowerConfig, ws: WeightSet, names: VisionNames) -> None:
        self.rt, self.cfg, self.names = rt, cfg, names
        h, k, t = cfg.hidden, cfg.channels * cfg.patch ** 2, cfg.tokens
        self.patch = ws.take(names.patch_weight, (h, cfg.channels, cfg.patch, cfg.patch), as_shape=(h, k))
        positions = ws.values(names.positions, names.positions_shape(t, h)).reshape(t, h)
        cls = ws.values(names.class_embedding, names.class_shape(h)).reshape(h)
        bias = ws.values(names.patch_bias, (h,)) if names.patch_bias else np.zeros(h, np.float32)
        # row 0 (the class token's, zero in patchify's rows) gets the class embedding; the patches the conv's bias
        table = np.concatenate([positions[:1] + cls, positions[1:] + bias]).astype(np.float32)
        self.positions = rt.tensor(table, copy=False)
        self.pre = (ws.take(f"{names.pre_norm}.weight", (h,)), ws.take(f"{names.pre_norm}.bias", (h,))) \
            if names.pre_norm else None
        self.final = (ws.take(f"{names.final_norm}.weight", (h,)), ws.take(f"{names.final_norm}.bias", (h,)))
        self.encoder = Encoder(rt, cfg, ws, names.layers, names.layer_names)
        self._weights_known()

    def tensors(self) -> Iterator[Tensor]:
        yield from (self.patch, self.positions, *self.final, *(self.pre or ()))
        yield from self.encoder.tensors()

    def ops(self, batch: int) -> OpShapes:
        c = self.cfg
        t, k = c.tokens, c.channels * c.patch ** 2
        return (("patchify", ((batch, c.channels, c.image_size, c.image_size),)),
                ("matmul", ((batch * t, k), (k, c.hidden))), ("add", ((batch, t, c.hidden), (t, c.hidden))),
                *self.encoder.ops(batch, t), ("layer_norm", ((batch, c.hidden),)))

    def forward(self, pixels: np.ndarray) -> Tensor:
        """The class tokens' final states (B, hidden), queued on the device."""
        rt, ops, c = self.rt, self.rt.ops, self.cfg
        batch, t = pixels.shape[0], c.tokens
        rows = ops.patchify(rt.tensor(pixels), c.patch)
        x = ops.matmul(rows.reshape((1, batch * t, rows.shape[-1])), self.patch, transpose_b=True)
        x = ops.add(x.reshape((batch, t, c.hidden)), self.positions)
        if self.pre is not None:
            x = ops.layer_norm(x, *self.pre, c.eps)
        x = self.encoder.forward(x)
        first = rt.tensor(np.arange(batch, dtype=np.int32) * t)
        cls = ops.embedding(first, x.reshape((batch * t, c.hidden)))
        return ops.layer_norm(cls, *self.final, c.eps)

    def forward_host(self, pixels: np.ndarray) -> np.ndarray:
        """forward() on the host: the gather and the patch product, then one C call per layer."""
        c = self.cfg
        batch, t = pixels.shape[0], c.tokens
        rows = hostops.patchify(np.asarray(pixels, np.float32), patch=c.patch)
        x = hostops.product(rows.reshape(batch * t, -1), self.patch.known_values())
        x = x.reshape(batch, t, c.hidden) + self.positions.known_values()
        if self.pre is not None:
            x = hostops.layer_norm(x, *(p.known_values() for p in self.pre), eps=c.eps)
        x = self.encoder.forward_host(np.ascontiguousarray(x, np.float32), "first")
        return hostops.layer_norm(x, *(p.known_values() for p in self.final), eps=c.eps)

    def max_batch(self) -> int:
        """Images per forward: as many as the tier's binding limit holds of the largest per-image tensor (the patch
        rows, the MLP's hidden states), at most MAX_BATCH."""
        c = self.cfg
        per_image = 4 * c.tokens * max(c.channels * c.patch ** 2, c.ffn, 3 * c.hidden)
        return max(1, min(MAX_BATCH, self.rt.binding_limit // per_image))


def decode_budget(rt: Any) -> int:
    """Bytes one image may take decoded: the tier's binding limit, at most DECODE_BUDGET."""
    return min(int(rt.binding_limit), DECODE_BUDGET)


async def preprocess(processor: ImageProcessor, images: Sequence[ImageInput], budget: int) -> list[Preprocessed]:
    """Each image as its model input, decoded within `budget` bytes: in a page its JPEGs by the browser while Pillow
    decodes the others (images.decode_in_page); natively on the host's threads (hostops.blas_threads: Pillow lets go
    of the GIL while it decodes; 16 photographs on 2 threads: 119 -> 73 ms), each image's buffers within the budget."""
    if isinstance(images, (str, bytes, bytearray, memoryview, np.ndarray)) or hasattr(images, "getexif"):
        raise TypeError("pass a list of images; wrap one image as [image]")
    picks, decoded = decode_in_page(images, budget)
    chosen = set(picks)
    rest = [image for i, image in enumerate(images) if i not in chosen]
    try:
        threads = min(hostops.blas_threads(), len(rest))
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                made = iter(list(pool.map(lambda image: processor(image, budget), rest)))
        else:
            made = iter([processor(image, budget) for image in rest])
    except BaseException:
        decoded.close()   # the browser's work is dropped with the call
        raise
    browser = iter([processor(image, budget) for image in await decoded])   # decoded meanwhile
    return [next(browser) if i in chosen else next(made) for i in range(len(images))]


def preprocess_report(prepared: Sequence[Preprocessed]) -> dict[str, Any]:
    """What a call's images took, for a model's last_stats: the largest pixel buffer one held, how they were decoded
    (whole, draft, strips, browser, array) and what resized them (pillow or the kernels' engine)."""
    return {"largest_image_buffer": max((p.stats.get("largest_buffer", 0) for p in prepared), default=0),
            "decoded_by": sorted({str(p.stats.get("path")) for p in prepared}),
            "resized_by": sorted({str(p.stats.get("resize", "pillow")) for p in prepared})}


async def run_tower(rt: Any, name: str, ops: OpShapes, host_can: bool, upload: Callable[[], int],
                    device: Callable[[], tuple[Tensor, ...]], host: Callable[[], tuple[np.ndarray, ...]]
                    ) -> tuple[tuple[np.ndarray, ...], str]:
    """One whole forward of a tower where placement puts it (`name`: the decision's key), timed for auto's
    selector: (its results, "cpu" or the device backend)."""
    t0 = time.perf_counter()
    decision = rt.placement.whole(name, ops, host_can=host_can, upload=upload)
    if decision.on_host:
        out = host()
        rt.placement.ran(name, Decision(HOST, decision.strategy, f"fused host forward ({hostops.backend_name()} "
                                                                  "kernels)"), t0)
        where = "cpu"
    else:
        with rt.pinned(rt.backend):   # the device won the whole forward: its ops stay there
            results = device()
        out = tuple([await r.read() for r in results])
        where = rt.backend
    rt.placement.learn_whole(name, ops, where, time.perf_counter() - t0)
    return out, where


__all__ = ["CLIP_LAYER", "CLIP_VISION", "DECODE_BUDGET", "Encoder", "MAX_BATCH", "ROLES", "Tower", "TowerConfig",
           "VIT_LAYER", "VIT_VISION", "VisionNames", "VisionTower", "WeightSet", "decode_budget", "encoder_ops",
           "layer_shapes", "layer_weight_names", "preprocess", "preprocess_report", "run_tower", "vision_weight_names"]
