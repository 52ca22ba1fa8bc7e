"""A llama model (SmolLM2-135M-Instruct's GGUF) on gpuport ops: the forward pass, its weights and memory levels.

    llm = await Llama.build(rt, header, raw)        # header: .metadata, .tensors; raw: async name -> uint8 bytes
    logits = await llm.logits(llm.tokenizer.encode("The capital of France is"))
    async for token in llm.generate("Once upon a time", max_new_tokens=16): ...   (models/generation.py)

The source contract (what a loader gives `build`, natively a GGUFFile, in a page the progressive loader):
`header` has `.metadata` (GGUF key -> value) and `.tensors` (name -> formats.gguf.TensorInfo: type_name, shape);
`raw(name)` is awaited per tensor and returns its stored bytes as a flat uint8 array (GGUFFile.raw's result).

Two forwards, chosen per generation: the device forward (`rt.ops`: q8_0_embedding, rms_norm, q4_1_matvec or
q4_1_matmul, rope, kv_attention over a device KV cache, swiglu, add, the tied Q8_0 head as a matvec on the last
position; quantized weights stay as stored blocks on the device; the next token is picked there too,
ops.sample_token, so a decode step reads back its 4-byte id, not the logits) and the host forward, for the cpu
backend and where `backend="auto"` expects the host to win the whole forward: where the SIMD host kernels are
linked (natively and in a page) one kernel call per block on the GGUF's blocks as stored, with 8-bit activations
(hostkernels/llama.c; no float32 copy of any weight), else NumPy's float32 steps of llama_ref.

Memory levels (`set_memory_optimization_level`), each trading speed for memory:
  0  everything resident: weights uploaded once, a contiguous KV cache sized for the generation; the NumPy host
     forward (no SIMD kernels linked) keeps the weights dequantized to float32 (one BLAS matvec per weight)
  1  the KV cache partitioned into blocks of KV_BLOCK positions allocated as the sequence grows (always so under
     the constrained tier); the NumPy host forward dequantizes each weight as it is used
  2  and each transformer layer's weights streamed from host memory for its forward (uploaded, used, released)
  3  and the embedding table and head streamed too: token rows gathered on the host, the head in HEAD_CHUNK-row
     chunks (also below level 3 where the table exceeds one binding: the constrained tier's budget)
"""

from __future__ import annotations

import time
from dataclasses import fields
from functools import cache
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np

from ..errors import ContextLengthExceeded, LoadError, UnsupportedFeature
from ..host import hostops
from ..host.quant import QuantMatrix, as_words, dequantize, row_bytes
from ..host.simd_ops import SimdKernels
from ..platform import IN_PYODIDE, peak_rss_bytes
from ..tensor.tensor import Tensor
from ..types import HOST, Decision, LlamaBlock
from . import llama_ref as ref
from .bpe import BPETokenizer
from .files import open_gguf
from .generation import Generation, complete, generate
from .kv_cache import DeviceKVCache, HostKVCache
from .sampling import Sampler, SeenMask

if IN_PYODIDE:
    from ..backends.jsmodules import heap_bytes

KV_BLOCK = 64          # positions per block of the partitioned KV cache
HEAD_CHUNK = 8192      # vocabulary rows per streamed chunk of the head (level 3)
LEVELS = (0, 1, 2, 3)
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

RawFn = Callable[[str], Awaitable[np.ndarray]]
# model name -> (the PyPI package's import name, the .gguf inside it)
class QWeight:
    """A quantized (N, K) weight: its stored bytes on the host, and its u32 words on the device while resident."""

    __slots__ = ("name", "kind", "shape", "raw", "tensor")

    def __init__(self, name: str, kind: str, shape: tuple[int, int], raw: np.ndarray) -> None:
        self.name, self.kind, self.shape = name, kind, (int(shape[0]), int(shape[1]))
        self.raw = np.ascontiguousarray(raw, dtype=np.uint8).ravel()
        if self.raw.size != self.shape[0] * row_bytes(kind, self.shape[1]):
            raise LoadError(f"{name}: {self.raw.size} bytes for a {kind} {self.shape} tensor")
        self.tensor: Tensor | None = None

    def words(self, rows: slice = slice(None)) -> np.ndarray:
        """Stored bytes of `rows` as u32 words (zero-padded to a whole word), as a GPU buffer holds them."""
        per = row_bytes(self.kind, self.shape[1])
        start, stop, _ = rows.indices(self.shape[0])
        b = self.raw[start * per:stop * per]
        return as_words(b)

    def matrix(self, cached: bool) -> QuantMatrix:
        """The host's view for the host forward; `cached`: its dequantized float32 kept (level 0)."""
        return QuantMatrix(self.raw, self.kind, self.shape) if cached else _Uncached(self.raw, self.kind, self.shape)


class _Uncached(QuantMatrix):
    """Dequantized on every use, never kept: the host forward's weights at memory levels >= 1."""

    def dense(self) -> np.ndarray:
        return dequantize(self.raw, self.kind, self.shape)


@cache
def _forward_ops(dim: int, kv: int, ffn: int, layers: int, tokens: int) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """A llama forward's ops and shapes over `tokens` positions (made once per size: asked on every token)."""
    layer = (("matmul", ((tokens, dim), (dim, dim + 2 * kv))), ("matmul", ((tokens, dim), (dim, dim))),
             ("matmul", ((tokens, dim), (dim, 2 * ffn))), ("matmul", ((tokens, ffn), (ffn, dim))),
             ("attention", ((1, tokens, dim), (1, tokens, dim))))
    return layer * layers


class Llama:
    """A llama GGUF on one runtime: tokenizer, forward, logits; generation in models/generation.py."""

    def __init__(self, rt: Any, config: ref.LlamaConfig, tokenizer: BPETokenizer, vectors: Mapping[str, np.ndarray],
                 matrices: Mapping[str, QWeight], *, name: str = "llama", memory_level: int = 0) -> None:
        self.rt, self.config, self.tokenizer, self.name = rt, config, tokenizer, name
        self.vectors = dict(vectors)                  # f32 norm weights
        self.matrices = dict(matrices)                # quantized weights, by GGUF name
        self.embd = self.matrices["token_embd.weight"]
        self.head = self.matrices.get("output.weight", self.embd)
        self._vec_t: dict[str, Tensor] = {}
        self._host_layers: list[ref.Layer] | None = None
        self._host_head: QuantMatrix | None = None
        self._kernel_blocks: dict[str, list[LlamaBlock]] = {}   # per SIMD engine: each block's weights, checked once
        self.memory_level = 0
        self.set_memory_optimization_level(memory_level)
        # the GGUF's EOS and, for a chat model, the end of a turn
        self.eos_ids = frozenset(i for i in (tokenizer.eos_id, tokenizer.special.get("<|im_end|>")) if i is not None)
        self.last_stats: dict[str, Any] = {}
        self.session: Any = None                      # the generation holding a KV cache (generation.py)

    # -- building ------------------------------------------------------------------------------------------
    @classmethod
    async def build(cls, rt: Any, header: Any, raw: RawFn, *, name: str = "llama", memory_level: int = 0,
                    on_progress: Callable[..., None] | None = None) -> "Llama":
        """The model from a GGUF header (.metadata, .tensors) and `raw(name)` -> the tensor's stored bytes (uint8)."""
        config = ref.LlamaConfig.from_gguf(header.metadata)
        tokenizer = BPETokenizer.from_gguf(header.metadata)
        names = ["token_embd.weight", "output_norm.weight"] + (["output.weight"] if "output.weight" in header.tensors
                                                                else [])
        for i in range(config.n_layers):
            names += [f"blk.{i}.attn_norm.weight", f"blk.{i}.ffn_norm.weight"]
            names += [f"blk.{i}.{m}.weight" for m in MATRICES]
        missing = [n for n in names if n not in header.tensors]
        if missing:
            raise LoadError(f"llama: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        total = sum(header.tensors[n].nbytes for n in names)
        done = 0
        vectors, matrices = {}, {}
        for n in names:
            info = header.tensors[n]
            data = await raw(n)
            if len(info.shape) == 1:
                vectors[n] = dequantize(data, info.type_name, info.shape)
            else:
                if info.type_name not in ("Q4_1", "Q8_0"):
                    raise UnsupportedFeature(f"{n}: ggml type {info.type_name} (gpuport's llama reads Q4_1 and "
                                             "Q8_0 weights)")
                if n.startswith("blk.") and info.type_name != "Q4_1":
                    raise UnsupportedFeature(f"{n}: a {info.type_name} layer weight (the prefill matmul reads Q4_1; "
                                             "Q8_0 serves the embedding and head)")
                matrices[n] = QWeight(n, info.type_name, info.shape, data)
            done += info.nbytes
            if on_progress is not None:
                on_progress(stage="tensor", done=done, total=total, tensor=n)
        model = cls(rt, config, tokenizer, vectors, matrices, name=name, memory_level=memory_level)
        if model.uses_device_eagerly():
            model.upload_resident(on_progress)
        return model

    def uses_device_eagerly(self) -> bool:
        """Whether weights go to the device at build: on an explicit webgpu backend (auto uploads on first use,
        only if it chooses the device forward; the cpu backend never does)."""
        return self.rt.mode == "webgpu"

    def upload_resident(self, on_progress: Callable[..., None] | None = None) -> None:
        """Upload what the memory level keeps resident (and release what it streams)."""
        keep = self._resident_names()
        items = list(self.matrices.values())
        total = sum(w.raw.nbytes for w in items if w.name in keep)
        done = 0
        for w in items:
            if w.name not in keep:
                w.tensor = None
            elif w.tensor is None:
                w.tensor = self.rt.weight(w.words())
                done += w.raw.nbytes
                if on_progress is not None:
                    on_progress(stage="upload", done=done, total=total, tensor=w.name)

    def _binding_budget(self) -> int:
        return self.rt.binding_limit

    def _table_on_device(self) -> bool:
        """The embedding table and head resident: below level 3, where each fits one binding (the constrained
        tier's 4 MiB budget streams them like level 3)."""
        budget = self._binding_budget()
        return self.memory_level < 3 and all(w.raw.nbytes <= budget for w in (self.embd, self.head))

    def _resident_names(self) -> set[str]:
        level = self.memory_level
        keep = set()
        if self._table_on_device():
            keep |= {self.embd.name, self.head.name}
        if level < 2:
            keep |= {n for n in self.matrices if n.startswith("blk.")}
        return keep

    def set_memory_optimization_level(self, level: int) -> None:
        """0-3 (see the module docstring): higher levels keep less in memory and run slower."""
        if isinstance(level, bool) or level not in LEVELS:
            raise ValueError(f"memory optimization level must be one of {LEVELS}, got {level!r}")
        self.memory_level = int(level)
        self._host_layers = None
        for w in self.matrices.values():
            if w.name not in self._resident_names():
                w.tensor = None

    # -- text ------------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's chat template (from its GGUF) applied to `messages`."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)

    def prompt_ids(self, prompt: str | Sequence[Mapping[str, str]] | Sequence[int]) -> list[int]:
        """Token ids of a text prompt, a chat (list of {"role", "content"}: the template is applied) or ids."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        items = list(prompt)
        if items and all(isinstance(m, Mapping) for m in items):
            return self.tokenizer.encode(self.apply_chat_template(items))
        if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items):
            ids = [int(i) for i in items]
            if any(not 0 <= i < self.config.vocab_size for i in ids):
                raise ValueError(f"prompt ids must lie in [0, {self.config.vocab_size})")
            return ids
        raise TypeError("prompt must be a string, a list of {'role', 'content'} messages or a list of token ids")

    # -- where the forward runs --------------------------------------------------------------------------------
    def on_host(self, tokens: int, new_tokens: int = 1) -> bool:
        """Where a generation runs (its KV cache lives there): a forward over the `tokens` of the prompt, then
        one per further new token. Always the host on the cpu backend, never on an explicit webgpu one; under
        auto, the backend expected to finish it all sooner, from the forwards' measured times (`learn`) where
        the selector has them: a device can win the prompt and lose every token after it (Firefox)."""
        return self.rt.placement.generation("llama.generate", "llama.forward", self._forward_ops(tokens),
                                            self._forward_ops(1), new_tokens).on_host

    def learn(self, tokens: int, host: bool, seconds: float) -> None:
        """How long a forward over `tokens` took, from its start to its logits read, for placement."""
        self.rt.placement.learn_whole("llama.forward", self._forward_ops(tokens), "cpu" if host else self.rt.backend,
                                      seconds)

    def _forward_ops(self, tokens: int) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
        """A forward's ops and shapes over `tokens` new positions, for placement's cost of a whole forward."""
        c = self.config
        return _forward_ops(c.dim, c.n_kv_heads * c.head_dim, c.ffn_dim, c.n_layers, tokens)

    def new_cache(self, capacity: int, host: bool) -> DeviceKVCache | HostKVCache:
        """An empty KV cache for up to `capacity` positions (ContextLengthExceeded past the model's context)."""
        c = self.config
        if capacity > c.context_length:
            raise ContextLengthExceeded(c.context_length, capacity, self.name)
        if host:
            return HostKVCache(c.n_layers, c.n_kv_heads, c.head_dim, capacity, KV_BLOCK)
        partitioned = self.memory_level >= 1 or self.rt.tier == "constrained"
        return DeviceKVCache(self.rt, c.n_layers, c.n_kv_heads * c.head_dim, capacity,
                             block=KV_BLOCK if partitioned else None)

    # -- the forwards ------------------------------------------------------------------------------------------
    def forward(self, ids: Sequence[int], cache: DeviceKVCache | HostKVCache) -> list[Tensor] | np.ndarray:
        """Run tokens `ids` at positions cache.length.. and append them to the cache: the last position's logits,
        as host values (host forward) or device tensors of consecutive vocabulary ranges (read them with
        `read_logits`)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            raise ValueError("forward needs at least one token")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        cache.reserve(ids.size)
        if isinstance(cache, HostKVCache):
            return self._forward_host(ids, cache)
        return self._forward_device(ids, cache)

    async def read_logits(self, out: list[Tensor] | np.ndarray) -> np.ndarray:
        """(vocab,) float32 logits from what `forward` returned."""
        if isinstance(out, np.ndarray):
            return out
        parts = [await t.read() for t in out]
        return np.concatenate([p.reshape(-1) for p in parts])

    async def next_token(self, out: list[Tensor] | np.ndarray, sampler: Sampler, history: Sequence[int],
                         seen: SeenMask | None) -> int:
        """The token after a forward (`forward`'s result): picked on the device where its logits are one device
        tensor (ops.sample_token: one id of 4 bytes read back, the logits stay there), else by `sampler` on the
        host from the logits. `seen`: the history as a bit mask where the repetition penalty applies."""
        if isinstance(out, np.ndarray) or len(out) != 1:
            return sampler(await self.read_logits(out), history)
        p = sampler.params
        mask = None if seen is None else self.rt.tensor(seen.words)
        picked = self.rt.ops.sample_token(out[0], mask, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                          repetition_penalty=p.repetition_penalty,
                                          u=sampler.draw() if p.temperature > 0 else 0.0)
        return int((await picked.read())[0])

    def _vec(self, name: str) -> Tensor:
        t = self._vec_t.get(name)
        if t is None:
            t = self._vec_t[name] = self.rt.weight(self.vectors[name])
        return t

    def _weight(self, w: QWeight) -> Tensor:
        """w on the device: resident (uploaded once) or streamed (uploaded for this use)."""
        if w.tensor is not None:
            return w.tensor
        t = self.rt.weight(w.words())
        if w.name in self._resident_names():
            w.tensor = t
        return t

    def _linear(self, x: Tensor, w: QWeight, row: int | None = None) -> Tensor:
        return self.rt.ops.q_linear(x, self._weight(w), w.kind, w.shape, row=row)

    def _forward_device(self, ids: np.ndarray, cache: DeviceKVCache) -> list[Tensor]:
        rt, ops, c = self.rt, self.rt.ops, self.config
        t, start = ids.size, cache.length
        cos, sin = ref.rope_angles(np.arange(start, start + t), c.head_dim, c.rope_theta)
        cos_t, sin_t = rt.tensor(cos), rt.tensor(sin)
        if not self._table_on_device() or self.embd.kind != "Q8_0":
            x = rt.tensor(self.embd.matrix(False).rows(ids))
        else:
            x = ops.q_embedding(rt.tensor(ids.astype(np.int32)), self._weight(self.embd), "Q8_0", self.embd.shape)
        m = self.matrices
        for i in range(c.n_layers):
            p = f"blk.{i}."
            h = ops.rms_norm(x, self._vec(p + "attn_norm.weight"), c.eps)
            q = ops.rope(self._linear(h, m[p + "attn_q.weight"]), cos_t, sin_t, c.n_heads)
            k = ops.rope(self._linear(h, m[p + "attn_k.weight"]), cos_t, sin_t, c.n_kv_heads)
            kc, vc = cache.append(i, k, self._linear(h, m[p + "attn_v.weight"]))
            a = ops.kv_attention(q, kc, vc, c.n_heads, c.n_kv_heads, start)
            x = ops.add(x, self._linear(a, m[p + "attn_output.weight"]))
            h = ops.rms_norm(x, self._vec(p + "ffn_norm.weight"), c.eps)
            f = ops.swiglu(self._linear(h, m[p + "ffn_gate.weight"]), self._linear(h, m[p + "ffn_up.weight"]))
            x = ops.add(x, self._linear(f, m[p + "ffn_down.weight"]))
        cache.length = start + t
        x = ops.rms_norm(x, self._vec("output_norm.weight"), c.eps)
        head = self.head
        if self._table_on_device():
            return [self._linear(x, head, row=t - 1)]
        out = []
        step = max(1, min(HEAD_CHUNK, self._binding_budget() // row_bytes(head.kind, head.shape[1])))
        for r0 in range(0, head.shape[0], step):
            r1 = min(head.shape[0], r0 + step)
            chunk = rt.weight(head.words(slice(r0, r1)))
            out.append(ops.q_linear(x, chunk, head.kind, (r1 - r0, head.shape[1]), row=t - 1))
        return out

    def _host_weights(self) -> list[ref.Layer]:
        if self._host_layers is None:
            cached = self.memory_level == 0
            m, v = self.matrices, self.vectors
            self._host_layers = [ref.Layer(v[f"blk.{i}.attn_norm.weight"],
                                           *(m[f"blk.{i}.{n}.weight"].matrix(cached) for n in MATRICES[:4]),
                                           v[f"blk.{i}.ffn_norm.weight"],
                                           *(m[f"blk.{i}.{n}.weight"].matrix(cached) for n in MATRICES[4:]))
                                 for i in range(self.config.n_layers)]
            self._host_head = self.head.matrix(cached)
        return self._host_layers

    def _forward_host(self, ids: np.ndarray, cache: HostKVCache) -> np.ndarray:
        """The host forward: one kernel call per block on the stored blocks where SIMD kernels are linked (their
        8-bit activations, tests/models/test_llama.py's tolerance); NumPy's float32 steps of llama_ref elsewhere, and
        for a forward whose kernel logits are not all finite (NumPy owns the IEEE cases)."""
        t0 = time.perf_counter()
        c = self.config
        t, start = ids.size, cache.length
        cos, sin = ref.rope_angles(np.arange(start, start + t), c.head_dim, c.rope_theta)
        with hostops.paced(("llama", c.n_layers, t.bit_length())):   # a prompt's rows, or one token's
            kernels = hostops.layers()
            logits = None if kernels is None else self._forward_kernels(*kernels, ids, cache, cos, sin)
        if logits is None or not np.isfinite(logits).all():
            if kernels is not None:   # the blocks below rewrite the rows the kernels wrote
                kernels[0].rows_changed(cache.k)
                kernels[0].rows_changed(cache.v)
            x = self.embd.matrix(False).rows(ids)
            for i, layer in enumerate(self._host_weights()):
                x = ref.block(x, layer, i, cache, cos, sin, c)
            logits = ref.qlinear(ref.rms_norm(x[-1:], self.vectors["output_norm.weight"], c.eps), self._host_head)[0]
        cache.length = start + t
        strategy = "native" if self.rt.device.is_host else "cpu"
        self.rt.placement.ran("llama.forward", Decision(HOST, strategy, "host forward"), t0)
        return logits

    def _forward_kernels(self, engine: SimdKernels, threads: int, ids: np.ndarray, cache: HostKVCache,
                         cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """The forward's blocks and head on the SIMD kernels, reading the weights' stored blocks in place."""
        c, v = self.config, self.vectors
        blocks = self._kernel_blocks.get(engine.name)
        if blocks is None:
            m = self.matrices
            blocks = self._kernel_blocks[engine.name] = [
                engine.llama_block((v[f"blk.{i}.attn_norm.weight"], v[f"blk.{i}.ffn_norm.weight"]),
                                   tuple(m[f"blk.{i}.{n}.weight"].raw for n in MATRICES), m[f"blk.{i}.attn_q.weight"].kind,
                                   heads=c.n_heads, kv_heads=c.n_kv_heads, eps=c.eps) for i in range(c.n_layers)]
        x = np.ascontiguousarray(self.embd.matrix(False).rows(ids), dtype=np.float32)
        cos, sin = np.array(cos, np.float32), np.array(sin, np.float32)
        cos.flags.writeable = sin.flags.writeable = False   # every block reads them: an engine may keep one copy
        rows = cache.k.shape[:2] + (-1,)
        engine.llama_layers(x, cache.length, cos, sin, blocks, list(cache.k.reshape(rows)), list(cache.v.reshape(rows)),
                            threads=threads)
        hostops.ran("llama_block", engine.name)
        h = ref.rms_norm(x[-1:], v["output_norm.weight"], c.eps)
        return engine.q_matmul(h, self.head.raw, self.head.kind, self.head.shape, threads=threads)[0]

    # -- one-shot logits ---------------------------------------------------------------------------------------
    async def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (vocab,) float32 of the last position of `ids` (a fresh cache, freed after)."""
        ids = list(ids)
        cache = self.new_cache(len(ids), self.on_host(len(ids)))
        try:
            return await self.read_logits(self.forward(ids, cache))
        finally:
            cache.free()

    def generate(self, prompt: str | Sequence[Mapping[str, str]] | Sequence[int], max_new_tokens: int = 64,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Sequence[str] = (), ignore_eos: bool = False
                 ) -> Generation:
        """Stream Token(id, text) after `prompt` (a string, chat messages with the template applied, or ids):
        greedy at temperature 0, else sampled (top_k, top_p, repetition_penalty, seed); ends at EOS (unless
        ignore_eos), at a stop string (its text not yielded) or after max_new_tokens."""
        return generate(self, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        repetition_penalty=repetition_penalty, seed=seed, stop=stop, ignore_eos=ignore_eos)

    async def complete(self, prompt: str | Sequence[Mapping[str, str]] | Sequence[int], **options: Any) -> str:
        """The generated text as one string (options as generate's)."""
        return await complete(self, prompt, **options)

    def stats(self) -> dict[str, Any]:
        """The last generation's figures: time to first token, prefill and decode tokens/s, KV cache size, where
        the forward ran; the memory level, the weight bytes resident on the device now, the bytes the host holds
        for the weights (their stored blocks, and float32 copies where the NumPy forward keeps them) and the
        process's peak memory (natively its peak RSS, in a page the WebAssembly memory's size)."""
        resident = sum(w.tensor.nbytes for w in self.matrices.values() if w.tensor is not None)
        dense = [m._dense for m in (*(getattr(layer, f.name) for layer in self._host_layers or ()
                                      for f in fields(layer)), self._host_head) if isinstance(m, QuantMatrix)]
        host = sum(w.raw.nbytes for w in self.matrices.values()) + sum(d.nbytes for d in dense if d is not None)
        return dict(self.last_stats, memory_level=self.memory_level,
                    resident_weight_bytes=resident + sum(t.nbytes for t in self._vec_t.values()),
                    host_weight_bytes=host, peak_memory_bytes=heap_bytes() if IN_PYODIDE else peak_rss_bytes())

    def __repr__(self) -> str:
        return f"Llama({self.name!r}, backend={self.rt.backend!r}, layers={self.config.n_layers}, " \
               f"memory_level={self.memory_level})"


async def load(name: str, rt: Any, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
               loader_options: dict, options: dict) -> "Llama":
    """models.load's family loader: Llama.build on the model's GGUFSource (a URL: verified chunks streamed as the build asks for tensors);
    the source's download and cache writes are over when this returns."""
    if chunk_size_mb is not None:
        loader_options = {**loader_options, "chunk_size_mb": chunk_size_mb}
    src = await open_gguf(name, source, on_progress=lambda event: progress(**event), **loader_options)
    try:
        model = await Llama.build(rt, src.header, src.raw, name=name, on_progress=progress, **options)
        await src.wait()
    finally:
        await src.close()
    model.load_stats = src.stats()
    progress(stage="ready", done=1, total=1, percent=100.0)
    return model


__all__ = ["HEAD_CHUNK", "KV_BLOCK", "LEVELS", "Llama", "QWeight", "load"]
