"""The NumPy llama forward (gpuport.models.llama_ref) against Hugging Face transformers on the same GGUF (fixture:
tests/fixtures/make_smollm2_fixture.py, transformers 5.23 / torch 2.13 CPU, float32, greedy with a KV cache).

Tolerances. Both sides compute in float32 on the same dequantized weights (gpuport's dequantization is bit-exact
with ggml's, tests/host/test_quant.py), so only summation order differs (BLAS blocking, the head-dim order that the
GGUF's Q/K permutation changes), compounded over 30 blocks; no closed-form bound is practical, so:
- first-step logits: max |diff| <= LOGIT_TOL = 1e-3 (measured 3.7e-5 and 7.0e-5 on logits up to ~30; a single
  wrong step, e.g. RoPE on the wrong pairs, is off by more than 1, see test_a_wrong_rope_pairing_is_caught);
- greedy continuation: identical for all 32 steps up to the first step whose reference top-1/top-2 margin is
  below MARGIN = 0.01 (> 2 * LOGIT_TOL, so the argmax cannot flip before it; the fixture's smallest margin is
  0.026, so all 32 tokens of each prompt are compared), and the reference's top-5 logits at every compared
  step within LOGIT_TOL.
"""

from __future__ import annotations

import numpy as np
import pytest
from gpuport.models import llama_ref as L
from gpuport.models.bpe import BPETokenizer
from smollm2 import gguf_file, model_reference, reference_logits

LOGIT_TOL = 1e-3
MARGIN = 0.01


@pytest.fixture(scope="module")
def model() -> L.LlamaRef:
    return L.LlamaRef.from_gguf(gguf_file())


def test_config(model):
    c = model.config
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size) == \
        (30, 576, 9, 3, 64, 1536, 49152)
    assert c.rope_theta == 100000.0 and abs(c.eps - 1e-5) < 1e-12
    assert model.weights.output is model.weights.token_embd, "the head is tied to the Q8_0 embedding"


def test_prompt_ids_equal_the_reference():
    tok = BPETokenizer.from_gguf(gguf_file().metadata)
    for run in model_reference()["runs"]:
        text = tok.apply_chat_template(run["messages"]) if run["kind"] == "chat" else run["text"]
        assert text == run["prompt_text"]
        assert tok.encode(text) == run["prompt_ids"]


def test_greedy_continuations_and_logits(model):
    compared = 0
    for run in model_reference()["runs"]:
        ids, logits = model.generate_greedy(run["prompt_ids"], len(run["greedy_ids"]))
        if run["logits_file"]:
            want = reference_logits(run["logits_file"])
            err = np.abs(logits[0].astype(np.float64) - want)
            assert err.max() <= LOGIT_TOL, f"{run['prompt_text']!r}: first-step logits off by {err.max():.3g}"
        steps = next((i for i, m in enumerate(run["margins"]) if m < MARGIN), len(run["margins"]))
        assert ids[:steps] == run["greedy_ids"][:steps], (
            f"{run['prompt_text']!r}: greedy ids differ at step "
            f"{next(i for i, (a, b) in enumerate(zip(ids, run['greedy_ids'])) if a != b)}")
        for step in range(steps):
            for token, value in run["top5"][step]:
                assert abs(float(logits[step][token]) - value) <= LOGIT_TOL, (run["prompt_text"], step, token)
        compared += steps
    assert compared == 96, "every step of every prompt is above the margin in this fixture"


def test_prefill_equals_token_by_token(model):
    """The KV cache and the causal mask: a prompt in one forward gives the logits of feeding it token by token."""
    ids = model_reference()["runs"][0]["prompt_ids"]
    all_at_once = model.forward(np.asarray(ids), model.new_cache(len(ids)), all_logits=True)
    cache = model.new_cache(len(ids))
    one_by_one = np.stack([model.forward(np.asarray([i]), cache) for i in ids])
    np.testing.assert_allclose(all_at_once, one_by_one, rtol=0, atol=LOGIT_TOL)
    with pytest.raises(ValueError, match="do not fit"):
        model.forward(np.asarray([1]), cache)


def test_rope_pairing_is_hf_rotate_half_on_the_permuted_layout():
    """Adjacent-pair RoPE on the GGUF layout equals HF's rotate_half on HF's layout, element for element."""
    rng = np.random.default_rng(0)
    t, h, d = 5, 3, 64
    x = rng.standard_normal((t, h, d)).astype(np.float32)
    cos, sin = L.rope_angles(np.arange(7, 7 + t), d, 100000.0)
    to_hf = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])   # HF index i + s*d/2 <- GGUF index 2i + s
    xh = x[..., to_hf]
    c2, s2 = np.concatenate([cos, cos], -1)[:, None], np.concatenate([sin, sin], -1)[:, None]
    rotate_half = np.concatenate([-xh[..., d // 2:], xh[..., :d // 2]], -1)
    hf = xh * c2 + rotate_half * s2
    np.testing.assert_array_equal(L.rope(x, cos, sin)[..., to_hf], hf)


def test_a_wrong_rope_pairing_is_caught(model, monkeypatch):
    """HF's pairing (i, i + D/2) applied to the GGUF layout is wrong: the logits test would fail by far."""
    def half_pairs(x, cos, sin):
        d = x.shape[-1] // 2
        a, b = x[..., :d], x[..., d:]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * c - b * s, b * c + a * s], -1)
    run = model_reference()["runs"][0]
    monkeypatch.setattr(L, "rope", half_pairs)
    logits = model.forward(np.asarray(run["prompt_ids"]), model.new_cache(len(run["prompt_ids"])))
    assert np.abs(logits - reference_logits(run["logits_file"])).max() > 100 * LOGIT_TOL


def test_steps_against_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 576)).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64 ** 2, -1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(L.rms_norm(x, w, 1e-5), want, rtol=1e-5, atol=1e-6)
    g, u = x[:, :100], x[:, 100:200]
    np.testing.assert_allclose(L.swiglu(g, u), g / (1 + np.exp(-g.astype(np.float64))) * u, rtol=1e-5, atol=1e-6)
    # attention: a naive loop over heads and positions, GQA head h -> kv head h // 3, causal from position 2
    q = rng.standard_normal((3, 9, 8)).astype(np.float32)
    k = rng.standard_normal((5, 3, 8)).astype(np.float32)
    v = rng.standard_normal((5, 3, 8)).astype(np.float32)
    got = L.attention(q, k, v, start=2)
    for t in range(3):
        for hh in range(9):
            s = np.array([q[t, hh] @ k[j, hh // 3] / np.sqrt(8) for j in range(2 + t + 1)], np.float64)
            p = np.exp(s - s.max())
            p /= p.sum()
            np.testing.assert_allclose(got[t, hh], p @ v[:2 + t + 1, hh // 3], rtol=1e-5, atol=1e-6)
