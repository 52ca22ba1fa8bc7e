"""Hypothesis against the NumPy references, natively on both backends: every op on random shapes and
values (NaN, +-inf, -0, subnormal, huge; tests/properties.py states the comparisons), and the API's
argument validation (wrong dtypes, shapes and types raise typed errors, never crash or hang).

GPUPORT_HYPOTHESIS=thorough runs 3000 examples per op and backend (the acceptance run; tens of minutes);
the default profile runs 60 per op in CI."""

from __future__ import annotations

import asyncio
import os

import gpuport as gp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from properties import F32_MAX, PROPERTIES, SPECIALS, check_op

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("GPUPORT_HYPOTHESIS", "ci"))


class HypothesisDraw:
    """properties.Draw's interface over Hypothesis' `data`: shrinkable choices."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def floats(self, shape: tuple[int, ...], limit: float = F32_MAX, specials: bool = True) -> np.ndarray:
        lim = np.float32(limit)
        lim = float(lim if lim <= limit else np.nextafter(lim, np.float32(0)))   # a float32 bound
        finite = st.floats(-lim, lim, width=32, allow_subnormal=True)
        special = st.sampled_from([s for s in SPECIALS if not np.isfinite(s) or abs(s) <= limit])
        elements = st.one_of(finite, special) if specials else finite
        return self.data.draw(hnp.arrays(np.float32, shape, elements=elements))

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.data.draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))


@pytest.fixture(scope="module", params=["webgpu", "cpu"])
def runtime(request):
    rt = gp.open_sync(backend=request.param)
    yield rt
    rt.close()


@pytest.mark.parametrize("op", sorted(PROPERTIES))
@given(data=st.data())
def test_op_agrees_with_its_reference(runtime, op, data):
    inputs = PROPERTIES[op].make(HypothesisDraw(data))
    asyncio.run(check_op(runtime, op, inputs))


BAD_DTYPES = st.sampled_from([np.float64, np.float16, np.int64, np.int8, np.bool_, np.complex64])


@given(dtype=BAD_DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
def test_unsupported_dtypes_are_refused_by_name(runtime, dtype, shape):
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        runtime.tensor(np.zeros(shape, dtype))


@given(a=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), b=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
def test_shapes_that_do_not_fit_raise_value_errors_naming_them(runtime, a, b):
    x, y = runtime.tensor(np.ones(a, np.float32)), runtime.tensor(np.ones(b, np.float32))
    broadcasts = a[len(a) - len(b):] == b or b[len(b) - len(a):] == a
    if not broadcasts:
        with pytest.raises(ValueError, match=r"do not broadcast"):
            runtime.ops.add(x, y)
    if len(a) >= 2 and len(b) >= 2 and a[-1] != b[-2]:
        with pytest.raises(ValueError, match="inner dimensions differ"):
            runtime.ops.matmul(x, y)


@given(value=st.one_of(st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2),
                       st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not np.isfinite(v)),
                       st.floats(3.5e38, 1e308), st.integers(2**128, 2**2000).map(lambda v: -v if v % 2 else v)))
def test_bad_scalars_raise_typed_errors(runtime, value):
    x = runtime.tensor(np.ones(4, np.float32))
    with pytest.raises((TypeError, ValueError), match="scale: a must be"):
        runtime.ops.scale(x, value)


@given(heads=st.one_of(st.floats(0.5, 9.5).filter(lambda v: v != int(v)), st.integers(-3, 0), st.integers(5, 7),
                       st.text(max_size=2)))
def test_attention_heads_must_be_a_positive_divisor(runtime, heads):
    q = runtime.tensor(np.ones((1, 2, 8), np.float32))
    with pytest.raises((TypeError, ValueError), match="num_heads"):
        runtime.ops.attention(q, q, q, heads)
