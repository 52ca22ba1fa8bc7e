"""The package's shape, enforced: no import cycle (import-linter's contracts in pyproject.toml: imports
inside functions count, TYPE_CHECKING blocks do not), js/pyodide only in the three page modules, imports
inside functions only for optional dependencies or page-only modules, no module over 500 lines; where work
runs decided only in placement/, an op's facts only in its spec, a tensor's storage typed."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import get_type_hints

from importlinter import cli

from gpuport import tensor as tensor_module
from gpuport.runtime import Runtime
from gpuport.storage import Storage
from gpuport.tensor import Tensor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "py" / "gpuport"
MAX_LINES = 500
MAX_DEFERRED_IMPORTS = 15
# What may be imported inside a function: optional dependencies (an extra, or absent on some platforms)
# and the page-only modules (they import js, which exists only in Pyodide).
DEFERRABLE = {
    "uvicorn": "the serve extra",
    "hatchling.builders.wheel": "the serve extra",
    "gpuport.server": "needs the serve extra (starlette)",
    "mmap": "absent in Pyodide",
    "gpuport.backends.browser": "page-only",
    "gpuport.backends.pageio": "page-only",
    "gpuport.backends.jsmodules": "page-only",
}


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


def test_no_import_cycles_and_js_only_in_page_modules():
    os.chdir(ROOT)   # lint-imports reads pyproject.toml from the working directory
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == cli.EXIT_STATUS_SUCCESS, \
        "lint-imports found a broken contract (its report is above)"


def test_imports_inside_functions_are_few_and_only_optional_or_page_only():
    found = deferred_imports()
    unexplained = [(where, name) for where, name in found if name not in DEFERRABLE]
    assert not unexplained, f"imports inside functions that belong at the top of their module: {unexplained}"
    assert len(found) <= MAX_DEFERRED_IMPORTS, found


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


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
