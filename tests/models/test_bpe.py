"""The pure-Python byte-level BPE against Hugging Face on the same GGUF (fixture made by
tests/fixtures/make_smollm2_fixture.py; no transformers/tokenizers needed here).

Two references per text: `original` (SmolLM2's own pipeline: Digits(individual) + ByteLevel, as llama.cpp's
`smollm` pre-tokenizer) and `hf_gguf` (transformers' GGUF loader, which drops the Digits step). The tokenizer
must equal `original` with the file's `pre`, and `hf_gguf` when told `pre="gpt2"`.
"""

from __future__ import annotations

import unicodedata

import pytest
from gpuport.errors import LoadError, UnsupportedFeature
from gpuport.models.bpe import BPETokenizer, StreamDecoder, split_gpt2
from smollm2 import gguf_file, tokenizer_reference


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.from_gguf(gguf_file().metadata)


@pytest.fixture(scope="module")
def ref() -> dict:
    return tokenizer_reference()


def _mismatches(tok: BPETokenizer, texts: list[str], want: list[list[int]]) -> list[str]:
    return [t for t, w in zip(texts, want) if tok.encode(t) != w]


def test_ids_equal_smollm2_pipeline(tok, ref):
    assert len(ref["texts"]) >= 300 and tok.pre == "smollm"
    bad = _mismatches(tok, ref["texts"], ref["original"])
    assert not bad, f"{len(bad)} of {len(ref['texts'])} differ, first {bad[0]!r}"
    assert ref["original"] == [tok.encode(t, add_special_tokens=False) for t in ref["texts"]]


def test_ids_equal_transformers_gguf_loader_without_digit_split(ref):
    gpt2 = BPETokenizer.from_gguf({**gguf_file().metadata, "tokenizer.ggml.pre": "gpt2"})
    bad = _mismatches(gpt2, ref["texts"], ref["hf_gguf"])
    assert not bad, f"{len(bad)} of {len(ref['texts'])} differ, first {bad[0]!r}"
    # the two references differ only where whitespace runs into a number, and the test can tell them apart
    differ = [t for t, a, b in zip(ref["texts"], ref["hf_gguf"], ref["original"]) if a != b]
    assert differ and _mismatches(gpt2, ref["texts"], ref["original"]) == differ
    for t in differ:
        assert any(a.isspace() and unicodedata.category(b)[0] == "N" for a, b in zip(t, t[1:])), repr(t)


def test_digits_whitespace_and_contractions(tok):
    toks = lambda s: [tok.tokens[i] for i in tok.encode(s)]   # noqa: E731
    assert toks("In 2023") == ["In", "Ġ", "2", "0", "2", "3"]
    assert toks("a  2") == ["a", "ĠĠ", "2"]
    assert toks("x123y") == ["x", "1", "2", "3", "y"]
    assert split_gpt2("I'm here  now\n\n x 's ?!") == ["I", "'m", " here", " ", " now", "\n\n", " x", " '", "s", " ?!"]
    assert split_gpt2("end   ") == ["end", "   "] and split_gpt2("a\nb") == ["a", "\n", "b"]


def test_special_tokens(tok):
    assert tok.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]
    assert tok.encode("<repo_name>x<|endoftext|>")[0] == 3 and tok.encode("<repo_name>x<|endoftext|>")[-1] == 0
    assert 1 not in tok.encode("<|im_start|>", parse_special=False)
    assert 1 not in tok.encode("<|IM_START|>") and 1 not in tok.encode("<|im_start |>")
    assert tok.bos_id == 1 and tok.eos_id == 2 and not tok.add_bos


def test_decode_equals_transformers(tok, ref):
    assert [tok.decode(ids) for ids in ref["hf_gguf"]] == ref["decoded"]
    assert all(tok.decode(tok.encode(t)) == t for t in ref["texts"])
    assert tok.decode([1, 4093, 198, 6004, 2], skip_special_tokens=True) == "user\nhi"


def test_stream_decoder_never_emits_a_partial_character(tok, ref):
    for text in ref["texts"]:
        ids = tok.encode(text)
        stream = StreamDecoder(tok)
        pieces = [stream.push(i) for i in ids]
        assert "".join(pieces) + stream.flush() == text
        assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text
    emoji = tok.encode("😀")
    assert len(emoji) > 1, "the emoji should span several byte tokens"
    stream = StreamDecoder(tok)
    assert [stream.push(i) for i in emoji] == [""] * (len(emoji) - 1) + ["😀"]
    # an incomplete character cut off by a special token or the end becomes U+FFFD, as a whole decode gives
    stream = StreamDecoder(tok)
    assert stream.push(emoji[0]) == "" and stream.push(2) == "\ufffd<|im_end|>"
    assert tok.decode(emoji[:1] + [2]) == "\ufffd<|im_end|>" and tok.decode(emoji[:1]) == "\ufffd"
    with pytest.raises(IndexError, match="outside the vocabulary"):
        stream.push(len(tok.tokens))


def test_chat_template_equals_transformers(tok, ref):
    for conv, with_prompt, without in zip(ref["conversations"], ref["chat_generation_prompt"],
                                          ref["chat_no_generation_prompt"]):
        assert tok.apply_chat_template(conv) == with_prompt
        assert tok.apply_chat_template(conv, add_generation_prompt=False) == without
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    with pytest.raises(ValueError, match="empty"):
        tok.apply_chat_template([])
    with pytest.raises(TypeError, match="role"):
        tok.apply_chat_template([{"content": "x"}])


def test_unsupported_and_malformed(tok):
    md = gguf_file().metadata
    other = BPETokenizer.from_gguf({**md, "tokenizer.chat_template": "{{ messages[0]['content'] }}"})
    with pytest.raises(UnsupportedFeature, match=r"chat template sha256:\w{12} \(\"\{\{ messages"):
        other.apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(UnsupportedFeature, match="no chat template"):
        BPETokenizer(["a"], []).apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(UnsupportedFeature, match="'llama3'"):
        BPETokenizer.from_gguf({**md, "tokenizer.ggml.pre": "llama3"})
    with pytest.raises(UnsupportedFeature, match="'llama'"):
        BPETokenizer.from_gguf({**md, "tokenizer.ggml.model": "llama"})
    with pytest.raises(LoadError, match="tokenizer.ggml.merges"):
        BPETokenizer.from_gguf({k: v for k, v in md.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(LoadError, match=r"merges\[1\]"):
        BPETokenizer(["a", "b"], ["a b", "ab"])
