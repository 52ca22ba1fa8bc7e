"""pytest's test-writing API for a page, where pytest itself is not installed (Pyodide 0.27.7 ships it, but
not the packages it depends on): `import pytest` in a test module then finds this module.

Decorators (`mark.*`, `fixture`, `mark.parametrize`) leave the function as it is: the plugin chose the
test and its arguments natively. `raises`, `approx`, `fail`, `skip` and `param` behave as pytest's do.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np


class Skipped(BaseException):
    """pytest.skip() in a page: the plugin reports the test as skipped in that lane, with the reason."""


class Failed(AssertionError):
    """pytest.fail() in a page."""


def skip(reason: str = "") -> None:
    raise Skipped(reason)


def fail(reason: str = "", pytrace: bool = True) -> None:
    raise Failed(reason)


skip.Exception = Skipped  # type: ignore[attr-defined]
fail.Exception = Failed  # type: ignore[attr-defined]


class _Mark:
    """`mark.anything`, `mark.anything(...)`: both decorate as the identity."""

    def __getattr__(self, name: str) -> "_Mark":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return self


mark = _Mark()


def fixture(*args: Any, **kwargs: Any) -> Any:
    """Fixtures run natively; in the page the decorated function stays a plain function."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


def param(*values: Any, **kwargs: Any) -> tuple:
    return values


class RaisesContext:
    def __init__(self, expected: type[BaseException] | tuple[type[BaseException], ...], match: str | None) -> None:
        self.expected, self.match, self.value = expected, match, None

    def __enter__(self) -> "RaisesContext":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        if kind is None:
            raise Failed(f"DID NOT RAISE {self.expected}")
        if not issubclass(kind, self.expected):
            return False
        if self.match is not None and not re.search(self.match, str(value)):
            raise AssertionError(f"Regex pattern did not match.\n Regex: {self.match!r}\n Input: {str(value)!r}")
        self.value = value
        return True


def raises(expected: Any, *args: Any, match: str | None = None, **kwargs: Any) -> Any:
    """`with raises(E, match=...) as info:` (info.value is the exception), or raises(E, fn, *args)."""
    context = RaisesContext(expected, match)
    if not args:
        return context
    with context:
        args[0](*args[1:], **kwargs)
    return context


class approx:
    """Equality within rel (default 1e-6) or abs (default 1e-12) tolerance, as pytest.approx: numbers,
    sequences, dicts and NumPy arrays (elementwise)."""

    __array_ufunc__ = None    # `array == approx(...)`: NumPy defers to __eq__ instead of comparing elementwise
    __array_priority__ = 100

    def __init__(self, expected: Any, rel: float | None = None, abs: float | None = None,
                 nan_ok: bool = False) -> None:
        self.expected, self.nan_ok = expected, nan_ok
        self.rel = 1e-6 if rel is None else rel
        self.abs = 1e-12 if abs is None else abs

    def _close(self, got: Any, want: Any) -> bool:
        if isinstance(want, dict):
            return isinstance(got, dict) and got.keys() == want.keys() and all(
                self._close(got[k], want[k]) for k in want)
        if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
            g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
            return (g.shape == w.shape or w.ndim == 0) and bool(
                np.all(np.isclose(g, w, rtol=self.rel, atol=self.abs, equal_nan=self.nan_ok)))
        if isinstance(want, (list, tuple)):
            return isinstance(got, (list, tuple, np.ndarray)) and len(got) == len(want) and all(
                self._close(g, w) for g, w in zip(got, want))
        if math.isnan(want):
            return self.nan_ok and math.isnan(got)
        return got == want or abs(got - want) <= max(self.rel * abs(want), self.abs)

    def __eq__(self, other: Any) -> bool:
        try:
            return self._close(other, self.expected)
        except (TypeError, ValueError):
            return False

    def __repr__(self) -> str:
        return f"approx({self.expected!r}, rel={self.rel}, abs={self.abs})"


def importorskip(name: str, reason: str | None = None) -> Any:
    try:
        return __import__(name)
    except ImportError:
        skip(reason or f"could not import {name!r} in the page")


__all__: list[str] = ["Failed", "Skipped", "approx", "fail", "fixture", "importorskip", "mark", "param",
                      "raises", "skip"]
