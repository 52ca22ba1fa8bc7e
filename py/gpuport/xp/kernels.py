"""The parameterised kernel families beside the element-wise one (device.evaluate): reductions, scans, a bitonic
sort, writes into a view (in-place `__setitem__`), and the product for the dtypes gpuport's tuned float32 matmul
does not take. Each reads its input through a generated value function (codegen.py), so a view or a fused
element-wise chain feeds it without a copy.

Portability (naga and Tint): every barrier is at the top level of the entry point or of a loop whose bounds are
uniform (the workgroup size, uniform words); no pointer parameters; reads and writes are guarded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .codegen import Builder, store_conversion, wrap
from .device import flat_groups, max_groups, new_store, run, thread_index, workgroup_size
from .dtypes import REPS, Rep
from ..ops.kernels import grid
from .graph import Expr, Index, Load, Store, View, size_of

if TYPE_CHECKING:
    from ..runtime import Runtime

# combine(a, v) per reduction, by the accumulator's kind ("f" floats, "i"/"u" integers, "b" bools as u32)
COMBINE = {
    "sum": {"f": "{a} + {v}", "i": "{a} + {v}", "u": "{a} + {v}"},
    "prod": {"f": "{a} * {v}", "i": "{a} * {v}", "u": "{a} * {v}"},
    "max": {"f": "xp_maximum({a}, {v})", "i": "max({a}, {v})", "u": "max({a}, {v})"},
    "min": {"f": "xp_minimum({a}, {v})", "i": "min({a}, {v})", "u": "min({a}, {v})"},
    "any": {"b": "({a} | {v})"},
    "all": {"b": "({a} & {v})"},
}
SPLIT_AT = 8192   # a row longer than this, over few rows, is reduced in two passes (chunks, then their results)


def _identity(op: str, rep: Rep) -> str:
    k = rep.kind
    if op in ("sum", "any"):
        return {"f": "0.0", "i": "0", "u": "0u", "b": "0u"}[k]
    if op in ("prod", "all"):
        return {"f": "1.0", "i": "1", "u": "1u", "b": "1u"}[k]
    if k == "f":
        return "-xp_inf()" if op == "max" else "xp_inf()"
    lo, hi = (-(1 << 31), (1 << 31) - 1) if k == "i" else (0, 0xFFFFFFFF)
    value = lo if op == "max" else hi
    return f"bitcast<i32>({value & 0xFFFFFFFF}u)" if k == "i" else f"{value}u"


def accumulator(op: str, dtype: np.dtype) -> Rep:
    """The type a reduction accumulates in: f32 for floats (float16's too), 32-bit integers, u32 for bools."""
    rep = REPS[dtype]
    if rep.kind == "b":
        return Rep("u32", "u32", 32)
    if rep.kind == "f":
        return Rep("f32", "f32", 32)
    return Rep(rep.word, rep.compute, 32)


def _value(rep: Rep, acc: Rep, call: str) -> str:
    """An input value as the accumulator's type."""
    if rep.compute == "bool":
        return f"select(0u, 1u, {call})"
    return f"f32({call})" if rep.compute == "f16" else call


def reduce(rt: "Runtime", expr: Expr, rows: int, length: int, op: str) -> tuple[Store, Store | None]:
    """Reduce `expr` (its elements as `rows` rows of `length`, row-major) row by row with `op` (sum, prod, max, min,
    any, all; argmax and argmin give (values, int32 indices)). The values store holds the accumulator's type
    (`accumulator`): the caller casts it to the result dtype, lazily."""
    arg = op in ("argmax", "argmin")
    acc = accumulator("max" if arg else op, expr.dtype)
    chunks = 1
    if rows < 64 and length > SPLIT_AT:
        chunks = min(1024, math.ceil(length / 2048))
    piece = math.ceil(length / chunks) if length else 0
    values, index = _reduce_pass(rt, expr, None, rows, length, chunks, piece, op, acc)
    if chunks == 1:
        return values, index
    partial = Expr(Load(View.whole(values, (rows, chunks))), (rows, chunks))
    partial_index = None if index is None else Expr(Load(View.whole(index, (rows, chunks))), (rows, chunks))
    return _reduce_pass(rt, partial, partial_index, rows, chunks, 1, chunks, op, acc)


def _reduce_pass(rt: "Runtime", expr: Expr, payload: Expr | None, rows: int, length: int, chunks: int, piece: int,
                 op: str, acc: Rep) -> tuple[Store, Store | None]:
    """One pass: a workgroup per (row, chunk) reduces `piece` elements of its row; `payload` (the second pass of
    an arg reduction) gives each element's index instead of its position."""
    arg = op in ("argmax", "argmin")
    segments = rows * chunks
    out = new_store(rt, _acc_dtype(acc), segments)
    out_index = new_store(rt, np.dtype(np.int32), segments) if arg else None
    if segments == 0:
        return out, out_index
    wg = workgroup_size(rt)
    b = Builder(reserved=4)
    b.words[:4] = [segments, length, chunks, piece]
    fn = b.function(expr)
    pfn = b.function(payload) if payload is not None else None
    b.need("xp_minmax")
    rep = REPS[expr.dtype]
    ty = acc.compute
    val = _value(rep, acc, f"{fn}(j)")
    if arg:
        body, shared = _arg_body(op, ty, val, pfn, wg)
    else:
        body, shared = _plain_body(op, acc, ty, val, wg)
    outputs = [("out", acc.word)] + ([("out_index", "i32")] if arg else [])
    source = b.source(outputs, body, wg, workgroup=shared)
    run(rt, "reduce", source, b, [out] + ([out_index] if arg else []), grid(segments, max_groups(rt)))
    return out, out_index


def _acc_dtype(acc: Rep) -> np.dtype:
    return np.dtype({"f32": np.float32, "i32": np.int32, "u32": np.uint32}[acc.compute])


_SEGMENT = """  let seg = wid.x + wid.y * nwg.x;
  let row = seg / max(p.w[0].z, 1u);
  let first = (seg % max(p.w[0].z, 1u)) * p.w[0].w;
  let last = min(first + p.w[0].w, p.w[0].y);
"""


def _plain_body(op: str, acc: Rep, ty: str, val: str, wg: int) -> tuple[str, str]:
    combine = COMBINE[op]["b" if op in ("any", "all") else acc.kind]
    ident = _identity(op, acc)
    shared = f"var<workgroup> sh: array<{ty}, {wg}>;\n"
    body = _SEGMENT + f"""  var a: {ty} = {ident};
  if (seg < p.w[0].x) {{
    for (var r = first + lid.x; r < last; r += {wg}u) {{
      let j = row * p.w[0].y + r;
      a = {combine.format(a="a", v=val)};
    }}
  }}
  sh[lid.x] = a;
  workgroupBarrier();
  for (var s = {wg // 2}u; s > 0u; s = s >> 1u) {{
    if (lid.x < s) {{ sh[lid.x] = {combine.format(a="sh[lid.x]", v="sh[lid.x + s]")}; }}
    workgroupBarrier();
  }}
  if (lid.x == 0u && seg < p.w[0].x) {{ out[seg] = sh[0]; }}
"""
    return body, shared


def _arg_body(op: str, ty: str, val: str, pfn: str | None, wg: int) -> tuple[str, str]:
    """(value, index) pairs: the larger (argmax) or smaller value wins, NaN above everything, ties to the first."""
    better = "xp_arg_better_max" if op == "argmax" else "xp_arg_better_min"
    kind_nan = "xp_isnan" if ty == "f32" else "xp_never_nan"
    cmp = ">" if op == "argmax" else "<"
    shared = (f"var<workgroup> sh: array<{ty}, {wg}>;\nvar<workgroup> shi: array<u32, {wg}>;\n"
              f"fn xp_never_nan(x: {ty}) -> bool {{ return false; }}\n"
              f"fn {better}(a: {ty}, ai: u32, b: {ty}, bi: u32) -> bool {{\n"
              f"  if (bi == 0xffffffffu) {{ return false; }}\n  if (ai == 0xffffffffu) {{ return true; }}\n"
              f"  let an = {kind_nan}(a); let bn = {kind_nan}(b);\n"
              f"  if (an || bn) {{ return bn && (!an || bi < ai); }}\n"
              f"  return b {cmp} a || (b == a && bi < ai);\n}}\n")
    index = f"u32({pfn}(j))" if pfn else "r"
    body = _SEGMENT + f"""  var a: {ty} = {ty}(0);
  var ai = 0xffffffffu;
  if (seg < p.w[0].x) {{
    for (var r = first + lid.x; r < last; r += {wg}u) {{
      let j = row * p.w[0].y + r;
      let v = {val};
      let vi = {index};
      if ({better}(a, ai, v, vi)) {{ a = v; ai = vi; }}
    }}
  }}
  sh[lid.x] = a;
  shi[lid.x] = ai;
  workgroupBarrier();
  for (var s = {wg // 2}u; s > 0u; s = s >> 1u) {{
    if (lid.x < s && {better}(sh[lid.x], shi[lid.x], sh[lid.x + s], shi[lid.x + s])) {{
      sh[lid.x] = sh[lid.x + s];
      shi[lid.x] = shi[lid.x + s];
    }}
    workgroupBarrier();
  }}
  if (lid.x == 0u && seg < p.w[0].x) {{ out[seg] = sh[0]; out_index[seg] = i32(shi[0]); }}
"""
    return body, shared


# -- scans -------------------------------------------------------------------------------------------------------

def scan(rt: "Runtime", expr: Expr, rows: int, length: int, op: str, out_dtype: np.dtype, initial: bool) -> Store:
    """Inclusive cumulative `op` (sum, prod) of each row of `expr` (rows x length, row-major), computed in the
    accumulator's type and stored as `out_dtype` (integers wrap); `initial` puts the identity first (length + 1)."""
    width = length + int(initial)
    out = new_store(rt, out_dtype, rows * width)
    if rows * width == 0:
        return out
    wg = workgroup_size(rt)
    acc = accumulator(op, out_dtype)
    rep_out = REPS[out_dtype]
    b = Builder(reserved=4)
    b.words[:3] = [rows, length, width]
    fn = b.function(expr)
    b.need("xp_base")
    combine = COMBINE[op][acc.kind]
    ident = _identity(op, acc)
    val = _value(REPS[expr.dtype], acc, f"{fn}(row * p.w[0].y + k)")
    result = wrap(rep_out, f"{rep_out.compute}(run)" if rep_out.compute != acc.compute else "run")
    start = store_conversion(rep_out, f"{rep_out.compute}({ident})")
    first = f"  if (lid.x == 0u && row < p.w[0].x) {{ out[row * p.w[0].z] = {start}; }}\n" if initial else ""
    body = f"""  let row = wid.x + wid.y * nwg.x;
  let each = (p.w[0].y + {wg - 1}u) / {wg}u;
  let start = lid.x * each;
  let stop = min(start + each, p.w[0].y);
  var a: {acc.compute} = {ident};
  if (row < p.w[0].x) {{
    for (var k = start; k < stop; k++) {{ a = {combine.format(a="a", v=val)}; }}
  }}
  sh[lid.x] = a;
  workgroupBarrier();
  for (var s = 1u; s < {wg}u; s = s << 1u) {{
    var t: {acc.compute} = {ident};
    if (lid.x >= s) {{ t = sh[lid.x - s]; }}
    workgroupBarrier();
    sh[lid.x] = {combine.format(a="sh[lid.x]", v="t")};
    workgroupBarrier();
  }}
  var run: {acc.compute} = {ident};
  if (lid.x > 0u) {{ run = sh[lid.x - 1u]; }}
  if (row < p.w[0].x) {{
    for (var k = start; k < stop; k++) {{
      run = {combine.format(a="run", v=val)};
      out[row * p.w[0].z + k + {int(initial)}u] = {store_conversion(rep_out, result)};
    }}
  }}
{first}"""
    shared = f"var<workgroup> sh: array<{acc.compute}, {wg}>;\n"
    run(rt, "scan", b.source([("out", rep_out.word)], body, wg, workgroup=shared), b, [out],
        grid(rows, max_groups(rt)))
    return out


# -- sorting -----------------------------------------------------------------------------------------------------

def _key(rep: Rep, value: str) -> str:
    """A value as a u32 whose unsigned order is the dtype's order (NaN last, -0 equal to +0)."""
    if rep.kind == "f":
        return f"xp_sort_key(f32({value}))"
    if rep.kind == "i":
        return f"(bitcast<u32>({value}) ^ 0x80000000u)"
    if rep.kind == "b":
        return f"select(0u, 1u, {value})"
    return value


SORT_KEY = """fn xp_sort_key(x: f32) -> u32 {
  if (xp_isnan(x)) { return 0xfffffffeu; }
  let b = select(bitcast<u32>(x), 0u, xp_iszero(x));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
"""


def sort(rt: "Runtime", expr: Expr, rows: int, length: int, descending: bool) -> tuple[Store, int]:
    """Sort each row of `expr` (rows x length) by value, stably: returns the store of the sorted positions (int32,
    rows x padded, the padded row length a power of two) and that padded length. Keys and positions are sorted as
    pairs, the position breaking ties, so equal values keep their order (descending too)."""
    padded = 1 << max(0, (length - 1).bit_length())
    keys = new_store(rt, np.dtype(np.uint32), rows * padded)
    index = new_store(rt, np.dtype(np.int32), rows * padded)
    if rows * length == 0:
        return index, padded
    wg = workgroup_size(rt)
    b = Builder(reserved=4)
    b.words[:3] = [rows, length, padded]
    fn = b.function(expr)
    b.need("xp_base")
    key = _key(REPS[expr.dtype], f"{fn}(row * p.w[0].y + k)")
    key = f"~{key}" if descending else key
    body = thread_index(wg) + f"""  let row = i / p.w[0].z;
  let k = i % p.w[0].z;
  if (row < p.w[0].x) {{
    if (k < p.w[0].y) {{ keys[i] = {key}; idx[i] = i32(k); }}
    else {{ keys[i] = 0xffffffffu; idx[i] = bitcast<i32>(0xffffffffu); }}
  }}
"""
    b.helpers["xp_sort_key"] = SORT_KEY
    source = b.source([("keys", "u32"), ("idx", "i32")], body, wg)
    run(rt, "sort", source, b, [keys, index], flat_groups(rt, rows * padded))
    _bitonic(rt, keys, index, rows, padded)
    return index, padded


_STEP = """@group(0) @binding(0) var<storage, read_write> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> idx: array<i32>;
struct P {{ w: array<vec4<u32>, 1> }}
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size({wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let t = gid.x + gid.y * nwg.x * {wg}u;
  let half = p.w[0].y / 2u;
  let row = t / max(half, 1u);
  if (row >= p.w[0].x) {{ return; }}
  let pair = t % half;
  let j = p.w[0].w;
  let a = row * p.w[0].y + 2u * j * (pair / j) + (pair % j);
  let b = a + j;
  let up = ((a - row * p.w[0].y) & p.w[0].z) == 0u;
  let ka = keys[a]; let kb = keys[b];
  let ia = bitcast<u32>(idx[a]); let ib = bitcast<u32>(idx[b]);
  let greater = ka > kb || (ka == kb && ia > ib);
  if (greater == up) {{ keys[a] = kb; keys[b] = ka; idx[a] = bitcast<i32>(ib); idx[b] = bitcast<i32>(ia); }}
}}
"""


def _bitonic(rt: "Runtime", keys: Store, index: Store, rows: int, padded: int) -> None:
    """The bitonic network over each row's (key, position) pairs: one dispatch per step."""
    wg = workgroup_size(rt)
    source = _STEP.format(wg=wg)
    groups = flat_groups(rt, rows * padded // 2)
    k = 2
    while k <= padded:
        j = k // 2
        while j >= 1:
            b = Builder(reserved=4)
            b.words[:4] = [rows, padded, k, j]
            run(rt, "sort", source, b, [keys, index], groups)
            j //= 2
        k *= 2


def search(rt: "Runtime", sorted_: Expr, values: Expr, right: bool) -> Store:
    """For each element of `values`, where it would go in the 1-D ascending `sorted_` (NumPy's searchsorted: the
    first such position, or the last with `right`; NaN above everything), as int32."""
    n = size_of(values.shape)
    out = new_store(rt, np.dtype(np.int32), n)
    if n == 0:
        return out
    wg = workgroup_size(rt)
    b = Builder(reserved=2)
    b.words[:2] = [n, size_of(sorted_.shape)]
    fs, fv = b.function(sorted_), b.function(values)
    b.need("xp_base")
    b.helpers["xp_sort_key"] = SORT_KEY
    rep = REPS[sorted_.dtype]
    before = "<=" if right else "<"
    body = thread_index(wg) + f"""  if (i < p.w[0].x) {{
    let k = {_key(rep, f"{fv}(i)")};
    var lo = 0u;
    var hi = p.w[0].y;
    loop {{
      if (lo >= hi) {{ break; }}
      let mid = (lo + hi) / 2u;
      if ({_key(rep, f"{fs}(mid)")} {before} k) {{ lo = mid + 1u; }} else {{ hi = mid; }}
    }}
    out[i] = i32(lo);
  }}
"""
    run(rt, "search", b.source([("out", "i32")], body, wg), b, [out], flat_groups(rt, n))
    return out


# -- writes into a view (in-place __setitem__) --------------------------------------------------------------------

def write(rt: "Runtime", value: Expr, target: Expr, store: Store) -> None:
    """Store element i of `value` at element `target(i)` of `store` (an int32 flat index: a view's offsets, or
    computed from index arrays; a negative one skips the element: compaction); `store` is bound read_write, so
    `value` must not read it."""
    n = size_of(value.shape)
    if not n:
        return
    wg = workgroup_size(rt)
    b = Builder(reserved=1)
    b.words[0] = n
    fn = b.function(value)
    at = b.function(target)
    rep = REPS[value.dtype]
    value = store_conversion(rep, f"{fn}(i)")
    body = thread_index(wg) + (f"  if (i < p.w[0].x) {{\n    let at = {at}(i);\n"
                               f"    if (at >= 0 && u32(at) < arrayLength(&out)) {{ out[u32(at)] = {value}; }}\n  }}\n")
    run(rt, "scatter", b.source([("out", rep.word)], body, wg), b, [store], flat_groups(rt, n))


def view_target(view: View) -> Expr:
    """The flat store indices of a view's elements, as an expression of its shape."""
    return Expr(Index(view.offset, view.strides), view.shape)


# -- products -------------------------------------------------------------------------------------------------

def matmul(rt: "Runtime", a: Expr, b_: Expr, batch: tuple[int, ...], m: int, k: int, n: int,
           out_dtype: np.dtype) -> Store:
    """out[..., i, j] = sum over k of a[..., i, k] * b[..., k, j] (a: batch + (m, k), b: batch + (k, n), both
    broadcast already), accumulated in the dtype's compute type (integers wrap as they go, as NumPy's do)."""
    rows = math.prod(batch) * m
    out = new_store(rt, out_dtype, rows * n)
    if rows * n == 0:
        return out
    wg = workgroup_size(rt)
    b = Builder(reserved=4)
    b.words[:4] = [rows * n, m, k, n]
    fa, fb = b.function(a), b.function(b_)
    rep = REPS[out_dtype]
    ty = "f32" if rep.compute == "f16" else rep.compute
    zero = {"f32": "0.0", "i32": "0", "u32": "0u"}[ty]
    term = f"{ty}({fa}(abase + kk)) * {ty}({fb}(bbase + kk * p.w[0].w))"
    body = thread_index(wg) + f"""  if (i < p.w[0].x) {{
    let col = i % p.w[0].w;
    let rowi = i / p.w[0].w;
    let batch = rowi / max(p.w[0].y, 1u);
    let abase = rowi * p.w[0].z;
    let bbase = batch * p.w[0].z * p.w[0].w + col;
    var acc: {ty} = {zero};
    for (var kk = 0u; kk < p.w[0].z; kk++) {{ acc += {term}; }}
    out[i] = {store_conversion(rep, wrap(rep, f"{rep.compute}(acc)") if rep.compute != ty else wrap(rep, "acc"))};
  }}
"""
    run(rt, "matmul", b.source([("out", rep.word)], body, wg), b, [out], flat_groups(rt, rows * n))
    return out
