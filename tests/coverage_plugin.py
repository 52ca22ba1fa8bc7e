"""The coverage matrix in a pytest run (loaded by tests/conftest.py and e2e/conftest.py): the `coverage_matrix`
fixture the parity tests record their proofs into, and at the session's end the run's part of the matrix written to
e2e/report/coverage-<part>.json (or --coverage-dir). With `--require-coverage=PART` (native: wgpu-py and the native C kernels;
browsers: the browser engines; all) the session fails when a cell the design requires of those engines is empty,
naming each; `--coverage-rows=PATTERN` narrows the requirement to the rows matching it."""

from __future__ import annotations

from pathlib import Path

import pytest
from coverage_matrix import DEVICE_ENGINES, HOST_ENGINES, REPORT_DIR, Matrix, required

PARTS = {"native": ("wgpu-native", "native"),
         "browsers": tuple(e for e in [*DEVICE_ENGINES, *HOST_ENGINES] if e not in ("wgpu-native", "native")),
         "all": (*DEVICE_ENGINES, *HOST_ENGINES)}
_MATRIX = Matrix()
# the SIMD host kernels' entry points (simd_ops.SimdKernels; llama_block only prepares a block's weights)
HOST_KERNELS = ("matmul", "gelu", "quick_gelu", "softmax", "layer_norm", "attention", "encoder_layer", "q_matmul",
                "llama_layers", "decoder_layers", "matmul_threads", "greedy")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coverage matrix (docs/testing.md)")
    group.addoption("--require-coverage", choices=sorted(PARTS), default=None,
                    help="fail the session when a required cell of these engines' part of the matrix is empty")
    group.addoption("--coverage-rows", default="*", help="only require the rows matching this pattern")
    group.addoption("--coverage-part", default=None,
                    help="name of the part of the matrix this run writes (default: --require-coverage's, else 'run')")
    group.addoption("--coverage-dir", default=str(REPORT_DIR), help="where it writes it (default: e2e/report)")


@pytest.fixture(scope="session")
def coverage_matrix() -> Matrix:
    """The matrix of this run: parity tests record what they proved, where."""
    return _MATRIX


def design() -> list[tuple[str, str]]:
    """The required cells for gpuport as it is now: every built-in kernel, each family of gpuport.xp's generated
    kernels (those and a user kernel from each thread a page drives its device from), those the constrained tier's
    plans dispatch (asked of a planner with its limits), and every SIMD host kernel."""
    from gpuport.backends.capabilities import CONSTRAINED_BUDGET, SPEC_DEFAULT_LIMITS
    from gpuport.host.simd_ops import SimdKernels
    from gpuport.ops.opspecs import KERNEL_DEFS, OPS
    from gpuport.placement.planner import Planner
    from gpuport.xp.device import FAMILIES

    planner = Planner({**SPEC_DEFAULT_LIMITS, **CONSTRAINED_BUDGET}, {}, "constrained", "f32", False, True, {})
    constrained = sorted({spec.label for op in OPS for spec in planner.pipeline_specs(op)})
    host = [k for k in HOST_KERNELS if hasattr(SimdKernels, k)]
    generated = [f"xp_{family}" for family in FAMILIES]   # gpuport.xp's kernel families (tests/xp_cases.py)
    return required(sorted(KERNEL_DEFS) + generated, constrained, host, bridged=["user", *generated])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    part = config.getoption("--coverage-part") or config.getoption("--require-coverage") or "run"
    if _MATRIX.cells:
        _MATRIX.save(Path(config.getoption("--coverage-dir")) / f"coverage-{part}.json")
    need = config.getoption("--require-coverage")
    if need is None:
        return
    missing = _MATRIX.missing(design(), PARTS[need], config.getoption("--coverage-rows"))
    if missing:
        config.coverage_missing = missing   # read by the terminal summary
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    missing = getattr(config, "coverage_missing", None)
    if config.getoption("--require-coverage") is None:
        return
    if missing:
        terminalreporter.section("coverage matrix: required cells no test proved", red=True)
        for row, column in missing:
            terminalreporter.line(f"MISSING {row} on {column}")
        terminalreporter.line("(docs/testing.md: the covering design; a parity case that proved it was removed or "
                              "no longer runs there)")
    else:
        terminalreporter.line(f"coverage matrix: every required cell of {config.getoption('--require-coverage')} "
                              f"is proven ({len(_MATRIX.cells)} cells filled)")
