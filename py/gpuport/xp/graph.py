"""What an array is made of: stores (flat allocations, on the host, the device or both), strided views of them, and
lazy element-wise expressions over views, which kernels evaluate element by element.

- A `Store` is one flat allocation of n values: its host copy (NumPy) and/or its device buffer (32-bit words), kept
  consistent: a write on one side drops the other. Lazy expressions that read a store are its dependents: an
  in-place write evaluates them first, so they see the values they were made from.
- A `View` is (store, offset, shape, strides), strides in elements (0 broadcasts, negative flips): basic indexing,
  transposes, flips and broadcasts are views, never copies.
- An `Expr` is a tree of nodes over one logical shape: `Load` (a view, broadcast to that shape), `Index` (an affine
  function of the element's coordinates: iota, eye, triangles), `Const` (a scalar, passed as a uniform), `Op` (an
  element-wise function of the table in exprs.py) and `Gather` (another expression read at a computed flat index:
  take, integer indexing, sorted values). Views commute with element-wise functions, so slicing, permuting,
  flipping or broadcasting an expression transforms its leaves and keeps it lazy (`transform`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import hostpool

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..tensor.tensor import Tensor

Shape = tuple[int, ...]
Strides = tuple[int, ...]


def contiguous_strides(shape: Shape) -> Strides:
    """Row-major strides, in elements."""
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def size_of(shape: Shape) -> int:
    return math.prod(shape)


class Store:
    """One flat allocation of `size` values of `dtype` (see the module docstring)."""

    __slots__ = ("rt", "dtype", "size", "host", "tensor", "_dependents", "__weakref__")

    def __init__(self, rt: "Runtime", dtype: np.dtype, size: int, host: np.ndarray | None = None,
                 tensor: "Tensor | None" = None) -> None:
        self.host = host          # flat, C-contiguous, `dtype`; None where only the device has the values
        self.rt, self.dtype, self.size = rt, np.dtype(dtype), int(size)
        self.tensor = tensor      # flat device buffer of 32-bit words; None where only the host has them
        # lazy arrays reading it, by id (arrays are unhashable, as the standard's == is element-wise); made at the
        # first one, as most stores (every host result's) never get one
        self._dependents: "weakref.WeakValueDictionary[int, Any] | None" = None

    def depend(self, array: Any) -> None:
        """Note a lazy array that reads this store (a write evaluates it first)."""
        if self._dependents is None:
            self._dependents = weakref.WeakValueDictionary()
        self._dependents[id(array)] = array

    def dependents(self) -> list[Any]:
        """The lazy arrays reading this store that are still alive."""
        return [] if self._dependents is None else list(self._dependents.values())

    def __del__(self) -> None:
        # its host buffer to the pool (set first in __init__, so a store whose __init__ failed has it too)
        if self.host is not None and self.host.nbytes >= hostpool.MIN_BYTES:
            hostpool.give(self)

    def __repr__(self) -> str:
        where = "+".join(w for w, v in (("host", self.host), ("device", self.tensor)) if v is not None)
        return f"Store({self.size} x {self.dtype}, {where})"


@dataclass(frozen=True, eq=False)
class View:
    """A strided view of a store (strides in elements)."""

    store: Store
    offset: int
    shape: Shape
    strides: Strides

    @classmethod
    def whole(cls, store: Store, shape: Shape) -> "View":
        return cls(store, 0, shape, contiguous_strides(shape))

    @property
    def contiguous(self) -> bool:
        """Row-major without gaps (its element i is at offset + i)."""
        return _is_contiguous(self.shape, self.strides)

    def host_array(self, writeable: bool = False) -> np.ndarray:
        """Its values as a NumPy view of the store's host copy (which must exist)."""
        base = self.store.host
        assert base is not None
        if self.contiguous:
            out = base[self.offset:self.offset + size_of(self.shape)].reshape(self.shape)
        elif size_of(self.shape) == 0:
            out = np.empty(self.shape, base.dtype)
        else:
            item = base.itemsize
            out = np.lib.stride_tricks.as_strided(base[self.offset:], self.shape, [s * item for s in self.strides],
                                                  writeable=writeable)
        if not writeable:
            out = out.view()
            out.flags.writeable = False
        return out


def _is_contiguous(shape: Shape, strides: Strides) -> bool:
    if size_of(shape) <= 1:
        return True
    step = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != step:
            return False
        step *= n
    return True


# -- expression nodes ------------------------------------------------------------------------------------------

class Node:
    """A node of an element-wise expression; `dtype` is what it computes."""

    __slots__ = ("dtype",)


class Load(Node):
    """The value of a view at the element's coordinates (the view has the expression's shape)."""

    __slots__ = ("view",)

    def __init__(self, view: View) -> None:
        self.dtype, self.view = view.store.dtype, view


class Index(Node):
    """offset + sum(coordinate_k * strides_k), an int32 (iota, eye, triangles, flat indices)."""

    __slots__ = ("offset", "strides")

    def __init__(self, offset: int, strides: Strides) -> None:
        self.dtype, self.offset, self.strides = np.dtype(np.int32), int(offset), tuple(int(s) for s in strides)


class Const(Node):
    """A scalar of `dtype` (a uniform: another value reuses the same kernel)."""

    __slots__ = ("value",)

    def __init__(self, value: Any, dtype: np.dtype) -> None:
        self.dtype, self.value = np.dtype(dtype), value


class Op(Node):
    """An element-wise function of the table (exprs.py) applied to its arguments, computing `dtype`."""

    __slots__ = ("name", "args")

    def __init__(self, name: str, args: tuple[Node, ...], dtype: np.dtype) -> None:
        self.dtype, self.name, self.args = np.dtype(dtype), name, tuple(args)


class Gather(Node):
    """`src` (an expression of its own shape) at the flat index `index` computes (an int32 in range)."""

    __slots__ = ("src", "index")

    def __init__(self, src: "Expr", index: Node) -> None:
        self.dtype, self.src, self.index = src.dtype, src, index


@dataclass(frozen=True, eq=False)
class Expr:
    """An element-wise expression over `shape` (see the module docstring)."""

    root: Node
    shape: Shape

    @property
    def dtype(self) -> np.dtype:
        return self.root.dtype

    def stores(self) -> list[Store]:
        """The distinct stores its loads read (a gather's source's included), in first-seen order."""
        found: dict[int, Store] = {}
        for node in walk(self.root):
            if isinstance(node, Load):
                found.setdefault(id(node.view.store), node.view.store)
        return list(found.values())

    def size(self) -> int:
        """Nodes in its tree (a gather's source's included): what bounds a fused kernel's length."""
        return sum(1 for _ in walk(self.root))


def walk(root: Node) -> list[Node]:
    """Every distinct node under `root` (a gather's source included), each once."""
    seen: dict[int, Node] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if isinstance(node, Op):
            todo.extend(node.args)
        elif isinstance(node, Gather):
            todo.extend((node.src.root, node.index))
    return list(seen.values())


def leaf(view: View, shape: Shape) -> Node:
    """A load of `view` broadcast to `shape` (its trailing axes aligned, size-1 axes stretched)."""
    return Load(broadcast_view(view, shape))


def broadcast_view(view: View, shape: Shape) -> View:
    offset, strides = broadcast_map(view.offset, view.shape, view.strides, shape)
    return View(view.store, offset, shape, strides)


def broadcast_map(offset: int, shape: Shape, strides: Strides, to: Shape) -> tuple[int, Strides]:
    """(offset, strides) of a map over `shape` seen over the broadcast shape `to`."""
    lead = len(to) - len(shape)
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {shape} to {to}")
    out = [0] * lead
    for n, s, m in zip(shape, strides, to[lead:]):
        if n == m:
            out.append(s)
        elif n == 1:
            out.append(0)
        else:
            raise ValueError(f"cannot broadcast shape {shape} to {to}")
    return offset, tuple(out)


# -- view transforms: applied to a view, or to every leaf of an expression -----------------------------------------

# (offset, strides) over the old shape -> (offset, strides) over the new one
MapFn = Callable[[int, Strides], tuple[int, Strides]]


@dataclass(frozen=True)
class Transform:
    """A view transform: how a map over `shape` becomes one over `new_shape`."""

    new_shape: Shape
    fn: MapFn

    def view(self, v: View) -> View:
        offset, strides = self.fn(v.offset, v.strides)
        return View(v.store, offset, self.new_shape, strides)

    def expr(self, e: Expr) -> Expr:
        """The expression over the new shape: its loads and indices transformed, its structure kept."""
        memo: dict[int, Node] = {}

        def go(node: Node) -> Node:
            found = memo.get(id(node))
            if found is not None:
                return found
            if isinstance(node, Load):
                out: Node = Load(self.view(node.view))
            elif isinstance(node, Index):
                out = Index(*self.fn(node.offset, node.strides))
            elif isinstance(node, Op):
                out = Op(node.name, tuple(go(a) for a in node.args), node.dtype)
            elif isinstance(node, Gather):
                out = Gather(node.src, go(node.index))
            else:
                out = node
            memo[id(node)] = out
            return out
        return Expr(go(e.root), self.new_shape)


def permute(shape: Shape, axes: tuple[int, ...]) -> Transform:
    return Transform(tuple(shape[a] for a in axes), lambda o, s: (o, tuple(s[a] for a in axes)))


def broadcast(shape: Shape, to: Shape) -> Transform:
    broadcast_map(0, shape, (0,) * len(shape), to)   # raises where it does not broadcast
    return Transform(tuple(to), lambda o, s: broadcast_map(o, shape, s, to))


def flip(shape: Shape, axes: tuple[int, ...]) -> Transform:
    def fn(o: int, s: Strides) -> tuple[int, Strides]:
        for a in axes:
            o += (shape[a] - 1) * s[a] if shape[a] else 0
        return o, tuple(-st if k in axes else st for k, st in enumerate(s))
    return Transform(tuple(shape), fn)


def basic_index(shape: Shape, key: tuple[Any, ...]) -> Transform:
    """Basic indexing: `key` holds ints, slices and None (newaxis) only, one entry per axis it consumes (the caller
    expanded the ellipsis and checked the bounds of the ints)."""
    new_shape: list[int] = []
    plan: list[tuple[str, Any]] = []
    axis = 0
    for k in key:
        if k is None:
            new_shape.append(1)
            plan.append(("new", None))
        elif isinstance(k, slice):
            start, stop, step = k.indices(shape[axis])
            n = len(range(start, stop, step))
            new_shape.append(n)
            plan.append(("slice", (axis, start, step)))
            axis += 1
        else:
            plan.append(("int", (axis, int(k))))
            axis += 1
    for rest in range(axis, len(shape)):
        new_shape.append(shape[rest])
        plan.append(("slice", (rest, 0, 1)))

    def fn(o: int, s: Strides) -> tuple[int, Strides]:
        out = []
        for what, arg in plan:
            if what == "new":
                out.append(0)
            elif what == "slice":
                ax, start, step = arg
                o += start * s[ax]
                out.append(s[ax] * step)
            else:
                ax, i = arg
                o += i * s[ax]
        return o, tuple(out)
    return Transform(tuple(new_shape), fn)


def reshape_strides(shape: Shape, strides: Strides, new: Shape) -> Strides | None:
    """Strides that show a map over `shape` as one over `new` without moving an element (NumPy's no-copy reshape),
    or None where the elements are not laid out for it."""
    if size_of(shape) == 0 or size_of(new) <= 1:
        return contiguous_strides(new)
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    out: list[int] = []
    oi = ni = 0
    new_list = list(new)
    while oi < len(old) and ni < len(new_list):
        if new_list[ni] == 1:
            out.append(0)
            ni += 1
            continue
        # gather old axes and new axes until their products agree
        op, np_ = old[oi][0], new_list[ni]
        oj, nj = oi + 1, ni + 1
        while op != np_:
            if op < np_:
                op *= old[oj][0]
                oj += 1
            else:
                np_ *= new_list[nj]
                nj += 1
        for k in range(oi, oj - 1):   # the old axes merged must be laid out one after the other
            if old[k][1] != old[k + 1][1] * old[k + 1][0]:
                return None
        step = old[oj - 1][1]
        chunk = []
        for k in range(nj - 1, ni - 1, -1):
            chunk.append(step)
            step *= new_list[k]
        out.extend(reversed(chunk))
        oi, ni = oj, nj
    while ni < len(new_list):
        out.append(0)
        ni += 1
    return tuple(out)


def reshape(shape: Shape, strides_of: list[Strides], new: Shape) -> Transform | None:
    """A reshape of maps whose strides are `strides_of` (every leaf of an expression), or None where one of them
    would have to move elements (the caller evaluates it first)."""
    found = []
    for strides in strides_of:
        r = reshape_strides(shape, strides, new)
        if r is None:
            return None
        found.append((strides, r))
    table = {s: r for s, r in found}
    return Transform(tuple(new), lambda o, s: (o, table[tuple(s)]))


def leaf_strides(e: Expr) -> list[Strides]:
    """The strides of every load and index of `e` (not inside a gather's source)."""
    out = []
    seen: set[int] = set()
    todo = [e.root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Load):
            out.append(node.view.strides)
        elif isinstance(node, Index):
            out.append(node.strides)
        elif isinstance(node, Op):
            todo.extend(node.args)
        elif isinstance(node, Gather):
            todo.append(node.index)
    return out
