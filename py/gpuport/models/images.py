"""Images for the vision models: PNG/JPEG bytes, a path, an HxWx3 uint8 NumPy array or a PIL image in, the pixel
tensor Hugging Face's CLIPImageProcessor / ViTImageProcessor (their PIL backend) gives out, to the last bit.

Pillow does the decoding (natively `pip install gpuport[vision]`; in a page Pyodide's own Pillow, which gpuport's
Pyodide distribution vendors). Where gpuport's SIMD kernels are linked (a page, and natively after `make setup`) they
resize, crop and normalise in one call on their threads (hostkernels/resample.c: Pillow's integer arithmetic, to the
bit, in the pass order of the Pillow beside them); else Pillow resizes. Either way:

1. bytes and paths are opened as transformers' `load_image` opens them, and so are PIL images: the EXIF orientation
   applied (ImageOps.exif_transpose), then convert("RGB"); an array is taken as RGB as it is;
2. resize with PIL's antialiased filter (CLIP: the shortest edge to 224, bicubic; ViT: 224 x 224, bilinear), the
   sizes computed as transformers computes them (int(224 * long / short));
3. the integer center crop (top = (height - 224) // 2), rescale (uint8 in float64 times 1/255, then float32),
   normalise ((x - mean) / std in float32), channels first.

Images over a budget (the tier's: a vision model passes `budget=`) are never decoded whole: a JPEG is decoded by
libjpeg's DCT scaling (Image.draft) at the smallest scale that still covers the resize (a few levels from
transformers', which decodes every pixel first); an 8-bit PNG is inflated a strip of rows at a time, each strip
decoded by Pillow as a PNG of its own (its first row the previous strip's last, so every filter sees its row above)
and resized as it comes, PIL's filter centred exactly as on the whole image. `Preprocessed.stats` says which path
ran and the largest pixel buffer it held. Other formats, which Pillow decodes only whole, are decoded whole.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Coroutine, Iterator, Mapping, Sequence, Union

import numpy as np

from ..errors import LoadError, UnsupportedFeature
from ..host import hostops
from ..host.references import (
    BICUBIC,
    BILINEAR,
    PILLOW_PRECISION,
    PILLOW_SUPPORT,
    pillow_coefficients,
)
from ..platform import IN_PYODIDE

Image: Any = None      # PIL.Image and PIL.ImageOps once pillow() has imported them (an optional dependency)
ImageOps: Any = None

ImageInput = Union[bytes, bytearray, memoryview, str, os.PathLike, np.ndarray, Any]   # Any: a PIL image
# what makes an output from a decoded image: (upright RGB source, stats, whether it is already resized)
_Finish = Callable[[Any, dict[str, Any], bool], np.ndarray]
_Later = Coroutine[Any, Any, list[Any]]   # decode_in_page's images, once the browser has decoded them

RESCALE = 1 / 255
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}    # IHDR colour type -> samples per pixel
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)                      # EXIF orientations that rotate by 90 or 270 degrees
_TRANSPOSED = (2, 3, 4, 5, 6, 7, 8)             # those ImageOps.exif_transpose turns (any other leaves the image)


def pillow() -> Any:
    """PIL.Image, imported on first use; UnsupportedFeature saying how to install Pillow where it is missing."""
    global Image, ImageOps
    if Image is None:
        try:
            from PIL import Image as image_module
            from PIL import ImageOps as ops_module
        except ImportError:
            raise UnsupportedFeature("images need Pillow: pip install 'gpuport[vision]' (a page loads Pyodide's "
                                     "own: await gpuport.models.images.ensure_pillow())") from None
        Image, ImageOps = image_module, ops_module
    return Image


async def ensure_pillow() -> None:
    """Pillow importable here: in a page, Pyodide's own build (gpuport's Pyodide distribution vendors it) is loaded
    the first time; natively it must be installed (the vision extra)."""
    if IN_PYODIDE:
        try:
            pillow()
            return
        except UnsupportedFeature:
            from ..backends.jsmodules import load_package
            await load_package("pillow")
    pillow()


@dataclass(frozen=True)
class ImageProcessor:
    """A checkpoint's preprocessor_config.json, CLIPImageProcessor's or ViTImageProcessor's.

    `shortest_edge` resizes keeping the aspect ratio (CLIP), else `size` (height, width) exactly (ViT); `crop`
    (height, width) or None; `resample` PIL's filter (3 bicubic, 2 bilinear)."""

    shortest_edge: int | None = 224
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = (224, 224)
    resample: int = BICUBIC
    rescale_factor: float = RESCALE
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ImageProcessor":
        """From preprocessor_config.json (either spelling of `size` and `crop_size`: an int or a dict)."""
        kind = str(cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or "CLIPImageProcessor")
        square = kind.startswith("ViT")   # transformers' default_to_square: ViT's int size is a square
        if not kind.startswith(("CLIP", "ViT")):
            raise UnsupportedFeature(f"preprocessor_config.json: {kind} is not an image processor gpuport knows "
                                     "(CLIPImageProcessor, ViTImageProcessor)")
        size = cfg.get("size", 224)
        shortest: int | None = None
        exact: tuple[int, int] | None = None
        if isinstance(size, int):
            exact, shortest = ((size, size), None) if square else (None, size)
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, Mapping) and {"height", "width"} <= set(size):
            exact = (int(size["height"]), int(size["width"]))
        else:
            raise LoadError(f"preprocessor_config.json: size {size!r} is neither an int, a shortest_edge nor a "
                            "height and width")
        crop = None
        if cfg.get("do_center_crop", False):
            c = cfg.get("crop_size", 224)
            crop = (int(c), int(c)) if isinstance(c, int) else (int(c["height"]), int(c["width"]))
        resample = int(cfg.get("resample", BILINEAR if square else BICUBIC))
        if resample not in PILLOW_SUPPORT:
            raise UnsupportedFeature(f"preprocessor_config.json: resample {resample} (only 2, bilinear, and 3, "
                                     "bicubic)")
        if not cfg.get("do_resize", True):
            raise UnsupportedFeature("preprocessor_config.json: do_resize false (the towers take one size)")
        mean, std = tuple(cfg.get("image_mean", cls.mean)), tuple(cfg.get("image_std", cls.std))
        if len(mean) != 3 or len(std) != 3:
            raise LoadError("preprocessor_config.json: image_mean and image_std need three values")
        return cls(shortest, exact, crop, resample, float(cfg.get("rescale_factor", RESCALE)),
                   tuple(float(m) for m in mean), tuple(float(s) for s in std),   # type: ignore[arg-type]
                   bool(cfg.get("do_rescale", True)), bool(cfg.get("do_normalize", True)))

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the resize gives an upright image of this size, as transformers computes it."""
        if self.shortest_edge is None:
            assert self.size is not None
            return self.size[1], self.size[0]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    @property
    def output(self) -> tuple[int, int]:
        """(height, width) of the pixel tensor."""
        if self.crop is not None:
            return self.crop
        assert self.size is not None
        return self.size

    def __call__(self, image: ImageInput, budget: int | None = None) -> "Preprocessed":
        """The image as the model's (3, H, W) float32 input. `budget`: bytes a decoded image may take before it
        is decoded in strips or scaled down while decoding (None: always whole, transformers' own path). Where the
        SIMD kernels are linked they resize it (Pillow's arithmetic, to the bit), crop and normalise it in one call
        on the kernels' threads; `stats["resize"]` says what resized it."""
        return Preprocessed(*self._made(image, budget, self._input))

    def pixels(self, image: ImageInput, budget: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The resized, cropped RGB image (H, W, 3) uint8 (Pillow's resize), and how it was made."""
        return self._made(image, budget, self._pillow_pixels)

    def _made(self, image: ImageInput, budget: int | None, finish: _Finish) -> tuple[np.ndarray, dict[str, Any]]:
        """finish(source, stats, resized) on the image decoded: source is upright, a PIL image (RGB) or an (h, w, 3)
        RGB or (h, w, 4) RGBA uint8 array (the browser's), already resized where `resized` (decoded in strips)."""
        pillow()
        if isinstance(image, Decoded):
            pixels = image.pixels
            stats = {"path": "browser", "decoded_in": image.decoded_in, "format": "JPEG",
                     "source": [pixels.shape[1], pixels.shape[0]], "largest_buffer": pixels.nbytes}
            return finish(pixels, stats, False), stats
        if isinstance(image, np.ndarray):
            _check_array(image)
            stats = {"path": "array", "source": [image.shape[1], image.shape[0]], "largest_buffer": image.nbytes}
            return finish(image, stats, False), stats
        im = _open(image)
        try:
            return self._decoded(im, budget, finish)
        finally:
            if im is not image:
                im.close()

    def _decoded(self, im: Any, budget: int | None, finish: _Finish) -> tuple[np.ndarray, dict[str, Any]]:
        width, height = im.size
        whole = width * height * 3
        stats: dict[str, Any] = {"source": [width, height], "format": im.format}
        if budget is None or whole <= budget or im.format not in ("JPEG", "PNG"):
            stats.update(path="whole", largest_buffer=whole)
            if budget is not None and whole > budget:
                stats["note"] = f"Pillow decodes {im.format} images only whole"
            return finish(_upright(im), stats, False), stats
        if im.format == "JPEG":
            orientation = int(im.getexif().get(_ORIENTATION, 1) or 1)
            target = self.resized(*((height, width) if orientation in _SWAPS_AXES else (width, height)))
            # libjpeg's DCT scaling: the smallest of 1/1 .. 1/8 still at least the resize's size (source frame)
            im.draft("RGB", target[::-1] if orientation in _SWAPS_AXES else target)
            stats.update(path="draft", orientation=orientation, decoded=list(im.size),
                         largest_buffer=im.size[0] * im.size[1] * 3)
            return finish(_upright(im), stats, False), stats
        im.fp.seek(0)
        data = im.fp.read()
        strips = png_strips(data, budget)
        if strips is None:
            stats.update(path="whole", largest_buffer=whole, note="Pillow decodes this PNG only whole")
            return finish(_upright(im), stats, False), stats
        orientation = png_orientation(data)
        target = self.resized(*((height, width) if orientation in _SWAPS_AXES else (width, height)))
        out_w, out_h = target[::-1] if orientation in _SWAPS_AXES else target
        resized, largest, count = _resize_strips(strips, width, height, out_w, out_h, self.resample)
        stats.update(path="strips", orientation=orientation, strips=count, largest_buffer=largest)
        if orientation != 1:
            resized.getexif()[_ORIENTATION] = orientation
            resized = ImageOps.exif_transpose(resized)
        return finish(resized, stats, True), stats

    def _pillow_pixels(self, source: Any, stats: dict[str, Any], resized: bool) -> np.ndarray:
        if not resized:
            if isinstance(source, np.ndarray):
                source = Image.fromarray(np.ascontiguousarray(source[..., :3]), mode="RGB")
            source = self._resize(source)
            stats["resize"] = "pillow"
        return self._crop(np.asarray(source))

    def _input(self, source: Any, stats: dict[str, Any], resized: bool) -> np.ndarray:
        """The model's input from a decoded source: the kernels' resample where they are linked (not for strips,
        which are resized as they come), else Pillow's resize, then the crop and the table."""
        if resized or hostops.layers() is None:
            return self.normalized(self._pillow_pixels(source, stats, resized))
        rgb = np.asarray(source)
        height, width = rgb.shape[:2]
        size = self.resized(width, height)
        made = hostops.resample_image(rgb, size, self.window(*size), self.resample, self._table,
                                      vertical_first=vertical_first(width, height, size))
        assert made is not None
        stats["resize"] = made[1]
        return made[0]

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the model's input in a resized image of this size: transformers'
        center_crop (its padding outside the image), or the whole image without a crop."""
        if self.crop is None:
            return 0, 0, width, height
        ch, cw = self.crop
        return (width - cw) // 2, (height - ch) // 2, cw, ch

    def _resize(self, im: Any) -> Any:
        return im.resize(self.resized(*im.size), resample=self.resample)

    def _crop(self, pixels: np.ndarray) -> np.ndarray:
        """transformers' center_crop: integer offsets, zero padding where the image is smaller."""
        if self.crop is None:
            return pixels
        ch, cw = self.crop
        h, w = pixels.shape[:2]
        top, left = (h - ch) // 2, (w - cw) // 2
        if top >= 0 and left >= 0:
            return pixels[top:top + ch, left:left + cw]
        out = np.zeros((max(ch, h), max(cw, w), 3), np.uint8)
        pt, pl = math.ceil((out.shape[0] - h) / 2), math.ceil((out.shape[1] - w) / 2)
        out[pt:pt + h, pl:pl + w] = pixels
        top, left = top + pt, left + pl
        return out[max(0, top):top + ch, max(0, left):left + cw]

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32: rescale in float64 then float32, (x - mean) / std in float32. Each
        output is a function of its channel and byte alone, so a table of the 3 x 256 made the same way gives it
        (224 x 224 in Pyodide: 1.5 ms op by op, 0.5 indexing the table; np.take there took 1.2)."""
        out = np.empty((3, *pixels.shape[:2]), np.float32)
        table = self._table
        for c in range(3):
            out[c] = table[c][pixels[..., c]]
        return out

    @cached_property
    def _table(self) -> np.ndarray:
        return scaled(np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256)), self)


def scaled(x: np.ndarray, processor: ImageProcessor) -> np.ndarray:
    """Bytes (3, ...) channels first as transformers rescales and normalises them: times rescale_factor in float64,
    then float32, then (x - mean) / std in float32."""
    if processor.do_rescale:
        x = (x.astype(np.float64) * processor.rescale_factor).astype(np.float32)
    else:
        x = x.astype(np.float32)
    if processor.do_normalize:
        mean, std = np.asarray(processor.mean, np.float32), np.asarray(processor.std, np.float32)
        x = ((x.T - mean) / std).T
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class Decoded:
    """An image a page's browser decoded (decode_in_page): (height, width, 4) uint8 RGBA, upright, alpha unused;
    `decoded_in`: "a worker" (the decoder's own), or "this thread" where none started."""

    pixels: np.ndarray
    decoded_in: str


def decode_in_page(images: Sequence[ImageInput], budget: int | None) -> tuple[list[int], _Later]:
    """In a page, starts the browser's decoder (pageio.decode_jpegs: all at once, in its worker) on each JPEG it
    decodes as the Pillow wheels' libjpeg-turbo does: (their indices, an awaitable of each as a Decoded, or as it
    was where the browser refused it or gave another size than its header's: Pillow decodes it then). Natively,
    and without such a JPEG: none."""
    sizes = {i: size for i, image in enumerate(images) if IN_PYODIDE and (size := _browser_decodes(image, budget))}
    if not sizes:
        return [], _nothing()
    from ..backends.pageio import decode_jpegs
    picks = list(sizes)
    started = decode_jpegs([images[i] for i in picks])

    async def decoded() -> list[Any]:
        return [Decoded(*p) if isinstance(p, tuple) and p[0].shape[:2] == sizes[i] else images[i]
                for i, p in zip(picks, await started)]

    return picks, decoded()


async def _nothing() -> list[Any]:
    return []


def _browser_decodes(image: Any, budget: int | None) -> tuple[int, int] | None:
    """(height, width) of a JPEG (its bytes) whose pixels the browser gives as Pillow would: YCbCr or greyscale (not
    CMYK, which each converts its own way), no EXIF rotation to apply, its RGBA within `budget` (past it Pillow's
    DCT scaling decodes it smaller); None for any other image."""
    if not isinstance(image, (bytes, bytearray, memoryview)) or bytes(image[:3]) != b"\xff\xd8\xff":
        return None
    try:
        with pillow().open(io.BytesIO(bytes(image))) as im:
            width, height = im.size
            takes = (im.format == "JPEG" and im.mode in ("RGB", "L")
                     and int(im.getexif().get(_ORIENTATION, 1) or 1) == 1
                     and (budget is None or width * height * 4 <= budget))
    except (OSError, Image.UnidentifiedImageError):
        return None
    return (height, width) if takes else None


@dataclass
class Preprocessed:
    """One image's model input (3, H, W) float32, and how it was made (`path`: whole, draft, strips, browser or
    array; `resize`: pillow or the kernels' engine; `largest_buffer`: bytes of the largest pixel buffer it held;
    `source`: the decoded size)."""

    pixels: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


def vertical_first(width: int, height: int, size: tuple[int, int]) -> bool:
    """Whether the Pillow here resizes a (width, height) image to size = (width, height) with its vertical pass
    first: from Pillow 13 on, where the height shrinks and the width grows (python-pillow/Pillow#9549; the order
    changes the rounding between the passes)."""
    return size[0] > width and size[1] < height and _pillow_version() >= (13, 0)


def _pillow_version() -> tuple[int, ...]:
    return tuple(int(part) for part in pillow().__version__.split(".")[:2])


def _check_array(array: np.ndarray) -> None:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"an image array must be (height, width, 3) uint8 RGB, got {array.dtype} {array.shape}")


def _open(image: ImageInput) -> Any:
    """A lazily opened PIL image (nothing decoded yet) for bytes or a path; a PIL image as it is."""
    pil = pillow()
    if isinstance(image, pil.Image):
        return image
    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            return pil.open(io.BytesIO(bytes(image)))
        if isinstance(image, (str, os.PathLike)):
            return pil.open(os.fspath(image))
    except (OSError, pil.UnidentifiedImageError) as exc:
        raise LoadError(f"not an image Pillow can read: {exc}") from None
    raise TypeError(f"an image is PNG/JPEG bytes, a path, an (H, W, 3) uint8 array or a PIL image, not "
                    f"{type(image).__name__}")


def _upright(im: Any) -> Any:
    """transformers' load_image: the EXIF orientation applied, then RGB. An image already upright and RGB is taken as
    it is: exif_transpose and convert would each copy it (2-3 ms of a 1411 x 1411 photo's 52 here)."""
    if im.getexif().get(_ORIENTATION, 1) in _TRANSPOSED:
        return ImageOps.exif_transpose(im).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


# -- strips ------------------------------------------------------------------------------------------------------

def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_orientation(data: bytes) -> int:
    """The EXIF orientation of a PNG's eXIf chunk (1 without one), read without decoding any pixel (Pillow's
    getexif() on a PNG decodes the whole image first: the chunk may follow the image data)."""
    body = next((body for kind, body in _chunks(data) if kind == b"eXIf"), None)
    if body is None:
        return 1
    exif = Image.Exif()
    exif.load(body)
    return int(exif.get(_ORIENTATION, 1) or 1)


def png_strips(data: bytes, budget: int) -> Iterator[Any] | None:
    """An 8-bit, non-interlaced PNG's bytes as RGB strips of whole rows (PIL images, top to bottom), each decoded
    by Pillow from a PNG made of its own filtered rows, the row above it first (as an unfiltered row, so every
    filter sees the row it refers to); None for a PNG this cannot cut (16- or 1..4-bit samples, interlaced)."""
    header: dict[str, int] = {}
    extra: list[bytes] = []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            header = {"width": width, "height": height, "depth": depth, "color": color, "interlace": interlace}
        elif kind in (b"PLTE", b"tRNS"):
            extra.append(_chunk(kind, body))
    if not header or header["depth"] != 8 or header["interlace"] or header["color"] not in _PNG_BANDS:
        return None
    width, color = header["width"], header["color"]
    row = width * _PNG_BANDS[color]
    # a strip is held three times over at most (inflated, decoded by Pillow at 4 bytes a pixel, converted)
    rows_per_strip = max(1, budget // (4 * (4 * width + row + 1)))
    return _decode_strips(data, header, row, rows_per_strip, extra)


def _filtered(data: bytes, row: int, rows_per_strip: int, height: int) -> Iterator[bytes]:
    """The inflated image data, `rows_per_strip` filtered rows (1 + `row` bytes each) at a time, never much more
    than a strip inflated at once."""
    inflate = zlib.decompressobj()
    pending = bytearray()
    strip = rows_per_strip * (row + 1)
    left = height * (row + 1)
    for kind, body in _chunks(data):
        if kind != b"IDAT":
            continue
        tail = body
        while tail and left:
            pending += inflate.decompress(tail, strip)
            tail = inflate.unconsumed_tail
            while left and len(pending) >= min(strip, left):
                take = min(strip, left)
                yield bytes(pending[:take])
                del pending[:take]
                left -= take
    pending += inflate.flush()
    if left and len(pending) < left:
        raise LoadError(f"PNG: the image data ends {left - len(pending)} bytes early")
    while left:
        take = min(strip, left)
        yield bytes(pending[:take])
        del pending[:take]
        left -= take


def _decode_strips(data: bytes, header: Mapping[str, int], row: int, rows_per_strip: int, extra: list[bytes]
                   ) -> Iterator[Any]:
    width, height, color = header["width"], header["height"], header["color"]
    above: bytes | None = None
    for filtered in _filtered(data, row, rows_per_strip, height):
        lead = b"" if above is None else b"\x00" + above
        count = len(filtered) // (row + 1) + (above is not None)
        ihdr = struct.pack(">IIBBBBB", width, count, 8, color, 0, 0, 0)
        strip = Image.open(io.BytesIO(_PNG_MAGIC + _chunk(b"IHDR", ihdr) + b"".join(extra)
                                      + _chunk(b"IDAT", zlib.compress(lead + filtered, 1)) + _chunk(b"IEND", b"")))
        strip.load()
        if above is not None:
            strip = strip.crop((0, 1, width, count))
        above = strip.crop((0, strip.size[1] - 1, width, strip.size[1])).tobytes("raw", _PNG_MODES[color])
        yield strip.convert("RGB")


def _resize_strips(strips: Iterator[Any], width: int, height: int, out_w: int, out_h: int, resample: int
                   ) -> tuple[Any, int, int]:
    """PIL's resize of a whole (width, height) RGB image to (out_w, out_h), to the bit, from its strips as they
    arrive: PIL's horizontal pass on each strip (a row's result depends on that row alone), then its vertical pass
    in integers here (pillow_coefficients: PIL's weights, its rounding and clipping) on each output row as soon as
    the rows under its filter are in. Returns (image, the largest pixel buffer held, strips)."""
    firsts, counts, fixed = pillow_coefficients(height, out_h, resample)
    out = np.empty((out_h, out_w, 3), np.uint8)
    held = np.empty((0, out_w, 3), np.uint8)    # horizontally resized rows held_from.., under a filter still
    held_from = decoded = yy = largest = count = 0
    for strip in strips:
        rows = strip.size[1]
        narrow = np.asarray(strip.resize((out_w, rows), resample=resample, box=(0, 0, width, rows)))
        held = np.concatenate([held, narrow])
        decoded += rows
        count += 1
        # the strip inflated, decoded and converted (PIL holds RGB at 4 bytes a pixel), and the rows held
        largest = max(largest, 12 * rows * width + held.nbytes)
        while yy < out_h and firsts[yy] + counts[yy] <= decoded:
            lo = firsts[yy] - held_from
            window = held[lo:lo + counts[yy]].astype(np.int64)
            acc = np.tensordot(fixed[yy, :counts[yy]], window, axes=1) + (1 << (PILLOW_PRECISION - 1))
            out[yy] = np.clip(acc >> PILLOW_PRECISION, 0, 255)
            yy += 1
        drop = (firsts[yy] if yy < out_h else decoded) - held_from
        held, held_from = held[drop:], held_from + drop
    return Image.fromarray(out, mode="RGB"), largest, count


__all__ = ["BICUBIC", "BILINEAR", "Decoded", "ImageInput", "ImageProcessor", "Preprocessed", "decode_in_page",
           "ensure_pillow", "pillow", "pillow_coefficients", "png_orientation", "png_strips", "vertical_first"]
