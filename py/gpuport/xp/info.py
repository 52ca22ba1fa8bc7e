"""The standard's inspection API: `__array_namespace_info__()` says what the namespace can do, its devices (gpuport
runtimes) and the dtypes each can hold (float16 where the adapter has shader-f16, or on the host)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime import Runtime
from . import dtypes as D
from .core import default_runtime, device_runtime

# the standard's dtypes an array can hold (float16 is gpuport's own, beside them: not listed as the standard's)
_NAMES = {"bool": D.bool_, "int8": D.int8, "int16": D.int16, "int32": D.int32, "uint8": D.uint8, "uint16": D.uint16,
          "uint32": D.uint32, "float32": D.float32}


class Info:
    """What gpuport.xp offers (returned by `__array_namespace_info__()`)."""

    def capabilities(self) -> dict[str, Any]:
        """Boolean indexing and data-dependent shapes are supported (their sizes are read back); no fixed limit
        on the number of axes."""
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": None}

    def default_device(self) -> Runtime:
        """The runtime arrays go to when no device is given (xp.use sets it)."""
        return default_runtime()

    def devices(self) -> list[Runtime]:
        """The devices arrays can be placed on: the default runtime (any other open runtime is one too)."""
        return [default_runtime()]

    def default_dtypes(self, *, device: Runtime | None = None) -> dict[str, np.dtype]:
        """float32, int32 (also for indexing) and complex64 (named only: WGSL has no complex types)."""
        return {"real floating": D.DEFAULT_FLOAT, "complex floating": D.complex64, "integral": D.DEFAULT_INT,
                "indexing": D.DEFAULT_INDEX}

    def dtypes(self, *, device: Runtime | None = None, kind: str | tuple[str, ...] | None = None
               ) -> dict[str, np.dtype]:
        """The standard's dtypes arrays on `device` can hold, by name, of `kind` (a kind name or a tuple of them);
        float16, beside them, where the device computes it (xp.float16)."""
        if device is not None:
            device_runtime(device)
        held = dict(_NAMES)
        if kind is None:
            return held
        return {name: dt for name, dt in held.items() if D.isdtype(dt, kind)}


def __array_namespace_info__() -> Info:
    """The namespace's inspection object."""
    return Info()
