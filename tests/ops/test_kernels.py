"""Every kernel against its NumPy reference, natively (the cases live in cases.py and, gpuport.xp's, xp_cases.py): the device parity list on a
runtime pinned to the GPU (each case proving from rt.info()["ran"] that its ops ran there), the cpu list on
the cpu backend, the auto list under auto."""

import asyncio

import gpuport as gp
import numpy as np
import pytest
import xp_cases  # noqa: F401 - registers gpuport.xp's cases among CASES
from cases import CASES, names_for, proves_on_device, run_case
from gpuport.ops.opspecs import OPS

LISTS = {"webgpu": "webgpu", "cpu": "cpu", "auto": "auto"}   # list -> the backend its runtime opens with
PARAMS = [pytest.param(lst, name, id=f"{lst}-{name}") for lst in LISTS for name in names_for(lst)]


@pytest.fixture(scope="module")
def runtimes():
    rts = {lst: gp.open_sync(backend=be) for lst, be in LISTS.items()}
    yield rts
    for rt in rts.values():
        rt.close()


@pytest.mark.parametrize("lst,name", PARAMS)
def test_case(runtimes, lst, name, coverage_matrix, request):
    rt = runtimes[lst]
    ran = asyncio.run(run_case(name, rt, device=lst == "webgpu"))
    coverage_matrix.record(request.node.nodeid, ran, device="wgpu-native" if rt.backend == "webgpu" else None,
                           host="native", thread="main")


def test_a_parity_case_answered_on_the_host_fails_the_device_check(runtimes):
    """The check the device lanes rely on: the same case, placed on the host (auto pinned to the cpu), must
    fail naming the op, where it passes as a plain parity case."""
    rt = runtimes["auto"]
    with rt.pinned("cpu"):
        asyncio.run(run_case("gelu_7x13", rt, device=False))       # the answer is right...
        with pytest.raises(AssertionError, match=r"ran on the host, not the device: \{'gelu'"):
            asyncio.run(run_case("gelu_7x13", rt, device=True))     # ...but it is not the GPU's


def test_a_device_case_whose_op_never_ran_fails(runtimes):
    rt = runtimes["webgpu"]
    with pytest.raises(AssertionError, match="softmax did not run on the device"):
        with proves_on_device(rt, "softmax"):
            rt.ops.gelu(rt.tensor(np.ones(2, np.float32))).numpy()


def test_every_op_is_proven_on_the_device():
    """Each op's kernel (its spec in opspecs.OPS) is proven by some case of the device parity list, so every
    GPU lane runs it on its GPU (Firefox: naga/lavapipe, with shader-f16 for the f16 variants; Chromium:
    Tint/SwiftShader)."""
    proven = {op for name in names_for("webgpu") for op in CASES[name].device}
    assert set(OPS) <= proven, f"ops no device parity case proves: {sorted(set(OPS) - proven)}"
