"""examples/pyscript/: PyScript (npm @pyscript/core) on the local Pyodide 0.27.7 installs gpuport with
micropip, opens a runtime, runs a user WGSL kernel and embeds sentences with MiniLM, in Chromium and
Firefox, with every request on the example's own origin (no CDN)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from e2e_serve import served

from gpuport.testing.browsers import LaneError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pyscript_serve", ROOT / "examples" / "pyscript" / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)


@pytest.fixture(scope="module")
def example_url():
    yield from served(serve.create_app(), "the PyScript example's server")


@pytest.mark.parametrize("kind,backend", [("chromium-webgpu", "webgpu"), ("firefox", "webgpu")])
def test_pyscript_page_runs_a_kernel_and_minilm(browsers, example_url, kind, backend):
    from playwright.sync_api import expect

    try:
        browser = browsers.get(kind)
    except LaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    context = browser.new_context()
    page = context.new_page()
    origins, errors = set(), []
    page.on("request", lambda r: origins.add(urlparse(r.url).netloc) if r.url.startswith("http") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(example_url + "/examples/pyscript/")
        status = page.locator("#status")
        expect(status).not_to_have_text("Loading Pyodide and gpuport…", timeout=240_000)
        assert status.inner_text() == "Ready.", f"{status.inner_text()}\npage errors: {errors}"
        assert json.loads(page.locator("#backend").inner_text()) == {"backend": backend, "tier": {
            "chromium-webgpu": "core", "firefox": "full"}[kind]}
        assert json.loads(page.locator("#kernel").inner_text()) == (2 * np.arange(100) + 1).tolist()
        emb = json.loads(page.locator("#embeddings").inner_text())
        assert emb["shape"] == [3, 384] and all(abs(n - 1) < 1e-4 for n in emb["norms"]), emb
        assert emb["cosine"] > 0.5, emb   # two sentences about eating: close
        assert origins == {urlparse(example_url).netloc}, f"requests left the example's origin: {origins}"
    finally:
        context.close()
