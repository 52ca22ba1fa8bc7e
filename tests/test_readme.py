"""Every Python example in README.md runs as written, natively: scripts as scripts, a test file (one that
defines `test_` functions) through pytest with gpuport's plugin in its native lane. Page-only Python (```py
blocks: top-level await in Pyodide) runs in a browser instead: e2e/test_page_jsmodules.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gpuport

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
PY = str(Path(gpuport.__file__).resolve().parents[1])   # this checkout's package, first


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, tmp_path):
    code = BLOCKS[index]
    env = dict(os.environ, PYTHONPATH=PY + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if re.search(r"^(async )?def test_", code, re.M):
        (tmp_path / "test_readme_example.py").write_text(code, encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-p", "gpuport.testing.plugin", "-p", "no:cacheprovider",
               "--gpuport-lanes=native", "-q", "test_readme_example.py"]
    else:
        (tmp_path / "example.py").write_text(code, encoding="utf-8")
        cmd = [sys.executable, "example.py"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README block {index} failed:\n{code}\n--- output ---\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
