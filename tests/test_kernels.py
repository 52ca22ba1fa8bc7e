"""Every kernel against its NumPy reference, natively, on both backends (the cases live in cases.py)."""

import asyncio

import pytest

import gpuport as gp

from cases import CASES, names_for

PARAMS = [pytest.param(be, name, id=f"{be}-{name}") for be in ("webgpu", "cpu") for name in names_for(be)]


@pytest.fixture(scope="module")
def runtimes():
    rts = {be: gp.open_sync(backend=be) for be in ("webgpu", "cpu")}
    yield rts
    for rt in rts.values():
        rt.close()


@pytest.mark.parametrize("backend,name", PARAMS)
def test_case(runtimes, backend, name):
    asyncio.run(CASES[name](runtimes[backend]))
