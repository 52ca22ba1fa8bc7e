"""What the pytest plugin runs inside a page (standard library and NumPy only; natively the plugin uses
`encode_args`): modules made from source text, and one test run with its outcome as JSON.

Test modules are compiled with their real file name (tracebacks show their lines through linecache) and
their plain `assert a == b` statements rewritten so a failure shows both operands, as pytest's do.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import importlib.util
import inspect
import io
import json
import linecache
import sys
import traceback
import types
from typing import Any

import numpy as np

from . import stand_in

_REPR_LIMIT = 400


def ensure_pytest() -> None:
    """`import pytest` finds pytest, or (in a page, where it is absent) gpuport.testing.stand_in."""
    if "pytest" not in sys.modules and importlib.util.find_spec("pytest") is None:
        sys.modules["pytest"] = stand_in


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + f"... ({len(text)} characters)"


def explain(text: str, left: Any, right: Any) -> str:
    """The message of a failed rewritten comparison: its source and both operands."""
    return f"assert {text}\n  left:  {_short(left)}\n  right: {_short(right)}"


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


class _AssertRewriter(ast.NodeTransformer):
    """`assert left OP right` (one comparison, no message) -> both operands evaluated once, in order, into
    temporaries; the same comparison asserted with `explain(...)` as its message."""

    def __init__(self, source: str) -> None:
        self.source, self.count = source, 0

    def visit_Assert(self, node: ast.Assert) -> Any:
        test = node.test
        if node.msg is not None or not isinstance(test, ast.Compare) or len(test.ops) != 1:
            return node
        self.count += 1
        left, right = f"_gp_assert_left_{self.count}", f"_gp_assert_right_{self.count}"
        text = ast.get_source_segment(self.source, test) or "<assertion>"
        statements = [
            ast.Assign([ast.Name(left, ast.Store())], test.left),
            ast.Assign([ast.Name(right, ast.Store())], test.comparators[0]),
            ast.Assert(ast.Compare(_load(left), test.ops, [_load(right)]),
                       ast.Call(_load("_gp_explain"), [ast.Constant(text), _load(left), _load(right)], [])),
        ]
        for statement in statements:
            ast.copy_location(statement, node)
            ast.fix_missing_locations(statement)
        return statements


def compile_module(source: str, filename: str, rewrite_asserts: bool = True) -> types.CodeType:
    tree = ast.parse(source, filename)
    if rewrite_asserts:
        tree = ast.fix_missing_locations(_AssertRewriter(source).visit(tree))
    return compile(tree, filename, "exec")


def add_module(name: str, source: str, filename: str, rewrite_asserts: bool = True) -> types.ModuleType:
    """Run `source` as module `name` (parents of a dotted name become empty packages) and register it."""
    ensure_pytest()
    parent = None
    for i, part in enumerate(name.split(".")[:-1]):
        dotted = ".".join(name.split(".")[:i + 1])
        if dotted not in sys.modules:
            package = types.ModuleType(dotted)
            package.__path__ = []
            sys.modules[dotted] = package
            if parent is not None:
                setattr(parent, part, package)
        parent = sys.modules[dotted]
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__dict__["_gp_explain"] = explain
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[name] = module
    try:
        exec(compile_module(source, filename, rewrite_asserts), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    if parent is not None:
        setattr(parent, name.rsplit(".", 1)[1], module)
    return module


# -- arguments: literals and NumPy arrays cross from pytest into the page ------------------------------

def encode_args(values: dict[str, Any]) -> str:
    """Test arguments as JSON: Python literals (checked to survive repr -> literal_eval) and NumPy arrays.
    Anything else raises TypeError naming the argument."""
    out = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value)
            out[name] = {"ndarray": [data.dtype.str, list(data.shape), base64.b64encode(data.tobytes()).decode()]}
            continue
        text = repr(value)
        try:
            same = ast.literal_eval(text) == value
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            same = False
        if not same:
            raise TypeError(f"argument {name!r} ({type(value).__name__}) cannot be sent to the page: "
                            "browser lanes take Python literals and NumPy arrays (fixtures and parameters)")
        out[name] = {"literal": text}
    return json.dumps(out)


def decode_args(text: str) -> dict[str, Any]:
    values = {}
    for name, item in json.loads(text).items():
        if "ndarray" in item:
            dtype, shape, data = item["ndarray"]
            values[name] = np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
        else:
            values[name] = ast.literal_eval(item["literal"])
    return values


# -- one test -----------------------------------------------------------------------------------------

def _resolve(module: str, qualname: str) -> Any:
    """`test_fn` or `TestClass.test_method` (on a fresh instance, as pytest does)."""
    target: Any = sys.modules[module]
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        target = getattr(target, part)
        if inspect.isclass(target) and i < len(parts) - 1:
            target = target()
    return target


def _traceback(exc: BaseException) -> str:
    """The exception's traceback from the test's own frame on (this module's frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _is_skip(exc: BaseException) -> bool:
    """pytest.skip(): the stand-in's, or pytest's own where the page has pytest."""
    pytest = sys.modules.get("pytest")
    return isinstance(exc, (stand_in.Skipped, getattr(getattr(pytest, "skip", None), "Exception", stand_in.Skipped)))


async def run_test(module: str, qualname: str, args: str, rt: Any) -> str:
    """Run one test (sync or async) with `args` (encode_args) and `gp_runtime=rt` if it takes it.
    Returns JSON: outcome (passed, failed, skipped), error type and message, traceback, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    result: dict[str, Any] = {"outcome": "passed"}
    try:
        fn = _resolve(module, qualname)
        kwargs = decode_args(args)
        if "gp_runtime" in inspect.signature(fn).parameters:
            kwargs["gp_runtime"] = rt
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = fn(**kwargs)
            if inspect.isawaitable(value):
                await value
    except BaseException as exc:  # the test's outcome, whatever it raised, is reported, not raised here
        if _is_skip(exc):
            result = {"outcome": "skipped", "message": str(exc)}
        else:
            result = {"outcome": "failed", "error": type(exc).__name__, "message": str(exc),
                      "traceback": _traceback(exc)}
    result.update(stdout=out.getvalue(), stderr=err.getvalue())
    return json.dumps(result)
