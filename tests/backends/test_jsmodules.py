"""The JS half's version marks (backends/jsmodules.py refuses a registered module of another release, so
every module it checks, and the wasm loader, must carry this package's version) and what the wheel carries.
The registration itself runs only in a page: e2e/test_page_jsmodules.py and the bare-Pyodide lanes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import gpuport
import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_page_registers_the_whole_js_half_under_the_names_python_imports():
    """web/host.js registers every module of the JS half from what the page loaded (open() then loads none of them
    from the wheel): under exactly jsmodules.MODULES' names, each the module of the file named there."""
    source = (ROOT / "py" / "gpuport" / "backends" / "jsmodules.py").read_text(encoding="utf-8")
    wanted = dict(re.findall(r'"(\w+)": "(\w+\.js)"', re.search(r"^MODULES = \{(.*?)\}", source, re.M | re.S)[1]))
    host = (ROOT / "web" / "host.js").read_text(encoding="utf-8")
    static = dict(re.findall(r'^import \* as (\w+) from "\./(\w+\.js)";', host, flags=re.M))
    registered = re.search(r"const registered = \{ (.*?), \.\.\.\(await jsHalf\) \};", host)[1]
    from_static = {name: static[var] for name, var in re.findall(r"(\w+): (\w+)", registered)}
    rest = re.search(r"^const REST_OF_THE_JS_HALF = \{(.*?)\};", host, flags=re.M)[1]
    from_rest = dict(re.findall(r'(\w+): "\./(\w+\.js)"', rest))
    assert from_static | from_rest == wanted and not from_static.keys() & from_rest.keys()
    assert "for (const [name, module] of Object.entries(registered)) pyodide.registerJsModule(name, module);" in host
