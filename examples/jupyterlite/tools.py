"""The JupyterLite build tools' own venv (`.cache/jupyterlite-venv/`): build-requirements.txt's pinned closure, installed
from PyPI wheels only. Runs on any Python 3 (gpuport is not imported), so `make setup` installs it beside the project's
own pip install instead of after it; build.py calls it too.

    python3 examples/jupyterlite/tools.py
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parents[1] / ".cache" / "jupyterlite-venv"
BUILD_REQUIREMENTS = HERE / "build-requirements.txt"
TOOLS_STAMP = TOOLS / ".build-requirements.sha256"


class BuildError(Exception):
    """The site could not be built; the message says which step failed and why."""


def run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-4000:]
        raise BuildError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{output}")


def ensure_tools() -> Path:
    """The tool venv with the pinned JupyterLite build stack; returns its `jupyter` executable."""
    want = hashlib.sha256(BUILD_REQUIREMENTS.read_bytes()).hexdigest()
    jupyter = TOOLS / "bin" / "jupyter"
    if jupyter.is_file() and TOOLS_STAMP.is_file() and TOOLS_STAMP.read_text().strip() == want:
        TOOLS_STAMP.touch()   # make's record that the tools are as the file says
        return jupyter
    if TOOLS.exists():   # stale pins: start over rather than upgrade in place, so the venv is exactly the file
        shutil.rmtree(TOOLS)
    venv.EnvBuilder(with_pip=True).create(TOOLS)
    pip = [str(TOOLS / "bin" / "python"), "-m", "pip"]
    run([*pip, "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
         "-r", str(BUILD_REQUIREMENTS)], "installing the JupyterLite build tools into " + str(TOOLS))
    run([*pip, "check"], f"checking that {BUILD_REQUIREMENTS.name} is a complete closure")
    TOOLS_STAMP.write_text(want + "\n")
    return jupyter


def main() -> int:
    try:
        print(f"jupyterlite: build tools in {ensure_tools().parent.parent}")
    except BuildError as exc:
        print(f"jupyterlite: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
