"""The coverage matrix's check (docs/testing.md, tests/coverage_matrix.py) at work, and the design it checks.

The demonstration is a real run of the parity cases: with the one case that dispatches the KV cache's append kernel
natively (llama_tiny_forward_matches_the_reference), the required cell `kernel:kv_write` on wgpu-py is proven; with the
case removed from the run, the run fails naming that cell, though every test it ran passed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from coverage_matrix import F16_ENGINES, Matrix, kernel_row, required
from coverage_plugin import design
from gpuport.ops.opspecs import KERNEL_DEFS
from gpuport.xp.device import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def _parity_run(tmp_path: Path, *selection: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/test_kernels.py",
                           "--require-coverage=native", "--coverage-rows=kernel:kv_write", "--coverage-part=demo",
                           f"--coverage-dir={tmp_path}", *selection],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_case_that_dispatches_a_kernel_fills_its_required_cell(tmp_path):
    done = _parity_run(tmp_path, "-k", "webgpu-llama_tiny_forward_matches_the_reference")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "every required cell of native is proven" in done.stdout, done.stdout[-2000:]
    assert Matrix.load(tmp_path / "coverage-demo.json").filled("kernel:kv_write", "wgpu-native/main/*")


def test_removing_the_case_that_proves_a_kernel_fails_the_run_naming_the_cell(tmp_path):
    done = _parity_run(tmp_path, "-k", "webgpu-gelu_7x13")   # the run without the llama case
    assert done.returncode == 1 and "1 passed" in done.stdout, done.stdout[-3000:]
    assert "MISSING kernel:kv_write on wgpu-native/*/*" in done.stdout, done.stdout[-2000:]


def test_the_design_requires_every_kernel_on_every_engine_and_the_bridges_kernels_on_every_thread():
    cells = set(design())
    engines = ("dawn/*/*", "wgpu-firefox/*/*", "wgpu-native/*/*")
    threads = ("dawn/worker/*", "dawn/main/*", "wgpu-firefox/worker/*", "wgpu-firefox/main/*")
    for name in KERNEL_DEFS:
        for column in engines:
            wanted = not name.endswith("_f16") or column.split("/")[0] in F16_ENGINES
            assert ((f"kernel:{name}", column) in cells) == wanted, (name, column)
        # the compiler does not differ by thread: a built-in kernel is not asked of each thread again
        assert not any((f"kernel:{name}", column) in cells for column in threads), name
    for row in ["kernel:user", *(f"kernel:xp_{family}" for family in FAMILIES)]:   # the bridge does differ
        assert all((row, column) in cells for column in (*engines, *threads)), row
    constrained = {row for row, column in cells if column == "dawn/*/constrained"}
    # the tier's 64 invocations: the small matmul serves matmul, never the tiled or register-blocked ones
    assert "kernel:matmul_small" in constrained and "kernel:matmul" not in constrained
    assert not any(row.startswith("kernel:matmul_rb") for row in constrained)
    assert {("host:llama_layers", "spidermonkey/*/*"), ("host:encoder_layer", "v8/pool/*")} <= cells


def test_a_cell_is_filled_by_any_proof_matching_it_and_missing_cells_are_named():
    m = Matrix()
    m.record("t1", [{"tier": "core", "kernels": {"softmax": 2}, "strategies": {"native": 2}}], "dawn", "v8", "worker")
    m.record("t2", [{"tier": "cpu", "host": {"wasm": {"gelu": 1}}}], None, "v8", "worker")
    assert m.filled("kernel:softmax", "dawn/*/*") == ["t1"] and m.filled("host:gelu", "v8/*/*") == ["t2"]
    assert not m.filled("strategy:native", "*")   # "native" and "cpu" are no strategy to prove
    cells = required(["softmax", "gelu", "gelu_f16"], [], ["gelu"])
    missing = m.missing(cells, engines=["dawn", "v8"])
    assert ("kernel:softmax", "dawn/*/*") not in missing and ("kernel:gelu", "dawn/*/*") in missing
    assert ("kernel:user", "dawn/main/*") in missing and ("kernel:user", "dawn/worker/*") in missing
    assert ("kernel:gelu_f16", "dawn/*/*") not in missing   # SwiftShader has no shader-f16: not required there
    # a pipeline's label as its row: generated kernels by family (one pipeline per expression), user kernels as one
    assert kernel_row("xp_reduce:0123abcd45") == "kernel:xp_reduce" and kernel_row("main@1a2b3c4d") == "kernel:user"
    assert kernel_row("matmul_rb_tb16x8") == "kernel:matmul_rb_tb16x8"
