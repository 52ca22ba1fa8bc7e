"""A pure-Python BERT WordPiece tokenizer (uncased), equal to the `tokenizers` package's BertNormalizer +
BertPreTokenizer + WordPiece + [CLS]/[SEP] template, for the model's tokenizer.json. Runs in Pyodide,
where `tokenizers` does not exist.

Pipeline (the `tokenizers` order, which differs from the old Python BertTokenizer in edge cases):
1. special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) written in the text are matched verbatim first;
2. clean text: drop NUL, U+FFFD and control/format/unassigned chars (category C*) except \\t \\n \\r,
   map White_Space chars to " ";
3. put spaces around CJK ideographs;
4. strip accents (NFD, drop Mn) then lowercase char by char (do_lower_case=True);
5. split on whitespace and isolate each punctuation char (ASCII punctuation or Unicode P*);
6. WordPiece: greedy longest match first, "##" continuations; a word longer than 100 chars or with an
   unmatched piece becomes [UNK].
"""

from __future__ import annotations

import os
import unicodedata
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

# Unicode White_Space property (what Rust's char::is_whitespace tests).
_WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)] + [" ", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)] + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)

_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_whitespace(ch: str) -> bool:
    return ch in _WHITE_SPACE


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def normalize(text: str, lowercase: bool = True) -> str:
    """BertNormalizer: clean text, pad CJK, strip accents and lowercase (when `lowercase`)."""
    out = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(ord(ch)):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    text = "".join(out)
    if lowercase:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        # per char, as Rust's char::to_lowercase (str.lower() would make a final sigma "ς")
        text = "".join(c.lower() for c in text)
    return text


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: split on whitespace, each punctuation char a word of its own."""
    words: list[str] = []
    cur: list[str] = []
    for ch in text:
        if _is_whitespace(ch):
            if cur:
                words.append("".join(cur))
                cur = []
        elif _is_punctuation(ch):
            if cur:
                words.append("".join(cur))
                cur = []
            words.append(ch)
        else:
            cur.append(ch)
    if cur:
        words.append("".join(cur))
    return words


def read_vocab(path: str | os.PathLike) -> list[str]:
    """vocab.txt as a list of tokens (line i is id i)."""
    with open(path, encoding="utf-8") as f:
        return parse_vocab(f.read())


def parse_vocab(text: str) -> list[str]:
    """vocab.txt's text (e.g. fetched in a page) as a list of tokens."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines] if "\r" in text else lines


class WordPieceTokenizer:
    """Uncased BERT WordPiece with [CLS] ... [SEP], truncation and padding.

    `vocab`: a list of tokens (id = position), the text of vocab.txt, or a dict token -> id.
    """

    def __init__(self, vocab: Sequence[str] | str | dict[str, int], *, lowercase: bool = True,
                 max_length: int = 256, unk_token: str = "[UNK]", cls_token: str = "[CLS]",
                 sep_token: str = "[SEP]", pad_token: str = "[PAD]", max_input_chars_per_word: int = 100,
                 special_tokens: Iterable[str] = SPECIAL_TOKENS) -> None:
        if isinstance(vocab, str):
            vocab = parse_vocab(vocab)
        if isinstance(vocab, dict):
            self.vocab = dict(vocab)
        else:
            self.vocab = dict(zip(vocab, range(len(vocab))))
            if len(self.vocab) < len(vocab):   # a token listed twice keeps its first id
                self.vocab = {}
                for i, tok in enumerate(vocab):
                    self.vocab.setdefault(tok, i)
        self.lowercase = lowercase
        self.max_length = int(max_length)
        self.max_input_chars_per_word = max_input_chars_per_word
        for t in (unk_token, cls_token, sep_token, pad_token):
            if t not in self.vocab:
                raise ValueError(f"the vocabulary has no {t!r} token")
        self.unk_id = self.vocab[unk_token]
        self.cls_id = self.vocab[cls_token]
        self.sep_id = self.vocab[sep_token]
        self.pad_id = self.vocab[pad_token]
        self.special = {t: self.vocab[t] for t in special_tokens if t in self.vocab}
        self._wordpiece = lru_cache(maxsize=65536)(self._wordpiece_uncached)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw) -> "WordPieceTokenizer":
        return cls(read_vocab(path), **kw)

    # -- the pipeline --------------------------------------------------------------------------------
    def _wordpiece_uncached(self, word: str) -> tuple[int, ...]:
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_id,)
        ids = []
        start, n = 0, len(word)
        while start < n:
            end = n
            found = None
            while start < end:
                piece = word[start:end]
                if start > 0:
                    piece = "##" + piece
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.unk_id,)
            ids.append(found)
            start = end
        return tuple(ids)

    def _split_special(self, text: str) -> list[tuple[str, int | None]]:
        """[(segment, None) | (special token, id)]: special tokens written in the text, matched verbatim."""
        parts: list[tuple[str, int | None]] = []
        if not self.special or "[" not in text:
            return [(text, None)]
        i, last = 0, 0
        while True:
            j = text.find("[", i)
            if j < 0:
                break
            hit = next((t for t in self.special if text.startswith(t, j)), None)
            if hit is None:
                i = j + 1
                continue
            if j > last:
                parts.append((text[last:j], None))
            parts.append((hit, self.special[hit]))
            i = last = j + len(hit)
        if last < len(text):
            parts.append((text[last:], None))
        return parts

    def tokenize_ids(self, text: str) -> list[int]:
        """Word-piece ids of `text`, without [CLS]/[SEP] and without truncation."""
        ids: list[int] = []
        for segment, special in self._split_special(text):
            if special is not None:
                ids.append(special)
                continue
            for word in pre_tokenize(normalize(segment, self.lowercase)):
                ids.extend(self._wordpiece(word))
        return ids

    def encode(self, text: str, max_length: int | None = None, truncation: bool = True) -> list[int]:
        """[CLS] ids [SEP], cut to `max_length` tokens in all (default self.max_length) as sentence-transformers."""
        ids = self.tokenize_ids(text)
        limit = self.max_length if max_length is None else int(max_length)
        if truncation and limit is not None and len(ids) > limit - 2:
            ids = ids[:max(limit - 2, 0)]
        return [self.cls_id] + ids + [self.sep_id]

    def batch_encode(self, texts: Sequence[str], max_length: int | None = None,
                     pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 (B, S), attention_mask int32 (B, S)) padded with [PAD] to the longest (or `pad_to`)."""
        if isinstance(texts, str):
            raise TypeError("batch_encode takes a list of strings, not one string")
        rows = [self.encode(t, max_length) for t in texts]
        width = max((len(r) for r in rows), default=0)
        if pad_to is not None:
            if pad_to < width:
                raise ValueError(f"pad_to={pad_to} is shorter than the longest encoded text ({width})")
            width = pad_to
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return ids, mask

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.batch_encode(texts)
