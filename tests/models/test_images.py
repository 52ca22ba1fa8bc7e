"""Image preprocessing (models/images.py) against transformers' CLIPImageProcessor and ViTImageProcessor (their PIL
backend) on scikit-image's bundled photographs (fixture made by tests/fixtures/make_clip_fixture.py): the same pixel
tensor to the bit; images over a budget decoded in strips (PNG: still to the bit) or scaled while decoding (JPEG),
with bounded memory."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL
import pytest
from clip_files import (
    PHOTOS,
    PREPROCESSORS,
    photo_path,
    preprocessing_reference,
    sample_positions,
)
from gpuport.errors import LoadError, UnsupportedFeature
from gpuport.host.references import resample_ref
from gpuport.models.images import (
    ImageProcessor,
    pillow_coefficients,
    scaled,
    vertical_first,
)
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]


def _processor(kind: str) -> ImageProcessor:
    return ImageProcessor.from_config(PREPROCESSORS[kind])


@pytest.mark.parametrize("kind", sorted(PREPROCESSORS))
def test_photographs_equal_transformers_to_the_bit(kind):
    ref = preprocessing_reference()
    proc = _processor(kind)
    for photo in PHOTOS:
        x = proc(photo_path(photo).read_bytes()).pixels
        want = ref["photos"][photo][kind]
        samples = np.frombuffer(base64.b64decode(want["samples"]), np.float32)
        assert list(x.shape) == want["shape"] and x.dtype == np.float32
        assert float(np.abs(x[sample_positions(x.shape)] - samples).max()) <= 1e-6, photo
        assert hashlib.sha256(x.tobytes()).hexdigest() == want["sha256"], f"{photo}: not transformers' tensor"


@pytest.mark.parametrize("kind", sorted(PREPROCESSORS))
def test_normalising_by_table_is_transformers_arithmetic(kind):
    """normalized() looks each byte up in a table of its channel's 256 outputs: the same floats as rescaling and
    normalising the image op by op (transformers' order), for every byte, odd sizes and no rescale."""
    r = np.random.default_rng(5)
    for proc in (_processor(kind), ImageProcessor(do_rescale=False), ImageProcessor(do_normalize=False)):
        pixels = r.integers(0, 256, (7, 5, 3), dtype=np.uint8)
        pixels[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 1, 254]]
        want = scaled(np.moveaxis(pixels, -1, 0), proc)
        got = proc.normalized(pixels)
        assert got.dtype == np.float32 and got.shape == (3, 7, 5) and np.array_equal(got, want)


def test_inputs_bytes_path_array_and_pil_agree():
    proc = _processor("clip")
    path = photo_path("chelsea.png")
    want = proc(path.read_bytes()).pixels
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        assert np.array_equal(proc(im).pixels, want)
    assert np.array_equal(proc(path).pixels, want) and np.array_equal(proc(str(path)).pixels, want)
    assert np.array_equal(proc(rgb).pixels, want)
    with pytest.raises(ValueError, match=r"\(height, width, 3\) uint8"):
        proc(rgb.astype(np.float32))
    with pytest.raises(LoadError, match="not an image"):
        proc(b"not an image")
    with pytest.raises(TypeError, match="PIL image"):
        proc(3.5)


def test_the_kernels_resize_as_this_pillow_does():
    """Where the SIMD kernels are linked (natively here: make setup builds them) they resize, crop and normalise an
    image in one call: the same tensor, to the bit, as Pillow's resize, the crop and the table. Shapes: 1x1, one row,
    one column, odd sizes, sizes that keep an axis, a width that grows while the height shrinks (which Pillow 13 and
    later resize vertically first), crops inside and crops padded; CLIP's, ViT's and two made-up processors."""
    procs = [_processor(kind) for kind in sorted(PREPROCESSORS)] + [
        ImageProcessor.from_config({"size": {"shortest_edge": 150}, "do_center_crop": True,
                                    "crop_size": {"height": 200, "width": 180}}),
        ImageProcessor.from_config({"image_processor_type": "ViTImageProcessor", "resample": 3,
                                    "size": {"height": 100, "width": 300}, "do_center_crop": True,
                                    "crop_size": {"height": 120, "width": 200}})]
    r = np.random.default_rng(8)
    orders = set()
    for proc in procs:
        for h, w in ((1, 1), (1, 9), (9, 1), (151, 149), (300, 451), (1000, 30), (30, 1000), (224, 224), (90, 50)):
            rgb = r.integers(0, 256, (h, w, 3), dtype=np.uint8)
            made = proc(rgb)
            assert made.stats["resize"] == "native-simd", made.stats
            want = proc.normalized(proc.pixels(rgb)[0])
            assert made.pixels.shape == want.shape and np.array_equal(made.pixels, want), (proc, (h, w))
            size = proc.resized(w, h)
            first = vertical_first(w, h, size)
            orders.add(first)
            pil = np.asarray(Image.fromarray(rgb).resize(size, resample=proc.resample))
            assert np.array_equal(resample_ref(rgb, size, proc.resample, vertical_first=first), pil), (proc, (h, w))
    assert orders == ({False, True} if tuple(map(int, PIL.__version__.split(".")[:2])) >= (13, 0) else {False})


def test_only_jpegs_the_browser_decodes_as_pillow_go_to_it():
    """A page hands the browser's decoder YCbCr and greyscale JPEGs without an EXIF rotation whose RGBA fits the
    budget (e2e/test_page_vision.py: those give Pillow's bytes); CMYK, rotated, too large, PNG and garbage stay with
    Pillow. Natively nothing is handed over."""
    from gpuport.models.images import _browser_decodes, decode_in_page
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8))

    def saved(image, fmt="JPEG", **kw):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        return buf.getvalue()

    rotated = Image.Exif()
    rotated[0x0112] = 6
    assert _browser_decodes(saved(rgb), None) == (30, 40)
    assert _browser_decodes(bytearray(saved(rgb.convert("L"))), 30 * 40 * 4) == (30, 40)
    for image, budget in ((saved(rgb), 30 * 40 * 4 - 1), (saved(rgb.convert("CMYK")), None),
                          (saved(rgb, exif=rotated), None), (saved(rgb, "PNG"), None),
                          (b"\xff\xd8\xff" + b"0" * 64, None), (np.asarray(rgb), None), (rgb, None)):
        assert _browser_decodes(image, budget) is None
    picks, later = decode_in_page([saved(rgb)], None)
    assert picks == []
    later.close()


def test_exif_orientation_applied_as_pil_does():
    proc = _processor("clip")
    base = Image.open(photo_path("chelsea.png")).convert("RGB")
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for fmt in ("PNG", "JPEG"):
            buf = io.BytesIO()
            base.save(buf, fmt, exif=exif)
            upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB")
            want = proc(np.asarray(upright)).pixels
            assert np.array_equal(proc(buf.getvalue()).pixels, want), (orientation, fmt)


def test_pillow_coefficients_are_pils_own():
    """PIL's vertical pass in integers here (the strips' second pass) equals PIL's resize of the whole image."""
    im = Image.open(photo_path("coffee.png")).convert("RGB")
    for resample, size in ((3, (300, 224)), (2, (224, 224)), (3, (700, 500))):
        firsts, counts, fixed = pillow_coefficients(im.size[1], size[1], resample)
        narrow = np.asarray(im.resize((size[0], im.size[1]), resample=resample)).astype(np.int64)
        rows = [np.tensordot(fixed[y, :counts[y]], narrow[firsts[y]:firsts[y] + counts[y]], axes=1)
                for y in range(size[1])]
        ours = np.clip((np.stack(rows) + (1 << 21)) >> 22, 0, 255)
        assert np.array_equal(ours, np.asarray(im.resize(size, resample=resample))), (resample, size)


@pytest.mark.parametrize("kind", sorted(PREPROCESSORS))
def test_strips_equal_the_whole_image(kind):
    proc = _processor(kind)
    for photo in ("astronaut.png", "camera.png", "logo.png", "motorcycle_left.png"):
        data = photo_path(photo).read_bytes()
        whole, _ = proc.pixels(data)
        for budget in (30_000, 400_000):
            pixels, stats = proc.pixels(data, budget=budget)
            assert stats["path"] == "strips" and stats["strips"] > 1 and stats["largest_buffer"] <= budget, stats
            assert np.array_equal(pixels, whole), (photo, budget)


def test_rotated_strips_and_draft_stay_close():
    """A rotated PNG's strips are resized before the rotation (PIL's passes then run in the other order: within 2
    levels); a JPEG over the budget is decoded at a DCT scale (libjpeg's own scaling: close, not equal)."""
    proc = _processor("clip")
    base = Image.open(photo_path("chelsea.png")).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    base.save(buf, "PNG", exif=exif)
    whole, _ = proc.pixels(buf.getvalue())
    pixels, stats = proc.pixels(buf.getvalue(), budget=50_000)
    assert stats["orientation"] == 6 and np.abs(pixels.astype(int) - whole).max() <= 2
    big = base.resize((base.size[0] * 4, base.size[1] * 4), resample=3)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=95)
    whole, _ = proc.pixels(buf.getvalue())
    pixels, stats = proc.pixels(buf.getvalue(), budget=1 << 20)
    assert stats["path"] == "draft" and stats["decoded"][0] < big.size[0] and stats["largest_buffer"] <= 1 << 20
    assert np.abs(pixels.astype(int) - whole).mean() < 2.0


def test_config_parsing():
    clip, vit = _processor("clip"), _processor("vit")
    assert (clip.shortest_edge, clip.crop, clip.resample) == (224, (224, 224), 3)
    assert (vit.size, vit.crop, vit.resample, vit.mean) == ((224, 224), None, 2, (0.5, 0.5, 0.5))
    assert clip.resized(640, 427) == (335, 224) and vit.resized(640, 427) == (224, 224)
    assert ImageProcessor.from_config({**PREPROCESSORS["clip"], "size": {"shortest_edge": 336},
                                       "crop_size": {"height": 336, "width": 336}}).output == (336, 336)
    with pytest.raises(UnsupportedFeature, match="resample 1"):
        ImageProcessor.from_config({**PREPROCESSORS["vit"], "resample": 1})
    with pytest.raises(UnsupportedFeature, match="DetrImageProcessor"):
        ImageProcessor.from_config({"image_processor_type": "DetrImageProcessor"})


def test_a_48_megapixel_png_never_takes_its_float_size():
    """8000 x 6000 (48 MP: 576 MB as float32, 144 MB as RGB bytes) under a 16 MiB budget: the process's peak
    resident memory while it is preprocessed (VmHWM, reset first) stays far below even its bytes."""
    script = textwrap.dedent("""
        import io, re, sys
        import numpy as np
        from PIL import Image
        from gpuport.models.images import ImageProcessor
        sys.path.insert(0, "tests")
        from clip_files import PREPROCESSORS, photo_path
        width, height = 8000, 6000
        tile = np.asarray(Image.open(photo_path("coffee.png")).convert("RGB").resize((width, 600)))
        out = io.BytesIO()
        # written a band at a time by Pillow's encoder from a lazily repeated band: the image never exists whole here
        Image.frombuffer("RGB", (width, height), np.ascontiguousarray(np.broadcast_to(
            tile[None], (10,) + tile.shape).reshape(height, width, 3)), "raw", "RGB", 0, 1).save(
            out, "PNG", compress_level=1)
        data = out.getvalue()
        del tile
        proc = ImageProcessor.from_config(PREPROCESSORS["clip"])
        hwm = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        open("/proc/self/clear_refs", "w").write("5")
        base = rss()
        result = proc(data, budget=16 << 20)
        print(hwm() - base, result.stats["largest_buffer"], result.stats["strips"], result.pixels.shape)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    peak, largest, strips, shape = run.stdout.split(maxsplit=3)
    assert int(largest) <= 16 << 20 and int(strips) > 10 and shape.strip() == "(3, 224, 224)"
    assert int(peak) < 32 << 20, f"peak resident memory grew {int(peak) / 2**20:.0f} MiB"
