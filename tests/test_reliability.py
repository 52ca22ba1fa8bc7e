"""Reliability findings of the independent probe, each as a test that failed before its fix. Those that
exist in a page too run natively and in every browser lane from tests/cases.py (failed_batch_*,
embedding_ids_computed_on_the_gpu_*, l2_normalize_propagates_*, mean_and_sum_of_empty_rows_*,
arguments_are_validated_*, properties_seeded); here: threads sharing a runtime, host-side checks of
bindings and workgroups, host ids, limits only natively checkable, host memory."""

from __future__ import annotations

import asyncio
import threading

import gpuport as gp
import numpy as np
import pytest
from gpuport.host import references as K

BAD_BINDING_SHADER = """@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(1) fn main() { b[0] = a[0]; }"""


@pytest.fixture(scope="module")
def rt():
    r = gp.open_sync(backend="webgpu")
    yield r
    r.close()


# -- 1. threads ----------------------------------------------------------------------------------------

def _chain(rt, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((17, 24)).astype(np.float32)
    w = r.standard_normal((24, 9)).astype(np.float32)
    got = rt.ops.softmax(rt.ops.gelu(rt.ops.matmul(rt.tensor(x), rt.tensor(w)))).numpy()
    want = K.softmax_ref(K.gelu_ref(K.matmul_ref(x, w)))
    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))


def _threads(n, fn):
    results, errors = [], []

    def worker(i):
        try:
            results.append(fn(i))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.mark.parametrize("run", range(5))
def test_four_threads_share_one_webgpu_runtime(rt, run):
    results, errors = _threads(4, lambda i: [_chain(rt, run * 1000 + i * 100 + j) for j in range(40)])
    assert not errors, errors
    assert sum(len(r) for r in results) == 160 and all(all(r) for r in results), "a wrong result"


def test_threads_with_a_runtime_each_and_asyncio_tasks_on_one():
    def own(i):
        with gp.open_sync(backend="webgpu") as mine:
            return all(_chain(mine, 7000 + i * 10 + j) for j in range(5))
    results, errors = _threads(3, own)
    assert not errors and all(results), (errors, results)

    async def tasks():
        shared = await gp.open(backend="webgpu")
        try:
            async def one(i):
                x = np.full((8, 8), float(i), np.float32)
                return await shared.ops.scale(shared.tensor(x), 2.0, 1.0).read()
            outs = await asyncio.gather(*(one(i) for i in range(100)))
            return all(np.array_equal(o, np.full((8, 8), 2.0 * i + 1, np.float32)) for i, o in enumerate(outs))
        finally:
            shared.close()
    assert asyncio.run(tasks())


def test_four_threads_embedding_with_one_model(rt):
    model = asyncio.run(gp.models.load("minilm-l6-v2", rt))
    texts = [f"sentence number {i} about threads" for i in range(4)]
    want = asyncio.run(model.embed(texts))
    results, errors = _threads(4, lambda i: asyncio.run(model.embed(texts)))
    assert not errors, errors
    for got in results:
        np.testing.assert_allclose(got, want, atol=1e-5)


# -- 2. a failed batch never reads back as zeros ------------------------------------------------------------

def test_bad_bindings_are_refused_before_they_can_sink_a_batch(rt):
    good = rt.ops.scale(rt.tensor(np.arange(4, dtype=np.float32)), 2.0, 0.0)
    with pytest.raises(gp.GpuValidationError, match="declares 2 storage bindings"):
        rt.kernel(BAD_BINDING_SHADER).dispatch(1, rt.tensor(np.ones(4, np.float32)))
    np.testing.assert_array_equal(good.numpy(), [0, 2, 4, 6])
    one = rt.tensor(np.ones(4, np.float32))
    with pytest.raises(gp.GpuValidationError, match="same buffer"):
        rt.kernel(BAD_BINDING_SHADER).dispatch(1, one, one)


@pytest.mark.parametrize("workgroups, error", [(-1, ValueError), ((1, -2), ValueError), (1.9, TypeError),
                                               ("3", TypeError), ((1, 1, 1, 1), ValueError)])
def test_workgroup_counts_are_checked_on_the_host(rt, workgroups, error):
    k = rt.kernel("@group(0) @binding(0) var<storage, read_write> d: array<f32>;\n"
                  "@compute @workgroup_size(1) fn main() { d[0] = 1.0; }")
    with pytest.raises(error, match="workgroup"):
        k.dispatch(workgroups, rt.empty(4))


# -- 3. data errors are reported --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_embedding_ids_from_the_host_raise_index_error(backend):
    with gp.open_sync(backend=backend) as r:
        table = r.tensor(np.zeros((10, 4), np.float32))
        for bad in (10, -1):
            with pytest.raises(IndexError, match=f"id {bad} is outside"):
                r.ops.embedding(r.tensor(np.array([0, bad], np.int32)), table)


def test_what_is_computed_from_rows_of_bad_device_ids_never_reads_back(rt):
    # the flag is seen at the first read after the embedding; tensors computed from its zero rows before
    # that read are as wrong as the rows themselves (2 * 0 + 1 read back as ones on the second read)
    table = rt.tensor(np.arange(40, dtype=np.float32).reshape(10, 4))
    ids = rt.empty(3, "int32")
    rt.kernel("@group(0) @binding(0) var<storage, read_write> o: array<i32>;\n"
              "@compute @workgroup_size(1) fn main() { o[0] = 1; o[1] = 999; o[2] = -7; }").dispatch(1, ids)
    rows = rt.ops.embedding(ids, table)
    scaled = rt.ops.scale(rows, 2.0, 1.0)
    normed = rt.ops.l2_normalize(rt.ops.gelu(scaled))
    unrelated = rt.ops.scale(rt.tensor(np.ones(3, np.float32)), 2.0, 0.0)
    for t in (normed, normed, scaled, rows):
        with pytest.raises(IndexError, match="outside the table's 10 rows"):
            t.numpy()
    np.testing.assert_array_equal(unrelated.numpy(), [2, 2, 2])   # not computed from the rows: readable


# -- 5. arguments ------------------------------------------------------------------------------------------

def test_kernel_over_the_workgroup_memory_limit_fails_natively_as_in_a_browser(rt):
    src = ("var<workgroup> big: array<f32, 100000>;\n@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n"
           "@compute @workgroup_size(1) fn main() { big[0] = 1.0; o[0] = big[0]; }")
    with pytest.raises(gp.LimitExceeded, match=r"big \(line 1\).*maxComputeWorkgroupStorageSize is 16,384") as exc:
        rt.kernel(src)
    assert exc.value.requested == 400000


def test_host_memory_exhaustion_is_out_of_memory():
    with gp.open_sync(backend="cpu") as r:
        with pytest.raises(gp.OutOfMemory, match="cannot allocate"):
            r.empty(1 << 42)


@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_scalars_beyond_float32_and_non_bool_flags_are_refused(backend):
    # were: OverflowError from struct.pack on webgpu, a row of inf on cpu; transpose_b="yes" ran transposed
    with gp.open_sync(backend=backend) as r:
        x = r.tensor(np.ones((2, 2), np.float32))
        for a in (2**200, 1e39, -(10**400)):
            with pytest.raises(ValueError, match="scale: a must be finite and within float32"):
                r.ops.scale(x, a)
        np.testing.assert_array_equal(r.ops.scale(x, 3.4e38, 0.0).numpy(), np.full((2, 2), 3.4e38, np.float32))
        with pytest.raises(TypeError, match="transpose_b must be a bool"):
            r.ops.matmul(x, x, transpose_b="yes")
