"""The element-wise code generator: an expression (graph.py) becomes a WGSL function `fn vK(i: u32) -> T` that
computes its element i (row-major over the expression's shape), with the bindings and uniform words it reads.

Every kernel family (kernels.py) calls such functions for its input, so views, broadcasts and fused element-wise
chains reach every kernel without a copy. The WGSL depends only on the expression's structure: shapes, offsets,
strides and scalar values are uniform words, so another shape or value reuses the compiled pipeline. A leaf whose
layout is the expression's own (contiguous, not broadcast) reads element offset + i; a scalar (every stride 0) reads
element offset; any other computes the element's coordinates once and their dot product with its strides. Reads are
clamped to the buffer (naga reads 0 out of bounds, Tint clamps: neither must be relied on).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .dtypes import REPS, Rep
from .exprs import HELPERS, PROVIDES, TABLE
from .graph import Const, Expr, Gather, Index, Load, Node, Op, Store, contiguous_strides, size_of

CAST = "cast"   # an Op of this name converts its argument to the node's dtype (astype)


def uniform(j: int) -> str:
    """The WGSL expression reading uniform word j."""
    return f"p.w[{j // 4}].{'xyzw'[j % 4]}"


def word_of(value: Any, dtype: np.dtype) -> int:
    """A scalar of `dtype` as the u32 word a uniform holds (float16 as the float32 of its value)."""
    rep = REPS[np.dtype(dtype)]
    if rep.word == "f32":
        return int(np.array(value, dtype=np.dtype(dtype)).astype(np.float32).view(np.uint32))
    return int(np.array(value, dtype=np.dtype(dtype)).astype(np.int64)) & 0xFFFFFFFF


class Builder:
    """What one kernel reads: its input stores (in binding order), its uniform words (the kernel family's own
    first: `reserved`), the helpers and value functions its WGSL needs."""

    def __init__(self, reserved: int = 0) -> None:
        self.stores: list[Store] = []
        self._bound: dict[int, int] = {}
        self.words: list[int] = [0] * reserved
        self.helpers: dict[str, str] = {}
        self.functions: list[str] = []
        self.f16 = False

    def binding(self, store: Store) -> int:
        """The binding index of `store` (each store is bound once, however many views read it)."""
        found = self._bound.get(id(store))
        if found is None:
            found = self._bound[id(store)] = len(self.stores)
            self.stores.append(store)
        return found

    def word(self, value: int) -> str:
        """A new uniform word holding `value`; its WGSL expression."""
        self.words.append(int(value) & 0xFFFFFFFF)
        return uniform(len(self.words) - 1)

    def signed(self, value: int) -> str:
        return f"bitcast<i32>({self.word(value)})"

    def need(self, name: str) -> None:
        source, deps = HELPERS[name]
        for dep in deps:
            self.need(dep)
        if name not in self.helpers:
            self.helpers[name] = source
            self.f16 = self.f16 or "f16" in source

    def function(self, expr: Expr) -> str:
        """Emit `fn vK(i: u32) -> T` computing element i of `expr`; returns its name."""
        name = f"v{len(self.functions)}"
        self.functions.append("")   # its slot: gathers emit their sources' functions meanwhile
        self.functions[int(name[1:])] = _Function(self, expr, name).emit()
        return name

    def bindings_wgsl(self) -> str:
        """The input bindings (read-only storage of 32-bit words), in binding order."""
        return "".join(f"@group(0) @binding({k}) var<storage, read> b{k}: array<{REPS[s.dtype].word}>;\n"
                       for k, s in enumerate(self.stores))

    def source(self, outputs: list[tuple[str, str]], body: str, wg: int, workgroup: str = "") -> str:
        """A whole kernel: the inputs, `outputs` ((name, WGSL element type) read_write bindings after them), the
        uniforms, the helpers and functions, `workgroup` variables, and `body` as the entry point's."""
        n = len(self.stores)
        outs = "".join(f"@group(0) @binding({n + k}) var<storage, read_write> {name}: array<{ty}>;\n"
                       for k, (name, ty) in enumerate(outputs))
        words = max(1, -(-len(self.words) // 4))
        return ("enable f16;\n" if self.f16 else "") + self.bindings_wgsl() + outs + \
            f"struct P {{ w: array<vec4<u32>, {words}> }}\n" + \
            f"@group(0) @binding({n + len(outputs)}) var<uniform> p: P;\n" + workgroup + \
            "".join(self.helpers.values()) + "".join(self.functions) + \
            f"@compute @workgroup_size({wg})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, " \
            "@builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, " \
            "@builtin(workgroup_id) wid: vec3<u32>) {\n" + body + "}\n"

    def uniform_bytes(self) -> bytes:
        data = np.array(self.words or [0], dtype=np.uint32).tobytes()
        return data + b"\0" * (-len(data) % 16)


def load_conversion(rep: Rep, raw: str) -> str:
    """A storage word as the dtype's compute type."""
    if rep.compute == "bool":
        return f"({raw} != 0u)"
    if rep.compute == "f16":
        return f"f16({raw})"
    return raw


def store_conversion(rep: Rep, value: str) -> str:
    """A computed value as the dtype's storage word."""
    if rep.compute == "bool":
        return f"select(0u, 1u, {value})"
    if rep.compute == "f16":
        return f"f32({value})"
    return value


def wrap(rep: Rep, value: str) -> str:
    """An integer result wrapped back into an 8- or 16-bit dtype's range (sign-extended for the signed ones)."""
    if rep.compute == "i32" and rep.bits < 32:
        return f"(({value} << {32 - rep.bits}u) >> {32 - rep.bits}u)"
    if rep.compute == "u32" and rep.bits < 32:
        return f"({value} & {hex((1 << rep.bits) - 1)}u)"
    return value


def cast(src: Rep, dst: Rep, value: str) -> str:
    """A value of one dtype's compute type converted to another's (astype: NumPy's conversions, integers wrapping)."""
    if src.compute == dst.compute:
        return wrap(dst, value) if dst.bits < src.bits else value
    zero = {"i32": "0", "u32": "0u", "f32": "0.0", "f16": "0.0h"}
    if dst.compute == "bool":
        return f"({value} != {zero[src.compute]})"
    if src.compute == "bool":
        one = {"i32": "1", "u32": "1u", "f32": "1.0", "f16": "1.0h"}[dst.compute]
        return f"select({zero[dst.compute]}, {one}, {value})"
    if src.compute in ("f32", "f16") and dst.compute in ("i32", "u32") and dst.bits < 32:
        return wrap(dst, f"{dst.compute}(i32({value}))" if dst.compute == "u32" else f"i32({value})")
    return wrap(dst, f"{dst.compute}({value})")


class _Function:
    """One value function's emission (memoised per node: a shared subexpression is computed once)."""

    def __init__(self, builder: Builder, expr: Expr, name: str) -> None:
        self.b, self.expr, self.name = builder, expr, name
        self.lines: list[str] = []
        self.names: dict[Any, str] = {}
        self.coords: list[str] | None = None
        self.flat = contiguous_strides(expr.shape)

    def emit(self) -> str:
        result = self.node(self.expr.root)
        rep = REPS[self.expr.dtype]
        if rep.compute == "f16":
            self.b.f16 = True
        return f"fn {self.name}(i: u32) -> {rep.compute} {{\n" + "".join(self.lines) + f"  return {result};\n}}\n"

    def let(self, ty: str, value: str) -> str:
        name = f"t{len(self.lines)}"
        self.lines.append(f"  let {name}: {ty} = {value};\n")
        return name

    def node(self, node: Node) -> str:
        key: Any = id(node)
        if isinstance(node, Load):   # loads of the same view are one load (x * 2 + x / 3 reads x once)
            key = ("load", id(node.view.store), node.view.offset, node.view.strides)
        found = self.names.get(key)
        if found is None:
            found = self.names[key] = self._emit(node)
        return found

    def _emit(self, node: Node) -> str:
        rep = REPS[node.dtype]
        if isinstance(node, Load):
            k = self.b.binding(node.view.store)
            raw = f"b{k}[min({self.index(node.view.offset, node.view.strides, unsigned=True)}, arrayLength(&b{k}) - 1u)]"
            return self.let(rep.compute, load_conversion(rep, raw))
        if isinstance(node, Index):
            return self.let("i32", self.index(node.offset, node.strides, unsigned=False))
        if isinstance(node, Const):
            raw = self.b.word(word_of(node.value, node.dtype))
            value = {"bool": f"({raw} != 0u)", "i32": f"bitcast<i32>({raw})", "u32": raw,
                     "f32": f"bitcast<f32>({raw})", "f16": f"f16(bitcast<f32>({raw}))"}[rep.compute]
            return self.let(rep.compute, value)
        if isinstance(node, Gather):
            fn = self.b.function(node.src)
            size = self.b.word(max(size_of(node.src.shape), 1) - 1)
            return self.let(rep.compute, f"{fn}(min(u32(max({self.node(node.index)}, 0)), {size}))")
        assert isinstance(node, Op)
        return self.let(rep.compute, self.op(node))

    def op(self, node: Op) -> str:
        args = [self.node(a) for a in node.args]
        out = REPS[node.dtype]
        if node.name == CAST:
            return cast(REPS[node.args[0].dtype], out, args[0])
        spec = TABLE[node.name]
        arg_rep = REPS[node.args[spec.kind_arg].dtype]
        half = arg_rep.compute == "f16"
        template = spec.wgsl["h"] if half and "h" in spec.wgsl else spec.wgsl[arg_rep.kind]
        for fn in re.findall(r"\b(xp_\w+)\(", template):
            self.b.need(PROVIDES[fn])
        if half and spec.widen:
            args = [f"f32({a})" if REPS[n.dtype].compute == "f16" else a for a, n in zip(args, node.args)]
        value = template.format(*args, bits=arg_rep.bits)
        if half and spec.widen and out.compute == "f16":
            value = f"f16({value})"
        return wrap(out, value) if spec.wraps else value

    def index(self, offset: int, strides: tuple[int, ...], unsigned: bool) -> str:
        """offset + coordinates . strides, as u32 (an element of a store) or i32 (an Index node's value)."""
        ndim = len(strides)
        if all(s == 0 for s in strides) or ndim == 0:
            base = self.b.word(offset)
            return base if unsigned else f"bitcast<i32>({base})"
        if self._is_flat(strides):
            base = self.b.word(offset)
            return f"({base} + i)" if unsigned else f"(bitcast<i32>({base}) + i32(i))"
        coords = self.coordinates()
        terms = [self.b.signed(offset)] + [f"i32({c}) * {self.b.signed(s)}" for c, s in zip(coords, strides)]
        value = " + ".join(terms)
        return f"u32({value})" if unsigned else f"({value})"

    def _is_flat(self, strides: tuple[int, ...]) -> bool:
        return all(s == f or n == 1 for s, f, n in zip(strides, self.flat, self.expr.shape))

    def coordinates(self) -> list[str]:
        """The element's coordinates, computed once per function (shape words read once)."""
        if self.coords is None:
            shape = self.expr.shape
            lines = ["  var r = i;\n"]
            coords = [""] * len(shape)
            for axis in range(len(shape) - 1, 0, -1):
                n = self.b.word(shape[axis])
                lines.append(f"  let c{axis} = r % {n};\n  r = r / {n};\n")
                coords[axis] = f"c{axis}"
            lines.append("  let c0 = r;\n")
            coords[0] = "c0"
            self.lines[:0] = lines
            self.coords = coords
        return self.coords
