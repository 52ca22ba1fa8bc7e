"""CLIP's tokenizer in pure Python (runs in Pyodide: no `regex`, no `tokenizers`), token for token Hugging Face's
CLIPTokenizer (transformers 5: the `tokenizers` pipeline, which CLIPTokenizerFast was before):

1. special tokens written in the text (`<|startoftext|>`, `<|endoftext|>`, case-sensitive) are split out first and
   kept whole;
2. the rest is normalized: NFC, each run of whitespace (Unicode White_Space, Oniguruma's \\s) one space, then each
   character lowercased on its own (Rust's char::to_lowercase: no final-sigma rule, unlike str.lower);
3. CLIP's regex keeps its matches and drops the rest (the spaces),
   `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`, emulated with
   `unicodedata` categories since Python's `re` has no \\p{L}/\\p{N}: one digit per piece;
4. ByteLevel's GPT-2 regex on each piece (it splits only what step 3 could not: a lowercased special token written
   in capitals becomes `<|`, `endoftext`, `|>`);
5. each piece's UTF-8 bytes mapped to printable characters (GPT-2's bytes_to_unicode), `</w>` appended to its last
   symbol, BPE merges by rank, a symbol outside the vocabulary `<|endoftext|>` (CLIP's unknown token);
6. `<|startoftext|>` before and `<|endoftext|>` after, truncated to 77 tokens (the text tower's positions) keeping
   both.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from ..errors import LoadError
from .bpe import BYTE_TO_CHAR, CHAR_TO_BYTE, CONTRACTIONS, WHITE_SPACE, char_kind, merge, split_gpt2

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
CONTEXT = 77                 # the text tower's positions: CLIP truncates every text to them


def normalize(text: str) -> str:
    """Step 2: NFC, whitespace runs to one space, each character lowercased on its own."""
    out, space = [], False
    for ch in unicodedata.normalize("NFC", text):
        if ch in WHITE_SPACE:
            if not space:
                out.append(" ")
            space = True
            continue
        space = False
        out.append(ch.lower())
    return "".join(out)


def split_clip(text: str) -> list[str]:
    """Step 3: CLIP's pre-tokenizer regex on normalized text, alternative by alternative, leftmost first."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        special = next((s for s in (BOS, EOS) if text.startswith(s, i)), None)
        if special is not None:
            pieces.append(special)
            i += len(special)
            continue
        if text[i] == "'":
            hit = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
            if hit:
                pieces.append(hit)
                i += len(hit)
                continue
        kind = char_kind(text[i])
        if kind == "S":
            i += 1
            continue
        start = i
        i += 1
        if kind != "N":   # a letter run, or a run of what is neither space, letter nor number
            while i < n and char_kind(text[i]) == kind:
                i += 1
        pieces.append(text[start:i])
    return pieces


class CLIPTokenizer:
    """CLIP's byte-level BPE (see the module docstring). `vocab`: token -> id (vocab.json); `merges`: "a b" lines
    in rank order (merges.txt without its "#version" line)."""

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[str], *, context: int = CONTEXT) -> None:
        missing = [t for t in (BOS, EOS) if t not in vocab]
        if missing:
            raise LoadError(f"CLIP tokenizer: the vocabulary has no {missing[0]}")
        self.vocab = dict(vocab)
        self.tokens = {i: t for t, i in self.vocab.items()}
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, line in enumerate(merges):
            a, sep, b = line.partition(" ")
            if not sep or not a or not b:
                raise LoadError(f"CLIP tokenizer: merge {rank} ({line!r}) is not two symbols separated by a space")
            self.ranks.setdefault((a, b), rank)
        self.bos_id, self.eos_id = self.vocab[BOS], self.vocab[EOS]
        self.pad_id = self.eos_id
        self.unk_id = self.eos_id   # CLIP's unknown token is <|endoftext|>
        self.context = context
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @classmethod
    def from_files(cls, vocab_json: str, merges_txt: str, *, context: int = CONTEXT) -> "CLIPTokenizer":
        """From the texts of a checkpoint's vocab.json and merges.txt; LoadError when either is malformed."""
        try:
            vocab = json.loads(vocab_json)
        except ValueError as exc:
            raise LoadError(f"CLIP tokenizer: vocab.json is not JSON: {exc}") from None
        if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
            raise LoadError("CLIP tokenizer: vocab.json is not an object of token -> integer id")
        lines = merges_txt.strip().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        return cls(vocab, lines, context=context)

    def _bpe_uncached(self, piece: str) -> tuple[str, ...]:
        word = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
        word[-1] += END_OF_WORD
        return tuple(merge(word, self.ranks))

    def tokenize(self, text: str) -> list[str]:
        """The BPE symbols of `text`, without <|startoftext|> and <|endoftext|> around it."""
        out: list[str] = []
        for segment, special in self._split_special(text):
            if special:
                out.append(segment)
                continue
            for piece in split_clip(normalize(segment)):
                for part in split_gpt2(piece):
                    out.extend(self._bpe(part))
        return out

    def _split_special(self, text: str) -> list[tuple[str, bool]]:
        """[(segment, is a special token)]: <|startoftext|> and <|endoftext|> as written, leftmost first."""
        parts: list[tuple[str, bool]] = []
        last = i = 0
        while True:
            hits = [(j, s) for s in (BOS, EOS) if (j := text.find(s, i)) >= 0]
            if not hits:
                break
            j, s = min(hits)
            if j > last:
                parts.append((text[last:j], False))
            parts.append((s, True))
            i = last = j + len(s)
        if last < len(text):
            parts.append((text[last:], False))
        return parts

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """<|startoftext|>, the text's ids, <|endoftext|>: at most `max_length` (default the context, 77) ids, the
        text's cut to fit (CLIPTokenizer with truncation=True)."""
        limit = self.context if max_length is None else max_length
        if limit < 2:
            raise ValueError(f"max_length must leave room for <|startoftext|> and <|endoftext|>, got {limit}")
        ids = [self.vocab.get(t, self.unk_id) for t in self.tokenize(text)]
        return [self.bos_id, *ids[:limit - 2], self.eos_id]

    def batch(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
        """Texts as one (n, longest) int32 array, shorter ones padded with <|endoftext|> (the pad token)."""
        if isinstance(texts, str):
            raise TypeError("batch takes a list of strings; wrap one text as [text]")
        enc = [self.encode(t, max_length) for t in texts]
        out = np.full((len(enc), max((len(e) for e in enc), default=2)), self.pad_id, np.int32)
        for row, e in zip(out, enc):
            row[:len(e)] = e
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`: `</w>` ends a word (a space), bytes decoded as UTF-8 (U+FFFD where split)."""
        words: list[str] = []
        buf = bytearray()
        for i in ids:
            t = self.tokens.get(int(i))
            if t is None:
                raise IndexError(f"token id {i} is outside the vocabulary of {len(self.tokens)}")
            if t in (BOS, EOS):
                if not skip_special_tokens:
                    words.append(buf.decode("utf-8", "replace") + t)
                    buf.clear()
                continue
            end = t.endswith(END_OF_WORD)
            buf.extend(CHAR_TO_BYTE[c] for c in (t[:-len(END_OF_WORD)] if end else t))
            if end:
                words.append(buf.decode("utf-8", "replace"))
                buf.clear()
        if buf:
            words.append(buf.decode("utf-8", "replace"))
        return " ".join(w for w in words if w)


__all__ = ["BOS", "CONTEXT", "CLIPTokenizer", "EOS", "normalize", "split_clip"]
