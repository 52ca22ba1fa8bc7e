"""The JS half's version marks (backends/jsmodules.py refuses a registered module of another release, so
every module it checks, and the wasm loader, must carry this package's version) and what the wheel carries.
The registration itself runs only in a page: e2e/test_page_jsmodules.py and the bare-Pyodide lanes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import gpuport

ROOT = Path(__file__).resolve().parents[1]
MARKED = ("bridge.js", "idb.js", "threads.js", "wasm.js")


@pytest.mark.parametrize("name", MARKED)
def test_js_modules_carry_the_package_version(name):
    text = (ROOT / "web" / name).read_text(encoding="utf-8")
    found = re.findall(r'^export const VERSION = "([^"]+)";', text, flags=re.M)
    assert found == [gpuport.__version__], f"web/{name}: VERSION {found}, the package is {gpuport.__version__}"


def test_package_version_is_pyprojects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == gpuport.__version__


def test_python_registers_exactly_the_marked_modules():
    """jsmodules reads these files from the installed package (gpuport/web/ is web/ in the wheel): each
    one it imports is marked with the version, and exists."""
    source = (ROOT / "py" / "gpuport" / "backends" / "jsmodules.py").read_text(encoding="utf-8")
    assert sorted(set(re.findall(r'"(\w+\.js)"', source))) == sorted(MARKED)
    assert all((ROOT / "web" / name).is_file() for name in MARKED)
