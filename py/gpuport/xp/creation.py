"""The standard's creation functions. Arrays made from host data (NumPy arrays, Python sequences, DLPack, a
gpuport Tensor's values) start in a host store and go to the device when a call placed there needs them; constant
arrays on a GPU runtime are lazy constants (nothing uploaded); `tril`/`triu` and `meshgrid` are element-wise
expressions of their inputs.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from ..runtime import Runtime
from ..tensor.tensor import Tensor
from . import dtypes as D
from ..errors import UnsupportedDType
from .core import (Array, adopt, concrete, device_runtime, from_host, host_array, lazy, node, now, place, ran,
                   runtime_of, scalar)
from .elementwise import astype
from .graph import Const, Expr, Index, Op, Store, View

Shape = int | Sequence[int]


def shape_of(shape: Shape) -> tuple[int, ...]:
    """A shape argument as a tuple of non-negative ints (TypeError / ValueError naming it)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else tuple(shape)
    try:
        out = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise TypeError(f"a shape is ints, got {shape!r}") from None
    if any(d < 0 for d in out):
        raise ValueError(f"negative dimension in shape {out}")
    return out


def _default_dtype(value: Any) -> np.dtype:
    if isinstance(value, bool):
        return D.bool_
    if isinstance(value, int):
        return D.DEFAULT_INT
    if isinstance(value, float):
        return D.DEFAULT_FLOAT
    if isinstance(value, complex):
        return D.complex64
    raise TypeError(f"expected a Python scalar, got {type(value).__name__}")


def _infer(obj: Any) -> np.dtype:
    """The dtype the standard gives nested Python scalars: bool, else the default integer, else the default float."""
    flat = np.asarray(obj, dtype=object).reshape(-1)
    kinds = {type(v) for v in flat}
    if not kinds <= {bool, int, float, complex}:
        bad = next(t for t in kinds if t not in (bool, int, float, complex))
        raise TypeError(f"asarray: nested sequences of Python scalars only, found {bad.__name__}")
    if complex in kinds:
        return D.complex64
    if float in kinds:
        return D.DEFAULT_FLOAT
    if int in kinds:
        return D.DEFAULT_INT
    return D.bool_


def asarray(obj: Any, /, *, dtype: Any = None, device: Runtime | None = None, copy: bool | None = None) -> Array:
    """An array from an array of the namespace, a NumPy array (or anything with the buffer protocol or DLPack), a
    gpuport Tensor, a Python scalar or nested sequences of them. copy=True copies always; copy=False never (raises
    ValueError where it must); None copies where it must."""
    dt = None if dtype is None else D.dtype_of(dtype)
    if isinstance(obj, Array):
        return _from_array(obj, dt, device, copy)
    rt = runtime_of(device=device)
    if isinstance(obj, Tensor):
        obj = obj.numpy()
    if isinstance(obj, (bool, int, float, complex, list, tuple)):
        want = dt or _infer(obj)
        D.check_held(want, rt)
        if want.kind in "iu" and not isinstance(obj, bool):
            for v in np.asarray(obj, dtype=object).reshape(-1):
                scalar(v, want)   # OverflowError for an int outside the dtype
        if copy is False:
            raise ValueError("asarray(copy=False) of Python scalars: making an array of them is a copy")
        return adopt(rt, np.asarray(obj, dtype=want), want)   # made from Python objects: fresh
    values = np.asarray(obj) if not hasattr(obj, "__dlpack__") or isinstance(obj, np.ndarray) else np.from_dlpack(obj)
    if values.dtype == object:
        raise TypeError(f"asarray: cannot make an array of {type(obj).__name__}")
    want = D.check_held(dt or D.dtype_of(values.dtype), rt)
    if copy is False:
        if values.dtype != want or not values.flags.c_contiguous or not values.flags.writeable:
            raise ValueError("asarray(copy=False): these values need a conversion, so a copy")
        return Array(rt, View.whole(Store(rt, want, values.size, host=values.reshape(-1)), values.shape))
    return from_host(rt, values, want)


def _from_array(x: Array, dt: np.dtype | None, device: Runtime | None, copy: bool | None) -> Array:
    if device is not None and device_runtime(device) is not x.device:
        if copy is False:
            raise ValueError("asarray(copy=False) onto another device is a copy")
        x = x.to_device(device)
    if dt is not None and dt != x.dtype:
        if copy is False:
            raise ValueError(f"asarray(copy=False): {x.dtype} to {dt} is a copy")
        return astype(x, dt)
    if copy:
        return _copy(x)
    return x


def _copy(x: Array) -> Array:
    if isinstance(x._data, Expr):
        return Array(x.device, x._data, x._fused)   # a lazy array shares nothing: the same expression is a copy
    return _fill_like(x, lambda shape: node(x, shape), "copy")


def _fill_like(x: Array, make, name: str) -> Array:
    rt = x.device
    t0 = now()
    decision = place(rt, name, [x], x.shape)
    if decision.on_host:
        y = adopt(rt, np.array(host_array(x, name), order="C", copy=True), x.dtype)
    else:
        y = lazy(rt, make(x.shape), x.shape, 1)
    ran(rt, name, decision, t0, [x])
    return y


def _constant(shape: tuple[int, ...], value: Any, dtype: np.dtype, rt: Runtime) -> Array:
    """A constant array: lazy on a GPU runtime's device (nothing uploaded), NumPy on the host and under auto."""
    D.check_held(dtype, rt)
    if rt.device.is_host or rt.mode == "auto":
        return adopt(rt, np.full(shape, value, dtype=dtype), dtype)
    return lazy(rt, scalar(value, dtype), shape, 0)


def full(shape: Shape, fill_value: bool | int | float | complex, *, dtype: Any = None,
         device: Runtime | None = None) -> Array:
    """An array of `shape` filled with `fill_value` (dtype: given, else the default of the value's kind)."""
    rt = runtime_of(device=device)
    dt = D.dtype_of(dtype) if dtype is not None else _default_dtype(fill_value)
    if isinstance(fill_value, float) and dt.kind in "iub":
        raise TypeError(f"full: a float fill value for a {dt} array")
    return _constant(shape_of(shape), fill_value, dt, rt)


def zeros(shape: Shape, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """An array of zeros (default float32)."""
    return _constant(shape_of(shape), 0, D.dtype_of(dtype) if dtype is not None else D.DEFAULT_FLOAT,
                     runtime_of(device=device))


def ones(shape: Shape, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """An array of ones (default float32)."""
    return _constant(shape_of(shape), 1, D.dtype_of(dtype) if dtype is not None else D.DEFAULT_FLOAT,
                     runtime_of(device=device))


def empty(shape: Shape, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """An array whose values are unspecified (zeros here)."""
    return zeros(shape, dtype=dtype, device=device)


def _like(x: Array, dtype: Any, device: Runtime | None) -> tuple[np.dtype, Runtime]:
    if not isinstance(x, Array):
        raise TypeError(f"expected an array of gpuport.xp, got {type(x).__name__}")
    return (D.dtype_of(dtype) if dtype is not None else x.dtype), runtime_of(x, device=device)


def full_like(x: Array, /, fill_value: bool | int | float | complex, *, dtype: Any = None,
              device: Runtime | None = None) -> Array:
    """An array of x's shape (and dtype, unless given) filled with `fill_value`."""
    dt, rt = _like(x, dtype, device)
    if isinstance(fill_value, float) and dt.kind in "iub":
        raise TypeError(f"full_like: a float fill value for a {dt} array")
    return _constant(x.shape, fill_value, dt, rt)


def zeros_like(x: Array, /, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """Zeros of x's shape (and dtype, unless given)."""
    dt, rt = _like(x, dtype, device)
    return _constant(x.shape, 0, dt, rt)


def ones_like(x: Array, /, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """Ones of x's shape (and dtype, unless given)."""
    dt, rt = _like(x, dtype, device)
    return _constant(x.shape, 1, dt, rt)


def empty_like(x: Array, /, *, dtype: Any = None, device: Runtime | None = None) -> Array:
    """An array of x's shape (and dtype, unless given) whose values are unspecified (zeros here)."""
    return zeros_like(x, dtype=dtype, device=device)


def arange(start: int | float, /, stop: int | float | None = None, step: int | float = 1, *, dtype: Any = None,
           device: Runtime | None = None) -> Array:
    """Evenly spaced values in [start, stop) (NumPy's arange, made on the host)."""
    rt = runtime_of(device=device)
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must not be 0")
    kinds = [type(v) for v in (start, stop, step)]
    dt = D.dtype_of(dtype) if dtype is not None else (D.DEFAULT_FLOAT if float in kinds else D.DEFAULT_INT)
    D.check_held(dt, rt)
    values = np.arange(start, stop, step, dtype=np.float64 if dt.kind == "f" else None)
    return adopt(rt, values.astype(dt), dt)   # fresh: taken as made, not copied again


def linspace(start: int | float, stop: int | float, /, num: int, *, dtype: Any = None,
             device: Runtime | None = None, endpoint: bool = True) -> Array:
    """`num` evenly spaced values from start to stop (computed in float64 on the host, as NumPy does)."""
    rt = runtime_of(device=device)
    if isinstance(start, complex) or isinstance(stop, complex):
        raise UnsupportedDType(D.complex64, "WGSL has no complex types")
    dt = D.check_held(D.dtype_of(dtype) if dtype is not None else D.DEFAULT_FLOAT, rt)
    return adopt(rt, np.linspace(start, stop, operator.index(num), endpoint=endpoint).astype(dt), dt)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
        device: Runtime | None = None) -> Array:
    """Ones on the k-th diagonal of an n_rows x n_cols matrix, zeros elsewhere."""
    rt = runtime_of(device=device)
    dt = D.check_held(D.dtype_of(dtype) if dtype is not None else D.DEFAULT_FLOAT, rt)
    return adopt(rt, np.eye(n_rows, n_cols, k=k, dtype=dt), dt)


def from_dlpack(x: Any, /, *, device: Runtime | None = None, copy: bool | None = None) -> Array:
    """An array from an object with __dlpack__ (NumPy's and other host arrays; ours too)."""
    if isinstance(x, Array):
        return _from_array(x, None, device, copy)
    try:
        values = np.from_dlpack(x) if copy is None else np.from_dlpack(x, copy=copy)
    except (TypeError, RuntimeError) as exc:
        raise BufferError(f"from_dlpack: {exc}") from None
    return asarray(values, device=device, copy=False if copy is False else None)


def _triangle(x: Array, k: int, lower: bool, name: str) -> Array:
    if not isinstance(x, Array) or x.ndim < 2:
        raise ValueError(f"{name} needs an array of at least 2 axes")
    rt = x.device
    t0 = now()
    decision = place(rt, name, [x], x.shape)
    if decision.on_host:
        fn = np.tril if lower else np.triu
        y = adopt(rt, fn(host_array(x, name), k=k), x.dtype)
    else:
        nd = x.ndim
        row = Index(0, (0,) * (nd - 2) + (1, 0))
        col = Index(0, (0,) * (nd - 1) + (1,))
        diff = Op("subtract", (col, row), D.int32)
        keep = Op("less_equal" if lower else "greater_equal", (diff, Const(int(k), D.int32)), D.bool_)
        y = lazy(rt, Op("where", (keep, node(x, x.shape), Const(0, x.dtype)), x.dtype), x.shape, 1 + x._fused)
    ran(rt, name, decision, t0, [x])
    return y


def tril(x: Array, /, *, k: int = 0) -> Array:
    """The lower triangle (on and below the k-th diagonal) of each matrix of x; zeros above."""
    return _triangle(x, operator.index(k), True, "tril")


def triu(x: Array, /, *, k: int = 0) -> Array:
    """The upper triangle (on and above the k-th diagonal) of each matrix of x; zeros below."""
    return _triangle(x, operator.index(k), False, "triu")


def meshgrid(*arrays: Array, indexing: str = "xy") -> list[Array]:
    """Coordinate matrices from 1-D arrays ("xy": Cartesian, "ij": matrix indexing), each a copy."""
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', not {indexing!r}")
    if not arrays:
        return []
    rt = runtime_of(*arrays)
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("meshgrid takes 1-D arrays")
    if len({a.dtype for a in arrays}) > 1:
        raise ValueError("meshgrid takes arrays of one dtype")
    sizes = [a.shape[0] for a in arrays]
    if indexing == "xy" and len(arrays) >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    shape = tuple(sizes)
    out = []
    for i, a in enumerate(arrays):
        axis = (1 if i == 0 else 0 if i == 1 else i) if indexing == "xy" and len(arrays) >= 2 else i
        dims = [1] * len(arrays)
        dims[axis] = a.shape[0]
        view = concrete(a)
        shaped = View(view.store, view.offset, tuple(dims), tuple(view.strides[0] if d == axis else 0
                                                                   for d in range(len(arrays))))
        out.append(_broadcast_copy(rt, shaped, shape))
    return out


def _broadcast_copy(rt: Runtime, view: View, shape: tuple[int, ...]) -> Array:
    src = Array(rt, view)
    t0 = now()
    decision = place(rt, "meshgrid", [src], shape)
    if decision.on_host:
        y = adopt(rt, np.array(np.broadcast_to(host_array(src, "meshgrid"), shape)), view.store.dtype)
    else:
        y = lazy(rt, node(src, shape), shape, 1)
    ran(rt, "meshgrid", decision, t0, [src])
    return y
