"""gpuport's JS half, registered into whichever Pyodide imported gpuport: the wheel is the unit a page needs.

The browser backend and the page I/O call JS modules (web/bridge.js as `gpuport_bridge`, web/idb.js as
`gpuport_idb`), and the cpu path calls the WebAssembly kernels (web/wasm.js links gpuport_simd*.wasm into
Pyodide's memory). All of them travel inside the wheel (gpuport/web/), so `micropip.install(wheel)` in a
PyScript page, a JupyterLite kernel or a bare `loadPyodide()` brings them along; `register` loads them from
the installed package's files, the same way under gpuport.js's own `start()`. A module that a host
registered itself must be the same version as this wheel: a stale JS half would half-work, so it is
refused with an error naming it.

Page-only (with browser.py and pageio.py, the only modules that import js/pyodide).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import js
import pyodide_js
from pyodide.code import run_js
from pyodide.ffi import JsException, to_js

from .._version import __version__
from ..errors import BackendUnavailable, JsHalfMismatch, NoAnswer
from ..host import wasm_kernels, wasm_threads
from ..platform import within


def heap_bytes() -> int:
    """The size of Pyodide's WebAssembly memory (it only grows: the page's peak), which the host kernels share."""
    return int(pyodide_js._module.HEAP8.length)


WEB = Path(__file__).resolve().parents[1] / "web"
# the JS half, by the name Python imports it under: registered by the host (web/host.js registers them all), else
# loaded here from the wheel's files
MODULES = {"gpuport_bridge": "bridge.js", "gpuport_idb": "idb.js", "gpuport_wasm": "wasm.js",
           "gpuport_threads": "threads.js"}
WASM_FILES = {"simd128": "gpuport_simd.wasm", "relaxed-simd": "gpuport_simd_relaxed.wasm"}
WASM_BUILD_ENV = "GPUPORT_WASM_KERNELS"   # start({hostKernels}) sets it: "auto" (default), "simd128", "relaxed-simd", "off"
THREADS_FILE = "gpuport_simd_threads.wasm"
# the check web/idb.js keeps with a stored chunk: from a blob: URL it cannot find the file beside it, so it is given
# the bytes (without them it stores no check and hashes every record it reads back)
CHECK_FILE = "gpuport_simd_check.wasm"
THREADS_ENV = "GPUPORT_THREADS"   # start({threads}) sets it: "auto" (default: every core) or a count (1: no pool)
MODULE_WAIT_S = 20.0   # an import of a module from the wheel's own bytes that has not settled by then never will

# import() of a blob: URL holding the module's text: it works on the main thread and in module workers (the
# e2e lanes: Chromium, Firefox, WebKitGTK), and needs no server to hold the files (the wheel does).
_IMPORT_SOURCE = """(text) => {
  const url = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
  return import(url).finally(() => URL.revokeObjectURL(url));
}"""


def _read(name: str) -> str:
    path = WEB / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise BackendUnavailable(f"gpuport's JS half is incomplete: {path} is missing from the installed package "
                                 f"(reinstall the gpuport wheel)") from None


def _registered(name: str) -> Any | None:
    """The JS module a host already registered as `name`, or None."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None


def check_version(name: str, module: Any) -> None:
    """Raise JsHalfMismatch unless `module` (a registered JS module) is this wheel's version."""
    version = getattr(module, "VERSION", None)
    if version != __version__:
        found = "no VERSION" if version is None else f"version {version}"
        raise JsHalfMismatch(f"the JS module {name!r} registered in this page has {found}, this gpuport wheel is "
                             f"{__version__}: the page's gpuport JS and the installed wheel must come from the same "
                             f"release (reload without the stale one, or install the matching wheel)")


async def _load(name: str) -> Any:
    try:
        return await within(run_js(_IMPORT_SOURCE)(_read(name)), MODULE_WAIT_S, f"the import of gpuport's {name}")
    except (JsException, NoAnswer) as exc:
        raise BackendUnavailable(f"cannot load gpuport's {name} into this page: {exc}") from None


async def _wasm_kernels(loader: Any, choice: str) -> Any:
    """web/wasm.js's (`loader`) record of the kernels it linked, from the .wasm files in the installed package."""
    try:
        wanted = [str(s.variant) for s in loader.defaultSources(choice)]
    except JsException as exc:   # a choice wasm.js does not know: its message lists the valid ones
        raise ValueError(f"{WASM_BUILD_ENV}: {exc}") from None
    files = {variant: WEB / WASM_FILES[variant] for variant in wanted}
    present = [{"variant": variant, "source": _bytes(path), "url": str(path)}
               for variant, path in files.items() if path.is_file()]
    absent = ", ".join(str(path) for path in files.values() if not path.is_file())
    missing = f"{absent} missing from the installed gpuport wheel (it was built before `make setup` compiled the kernels)"
    if wanted and not present:
        return loader.unavailable(missing)
    record = await loader.loadWasmKernels(pyodide_js, to_js(present, dict_converter=js.Object.fromEntries))
    if absent and record.available:   # a preferred build the wheel lacks: noted as one that failed would be
        record.reason = "; ".join(filter(None, (missing, str(record.reason))))
    return record


def threads_wanted(value: str) -> int | None:
    """The pool size GPUPORT_THREADS asks for: None for "auto" (navigator.hardwareConcurrency), else the count;
    ValueError naming the variable for anything else."""
    value = value.strip().lower() or "auto"
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} (start({{threads}})) must be \"auto\" or a whole number of threads >= 1, "
                         f"not {value!r}")
    return int(value)


async def _pool(starter: Any, threads: int | None) -> Any:
    """web/threads.js's (`starter`) pool of workers on the threaded kernels (or its reason for none)."""
    if not wasm_kernels.available():   # the one-thread build's sibling: off with it
        return starter.unavailable(f"no host kernels: {wasm_kernels.reason()}")
    if threads is None:
        threads = int(starter.defaultThreads())
    if threads < 2:
        return starter.unavailable(f"start({{threads: {threads}}}): one thread")
    path = WEB / THREADS_FILE
    if not path.is_file():
        return starter.unavailable(f"{path} missing from the installed gpuport wheel (it was built before `make setup` "
                                   f"compiled the kernels)")
    return await starter.startPool(pyodide_js, _bytes(path), threads)


async def load_package(name: str) -> None:
    """A package of the page's Pyodide distribution (its lock file names it; gpuport's vendors Pillow for the vision
    models) loaded by Pyodide's own loadPackage, the first time something needs it."""
    await pyodide_js.loadPackage(name)


def _bytes(path: Path) -> Any:
    """The file's bytes as a JS Uint8Array of its own (a view of Pyodide's memory could move under it)."""
    data = path.read_bytes()
    array = js.Uint8Array.new(len(data))
    array.assign(data)
    return array


async def register() -> None:
    """Make gpuport's JS modules available to this Pyodide (once; later calls return at once). Raises
    JsHalfMismatch for a host-registered module of another version, BackendUnavailable when the installed package
    lacks a file."""
    for name, file in MODULES.items():
        module = _registered(name)
        if module is None:
            module = await _load(file)
            if name == "gpuport_idb" and (WEB / CHECK_FILE).is_file():
                await module.useCheck(_bytes(WEB / CHECK_FILE))
            pyodide_js.registerJsModule(name, module)
        check_version(name, module)


async def link_kernels() -> None:
    """Link the WebAssembly host kernels into this Pyodide and start their pool (once; after register())."""
    if not wasm_kernels.attached():
        choice = os.environ.get(WASM_BUILD_ENV, "auto")
        wasm_kernels.attach(await _wasm_kernels(importlib.import_module("gpuport_wasm"), choice))
        wasm_threads.start(_pool(importlib.import_module("gpuport_threads"),
                                 threads_wanted(os.environ.get(THREADS_ENV, "auto"))))


__all__ = ["THREADS_ENV", "WASM_BUILD_ENV", "check_version", "link_kernels", "load_package", "register",
           "threads_wanted"]
