"""The data type functions and rules: the standard's promotion table, can_cast, isdtype, finfo/iinfo, the inspection
API, and the typed error for each dtype WebGPU cannot hold."""

from __future__ import annotations

import itertools

import gpuport as gp
import numpy as np
import pytest
from gpuport import xp

INTS = [xp.int8, xp.int16, xp.int32, xp.int64, xp.uint8, xp.uint16, xp.uint32, xp.uint64]
FLOATS = [xp.float16, xp.float32, xp.float64]


def test_promotion_follows_the_standards_table():
    # the standard's lattice: within a kind the wider; signed with unsigned the signed type that holds both
    for a, b in itertools.product(INTS, INTS):
        if (a.kind == "u" and b.kind == "i" and a.itemsize >= b.itemsize and a.itemsize == 8) or \
                (b.kind == "u" and a.kind == "i" and b.itemsize >= a.itemsize and b.itemsize == 8):
            with pytest.raises(TypeError):
                xp.result_type(a, b)
            continue
        assert xp.result_type(a, b) == np.promote_types(a, b), (a, b)
    for a, b in itertools.product(FLOATS, FLOATS):
        assert xp.result_type(a, b) == np.promote_types(a, b)
    for a, b in itertools.product(INTS, FLOATS):   # unspecified by the standard: the float's dtype (as PyTorch)
        assert xp.result_type(a, b) == b and xp.result_type(b, a) == b
    for f in FLOATS:
        with pytest.raises(TypeError):
            xp.result_type(xp.bool, f)
    with pytest.raises(TypeError):
        xp.result_type(xp.bool, xp.int8)
    assert xp.result_type(xp.int8, 1) == xp.int8 and xp.result_type(xp.float32, 1.5) == xp.float32
    assert xp.result_type(xp.float32, 1) == xp.float32 and xp.result_type(xp.bool, True) == xp.bool
    assert xp.result_type(xp.int8, 1.5) == xp.float32
    with pytest.raises(TypeError):
        xp.result_type(xp.bool, 1.5)


def test_can_cast_isdtype_finfo_iinfo():
    assert xp.can_cast(xp.int8, xp.int16) and not xp.can_cast(xp.int16, xp.int8)
    assert not xp.can_cast(xp.float32, xp.int32) and xp.can_cast(xp.float16, xp.float32)
    assert xp.isdtype(xp.int8, "signed integer") and xp.isdtype(xp.uint8, ("bool", "integral"))
    assert not xp.isdtype(xp.float32, "integral") and xp.isdtype(xp.float32, xp.float32)
    with pytest.raises(ValueError):
        xp.isdtype(xp.int8, "whole numbers")
    f = xp.finfo(xp.float32)
    assert (f.bits, f.eps, f.max, f.smallest_normal, f.dtype) == (32, float(np.finfo(np.float32).eps),
                                                                   float(np.finfo(np.float32).max),
                                                                   float(np.finfo(np.float32).tiny), xp.float32)
    i = xp.iinfo(xp.uint16)
    assert (i.bits, i.min, i.max, i.dtype) == (16, 0, 65535, xp.uint16)
    with pytest.raises(ValueError):
        xp.finfo(xp.int8)


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint64", "complex64", "complex128"])
def test_dtypes_webgpu_cannot_hold_raise_naming_them(rt, dtype):
    with pytest.raises(gp.UnsupportedDType, match=dtype) as err:
        xp.asarray(np.zeros(3, dtype))
    assert err.value.dtype == dtype and isinstance(err.value, TypeError)
    with pytest.raises(gp.UnsupportedDType, match=dtype):
        xp.zeros(3, dtype=getattr(xp, dtype))


def test_float16_where_the_runtime_computes_it(rt):
    x = np.array([0.1, 1000.0, -3.5, 65000.0], np.float16)
    if rt.device.is_host or rt.capabilities.has_f16:
        a = xp.asarray(x)
        assert a.dtype == xp.float16
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(np.asarray(a + a), x + x)   # 65000 + 65000 overflows to inf, as NumPy
            np.testing.assert_array_equal(np.asarray(xp.sqrt(a)), np.sqrt(x))
    else:
        with pytest.raises(gp.UnsupportedDType, match="shader-f16"):
            xp.asarray(x)


def test_inspection_names_the_devices_and_dtypes(rt):
    info = xp.__array_namespace_info__()
    assert info.default_device() is rt and rt in info.devices()
    assert info.capabilities()["boolean indexing"] and info.capabilities()["data-dependent shapes"]
    assert info.default_dtypes() == {"real floating": xp.float32, "complex floating": xp.complex64,
                                     "integral": xp.int32, "indexing": xp.int32}
    assert set(info.dtypes()) == {"bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float32"}
    assert set(info.dtypes(kind="unsigned integer")) == {"uint8", "uint16", "uint32"}
    assert xp.__array_api_version__ == "2024.12" and xp.asarray([1.0]).__array_namespace__() is xp
