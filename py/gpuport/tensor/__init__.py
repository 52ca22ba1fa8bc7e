"""The tensor: an array of one runtime (tensor.py), where its values live (storage.py: one buffer, blocks, the host,
lost, deferred) and how recovery rebuilds it after a device loss (lineage.py).

Layer: above the floor; imports only the floor (its runtime is a type-only back-reference).
"""

from .tensor import Tensor

__all__ = ["Tensor"]
