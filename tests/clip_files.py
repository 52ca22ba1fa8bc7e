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

import fcntl
import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import struct
import sys
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from gpuport.models.bpe import bytes_to_unicode

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = ROOT / ".cache" / "vision"   # the generated checkpoints (git-ignored, as every artefact)
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


def jpeg_corpus() -> dict[str, bytes]:
    """JPEGs made here by Pillow's libjpeg-turbo, for the page's decoding (its browser's decoder against Pillow's): the
    chroma subsamplings Pillow writes (4:4:4, 4:2:2, 4:2:0), progressive, Huffman-optimised at a low quality,
    restart-marked, greyscale; sizes 1x1, odd ones off the 8- and 16-pixel blocks, and a photo's. Seeded."""
    from PIL import Image
    r = np.random.default_rng(11)
    out = {}
    for h, w in ((1, 1), (9, 17), (64, 64), (333, 501)):
        y, x = np.mgrid[0:h, 0:w]
        smooth = np.stack([np.sin(x / 7 + c) * 80 + np.cos(y / 5 - c) * 60 + 128 for c in range(3)], -1)
        image = Image.fromarray(np.clip(smooth + r.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
        for name, options in (("444", {"subsampling": 0}), ("422", {"subsampling": 1}), ("420", {"subsampling": 2}),
                              ("progressive", {"subsampling": 2, "progressive": True}),
                              ("optimised-q40", {"subsampling": 2, "optimize": True, "quality": 40}),
                              ("restarts", {"subsampling": 2, "restart_marker_blocks": 3})):
            buf = io.BytesIO()
            image.save(buf, "JPEG", **options)
            out[f"{h}x{w}-{name}.jpg"] = buf.getvalue()
        buf = io.BytesIO()
        image.convert("L").save(buf, "JPEG")
        out[f"{h}x{w}-grey.jpg"] = buf.getvalue()
    return out


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


# -- the checkpoints --------------------------------------------------------------------------------------------

def _clip_config(vision: dict, text: dict, projection: int) -> dict:
    """config.json of a Hugging Face CLIPModel (the keys openai/clip-vit-base-patch32 publishes; its text config's
    legacy eos_token_id 2 makes transformers pool at the largest id, the first <|endoftext|>)."""
    common = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "initializer_factor": 1.0,
              "initializer_range": 0.02, "layer_norm_eps": 1e-05, "projection_dim": projection}
    return {"architectures": ["CLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
            "model_type": "clip", "projection_dim": projection, "torch_dtype": "float32",
            "text_config": {**common, "model_type": "clip_text_model", "vocab_size": 49408, "max_position_embeddings": 77,
                            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, **text},
            "vision_config": {**common, "model_type": "clip_vision_model", "num_channels": 3, "image_size": 224,
                              **vision}}


def _vit_config(layers: int) -> dict:
    """config.json of google/vit-base-patch16-224 (ViTForImageClassification), its labels numbered."""
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit", "attention_probs_dropout_prob": 0.0,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 768, "image_size": 224,
            "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12, "num_attention_heads": 12,
            "num_channels": 3, "num_hidden_layers": layers, "patch_size": 16, "qkv_bias": True,
            "encoder_stride": 16, "torch_dtype": "float32",
            "id2label": {str(i): f"class {i}" for i in range(1000)},
            "label2id": {f"class {i}": i for i in range(1000)}}


B32_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "patch_size": 32}
B_TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8}
L14_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "patch_size": 14}
L14_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}

# name -> (config.json, seed). Full size: the published configurations. Small: the same widths, fewer layers (the
# logic tests'); "clip-l14-tiny": L/14's widths and patches (257 tokens) with one layer a tower; "clip-tiny": 64 wide
# (15 MB: the loader's tests, in pages too).
CONFIGS: dict[str, tuple[dict, int]] = {
    "clip-vit-base-patch32": (_clip_config({**B32_VISION, "num_hidden_layers": 12},
                                           {**B_TEXT, "num_hidden_layers": 12}, 512), 32),
    "clip-b32-small": (_clip_config({**B32_VISION, "num_hidden_layers": 2}, {**B_TEXT, "num_hidden_layers": 2}, 512),
                       320),
    "clip-l14-tiny": (_clip_config({**L14_VISION, "num_hidden_layers": 1}, {**L14_TEXT, "num_hidden_layers": 1}, 768),
                      14),
    "clip-tiny": (_clip_config({"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "patch_size": 32,
                                "num_hidden_layers": 2},
                               {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                                "num_hidden_layers": 2}, 32), 64),
    "vit-base-patch16-224": (_vit_config(12), 16),
    "vit-b16-small": (_vit_config(2), 160),
}


def _layer_tensors(prefix: str, h: int, f: int, names: dict[str, str]) -> Iterator[tuple[str, tuple[int, ...], str]]:
    for proj in ("q", "k", "v", "o"):
        yield f"{prefix}{names[proj]}.weight", (h, h), "linear"
        yield f"{prefix}{names[proj]}.bias", (h,), "bias"
    yield f"{prefix}{names['fc1']}.weight", (f, h), "linear"
    yield f"{prefix}{names['fc1']}.bias", (f,), "bias"
    yield f"{prefix}{names['fc2']}.weight", (h, f), "linear"
    yield f"{prefix}{names['fc2']}.bias", (h,), "bias"
    for norm in ("ln1", "ln2"):
        yield f"{prefix}{names[norm]}.weight", (h,), "norm"
        yield f"{prefix}{names[norm]}.bias", (h,), "bias"


_CLIP_LAYER = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
               "fc1": "mlp.fc1", "fc2": "mlp.fc2", "ln1": "layer_norm1", "ln2": "layer_norm2"}
_VIT_LAYER = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
              "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense",
              "ln1": "layernorm_before", "ln2": "layernorm_after"}


def tensor_plan(config: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, kind) of every tensor of the checkpoint, as transformers names them."""
    plan: list[tuple[str, tuple[int, ...], str]] = []
    if config["model_type"] == "clip":
        t, v = config["text_config"], config["vision_config"]
        ht, hv, proj = t["hidden_size"], v["hidden_size"], config["projection_dim"]
        patches = (v["image_size"] // v["patch_size"]) ** 2
        plan += [("logit_scale", (), "logit_scale"),
                 ("text_model.embeddings.token_embedding.weight", (t["vocab_size"], ht), "embedding"),
                 ("text_model.embeddings.position_embedding.weight", (t["max_position_embeddings"], ht), "embedding")]
        for i in range(t["num_hidden_layers"]):
            plan += _layer_tensors(f"text_model.encoder.layers.{i}.", ht, t["intermediate_size"], _CLIP_LAYER)
        plan += [("text_model.final_layer_norm.weight", (ht,), "norm"), ("text_model.final_layer_norm.bias", (ht,), "bias"),
                 ("text_projection.weight", (proj, ht), "linear"),
                 ("vision_model.embeddings.class_embedding", (hv,), "embedding"),
                 ("vision_model.embeddings.patch_embedding.weight", (hv, 3, v["patch_size"], v["patch_size"]), "linear"),
                 ("vision_model.embeddings.position_embedding.weight", (patches + 1, hv), "embedding"),
                 ("vision_model.pre_layrnorm.weight", (hv,), "norm"), ("vision_model.pre_layrnorm.bias", (hv,), "bias")]
        for i in range(v["num_hidden_layers"]):
            plan += _layer_tensors(f"vision_model.encoder.layers.{i}.", hv, v["intermediate_size"], _CLIP_LAYER)
        plan += [("vision_model.post_layernorm.weight", (hv,), "norm"),
                 ("vision_model.post_layernorm.bias", (hv,), "bias"), ("visual_projection.weight", (proj, hv), "linear")]
    else:
        h, p = config["hidden_size"], config["patch_size"]
        patches = (config["image_size"] // p) ** 2
        plan += [("vit.embeddings.cls_token", (1, 1, h), "embedding"),
                 ("vit.embeddings.position_embeddings", (1, patches + 1, h), "embedding"),
                 ("vit.embeddings.patch_embeddings.projection.weight", (h, 3, p, p), "linear"),
                 ("vit.embeddings.patch_embeddings.projection.bias", (h,), "bias")]
        for i in range(config["num_hidden_layers"]):
            plan += _layer_tensors(f"vit.encoder.layer.{i}.", h, config["intermediate_size"], _VIT_LAYER)
        plan += [("vit.layernorm.weight", (h,), "norm"), ("vit.layernorm.bias", (h,), "bias"),
                 ("classifier.weight", (len(config["id2label"]), h), "linear"),
                 ("classifier.bias", (len(config["id2label"]),), "bias")]
    return sorted(plan)   # safetensors' own order: by name


def random_tensor(name: str, shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    """A tensor's seeded random values (its own generator, so one tensor never depends on another): linear weights
    N(0, 1/fan_in) (activations stay of order one through every layer, attention is far from uniform), embeddings
    N(0, 0.5), norms' gains 1 + N(0, 0.1), biases N(0, 0.1), CLIP's logit scale ln(100) as trained."""
    if kind == "logit_scale":
        return np.asarray(np.log(100.0), np.float32).reshape(())
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "linear":
        x *= np.float32(1.0 / np.sqrt(np.prod(shape[1:])))
    elif kind == "embedding":
        x *= np.float32(0.5)
    elif kind == "norm":
        x = np.float32(1.0) + np.float32(0.1) * x
    else:
        x *= np.float32(0.1)
    return x


def write_checkpoint(folder: Path, name: str) -> None:
    """A whole checkpoint in Hugging Face's layout: model.safetensors written tensor by tensor (never all in memory),
    config.json, the tokenizer's files (CLIP) and preprocessor_config.json."""
    config, seed = CONFIGS[name]
    plan = tensor_plan(config)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tname, shape, _ in plan:
        nbytes = 4 * int(np.prod(shape, dtype=np.int64))
        header[tname] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for tname, shape, kind in plan:
            f.write(random_tensor(tname, shape, kind, seed).tobytes())
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    clip = config["model_type"] == "clip"
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSORS["clip" if clip else "vit"], indent=2))
    if clip:
        write_vocabulary(folder)
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "do_lower_case": True}, indent=2))
        (folder / "special_tokens_map.json").write_text(json.dumps({
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>"}, indent=2))


GENERATOR = 1   # bumped whenever tensor_plan, random_tensor or write_checkpoint changes what they write


def _stamp(name: str) -> str:
    """What a checkpoint was made from: its config and seed, and the generator's version."""
    return hashlib.sha256(json.dumps([CONFIGS[name], GENERATOR], sort_keys=True).encode()).hexdigest()


def checkpoint(name: str) -> Path:
    """The generated checkpoint `name` under .cache/vision/, written first when missing or made by another version
    of this generator (a lock keeps concurrent test processes from writing it twice)."""
    folder = CHECKPOINTS / name
    stamp = folder / ".generated"
    if stamp.is_file() and stamp.read_text() == _stamp(name):
        return folder
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    with open(CHECKPOINTS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == _stamp(name):
            return folder
        tmp = CHECKPOINTS / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_checkpoint(tmp, name)
        (tmp / ".generated").write_text(_stamp(name))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


@cache
def model_reference(name: str) -> dict:
    """tests/fixtures/vision_reference_<name>.json: transformers' outputs on the generated checkpoint `name`."""
    return json.loads((FIXTURES / f"vision_reference_{name}.json").read_text(encoding="utf-8"))


if __name__ == "__main__":   # make setup: every checkpoint the tests and the pages use
    for model in sys.argv[1:] or CONFIGS:
        print(checkpoint(model))
