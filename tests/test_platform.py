"""platform.py: sync_wait drives a coroutine that never suspends; within bounds a wait on something that may never
answer (in a page: a browser promise) and names it."""

from __future__ import annotations

import asyncio

import pytest
from gpuport import NoAnswer, UnsupportedFeature
from gpuport.platform import sync_wait, within


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
