"""Checks a built WebAssembly kernel module (web/gpuport_simd.wasm, web/gpuport_simd_relaxed.wasm) is safe to
link into Pyodide's heap and exports the host kernels' ABI; and that the threaded build
(web/gpuport_simd_threads.wasm) is what web/threads.js instantiates on every worker.

The page links the module into Pyodide's own memory (web/wasm.js), so it must own nothing there: no data
segments, no memory for Emscripten's loader to reserve (dylink.0 memory size 0), no shadow stack (no
`__stack_pointer` import) and no calls out (no imported functions). It must export every function of
host_abi's table with that row's WebAssembly type. `make setup` runs this on every build; tests run it on
the artefact. Usage: `python -m gpuport.host.wasm_module web/gpuport_simd.wasm`.

The threaded build owns its memory instead: it imports one shared memory and a clock (gp_clock_ms, which times a
worker's spin before it sleeps) and nothing else, and exports the
ABI, the pool's functions (gp_pool_worker, gp_pool_workers, gp_pool_wake) and the globals web/threads.js sets and reads
(__stack_pointer, each worker's own stack; __heap_base, where gpuport.host.wasm_threads' arena starts).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoadError
from .host_abi import EXPORTS

MODULE_NAME = "gpuport_simd.wasm"
RELAXED_MODULE_NAME = "gpuport_simd_relaxed.wasm"   # the same sources with relaxed SIMD (web/wasm.js)
THREADS_MODULE_NAME = "gpuport_simd_threads.wasm"   # relaxed SIMD and atomics, on a pool of workers (web/threads.js)
# What the threaded build exports beyond the ABI table, with the WebAssembly types web/threads.js relies on.
POOL_EXPORTS: dict[str, Signature | str] = {"gp_pool_worker": (("i32",), ()), "gp_pool_workers": ((), ("i32",)),
                                            "gp_pool_wake": ((), ()), "gp_pool_awake": ((), ("i32",)),
                                            "__stack_pointer": "global", "__heap_base": "global"}
# What the threaded build imports (web/threads.js gives both to every instance).
THREADED_IMPORTS = {("env", "memory", "memory"), ("env", "gp_clock_ms", "func")}
# What a position-independent side module may import: the shared memory and table, and its bases.
ALLOWED_IMPORTS = {("env", "memory"), ("env", "__indirect_function_table"), ("env", "__memory_base"),
                   ("env", "__table_base")}
_CUSTOM, _TYPE, _IMPORT, _FUNCTION, _EXPORT, _DATA, _DATA_COUNT = 0, 1, 2, 3, 7, 11, 12
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_VALUE_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref",
                0x6F: "externref"}
Signature = tuple[tuple[str, ...], tuple[str, ...]]   # (parameter types, result types)


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
    signatures: dict[str, Signature] = field(default_factory=dict)      # exported function -> its type
    data_segments: int = 0
    shared_memory: bool = False   # an imported memory marked shared


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


def _import_desc(r: _Reader, kind: int) -> int | None:
    """Skips an import's description; a function's type index, else None."""
    if kind == 0:
        return r.leb()
    if kind == 1:
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
    return None


def _value_types(r: _Reader) -> tuple[str, ...]:
    count = r.leb()
    return tuple(_VALUE_TYPES.get(r.byte(), "?") for _ in range(count))


def _func_type(r: _Reader) -> Signature:
    if r.byte() != 0x60:
        raise LoadError("malformed type section: a type that is not a function type")
    params = _value_types(r)
    return params, _value_types(r)


def parse(data: bytes) -> WasmModule:
    """The sections, imports, exports (with their functions' types) and data segments of a WebAssembly
    binary."""
    if data[:8] != b"\0asm\x01\0\0\0":
        raise LoadError("not a WebAssembly module (bad magic or version)")
    mod, r = WasmModule(), _Reader(data, 8)
    types: list[Signature] = []
    functions: list[int] = []   # type index per function index: imported functions first, then defined
    exported: dict[str, int] = {}
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
        elif sid == _TYPE:
            types = [_func_type(body) for _ in range(body.leb())]
        elif sid == _IMPORT:
            for _ in range(body.leb()):
                module, name, kind = body.name(), body.name(), body.byte()
                if kind == 2:
                    mod.shared_memory = bool(data[body.pos] & 2)   # limits flags: 0x02 shared
                type_index = _import_desc(body, kind)
                if type_index is not None:
                    functions.append(type_index)
                mod.imports.append((module, name, _KINDS.get(kind, str(kind))))
        elif sid == _FUNCTION:
            functions += [body.leb() for _ in range(body.leb())]
        elif sid == _EXPORT:
            for _ in range(body.leb()):
                name, kind, index = body.name(), body.byte(), body.leb()
                mod.exports.append((name, _KINDS.get(kind, str(kind))))
                if kind == 0:
                    exported[name] = index
        elif sid in (_DATA, _DATA_COUNT):
            mod.data_segments = max(mod.data_segments, body.leb())
        r.pos += size
    try:
        mod.signatures = {name: types[functions[index]] for name, index in exported.items()}
    except IndexError:
        raise LoadError("an export names a function or type the module does not define") from None
    return mod


def problems(mod: WasmModule, threaded: bool = False) -> list[str]:
    """Everything that would make the module unsafe or unusable inside Pyodide's memory (or, `threaded`, on
    web/threads.js's pool)."""
    found = _threaded_problems(mod) if threaded else _side_module_problems(mod)
    for export in EXPORTS:
        got, want = mod.signatures.get(export.name), export.wasm_type()
        if got is None:
            found.append(f"does not export {export.name}")
        elif got != want:
            found.append(f"exports {export.name} as {_show(got)}, host_abi says {_show(want)}")
    return found


def _side_module_problems(mod: WasmModule) -> list[str]:
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
    return found


def _threaded_problems(mod: WasmModule) -> list[str]:
    found = []
    if sorted(mod.imports) != sorted(THREADED_IMPORTS):
        found.append(f"imports {', '.join(f'{m}.{n} ({k})' for m, n, k in mod.imports) or 'nothing'}: the threaded "
                     f"build imports its memory and gp_clock_ms and nothing else")
    elif not mod.shared_memory:
        found.append("imports a memory that is not shared: the workers could not run on it")
    kinds = dict(mod.exports)
    for name, want in POOL_EXPORTS.items():
        got = mod.signatures.get(name) if want != "global" else kinds.get(name)
        if got != want:
            found.append(f"does not export {name} as {want if want == 'global' else _show(want)}")
    return found


def _show(sig: Signature) -> str:
    return f"({', '.join(sig[0])}) -> ({', '.join(sig[1])})"


def check(path: Path) -> WasmModule:
    """Parse the module at `path`; LoadError naming every problem if it is missing or unsafe. A file named
    for the threaded build (THREADS_MODULE_NAME, or its .tmp while `make` checks it) is held to that build's
    rules."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path} is missing: build it with `make setup` (needs Debian's clang and lld)")
    mod = parse(path.read_bytes())
    found = problems(mod, threaded=path.name.removesuffix(".tmp") == THREADS_MODULE_NAME)
    if found:
        raise LoadError(f"{path}: " + "; ".join(found))
    return mod


def main(argv: list[str]) -> int:
    for arg in argv:
        mod = check(Path(arg))
        owns = "its own shared memory" if mod.shared_memory else "no data, no stack"
        print(f"{arg}: ok ({len(mod.exports)} exports, host_abi's {len(EXPORTS)} as it types them; imports "
              f"{', '.join(n for _, n, _ in mod.imports)}; {owns})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
