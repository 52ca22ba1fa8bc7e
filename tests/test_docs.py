"""The guide: README.md and docs/.

- Every Python example (```python blocks) runs as written, natively: scripts as scripts, a test file (one that defines
  `test_` functions) through pytest with gpuport's plugin in its native lane. A block that appears on two pages runs
  once. Page-only Python (```py blocks: top-level await in Pyodide) runs in a browser instead:
  e2e/test_page_jsmodules.py.
- The site (`make docs`: MkDocs with mkdocstrings) builds offline with --strict (a broken link or anchor between pages
  fails the build), every link in the built pages resolves to a file of the site, and every public name of gpuport
  has an entry in the API reference.
- README is the five-minute entry: under 250 lines, and every page it links to exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import gpuport
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = list(dict.fromkeys(block for page in PAGES
                            for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)))
PY = str(Path(gpuport.__file__).resolve().parents[1])   # this checkout's package, first
README_MAX_LINES = 250


def test_the_guide_has_python_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(index, tmp_path):
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
    pages = [p.relative_to(ROOT) for p in PAGES if code in p.read_text(encoding="utf-8")]
    assert done.returncode == 0, \
        f"the example of {pages} failed:\n{code}\n--- output ---\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES
    links = [urldefrag(t)[0] for t in re.findall(r"\]\(([^)]+)\)", text) if not urlparse(t).scheme]
    assert links, "README links to the guide"
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README links to pages that do not exist: {missing}"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def inventory(site: Path) -> set[str]:
    """The object names of the site's objects.inv (Sphinx's inventory format, which mkdocstrings writes)."""
    header, _, body = (site / "objects.inv").read_bytes().partition(b"zlib.\n")
    assert b"# Sphinx inventory version 2" in header
    return {line.split()[0] for line in zlib.decompress(body).decode().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-site")
    env = dict(os.environ, PYTHONPATH=PY, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"`make docs` failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    return out


def test_the_site_builds_offline_and_its_links_resolve(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 15, pages
    broken = []
    for page in pages:
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for target in parser.targets:
            url = urlparse(target)
            if url.scheme or target.startswith(("#", "//", "mailto:")) or not url.path:
                continue
            base = site if url.path.startswith("/") else page.parent   # 404.html links from the site's root
            if not (base / url.path.lstrip("/")).resolve().exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert not broken, f"links to nothing in the built site: {broken}"


def test_every_public_name_has_a_reference_entry(site):
    public = {f"gpuport.{name}" for name in gpuport.__all__ if name != "__version__"} | {"gpuport.models.load"}
    missing = sorted(public - inventory(site))
    assert not missing, f"public names without an entry in docs/reference/: {missing}"
