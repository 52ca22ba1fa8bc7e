"""Streaming generation with a llama model: prefill the prompt, then one forward per new token, sampled as asked,
streamed as Token(id, text) with UTF-8-safe text increments; stops at EOS, a stop string or max_new_tokens.

Breaking out of `async for token in llm.generate(...)` ends the generation and frees its KV cache at once: the
loop drops the Generation, whose finalizer closes the session synchronously (asyncio would close a bare async
generator only some loop iterations later); a new generation on the same model also frees the previous one's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Sequence

from ..errors import ContextLengthExceeded
from .bpe import StreamDecoder
from .sampling import Sampler, SamplingParams, SeenMask

# What a decode step costs at the device boundary (the backend's stats), averaged per step in stats()
TRANSFERS = ("submits", "reads", "bytes_to_host", "bridge_calls")


@dataclass(frozen=True)
class Token:
    """One generated token: its id and the text it completes (possibly "": part of a character, or held back
    while it may begin a stop string)."""

    id: int
    text: str


class Session:
    """One generation's KV cache and timings; `close` frees the cache."""

    def __init__(self, llm: Any, capacity: int, host: bool) -> None:
        if llm.session is not None:
            llm.session.close()
        self.llm, self.host = llm, host
        self.cache = llm.new_cache(capacity, host)
        llm.session = self
        self.peak_kv_bytes = 0

    def step(self, ids: Sequence[int]) -> Any:
        out = self.llm.forward(ids, self.cache)
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.nbytes)
        return out

    def close(self) -> None:
        self.cache.free()
        if self.llm.session is self:
            self.llm.session = None


def _held(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that begins some stop string (it must wait for more text)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class Generation:
    """The async iterator `Llama.generate` returns: the token stream, and its KV cache freed as soon as the
    iterator is dropped, exhausted or closed."""

    def __init__(self, llm: Any, prompt: Any, **options: Any) -> None:
        self._holder: list[Session] = []
        self._tokens = _tokens(llm, prompt, self._holder, **options)

    def __aiter__(self) -> "Generation":
        return self

    async def __anext__(self) -> Token:
        return await self._tokens.__anext__()

    async def aclose(self) -> None:
        """End the generation now."""
        await self._tokens.aclose()

    def __del__(self) -> None:
        for session in self._holder:
            session.close()


def generate(llm: Any, prompt: str | Sequence[Mapping[str, str]] | Sequence[int], **options: Any) -> Generation:
    """Tokens after `prompt` (text, chat messages or ids); see Llama.generate."""
    return Generation(llm, prompt, **options)


async def _tokens(llm: Any, prompt: str | Sequence[Mapping[str, str]] | Sequence[int], holder: list[Session],
                  max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                  repetition_penalty: float = 1.0, seed: int | None = None, stop: str | Sequence[str] = (),
                  ignore_eos: bool = False) -> AsyncIterator[Token]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
    sampler = Sampler(SamplingParams(temperature, top_k, top_p, repetition_penalty, seed))
    ids = llm.prompt_ids(prompt)
    if not ids:
        raise ValueError("the prompt has no tokens")
    limit = llm.config.context_length
    if len(ids) + max_new_tokens > limit:
        raise ContextLengthExceeded(limit, len(ids) + max_new_tokens, f"{llm.name}: prompt of {len(ids)} tokens + "
                                    f"max_new_tokens={max_new_tokens}")
    if max_new_tokens == 0:
        return
    t0 = time.perf_counter()
    session = Session(llm, len(ids) + max_new_tokens - 1, llm.on_host(len(ids), max_new_tokens))
    holder.append(session)
    stats = {"prompt_tokens": len(ids), "generated_tokens": 0, "placement": "host" if session.host else "device",
             "backend": llm.rt.backend}
    llm.last_stats = stats
    decoder = StreamDecoder(llm.tokenizer, skip_special_tokens=True)
    history, text, emitted = list(ids), "", 0
    seen = SeenMask(llm.config.vocab_size, ids) if repetition_penalty != 1.0 else None
    counts = {k: 0 for k in TRANSFERS}
    try:
        token = await llm.next_token(session.step(ids), sampler, history, seen)
        t_first = time.perf_counter()
        llm.learn(len(ids), session.host, t_first - t0)
        stats.update(time_to_first_token_s=t_first - t0, prefill_tokens_per_s=len(ids) / (t_first - t0))
        for i in range(max_new_tokens):
            if token in llm.eos_ids and not ignore_eos:
                stats["stopped"] = "eos"
                rest = (text + decoder.flush())[emitted:]   # held back for a stop string that did not come
                if rest:
                    yield Token(token, rest)
                break
            history.append(token)
            if seen is not None:
                seen.add(token)
            stats["generated_tokens"] = i + 1
            text += decoder.push(token)
            last = i == max_new_tokens - 1
            hit = min((j for j in (text.find(s, max(0, emitted - len(s))) for s in stops) if j >= 0), default=-1)
            if hit >= 0:
                stats["stopped"] = "stop"
                yield Token(token, text[emitted:hit])
                return
            if last:
                text += decoder.flush()
                stats["stopped"] = "max_new_tokens"
            end = len(text) if last else len(text) - _held(text, stops)
            yield Token(token, text[emitted:end])
            emitted = max(emitted, end)
            if not last:
                t_step, before = time.perf_counter(), dict(llm.rt.device.stats)
                token = await llm.next_token(session.step([token]), sampler, history, seen)
                step_s = time.perf_counter() - t_step
                for k in TRANSFERS:
                    counts[k] += llm.rt.device.stats.get(k, 0) - before.get(k, 0)
                llm.learn(1, session.host, step_s)
                stats["decode_s"] = stats.get("decode_s", 0.0) + step_s
    finally:
        stats["kv_cache_bytes"] = session.peak_kv_bytes
        if stats.get("decode_s"):
            steps = stats["generated_tokens"] - 1
            stats["decode_tokens_per_s"] = steps / stats["decode_s"]
            stats["per_decode_step"] = {k: v / steps for k, v in counts.items()}
        session.close()


async def complete(llm: Any, prompt: str | Sequence[Mapping[str, str]] | Sequence[int], **options: Any) -> str:
    """The whole generated text (see generate for the options)."""
    return "".join([token.text async for token in generate(llm, prompt, **options)])


__all__ = ["Generation", "Session", "Token", "complete", "generate"]
