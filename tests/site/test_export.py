"""`gpuport export`: a self-contained static site with relative URLs (the browser half is
e2e/test_static_export.py)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from gpuport.errors import LoadError
from gpuport.site.cli import main
from gpuport.site.distribution import MANIFEST, find_repo_root, is_complete
from gpuport.site.export import MARKER, export_site

ROOT = find_repo_root()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return export_site(tmp_path_factory.mktemp("export") / "site", models=["minilm-l6-v2", "smollm2-135m-instruct"])


def test_the_site_holds_the_pages_js_pyodide_wheel_and_shaders(site):
    for name in ("index.html", "test.html", "gpuport.js", "host.js", "worker.js", "bridge.js", "ranges.js",
                 "_headers", "README.md", MARKER):
        assert (site / name).is_file(), name
    assert is_complete(site / "pyodide") and not (site / "pyodide" / "pyodide.mjs").is_symlink()
    assert (site / "pyodide" / MANIFEST).is_file()
    latest = json.loads((site / "wheels" / "latest.json").read_text())
    assert (site / "wheels" / latest["gpuport"]).is_file() and "/" not in latest["gpuport"]   # relative
    assert sorted(p.name for p in (site / "shaders").iterdir()) == sorted(p.name for p in (ROOT / "shaders").glob("*.wgsl"))


def test_every_url_in_the_pages_is_relative(site):
    for name in ("index.html", "test.html", "gpuport.js", "demo-model.js", "demo-chat.js", "host.js", "worker.js"):
        text = (site / name).read_text()
        absolute = re.findall(r"""(?:from\s+|import\(|href=|src=|fetch\()\s*["'](/[^"']*)["']""", text)
        assert not absolute, (name, absolute)
    assert "<base" not in (site / "index.html").read_text()


def test_model_chunks_are_the_weights_verified(site):
    folder = site / "models" / "minilm-l6-v2"
    manifest = json.loads((folder / "manifest.json").read_text())
    chunks = sorted((folder / "model.safetensors.chunks").iterdir())
    assert len(chunks) == len(manifest["chunks"]) == 87
    whole = hashlib.sha256()
    for path, chunk in zip(chunks, manifest["chunks"]):
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == chunk["sha256"], path.name
        whole.update(data)
    assert whole.hexdigest() == manifest["sha256"]
    assert not (folder / "model.safetensors").exists()   # chunks only: no host needs Range
    for name in manifest["files"]:
        assert (folder / name).is_file(), name
    entry = json.loads((site / "wheels" / "latest.json").read_text())["chunked"]["models/minilm-l6-v2/model.safetensors"]
    assert entry == {"size": manifest["size"], "chunk_size": manifest["chunk_size"], "chunks": "model.safetensors.chunks/"}


def test_a_gguf_model_is_exported_as_verified_chunks(site):
    from smollm2 import gguf_path

    folder = site / "models" / "smollm2-135m-instruct"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["container"] == "gguf" and manifest["file"] == gguf_path().name
    chunks = sorted((folder / (gguf_path().name + ".chunks")).iterdir())
    assert len(chunks) == len(manifest["chunks"]) == 94
    with open(gguf_path(), "rb") as f:
        for c, want in zip(chunks, manifest["chunks"]):
            assert c.read_bytes() == f.read(want["end"] - want["start"])
    entry = json.loads((site / "wheels" / "latest.json").read_text())["chunked"][
        f"models/smollm2-135m-instruct/{gguf_path().name}"]
    assert entry == {"size": manifest["size"], "chunk_size": manifest["chunk_size"], "chunks": gguf_path().name + ".chunks/"}


def test_headers_file_allows_embedding_and_explains_isolation(site):
    text = (site / "_headers").read_text()
    assert "Access-Control-Allow-Origin: *" in text
    assert "\n  Cross-Origin-Embedder-Policy: require-corp" in text and "\n  Cross-Origin-Opener-Policy: same-origin" in text
    assert "COOP/COEP" in (site / "README.md").read_text()


def test_base_url_goes_into_the_pages(tmp_path, capsys):
    dest = tmp_path / "site"
    assert main(["export", str(dest), "--base", "https://cdn.example.com/gp"]) == 0
    assert str(dest) in capsys.readouterr().out
    for page in ("index.html", "test.html"):
        assert '<head>\n<base href="https://cdn.example.com/gp/">' in (dest / page).read_text()
    assert json.loads((dest / MARKER).read_text())["base"] == "https://cdn.example.com/gp/"
    assert not (dest / "models").exists()


def test_refuses_a_non_empty_directory_that_is_no_export_and_redoes_an_export(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LoadError, match="not empty"):
        export_site(tmp_path / "mine")
    assert main(["export", str(tmp_path / "mine")]) == 1
    assert "not empty" in capsys.readouterr().err
    again = export_site(export_site(tmp_path / "site"))   # an earlier export is rewritten in place
    assert (again / "gpuport.js").is_file()


def test_unknown_model_is_refused(tmp_path):
    with pytest.raises(LoadError, match="unknown model"):
        export_site(tmp_path / "site", models=["gpt-17"])
