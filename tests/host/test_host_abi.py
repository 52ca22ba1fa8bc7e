"""The host kernels' C ABI is listed once (gpuport.host.host_abi): the committed header the C sources include is
what the table generates, clang rejects a definition or an export the table does not match, and a built
WebAssembly module whose exports' types differ from the table fails its build check."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from gpuport.host import host_abi
from gpuport.host.wasm_module import check, module_path, parse, problems

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "hostkernels"


def test_header_is_what_the_table_generates():
    committed = (ROOT / host_abi.HEADER).read_text(encoding="utf-8")
    assert committed == host_abi.header(), \
        f"{host_abi.HEADER} is stale: regenerate it with `{host_abi.REGENERATE}`"


def test_every_source_sees_the_header():
    """simd.h includes abi.h and every kernel source includes simd.h, so every definition is checked."""
    assert '#include "abi.h"' in (SOURCES / "simd.h").read_text(encoding="utf-8")
    for source in SOURCES.glob("*.c"):
        assert '#include "simd.h"' in source.read_text(encoding="utf-8"), source


def _compile(flags: str, exports: tuple[host_abi.Export, ...], tmp_path: Path) -> str:
    """clang's complaints about rowwise.c (gp_gelu, gp_softmax, gp_layer_norm) against a header made from
    `exports`, with the Makefile's `flags` variable; "" when it compiles."""
    clang = shutil.which("clang-19")
    assert clang, "clang-19 is missing: `make setup` installs it"
    cflags = subprocess.run(["make", "-s", "--no-print-directory", "--eval", f"print-flags: ; @echo $({flags})",
                             "print-flags"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in ("simd.h", "vecmath.h", "vecmath4.h", "rowwise.c"):
        shutil.copy(SOURCES / name, tmp_path / name)
    (tmp_path / "abi.h").write_text(host_abi.header(exports), encoding="utf-8")
    done = subprocess.run([clang, *cflags, "-fsyntax-only", str(tmp_path / "rowwise.c")], capture_output=True,
                          text=True, timeout=120)
    return "" if done.returncode == 0 else done.stderr


@pytest.mark.parametrize("flags", ["WASM_CFLAGS", "NATIVE_CFLAGS"])
def test_clang_holds_the_sources_to_the_table(flags, tmp_path):
    assert _compile(flags, host_abi.EXPORTS, tmp_path) == ""
    gelu = next(e for e in host_abi.EXPORTS if e.name == "gp_gelu")
    float_n = dataclasses.replace(gelu, params=gelu.params[:-1] + (host_abi.Param("float", "n"),))
    retyped = tuple(float_n if e is gelu else e for e in host_abi.EXPORTS)
    assert "conflicting types for 'gp_gelu'" in _compile(flags, retyped, tmp_path)
    dropped = tuple(e for e in host_abi.EXPORTS if e is not gelu)
    assert "no previous prototype for function 'gp_gelu'" in _compile(flags, dropped, tmp_path)


def test_the_module_check_compares_export_types_with_the_table():
    mod = check(module_path(ROOT))
    assert {e.name: e.wasm_type() for e in host_abi.EXPORTS}.items() <= mod.signatures.items()
    mod = parse(module_path(ROOT).read_bytes())
    mod.signatures["gp_layer_norm"] = (("i32",) * 7, ())
    del mod.signatures["gp_gelu"]
    assert problems(mod) == [
        "does not export gp_gelu",
        "exports gp_layer_norm as (i32, i32, i32, i32, i32, i32, i32) -> (), host_abi says "
        "(i32, i32, i32, i32, i32, i32, f32) -> ()"]
