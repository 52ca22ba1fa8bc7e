"""all-MiniLM-L6-v2 (a 6-layer uncased BERT, hidden 384, 12 heads) as sentence embeddings on gpuport ops.

The forward pass uses only `rt.ops` (the host builds ids, positions and masks), so the very same code
runs on native WebGPU, on NumPy, and inside a page. Weights go to the device once, at construction.

    model = MiniLM(rt, weights, tokenizer)        # weights: {name: np.ndarray} from any loader
    emb = await model.embed(["a sentence", ...])  # (n, 384) float32, L2-normalised
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import LoadError
from ..host import hostops
from ..host.references import EncoderLayer
from ..ops.opspecs import OPS
from ..placement import HostBytes
from ..platform import sync_wait
from ..tensor.tensor import Tensor
from ..types import HOST, Decision
from .files import http_files, resolve_files
from .registry import default_source
from .tokenizer import WordPieceTokenizer, parse_vocab

MASK_NEG = -1e9  # additive attention mask for padding keys: exp() of it underflows to exactly 0


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    max_seq_length: int = 256  # sentence-transformers' truncation (sentence_bert_config.json)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], max_seq_length: int | None = None) -> "BertConfig":
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if max_seq_length is not None:
            fields["max_seq_length"] = int(max_seq_length)
        cfg = cls(**fields)
        if cfg.hidden_act != "gelu":
            raise LoadError(f"MiniLM: hidden_act {cfg.hidden_act!r} is not supported (exact 'gelu' only)")
        if cfg.max_seq_length > cfg.max_position_embeddings:
            raise LoadError(f"MiniLM: max_seq_length {cfg.max_seq_length} exceeds the "
                            f"{cfg.max_position_embeddings} position embeddings")
        return cfg


def weight_names(cfg: BertConfig) -> list[str]:
    """The tensors the encoder uses (the checkpoint also has pooler.* and position_ids: not needed)."""
    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for sub in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                    "intermediate.dense", "output.dense"):
            names += [p + sub + ".weight", p + sub + ".bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            names += [p + ln + ".weight", p + ln + ".bias"]
    return names


_EMBEDDING = ("word", "pos_type", "emb_ln_g", "emb_ln_b")   # the weights outside the layers


class _Layer:
    __slots__ = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_g", "ln1_b", "wi", "bi", "wo2", "bo2",
                 "ln2_g", "ln2_b")


@cache
def _forward_ops(h: int, f: int, layers: int, batch: int, seq: int) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """A MiniLM forward's ops and shapes (made once per size: placement asks on every batch)."""
    n = batch * seq
    layer = (("matmul", ((n, h), (h, 3 * h))), ("attention", ((batch, seq, h), (batch, seq, h))),
             ("matmul", ((n, h), (h, h))), ("layer_norm", ((n, h),)), ("matmul", ((n, h), (h, f))),
             ("gelu", ((n, f),)), ("matmul", ((n, f), (f, h))), ("layer_norm", ((n, h),)))
    return layer * layers


def _host_layer(L: _Layer) -> EncoderLayer:
    """One layer's weights as read-only host arrays, Q, K and V stacked into one (3H, H) weight: one matmul,
    not three. Read-only, so the SIMD kernels pack each weight once and keep the panels (simd_ops); the
    tensors' host copies already are."""
    v = {name: getattr(L, name).known_values() for name in _Layer.__slots__}
    wqkv = np.concatenate([v["wq"], v["wk"], v["wv"]], axis=0)
    bqkv = np.concatenate([v["bq"], v["bk"], v["bv"]])
    wqkv.flags.writeable = bqkv.flags.writeable = False
    return EncoderLayer(wqkv=wqkv, bqkv=bqkv, **{n: v[n] for n in ("wo", "bo", "ln1_g", "ln1_b", "wi", "bi", "wo2",
                                                                     "bo2", "ln2_g", "ln2_b")})


class MiniLM:
    """The BERT encoder + mean pooling + L2 normalisation of all-MiniLM-L6-v2, on one runtime.

    `pretranspose`: False (default) keeps PyTorch's (out, in) layout and uses matmul(transpose_b=True):
    measured as fast as a pre-transposed (in, out) copy on lavapipe, and it lets a loader upload each
    tensor's bytes exactly as they arrive. True transposes each linear weight once on the host at load.
    """

    name = "minilm-l6-v2"

    def __init__(self, rt: Any, weights: Mapping[str, np.ndarray], tokenizer: WordPieceTokenizer,
                 config: BertConfig | None = None, *, pretranspose: bool = False,
                 on_upload: Callable[[str, int], None] | None = None) -> None:
        self.rt = rt
        self.config = cfg = config or BertConfig()
        self.tokenizer = tokenizer
        self.pretranspose = pretranspose
        missing = [n for n in weight_names(cfg) if n not in weights]
        if missing:
            raise LoadError(f"MiniLM: weight {missing[0]!r} is missing ({len(missing)} missing in all)")
        self.dim = cfg.hidden_size
        self._host: tuple[dict[str, np.ndarray], list[EncoderLayer]] | None = None   # made by _host_weights

        def up(name: str, shape: tuple[int, ...], linear: bool = False) -> Tensor:
            given = weights[name]
            if isinstance(given, Tensor):   # already on the device (the progressive loader uploaded it)
                if given.dtype != np.float32 or given.shape != shape:
                    raise LoadError(f"MiniLM: weight {name!r} is {given.dtype} {given.shape}, expected float32 {shape}")
                if linear and pretranspose:
                    raise ValueError("pretranspose=True needs host arrays; the progressive loader uploads "
                                     "weights as stored (use pretranspose=False)")
                return given
            arr = np.asarray(given)
            if arr.dtype != np.float32:
                raise LoadError(f"MiniLM: weight {name!r} is {arr.dtype}, expected float32")
            if arr.shape != shape:
                raise LoadError(f"MiniLM: weight {name!r} has shape {arr.shape}, expected {shape}")
            if linear and pretranspose:
                arr = np.ascontiguousarray(arr.T)
            t = rt.tensor(arr)
            if on_upload is not None:
                on_upload(name, arr.nbytes)
            return t

        h, f = cfg.hidden_size, cfg.intermediate_size
        self.word = up("embeddings.word_embeddings.weight", (cfg.vocab_size, h))
        pos = up("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, h))
        types_given = weights["embeddings.token_type_embeddings.weight"]
        types = types_given.known_values() if isinstance(types_given, Tensor) else np.asarray(types_given, np.float32)
        if tuple(types_given.shape) != (cfg.type_vocab_size, h):
            raise LoadError(f"MiniLM: token_type_embeddings has shape {tuple(types_given.shape)}, expected "
                            f"{(cfg.type_vocab_size, h)}")
        pos_values = pos.known_values()
        if types is not None and pos_values is not None:
            # Every token is type 0: that row is folded into the position table once, on the host where both
            # are known. As an op it could be placed on the device (auto explores), leaving the table, and so
            # the whole forward, on the device (bench/startup.py: a warm page's first embedding 57 ms -> 2.7 s).
            self.pos_type = rt.tensor(pos_values + types[0])
        else:
            # row 0 picked on the device (an embedding lookup of id 0)
            row0 = rt.ops.embedding(rt.tensor(np.zeros(1, dtype=np.int32)), types_given).reshape((h,))
            self.pos_type = rt.ops.add(pos, row0)
        if on_upload is not None and not isinstance(types_given, Tensor):
            on_upload("embeddings.token_type_embeddings.weight", types.nbytes)
        self.emb_ln_g = up("embeddings.LayerNorm.weight", (h,))
        self.emb_ln_b = up("embeddings.LayerNorm.bias", (h,))
        self.layers: list[_Layer] = []
        for i in range(cfg.num_hidden_layers):
            p = f"encoder.layer.{i}."
            L = _Layer()
            L.wq, L.bq = up(p + "attention.self.query.weight", (h, h), True), up(p + "attention.self.query.bias", (h,))
            L.wk, L.bk = up(p + "attention.self.key.weight", (h, h), True), up(p + "attention.self.key.bias", (h,))
            L.wv, L.bv = up(p + "attention.self.value.weight", (h, h), True), up(p + "attention.self.value.bias", (h,))
            L.wo, L.bo = (up(p + "attention.output.dense.weight", (h, h), True),
                          up(p + "attention.output.dense.bias", (h,)))
            L.ln1_g = up(p + "attention.output.LayerNorm.weight", (h,))
            L.ln1_b = up(p + "attention.output.LayerNorm.bias", (h,))
            L.wi, L.bi = up(p + "intermediate.dense.weight", (f, h), True), up(p + "intermediate.dense.bias", (f,))
            L.wo2, L.bo2 = up(p + "output.dense.weight", (h, f), True), up(p + "output.dense.bias", (h,))
            L.ln2_g = up(p + "output.LayerNorm.weight", (h,))
            L.ln2_b = up(p + "output.LayerNorm.bias", (h,))
            self.layers.append(L)
        self._upload = HostBytes(self._weights())

    # -- forward ---------------------------------------------------------------------------------------
    def _linear(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return self.rt.ops.matmul(x, w, bias=b, transpose_b=not self.pretranspose)

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> Tensor:
        """Queue the encoder for one padded batch: ids, mask (B, S) -> embeddings (B, hidden), normalised.

        Nothing waits: read the result with `await out.read()`.
        """
        rt, ops, cfg = self.rt, self.rt.ops, self.config
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        mask = np.asarray(mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"forward: ids and mask must both be (batch, seq), got {ids.shape} and {mask.shape}")
        batch, seq = ids.shape
        if seq > cfg.max_position_embeddings:
            raise ValueError(f"forward: {seq} tokens exceed the {cfg.max_position_embeddings} positions")
        h, eps = cfg.hidden_size, cfg.layer_norm_eps
        n = batch * seq
        # Host-built inputs: ids as one (1, B*S) row so every linear layer is one (B*S, K) matmul,
        # positions 0..S-1 (broadcast over the batch), the additive key mask and the pooling mask.
        x = ops.embedding(rt.tensor(ids.reshape(1, n)), self.word)                      # (1, B*S, H)
        x = x.reshape((batch, seq, h))
        x = ops.add(x, ops.embedding(rt.tensor(np.arange(seq, dtype=np.int32)), self.pos_type))
        x = ops.layer_norm(x, self.emb_ln_g, self.emb_ln_b, eps)
        x = x.reshape((1, n, h))
        key_mask = rt.tensor(np.where(mask > 0, 0.0, MASK_NEG).astype(np.float32))      # (B, S)
        for L in self.layers:
            q = self._linear(x, L.wq, L.bq).reshape((batch, seq, h))
            k = self._linear(x, L.wk, L.bk).reshape((batch, seq, h))
            v = self._linear(x, L.wv, L.bv).reshape((batch, seq, h))
            a = ops.attention(q, k, v, cfg.num_attention_heads, key_mask).reshape((1, n, h))
            x = ops.layer_norm(self._linear(a, L.wo, L.bo), L.ln1_g, L.ln1_b, eps, residual=x)
            f = ops.matmul(x, L.wi, bias=L.bi, transpose_b=not self.pretranspose, activation="gelu")
            x = ops.layer_norm(self._linear(f, L.wo2, L.bo2), L.ln2_g, L.ln2_b, eps, residual=x)
        x = x.reshape((batch, seq, h))
        pooled = ops.mean_pool(x, rt.tensor((mask > 0).astype(np.float32)))
        return ops.l2_normalize(pooled)

    # -- the fused host forward -------------------------------------------------------------------------
    def on_host(self, batch: int, seq: int) -> bool:
        """Whether a forward of this size runs as one fused host computation (placement's whole-forward
        decision: always on the cpu backend, under auto where the host is expected to win, never on an explicit
        webgpu backend or where a weight lives only on the device)."""
        return self.rt.placement.whole("minilm.forward", self._ops(batch, seq),
                                       host_can=self._host_weights() is not None,
                                       upload=self._upload).on_host

    def _weights(self) -> Iterator[Tensor]:
        yield from (getattr(self, n) for n in _EMBEDDING)
        yield from (getattr(L, n) for L in self.layers for n in _Layer.__slots__)

    def _ops(self, batch: int, seq: int) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
        """The forward's ops and shapes, for placement's cost of a whole forward."""
        cfg = self.config
        return _forward_ops(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, batch, seq)

    def _learn(self, shape: tuple[int, int], backend: str, seconds: float) -> None:
        """How long a whole forward of this shape took on `backend` (start to result), for placement."""
        self.rt.placement.learn_whole("minilm.forward", self._ops(*shape), backend, seconds)

    def _host_weights(self) -> tuple[dict[str, np.ndarray], list[EncoderLayer]] | None:
        """The weights as host arrays (made once), or None where one of them lives only on the device."""
        if self._host is None:
            if any(t.known_values() is None for t in self._weights()):
                return None
            emb = {n: getattr(self, n).known_values() for n in _EMBEDDING}
            self._host = (emb, [_host_layer(L) for L in self.layers])
        return self._host

    def forward_host(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The forward of `forward` on host arrays with the host kernels, fused where it pays: each layer
        one call into the SIMD kernels where they take it (hostops.encoder_layers), else Q, K, V as one
        matmul, bias in the matmul, residuals added in place before each layer norm."""
        t0 = time.perf_counter()
        cfg = self.config
        host = self._host_weights()
        if host is None:
            raise ValueError("forward_host: a weight lives only on the device (use forward)")
        (emb, layers), h, eps = host, cfg.hidden_size, cfg.layer_norm_eps
        batch, seq = ids.shape
        x = emb["word"][ids.reshape(-1)].reshape(batch, seq, h)
        x += emb["pos_type"][:seq]
        x = hostops.layer_norm(x, emb["emb_ln_g"], emb["emb_ln_b"], eps=eps)
        pool = (mask > 0).astype(np.float32)
        lengths = pool.sum(axis=1).astype(np.int32)
        if lengths.min() > 0 and np.array_equal(pool, np.arange(seq)[None, :] < lengths[:, None]):
            # each text's tokens only, one after another (a padded key is masked to exactly 0 weight, so the
            # rows are the padded batch's): no padding row through the layers
            rows = np.concatenate([x[b, :n] for b, n in enumerate(lengths)])[None]
            rows = hostops.encoder_layers(rows, layers, num_heads=cfg.num_attention_heads, eps=eps, lengths=lengths)
            x = np.zeros_like(x)
            x[pool > 0] = rows[0]
        else:   # padding not at the end of each row: the mask says which keys count
            key_mask = np.where(mask > 0, np.float32(0), np.float32(MASK_NEG)).astype(np.float32)
            x = hostops.encoder_layers(x, layers, key_mask, num_heads=cfg.num_attention_heads, eps=eps)
        pooled = OPS["mean_pool"].run_host([x, pool], {})
        out = hostops.l2_normalize(pooled)
        strategy = "native" if self.rt.device.is_host else "cpu"
        self.rt.placement.ran("minilm.forward", Decision(HOST, strategy, f"fused host forward "
                                                          f"({hostops.backend_name()} kernels)"), t0)
        return out

    def plan_batches(self, lengths: Sequence[int], batch_size: int = 32,
                     max_padding: float = 0.5) -> list[list[int]]:
        """Group text indices into batches: sorted by token count, at most `batch_size` texts, and a new
        batch whenever padding to the longest would exceed `max_padding` of the real tokens (attention
        and every matmul pay for padded tokens too)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        real = 0
        for i in order:
            n = lengths[i]
            if cur and (len(cur) >= batch_size or (len(cur) + 1) * n > (1.0 + max_padding) * (real + n)):
                batches.append(cur)
                cur, real = [], 0
            cur.append(i)
            real += n
        if cur:
            batches.append(cur)
        return batches

    async def embed(self, texts: Sequence[str], batch_size: int = 32, max_padding: float = 0.5) -> np.ndarray:
        """Sentence embeddings (len(texts), hidden) float32, unit length, in the order of `texts`.

        Texts are tokenized (truncated to max_seq_length tokens as sentence-transformers does), grouped
        by length into padded batches (see plan_batches), all queued before the first read, and put back
        in the caller's order.
        """
        if isinstance(texts, str):
            raise TypeError("embed takes a list of strings; wrap one sentence as [text]")
        texts = list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = [self.tokenizer.encode(t, self.config.max_seq_length) for t in texts]
        pending = []
        for idx in self.plan_batches([len(e) for e in enc], batch_size, max_padding):
            width = max(len(enc[i]) for i in idx)
            ids = np.full((len(idx), width), self.tokenizer.pad_id, dtype=np.int32)
            mask = np.zeros((len(idx), width), dtype=np.float32)
            for r, i in enumerate(idx):
                ids[r, :len(enc[i])] = enc[i]
                mask[r, :len(enc[i])] = 1.0
            t0 = time.perf_counter()
            if self.on_host(*ids.shape):
                result = self.forward_host(ids, mask)
                self._learn(ids.shape, "cpu", time.perf_counter() - t0)
            else:
                # the device won the whole forward: its ops stay there (placed one by one, some would come
                # back to the host unfused), so the time learned below is the device's own
                with self.rt.pinned(self.rt.backend):
                    result = self.forward(ids, mask)
            pending.append((idx, result, ids.shape, t0))
        on_device = sum(not isinstance(p[1], np.ndarray) for p in pending)
        for idx, result, shape, t0 in pending:
            if isinstance(result, np.ndarray):
                out[idx] = result
                continue
            out[idx] = await result.read()
            if on_device == 1:   # alone on the device: start to read is this forward's own time
                self._learn(shape, self.rt.backend, time.perf_counter() - t0)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32, max_padding: float = 0.5) -> np.ndarray:
        """`embed` without an event loop, where the runtime can block (natively): sentence-transformers'
        `encode`, for scripts that are not async."""
        return sync_wait(self.embed(texts, batch_size, max_padding), "MiniLM.encode")

    def __repr__(self) -> str:
        return f"MiniLM({self.name!r}, backend={self.rt.backend!r}, layers={self.config.num_hidden_layers})"


async def load(name: str, rt: Any, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
               loader_options: dict, options: dict) -> MiniLM:
    """MiniLM (models.load's family loader) from a directory or a URL: its config, the WordPiece vocabulary, and the
    weights, uploaded as they complete; `options` go to MiniLM."""
    src = source if source is not None else default_source(name)
    if loader_options:
        files = http_files(src, progress, chunk_size_mb, **loader_options)
    else:
        files = resolve_files(src, progress, chunk_size_mb)
    config_json = json.loads(await files.read_text("config.json"))
    try:
        st_config = json.loads(await files.read_text("sentence_bert_config.json"))
    except LoadError:
        st_config = {}
    cfg = BertConfig.from_dict(config_json, st_config.get("max_seq_length", 256))
    tokenizer = WordPieceTokenizer(parse_vocab(await files.read_text("vocab.txt")), max_length=cfg.max_seq_length)
    if files.load_tensors is not None:
        weights = await files.load_tensors(weight_names(cfg), rt)
    else:
        weights = await files.load_weights(weight_names(cfg))
    total = sum(int(np.asarray(w).nbytes) if isinstance(w, np.ndarray) else math.prod(w.shape) * w.dtype.itemsize
                for w in weights.values())
    done = 0

    def uploaded(tensor_name: str, nbytes: int) -> None:
        nonlocal done
        done += nbytes
        layer = tensor_name.split(".")[2] if tensor_name.startswith("encoder.layer.") else None
        progress(stage="upload", done=done, total=total, tensor=tensor_name, layer=layer)

    progress(stage="compile", done=0, total=total, percent=100.0 if files.load_tensors else None)
    model = MiniLM(rt, weights, tokenizer, cfg, on_upload=uploaded, **options)
    model.load_stats = files.loader.stats() if files.loader is not None else {"source": files.source}
    progress(stage="compile", done=total, total=total, percent=100.0 if files.load_tensors else None)
    progress(stage="ready", done=total, total=total, percent=100.0)
    return model
