"""The pure-Python CLIP tokenizer against transformers' CLIPTokenizer on CLIP's real vocabulary (fixture made by
tests/fixtures/make_clip_fixture.py: 2,500 lines of the Python reference manual's text plus edge cases), token for
token, with and without the 77-token truncation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clip_files import clip_vocabulary, tokenizer_reference
from gpuport.errors import LoadError
from gpuport.models.clip_tokenizer import CLIPTokenizer, normalize, split_clip


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer(*clip_vocabulary())


def test_corpus_equals_transformers_token_for_token(tok):
    ref = tokenizer_reference()
    assert len(ref["texts"]) >= 2000 + 30 and "pydoc_data" in ref["source"]
    bad = [i for i, (t, ids) in enumerate(zip(ref["texts"], ref["ids"])) if tok.encode(t, max_length=10**6) != ids]
    assert not bad, f"{len(bad)} of {len(ref['texts'])} differ; first {ref['texts'][bad[0]]!r}"
    assert sum(map(len, ref["ids"])) > 40000
    # the unknown token, a written special token and a lowercased one spelt out in pieces are all in the corpus
    assert any(tok.eos_id in ids[1:-1] for ids in ref["ids"]) and any(tok.bos_id in ids[1:-1] for ids in ref["ids"])


def test_truncation_to_77_keeps_both_ends(tok):
    ref = tokenizer_reference()
    assert ref["ids77"], "the fixture has texts longer than the context"
    for index, ids in ref["ids77"].items():
        assert tok.encode(ref["texts"][int(index)]) == ids and len(ids) == 77
    assert tok.encode("a b c d", max_length=4) == [tok.bos_id, *tok.encode("a b")[1:-1], tok.eos_id]
    with pytest.raises(ValueError, match="room"):
        tok.encode("x", max_length=1)


def test_pipeline_steps():
    assert normalize("  A\u00a0\u3000B\tΣ  ") == " a b σ "        # one space per run; no final-sigma rule
    assert normalize("e\u0301") == "é"
    assert split_clip("it's 2023, ok?! <|endoftext|>x") == ["it", "'s", "2", "0", "2", "3", ",", "ok", "?!",
                                                            "<|endoftext|>", "x"]


def test_batch_pads_with_end_of_text_and_decode(tok):
    ids = tok.batch(["a photo of a cat", "a dog"])
    assert ids.dtype == np.int32 and ids.shape == (2, 7)
    assert list(ids[1]) == [49406, 320, 1929, 49407, 49407, 49407, 49407]
    assert tok.decode(ids[0]) == "a photo of a cat"
    assert tok.decode(tok.encode("Café, naïve!")) == "café , naïve !"
    with pytest.raises(TypeError, match="list of strings"):
        tok.batch("a cat")


def test_malformed_files():
    vocab, merges = clip_vocabulary()
    with pytest.raises(LoadError, match="not JSON"):
        CLIPTokenizer.from_files("{", "")
    with pytest.raises(LoadError, match="no <|startoftext|>"):
        CLIPTokenizer.from_files(json.dumps({"a": 0}), "")
    with pytest.raises(LoadError, match="merge 1"):
        CLIPTokenizer.from_files(json.dumps(vocab), "#version: 0.2\ni n\nbroken\n")
    assert CLIPTokenizer.from_files(json.dumps(vocab), "#version: 0.2\n" + "\n".join(merges)).encode("hi") == [
        49406, 1883, 49407]
