"""The namespace's data types: the standard's dtype objects (NumPy's, as CuPy's are), its type promotion, the data
type functions (`isdtype`, `result_type`, `can_cast`, `finfo`, `iinfo`), and how each dtype lives on a GPU.

WebGPU holds 32-bit words: bool and the 8- and 16-bit integers are stored widened to a 32-bit word (the generated
kernels wrap their results back into range, so overflow wraps as NumPy's does), float16 is stored as float32 and
computed as float16 where the adapter has shader-f16. 64-bit and complex types have no WGSL type: naming them is
fine (`xp.float64` exists, `result_type` and `finfo` answer for it), making an array of one raises UnsupportedDType.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnsupportedDType

if TYPE_CHECKING:
    from ..runtime import Runtime

bool_ = np.dtype(np.bool_)
int8, int16, int32, int64 = (np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
uint8, uint16, uint32, uint64 = (np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
float16, float32, float64 = (np.dtype(t) for t in (np.float16, np.float32, np.float64))
complex64, complex128 = np.dtype(np.complex64), np.dtype(np.complex128)

SIGNED = (int8, int16, int32, int64)
UNSIGNED = (uint8, uint16, uint32, uint64)
FLOATS = (float16, float32, float64)
COMPLEX = (complex64, complex128)
ALL = (bool_, *SIGNED, *UNSIGNED, *FLOATS, *COMPLEX)
# What an array may hold (float16 only where the runtime computes it: NumPy, or an adapter with shader-f16)
HELD = (bool_, int8, int16, int32, uint8, uint16, uint32, float16, float32)
DEFAULT_FLOAT, DEFAULT_INT, DEFAULT_INDEX = float32, int32, int32

KINDS = {
    "bool": (bool_,), "signed integer": SIGNED, "unsigned integer": UNSIGNED, "integral": SIGNED + UNSIGNED,
    "real floating": FLOATS, "complex floating": COMPLEX, "numeric": SIGNED + UNSIGNED + FLOATS + COMPLEX,
}


@dataclass(frozen=True)
class Rep:
    """How a dtype lives in a kernel: its storage word ("f32", "i32", "u32"), the WGSL type values are computed in
    ("bool", "i32", "u32", "f32", "f16"), and its width in bits (the generated code wraps 8- and 16-bit integers)."""

    word: str
    compute: str
    bits: int

    @property
    def kind(self) -> str:
        """"b", "i", "u" or "f" (f16 computes as a float too)."""
        return {"bool": "b", "i32": "i", "u32": "u"}.get(self.compute, "f")


REPS = {
    bool_: Rep("u32", "bool", 1), int8: Rep("i32", "i32", 8), int16: Rep("i32", "i32", 16), int32: Rep("i32", "i32", 32),
    uint8: Rep("u32", "u32", 8), uint16: Rep("u32", "u32", 16), uint32: Rep("u32", "u32", 32),
    float16: Rep("f32", "f16", 16), float32: Rep("f32", "f32", 32),
}
WORDS = {"f32": float32, "i32": int32, "u32": uint32}


def dtype_of(dtype: Any) -> np.dtype:
    """`dtype` as one of the standard's dtype objects (TypeError for anything else, e.g. a NumPy-only type)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{dtype!r} is not a data type of the array API standard") from None
    if dt not in ALL:
        raise TypeError(f"{dt} is not a data type of the array API standard")
    return dt


def check_held(dtype: np.dtype, rt: "Runtime") -> np.dtype:
    """`dtype` where `rt` can hold arrays of it; UnsupportedDType naming it otherwise."""
    if dtype in (int64, uint64, float64):
        raise UnsupportedDType(dtype, f"WebGPU has no 64-bit types (WGSL has no i64, u64 or f64); use "
                                      f"{ {int64: 'int32', uint64: 'uint32', float64: 'float32'}[dtype]}")
    if dtype in COMPLEX:
        raise UnsupportedDType(dtype, "WGSL has no complex types and gpuport.xp does not emulate them")
    if dtype == float16 and not rt.device.is_host and not rt.capabilities.has_f16:
        raise UnsupportedDType(dtype, f"float16 needs an adapter with shader-f16; this one ({rt.backend}, tier "
                                      f"{rt.tier!r}) lacks it: use float32")
    if dtype not in HELD:
        raise TypeError(f"{dtype} is not a data type of the array API standard")
    return dtype


def kind(dtype: np.dtype) -> str:
    """"b" (bool), "i", "u", "f" (real floating) or "c" (complex)."""
    return {"b": "b", "i": "i", "u": "u", "f": "f", "c": "c"}[dtype.kind]


def isdtype(dtype: Any, kind: str | np.dtype | tuple[Any, ...]) -> bool:
    """Whether `dtype` is of `kind`: a dtype, a kind name ("bool", "signed integer", "unsigned integer",
    "integral", "real floating", "complex floating", "numeric") or a tuple of them."""
    dtype = dtype_of(dtype)
    if isinstance(kind, tuple):
        return any(isdtype(dtype, k) for k in kind)
    if isinstance(kind, str):
        if kind not in KINDS:
            raise ValueError(f"isdtype: unknown kind {kind!r}; kinds are {sorted(KINDS)}")
        return dtype in KINDS[kind]
    return dtype == dtype_of(kind)


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """The standard's promotion of two dtypes (TypeError for bool with a number, which it forbids; an integer with a
    float, which it leaves unspecified, gives the float)."""
    if a == b:
        return a
    ka, kb = kind(a), kind(b)
    if "b" in (ka, kb):
        raise TypeError(f"no type promotion between {a} and {b}: bool promotes only with bool")
    if ka in "iu" and kb in "iu":
        if ka == kb:
            return a if a.itemsize >= b.itemsize else b
        signed, unsigned = (a, b) if ka == "i" else (b, a)
        if unsigned.itemsize < signed.itemsize:
            return signed
        if unsigned.itemsize == 8:
            raise TypeError(f"no type promotion between {a} and {b}: no signed integer holds every uint64")
        return np.dtype(f"int{unsigned.itemsize * 16}")
    if ka in "iu" or kb in "iu":
        # the standard leaves integers with floats unspecified; as PyTorch, the float's dtype (NumPy would widen
        # to float64, which WebGPU cannot hold), so NumPy-minded code (scikit-learn's) runs
        return b if ka in "iu" else a
    size = max(_precision(a), _precision(b))
    if "c" in (ka, kb):
        return complex64 if size <= 4 else complex128
    return {2: float16, 4: float32, 8: float64}[size]


def _precision(dt: np.dtype) -> int:
    """Bytes of one real component."""
    return dt.itemsize // 2 if dt.kind == "c" else dt.itemsize


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    """The dtype the standard's promotion gives these arrays, dtypes and (2024.12) Python scalars: scalars take
    the arrays' dtype where they fit its kind (bool for bool, int for integers and floats, float for floats)."""
    dtypes = tuple(x if isinstance(x, np.dtype) else x.dtype for x in arrays_and_dtypes
                   if not isinstance(x, (bool, int, float, complex)))
    # every element-wise call asks: dtypes are checked and promoted once per combination (anything else by dtype_of)
    out = (_promoted if all(isinstance(d, np.dtype) for d in dtypes) else _promote)(dtypes)
    for s in arrays_and_dtypes:
        if isinstance(s, (bool, int, float, complex)):
            out = scalar_dtype(s, out)
    return out


def _promote(dtypes: tuple[Any, ...]) -> np.dtype:
    """The standard's promotion of these dtypes (each checked by dtype_of)."""
    if not dtypes:
        raise ValueError("result_type: at least one array or dtype is needed")
    out = dtype_of(dtypes[0])
    for dt in dtypes[1:]:
        out = promote(out, dtype_of(dt))
    return out


_promoted = functools.lru_cache(maxsize=1024)(_promote)   # bounded: concat's keys grow with its number of arrays


def scalar_dtype(value: bool | int | float | complex, dtype: np.dtype) -> np.dtype:
    """The dtype a Python scalar takes beside an array of `dtype` (TypeError for a number with a bool array; a float
    with an integer array, unspecified by the standard, gives the default float)."""
    k = kind(dtype)
    if isinstance(value, bool):
        if k != "b":
            raise TypeError(f"a Python bool mixes only with bool arrays, not {dtype}")
        return dtype
    if isinstance(value, int):
        if k == "b":
            raise TypeError("a Python int does not mix with a bool array")
        return dtype
    if isinstance(value, float):
        if k == "b":
            raise TypeError("a Python float does not mix with a bool array")
        return DEFAULT_FLOAT if k in "iu" else dtype   # with integers: unspecified by the standard; the default float
    if k in "iub":
        raise TypeError(f"a Python complex does not mix with a {dtype} array")
    return dtype if k == "c" else (complex64 if dtype.itemsize <= 4 else complex128)


def can_cast(from_: Any, to: Any) -> bool:
    """Whether `from_` (a dtype or an array) casts to `to` under the standard's promotion rules."""
    src = dtype_of(from_ if isinstance(from_, np.dtype) else getattr(from_, "dtype", from_))
    dst = dtype_of(to)
    if src == dst:
        return True
    try:
        return promote(src, dst) == dst
    except TypeError:
        return False


@dataclass(frozen=True)
class finfo_object:
    """Machine limits of a floating-point dtype, as Python floats."""

    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: np.dtype


@dataclass(frozen=True)
class iinfo_object:
    """Machine limits of an integer dtype, as Python ints."""

    bits: int
    max: int
    min: int
    dtype: np.dtype


def _type_of(type: Any) -> np.dtype:
    return dtype_of(type if isinstance(type, np.dtype) or not hasattr(type, "dtype") else type.dtype)


def finfo(type: Any) -> finfo_object:
    """Limits of a floating-point dtype (or an array's); for a complex one, those of its real component."""
    dt = _type_of(type)
    if dt.kind not in "fc":
        raise ValueError(f"finfo: {dt} is not a floating-point dtype")
    f = np.finfo(dt)
    real = np.dtype(f.dtype)
    return finfo_object(int(f.bits), float(f.eps), float(f.max), float(f.min), float(f.smallest_normal),
                        real if dt.kind == "f" else dt)


def iinfo(type: Any) -> iinfo_object:
    """Limits of an integer dtype (or an array's)."""
    dt = _type_of(type)
    if dt.kind not in "iu":
        raise ValueError(f"iinfo: {dt} is not an integer dtype")
    i = np.iinfo(dt)
    return iinfo_object(int(i.bits), int(i.max), int(i.min), dt)


def word_values(values: np.ndarray) -> np.ndarray:
    """Host values as the 32-bit words a device buffer holds (C-contiguous)."""
    rep = REPS[values.dtype]
    return np.ascontiguousarray(values, dtype=WORDS[rep.word])


def from_words(words: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A device buffer's words back as values of `dtype` (exact: the kernels kept every word in range)."""
    if dtype == bool_:
        return words != 0
    return words.astype(dtype, copy=False)
