"""Checks a built WebAssembly kernel module (web/gpuport_simd.wasm, web/gpuport_simd_relaxed.wasm) is safe to
link into Pyodide's heap.

The page links the module into Pyodide's own memory (web/wasm.js), so it must own nothing there: no data
segments, no memory for Emscripten's loader to reserve (dylink.0 memory size 0), no shadow stack (no
`__stack_pointer` import) and no calls out (no imported functions). `make setup` runs this on every
build; tests run it on the artefact. Usage: `python -m gpuport.wasm_module web/gpuport_simd.wasm`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LoadError

MODULE_NAME = "gpuport_simd.wasm"
RELAXED_MODULE_NAME = "gpuport_simd_relaxed.wasm"   # the same sources with relaxed SIMD (web/wasm.js)
EXPORTS = ("gp_abi", "gp_packed_size", "gp_pack_b", "gp_matmul_packed", "gp_matmul_batched", "gp_gelu",
           "gp_softmax", "gp_layer_norm", "gp_attention_scratch", "gp_attention", "gp_encoder_scratch",
           "gp_encoder_layer")
# What a position-independent side module may import: the shared memory and table, and its bases.
ALLOWED_IMPORTS = {("env", "memory"), ("env", "__indirect_function_table"), ("env", "__memory_base"),
                   ("env", "__table_base")}
_CUSTOM, _IMPORT, _EXPORT, _DATA, _DATA_COUNT = 0, 2, 7, 11, 12
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def module_path(root: Path, name: str = MODULE_NAME) -> Path:
    """Where `make setup` writes a build of the module: web/, beside the JS that loads it."""
    return Path(root) / "web" / name


@dataclass
class WasmModule:
    """The parts of a module that say what it owns and needs."""

    sections: list[int] = field(default_factory=list)
    dylink_memory_size: int | None = None
    imports: list[tuple[str, str, str]] = field(default_factory=list)  # (module, name, kind)
    exports: list[tuple[str, str]] = field(default_factory=list)        # (name, kind)
    data_segments: int = 0


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise LoadError("truncated WebAssembly module")
        self.pos += 1
        return self.data[self.pos - 1]

    def leb(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def name(self) -> str:
        n = self.leb()
        self.pos += n
        return self.data[self.pos - n:self.pos].decode("utf-8")

    def limits(self) -> None:
        flags = self.byte()
        self.leb()
        if flags & 1:
            self.leb()


def _import_desc(r: _Reader, kind: int) -> None:
    if kind == 0:
        r.leb()                # type index
    elif kind == 1:
        r.byte()               # element type
        r.limits()
    elif kind == 2:
        r.limits()
    elif kind == 3:
        r.byte()               # value type
        r.byte()               # mutability
    elif kind == 4:
        r.byte()
        r.leb()
    else:
        raise LoadError(f"unknown import kind {kind}")


def parse(data: bytes) -> WasmModule:
    """The sections, imports, exports and data segments of a WebAssembly binary."""
    if data[:8] != b"\0asm\x01\0\0\0":
        raise LoadError("not a WebAssembly module (bad magic or version)")
    mod, r = WasmModule(), _Reader(data, 8)
    while r.pos < len(data):
        sid, size = r.byte(), r.leb()
        body = _Reader(data, r.pos, r.pos + size)
        mod.sections.append(sid)
        if sid == _CUSTOM and body.name() == "dylink.0":
            while body.pos < body.end:
                sub, sub_size = body.byte(), body.leb()
                if sub == 1:  # WASM_DYLINK_MEM_INFO: memory size first
                    mod.dylink_memory_size = _Reader(data, body.pos, body.pos + sub_size).leb()
                body.pos += sub_size
        elif sid == _IMPORT:
            for _ in range(body.leb()):
                module, name, kind = body.name(), body.name(), body.byte()
                _import_desc(body, kind)
                mod.imports.append((module, name, _KINDS.get(kind, str(kind))))
        elif sid == _EXPORT:
            for _ in range(body.leb()):
                name, kind = body.name(), body.byte()
                body.leb()
                mod.exports.append((name, _KINDS.get(kind, str(kind))))
        elif sid in (_DATA, _DATA_COUNT):
            mod.data_segments = max(mod.data_segments, body.leb())
        r.pos += size
    return mod


def problems(mod: WasmModule) -> list[str]:
    """Everything that would make the module unsafe or unusable inside Pyodide's memory."""
    found = []
    if not mod.sections or mod.sections[0] != _CUSTOM or mod.dylink_memory_size is None:
        found.append("no leading dylink.0 section: not a side module Pyodide's loader can link")
    elif mod.dylink_memory_size:
        found.append(f"owns {mod.dylink_memory_size} bytes of static memory (dylink.0 memory size)")
    if mod.data_segments:
        found.append(f"has {mod.data_segments} data segment(s): static data would land in Pyodide's heap")
    for module, name, kind in mod.imports:
        if (module, name) not in ALLOWED_IMPORTS:
            why = "a shadow stack inside Pyodide's heap" if name == "__stack_pointer" else "an outside dependency"
            found.append(f"imports {module}.{name} ({kind}): {why}")
    names = {name for name, kind in mod.exports if kind == "func"}
    found += [f"does not export {name}" for name in EXPORTS if name not in names]
    return found


def check(path: Path) -> WasmModule:
    """Parse the module at `path`; LoadError naming every problem if it is missing or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path} is missing: build it with `make setup` (needs Debian's clang and lld)")
    mod = parse(path.read_bytes())
    found = problems(mod)
    if found:
        raise LoadError(f"{path}: " + "; ".join(found))
    return mod


def main(argv: list[str]) -> int:
    for arg in argv:
        mod = check(Path(arg))
        print(f"{arg}: ok ({len(mod.exports)} exports, imports {', '.join(n for _, n, _ in mod.imports)}; "
              "no data, no stack)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
