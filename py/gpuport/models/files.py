"""How a model's files are read: a local directory directly, a URL through the progressive loader (verified Range
chunks, the cache, tensors uploaded as they complete), and a GGUF model's header and tensor bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

import numpy as np

from ..errors import LoadError
from ..formats.safetensors import load_tensors as load_safetensors
from ..formats.safetensors import read_header
from ..loading.loader import ProgressiveModelLoader
from .registry import REGISTRY, default_source, weights_file

if TYPE_CHECKING:
    from ..loading.gguf_source import GGUFSource

ProgressFn = Callable[[dict], Any]


@dataclass
class ModelFiles:
    """What a model needs from its source: small text files and a way to get its tensors."""

    source: str
    read_text: Callable[[str], Awaitable[str]]                      # file name -> text
    load_weights: Callable[[Sequence[str]], Awaitable[Mapping[str, np.ndarray]]]  # names -> arrays
    # Optional: names, rt -> {name: Tensor already on rt} (the progressive loader uploads each tensor as
    # soon as its bytes are verified); when present, load() uses it instead of load_weights.
    load_tensors: Callable[[Sequence[str], Any], Awaitable[Mapping[str, Any]]] | None = None
    loader: Any = None


def is_url(source: str) -> bool:
    """A URL for the progressive loader (http(s), or a path on the page's origin), not a local directory."""
    return source.startswith(("http://", "https://", "/")) and not os.path.isdir(source)


async def open_gguf(name: str, source: str | None = None, on_progress: ProgressFn | None = None,
                    **loader_options: Any) -> "GGUFSource":
    """The GGUF source of language model `name` (header + `await raw(tensor)`): a URL through the progressive
    loader (verified chunks, IndexedDB cache in a page); natively by default the installed file itself."""
    llms = [n for n, e in REGISTRY.items() if e.family == "llama"]
    if name not in llms:
        raise ValueError(f"{name!r} is not a GGUF language model; available: {', '.join(llms)}")
    src = source if source is not None else default_source(name)
    from ..loading.gguf_source import GGUFSource  # GGUF models only: `import gpuport` does not read GGUF
    return await GGUFSource.open(src, weights=weights_file(name), on_progress=on_progress, **loader_options)


def local_files(directory: str, progress: Callable[..., None] | None = None) -> ModelFiles:
    """A model directory on disk: model.safetensors + vocab.txt + config.json (+ sentence_bert_config.json)."""
    if not os.path.isdir(directory):
        raise LoadError(f"{directory}: not a directory")

    async def read_text(fname: str) -> str:
        path = os.path.join(directory, fname)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise LoadError(f"{path}: {exc}") from None

    async def load_weights(names: Sequence[str]) -> Mapping[str, np.ndarray]:
        path = os.path.join(directory, "model.safetensors")
        if progress:   # the payload (the named tensors' bytes), as every byte stage counts (gpuport.loading.loader)
            progress(stage="download", done=0, total=payload_bytes(path, names))
        weights = load_safetensors(path, list(names))
        if progress:
            total = sum(int(w.nbytes) for w in weights.values())
            progress(stage="download", done=total, total=total)
        return weights

    return ModelFiles(directory, read_text, load_weights)


def payload_bytes(path: str, names: Sequence[str]) -> int:
    """Bytes of the tensors `names` in the safetensors file at `path` (0 when it cannot be read: the load
    itself then raises the error)."""
    try:
        with open(path, "rb") as f:
            header, _ = read_header(f, os.path.basename(path))
    except (OSError, LoadError):
        return 0
    wanted = set(names)
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for n, e in header.items()
               if n in wanted and isinstance(e, dict) and "data_offsets" in e)


def http_files(source: str, progress: Callable[..., None] | None = None,
               chunk_size_mb: float | None = None, **loader_options: Any) -> ModelFiles:
    """A URL (or a local directory) through gpuport.loading.loader.ProgressiveModelLoader: Range requests, chunk
    manifest, verification, cache (IndexedDB in a page), progressive upload."""
    def forward(event: dict) -> None:
        if progress is not None:
            progress(**event)

    loader = ProgressiveModelLoader(source, chunk_size_mb=chunk_size_mb, on_progress=forward, **loader_options)

    async def read_text(fname: str) -> str:
        await loader.load_manifest()   # so listed files are verified against it
        return await loader.read_text(fname)

    async def load_weights(names: Sequence[str]) -> Mapping[str, np.ndarray]:
        return await loader.load_tensors(names, upload=False)

    async def load_tensors(names: Sequence[str], rt: Any) -> Mapping[str, Any]:
        loader.rt = rt
        return await loader.load_tensors(names, upload=True)

    return ModelFiles(source, read_text, load_weights, load_tensors, loader)


def resolve_files(source: str, progress: Callable[..., None] | None = None,
                  chunk_size_mb: float | None = None) -> ModelFiles:
    """A URL goes through the progressive loader, a local directory is read directly."""
    if is_url(source):
        return http_files(source, progress, chunk_size_mb)
    return local_files(source, progress)


__all__ = ["ModelFiles", "ProgressFn", "http_files", "is_url", "local_files", "open_gguf", "payload_bytes", "resolve_files"]
