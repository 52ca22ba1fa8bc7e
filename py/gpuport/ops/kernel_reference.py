"""A user kernel's NumPy twin (`rt.kernel(..., reference=fn)`): calling it by its contract, and comparing
it with the GPU's answer (`check=True`).

The contract: `fn(*arrays, uniforms=...)` gets one NumPy array per storage binding, in binding order,
with its tensor's shape and dtype: a writable array for each `read_write` binding, which fn writes in place
exactly as the WGSL does (elements the WGSL leaves alone keep their values), and a read-only view for each
`read` binding. `uniforms` is exactly what the dispatch was given (the list of numbers, the bytes, the NumPy
array, or None). A fn that also accepts `workgroups` (a parameter of that name, or **kwargs) gets the
dispatch's (x, y, z) as it. fn returns None.
fn always works on arrays of its own: a failing or misbehaving reference leaves every tensor unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ReferenceFailed, ReferenceMismatch
from .wgsl import Binding

# float32 tolerances of check=True: |gpu - reference| <= atol + rtol * |reference|. rtol 1e-5 is about 170
# units of f32 roundoff (u = 2**-24): room for fused multiply-adds, sums reassociated over ~100 terms and the
# few-ulp error WGSL allows its exp/log/pow; atol 1e-6 covers results near zero that come from cancellation.
# Integer bindings must match exactly.
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6


class Reference:
    """A reference function bound to one kernel: called by the contract, its misuse named."""

    def __init__(self, fn: Callable[..., Any], label: str, storage: Sequence[Binding] | None) -> None:
        if not callable(fn):
            raise TypeError(f"rt.kernel: reference must be a function of NumPy arrays, got {type(fn).__name__}")
        self.fn = fn
        self.label = label
        self.storage = None if storage is None else list(storage)
        self.fn_name = getattr(fn, "__qualname__", None) or repr(fn)
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):   # a builtin without a signature: its call says what is wrong
            self.signature = None
        params = self.signature.parameters.values() if self.signature is not None else ()
        # a builtin without a signature gets the whole contract, as before
        self.takes_workgroups = self.signature is None or any(
            p.name == "workgroups" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        if self.storage is not None:
            self._check_signature()

    def _keywords(self, uniforms: Any, workgroups: Any) -> dict[str, Any]:
        return {"uniforms": uniforms, **({"workgroups": workgroups} if self.takes_workgroups else {})}

    def _check_signature(self) -> None:
        """At rt.kernel time rather than at the first dispatch on a cpu-only browser."""
        if self.signature is None:
            return
        names = [b.name for b in self.storage or []]
        keywords = self._keywords(None, None)
        try:
            self.signature.bind(*names, **keywords)
        except TypeError as exc:
            raise TypeError(f"kernel {self.label!r}: its reference {self.fn_name}{self.signature} cannot be called "
                            f"as {self.fn_name}({', '.join(names + ['*', *keywords])}) ({exc}): it gets one array "
                            "per storage binding in binding order and the keyword uniforms= (and workgroups= where "
                            "it accepts it)") from None

    def describe(self, index: int, array: np.ndarray, writable: bool) -> str:
        name = self.storage[index].name if self.storage else f"tensor {index}"
        return (f"@binding({index}) {name}: {array.dtype} {tuple(array.shape)} "
                f"{'writable' if writable else 'read-only'}")

    def name_of(self, index: int) -> str:
        return self.storage[index].name if self.storage else f"tensor {index}"

    def run(self, arrays: list[np.ndarray], written: set[int], uniforms: Any, workgroups: tuple[int, ...]) -> None:
        """Call fn on `arrays` (those in `written` writable, the rest read-only) and check it kept the contract."""
        shapes = [(a.shape, a.dtype) for a in arrays]
        given = "; ".join(self.describe(i, a, i in written) for i, a in enumerate(arrays))
        try:
            result = self.fn(*arrays, **self._keywords(uniforms, workgroups))
        except Exception as exc:
            hint = ""
            if "read-only" in str(exc):
                hint = " (only the read_write bindings are writable; the read bindings are read-only views)"
            raise ReferenceFailed(f"kernel {self.label!r}: its reference {self.fn_name} raised "
                                  f"{type(exc).__name__}: {exc}{hint}; it was given {given}") from exc
        if result is not None:
            raise ReferenceFailed(f"kernel {self.label!r}: its reference {self.fn_name} returned a "
                                  f"{type(result).__name__}; a reference writes its outputs in place (out[...] = "
                                  f"values), as the WGSL writes its read_write bindings, and returns None; it was "
                                  f"given {given}")
        for i, (a, (shape, dtype)) in enumerate(zip(arrays, shapes)):
            if a.shape != shape or a.dtype != dtype:
                raise ReferenceFailed(f"kernel {self.label!r}: its reference {self.fn_name} changed "
                                      f"{self.describe(i, a, i in written)} from {dtype} {tuple(shape)}: write "
                                      "the values in place (out[...] = values), keep the array")


def compare(label: str, index: int, name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> None:
    """Raise ReferenceMismatch where |got - want| > atol + rtol*|want| (integers: any difference). NaN
    matches NaN, an infinity matches the same infinity."""
    if got.dtype.kind in "iu":
        rtol = atol = 0.0
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - w)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    err = np.where(same, 0.0, np.where(np.isnan(err), np.inf, err))
    bad = err > atol + rtol * np.abs(np.nan_to_num(w))
    if bad.any():
        at = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), err.shape)
        raise ReferenceMismatch(label, index, name, tuple(int(i) for i in at), got[at].item(), want[at].item(),
                                float(err[at]), int(bad.sum()), int(err.size), rtol, atol)
