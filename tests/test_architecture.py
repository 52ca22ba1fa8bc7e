"""The package's shape, enforced.

- Layers (pyproject.toml's import-linter contracts, run by `lint-imports`): one folder per layer around a small public
  core; a module imports only from its own layer and the layers below (imports inside functions count); no import
  cycle between the modules of any package; js/pyodide only in backends/' page modules.
- Type-only imports (TYPE_CHECKING blocks, which lint-imports leaves out) point down too, but for one: the runtime's
  collaborators (tensor, kernel, ops, placement, engine) type their back-reference to the Runtime that owns them.
  It never runs (no import-order hazard) and is the composition itself: a Runtime is built from them.
- Readers: the top of the package is the public core only; each layer's __init__ says what it does and what it may
  import; each module says its job in its docstring; a function fits on a screen; the public API has docstrings
  and type hints. Module length is free up to the point where a module must hold two jobs.
- Where work runs is decided only in placement/, an op's facts live only in its spec, a tensor's storage is typed.
- No unused import or undefined name anywhere in the repository's Python (pyflakes' rules, checked by ruff).
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import get_type_hints

import gpuport
from gpuport.runtime import Runtime
from gpuport.tensor import tensor as tensor_module
from gpuport.tensor.storage import Storage
from gpuport.tensor.tensor import Tensor
from importlinter import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "py" / "gpuport"
# The public core: what users import (runtime, tensor's layer, kernel, errors, types), the flag that says where
# Python runs (platform: gpuport.IN_PYODIDE) and the package's own entry points.
CORE = {"__init__.py", "__main__.py", "_version.py", "errors.py", "types.py", "platform.py", "runtime.py", "kernel.py"}
MAX_FUNCTION_LINES = 90     # a screen: a reader sees a whole function at once
MAX_MODULE_LINES = 1000     # past this a module holds two jobs, whatever its docstring says
MAX_DEFERRED_IMPORTS = 23
# What may be imported inside a function: optional dependencies (an extra, or absent on some platforms), the
# page-only modules (they import js, which exists only in Pyodide), and the native-only and format readers that
# `import gpuport` leaves out because a page's first result never needs them (each costs its import time there).
DEFERRABLE = {
    "uvicorn": "the serve extra",
    "hatchling.builders.wheel": "the serve extra",
    "gpuport.site.server": "needs the serve extra (starlette)",
    "mmap": "absent in Pyodide",
    "scipy.linalg": "optional: xp.linalg.svd takes SciPy's where it is installed (scikit-learn brings it)",
    "PIL": "the vision extra; a page loads Pyodide's own Pillow on first use",
    "gpuport.backends.browser": "page-only",
    "gpuport.backends.pageio": "page-only",
    "gpuport.backends.jsmodules": "page-only",
    "gpuport.backends.native": "native-only (wgpu-py): a page's start never imports it",
    "gpuport.formats.gguf": "a GGUF is read only when one is loaded or packed",
    "gpuport.formats.ctranslate2": "a CTranslate2 model.bin is read only when one is packed",
    "gpuport.loading.gguf_source": "a GGUF is read only when one is loaded",
}
# The one upward type-only import (see the docstring).
BACK_REFERENCE = "gpuport.runtime"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def resolve(path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not node.level:
        return [node.module or ""]
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        parts = parts[:-1]
    base = parts[:len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
    return [".".join(base + ([node.module] if node.module else []))]


def deferred_imports() -> list[tuple[str, str]]:
    """(module file, imported name) for every import statement inside a function."""
    found = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        found += [(str(path.relative_to(PACKAGE)), name) for name in resolve(path, node)]
    return found


def test_layers_hold_no_cycle_and_js_only_in_backends():
    os.chdir(ROOT)   # lint-imports reads pyproject.toml from the working directory
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == cli.EXIT_STATUS_SUCCESS, \
        "lint-imports found a broken contract (its report is above)"


def test_no_unused_import_or_undefined_name_anywhere():
    """Dead imports and names that exist nowhere (pyflakes' rules, by ruff) in the package, the tests and the benches."""
    # F704 (await outside a function) is how a page's script is written: Pyodide and PyScript run it as a coroutine
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F", "--ignore", "F704",
                           "--output-format", "concise", "py", "tests", "e2e", "bench", "examples", "shaders"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_imports_inside_functions_are_few_and_only_optional_or_page_only():
    found = deferred_imports()
    unexplained = [(where, name) for where, name in found if name not in DEFERRABLE]
    assert not unexplained, f"imports inside functions that belong at the top of their module: {unexplained}"
    assert len(found) <= MAX_DEFERRED_IMPORTS, found


def layers() -> list[list[str]]:
    """The layer contract's layers, top first, each a list of module names."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["type"] == "layers"]
    return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]


def layer_of(module: str, table: list[list[str]]) -> int | None:
    """Index of the layer holding `module` (0 is the top), None for the package itself."""
    for i, layer in enumerate(table):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return i
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_only_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of each import inside an `if TYPE_CHECKING:` block."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in ast.walk(node):
                if isinstance(imp, (ast.Import, ast.ImportFrom)):
                    found += [(name, [a.name for a in imp.names]) for name in resolve(path, imp)]
    return found


def test_every_module_sits_in_a_layer():
    table = layers()
    unplaced = [module_name(p) for p in modules() if module_name(p) != "gpuport" and layer_of(module_name(p), table) is None]
    assert not unplaced, f"modules in no layer of pyproject.toml's layer contract: {unplaced}"


def test_type_only_imports_point_down_but_the_runtime_back_reference():
    table = layers()
    upward = []
    for path in modules():
        here = layer_of(module_name(path), table)
        for target, names in type_only_imports(path):
            there = layer_of(target, table)
            if here is not None and there is not None and there < here and (target, names) != (BACK_REFERENCE, ["Runtime"]):
                upward.append(f"{module_name(path)} -> {target} {names}")
    assert not upward, f"type-only imports from a lower layer into a higher one: {upward}"


def test_the_top_of_the_package_is_the_public_core():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == CORE, f"modules at the top of py/gpuport/ that belong in a layer's folder: {sorted(top - CORE)}"


def test_each_layer_says_what_it_does_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "Layer:" in doc and len(doc.split("Layer:")[0].strip()) > 40, \
            f"{init.relative_to(ROOT)}: its docstring says what the layer does, then `Layer:` and what it may import"


def test_modules_say_their_job_and_functions_fit_a_screen():
    long_functions, long_modules, silent = [], {}, []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        name = str(path.relative_to(PACKAGE))
        if not ast.get_docstring(tree):
            silent.append(name)
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            long_modules[name] = n
        long_functions += [f"{name}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)" for fn in ast.walk(tree)
                           if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert not silent, f"modules without a docstring saying their job: {silent}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines (split them by step): {long_functions}"
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long_modules}"


def public_callables():
    """(name, object) of every public name of gpuport and the public methods of its public classes."""
    for name in gpuport.__all__:
        obj = getattr(gpuport, name)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                member = member.fget if isinstance(member, property) else member
                if not attr.startswith("_") and callable(member):
                    yield f"{name}.{attr}", member
    yield "models.load", gpuport.models.load


def test_the_public_api_has_docstrings_and_type_hints():
    undocumented, unhinted = [], []
    for name, obj in public_callables():
        if not inspect.getdoc(obj):
            undocumented.append(name)
        if inspect.isclass(obj):
            continue
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values()
                  if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if any(p.annotation is inspect.Parameter.empty for p in params) or sig.return_annotation is inspect.Signature.empty:
            unhinted.append(name)
    assert not undocumented, f"public names without a docstring: {undocumented}"
    assert not unhinted, f"public names without type hints: {unhinted}"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (top level and inside functions; TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in resolve(path, node):
                found.add(name)
                if isinstance(node, ast.ImportFrom):
                    found.update(f"{name}.{a.name}" for a in node.names)
    return found


def test_only_placement_consults_the_selector_and_the_calibration():
    """Where work runs is decided in one package: nothing outside gpuport.placement reaches the selector."""
    private = {"gpuport.placement.selector", "gpuport.placement.calibration", "gpuport.placement.auto"}
    outside = {str(p.relative_to(PACKAGE)): sorted(imports_of(p) & private) for p in modules()
               if "placement" not in p.relative_to(PACKAGE).parts}
    assert not {k: v for k, v in outside.items() if v}, outside


def test_an_ops_facts_live_in_its_spec():
    """One table of ops (opspecs.OPS): no module keeps another per-op table of kernels, variants, launchers,
    probes or FLOP models."""
    stale = {"KERNELS", "VARIANTS", "LAUNCHERS", "PROBES", "op_flops", "F16_OPS", "ELEMENTWISE_OPS", "ROWWISE_OPS",
             "WG_OVERRIDE_OPS"}
    defined = {}
    for path in modules():
        if path.name == "hostops.py":   # hostops.KERNELS: each op's host kernel on this machine's engine
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = [t for n in [node] if isinstance(n, (ast.Assign, ast.AnnAssign))
                       for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            if names & stale:
                defined[str(path.relative_to(PACKAGE))] = sorted(names & stale)
    assert not defined, defined


def test_tensor_storage_is_typed():
    """A tensor's residency is a Storage kind, not an untyped handle told apart by isinstance."""
    hints = get_type_hints(Tensor.__init__, {**vars(tensor_module), "Runtime": Runtime})
    assert hints["storage"] is Storage, hints
    assert "handle" not in Tensor.__slots__
    untyped = [p.relative_to(PACKAGE) for p in modules() if re.search(r"\bt(ensor)?\.handle\b", p.read_text())]
    assert not untyped, untyped
