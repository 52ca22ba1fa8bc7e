"""(work in progress)

Layer: above runtime, beside models.
"""
import sys as _sys
from .core import Array, bind, use, read
from .creation import *  # noqa
from .elementwise import *  # noqa
from . import elementwise as _ew, creation as _cr
bind(namespace=_sys.modules[__name__], **{k: getattr(_ew, k) for k in dir(_ew) if not k.startswith("_")})
