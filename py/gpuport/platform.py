"""Where this Python runs: the one flag that guards browser-only imports."""

import sys

IN_PYODIDE = sys.platform == "emscripten"
