"""A Hugging Face checkpoint (config.json, model.safetensors and the small files beside them) read by component:
a CLIP's text and vision towers, each usable the moment its own tensors are in.

Where from:
- a local folder: its small files, then each component's tensors read from the safetensors file (memory-mapped);
- a URL (a gpuport server, the Hugging Face Hub's resolve URLs, any host answering Range requests): the progressive
  loader, with gpuport's chunk manifest where there is one beside the file (every chunk verified, cached in
  IndexedDB in a page, on disk natively), else planned from the file's own header (checked: every tensor inside the
  file, its bytes its shape times its dtype) with the file's sha256 verified where the host gives one (the Hub's
  X-Linked-Etag, a 64-hex ETag, a `<file>.sha256` beside it). With a manifest the components' chunks are fetched
  in turns (the prioritised component's first), and each chunk is released once its tensors are uploaded.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import LoadError
from ..formats.safetensors import load_tensors as load_safetensors
from ..loading.loader import ProgressiveModelLoader
from ..platform import IN_PYODIDE, peak_rss_bytes
from .files import is_url, payload_bytes
from .registry import default_source, weights_file

Attach = Callable[[str, dict[str, Any]], None]


@dataclass
class Checkpoint:
    """A checkpoint's small files (text) and how its tensors are read."""

    name: str
    source: str
    files: dict[str, str]
    loader: ProgressiveModelLoader | None = None     # a URL's
    path: str | None = None                          # a local folder's weights file
    stats: dict[str, Any] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)   # tensor -> its component, for the progress events

    def name_components(self, components: Mapping[str, Sequence[str]]) -> None:
        """From now on a progress event of a tensor in `components` names its component."""
        self.owner.update({n: c for c, names in components.items() for n in names})


async def open_checkpoint(name: str, source: str | None, progress: Callable[..., None], chunk_size_mb: float | None,
                          loader_options: Mapping[str, Any], text_files: Sequence[str]) -> Checkpoint:
    """`name`'s checkpoint at `source` (default: the registry's) with its `text_files` read."""
    src = source if source is not None else default_source(name)
    owner: dict[str, str] = {}

    def tagged(event: dict) -> None:
        if event.get("tensor") in owner:
            event["component"] = owner[event["tensor"]]
        progress(**event)

    if is_url(src) or loader_options:
        options = {"manifest": "optional", **loader_options}
        loader = ProgressiveModelLoader(src, chunk_size_mb=chunk_size_mb, on_progress=tagged,
                                        weights=weights_file(name), **options)
        await loader.load_manifest()
        files = {f: await loader.read_text(f) for f in text_files}
        return Checkpoint(name, src, files, loader=loader, owner=owner)
    if not os.path.isdir(src):
        raise LoadError(f"{name}: {src} is not a folder (a Hugging Face checkpoint folder, or a URL)")
    files = {}
    for fname in text_files:
        try:
            with open(os.path.join(src, fname), encoding="utf-8") as f:
                files[fname] = f.read()
        except OSError as exc:
            raise LoadError(f"{name}: {os.path.join(src, fname)}: {exc}") from None
    return Checkpoint(name, src, files, path=os.path.join(src, weights_file(name)), owner=owner)


async def load_components(ckpt: Checkpoint, rt: Any, components: Mapping[str, Sequence[str]], attach: Attach,
                          progress: Callable[..., None], host_only: Sequence[str] = (), interleave: bool = True) -> None:
    """Every component's tensors, `attach(component, tensors)` as soon as each one's are all in: fetched in turns
    (`interleave`), else the first of `components` wholly first (a priority). Uploaded as they arrive (but
    `host_only`'s), or handed over as arrays from a local file, where the model's own code uploads them."""
    if ckpt.loader is not None:
        ckpt.loader.rt = rt
        await ckpt.loader.load_tensors([n for names in components.values() for n in names], upload=True,
                                       components=components, on_component=attach, host_only=host_only,
                                       interleave=interleave)
        ckpt.stats.update(ckpt.loader.stats())
    else:
        assert ckpt.path is not None
        total = payload_bytes(ckpt.path, [n for names in components.values() for n in names])
        done = 0
        for component, names in components.items():
            weights = load_safetensors(ckpt.path, list(names))
            done += sum(int(a.nbytes) for a in weights.values())
            progress(stage="download", done=done, total=total, component=component)
            attach(component, weights)
        ckpt.stats.update(source=ckpt.path, bytes_downloaded=0)
    ckpt.stats["peak_rss_bytes"] = None if IN_PYODIDE else peak_rss_bytes()


class Components:
    """The components of a model a load is bringing in: `await wait(name)` until one is attached (raising the
    load's error if it failed), `ready` the names attached so far and when (ms since the load began)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.ready: dict[str, float] = {}
        self._events = {n: asyncio.Event() for n in names}
        self._task: asyncio.Future | None = None

    def attached(self, name: str, t_ms: float) -> None:
        self.ready[name] = t_ms
        self._events[name].set()

    def run(self, load: Any) -> asyncio.Future:
        """Start the load (a coroutine) in the background; a failure wakes every waiter."""
        self._task = asyncio.ensure_future(load)
        self._task.add_done_callback(lambda _t: [e.set() for e in self._events.values()])
        return self._task

    async def wait(self, name: str) -> None:
        if name in self.ready:
            return
        await self._events[name].wait()
        if name not in self.ready:
            task = self._task
            if task is not None and task.done() and task.exception() is not None:
                raise task.exception()
            raise LoadError(f"component {name!r} was never loaded")

    async def done(self) -> None:
        """Until the whole load has finished (its error, if it failed)."""
        if self._task is not None:
            await self._task


__all__ = ["Checkpoint", "Components", "load_components", "open_checkpoint"]
