"""Reads: every synchronous read goes through one function (reads.wait) and has an async twin (xp.read, xp.aio).
Natively they complete at once; where the GPU cannot be waited on (a page: simulated here by a device that cannot
block and whose reads really suspend), they raise SyncReadUnavailable naming `await xp.read(x)`, and the twins work."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import gpuport as gp
import numpy as np
import pytest
from conftest import runtime
from gpuport import xp


def test_synchronous_reads_natively(rt):
    a = xp.asarray(np.array([[1.5, -2.0], [0.0, 4.0]], np.float32))
    s = xp.sum(a)
    assert float(s) == 3.5 and int(s) == 3 and bool(s) is True and s.item() == 3.5
    assert int(xp.argmax(a)) == 3 and a[1, 1].item() == 4.0 and complex(a[0, 0]) == 1.5 + 0j
    np.testing.assert_array_equal(np.asarray(a * 2), np.array([[3.0, -4.0], [0.0, 8.0]], np.float32))
    assert [int(v) for v in xp.asarray([3, 1, 2])] == [3, 1, 2]
    with pytest.raises(TypeError):
        float(a)
    with pytest.raises(TypeError):
        xp.asarray([1.5]).__index__()


class _BrowserPromise:
    """Awaiting the GPU in a page: under an event loop a real suspension; driven without one (a synchronous read),
    the pending promise that sync_wait refuses."""

    def __await__(self):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            yield self
            return
        yield from asyncio.sleep(0.001).__await__()


@pytest.fixture
def page_like(monkeypatch):
    """The webgpu runtime as a page sees it: it cannot block, and reading the GPU awaits."""
    rt = runtime("webgpu")
    xp.use(rt)
    download = rt.device.download

    async def suspending(*args, **kwargs):
        await _BrowserPromise()
        return await download(*args, **kwargs)
    monkeypatch.setattr(rt.device, "can_block", False)
    monkeypatch.setattr(rt.device, "download", suspending)
    return rt


def test_in_a_page_sync_reads_of_gpu_values_name_their_async_twin(page_like):
    a = xp.asarray(np.array([3.0, 1.0, 3.0, -2.0], np.float32)) * 1      # lazy: its values will be the GPU's
    for read in (lambda: float(xp.sum(a)), lambda: bool(a[0] > 0), lambda: np.asarray(a), lambda: a[0].item(),
                 lambda: xp.nonzero(a > 0), lambda: xp.unique_values(a), lambda: a[a > 0]):
        with pytest.raises(gp.SyncReadUnavailable, match=r"await xp\.read\(x\)"):
            read()
    host = xp.asarray(np.array([7.0, 8.0], np.float32))                   # values the host holds need no await
    assert float(host[0]) == 7.0


def test_async_twins_give_what_the_sync_reads_give(page_like):
    v = np.array([3.0, 1.0, 3.0, -2.0], np.float32)
    a = xp.asarray(v) * 1

    async def twins():
        total = (await xp.read(xp.sum(a)))[()]
        (where,) = await xp.aio.nonzero(a > 0)
        unique = await xp.read(await xp.aio.unique_values(a))
        counts = await xp.aio.unique_counts(a)
        selected = await xp.read(await xp.aio.getitem(a, a > 0))
        repeated = await xp.read(await xp.aio.repeat(a, xp.asarray(np.array([1, 0, 2, 1], np.int32))))
        return total, await xp.read(where), unique, await xp.read(counts.counts), selected, repeated
    total, where, unique, counts, selected, repeated = asyncio.run(twins())
    assert total == v.sum()
    np.testing.assert_array_equal(where, np.array([0, 1, 2], np.int32))
    np.testing.assert_array_equal(unique, np.unique(v))
    np.testing.assert_array_equal(counts, np.array([1, 1, 2], np.int32))
    np.testing.assert_array_equal(selected, v[v > 0])
    np.testing.assert_array_equal(repeated, np.repeat(v, [1, 0, 2, 1]))


def test_one_function_reads_synchronously():
    """Only reads.wait drives a coroutine to its end synchronously (sync_wait, or stepping it with send): phase 2
    adds the page's run_sync there, and nowhere else."""
    package = Path(xp.__file__).parent
    users = []
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | \
                        {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
                if names & {"sync_wait", "send"}:
                    users.append(f"{path.name}:{fn.name}")
    assert users == ["reads.py:wait"], users
