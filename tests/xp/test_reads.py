"""Reads: every synchronous read goes through one function (reads.wait) and has an async twin (xp.read, xp.aio).
Natively they complete at once. In a page a read of GPU values awaits the browser: where the call can wait (JSPI:
simulated here by a device whose reads really suspend on a future of a loop standing for the page's, and whose
`wait` runs that loop until the read is done, as Pyodide's run_sync lets the browser's run) the same calls return the
same values; where it cannot, they raise SyncReadUnavailable naming `await xp.read(x)`, and the twins work."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import gpuport as gp
import numpy as np
import pytest
from conftest import runtime
from gpuport import xp
from sync_reads_script import script

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
    """Awaiting the GPU in a page: a future that the page's event loop (`loop`, or the running one) settles a moment
    later; a read stepped by hand stops on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __await__(self):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self.loop
        done = loop.create_future()
        loop.call_later(0.001, done.set_result, None)
        return (yield from done)


@pytest.fixture
def page_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _as_in_a_page(monkeypatch, loop: asyncio.AbstractEventLoop, can_wait: bool):
    """The webgpu runtime as a page sees it: it cannot block, reading the GPU awaits the browser, and (can_wait) a
    synchronous call waits for it as run_sync does: the page's loop runs until the read is done."""
    rt = runtime("webgpu")
    xp.use(rt)
    download = rt.device.download

    async def suspending(*args, **kwargs):
        await _BrowserPromise(loop)
        return await download(*args, **kwargs)
    monkeypatch.setattr(rt.device, "can_block", False)
    monkeypatch.setattr(rt.device, "download", suspending)
    if can_wait:
        monkeypatch.setattr(rt.device, "cannot_wait", lambda: None)
        monkeypatch.setattr(rt.device, "wait", loop.run_until_complete)
    return rt


@pytest.fixture
def page_like(monkeypatch, page_loop):
    """A page where a synchronous call cannot wait for the GPU (no JSPI, or Python entered synchronously)."""
    return _as_in_a_page(monkeypatch, page_loop, can_wait=False)


@pytest.fixture
def page_with_jspi(monkeypatch, page_loop):
    """A page where a synchronous call can wait for the GPU (JSPI, Python entered through runPythonAsync)."""
    return _as_in_a_page(monkeypatch, page_loop, can_wait=True)


def test_in_a_page_sync_reads_of_gpu_values_name_their_async_twin(page_like):
    a = xp.asarray(np.array([3.0, 1.0, 3.0, -2.0], np.float32)) * 1      # lazy: its values will be the GPU's
    for read in (lambda: float(xp.sum(a)), lambda: bool(a[0] > 0), lambda: np.asarray(a), lambda: a[0].item(),
                 lambda: xp.nonzero(a > 0), lambda: xp.unique_values(a), lambda: a[a > 0]):
        with pytest.raises(gp.SyncReadUnavailable, match=r"await xp\.read\(x\)"):
            read()
    host = xp.asarray(np.array([7.0, 8.0], np.float32))                   # values the host holds need no await
    assert float(host[0]) == 7.0


def test_where_a_page_can_wait_sync_reads_give_what_they_give_natively(page_with_jspi):
    """The script of the page tests (tests/sync_reads_script.py), unchanged: the same values as on the native GPU,
    each read having waited for the (simulated) browser; tensor.numpy() of the runtime's own API too."""
    rt = page_with_jspi
    waits = []
    wait = rt.device.wait
    rt.device.wait = lambda waiting: waits.append(1) or wait(waiting)
    got = script(rt)
    rt.device.wait = wait
    want = script(runtime("cpu"))
    assert got.pop("ran") and want.pop("ran") == {}
    assert got == want
    assert len(waits) >= 8, waits   # every read of device values waited; none refused


def test_where_a_page_cannot_wait_the_script_fails_naming_the_twin(page_like):
    with pytest.raises(gp.SyncReadUnavailable, match=r"cannot wait.*await xp\.read\(x\)"):
        script(page_like)
    t = page_like.tensor(np.ones(3, np.float32))
    with pytest.raises(gp.SyncReadUnavailable, match=r"await tensor\.read\(\)"):
        t.numpy()   # even a tensor whose values the host holds: the same answer wherever values live


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
    """Only reads.wait drives a coroutine to its end synchronously (sync_wait, run_now, stepping it with send, or the
    device's wait: a page's run_sync), and nowhere else."""
    package = Path(xp.__file__).parent
    users = []
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | \
                        {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
                if names & {"sync_wait", "run_now", "send", "run_sync"}:
                    users.append(f"{path.name}:{fn.name}")
    assert users == ["reads.py:wait"], users
