"""Small llama-flavoured GGUF files written by ggml's own writer (PyPI `gguf`), for the GGUF source's tests
and the page's LLM tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from smollm2 import random_blocks

Q = gguf.GGMLQuantizationType


def write_gguf(path: Path, kinds: dict[str, str], seed: int = 0, vocab: int = 3000) -> None:
    """A small llama-flavoured GGUF: tensors of the given ggml types (several 64 KiB chunks, a header of
    ~5 chunks from a `vocab`-entry token list), written by ggml's own writer."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_array("tokenizer.ggml.tokens", [f"token-{i:05d}-" + "x" * 100 for i in range(vocab)])
    for name, kind in kinds.items():
        n, k = (96, 256) if name.startswith("blk.") else (300, 512)
        if kind == "F32":
            w.add_tensor(name, rng.standard_normal(k).astype(np.float32))
        elif kind == "Q4_K":   # 144 bytes per 256 values; any bytes are a valid Q4_K block
            w.add_tensor(name, rng.integers(0, 256, (n, k // 256 * 144), dtype=np.uint8), raw_dtype=Q.Q4_K)
        else:
            raw = random_blocks(kind, n, k, rng).reshape(n, -1)
            w.add_tensor(name, raw, raw_dtype=Q[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


TINY = {"token_embd.weight": "Q8_0", "blk.0.attn_norm.weight": "F32", "blk.0.attn_q.weight": "Q4_1",
        "blk.0.ffn_down.weight": "Q4_1", "blk.1.attn_norm.weight": "F32", "blk.1.attn_q.weight": "Q4_1",
        "output_norm.weight": "F32"}
