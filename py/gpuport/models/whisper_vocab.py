"""Whisper's vocabulary (CTranslate2's vocabulary.txt: one GPT-2 byte-level token per line), its special tokens and
the suppression lists of its config.json, as faster-whisper's defaults use them."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import LoadError
from .bpe import CHAR_TO_BYTE

_SPECIAL = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "translate": "<|translate|>",
            "transcribe": "<|transcribe|>", "sot_lm": "<|startoflm|>", "sot_prev": "<|startofprev|>",
            "no_speech": "<|nocaptions|>", "no_timestamps": "<|notimestamps|>"}


class Vocabulary:
    """Token ids <-> strings (vocabulary.txt: one GPT-2 byte-level token per line) and the special ids."""

    def __init__(self, text: str, config: Mapping[str, Any]) -> None:
        self.tokens = text.split("\n")
        if self.tokens and self.tokens[-1] == "":
            self.tokens.pop()
        index = {t: i for i, t in enumerate(self.tokens)}
        missing = [s for s in _SPECIAL.values() if s not in index]
        if missing:
            raise LoadError(f"vocabulary.txt: special token {missing[0]} is missing (not a Whisper vocabulary?)")
        self.ids = {k: index[s] for k, s in _SPECIAL.items()}
        self.timestamp_begin = self.ids["no_timestamps"] + 1
        specials = [self.ids[k] for k in ("transcribe", "translate", "sot", "sot_prev", "sot_lm", "no_speech")]
        try:
            self.suppress = np.array(sorted(set(map(int, config["suppress_ids"])) | set(specials)), dtype=np.int64)
            self.suppress_begin = np.array(sorted(map(int, config["suppress_ids_begin"])), dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"config.json: suppress_ids / suppress_ids_begin: {exc}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special and timestamp tokens dropped), invalid UTF-8 replaced."""
        out = bytearray()
        for i in ids:
            if i < self.ids["eot"]:
                out += bytes(CHAR_TO_BYTE.get(ch, 0x3F) for ch in self.tokens[i])
        return out.decode("utf-8", errors="replace")


def parse_config(text: str) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"config.json: not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise LoadError("config.json: not a JSON object")
    return config


__all__ = ["Vocabulary", "parse_config"]
