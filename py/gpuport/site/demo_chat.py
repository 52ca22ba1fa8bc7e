"""The demo page's chat box, in Python (the page only draws what `poll` returns): loads the language model once,
runs one generation at a time in the background, streams its tokens into a list the page polls, and cancels.

    chat = ChatDemo(rt)                       # in the page: the runtime it opened
    chat.send("What is the capital of France?", max_new_tokens=48)
    chat.poll(0, 0)                           # {"state", "events", "tokens", "figures", ...} since those counts
    await chat.next(0, 0)                     # the same, once something is new (the page's long poll)
    chat.cancel()                             # ends the generation at the next token; its KV cache is freed

Each generation is a conversation turn: the user's message and the reply join `messages`, and the next turn
sees them (through the model's chat template). Between tokens the task yields to the event loop, so a page's
poll and cancel get through even when the forward never waits (the host forward).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import models

DEFAULT_MODEL = "smollm2-135m-instruct"
DEMO_PROMPT = "What is the capital of France? Answer in one sentence."   # ?chat=1 sends it at start


class ChatDemo:
    """One model, one conversation, at most one generation running."""

    def __init__(self, rt: Any, name: str = DEFAULT_MODEL, source: str | None = None) -> None:
        self.rt, self.name, self.source = rt, name, source
        self.llm: Any = None
        self.messages: list[dict[str, str]] = []
        self.events: list[dict] = []        # the load's progress stream
        self.tokens: list[str] = []         # this turn's text increments, in order
        self.state = "idle"                 # idle | loading | generating | done | cancelled | error
        self.error: str | None = None
        self.figures: dict[str, Any] = {}
        self._task: asyncio.Future | None = None
        self._cancel = False
        self._cancel_t = 0.0
        self._changed = asyncio.Event()     # set when a token, a load event or the state is new

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def send(self, text: str, max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None) -> None:
        """Start a turn in the background (loading the model first if need be)."""
        if self.busy:
            raise RuntimeError("a generation is already running: cancel it or wait for it")
        if not text.strip():
            raise ValueError("the message is empty")
        self.tokens, self.error, self.figures, self._cancel = [], None, {}, False
        self.messages.append({"role": "user", "content": text})
        self.state = "loading" if self.llm is None else "generating"
        self._task = asyncio.ensure_future(self._turn(max_new_tokens, temperature, seed))

    def cancel(self) -> bool:
        """Ask the running generation to stop after its current token; False when none runs."""
        if not self.busy:
            return False
        self._cancel, self._cancel_t = True, time.perf_counter()
        return True

    async def next(self, seen_events: int = 0, seen_tokens: int = 0, timeout_s: float = 0.5) -> dict[str, Any]:
        """poll(), once there is something the page has not seen (or after `timeout_s`): a page that asks again at
        once draws each token as it comes, not on a timer's beat."""
        if self.state not in ("idle", "done", "cancelled", "error") and len(self.events) <= seen_events \
                and len(self.tokens) <= seen_tokens:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.poll(seen_events, seen_tokens)

    def poll(self, seen_events: int = 0, seen_tokens: int = 0) -> dict[str, Any]:
        """What is new since the page saw `seen_events` load events and `seen_tokens` tokens, and the figures."""
        return {"state": self.state, "error": self.error, "events": self.events[seen_events:],
                "tokens": self.tokens[seen_tokens:], "n_tokens": len(self.tokens), "figures": dict(self.figures),
                "backend": self.rt.backend, "tier": self.rt.tier}

    async def wait(self) -> dict[str, Any]:
        """Until the running turn ends; then poll(0, 0)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        return self.poll()

    async def _turn(self, max_new_tokens: int, temperature: float, seed: int | None) -> None:
        try:
            if self.llm is None:
                t0 = time.perf_counter()
                self.llm = await models.load(self.name, self.rt, source=self.source, on_progress=self._event)
                self.figures["load_s"] = time.perf_counter() - t0
                self.state = "generating"
            await self._generate(max_new_tokens, temperature, seed)
        except Exception as exc:   # shown in the page, as the MiniLM section shows its load errors
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"
        self._changed.set()

    def _event(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()

    async def _generate(self, max_new_tokens: int, temperature: float, seed: int | None) -> None:
        f = self.figures
        t0 = time.perf_counter()
        stream = self.llm.generate(self.messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        first = None
        try:
            async for token in stream:
                now = time.perf_counter()
                if first is None:
                    first = now
                    f["time_to_first_token_s"] = first - t0
                self.tokens.append(token.text)
                self._changed.set()
                f["generated_tokens"] = len(self.tokens)
                if len(self.tokens) > 1:   # tokens after the first over the time since the first
                    f["tokens_per_s"] = (len(self.tokens) - 1) / (now - first)
                await asyncio.sleep(0)    # let the page's poll and cancel in
                if self._cancel:
                    break
        finally:
            await stream.aclose()          # frees the generation's KV cache now, not when collected
        f.update({k: v for k, v in self.llm.stats().items() if isinstance(v, (int, float, str))})
        if self._cancel:
            f["cancel_latency_s"] = time.perf_counter() - self._cancel_t
        self.messages.append({"role": "assistant", "content": "".join(self.tokens)})
        self.state = "cancelled" if self._cancel else "done"


__all__ = ["DEFAULT_MODEL", "DEMO_PROMPT", "ChatDemo"]
