"""web/'s pages: each page that imports gpuport.js preloads exactly gpuport.js's static import graph (a module
missing from the list is fetched a round trip later; one no longer imported is fetched for nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
STATIC_IMPORT = re.compile(r'^import\s+(?:[^;"]*?\s+from\s+)?"(\./[^"]+)"', re.MULTILINE)
PRELOAD = re.compile(r'<link rel="modulepreload" href="(\./[^"]+)">')
PAGES = sorted(p.name for p in WEB.glob("*.html") if re.search(r'from "\./gpuport\.js"', p.read_text("utf-8")))


def static_graph(module: str) -> set[str]:
    """The modules `module` (a web/ file) imports statically, and theirs, as "./name" specifiers."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for spec in STATIC_IMPORT.findall((WEB / todo.pop()).read_text("utf-8")):
            if spec not in seen:
                seen.add(spec)
                todo.append(spec[2:])
    return seen


def test_the_pages_that_start_gpuport_are_found():
    assert {"index.html", "test.html"} <= set(PAGES)


def test_the_import_graph_is_read_as_the_browser_reads_it():
    # snapshot.js and wheels.js import idb.js again: a graph, not a tree; host.js is imported dynamically (not preloaded)
    assert static_graph("gpuport.js") == {"./idb.js", "./ranges.js", "./snapshot.js", "./wasm.js", "./wheels.js",
                                          "./workers.js"}


@pytest.mark.parametrize("page", PAGES)
def test_a_page_preloads_gpuport_js_s_import_graph(page):
    preloaded = PRELOAD.findall((WEB / page).read_text("utf-8"))
    assert len(preloaded) == len(set(preloaded)), f"{page} preloads a module twice: {preloaded}"
    assert set(preloaded) == static_graph("gpuport.js"), (
        f"{page}: its modulepreload links {sorted(preloaded)} are not gpuport.js's static imports "
        f"{sorted(static_graph('gpuport.js'))}")
