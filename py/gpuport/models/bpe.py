"""A pure-Python byte-level BPE tokenizer built from GGUF metadata (GPT-2 style; SmolLM2's). Runs in Pyodide:
no `regex`, no `tokenizers`, no Jinja.

Pipeline of SmolLM2's own tokenizer.json, which llama.cpp's `tokenizer.ggml.pre == "smollm"` also follows:
1. special tokens (the GGUF's CONTROL and USER_DEFINED tokens, e.g. `<|im_start|>`) written in the text are
   matched first, leftmost-longest, and never split;
2. Digits(individual_digits=True): every \\p{N} character is a piece of its own;
3. the GPT-2 pre-tokenizer regex on the rest,
   `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`, emulated with
   `unicodedata` categories because Python's `re` has no \\p{L}/\\p{N} (\\s is Unicode White_Space, as in
   Oniguruma, which `tokenizers` uses);
4. each piece's UTF-8 bytes mapped to printable characters (GPT-2's bytes_to_unicode), then BPE merges by rank.

Note: transformers' GGUF loader does not know the `smollm` pre-tokenizer and drops step 2 (`pre="gpt2"` here
reproduces it): the two differ only where a run of whitespace precedes a digit ("a  2": `ĠĠ 2` vs `Ġ Ġ2`->`Ġ Ġ 2`).
"""

from __future__ import annotations

import codecs
import hashlib
import unicodedata
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from ..errors import LoadError, UnsupportedFeature

# Unicode White_Space (Oniguruma's \s): the characters the GPT-2 regex treats as spaces.
WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)] + [" ", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)] + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
CONTROL, USER_DEFINED = 3, 4   # llama.cpp token types
# tokenizer.ggml.pre -> whether digits are split one by one before the GPT-2 regex.
PRE_TOKENIZERS = {"smollm": True, "starcoder": True, "gpt2": False}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


@lru_cache(maxsize=8192)
def char_kind(ch: str) -> str:
    """'S' whitespace, 'L' letter, 'N' number, 'O' anything else (the regex's character classes)."""
    if ch in WHITE_SPACE:
        return "S"
    cat = unicodedata.category(ch)
    return "L" if cat[0] == "L" else "N" if cat[0] == "N" else "O"


def split_digits(text: str) -> list[str]:
    """Digits(individual_digits=True): each \\p{N} character becomes a piece, the text between stays whole."""
    pieces, start = [], 0
    for i, ch in enumerate(text):
        if char_kind(ch) == "N":
            if i > start:
                pieces.append(text[start:i])
            pieces.append(ch)
            start = i + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def split_gpt2(text: str) -> list[str]:
    """The GPT-2 pre-tokenizer regex (see the module docstring), alternative by alternative, leftmost first."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "'":
            hit = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
            if hit:
                pieces.append(hit)
                i += len(hit)
                continue
        start, kind = i, char_kind(text[i])
        if text[i] == " " and i + 1 < n and char_kind(text[i + 1]) != "S":
            i += 1                         # " ?" before a letter, number or other run
            kind = char_kind(text[i])
        if kind != "S":
            while i < n and char_kind(text[i]) == kind:
                i += 1
        else:
            end = i
            while end < n and char_kind(text[end]) == "S":
                end += 1
            # \s+(?!\S): all of it at the end of the text, else all but the last (it goes with what follows);
            # a single whitespace before a non-space is \s+
            i = end if end == n or end - i == 1 else end - 1
        pieces.append(text[start:i])
    return pieces



def merge(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-level BPE on one piece's symbols: the adjacent pair of lowest merge rank joined, everywhere it occurs,
    until no pair has a rank (GPT-2's algorithm, which Hugging Face's tokenizers and CLIP's share)."""
    while len(word) > 1:
        best, best_rank = None, None
        for pair in zip(word, word[1:]):
            r = ranks.get(pair)
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = pair, r
        if best is None:
            break
        merged, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


class BPETokenizer:
    """Byte-level BPE with special tokens, incremental decoding and the model's chat template."""

    def __init__(self, tokens: Sequence[str], merges: Iterable[str], token_types: Sequence[int] | None = None, *,
                 pre: str = "smollm", bos_id: int | None = None, eos_id: int | None = None,
                 unk_id: int | None = None, pad_id: int | None = None, add_bos: bool = False, add_eos: bool = False,
                 chat_template: str | None = None) -> None:
        if pre not in PRE_TOKENIZERS:
            raise UnsupportedFeature(f"pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported "
                                     f"(supported: {', '.join(PRE_TOKENIZERS)})")
        self.pre, self.split_digits = pre, PRE_TOKENIZERS[pre]
        self.tokens = list(tokens)
        types = list(token_types) if token_types is not None else [1] * len(self.tokens)
        self.special = {t: i for i, (t, ty) in enumerate(zip(self.tokens, types)) if ty in (CONTROL, USER_DEFINED)}
        self.control = {i for i, ty in enumerate(types) if ty == CONTROL}
        # a normal token written outside the byte alphabet is respelled from its UTF-8 bytes (as transformers does)
        alphabet = set(CHAR_TO_BYTE)
        self.vocab: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            key = t if i in self.special or set(t) <= alphabet else "".join(BYTE_TO_CHAR[b] for b in t.encode())
            self.vocab.setdefault(key, i)
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, m in enumerate(merges):
            a, sep, b = m.partition(" ")
            if not sep:
                raise LoadError(f"tokenizer.ggml.merges[{rank}] = {m!r} is not two tokens separated by a space")
            self.ranks.setdefault((a, b), rank)
        self.bos_id, self.eos_id, self.unk_id, self.pad_id = bos_id, eos_id, unk_id, pad_id
        self.add_bos, self.add_eos = add_bos, add_eos
        self.chat_template = chat_template
        self._by_first: dict[str, list[str]] = {}
        for t in sorted(self.special, key=len, reverse=True):
            self._by_first.setdefault(t[0], []).append(t)
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> "BPETokenizer":
        """From a GGUF header's metadata (gpuport.formats.gguf); LoadError names a missing key."""
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise UnsupportedFeature(f"tokenizer.ggml.model {model!r} is not a byte-level BPE ('gpt2') tokenizer")
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            if key not in metadata:
                raise LoadError(f"GGUF metadata has no {key}")
        get = metadata.get
        return cls(get("tokenizer.ggml.tokens"), get("tokenizer.ggml.merges"), get("tokenizer.ggml.token_type"),
                   pre=get("tokenizer.ggml.pre", "gpt2"), bos_id=get("tokenizer.ggml.bos_token_id"),
                   eos_id=get("tokenizer.ggml.eos_token_id"), unk_id=get("tokenizer.ggml.unknown_token_id"),
                   pad_id=get("tokenizer.ggml.padding_token_id"), add_bos=bool(get("tokenizer.ggml.add_bos_token")),
                   add_eos=bool(get("tokenizer.ggml.add_eos_token")), chat_template=get("tokenizer.chat_template"))

    # -- encoding ------------------------------------------------------------------------------------
    def _split_special(self, text: str) -> list[tuple[str, int | None]]:
        """[(segment, None) | (special token, id)], special tokens matched leftmost-longest."""
        parts: list[tuple[str, int | None]] = []
        last = i = 0
        while i < len(text):
            hit = next((t for t in self._by_first.get(text[i], ()) if text.startswith(t, i)), None)
            if hit is None:
                i += 1
                continue
            if i > last:
                parts.append((text[last:i], None))
            parts.append((hit, self.special[hit]))
            i = last = i + len(hit)
        if last < len(text):
            parts.append((text[last:], None))
        return parts

    def _bpe_uncached(self, piece: str) -> tuple[int, ...]:
        word = merge([BYTE_TO_CHAR[b] for b in piece.encode("utf-8")], self.ranks)
        unk = self.unk_id if self.unk_id is not None else 0
        return tuple(self.vocab.get(w, unk) for w in word)

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces BPE sees (special tokens not handled here)."""
        chunks = split_digits(text) if self.split_digits else [text]
        return [p for c in chunks for p in split_gpt2(c)]

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids. `add_special_tokens`: BOS/EOS where the GGUF asks for them (SmolLM2 asks for neither);
        `parse_special`: special tokens written in the text become their ids (else they are plain text)."""
        ids: list[int] = []
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        segments = self._split_special(text) if parse_special else [(text, None)]
        for segment, special in segments:
            if special is not None:
                ids.append(special)
                continue
            for piece in self.pre_tokenize(segment):
                ids.extend(self._bpe(piece))
        if add_special_tokens and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    # -- decoding ------------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one (non-special) token stands for."""
        return bytes(CHAR_TO_BYTE[c] for c in self.tokens[token_id])

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 (a split character) becomes U+FFFD, as Hugging Face decodes."""
        stream = StreamDecoder(self, skip_special_tokens)
        return "".join(stream.push(i) for i in ids) + stream.flush()

    # -- chat ----------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The text the GGUF's Jinja chat template renders for `messages` ({"role", "content"} dicts).

        Only templates gpuport knows are rendered (no Jinja engine in the page); any other raises
        UnsupportedFeature naming it."""
        if self.chat_template is None:
            raise UnsupportedFeature("this tokenizer has no chat template (tokenizer.chat_template)")
        if self.chat_template not in CHAT_TEMPLATES:
            digest = hashlib.sha256(self.chat_template.encode()).hexdigest()[:12]
            raise UnsupportedFeature(f"chat template sha256:{digest} ({self.chat_template[:60]!r}...) is not one "
                                     f"gpuport renders (known: {', '.join(CHAT_TEMPLATES.values())})")
        if not messages:
            raise ValueError("cannot apply a chat template to an empty conversation")
        for m in messages:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TypeError(f"a message needs string 'role' and 'content', got {dict(m)!r}")
        default_system = SMOLLM2_SYSTEM if CHAT_TEMPLATES[self.chat_template] == "smollm2" else None
        out = []
        if default_system is not None and messages[0]["role"] != "system":
            out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
        out.extend(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)


class StreamDecoder:
    """Incremental detokenizer for streaming: `push(id)` returns only whole characters; bytes of a character
    split across tokens wait for the rest. Concatenated increments plus `flush()` equal `decode(ids)`."""

    def __init__(self, tokenizer: BPETokenizer, skip_special_tokens: bool = False) -> None:
        self.tok, self.skip = tokenizer, skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The new text `token_id` completes (possibly "")."""
        tok = self.tok
        if not 0 <= token_id < len(tok.tokens):
            raise IndexError(f"token id {token_id} is outside the vocabulary of {len(tok.tokens)}")
        if tok.tokens[token_id] in tok.special:
            # pending bytes before a special token are an incomplete character: U+FFFD, as a whole decode gives
            head = self.flush()
            return head if self.skip and token_id in tok.control else head + tok.tokens[token_id]
        return self._utf8.decode(tok.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is pending (an incomplete character becomes U+FFFD); the decoder starts afresh."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHAT_TEMPLATES = {
    # SmolLM2-Instruct: ChatML with a default system message when the conversation does not start with one
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    + SMOLLM2_SYSTEM + "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}":
        "smollm2",
    # plain ChatML
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}": "chatml",
}

__all__ = ["BPETokenizer", "CHAT_TEMPLATES", "PRE_TOKENIZERS", "StreamDecoder", "bytes_to_unicode", "char_kind", "merge",
           "split_digits", "split_gpt2"]
