"""platform.py: sync_wait drives a coroutine that never suspends; run_now drives one up to its first real suspension
and hands back the rest, which an event loop finishes (as a page's run_sync does); within bounds a wait on something
that may never answer (in a page: a browser promise) and names it."""

from __future__ import annotations

import asyncio

import pytest
from gpuport import NoAnswer, UnsupportedFeature
from gpuport.platform import Waiting, run_now, sync_wait, within


class _Suspends:
    """What a JS promise or a thread is to a coroutine: it really suspends (yields something to a loop)."""

    def __await__(self):  # type: ignore[no-untyped-def]
        yield "waiting on the browser"


async def _answers(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def _waits() -> None:
    await _Suspends()


def test_sync_wait_runs_a_coroutine_that_never_really_waits() -> None:
    assert sync_wait(_answers(7)) == 7


def test_sync_wait_refuses_a_real_wait_naming_the_call() -> None:
    with pytest.raises(UnsupportedFeature, match="opening it cannot complete synchronously"):
        sync_wait(_waits(), "opening it")


def test_run_now_gives_the_value_of_a_coroutine_that_never_really_waits() -> None:
    assert run_now(_answers(5)) == 5


def test_run_now_hands_back_the_rest_of_one_that_waits_and_a_loop_finishes_it() -> None:
    loop = asyncio.new_event_loop()
    steps = []

    async def reads() -> int:
        steps.append("before")
        answer = loop.create_future()          # a browser promise: the page's loop settles it later
        loop.call_later(0.001, answer.set_result, 6)
        value = await answer
        steps.append("after")
        await asyncio.sleep(0.001)             # and a second wait, on the loop that now runs it
        return value * 7

    try:
        rest = run_now(reads())
        assert isinstance(rest, Waiting) and steps == ["before"]
        assert loop.run_until_complete(rest) == 42 and steps == ["before", "after"]
    finally:
        loop.close()


def test_what_the_awaited_promise_raises_reaches_the_coroutine_that_waited() -> None:
    loop = asyncio.new_event_loop()

    async def reads() -> str:
        failed = loop.create_future()
        loop.call_later(0.001, failed.set_exception, ValueError("the device was lost"))
        try:
            await failed
        except ValueError as exc:
            return f"handled: {exc}"
        return "not raised"

    try:
        assert loop.run_until_complete(run_now(reads())) == "handled: the device was lost"
    finally:
        loop.close()


def test_within_gives_the_answer_that_comes_in_time() -> None:
    assert asyncio.run(within(_answers(3), 1.0, "three")) == 3


def test_within_fails_a_wait_that_never_ends_naming_it_and_the_wait() -> None:
    async def never_answered() -> None:
        await within(asyncio.get_running_loop().create_future(), 0.05, "the adapter request")

    with pytest.raises(NoAnswer, match=r"^the adapter request: no answer in 0.05 s$"):
        asyncio.run(never_answered())


def test_within_passes_the_awaited_call_s_own_error_through() -> None:
    async def fails() -> None:
        raise ValueError("bad limits")

    with pytest.raises(ValueError, match="bad limits"):
        asyncio.run(within(fails(), 1.0, "the request"))
