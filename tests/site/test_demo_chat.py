"""gpuport.site.demo_chat natively on the cpu backend: a turn streams the same text as llm.complete (greedy), the
page's poll sees tokens while the generation runs, cancel stops it and frees its KV cache, a second turn
continues the conversation, errors are reported, not raised."""

from __future__ import annotations

import asyncio

import gpuport as gp
import pytest
from gpuport.site.demo_chat import DEMO_PROMPT, ChatDemo


@pytest.fixture(scope="module")
def rt():
    runtime = gp.open_sync(backend="cpu")
    yield runtime
    runtime.close()


def test_a_turn_streams_what_complete_returns_and_polls_see_it_grow(rt):
    async def go():
        chat = ChatDemo(rt)
        chat.send(DEMO_PROMPT, max_new_tokens=12)
        seen, events, grew = 0, 0, []
        while chat.busy:   # the page's loop: ask again at once, each answer waits for news
            p = await chat.next(events, seen, timeout_s=30)
            assert p["tokens"] or p["events"] or p["state"] != "loading" or not chat.busy, p
            events += len(p["events"])
            if p["tokens"]:
                grew.append(p["n_tokens"])
                seen = p["n_tokens"]
        final = await chat.wait()
        want = await chat.llm.complete([{"role": "user", "content": DEMO_PROMPT}], max_new_tokens=12)
        return chat, final, grew, want
    chat, final, grew, want = asyncio.run(go())
    assert final["state"] == "done" and final["error"] is None
    assert "".join(final["tokens"]) == want and "Paris" in want
    assert len(grew) >= 2, f"polls saw the tokens arrive in one piece: {grew}"   # streamed, not at the end
    f = final["figures"]
    assert f["time_to_first_token_s"] > 0 and f["tokens_per_s"] > 0 and f["load_s"] > 0
    assert f["generated_tokens"] == len(final["tokens"]) and final["backend"] == "cpu" and final["tier"] == "cpu"
    assert [e["stage"] for e in final["events"]][-1] == "ready"
    assert chat.messages[-1] == {"role": "assistant", "content": want}


def test_cancel_stops_the_generation_and_frees_its_cache(rt):
    async def go():
        chat = ChatDemo(rt)
        chat.send("Write a long story about a dragon.", max_new_tokens=200)
        while chat.poll()["n_tokens"] < 3:
            await asyncio.sleep(0)
        assert chat.cancel()
        cancelled = await chat.wait()
        assert chat.llm.session is None, "the KV cache of the cancelled generation is freed"
        assert not chat.cancel()   # nothing runs any more
        chat.send("Thanks!", max_new_tokens=4)   # the conversation goes on
        return cancelled, await chat.wait(), chat
    cancelled, after, chat = asyncio.run(go())
    assert cancelled["state"] == "cancelled" and 3 <= cancelled["n_tokens"] < 10, cancelled
    assert cancelled["figures"]["cancel_latency_s"] < 30
    assert after["state"] == "done" and after["n_tokens"] >= 1
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]


def test_errors_are_reported_and_misuse_refused(rt):
    async def go():
        chat = ChatDemo(rt, source="http://127.0.0.1:9/models/nowhere/")
        chat.send("Hi")
        with pytest.raises(RuntimeError, match="already running"):
            chat.send("again")
        return await chat.wait()
    out = asyncio.run(go())
    assert out["state"] == "error" and out["error"].startswith("LoadError:") and "127.0.0.1:9" in out["error"]
    with pytest.raises(ValueError, match="empty"):
        ChatDemo(rt).send("  ")
