"""Types shared across the package, at its bottom: an op call, the placement decision made for it, and a llama
block's weights as the host kernels take them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Where work runs: the runtime's GPU device, the host (NumPy or the SIMD host kernels), or nowhere yet (a page
# whose device is lost records the call and replays it when the next await recovers the device).
DEVICE, HOST, DEFERRED = "webgpu", "cpu", "deferred"


@dataclass
class OpCall:
    """A validated op call: inputs in binding order (None for an absent optional one), output shape, the
    attributes its NumPy reference takes as keywords; `workload` is what backend="auto" estimated of it."""

    op: str
    names: tuple[str, ...]
    inputs: list[Any]
    out_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    workload: Any = None

    @property
    def host_known(self) -> bool:
        """The host has every input's values (the host can answer without a readback)."""
        return all(t is None or t.known_values() is not None for t in self.inputs)


@dataclass(frozen=True)
class Operand:
    """An input of a call that is not a Tensor (an array of gpuport.xp), as placement weighs it: its shape, whether
    only the host holds its values (`on_host`), and whether the host knows them (`host_known`; a device array whose
    values were read back is known on both sides)."""

    shape: tuple[int, ...]
    on_host: bool
    host_known: bool

    @property
    def host(self) -> bool | None:
        """Answers as a Tensor's host copy does for auto's workload model: not None where the host knows it."""
        return True if self.host_known else None


@dataclass
class Decision:
    """Where one call runs (DEVICE, HOST or DEFERRED), by which strategy, and why.

    Strategies on the device: "native", "f16", "simplified_shader", "layer_decomposition", "tiled",
    "chunked_attention", "head_partitioning", "partitioned_kv". On the host: "cpu" (a GPU runtime answering
    on the host) or "native" (the cpu backend, whose kernels are the host's)."""

    where: str
    strategy: str
    reason: str

    @property
    def on_host(self) -> bool:
        return self.where == HOST


@dataclass(frozen=True)
class LlamaBlock:
    """A llama block's weights as the host kernels' llama_layers take them (simd_ops), checked once: the arrays
    (held, so their addresses stay valid: attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down) and their
    shape."""

    arrays: tuple[np.ndarray, ...]
    addresses: tuple[int, ...]
    dim: int
    heads: int
    kv_heads: int
    ffn: int
    kind_id: int
    eps: float
