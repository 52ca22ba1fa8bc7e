"""The array object and what every function of the namespace does with it: find its runtime, ask placement where a
call runs, give the device an expression node or the host a NumPy view, keep lazy chains within what one kernel
may bind, and count what ran.

An `Array` holds a `View` (values in a store) or an `Expr` (lazy, on the device). Its operators call the namespace's
functions, which the package binds here once it has imported them (`bind`): the functions import this module, so
this module cannot import them.
"""

from __future__ import annotations

import atexit
import math
import operator
import time
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import UnsupportedFeature
from ..platform import IN_PYODIDE
from ..runtime import Runtime, open_sync
from ..types import Decision, Operand
from . import dtypes as D
from .device import evaluate, max_inputs, stats
from .graph import Const, Expr, Load, Node, Store, View, broadcast, broadcast_view
from .reads import view_values, wait

MAX_NODES = 64          # nodes of one fused expression: past it the chain is evaluated (the kernel stays short)
API_VERSIONS = ("2021.12", "2022.12", "2023.12", "2024.12")
NS = SimpleNamespace()  # the namespace's functions, bound by the package (see the module docstring)
_DEFAULT: list[Runtime] = []


def bind(**functions: Any) -> None:
    """Give the array object the namespace's functions (its operators call them)."""
    vars(NS).update(functions)


def use(rt: Runtime) -> Runtime:
    """Make `rt` the default device: where arrays go when a function is given none."""
    if not isinstance(rt, Runtime):
        raise TypeError(f"xp.use takes a gpuport Runtime (from gpuport.open), got {type(rt).__name__}")
    _DEFAULT[:] = [rt]
    return rt


def default_runtime() -> Runtime:
    """The default device: the one `use` named, else (natively) a runtime opened with backend="auto" on first need."""
    if _DEFAULT and not _DEFAULT[0].closed:
        return _DEFAULT[0]
    if IN_PYODIDE:
        raise UnsupportedFeature("gpuport.xp has no default device in a page (opening one awaits the browser): "
                                 "`xp.use(await gpuport.open())` first, or pass device=rt")
    rt = open_sync()
    # the namespace's own runtime: closed at exit, which stores what auto learned in it (a process that never
    # closes one keeps its selector's stale record for good: docs/tiers.md)
    atexit.register(rt.close)
    return use(rt)


def runtime_of(*xs: Any, device: Any = None) -> Runtime:
    """The runtime of the arrays among `xs` (ValueError where they differ), else `device`, else the default."""
    rts = {id(x._rt): x._rt for x in xs if isinstance(x, Array)}
    if len(rts) > 1:
        raise ValueError("arrays on different devices (gpuport runtimes): move one with x.to_device(...)")
    if device is not None:
        dev = device_runtime(device)
        if rts and dev is not next(iter(rts.values())):
            raise ValueError("device= differs from the arrays' device")
        return dev
    if rts:
        return next(iter(rts.values()))
    return default_runtime()


def device_runtime(device: Any) -> Runtime:
    """A `device=` argument as a runtime (a Runtime, or "cpu"... not: the namespace's devices are runtimes)."""
    if isinstance(device, Runtime):
        device.check_open()
        return device
    raise ValueError(f"device must be a gpuport Runtime (xp.__array_namespace_info__().devices()), got {device!r}")


class Array:
    """An array of the namespace: its values in a store (a view) or, on the device, a lazy expression."""

    __slots__ = ("_rt", "_data", "_fused", "__weakref__")
    __hash__ = None   # type: ignore[assignment]

    def __init__(self, rt: Runtime, data: View | Expr, fused: int = 0) -> None:
        self._rt, self._data, self._fused = rt, data, fused
        if isinstance(data, Expr):
            for store in data.stores():
                store.depend(self)

    # -- attributes ----------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The data type."""
        return self._data.store.dtype if isinstance(self._data, View) else self._data.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape."""
        return self._data.shape

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self._data.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self._data.shape)

    @property
    def device(self) -> Runtime:
        """The runtime the array belongs to."""
        return self._rt

    @property
    def T(self) -> "Array":
        """The transpose of a 2-D array."""
        if self.ndim != 2:
            raise ValueError(f"x.T is for 2-D arrays; this one has shape {self.shape}: use xp.permute_dims")
        return NS.permute_dims(self, (1, 0))

    @property
    def mT(self) -> "Array":
        """The transpose of each matrix of a stack (the last two axes swapped)."""
        return NS.matrix_transpose(self)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        """The namespace (gpuport.xp)."""
        if api_version is not None and api_version not in API_VERSIONS:
            raise ValueError(f"api_version {api_version!r} is not one of {API_VERSIONS}")
        return NS.namespace

    def to_device(self, device: Runtime, /, *, stream: Any = None) -> "Array":
        """The array on another runtime (copied through the host), or itself on its own."""
        if stream is not None:
            raise ValueError("to_device: streams are not a gpuport concept (pass stream=None)")
        rt = device_runtime(device)
        if rt is self._rt:
            return self
        return from_host(rt, host_array(self, "x.to_device()"), self.dtype)

    # -- synchronous reads (one function: reads.wait) and their async twin, xp.read ---------------------------------
    def _scalar(self, what: str) -> Any:
        if self.ndim != 0:
            raise TypeError(f"{what} needs a 0-D array, not one of shape {self.shape}")
        return host_array(self, what)[()].item()

    def __bool__(self) -> bool:
        return bool(self._scalar("bool(x)"))

    def __int__(self) -> int:
        if self.dtype.kind == "c":
            raise TypeError("int() of a complex array")
        return int(self._scalar("int(x)"))

    def __float__(self) -> float:
        if self.dtype.kind == "c":
            raise TypeError("float() of a complex array")
        return float(self._scalar("float(x)"))

    def __complex__(self) -> complex:
        return complex(self._scalar("complex(x)"))

    def __index__(self) -> int:
        if self.dtype.kind not in "iu":
            raise TypeError(f"x.__index__ needs an integer array, not {self.dtype}")
        return operator.index(self._scalar("operator.index(x)"))

    def item(self) -> Any:
        """The one element as a Python scalar (a synchronous read; `(await xp.read(x)).item()` in a page)."""
        if self.size != 1:
            raise ValueError(f"item() needs an array of one element, not of shape {self.shape}")
        return host_array(self, "x.item()").reshape(())[()].item()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("np.asarray(x, copy=False): gpuport.xp arrays are copied to NumPy on the host")
        values = np.array(host_array(self, "np.asarray(x)"), copy=True)
        return values if dtype is None else values.astype(dtype)

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """A DLPack capsule of the values on the host: the array's own host copy of its store (read back once where
        only the GPU had them; shared, not copied again, unless copy=True)."""
        if dl_device is not None and tuple(dl_device) != (1, 0):
            raise BufferError(f"gpuport.xp exports to the host only (DLPack device (1, 0)), not {dl_device}")
        host_array(self, "x.__dlpack__()")
        values = self._data.host_array(writeable=True)
        if copy:
            values = np.array(values, copy=True)
        kwargs = {} if max_version is None else {"max_version": max_version}
        return values.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        """(1, 0): DLPack's CPU; the values are exported through the host."""
        return (1, 0)

    # -- indexing, iteration, representation ------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> "Array":
        return NS.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        NS.setitem(self, key, value)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-D array")
        return self.shape[0]

    def __iter__(self) -> Iterator["Array"]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-D array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        state = "lazy" if isinstance(self._data, Expr) else repr(self._data.store)
        return f"Array(shape={self.shape}, dtype={self.dtype}, {state}, device={self._rt!r})"

    # -- operators ------------------------------------------------------------------------------------------------
    def _inplace(self, name: str, other: Any) -> "Array":
        result = getattr(NS, name)(self, other)
        if result.dtype != self.dtype or result.shape != self.shape:
            raise ValueError(f"in-place {name} would change {self.dtype} {self.shape} to {result.dtype} "
                             f"{result.shape}: the standard forbids it")
        if isinstance(self._data, Expr):   # nothing can alias a lazy array: rebinding is the write
            self._data, self._fused = result._data, result._fused
            for store in result._data.stores() if isinstance(result._data, Expr) else ():
                store.depend(self)
        else:
            NS.setitem(self, (...,), result)
        return self


def _binary(name: str, reflected: bool = False, inplace: bool = False):
    if inplace:
        return lambda self, other: self._inplace(name, other)
    if reflected:
        return lambda self, other: getattr(NS, name)(other, self)
    return lambda self, other: getattr(NS, name)(self, other)


for _dunder, _fn in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"),
                     ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "pow"), ("and", "bitwise_and"),
                     ("or", "bitwise_or"), ("xor", "bitwise_xor"), ("lshift", "bitwise_left_shift"),
                     ("rshift", "bitwise_right_shift"), ("matmul", "matmul")):
    setattr(Array, f"__{_dunder}__", _binary(_fn))
    setattr(Array, f"__r{_dunder}__", _binary(_fn, reflected=True))
    setattr(Array, f"__i{_dunder}__", _binary(_fn, inplace=True))
for _dunder, _fn in (("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                     ("ge", "greater_equal")):
    setattr(Array, f"__{_dunder}__", _binary(_fn))
for _dunder, _fn in (("neg", "negative"), ("pos", "positive"), ("abs", "abs"), ("invert", "bitwise_invert")):
    setattr(Array, f"__{_dunder}__", (lambda fn: lambda self: getattr(NS, fn)(self))(_fn))


# -- what functions do with arrays -------------------------------------------------------------------------------

def concrete(x: Array) -> View:
    """x's values in a store (a lazy array is evaluated now: one dispatch)."""
    if isinstance(x._data, Expr):
        x._data = evaluate(x._rt, x._data, x._fused)
        x._fused = 0
    return x._data


def host_array(x: Array, what: str) -> np.ndarray:
    """x's values as a read-only NumPy array (a synchronous read where only the device has them)."""
    view = concrete(x)
    if view.store.host is not None:   # held on the host: no read to drive (a host-placed op's every operand)
        return view.host_array()
    return wait(lambda blocking: view_values(view, blocking), x._rt, what)


async def values(x: Array, blocking: bool) -> np.ndarray:
    """x's values as a read-only NumPy array, awaited: what the data-dependent functions' coroutines read."""
    return await view_values(concrete(x), blocking)


async def read(x: Array) -> np.ndarray:
    """x's values as a NumPy array: the async twin of every synchronous read (float(x), bool(x), x.item(),
    np.asarray(x)); in a page, where the GPU cannot be waited on synchronously, this is how values come back."""
    if not isinstance(x, Array):
        raise TypeError(f"xp.read takes an array of gpuport.xp, got {type(x).__name__}")
    view = concrete(x)
    return np.array(await view_values(view, False), copy=True)


def node(x: Array, shape: tuple[int, ...]) -> Node:
    """x as an expression node over `shape` (broadcast to it)."""
    data = x._data
    if isinstance(data, View):
        return Load(broadcast_view(data, shape))
    return data.root if data.shape == tuple(shape) else broadcast(data.shape, shape).expr(data).root


def scalar(value: Any, dtype: np.dtype) -> Const:
    """A Python scalar as a node of `dtype` (OverflowError where an int is outside its range)."""
    if dtype.kind in "iu" and not isinstance(value, bool):
        info = np.iinfo(dtype)
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"Python int {value} is outside the range of {dtype}")
    return Const(np.array(value, dtype=dtype)[()].item() if dtype.kind != "f" else float(value), dtype)


def operand(x: Array) -> Operand:
    """x as placement weighs it: where its values are."""
    data = x._data
    if isinstance(data, Expr):
        return Operand(x.shape, False, False)
    store = data.store
    return Operand(x.shape, store.tensor is None, store.host is not None)


def place(rt: Runtime, name: str, xs: Sequence[Array], out_shape: tuple[int, ...]) -> Decision:
    """Where the call `name` runs (rt.placement: the selector under auto, the backend otherwise)."""
    return rt.placement.array(f"xp.{name}", [operand(x) for x in xs], tuple(out_shape))


def ran(rt: Runtime, name: str, decision: Decision, t0: float, xs: Sequence[Array], dispatches: int = 0) -> None:
    """Count the call where it ran (rt.info()["ran"] as xp.<name>)."""
    rt.placement.ran(f"xp.{name}", decision, t0, [x.shape for x in xs], dispatches)


def dispatched(rt: Runtime) -> int:
    """Dispatches the namespace has made on rt so far (to count a call's)."""
    return sum(stats(rt).dispatches.values())


def from_host(rt: Runtime, values: np.ndarray, dtype: np.dtype | None = None) -> Array:
    """An array holding (a copy of, where it must) host values, of `dtype` (checked: the runtime must hold it)."""
    values = np.asarray(values)
    dt = D.check_held(D.dtype_of(dtype if dtype is not None else values.dtype), rt)
    flat = np.array(values, dtype=dt, order="C", copy=True).reshape(-1)
    return Array(rt, View.whole(Store(rt, dt, flat.size, host=flat), values.shape))


def adopt(rt: Runtime, values: Any, dtype: np.dtype, owned: bool = False) -> Array:
    """An array of host values a NumPy call just made (taken without a copy where they are fresh, C-contiguous and
    of `dtype`; `owned`: the caller vouches that nothing else holds them, as of a buffer from the host pool)."""
    values = np.asarray(values)
    fresh = values.dtype == dtype and values.flags.c_contiguous and (owned or values.flags.owndata)
    flat = values.reshape(-1) if fresh else np.array(values, dtype=dtype, order="C", copy=True).reshape(-1)
    return Array(rt, View.whole(Store(rt, dtype, flat.size, host=flat), values.shape))


def fit(rt: Runtime, xs: Sequence[Array], spare: int = 0) -> None:
    """Evaluate lazy operands, the largest first, until one kernel can bind every store they read together and
    `spare` more (what the caller's kernel binds beside them)."""
    while True:
        stores: dict[int, Store] = {}
        for x in xs:
            for s in ([x._data.store] if isinstance(x._data, View) else x._data.stores()):
                stores[id(s)] = s
        pending = [x for x in xs if isinstance(x._data, Expr)]
        if len(stores) + spare <= max_inputs(rt) or not pending:
            return
        concrete(max(pending, key=lambda x: len(x._data.stores())))


def lazy(rt: Runtime, root: Node, shape: tuple[int, ...], fused: int) -> Array:
    """A lazy device array over stores a kernel can bind together (`fit`); evaluated at once where it grows past
    MAX_NODES, so one fused kernel stays short."""
    expr = Expr(root, tuple(shape))
    if expr.size() > MAX_NODES:
        return Array(rt, evaluate(rt, expr, fused))
    return Array(rt, expr, fused)


def now() -> float:
    return time.perf_counter()
