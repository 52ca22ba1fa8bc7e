"""The kernel table: every op on MiniLM-sized inputs, its max error against NumPy and its time.

`gpuport demo` prints it natively for each backend; the demo page runs the same `kernel_table` in Pyodide.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import numpy as np

from ..backends import available
from ..host import references as K
from ..host.quant import as_words, quantize
from ..models import load
from ..runtime import Runtime, open_sync


def _samples(r: np.random.Generator) -> list[tuple[str, dict[str, np.ndarray], Callable, Callable]]:
    f = lambda *shape: r.standard_normal(shape).astype(np.float32)  # noqa: E731
    seq, hidden, heads = 128, 384, 12
    mask = (np.arange(seq)[None, :] < np.array([[100], [seq]])).astype(np.float32)
    additive = ((1.0 - mask) * -1e9).astype(np.float32)
    return [
        ("add", {"a": f(seq, hidden), "b": f(hidden)}, lambda o, t: o.add(t["a"], t["b"]), K.add_ref),
        ("mul", {"a": f(seq, hidden), "b": f(seq, hidden)}, lambda o, t: o.mul(t["a"], t["b"]), K.mul_ref),
        ("scale", {"x": f(seq, hidden)}, lambda o, t: o.scale(t["x"], 0.5, 1.0),
         lambda x: K.scale_ref(x, a=0.5, b=1.0)),
        ("gelu", {"x": f(seq, 4 * hidden)}, lambda o, t: o.gelu(t["x"]), K.gelu_ref),
        ("matmul", {"a": f(seq, hidden), "b": f(hidden, 4 * hidden), "bias": f(4 * hidden)},
         lambda o, t: o.matmul(t["a"], t["b"], bias=t["bias"]), K.matmul_ref),
        ("softmax", {"x": f(heads * seq, seq)}, lambda o, t: o.softmax(t["x"]), K.softmax_ref),
        ("layer_norm", {"x": f(seq, hidden), "g": f(hidden), "b": f(hidden)},
         lambda o, t: o.layer_norm(t["x"], t["g"], t["b"], eps=1e-12),
         lambda x, g, b: K.layer_norm_ref(x, g, b, eps=1e-12)),
        ("sum", {"x": f(seq, hidden)}, lambda o, t: o.sum(t["x"]), K.sum_ref),
        ("mean", {"x": f(seq, hidden)}, lambda o, t: o.mean(t["x"]), K.mean_ref),
        ("embedding", {"ids": r.integers(0, 30522, (2, seq)).astype(np.int32), "table": f(30522, hidden)},
         lambda o, t: o.embedding(t["ids"], t["table"]), K.embedding_ref),
        ("attention", {"q": f(2, seq, hidden), "k": f(2, seq, hidden), "v": f(2, seq, hidden), "m": additive},
         lambda o, t: o.attention(t["q"], t["k"], t["v"], heads, mask=t["m"]),
         lambda q, k, v, m: K.attention_ref(q, k, v, m, num_heads=heads)),
        ("mean_pool", {"x": f(2, seq, hidden), "m": mask}, lambda o, t: o.mean_pool(t["x"], t["m"]),
         K.mean_pool_ref),
        ("l2_normalize", {"x": f(seq, hidden)}, lambda o, t: o.l2_normalize(t["x"]), K.l2_normalize_ref),
        *_llm_samples(r, f, seq),
        *_whisper_samples(r),
        *_vision_samples(r, f),
    ]


def _vision_samples(r: np.random.Generator, f: Callable[..., np.ndarray]) -> list[tuple]:
    """CLIP ViT-B/32's own: an image's patch gather, the MLP's QuickGELU, the text tower's causal attention."""
    q, k, v = f(2, 77, 512), f(2, 77, 512), f(2, 77, 512)
    return [
        ("patchify", {"x": r.uniform(-2, 2, (2, 3, 224, 224)).astype(np.float32)}, lambda o, t: o.patchify(t["x"], 32),
         lambda x: K.patchify_ref(x, patch=32)),
        ("quick_gelu", {"x": f(50, 3072)}, lambda o, t: o.quick_gelu(t["x"]), K.quick_gelu_ref),
        ("causal attention", {"q": q, "k": k, "v": v}, lambda o, t: o.attention(t["q"], t["k"], t["v"], 8, causal=True),
         lambda q, k, v: K.attention_ref(q, k, v, num_heads=8, causal=True)),
    ]


def _whisper_samples(r: np.random.Generator) -> list[tuple]:
    """Whisper's front end and first convolution on a 5 s clip (tiny's 384 wide, 80 mels), audio-scaled so the
    table's absolute errors stay comparable."""
    frames, mels, width = 500, 80, 384
    sig = (r.standard_normal(400 + (frames - 1) * 160) * 0.1).astype(np.float32)
    mel = (10.0 ** r.uniform(-8, 2, (frames, mels))).astype(np.float32)
    x = r.uniform(-1, 1, (frames, mels)).astype(np.float32)
    w = (r.standard_normal((width, mels, 3)) * 0.05).astype(np.float32)
    b = (r.standard_normal(width) * 0.05).astype(np.float32)
    return [
        ("stft_power", {"s": sig}, lambda o, t: o.stft_power(t["s"], 400, 160),
         lambda s: K.stft_power_ref(s, n_fft=400, hop=160)),
        ("log_mel", {"m": mel}, lambda o, t: o.log_mel(t["m"], start=100, rows=frames, end=frames),
         lambda m: K.log_mel_ref(m, start=100, rows=frames, end=frames)),
        ("conv1d", {"x": x, "w": w, "b": b}, lambda o, t: o.conv1d(t["x"], t["w"], t["b"], 1, 1, "gelu"),
         lambda x, w, b: K.conv1d_ref(x, w, b, stride=1, padding=1, activation="gelu")),
    ]


def _llm_samples(r: np.random.Generator, f: Callable[..., np.ndarray], seq: int) -> list[tuple]:
    """The LLM's ops on SmolLM2-135M's shapes (576 wide, 9 query and 3 KV heads of 64, 1536 in the MLP),
    weights quantized as its GGUF stores them."""
    width, heads, kv_heads, ffn, vocab = 576, 9, 3, 1536, 8192
    half = width // heads // 2
    angles = np.arange(seq)[:, None] * (10000.0 ** (-np.arange(half) / half))[None, :]
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    q41, q80 = (as_words(quantize(f(ffn, width) * 0.05, kind)) for kind in ("Q4_1", "Q8_0"))
    table = as_words(quantize(f(vocab, width) * 0.05, "Q8_0"))
    # the next token from SmolLM2's 49152 logits, every pass of the sampler run (top_k=1 keeps the draw exact)
    seen = np.zeros(49152 // 32, np.uint32)
    seen[r.integers(0, seen.size, 64)] = r.integers(0, 2 ** 32, 64, dtype=np.uint32)
    sampling = {"temperature": 0.8, "top_k": 1, "top_p": 0.9, "repetition_penalty": 1.3, "u": 0.5}
    return [
        ("rms_norm", {"x": f(seq, width), "w": f(width)}, lambda o, t: o.rms_norm(t["x"], t["w"], eps=1e-5),
         lambda x, w: K.rms_norm_ref(x, w, eps=1e-5)),
        ("rope", {"x": f(seq, width), "cos": cos, "sin": sin}, lambda o, t: o.rope(t["x"], t["cos"], t["sin"], heads),
         lambda x, c, s: K.rope_ref(x, c, s, num_heads=heads)),
        ("swiglu", {"g": f(seq, ffn), "u": f(seq, ffn)}, lambda o, t: o.swiglu(t["g"], t["u"]), K.swiglu_ref),
        ("kv_attention", {"q": f(seq, width), "k": f(seq, width // 3), "v": f(seq, width // 3)},
         lambda o, t: o.kv_attention(t["q"], t["k"], t["v"], heads, kv_heads, start=0),
         lambda q, k, v: K.kv_attention_ref(q, k, v, start=0, num_heads=heads, num_kv_heads=kv_heads)),
        ("q4_1_matvec", {"x": f(1, width), "w": q41}, lambda o, t: o.q_linear(t["x"], t["w"], "Q4_1", (ffn, width)),
         lambda x, w: K.q4_1_matvec_ref(w, x, n=ffn, k=width, row=0)[None]),
        ("q8_0_matvec", {"x": f(1, width), "w": q80}, lambda o, t: o.q_linear(t["x"], t["w"], "Q8_0", (ffn, width)),
         lambda x, w: K.q8_0_matvec_ref(w, x, n=ffn, k=width, row=0)[None]),
        ("q4_1_matmul", {"x": f(seq, width), "w": q41},
         lambda o, t: o.q_linear(t["x"], t["w"], "Q4_1", (ffn, width)),
         lambda x, w: K.q4_1_matmul_ref(w, x, n=ffn, k=width)),
        ("q8_0_embedding", {"ids": r.integers(0, vocab, (2, seq)).astype(np.int32), "table": table},
         lambda o, t: o.q_embedding(t["ids"], t["table"], "Q8_0", (vocab, width)),
         lambda ids, w: K.q8_0_embedding_ref(w, ids, n=vocab, k=width)),
        ("sample_token", {"logits": f(1, 49152), "seen": seen},
         lambda o, t: o.sample_token(t["logits"], t["seen"], **sampling),
         lambda x, m: K.sample_token_ref(x, m, **sampling)),
    ]


def kernel_rows() -> list[str]:
    """The kernel table's rows, in order: every op once by its name, and a few ops again on a model's own variant
    (CLIP's causal attention)."""
    return [name for name, *_ in _samples(np.random.default_rng(0))]


async def kernel_table(rt: Runtime, seed: int = 0, repeats: int = 3) -> list[dict[str, Any]]:
    """Run every op as the runtime places it: where it ran, its max abs error vs NumPy, first-call ms
    (includes compile) and best warm ms. Under auto, also the GPU kernel's error (`gpu_max_abs_err`), run
    pinned to the device even where auto picks NumPy, so the parity column never compares NumPy with itself."""
    rows = []
    for name, arrays, call, reference in _samples(np.random.default_rng(seed)):
        tensors = {k: rt.tensor(v) for k, v in arrays.items()}
        want = reference(*arrays.values())
        t0 = time.perf_counter()
        out = call(rt.ops, tensors)
        ran = rt.placement.last.where
        got = await out.read()
        first = (time.perf_counter() - t0) * 1e3
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await call(rt.ops, tensors).read()
            warm.append((time.perf_counter() - t0) * 1e3)
        row = {"op": name, "shape": list(got.shape), "ran": ran, "max_abs_err": _err(got, want),
               "first_ms": round(first, 2), "ms": round(min(warm, default=first), 2)}
        if rt.mode == "auto" and rt.backend != "cpu":
            with rt.pinned(rt.backend):
                on_gpu = call(rt.ops, tensors)
                row["gpu_ran"] = rt.placement.last.where
            row["gpu_max_abs_err"] = _err(await on_gpu.read(), want)
        rows.append(row)
    return rows


async def embed_texts(rt: Runtime, n: int, on_progress: Any = None) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of n varied sentences (the profile CLI's model workload); `on_progress`
    goes to the model load ("bar": a progress bar on stderr)."""
    model = await load("minilm-l6-v2", rt, on_progress=on_progress)
    words = "the quick brown fox jumps over a lazy dog while seven bright stars watch quietly".split()
    texts = [" ".join(words[i % len(words):] + words[:i % len(words)][: 1 + i]) for i in range(n)]
    return await model.embed(texts)


def _err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max())


def where_summary(rows: list[dict[str, Any]]) -> str:
    """"13 ops: 9 on cpu, 4 on webgpu": where the table's op calls ran."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["ran"]] = counts.get(r["ran"], 0) + 1
    return f"{len(rows)} ops: " + ", ".join(f"{n} on {b}" for b, n in sorted(counts.items(), key=lambda c: -c[1]))


def format_table(rt: Runtime, rows: list[dict[str, Any]]) -> str:
    a = rt.info()["adapter"]
    gpu = any("gpu_max_abs_err" in r for r in rows)
    lines = [f"mode={rt.mode} tier={rt.tier} adapter={a.get('vendor')} / {a.get('device') or a.get('description')}"
             f" fallback={a.get('is_fallback')}: {where_summary(rows)}",
             f"  {'op':<13} {'output':<14} {'ran on':<7} {'max |err|':>10} {'first ms':>9} {'warm ms':>8}"
             + (f" {'GPU kernel |err|':>17}" if gpu else "")]
    for r in rows:
        lines.append(f"  {r['op']:<13} {str(tuple(r['shape'])):<14} {r['ran']:<7} {r['max_abs_err']:>10.2e} "
                     f"{r['first_ms']:>9.1f} {r['ms']:>8.2f}"
                     + (f" {r['gpu_max_abs_err']:>17.2e}" if "gpu_max_abs_err" in r else ""))
    return "\n".join(lines)


def main() -> int:
    """Print the kernel table for every backend this machine has (and auto beside a GPU), and the
    cross-backend agreement."""
    results = {}
    backends = available()
    for backend in backends + (["auto"] if "webgpu" in backends else []):
        with open_sync(backend=backend) as rt:
            rows = asyncio.run(kernel_table(rt))
            results[backend] = rows
            print(format_table(rt, rows), flush=True)
            print()
    worst = max(max(r["max_abs_err"], r.get("gpu_max_abs_err", 0.0)) for rows in results.values() for r in rows)
    print(f"backends: {', '.join(results)}; worst error against NumPy over all ops: {worst:.2e}")
    return 0
