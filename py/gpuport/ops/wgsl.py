"""What the host can learn from WGSL text before the GPU sees it: a user kernel's bindings (so a dispatch
is checked against them before it is queued, and the outputs of a failed batch are known) and its
workgroup memory (checked against maxComputeWorkgroupStorageSize, which wgpu-native does not enforce
while every browser does). A best-effort reader, not a compiler: what it cannot read, it leaves to the
compiler and the device."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATTRS = r"((?:@\w+\s*\(\s*\w+\s*\)\s*)+)"
_VAR = re.compile(_ATTRS + r"var\s*<\s*(storage|uniform)\s*(?:,\s*(read_write|read))?\s*>\s*(\w+)")
_WORKGROUP = re.compile(r"var\s*<\s*workgroup\s*>\s*(\w+)\s*:\s*([^;]+);")
_CONST = re.compile(r"\b(?:const|override)\s+(\w+)\s*(?::\s*\w+)?\s*=\s*([0-9]+)[ui]?\s*;")
_SCALARS = {"f32": 4, "i32": 4, "u32": 4, "f16": 2, "bool": 4}


@dataclass(frozen=True)
class Binding:
    """One `@group(0) @binding(n)` buffer of a shader: its index, kind ("read", "rw", "uniform"), name."""

    index: int
    kind: str
    name: str
    line: int


def _strip_comments(source: str) -> str:
    """Comments blanked out, line structure kept (so offsets still give line numbers)."""
    source = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def bindings(source: str) -> list[Binding] | None:
    """The group-0 buffer bindings in binding order, or None where the text cannot be read that far."""
    text = _strip_comments(source)
    found = []
    for m in _VAR.finditer(text):
        attrs = m.group(1)
        group = re.search(r"@group\s*\(\s*(\d+)\s*\)", attrs)
        binding = re.search(r"@binding\s*\(\s*(\d+)\s*\)", attrs)
        if group is None or binding is None:
            return None
        if int(group.group(1)) != 0:
            continue
        kind = "uniform" if m.group(2) == "uniform" else ("rw" if m.group(3) == "read_write" else "read")
        found.append(Binding(int(binding.group(1)), kind, m.group(4), text.count("\n", 0, m.start()) + 1))
    return sorted(found, key=lambda b: b.index)


def written_bindings(source: str) -> set[int] | None:
    """Binding indices a shader declares read_write (None: not readable, assume all)."""
    found = bindings(source)
    return None if found is None else {b.index for b in found if b.kind == "rw"}


def _type_size(t: str, consts: dict[str, int]) -> tuple[int, int] | None:
    """(size, alignment) in bytes of a WGSL type, per the WGSL memory layout rules; None if unknown."""
    t = t.strip()
    if t in _SCALARS:
        return _SCALARS[t], _SCALARS[t]
    m = re.fullmatch(r"atomic\s*<\s*(\w+)\s*>", t)
    if m:
        return 4, 4
    m = re.fullmatch(r"vec([234])\s*<\s*(\w+)\s*>", t) or re.fullmatch(r"vec([234])([fiuh])", t)
    if m:
        n = int(m.group(1))
        elem = {"f": 4, "i": 4, "u": 4, "h": 2}.get(m.group(2), _SCALARS.get(m.group(2)))
        if elem is None:
            return None
        return n * elem, (2 if n == 2 else 4) * elem
    m = re.fullmatch(r"mat([234])x([234])\s*<\s*(\w+)\s*>", t)
    if m:
        col = _type_size(f"vec{m.group(2)}<{m.group(3)}>", consts)
        if col is None:
            return None
        stride = -(-col[0] // col[1]) * col[1]
        return int(m.group(1)) * stride, col[1]
    m = re.fullmatch(r"array\s*<\s*(.+)\s*,\s*(\w+)\s*>", t)
    if m:
        elem = _type_size(m.group(1), consts)
        count = int(m.group(2)) if m.group(2).isdigit() else consts.get(m.group(2))
        if elem is None or count is None:
            return None
        stride = -(-elem[0] // elem[1]) * elem[1]
        return stride * count, elem[1]
    return None


def workgroup_bytes(source: str, constants: dict[str, float] | None = None) -> tuple[int, list[str]] | None:
    """Bytes of workgroup memory the shader declares (each variable rounded up to 16, as WebGPU counts
    them) and "name (line N)" per variable; None where a type or an array length cannot be read.
    Override constants given at pipeline creation replace their defaults."""
    text = _strip_comments(source)
    consts = {name: int(value) for name, value in _CONST.findall(text)}
    consts.update({k: int(v) for k, v in (constants or {}).items()})
    total, names = 0, []
    for m in _WORKGROUP.finditer(text):
        size = _type_size(m.group(2), consts)
        if size is None:
            return None
        total += -(-size[0] // 16) * 16
        names.append(f"{m.group(1)} (line {text.count(chr(10), 0, m.start()) + 1})")
    return total, names


def invocations(source: str, constants: dict[str, float] | None = None) -> int | None:
    """Invocations per workgroup of the first `@workgroup_size` (x*y*z), None if not readable."""
    text = _strip_comments(source)
    m = re.search(r"@workgroup_size\s*\(([^)]*)\)", text)
    if m is None:
        return None
    consts = {name: int(value) for name, value in _CONST.findall(text)}
    consts.update({k: int(v) for k, v in (constants or {}).items()})
    total = 1
    for dim in (d.strip().rstrip("ui") for d in m.group(1).split(",") if d.strip()):
        value = int(dim) if dim.isdigit() else consts.get(dim)
        if value is None:
            return None
        total *= value
    return total
