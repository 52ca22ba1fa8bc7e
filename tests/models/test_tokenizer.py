"""The pure-Python WordPiece tokenizer against the `tokenizers` package's ids (fixture made by
fixtures/make_minilm_fixture.py), plus truncation and padding."""

import json
from pathlib import Path

import numpy as np
import pytest
from gpuport.models import default_source
from gpuport.models.tokenizer import (
    WordPieceTokenizer,
    normalize,
    parse_vocab,
    pre_tokenize,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.from_file(Path(default_source("minilm-l6-v2")) / "vocab.txt")


@pytest.fixture(scope="module")
def ref():
    return json.loads((FIXTURES / "tokenizer_reference.json").read_text(encoding="utf-8"))


def test_fixture_is_large_and_varied(ref):
    assert len(ref["texts"]) >= 120
    assert any(len(ids) > 258 for ids in ref["ids"])           # a text beyond the 256-token limit
    assert any(100 in ids for ids in ref["ids"])               # [UNK]
    assert any(103 in ids for ids in ref["ids"])               # a written [MASK]


def test_ids_equal_tokenizers_package(tok, ref):
    bad = [(t, tok.encode(t, truncation=False), ids) for t, ids in zip(ref["texts"], ref["ids"])
           if tok.encode(t, truncation=False) != ids]
    assert not bad, f"{len(bad)} of {len(ref['texts'])} differ; first: {bad[0]!r}"


def test_sentence_transformers_inputs(tok):
    """The ids sentence-transformers itself fed the model (truncated at 256) for the embedding fixture."""
    ref = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    assert ref["max_seq_length"] == tok.max_length == 256
    for text, ids in zip(ref["sentences"], ref["input_ids"]):
        assert tok.encode(text) == ids, text[:60]


def test_truncation_to_256(tok, ref):
    text, full = max(zip(ref["texts"], ref["ids"]), key=lambda p: len(p[1]))
    assert len(full) > 256
    ids = tok.encode(text)
    assert len(ids) == 256
    assert ids == full[:255] + [tok.sep_id]
    assert tok.encode(text, max_length=10) == full[:9] + [tok.sep_id]
    assert tok.encode(text, truncation=False) == full


def test_batch_padding_and_mask(tok):
    texts = ["hello world", "", "a much longer sentence than the others, with punctuation!"]
    ids, mask = tok.batch_encode(texts)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    rows = [tok.encode(t) for t in texts]
    assert ids.shape == mask.shape == (3, max(map(len, rows)))
    for i, r in enumerate(rows):
        assert ids[i, :len(r)].tolist() == r
        assert (ids[i, len(r):] == tok.pad_id).all()
        assert mask[i].tolist() == [1] * len(r) + [0] * (ids.shape[1] - len(r))
    assert rows[1] == [tok.cls_id, tok.sep_id]
    ids2, _ = tok.batch_encode(texts, pad_to=40)
    assert ids2.shape == (3, 40)
    with pytest.raises(ValueError):
        tok.batch_encode(texts, pad_to=2)
    with pytest.raises(TypeError):
        tok.batch_encode("one string")


def test_pieces():
    assert normalize("Héllo\tWORLD\x00 中") == "hello world  中 "
    assert pre_tokenize("don't stop!") == ["don", "'", "t", "stop", "!"]
    vocab = parse_vocab("[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\n")
    t = WordPieceTokenizer(vocab)
    assert t.tokenize_ids("unaffable unx") == [4, 5, 6, 1]
    assert t.tokenize_ids("u" * 101) == [1]


def test_vocabulary_text_and_repeated_tokens():
    # vocab.txt with Windows line ends reads the same; a token listed twice keeps its first id, as in `tokenizers`
    assert parse_vocab("[PAD]\r\n[UNK]\r\nhello\r\n") == parse_vocab("[PAD]\n[UNK]\nhello\n") == ["[PAD]", "[UNK]", "hello"]
    t = WordPieceTokenizer(["[PAD]", "hello", "[UNK]", "hello", "[CLS]", "[SEP]"])
    assert t.vocab == {"[PAD]": 0, "hello": 1, "[UNK]": 2, "[CLS]": 4, "[SEP]": 5}
    assert t.encode("hello") == [4, 1, 5]
