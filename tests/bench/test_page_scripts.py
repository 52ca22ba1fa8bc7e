"""The Python the benches run in gpuport's page, read without a browser: every name a script reads is one that it
or an earlier script of the same page defines, a builtin, or what the page itself gives (`rt`). A missing import
shows only when the bench runs (bench/generate.py's load script used `time` that the page no longer had)."""

import ast
import builtins
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))   # for the benches' own helpers (_harness, _peers_lanes, ...)


def _bench(name: str) -> ModuleType:
    """bench/<name>.py as the module bench_<name>: a plain `generate` would shadow shaders/generate.py, which
    tests/ops imports by that name in the same process."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_peers_lanes, arrays, generate, model, page_minilm, vision = (
    _bench(n) for n in ("_peers_lanes", "arrays", "generate", "model", "page_minilm", "vision"))

PAGE_NAMES = {"rt"}   # what gpuport's page defines for runPython


class _Zero(dict):
    def __missing__(self, key: str) -> int:
        return 0


def _fill(template: str) -> str:
    """A template the bench formats, with 0 for each of its fields."""
    return template.format_map(_Zero())


# Each page's scripts in the order the bench runs them; `_fill` where the bench formats the script first.
PAGES = {
    "generate": [generate.PAGE_LOAD, _fill(generate.PAGE_RUN)],
    "peers": [_fill(_peers_lanes.GP_LOAD), _fill(_peers_lanes.GP_CALL), _peers_lanes.GP_INFO],
    "vision": [_fill(vision.GP_LOAD), _fill(vision.GP_CALL), vision.GP_INFO],
    "arrays": [_fill(arrays.PAGE_SETUP), _fill(arrays.PAGE_ROW), arrays.PAGE_END],
    "model": [model.LOAD, _fill(model.EMBED), _fill(model.SWEEP)],
    "page_minilm": [page_minilm.LOAD, _fill(page_minilm.EMBED)],
}


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names the script defines, names it reads), top-level await allowed as in Pyodide's runPythonAsync."""
    tree = compile(source, "<page>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    defined, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return defined, read


@pytest.mark.parametrize("page", list(PAGES))
def test_every_name_a_page_script_reads_is_defined(page):
    known = set(dir(builtins)) | PAGE_NAMES
    for i, source in enumerate(PAGES[page]):
        defined, read = _names(source)
        known |= defined
        assert read <= known, f"{page} script {i} reads {sorted(read - known)}, which nothing defines before it"


def test_the_check_finds_the_missing_import_it_was_written_for():
    before = generate.PAGE_LOAD.replace("import time\n", "", 1)   # bench/generate.py's load script until df0fff8
    assert before != generate.PAGE_LOAD
    defined, read = _names(before)
    assert "time" in read - defined - set(dir(builtins)) - PAGE_NAMES
