"""The vision models' test set-up: CLIP's real BPE vocabulary and checkpoints of the real configurations with seeded
random weights, written with NumPy in Hugging Face's exact file layout (config.json, model.safetensors, vocab.json,
merges.txt, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json), so CI needs no torch; and the
reference fixtures tests/fixtures/make_clip_fixture.py made once from those files with transformers.

The vocabulary is CLIP's own: open_clip's bpe_simple_vocab_16e6.txt.gz (PyPI `open_clip_torch`, MIT; `make setup`
installs it without its dependencies, as the model packages) turned into vocab.json and merges.txt exactly as CLIP's
SimpleTokenizer builds its table (the 256 byte symbols, the same with `</w>`, one token per merge, then
<|startoftext|> and <|endoftext|>: ids 49406 and 49407, as openai/clip-vit-base-patch32 has them).

Run as a script it writes the checkpoints under .cache/vision/ (`make setup` does); the tests call `checkpoint(name)`,
which writes one when it is missing. A missing vocabulary package fails the test with the command that installs it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import cache
from pathlib import Path

import pytest

from gpuport.models.bpe import bytes_to_unicode

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
VOCAB_PACKAGE = "open_clip"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_INSTALL = ".venv/bin/pip install --no-deps open_clip_torch==3.3.0   (or: make setup)"
MERGES = 49152 - 256 - 2   # the merges CLIP keeps: its vocabulary is 49408 tokens


def vocab_path() -> Path:
    """open_clip's gzipped BPE merges, found without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / VOCAB_FILE).is_file():
            return Path(location) / VOCAB_FILE
    pytest.fail(f"CLIP's BPE vocabulary is not installed ({VOCAB_PACKAGE}/{VOCAB_FILE}); install it with: "
                f"{VOCAB_INSTALL}", pytrace=False)


@cache
def clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(vocab.json's token -> id, merges.txt's merge lines without its "#version" line)."""
    lines = gzip.open(vocab_path()).read().decode("utf-8").split("\n")[1:MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(line.split()) for line in lines]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, lines


def write_vocabulary(folder: Path) -> None:
    """vocab.json and merges.txt as Hugging Face's CLIP checkpoints hold them."""
    vocab, merges = clip_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@cache
def tokenizer_reference() -> dict:
    """tests/fixtures/clip_tokenizer_reference.json.gz: texts and Hugging Face CLIPTokenizer's ids."""
    with gzip.open(FIXTURES / "clip_tokenizer_reference.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


# preprocessor_config.json of openai/clip-vit-base-patch32 and google/vit-base-patch16-224, as published
CLIP_PREPROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor",
                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                     "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
VIT_PREPROCESSOR = {"do_normalize": True, "do_resize": True, "image_processor_type": "ViTImageProcessor",
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}
PREPROCESSORS = {"clip": CLIP_PREPROCESSOR, "vit": VIT_PREPROCESSOR}

# scikit-image's bundled photographs (skimage/data; camera is greyscale, logo RGBA: the conversions to RGB)
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "camera.png", "motorcycle_left.png", "rocket.jpg",
          "hubble_deep_field.jpg", "retina.jpg", "logo.png")
PHOTO_SAMPLES = 512   # pixel values per photo and processor kept in the fixture beside the whole tensor's sha256


def photo_path(name: str) -> Path:
    """A photograph bundled with scikit-image (a test dependency, pinned)."""
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations, "scikit-image is a test dependency: make setup"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


def sample_positions(shape: tuple[int, ...], seed: int = 0) -> tuple:
    """PHOTO_SAMPLES fixed positions in a (3, H, W) tensor."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, n, PHOTO_SAMPLES) for n in shape)


@cache
def preprocessing_reference() -> dict:
    """tests/fixtures/clip_preprocessing_reference.json: transformers' pixel tensors of PHOTOS (sha256, stats,
    sampled values) under the CLIP and the ViT processors."""
    return json.loads((FIXTURES / "clip_preprocessing_reference.json").read_text(encoding="utf-8"))
