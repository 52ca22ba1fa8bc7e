"""What gpuport keeps between runs (pipeline manifests, selector history) and reads from elsewhere (chunk
manifests), read back defensively: where records live, `parse_json` (bounded size and nesting, checked
before anything is built, so no input can exhaust the JSON decoder's recursion), the `need_*` schema checks
(RecordError naming the field) and `report_bad_record` (a RecordWarning: the record is ignored and its
owner rewrites it). A leaf module: what reads records imports it without pulling in a backend.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..platform import IN_PYODIDE

MAX_RECORD_BYTES = 4 << 20   # a full pipeline manifest (256 specialised shaders) is ~1 MiB
MAX_DEPTH = 8                # the deepest record gpuport writes nests 4 levels

T = TypeVar("T")


class RecordError(ValueError):
    """A record or manifest that cannot be trusted: `field` names where (e.g. "chunks[3].end"), the
    message says what is wrong there."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}" if field else problem)


class RecordWarning(UserWarning):
    """A stored record was unusable: it was ignored (the optimisation it held is lost) and is rewritten."""


# What each kind of record is called on disk (a folder under cache_dir()) and in IndexedDB (store, key prefix).
STORE_PLACES = {"pipelines": ("manifests", ""), "selector": ("meta", "selector:"), "adapter": ("meta", "adapter:")}


def cache_dir() -> Path:
    """Where native runs keep records: $GPUPORT_CACHE, else $XDG_CACHE_HOME/gpuport, else ~/.cache/gpuport."""
    if os.environ.get("GPUPORT_CACHE"):
        return Path(os.environ["GPUPORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuport"


def record_location(kind: str, scope: str) -> str:
    """Where store_for(kind) keeps the record of `scope`, for messages."""
    if IN_PYODIDE:
        store, prefix = STORE_PLACES[kind]
        return f"IndexedDB {store}/{prefix}{scope}"
    return str(cache_dir() / kind / f"{scope}.json")


def report_bad_record(kind: str, scope: str, problem: str) -> None:
    """Say once that a stored record was ignored (its owner rewrites it)."""
    warnings.warn(f"gpuport: the stored {kind} record {record_location(kind, scope)} was ignored and will be "
                  f"rewritten: {problem}", RecordWarning, stacklevel=3)


# -- bounded parsing -----------------------------------------------------------------------------------

# JSON strings (with escapes) and the characters that open, close or separate containers.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKENS = re.compile(_STRING + r'|[\[\]{},]')
_STRING_OR_BRACKET = re.compile(_STRING + r'|[\[\]{}]')


def parse_json(text: str | bytes, max_bytes: int = MAX_RECORD_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """JSON of at most `max_bytes`, nested at most `max_depth` containers deep (else RecordError naming
    the field where it goes deeper). The depth is checked before parsing, so no input can exhaust the
    recursion of the JSON decoder."""
    if len(text) > max_bytes:
        raise RecordError("", f"{len(text):,} bytes or more, over the {max_bytes:,} a valid one can have")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError("", f"not UTF-8 text: {exc}") from None
    elif "\ufffd" in text:
        raise RecordError("", "not the UTF-8 text gpuport writes (undecodable bytes)")
    _check_depth(text, max_depth)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError("", f"not JSON: {exc}") from None


def _deepest(text: str) -> int:
    depth = deepest = 0
    for tok in _STRING_OR_BRACKET.findall(text):
        if tok in ("{", "["):
            depth += 1
            deepest = max(deepest, depth)
        elif tok in ("}", "]"):
            depth = max(depth - 1, 0)
    return deepest


def _check_depth(text: str, max_depth: int) -> None:
    if _deepest(text) <= max_depth:
        # the common case, without following keys to name a field (that took 18 of 23 ms of parsing MiniLM's
        # chunk manifest in Firefox)
        return
    # frames: [kind, key or index]; a string followed by ":" is the key of the frame it is in
    stack: list[list[Any]] = []
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok in ("{", "["):
            if len(stack) >= max_depth:
                raise RecordError(field_path(stack), f"nested deeper than {max_depth} levels")
            stack.append([tok, None if tok == "{" else 0])
        elif tok in ("}", "]"):
            if stack:
                stack.pop()
        elif tok == ",":
            if stack:
                stack[-1][1] = stack[-1][1] + 1 if stack[-1][0] == "[" else None
        elif stack and stack[-1][0] == "{" and text[m.end():m.end() + 64].lstrip().startswith(":"):
            try:
                stack[-1][1] = json.loads(tok)
            except ValueError:
                stack[-1][1] = tok


def field_path(frames: list[list[Any]]) -> str:
    """`chunks[3].end` from the keys and indices leading there."""
    out = ""
    for kind, key in frames:
        if kind == "[":
            out += f"[{key}]"
        elif isinstance(key, str) and key.isidentifier():
            out += f".{key}" if out else key
        elif key is not None:
            out += f"[{key!r}]"
    return out


# -- schema checks: each returns the value or raises RecordError naming the field ---------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")


def need_key(data: dict, key: str, field: str) -> Any:
    """data[key], which must be there."""
    if key not in data:
        raise RecordError(field, "missing")
    return data[key]


def need(data: dict, key: str, check: Callable[..., T], where: str = "", **bounds: Any) -> T:
    """`check(data[key], field, **bounds)` with the field named `<where>.<key>` (RecordError if missing)."""
    field = f"{where}.{key}" if where else key
    return check(need_key(data, key, field), field, **bounds)


def need_dict(value: Any, field: str) -> dict:
    """A JSON object."""
    if not isinstance(value, dict):
        raise RecordError(field, f"must be an object, not {_kind(value)}")
    return value


def need_list(value: Any, field: str, length: int | None = None) -> list:
    """A JSON array (of `length` items when given)."""
    if not isinstance(value, list):
        raise RecordError(field, f"must be a list, not {_kind(value)}")
    if length is not None and len(value) != length:
        raise RecordError(field, f"must have {length} items, not {len(value)}")
    return value


def need_str(value: Any, field: str, optional: bool = False) -> str:
    """A string (or null with `optional`)."""
    if not isinstance(value, str) and not (optional and value is None):
        raise RecordError(field, f"must be a string{' or null' if optional else ''}, not {_kind(value)}")
    return value


def need_hex64(value: Any, field: str) -> str:
    """A sha256 as hexdigest() writes it (what it is compared with)."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RecordError(field, f"must be a sha256 (64 lowercase hex digits), not {short_repr(value)}")
    return value


def need_int(value: Any, field: str, low: int = 0, high: int | None = None) -> int:
    """An integer (not a boolean, not a float) in low..high."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(field, f"must be an integer, not {_kind(value)}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise RecordError(field, f"{value} is out of range (must be {bounds})")
    return value


def need_number(value: Any, field: str, minimum: float | None = 0.0, positive: bool = False) -> float:
    """A finite number, at least `minimum` (None: any) and, with `positive`, above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(field, f"must be a number, not {_kind(value)}")
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (positive and value <= 0):
        bound = "> 0" if positive else "" if minimum is None else f">= {minimum:g}"
        raise RecordError(field, f"{value} is out of range (must be finite{' and ' + bound if bound else ''})")
    return float(value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"{type(value).__name__} {short_repr(value)}")


def short_repr(value: Any) -> str:
    """repr(value), cut to 40 characters for messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
