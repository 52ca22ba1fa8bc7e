"""The generated shaders (shaders/generate.py): the committed files are what the generator writes now, no stale
generated file is left behind, each f16 twin keeps its f32 file's interface, and an f16 edit that no longer
fits its f32 source stops the generator. No GPU: the kernels themselves are tested in test_kernels.py
(tests/cases.py), test_quant_kernels.py and test_matmul_variants.py.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from gpuport.ops import kernels as K
from gpuport.ops.kernels import RB_VARIANTS
from gpuport.ops.wgsl import bindings

SHADERS = K.shaders_dir()
REGENERATE = "python shaders/generate.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """shaders/generate.py imported as it runs as a script: its directory first on the path, for its siblings
    (which leave sys.modules again, so their plain names shadow nothing later)."""
    before = set(sys.modules)
    sys.path.insert(0, str(SHADERS))
    try:
        return importlib.import_module("generate")
    finally:
        sys.path.remove(str(SHADERS))
        for name in set(sys.modules) - before:
            if Path(getattr(sys.modules[name], "__file__", None) or ".").parent == SHADERS:
                del sys.modules[name]


def test_generated_shaders_are_current(gen):
    stale = [name for name, text in gen.sources().items()
             if not (SHADERS / name).exists() or (SHADERS / name).read_text() != text]
    assert not stale, f"stale: {', '.join(f'shaders/{n}' for n in stale)}; run `{REGENERATE}` and commit the result"


def test_no_generated_file_is_left_behind(gen):
    written = set(gen.sources())
    marked = {p.name for p in SHADERS.glob("*.wgsl") if p.read_text().startswith(gen.GENERATED)}
    assert marked <= written, f"no longer generated, remove: {sorted(marked - written)}"
    assert {f"matmul_{key}.wgsl" for key in RB_VARIANTS} == {n for n in written if n.startswith("matmul_rb_")}


def _interface(source: str) -> tuple:
    """What a caller binds and sets: buffers, overrides, uniform structs, entry points with workgroup sizes."""
    return ([(b.index, b.kind, b.name) for b in bindings(source)],
            re.findall(r"^override\s+(\w+)\s*:\s*(\w+)\s*=\s*([^;]+);", source, re.M),
            re.findall(r"^struct\s+\w+\s*\{[^}]*\}", source, re.M),
            re.findall(r"@compute\s+@workgroup_size\(([^)]*)\)\s*fn\s+(\w+)", source))


def test_f16_twins_keep_the_f32_interface(gen):
    twins = gen.f16_twins.TWINS
    assert {f"{t.name}_f16.wgsl" for t in twins} == {p.name for p in SHADERS.glob("*_f16.wgsl")}
    for twin in twins:
        f32, f16 = (SHADERS / f"{twin.name}.wgsl").read_text(), (SHADERS / f"{twin.name}_f16.wgsl").read_text()
        assert "\nenable f16;\n" in f16, twin.name
        assert _interface(f16) == _interface(f32), twin.name


def test_an_edit_that_no_longer_fits_stops_the_generator(gen):
    gelu = next(t for t in gen.f16_twins.TWINS if t.name == "gelu")
    renamed = (SHADERS / "gelu.wgsl").read_text().replace("erf_as", "erf")
    with pytest.raises(ValueError, match=r"^gelu_f16\.wgsl: F16Fn: 'fn erf_as\(' occurs 0 times, not 1 in gelu\.wgsl"):
        gelu.derive(renamed)
