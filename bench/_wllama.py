"""wllama's pages (bench/llm/wllama.html for generate.py, bench/llm/startup.html for startup.py), its esm/ folder and
SmolLM2's GGUF on a free loopback port, with the headers that make the pages cross-origin isolated (wllama's
multi-threaded WebAssembly needs it). wllama comes from `make bench-llm-setup` (or bench/llm/setup.sh's js part)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from _harness import serve
from gpuport import models
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[1]
LLM_DIR = ROOT / ".cache" / "bench" / "llm"
NAME = "smollm2-135m-instruct"
ISOLATION = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"),
             (b"cross-origin-resource-policy", b"same-origin")]


def esm_dir(llm_dir: Path = LLM_DIR) -> Path:
    esm = llm_dir / "js" / "node_modules" / "@wllama" / "wllama" / "esm"
    if not esm.is_dir():
        raise SystemExit(f"{esm} is missing: run `make bench-llm-setup` (or `make bench-wllama-setup`) first")
    return esm


def app(llm_dir: Path = LLM_DIR):
    gguf = Path(models.default_source(NAME)) / models.weights_file(NAME)
    page = lambda name: lambda request: FileResponse(ROOT / "bench" / "llm" / name)  # noqa: E731
    inner = Starlette(routes=[Route("/", page("wllama.html")), Route("/startup.html", page("startup.html")),
                              Route("/model.gguf", lambda request: FileResponse(gguf)),
                              Mount("/wllama", StaticFiles(directory=esm_dir(llm_dir)))])

    async def isolated(scope, receive, send):
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + ISOLATION
            await send(message)
        await inner(scope, receive, with_headers)
    return isolated


@contextmanager
def wllama_server(llm_dir: Path = LLM_DIR) -> Iterator[str]:
    with serve(app, llm_dir, what="the wllama server") as url:
        yield url
