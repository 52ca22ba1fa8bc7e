"""User kernels with a NumPy twin (kernel.py, kernel_reference.py): the same answers on the GPU and the cpu
tier, check=True catching a wrong reference, and every misuse of the reference named.

Tolerance of the GPU/cpu comparisons: the SAXPY kernel computes a*x + y in f32, which the GPU may contract
to one fma while NumPy rounds the product first: they differ by at most one rounding of a*x plus one of the
sum, |err| <= u*(|a*x| + |a*x + y|) with u = 2**-24 (doubled below for the reference's own rounding). The
2-D kernel does one multiply and one add of exact small integers' products: the same bound.
"""

from __future__ import annotations

import asyncio
import math

import gpuport as gp
import numpy as np
import pytest
from gpuport.ops.kernel_reference import DEFAULT_ATOL, DEFAULT_RTOL

U = 2.0 ** -24

SAXPY = """
override WG: u32 = 64u;
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < p.n) { y[id.x] = p.a * x[id.x] + y[id.x]; }
}
"""


def saxpy_ref(x, y, *, uniforms, workgroups):
    n, a = uniforms
    n = min(n, workgroups[0] * 64)          # the invocations the dispatch has (WG = 64)
    y[:n] = np.float32(a) * x[:n] + y[:n]


GRID = """
struct P { rows: u32, cols: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> hits: array<u32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(8, 8)
fn grid(@builtin(global_invocation_id) id: vec3<u32>) {
  let r = id.y; let c = id.x;
  if (r < p.rows && c < p.cols) {
    out[r * p.cols + c] = x[r * p.cols + c] * s[c] + f32(r);
    hits[r * p.cols + c] = hits[r * p.cols + c] + 1u;
  }
}
"""


def grid_ref(x, s, out, hits, *, uniforms, workgroups):
    rows, cols = uniforms
    out[...] = x * s[None, :] + np.arange(rows, dtype=np.float32)[:, None]
    hits += np.uint32(1)


@pytest.fixture(scope="module")
def rts():
    both = {be: gp.open_sync(backend=be) for be in ("webgpu", "cpu")}
    yield both
    for rt in both.values():
        rt.close()


def saxpy_bound(a, x, y):
    """a*x + y rounded twice (NumPy) or once (a GPU contracting it to an FMA, as NVIDIA's driver does): they differ
    by at most u|ax| + 2u|ax + y|."""
    ax = np.float64(a) * x.astype(np.float64)
    return 2 * U * (np.abs(ax) + np.abs(ax + y.astype(np.float64)))


@pytest.mark.parametrize("n", [1, 7, 63, 65, 1000, 4099])
def test_saxpy_same_answer_on_webgpu_and_cpu(rts, n):
    r = np.random.default_rng(n)
    x = r.standard_normal(n).astype(np.float32)
    y = r.standard_normal(n).astype(np.float32)
    got = {}
    for be, rt in rts.items():
        k = rt.kernel(SAXPY, reference=saxpy_ref)
        ys = rt.tensor(y)
        k.dispatch(math.ceil(n / 64), rt.tensor(x), ys, uniforms=[n, 0.75])
        got[be] = ys.numpy()
        assert k.stats == ({"gpu": 1, "reference": 0, "checked": 0} if be == "webgpu"
                           else {"gpu": 0, "reference": 1, "checked": 0}), (be, k.stats)
    err = np.abs(got["webgpu"].astype(np.float64) - got["cpu"])
    assert (err <= saxpy_bound(0.75, x, y)).all(), err.max()
    assert got["cpu"].dtype == np.float32 and got["cpu"].shape == (n,)


def test_saxpy_leaves_elements_beyond_n_alone_on_both(rts):
    x, y = np.arange(10, dtype=np.float32), np.full(10, 5.0, np.float32)
    for rt in rts.values():
        ys = rt.tensor(y)
        rt.kernel(SAXPY, reference=saxpy_ref).dispatch(1, rt.tensor(x), ys, uniforms=[6, 2.0])
        np.testing.assert_array_equal(ys.numpy(), np.r_[2 * x[:6] + 5, np.full(4, 5.0)].astype(np.float32))


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 13), (9, 65), (16, 8)])
def test_two_dimensional_grid_with_an_integer_output(rts, rows, cols):
    r = np.random.default_rng(rows * 100 + cols)
    x = r.standard_normal((rows, cols)).astype(np.float32)
    s = r.standard_normal(cols).astype(np.float32)
    outs = {}
    for be, rt in rts.items():
        k = rt.kernel(GRID, entry_point="grid", reference=grid_ref)
        out, hits = rt.empty((rows, cols)), rt.empty((rows, cols), "uint32")
        for _ in range(2):   # hits counts dispatches: read_write state carried from one to the next
            k.dispatch((math.ceil(cols / 8), math.ceil(rows / 8)), rt.tensor(x), rt.tensor(s), out, hits,
                       uniforms=[rows, cols])
        outs[be] = out.numpy()
        np.testing.assert_array_equal(hits.numpy(), np.full((rows, cols), 2, np.uint32))
    want = x.astype(np.float64) * s + np.arange(rows)[:, None]
    bound = 2 * U * (np.abs(x * s.astype(np.float64)) + np.abs(want))
    for be, got in outs.items():
        assert (np.abs(got - want) <= bound).all(), (be, np.abs(got - want).max())


def test_a_view_bound_to_the_kernel_writes_the_tensor_it_views(rts):
    for rt in rts.values():
        out = rt.empty((4, 8))
        rt.kernel(SAXPY, reference=saxpy_ref).dispatch(1, rt.tensor(np.ones(32, np.float32)), out.reshape(32),
                                                       uniforms=[32, 3.0])
        np.testing.assert_array_equal(out.numpy(), np.full((4, 8), 3.0, np.float32))


# -- check=True -------------------------------------------------------------------------------------

def test_check_passes_with_the_right_reference_and_keeps_the_gpu_answer(rts):
    rt = rts["webgpu"]
    k = rt.kernel(SAXPY, reference=saxpy_ref, check=True)
    assert (k.rtol, k.atol) == (DEFAULT_RTOL, DEFAULT_ATOL)
    x = np.linspace(-3, 3, 777).astype(np.float32)
    ys = rt.tensor(np.ones(777, np.float32))
    k.dispatch(13, rt.tensor(x), ys, uniforms=[777, 1.5])
    assert k.stats == {"gpu": 1, "reference": 0, "checked": 1}
    assert (np.abs(ys.numpy() - (1.5 * x.astype(np.float64) + 1)) <= saxpy_bound(1.5, x, np.ones(777))).all()


def test_check_catches_a_deliberately_wrong_reference(rts):
    rt = rts["webgpu"]

    def off_by_one_element(x, y, *, uniforms, workgroups):
        saxpy_ref(x, y, uniforms=uniforms, workgroups=workgroups)
        y[5] += 0.25

    k = rt.kernel(SAXPY, reference=off_by_one_element, check=True)
    ys = rt.tensor(np.zeros(100, np.float32))
    with pytest.raises(gp.ReferenceMismatch) as info:
        k.dispatch(2, rt.tensor(np.arange(100, dtype=np.float32)), ys, uniforms=[100, 2.0])
    e = info.value
    assert (e.binding, e.name, e.index, e.bad, e.size) == (1, "y", (5,), 1, 100), str(e)
    assert e.max_abs == pytest.approx(0.25) and (e.gpu, e.reference) == (10.0, 10.25)
    for needle in (k.spec.label, "@binding(1) y", "largest abs difference 0.25 at index (5,)", "rtol=1e-05",
                   "atol=1e-06"):
        assert needle in str(e), (needle, str(e))
    assert isinstance(e, AssertionError) and isinstance(e, gp.GpuportError)
    np.testing.assert_array_equal(ys.numpy(), 2 * np.arange(100, dtype=np.float32))   # the GPU's answer


def test_check_tolerance_is_a_parameter(rts):
    rt = rts["webgpu"]

    def slightly_off(x, y, *, uniforms, workgroups):
        saxpy_ref(x, y, uniforms=uniforms, workgroups=workgroups)
        y *= np.float32(1 + 1e-4)

    x = np.linspace(1, 2, 64).astype(np.float32)
    with pytest.raises(gp.ReferenceMismatch, match="rtol=1e-05"):
        rt.kernel(SAXPY, reference=slightly_off, check=True).dispatch(1, rt.tensor(x), rt.empty(64), uniforms=[64, 1.0])
    loose = rt.kernel(SAXPY, reference=slightly_off, check=True, rtol=1e-3)
    loose.dispatch(1, rt.tensor(x), rt.empty(64), uniforms=[64, 1.0])
    assert loose.stats["checked"] == 1
    with pytest.raises(ValueError, match="rtol and atol must be >= 0"):
        rt.kernel(SAXPY, reference=saxpy_ref, check=True, atol=-1.0)


def test_dispatch_checked_is_the_awaitable_form(rts):
    rt = rts["webgpu"]
    k = rt.kernel(SAXPY, reference=lambda x, y, **_: y.__setitem__(slice(None), 7.0))
    with pytest.raises(gp.ReferenceMismatch, match="largest abs difference 7 at index"):
        asyncio.run(k.dispatch_checked(1, rt.tensor(np.zeros(8, np.float32)), rt.empty(8), uniforms=[8, 1.0]))


def test_check_on_the_cpu_tier_runs_the_reference_once(rts):
    calls = []

    def counted(x, y, *, uniforms, workgroups):
        calls.append(workgroups)
        saxpy_ref(x, y, uniforms=uniforms, workgroups=workgroups)

    k = rts["cpu"].kernel(SAXPY, reference=counted, check=True)
    k.dispatch(1, rts["cpu"].tensor(np.ones(4, np.float32)), rts["cpu"].empty(4), uniforms=[4, 1.0])
    assert calls == [(1, 1, 1)] and k.stats == {"gpu": 0, "reference": 1, "checked": 0}


def test_check_needs_a_reference(rts):
    with pytest.raises(ValueError, match="pass reference="):
        rts["webgpu"].kernel(SAXPY, check=True)


# -- the cpu tier without a reference, and references that break the contract -----------------------

def test_cpu_tier_without_reference_names_the_kernel_and_the_remedy(rts):
    with pytest.raises(gp.UnsupportedFeature) as info:
        rts["cpu"].kernel(GRID, entry_point="grid")
    text = str(info.value)
    assert "'grid@" in text and "entry point 'grid'" in text and "pass reference=fn" in text, text


@pytest.mark.parametrize("be", ["webgpu", "cpu"])
def test_reference_misuse_is_named_and_leaves_tensors_unchanged(rts, be):
    rt = rts[be]
    x, y = rt.tensor(np.arange(8, dtype=np.float32)), rt.tensor(np.ones(8, np.float32))

    def returns(x, y, **_):
        return x * 2

    def wrong_shape(x, y, **_):
        y[:] = np.ones(3, np.float32)

    def writes_input(x, y, **_):
        x[0] = 1.0

    def reshapes(x, y, **_):
        y.shape = (2, 4)

    def raises(x, y, **_):
        raise KeyError("boom")

    for fn, needles in [(returns, ["returned a ndarray", "in place"]),
                        (wrong_shape, ["could not broadcast", "@binding(1) y: float32 (8,) writable"]),
                        (writes_input, ["read-only", "only the read_write bindings are writable"]),
                        (reshapes, ["changed @binding(1) y", "keep the array"]),
                        (raises, ["raised KeyError", "boom"])]:
        k = rt.kernel(SAXPY, reference=fn, check=be == "webgpu")
        with pytest.raises(gp.ReferenceFailed) as info:
            k.dispatch(1, x, y, uniforms=[8, 1.0])
        for needle in needles:
            assert needle in str(info.value), (fn.__name__, needle, str(info.value))
        assert k.spec.label in str(info.value)
    np.testing.assert_array_equal(y.numpy(), np.ones(8, np.float32))
    np.testing.assert_array_equal(x.numpy(), np.arange(8, dtype=np.float32))


def test_reference_signature_is_checked_when_the_kernel_is_made(rts):
    with pytest.raises(TypeError, match=r"cannot be called as .*\(x, y, \*, uniforms\)"):
        rts["cpu"].kernel(SAXPY, reference=lambda x, y: None)
    with pytest.raises(TypeError, match=r"cannot be called as .*\(x, y, \*, uniforms, workgroups\)"):
        rts["cpu"].kernel(SAXPY, reference=lambda x, *, workgroups: None)


@pytest.mark.parametrize("be", ["cpu", "webgpu"])
def test_reference_without_workgroups_runs_on_the_cpu_tier_and_under_check(rts, be):
    """The documented contract: arrays and uniforms=; workgroups= only for a reference that accepts it."""
    def ref(x, y, *, uniforms):
        n, a = uniforms
        y[:n] = np.float32(a) * x[:n] + y[:n]

    rt = rts[be]
    x, y = rt.tensor(np.arange(64, dtype=np.float32)), rt.tensor(np.ones(64, np.float32))
    k = rt.kernel(SAXPY, reference=ref, check=be == "webgpu")
    k.dispatch(1, x, y, uniforms=[64, 0.5])
    np.testing.assert_array_equal(y.numpy(), 0.5 * np.arange(64, dtype=np.float32) + 1)
    assert k.stats == ({"gpu": 0, "reference": 1, "checked": 0} if be == "cpu"
                       else {"gpu": 1, "reference": 0, "checked": 1}), k.stats
    with pytest.raises(TypeError, match="reference must be a function"):
        rts["cpu"].kernel(SAXPY, reference=np.zeros(3))


def test_uniforms_reach_the_reference_as_given(rts):
    seen = []
    src = ("@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n"
           "@compute @workgroup_size(1) fn main() { o[0] = 1u; }")
    k = rts["cpu"].kernel(src, reference=lambda o, *, uniforms, workgroups: seen.append((uniforms, workgroups)))
    k.dispatch((2, 3), rts["cpu"].empty(1, "uint32"))
    assert seen == [(None, (2, 3, 1))]


# -- where auto runs it, and saying so -----------------------------------------------------------------

def test_auto_forced_to_the_host_runs_the_reference_and_says_so(monkeypatch):
    monkeypatch.setenv("GPUPORT_BACKEND", "cpu")
    rt = gp.open_sync(backend="auto")
    try:
        assert rt.placement.auto is not None, "no WebGPU adapter: auto opened NumPy (make setup installs lavapipe)"
        k = rt.kernel(SAXPY, reference=saxpy_ref)
        ys = rt.empty(10)
        with rt.profile() as prof:
            k.dispatch(1, rt.tensor(np.ones(10, np.float32)), ys, uniforms=[10, 2.0])
        np.testing.assert_array_equal(ys.numpy(), np.full(10, 2.0, np.float32))
        assert rt.info()["selection"]["counts"][k.name] == {"cpu": 1}
        assert rt.fallback.get_performance_metrics()["last_strategy"][k.name] == "cpu"
        assert [(o["op"], o["where"]) for o in prof.report()["ops"]] == [(k.name, "cpu")]
    finally:
        rt.close()


def test_auto_pinned_to_the_host_runs_the_reference_and_to_the_gpu_the_wgsl():
    rt = gp.open_sync(backend="auto")
    try:
        assert rt.placement.auto is not None, "no WebGPU adapter: auto opened NumPy (make setup installs lavapipe)"
        k = rt.kernel(SAXPY, reference=saxpy_ref)
        ys = rt.tensor(np.zeros(5, np.float32))
        with rt.pinned("cpu"):
            k.dispatch(1, rt.tensor(np.ones(5, np.float32)), ys, uniforms=[5, 1.0])
        with rt.pinned("webgpu"):
            k.dispatch(1, rt.tensor(np.ones(5, np.float32)), ys, uniforms=[5, 1.0])
        np.testing.assert_array_equal(ys.numpy(), np.full(5, 2.0, np.float32))
        assert k.stats == {"gpu": 1, "reference": 1, "checked": 0}
        assert rt.info()["selection"]["counts"][k.name] == {"cpu": 1, "webgpu": 1}
    finally:
        rt.close()


def test_no_room_on_the_device_runs_the_reference_without_one_raises():
    rt = gp.open_sync(backend="webgpu", memory_budget=4096)
    try:
        x = rt.tensor(np.arange(2048, dtype=np.float32))     # 8 KiB: recovery keeps it on the host
        assert x.on_host
        with pytest.raises(gp.OutOfMemory):
            rt.kernel(SAXPY).dispatch(32, x, rt.tensor(np.ones(8, np.float32)), uniforms=[8, 1.0])
        k = rt.kernel(SAXPY, reference=saxpy_ref)
        ys = rt.tensor(np.ones(8, np.float32))
        k.dispatch(32, x, ys, uniforms=[8, 1.0])
        np.testing.assert_array_equal(ys.numpy(), np.arange(8, dtype=np.float32) + 1)
        assert k.stats["reference"] == 1 and rt.recovery.stats()["oom_lower_tier"] >= 2
    finally:
        rt.close()


def test_lost_device_in_a_page_runs_the_reference_until_the_next_await():
    rt = gp.open_sync(backend="webgpu")
    try:
        k = rt.kernel(SAXPY, reference=saxpy_ref)
        x, ys = rt.tensor(np.arange(16, dtype=np.float32)), rt.tensor(np.ones(16, np.float32))
        rt.device.can_block = False            # as in a page: no new device inside a synchronous call
        rt.device.destroy_for_test()
        rt.recovery.on_lost(gp.DeviceLost("simulated"))
        k.dispatch(1, x, ys, uniforms=[16, 1.0])
        assert k.stats == {"gpu": 0, "reference": 1, "checked": 0}
        np.testing.assert_array_equal(asyncio.run(ys.read()), np.arange(16, dtype=np.float32) + 1)
        assert not rt.lost and rt.recovery.stats()["recoveries"] == 1
        k.dispatch(1, x, ys, uniforms=[16, 1.0])           # the new device: the WGSL again
        np.testing.assert_array_equal(ys.numpy(), 2 * np.arange(16, dtype=np.float32) + 1)
        assert k.stats["gpu"] == 1
    finally:
        rt.close()
