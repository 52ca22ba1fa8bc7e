"""CLIP in the page: the full-size ViT-B/32 checkpoint (tests/clip_files.py, served by the dev server from its packed
folder) loaded once per browser engine, its image and text embeddings equal to transformers' with the whole model
pinned to the page's GPU and under auto; the image preprocessing in the page equal to transformers' on
scikit-image's photographs (its JPEGs decoded by the browser); and the parallel multimodal loader in a page
(clip-tiny): the towers' progress interleaved, the prioritised tower ready and used first, a corrupt chunk of either
tower refetched and never cached."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuport.testing.pages import call_page

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clip_files import PHOTOS, checkpoint, model_reference, photo_path, preprocessing_reference  # noqa: E402

NAME = "clip-vit-base-patch32"
# of the fixture's: short texts (8 tokens), and fewer photos pinned to the GPU (SwiftShader takes 2-3 s a photo), so
# the GPU page's forward stays short
PARITY_PHOTOS, PARITY_TEXTS, PINNED_PHOTOS = 2, 4, 1


def _photos(names) -> list[str]:
    return [base64.b64encode(photo_path(n).read_bytes()).decode() for n in names]


PARITY = """
import base64, gc, time
from gpuport import models
_photos = [base64.b64decode(b) for b in {photos!r}]
_texts = {texts!r}
_t0 = time.perf_counter()
# memory only: the lane's page goes on with other tests, and its 600 MB stay out of IndexedDB
clip = await models.load("clip-vit-base-patch32", rt, loader_options={{"cache": None}})
_out = {{"load_s": time.perf_counter() - _t0, "load": clip.stats()["load"]}}
_before = rt.info()["ran"]
with rt.pinned("webgpu"):                     # the whole model on the page's GPU
    _t0 = time.perf_counter()
    _out["webgpu"] = [(await clip.embed_images(_photos[:{pinned}])).tolist(),
                      (await clip.embed_texts(_texts)).tolist(), clip.stats(), time.perf_counter() - _t0]
_ran = {{op: {{k: n - _before.get(op, {{}}).get(k, 0) for k, n in per.items()}} for op, per in rt.info()["ran"].items()}}
_out["webgpu_on_host"] = {{op: d for op, d in _ran.items() if d.get("cpu")}}
_t0 = time.perf_counter()
_out["auto"] = [(await clip.embed_images(_photos)).tolist(), (await clip.embed_texts(_texts)).tolist(), clip.stats(),
                time.perf_counter() - _t0]
_out["memory_only"] = clip.stats()["load"]["memory_only"]
del clip
gc.collect()
_out
"""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("lane", ["chromium-auto", "firefox-auto"])
def test_clip_b32_equals_transformers_in_the_page(lane_factory, lane):
    checkpoint(NAME)
    ref = model_reference(NAME)
    page = lane_factory(lane)
    got = page.run(PARITY.format(photos=_photos(ref["photos"][:PARITY_PHOTOS]), texts=ref["texts"][:PARITY_TEXTS],
                                  pinned=PINNED_PHOTOS))
    want = {"images": _unit(np.frombuffer(base64.b64decode(ref["image_embeds"]), np.float32).reshape(4, -1)),
            "texts": _unit(np.frombuffer(base64.b64decode(ref["text_embeds"]), np.float32).reshape(8, -1))}
    report = []
    for mode in ("webgpu", "auto"):
        images, texts, stats, seconds = got[mode]
        photos = PINNED_PHOTOS if mode == "webgpu" else PARITY_PHOTOS
        for what, vec, rows in (("images", images, photos), ("texts", texts, PARITY_TEXTS)):
            vec = np.asarray(vec, np.float32)
            cos = float((vec * want[what][:rows]).sum(-1).min())
            err = float(np.abs(vec - want[what][:rows]).max())
            report.append(f"{mode} {what}: cosine {cos:.8f}, max abs {err:.2e}")
            assert cos >= 0.99999 and err <= 1e-5, (lane, mode, what, cos, err)
        if mode == "webgpu":
            assert stats["vision_ran"] == ["webgpu"] and stats["text_ran"] == ["webgpu"], stats
        assert set(stats["resized_by"]) <= {"wasm", "wasm-threads"}, stats   # the page's kernels, never Pillow
        report.append(f"{mode}: vision on {stats['vision_ran']}, text on {stats['text_ran']}, {seconds:.1f} s")
    assert not got["webgpu_on_host"], got["webgpu_on_host"]   # pinned: nothing answered on the host
    assert got["memory_only"], got["load"]
    print(f"\n{lane}: load {got['load_s']:.1f} s; " + "; ".join(report))


PREPROCESS = """
import base64, hashlib
from gpuport.models.images import ImageProcessor, decode_in_page, ensure_pillow
await ensure_pillow()
import PIL
from PIL import features
_out = {{"pillow": PIL.__version__, "jpeg": [features.version("jpg"), features.check_feature("libjpeg_turbo")],
         "tensors": {{}}, "corpus": {{}}}}
async def _decoded(images):
    picks, later = decode_in_page(images, None)
    for i, image in zip(picks, await later):
        images[i] = image
    return images
_photos = await _decoded([base64.b64decode(b) for b in {photos!r}.values()])
_corpus = await _decoded([base64.b64decode(b) for b in {corpus!r}.values()])
for _kind, _cfg in {configs!r}.items():
    _proc = ImageProcessor.from_config(_cfg)
    for _name, _image in zip({photos!r}, _photos):
        _made = _proc(_image)
        _x = _made.pixels
        _out["tensors"][_kind + ":" + _name] = [hashlib.sha256(_x.tobytes()).hexdigest(),
                                                 base64.b64encode(_x.tobytes()).decode(), _made.stats["path"],
                                                 _made.stats.get("decoded_in")]
    for _name, _image in zip({corpus!r}, _corpus):
        _made = _proc(_image)
        _out["corpus"][_kind + ":" + _name] = [hashlib.sha256(_made.pixels.tobytes()).hexdigest(), _made.stats["path"],
                                               _made.stats.get("decoded_in")]
_out
"""


@pytest.mark.parametrize("lane", ["chromium-auto", "firefox-auto"])
def test_preprocessing_equals_transformers_in_the_page(lane_factory, lane):
    """Every photograph's tensor is transformers' to the bit in the page. Its JPEGs are decoded by the browser
    (Chromium's and Firefox's libjpeg-turbo, as the Pillow wheels transformers runs on): Pyodide's own Pillow links
    IJG libjpeg 9, which upsamples a 4:2:0 file's chroma one level apart (retina.jpg). A corpus of JPEGs (every
    subsampling Pillow writes, progressive, restart markers, greyscale, 1x1 and odd sizes) gives the tensors
    ImageProcessor gives natively, to the bit."""
    from clip_files import PREPROCESSORS, jpeg_corpus, sample_positions
    from gpuport.models.images import ImageProcessor
    corpus = jpeg_corpus()
    page = lane_factory(lane)
    got = page.run(PREPROCESS.format(configs=PREPROCESSORS, photos=dict(zip(PHOTOS, _photos(PHOTOS))),
                                     corpus={k: base64.b64encode(v).decode() for k, v in corpus.items()}))
    ref = preprocessing_reference()["photos"]
    report = {}
    for key, (digest, tensor, path, decoded_in) in got["tensors"].items():
        kind, name = key.split(":")
        want = ref[name][kind]
        x = np.frombuffer(base64.b64decode(tensor), np.float32).reshape(want["shape"])
        samples = np.frombuffer(base64.b64decode(want["samples"]), np.float32)
        report[key] = (digest == want["sha256"], float(np.abs(x[sample_positions(x.shape)] - samples).max()),
                       path if decoded_in is None else f"{path} in {decoded_in}")
    print(f"\n{lane}: Pillow {got['pillow']}, libjpeg {got['jpeg']}: {report}")
    assert len(report) == 2 * len(PHOTOS)
    for key, (same, err, path) in report.items():
        assert path == ("browser in a worker" if key.endswith(".jpg") else "whole"), (key, path)
        assert same and err == 0.0, (key, err)
    natively = {f"{kind}:{name}": hashlib.sha256(ImageProcessor.from_config(cfg)(data).pixels.tobytes()).hexdigest()
                for kind, cfg in PREPROCESSORS.items() for name, data in corpus.items()}
    differ = sorted(key for key, (digest, _, _) in got["corpus"].items() if digest != natively[key])
    assert len(got["corpus"]) == len(natively) and not differ, differ
    # decoded in the decoder's worker, off the thread Python runs on (pageio.decode_jpegs)
    assert {(path, where) for _, path, where in got["corpus"].values()} == {("browser", "a worker")}


# The decoder's worker made again with Worker taken away: the same JPEG decoded on Python's thread instead
WITHOUT_A_WORKER = """
import base64
from pyodide.code import run_js
from gpuport.backends import pageio
from gpuport.models.images import decode_in_page
_jpeg = base64.b64decode({jpeg!r})
_saved, pageio._decoder = pageio._decoder, None
run_js("globalThis.__savedWorker = globalThis.Worker; delete globalThis.Worker")
try:
    _picks, _later = decode_in_page([_jpeg], None)
    _here = (await _later)[0]
finally:
    run_js("globalThis.Worker = globalThis.__savedWorker")
    pageio._decoder = _saved
_picks, _later = decode_in_page([_jpeg], None)
_there = (await _later)[0]
[_here.decoded_in, _there.decoded_in, bool((_here.pixels == _there.pixels).all()), list(_here.pixels.shape)]
"""


@pytest.mark.parametrize("lane", ["chromium-auto", "firefox-auto"])
def test_jpegs_are_decoded_on_pythons_thread_where_no_worker_starts(lane_factory, lane):
    from clip_files import jpeg_corpus
    name, data = sorted(jpeg_corpus().items())[-1]
    got = lane_factory(lane).run(WITHOUT_A_WORKER.format(jpeg=base64.b64encode(data).decode()))
    assert got[:3] == ["this thread", "a worker", True], (name, got)


# -- the parallel multimodal loader in a page (clip-tiny) ------------------------------------------------------------

TINY = "/models/clip-tiny/"
LOAD_TINY = """
import time
import numpy as np
from gpuport import models
_events = []
_t0 = time.perf_counter()
clip = await models.load("clip-vit-base-patch32", rt, source={url!r}, on_progress=_events.append, chunk_size_mb=1,
                         priority="text", loader_options={{"retries": 2, "backoff_s": 0.01}})
_ready = dict(clip.components.ready)
_texts = (await clip.embed_texts({texts!r})).tolist()
{{"ready_at_return": _ready, "texts": _texts, "vision_when_texts_done": "vision" in clip.components.ready}}
"""

FINISH_TINY = """
await clip.components.done()
_img = (await clip.embed_images([np.zeros((64, 64, 3), np.uint8)])).tolist()
_uploads = [e.get("component") for e in _events if e["stage"] == "upload"]
_retries = [e["note"] for e in _events if e["stage"] == "retry"]
_events.clear()
await models.load("clip-vit-base-patch32", rt, source={url!r}, on_progress=_events.append)   # no priority: in turns
{{"ready": dict(clip.components.ready), "image": _img, "stats": clip.stats()["load"], "uploads": _uploads,
  "retries": _retries, "in_turns": [e.get("component") for e in _events if e["stage"] == "upload"]}}
"""

AUDIT = """
import json, hashlib, gpuport_idb
from pyodide.http import pyfetch
_m = json.loads(await (await pyfetch({url!r} + "manifest.json")).string())
_bad, _n = [], 0
for _k in (await gpuport_idb.keys("chunks")).to_py():
    _k = str(_k)
    if not _k.startswith(_m["sha256"] + ":"):
        continue
    _n += 1
    if hashlib.sha256((await gpuport_idb.get("chunks", _k)).to_bytes()).hexdigest() != _m["chunks"][int(_k.split(":")[1])]["sha256"]:
        _bad.append(_k)
{{"cached": _n, "bad": _bad}}
"""

CLEAR = """
import gpuport_idb
for _k in (await gpuport_idb.keys("chunks")).to_py():
    await gpuport_idb.remove("chunks", _k)
"""


def _run(page, src):
    return call_page(page, "runPython", src)


def test_towers_load_in_turns_text_first_and_corrupt_chunks_of_both_are_refetched(chromium_webgpu, server_url):
    """Chromium routes a Web Worker's fetches: the vision tower's own chunks are held until the text tower is in and
    has embedded texts, and one chunk of each tower is corrupted once on the wire."""
    ref = model_reference("clip-tiny")
    m = json.loads((ROOT / ".cache" / "models" / "clip-tiny" / "manifest.json").read_text())
    vision = min(t["start"] for n, t in m["tensors"].items() if n.startswith(("vision", "visual")))
    text_chunk = m["tensors"]["text_model.encoder.layers.0.mlp.fc1.weight"]["chunks"][0]
    vision_chunk = m["tensors"]["vision_model.encoder.layers.1.mlp.fc1.weight"]["chunks"][0]
    corrupt = {m["chunks"][text_chunk]["start"], m["chunks"][vision_chunk]["start"]}
    corrupted: list[int] = []
    held: list = []

    def fulfill(route, start: int, end: int) -> None:
        hit = [s for s in corrupt if start <= s <= end and s not in corrupted]
        if not hit:   # untouched answers stay in the browser, not through Playwright's pipe
            return route.continue_()
        corrupted.append(hit[0])
        response = route.fetch()
        body = response.body()
        at = hit[0] - start
        route.fulfill(response=response, body=body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:])

    def handle(route):
        rng = route.request.headers.get("range", "")
        start, end = (int(v) for v in rng[6:].split("-")) if rng.startswith("bytes=") else (-1, -1)
        if start >= vision and held is not None and not getattr(handle, "released", False):
            held.append((route, start, end))   # the vision tower's own chunks wait (one it shares comes with text)
            return
        fulfill(route, start, end)

    context = chromium_webgpu.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off")
        _run(page, CLEAR)
        context.route("**/models/clip-tiny/model.safetensors", handle)
        first = _run(page, LOAD_TINY.format(url=TINY, texts=ref["texts"][:2]))
        handle.released = True
        assert held, "the vision tower's chunks were asked for before the text tower had finished"
        for route, start, end in held:
            fulfill(route, start, end)
        got = _run(page, FINISH_TINY.format(url=TINY))
        audit = _run(page, AUDIT.format(url=TINY))
    finally:
        context.close()
    assert set(first["ready_at_return"]) == {"text"} and not first["vision_when_texts_done"], first
    assert got["ready"]["vision"] > got["ready"]["text"]
    want = _unit(np.frombuffer(base64.b64decode(ref["text_embeds"]), np.float32).reshape(8, -1))[:2]
    assert np.abs(np.asarray(first["texts"]) - want).max() < 1e-5
    assert [c for c in got["uploads"] if c][0] == "text"
    seq = [c for c in got["in_turns"] if c]   # without a priority the towers' tensors arrive in turns
    assert seq.index("vision") < len(seq) - 1 - seq[::-1].index("text"), seq
    assert seq.index("text") < len(seq) - 1 - seq[::-1].index("vision"), seq
    assert sorted(corrupted) == sorted(corrupt) and got["stats"]["retries"] == 2, (corrupted, got["stats"])
    assert audit["cached"] == len(m["chunks"]) and not audit["bad"], audit
    assert len(got["image"][0]) == 32


def test_demo_image_box_classifies_a_sample(chromium_webgpu, server_url):
    """The demo page's image box, ?vision=1 with ?model= pointing at another checkpoint (clip-tiny): it loads (the text
    tower first), classifies its drawn sample and shows the probabilities, the stages' times and where each ran."""
    from playwright.sync_api import expect

    context = chromium_webgpu.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&vision=1&model=" + TINY)
        section = page.locator("#vision")
        expect(section).to_have_attribute("data-state", "done", timeout=120_000)
        rows = page.locator("#vision-results tr")
        assert rows.count() == 1 + 5, rows.all_inner_texts()   # a header and the five default labels
        probabilities = [float(t.split()[-2]) for t in rows.all_inner_texts()[1:]]
        assert abs(sum(probabilities) - 100) < 0.5, probabilities
        figures = page.locator("#vision-figures").inner_text()
        assert "vision" in figures and " on " in figures and "tier" in figures, figures
    finally:
        context.close()
