"""The package's shape, enforced: no import cycle (import-linter's contracts in pyproject.toml: imports
inside functions count, TYPE_CHECKING blocks do not), js/pyodide only in the two page modules, imports
inside functions only for optional dependencies or page-only modules, no module over 500 lines."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from importlinter import cli

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
