"""Lineage: how recovery rebuilds a tensor after a device loss, and what a tensor that cannot be rebuilt
holds instead of a buffer.

A tensor's lineage is one of: `Leaf` (host values), `Recipe` (an op call over its inputs' lineages, so
intermediates are replayed, never kept), `View` (a reshape of another lineage), `Fresh` (an allocation nobody
wrote yet) or `Lost` (no way back: a user kernel wrote it, or only the old device had its values). A tensor
whose lineage is Lost when its device dies gets storage.Lost: every later use raises TensorLost naming why.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Leaf:
    """Host values (the array a tensor was made from, or a host-resident result)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class Recipe:
    """One op call over its inputs' lineage: enough to recompute an op output on a new device."""

    __slots__ = ("op", "names", "inputs", "out_shape", "attrs")

    def __init__(self, op: str, names: tuple[str, ...], inputs: list[Any], out_shape: tuple[int, ...],
                 attrs: dict[str, Any]) -> None:
        self.op, self.names, self.inputs, self.out_shape, self.attrs = op, names, inputs, out_shape, attrs

    @classmethod
    def of(cls, call: Any) -> "Recipe":
        """The recipe of an op call (kernels.OpCall) whose inputs are Tensors."""
        return cls(call.op, call.names, [None if t is None else t.lineage() for t in call.inputs], call.out_shape,
                   dict(call.attrs))


class View:
    """A reshape of another lineage."""

    __slots__ = ("source", "shape")

    def __init__(self, source: Any, shape: tuple[int, ...]) -> None:
        self.source, self.shape = source, shape


class Fresh:
    """An uninitialised tensor (rt.empty) nobody wrote yet: a new allocation is as good as the old."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, dtype


class Lost:
    """No way to rebuild, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Lost({self.reason!r})"


def lost_reason(spec: Any) -> str | None:
    """Why a lineage cannot be replayed, or None when it can (iterative: lineages can be deep)."""
    stack, seen = [spec], set()
    while stack:
        s = stack.pop()
        if s is None or id(s) in seen:
            continue
        seen.add(id(s))
        if isinstance(s, Lost):
            return s.reason
        if isinstance(s, Recipe):
            stack.extend(s.inputs)
        elif isinstance(s, View):
            stack.append(s.source)
    return None
