"""Shared by the benches: the dev server on a free loopback port and Chromium with WebGPU on SwiftShader."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import platform
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]


@contextmanager
def dev_server() -> Iterator[str]:
    from gpuport.site.server import create_app

    with serve(create_app, what="dev server") as url:
        yield url


def _run_asgi(port: int, factory: Callable[..., Any], *args: Any) -> None:
    import uvicorn

    uvicorn.run(factory(*args), host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def serve(factory: Callable[..., Any], *args: Any, what: str) -> Iterator[str]:
    """The ASGI app `factory(*args)` (uvicorn) on a free loopback port, in a process of its own, for the `with` block:
    as `gpuport serve` runs it, not sharing the bench's interpreter (and its lock) with Playwright's client."""
    with serving(_run_asgi, (factory, *args), what) as url:
        yield url


@contextmanager
def serving(target: Callable[..., None], args: tuple, what: str) -> Iterator[str]:
    """`target(port, *args)`, a server on a free loopback port, in a process of its own until the `with` block ends;
    waits until the port accepts connections. The process is spawned, never forked: a fork of a process that holds a
    wgpu device (a test run, a bench that opened one) inherits lavapipe's state without its threads, and the first
    garbage collection in the child that finalises that device blocks for ever in vkDestroyDevice (a
    pthread_cond_destroy waiting for threads that exist only in the parent). `target` and `args` are pickled."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=target, args=(port, *args), daemon=True)
    proc.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if not proc.is_alive():
                raise RuntimeError(f"{what} failed to start (exit code {proc.exitcode})") from None
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not accept connections in 120 s") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.join(10)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    data = {"bench": name, "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def draw_chart(script: Path, json_path: Path, png: Path) -> str:
    """Draw the PNG with `script` (a bench's chart helper) under a python that has matplotlib; say why not
    otherwise."""
    pythons = [sys.executable, str(RESULTS.parent.parent / ".cache" / "bench" / "venv" / "bin" / "python")]
    if importlib.util.find_spec("matplotlib") is None:   # make bench-setup's venv has it
        pythons = pythons[1:]
    for py in pythons:
        if Path(py).exists():
            out = subprocess.run([py, str(script), str(json_path), str(png)], capture_output=True, text=True)
            if out.returncode == 0:
                return out.stdout.strip()
    return ("PNG skipped: matplotlib is not installed here (it is not a gpuport dependency). Install it in a bench "
            "venv (`make bench-setup` makes .cache/bench/venv with it) or `pip install matplotlib`, then run "
            f"`python bench/{script.name} {json_path} {png}`.")


def read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """One line of a worker process's stdout, or "" when none came within `timeout_s` (or it ended)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return box[0] if box else ""
