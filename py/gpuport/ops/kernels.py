"""WGSL kernels as the device runs them: a kernel (its shader file in shaders/ and binding layout), one
launch of it (workgroups, uniforms, override constants), and the register-blocked matmul variants."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from . import wgsl
from .pipelines import PipelineSpec

# Binding kinds, in binding order: inputs, then the output, then (for kernels that can meet invalid data)
# the device's error buffer, then the uniforms.
READ, WRITE, ERROR, UNIFORM = "read", "rw", "error", "uniform"


@dataclass(frozen=True)
class KernelDef:
    """A WGSL kernel: its shader file and bind group layout."""

    name: str
    shader: str
    bindings: tuple[str, ...]
    entry_point: str = "main"

    @property
    def source(self) -> str:
        return shader_source(self.shader)

    @property
    def needs(self) -> tuple[int, int]:
        """What the kernel asks of the device, read from its WGSL: (invocations per workgroup at the
        default constants, bytes of workgroup memory)."""
        return _needs(self.shader)


@dataclass
class Launch:
    """One dispatch of a kernel over whole buffers: workgroups, uniforms and override constants."""

    kernel: KernelDef
    inputs: list[Any]            # Tensors or Parts (None where an optional input is absent)
    output: Any                  # Tensor or Part
    workgroups: tuple[int, int, int]
    uniforms: bytes
    constants: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> PipelineSpec:
        """The pipeline this launch needs."""
        k = self.kernel
        return PipelineSpec(k.name, k.source, k.entry_point,
                            tuple(sorted((n, float(v)) for n, v in self.constants.items())), k.bindings)


def shaders_dir() -> Path:
    """shaders/ inside an installed wheel, else the repository's shaders/ (editable install)."""
    inside = Path(__file__).resolve().parents[1] / "shaders"
    return inside if inside.is_dir() else Path(__file__).resolve().parents[3] / "shaders"


@cache
def shader_source(name: str) -> str:
    return (shaders_dir() / name).read_text(encoding="utf-8")


@cache
def _needs(shader: str) -> tuple[int, int]:
    source = shader_source(shader)
    return wgsl.invocations(source) or ELEMENTWISE_WG, (wgsl.workgroup_bytes(source) or (0, []))[0]


def pack_uniforms(*fields: int | float) -> bytes:
    """Pack scalars as a WGSL uniform struct: Python int -> u32, float -> f32, padded to 16 bytes."""
    fmt = "".join("I" if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else "f" for v in fields)
    data = struct.pack("<" + fmt, *fields)
    return data + b"\0" * (-len(data) % 16)


def grid(groups: int, max_per_dim: int = 65535) -> tuple[int, int, int]:
    """Spread a 1-D workgroup count over x and y so no dimension exceeds the device limit."""
    if groups <= max_per_dim:
        return (max(groups, 1), 1, 1)
    return (max_per_dim, math.ceil(groups / max_per_dim), 1)


@dataclass(frozen=True)
class RegisterBlock:
    """A register-blocked matmul variant: its layout ("tb": B is (N, K); "nb": B is (K, N)), rows R and
    columns C (vec4 column groups for "nb") per invocation. Register-blocked, barrier-free, vec4 loads (K,
    and N without transpose_b, multiples of 4): chosen per adapter by measurement (tuning.py)."""

    key: str
    layout: str
    rows: int
    cols: int

    @property
    def kernel(self) -> KernelDef:
        return KernelDef(f"matmul_{self.key}", f"matmul_{self.key}.wgsl", (READ, READ, READ, WRITE, UNIFORM))

    @property
    def cols_per_invocation(self) -> int:
        return self.cols if self.layout == "tb" else 4 * self.cols


# "rb_tb16x8": transpose_b, 16 rows x 8 columns per invocation (shaders/generate_matmul_rb.py writes them)
RB_VARIANTS: dict[str, RegisterBlock] = {
    key: RegisterBlock(key, key[3:5], int(key[5:].split("x")[0]), int(key.split("x")[1]))
    for key in ("rb_tb16x8", "rb_tb8x8", "rb_tb8x4", "rb_nb16x4", "rb_nb8x4", "rb_nb8x2")}
# Measured fastest on lavapipe for MiniLM's shapes: what runs until tuning.py measured this adapter.
RB_DEFAULT = {"tb": "rb_tb16x8", "nb": "rb_nb16x4"}
RB_WG = 16

ELEMENTWISE_WG = 256
ATTENTION_MAX_HEAD_DIM = 256
