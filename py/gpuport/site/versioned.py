"""web/'s pages and modules as the dev server sends them: each relative reference to one of web/'s modules
("./idb.js", in an import, a modulepreload link, `new URL("./worker.js", import.meta.url)`) names the folder's
version, "./idb.js?v=<version>", the version a digest of every module's text.

A module asked for under the current version cannot change, so it is sent as immutable: a second visit takes the
whole module graph (the page's, and its worker's) from the browser's cache instead of revalidating it a level at a
time (Firefox, warm: 3 round trips of 30-80 ms before Pyodide's boot could begin). An edit changes the version, so
the next reload asks for new URLs; the pages themselves, and a module asked for without the current version (a
page on another origin importing gpuport.js), are revalidated as before. The query leaves `new URL("./",
import.meta.url)` (gpuport.js's base for the site's files) where it was.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

MODULE_SUFFIXES = (".js", ".mjs")
REWRITTEN_SUFFIXES = (*MODULE_SUFFIXES, ".html")
QUERY = "v"
# a quoted relative reference to a file directly in web/: "./name.js" or './name.mjs'
_REFERENCE = re.compile(r"""(["'])\./([A-Za-z0-9_-]+\.m?js)\1""")


class WebVersion:
    """The version of `web`'s modules, read again only when a module's size or modification time changes."""

    def __init__(self, web: Path) -> None:
        self.web = web
        self._seen: tuple = ()
        self._version = ""
        self._names: frozenset[str] = frozenset()

    def _modules(self) -> list[Path]:
        return sorted(p for p in self.web.iterdir() if p.suffix in MODULE_SUFFIXES and p.is_file())

    def current(self) -> tuple[str, frozenset[str]]:
        """(version, the modules' file names)."""
        modules = self._modules()
        seen = tuple((p.name, st.st_size, st.st_mtime_ns) for p in modules for st in (p.stat(),))
        if seen != self._seen:
            digest = hashlib.sha256()
            for p in modules:
                digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
            self._seen, self._version = seen, digest.hexdigest()[:16]
            self._names = frozenset(p.name for p in modules)
        return self._version, self._names

    def rewrite(self, text: str) -> tuple[str, str]:
        """`text` (a page or module of web/) with its references to web/'s modules versioned, and that version."""
        version, names = self.current()

        def versioned(match: re.Match[str]) -> str:
            quote, name = match.group(1), match.group(2)
            return f"{quote}./{name}?{QUERY}={version}{quote}" if name in names else match.group(0)

        return _REFERENCE.sub(versioned, text), version


__all__ = ["MODULE_SUFFIXES", "QUERY", "REWRITTEN_SUFFIXES", "WebVersion"]
