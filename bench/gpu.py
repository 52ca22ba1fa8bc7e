"""gpuport on a real GPU: a lent NVIDIA H100/H200 through wgpu-py on its Vulkan driver, against the peers on the same
machine in the same run (PyTorch on CUDA and on the CPU, CuPy, NumPy) and gpuport's own cpu backend.

That machine reaches no registry and takes at most 64 MiB with the call, so the models travel as their real
checkpoints' headers and tokenizer files (`prepare`, run here) and their tensors are drawn there with a seeded RNG in
the real shapes, dtypes and quantization types (`run`): timings do not depend on the values, and every comparison is
made on the same files (gpuport on webgpu against sentence-transformers / Hugging Face transformers on the CPU, and
against gpuport's cpu backend).

Measured, each median of --reps interleaved repetitions after warm-ups:
- roofs (FMA peak, read and copy bandwidth sized past the L2) and every kernel (bench/_kernel_probe.py, big=True);
- MiniLM-L6 embeddings: 1 sentence, 8, 64, and 4 texts of 256 tokens; gpuport webgpu / cpu / auto against
  sentence-transformers on CUDA and on the CPU; cosine and max abs error against the CPU reference;
- SmolLM2-135M (GGUF Q4_1) greedy generation, 40-token prompt, 32 new tokens: gpuport webgpu (memory levels 0 and 3),
  cpu and auto against transformers (dequantized, fp32) on CUDA; prompt logits against transformers on the CPU;
- the array namespace (gpuport.xp on auto and webgpu) against NumPy and CuPy: element-wise chains, sum, sort, matmul
  and a PCA; the fusion figure; the per-call cost;
- profile: cProfile's view of the host's share in a SmolLM2 decode on webgpu and in the array namespace's round trip.

    python bench/gpu.py prepare [--out .gpu/models]        # here: what the models need to travel
    python bench/gpu.py run --models .gpu/models [--quick] [--only checks,minilm,llm,...]   # there
    bench/gpu_device.sh                                     # there: the set-up, this run and the unit tests
JSON: bench/results/gpu/gpu.json (or --out); the committed results from the lent machines live in bench/results/gpu/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpuport as gp  # noqa: E402
from gpuport.platform import sync_wait  # noqa: E402

MINILM, LLM = "minilm-l6-v2", "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_FILES = ("config.json", "sentence_bert_config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "modules.json", "config_sentence_transformers.json", "1_Pooling/config.json")
SHORT = ["A man is eating food.", "The girl is carrying a baby.", "A man is riding a horse.",
         "A woman is playing violin.", "Two men pushed carts through the woods.", "A cheetah runs after its prey.",
         "The new movie is awesome.", "It is raining in the city tonight."]
LONG = [f"Document {i}. " + ("Sentence embeddings map text to vectors so that similar meanings lie close together; "
                             "they power search, clustering and deduplication. ") * 12 for i in range(4)]
GGML_BLOCK = {"F32": (1, 4), "Q8_0": (32, 34), "Q4_1": (32, 20)}   # (weights per block, bytes per block)


# ---------------------------------------------------------------------------------------------------- prepare (here)

def prepare(out: Path) -> None:
    """The real checkpoints' headers and small files into `out` (no tensor data): what `run` draws weights from."""
    from gpuport.models.registry import default_source

    src = Path(default_source(MINILM))
    dst = out / MINILM
    for name in MINILM_FILES:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dst / name)
    with open(src / "model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        f.seek(0)
        (dst / "model.safetensors.header").write_bytes(f.read(8 + n))

    from gguf import GGUFReader   # ggml's reader (the test extra): only here, never on the GPU machine
    path = Path(default_source(LLM)) / GGUF
    reader = GGUFReader(path)
    start = min(int(t.data_offset) for t in reader.tensors)
    (out / LLM).mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as f:
        (out / LLM / (GGUF + ".header")).write_bytes(f.read(start))
    table = [{"name": t.name, "type": t.tensor_type.name, "offset": int(t.data_offset), "bytes": int(t.n_bytes)}
             for t in reader.tensors]
    (out / LLM / "tensors.json").write_text(json.dumps({"size": path.stat().st_size, "tensors": table}))
    print(f"prepared {out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")


# ------------------------------------------------------------------------------------------- random weights (there)

def minilm_checkpoint(models: Path, work: Path, seed: int = 0) -> Path:
    """MiniLM's folder with a model.safetensors of seeded random float32 tensors in the real header's layout:
    LayerNorm weights near 1, biases small, the rest N(0, 0.05) (so attention is not uniform)."""
    src, dst = models / MINILM, work / MINILM
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.header"))
    head = (src / "model.safetensors.header").read_bytes()
    header = json.loads(head[8:])
    rng = np.random.default_rng(seed)
    data = bytearray(max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"))
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        shape = tuple(v["shape"])
        if v["dtype"] == "I64":   # position_ids: a buffer, not a weight
            data[a:b] = np.arange(shape[-1], dtype=np.int64).reshape(shape).tobytes()
            continue
        assert v["dtype"] == "F32", (name, v["dtype"])
        if "LayerNorm.weight" in name:
            t = 1.0 + 0.05 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            t = 0.02 * rng.standard_normal(shape)
        else:
            t = 0.05 * rng.standard_normal(shape)
        data[a:b] = t.astype(np.float32).tobytes()
    (dst / "model.safetensors").write_bytes(head + bytes(data))
    return dst


def gguf_checkpoint(models: Path, work: Path, seed: int = 0) -> Path:
    """SmolLM2's GGUF with its real header (metadata, tokenizer, tensor table) and seeded random, valid blocks:
    F32 norms near 1; Q8_0 scales 0.0005-0.0015 with random int8; Q4_1 scales 0.002-0.004, minimum -8 scales."""
    src, dst = models / LLM, work / LLM
    dst.mkdir(parents=True, exist_ok=True)
    head = (src / (GGUF + ".header")).read_bytes()
    table = json.loads((src / "tensors.json").read_text())
    out = bytearray(table["size"])
    out[:len(head)] = head
    rng = np.random.default_rng(seed)
    for t in table["tensors"]:
        per, nbytes = GGML_BLOCK[t["type"]]
        blocks = t["bytes"] // nbytes
        if t["type"] == "F32":
            raw = (1.0 + 0.05 * rng.standard_normal(blocks)).astype(np.float32).view(np.uint8)
        else:
            b = np.empty((blocks, nbytes), np.uint8)
            d = rng.uniform(*((0.0005, 0.0015) if t["type"] == "Q8_0" else (0.002, 0.004)), blocks).astype(np.float16)
            b[:, 0:2] = d.view(np.uint8).reshape(blocks, 2)
            if t["type"] == "Q8_0":
                b[:, 2:] = rng.integers(-127, 128, (blocks, 32), dtype=np.int8).view(np.uint8)
            else:
                b[:, 2:4] = (-8 * d.astype(np.float32)).astype(np.float16).view(np.uint8).reshape(blocks, 2)
                b[:, 4:] = rng.integers(0, 256, (blocks, 16), dtype=np.uint8)
            raw = b.reshape(-1)
        out[t["offset"]:t["offset"] + t["bytes"]] = raw.tobytes()
    (dst / GGUF).write_bytes(bytes(out))
    return dst


# ------------------------------------------------------------------------------------------------------- measuring

def interleaved(calls: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median ms of each call, timed in turn repetition by repetition (the order rotating), after two calls each (the
    first compiles and packs; bench/_arrays_workloads.interleaved_ms makes the second and times)."""
    from _arrays_workloads import interleaved_ms
    for fn in calls.values():
        fn()
    return {n: round(ms, 4) for n, ms in interleaved_ms(calls, reps).items()}


def agreement(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    return {"min_cosine": float(cos.min()), "max_abs": float(np.abs(got - ref).max())}


def torch_peer() -> Any:
    try:
        import torch
        return torch
    except ImportError:
        return None


def bench_kernels(rt: Any, quick: bool) -> dict:
    import _kernel_probe
    res = asyncio.run(_kernel_probe.run(rt, quick=quick, big=True))
    print(f"roofs: FMA {res['fma_gflops'] / 1e3:.2f} TFLOP/s, read {res['read_gbs']:.0f} GB/s")
    for r in res["rows"]:
        print(f"  {r['name']:44s} {r['ms']:9.4f} ms {r['gflops']:10.1f} GFLOP/s {r['gbs']:8.1f} GB/s "
              f"fma {r['fma_fraction']:.3f} bw {r['read_bw_fraction']:.3f}")
    return res


def bench_minilm(rts: dict[str, Any], folder: Path, reps: int) -> dict:
    models = {k: asyncio.run(gp.models.load(MINILM, rt, source=str(folder))) for k, rt in rts.items()}
    cases = {"1 sentence": SHORT[:1], "8 sentences": SHORT, "64 sentences": SHORT * 8, "4 x 256 tokens": LONG}
    torch = torch_peer()
    peers: dict[str, Any] = {}
    if torch is not None:
        from sentence_transformers import SentenceTransformer
        peers["st_cpu"] = SentenceTransformer(str(folder), device="cpu")
        if torch.cuda.is_available():
            peers["st_cuda"] = SentenceTransformer(str(folder), device="cuda")
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads() if torch else None, "cases": {}}
    for case, texts in cases.items():
        calls = {f"gpuport_{k}": (lambda m=m: sync_wait(m.embed(texts))) for k, m in models.items()}
        for k, p in peers.items():
            calls[k] = lambda p=p: p.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                            normalize_embeddings=True)
        ms = interleaved(calls, reps)
        row: dict[str, Any] = {"ms": ms}
        if "st_cpu" in peers:
            ref = calls["st_cpu"]()
            row["agreement"] = {k: agreement(np.asarray(calls[f"gpuport_{k}"]()), ref) for k in models}
        for k in peers:
            row[f"{k}_over_gpuport_webgpu"] = round(ms[k] / ms["gpuport_webgpu"], 3)
            row[f"{k}_over_gpuport_auto"] = round(ms[k] / ms["gpuport_auto"], 3)
        out["cases"][case] = row
        print(f"MiniLM {case:15s} " + "  ".join(f"{k} {v:8.2f} ms" for k, v in ms.items()), flush=True)
        if "agreement" in row:
            print("   vs sentence-transformers (cpu): " + "  ".join(
                f"{k}: cos {a['min_cosine']:.7f} max|d| {a['max_abs']:.2e}" for k, a in row["agreement"].items()))
    out["ran_webgpu"] = rts["webgpu"].info()["ran"]
    out["auto_info"] = rts["auto"].info()   # auto's calibrated costs and what it chose per computation
    return out


def bench_llm(rts: dict[str, Any], folder: Path, rounds: int, tokens: int) -> dict:
    runs = json.loads((ROOT / "tests/fixtures/smollm2_reference.json").read_text())["runs"]
    ids = next(r for r in runs if r["kind"] == "chat")["prompt_ids"]
    configs = {"webgpu/L0": ("webgpu", 0), "webgpu/L3": ("webgpu", 3), "cpu": ("cpu", 0), "auto": ("auto", 0)}
    models = {k: asyncio.run(gp.models.load(LLM, rts[b], source=str(folder), memory_level=lv))
              for k, (b, lv) in configs.items()}
    logits = {k: np.asarray(asyncio.run(m.logits(ids)), np.float64) for k, m in models.items()}

    async def generate(m: Any) -> list[int]:
        return [t.id async for t in m.generate(ids, max_new_tokens=tokens, ignore_eos=True)]
    samples: dict[str, list[dict]] = {k: [] for k in models}
    tokens_out: dict[str, list[int]] = {}
    for _ in range(rounds):
        for k, m in models.items():
            tokens_out[k] = asyncio.run(generate(m))
            s = m.stats()
            samples[k].append({x: s[x] for x in ("time_to_first_token_s", "prefill_tokens_per_s",
                                                 "decode_tokens_per_s")})
    out: dict[str, Any] = {"prompt_tokens": len(ids), "new_tokens": tokens, "rounds": rounds, "results": {}}
    for k, got in samples.items():
        out["results"][k] = {x: statistics.median(s[x] for s in got) for x in got[0]}
        out["results"][k]["placement"] = models[k].stats().get("placement")
    base = logits["cpu"]
    out["logits_vs_cpu"] = {k: {"max_abs": float(np.abs(v - base).max()), "scale": float(np.abs(base).max()),
                                "same_argmax": bool(v.argmax() == base.argmax())} for k, v in logits.items()}
    out["tokens_equal_to_cpu"] = {k: sum(a == b for a, b in zip(v, tokens_out["cpu"])) for k, v in tokens_out.items()}
    for k, r in out["results"].items():
        print(f"SmolLM2 {k:10s} ttft {r['time_to_first_token_s'] * 1e3:8.1f} ms  prefill "
              f"{r['prefill_tokens_per_s']:8.1f} tok/s  decode {r['decode_tokens_per_s']:7.1f} tok/s  "
              f"logits max|d| vs cpu {out['logits_vs_cpu'][k]['max_abs']:.2e}  tokens = cpu "
              f"{out['tokens_equal_to_cpu'][k]}/{tokens}", flush=True)
    torch = torch_peer()
    if torch is not None:
        try:
            out["transformers"] = hf_llm(torch, folder, ids, tokens, rounds, logits)
        except Exception:   # the peer's failure keeps gpuport's numbers
            out["transformers"] = {"error": traceback.format_exc()}
            print(out["transformers"]["error"])
    out["ran_webgpu"] = rts["webgpu"].info()["ran"]
    return out


def hf_llm(torch: Any, folder: Path, ids: list[int], tokens: int, rounds: int, logits: dict[str, np.ndarray]) -> dict:
    """Hugging Face transformers on the same GGUF (dequantized to float32): its prompt logits (on the CPU) against
    gpuport's on each backend, and greedy generation on CUDA."""
    from transformers import AutoModelForCausalLM
    res: dict[str, Any] = {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF, dtype=torch.float32)
    x = torch.tensor([ids])
    with torch.no_grad():
        last = model(x).logits[0, -1].double().numpy()
    res["logits_vs_transformers"] = {k: {"max_abs": float(np.abs(v - last).max()), "scale": float(np.abs(last).max()),
                                         "same_argmax": bool(v.argmax() == last.argmax())} for k, v in logits.items()}
    print("SmolLM2 prompt logits against transformers (cpu, float32): " + "  ".join(
        f"{k} max|d| {a['max_abs']:.2e}" for k, a in res["logits_vs_transformers"].items()))
    if torch.cuda.is_available():
        model = model.to("cuda")
        x = x.to("cuda")

        def gen(n: int) -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            torch.cuda.synchronize()
            return time.perf_counter() - t0
        gen(tokens)
        first = statistics.median(gen(1) for _ in range(rounds))
        full = statistics.median(gen(tokens + 1) for _ in range(rounds))
        res["cuda"] = {"time_to_first_token_s": first, "decode_tokens_per_s": tokens / (full - first)}
        print(f"SmolLM2 transformers cuda ttft {first * 1e3:.1f} ms decode {tokens / (full - first):.1f} tok/s")
    return res


def bench_arrays(rts: dict[str, Any], reps: int, quick: bool) -> dict:
    from _arrays_workloads import chain_np, median_ms, per_call_overhead, workloads
    from arrays import fusion
    from gpuport import xp
    try:
        import cupy as cp
    except ImportError:
        cp = None
    sizes = [1 << 20] if quick else [1 << 20, 1 << 24]
    matmuls = (512, 2048) if quick else (512, 2048, 4096)
    pca = (10_000,) if quick else (10_000, 100_000)
    rows = []
    r = np.random.default_rng(0)
    cupy_calls: dict[tuple[str, int], Callable[[], Any]] = {}
    if cp is not None:
        for n in sizes:
            v = cp.asarray(r.random(n, dtype=np.float32))
            cupy_calls[("chain of 8", n)] = lambda v=v: cp.asnumpy(chain_np(v))
            cupy_calls[("sum", n)] = lambda v=v: float(cp.sum(v))
            cupy_calls[("sort", n)] = lambda v=v: cp.asnumpy(cp.sort(v))
        for m in matmuls:
            a = cp.asarray(r.standard_normal((m, m)).astype(np.float32))
            cupy_calls[("matmul", m)] = lambda a=a: cp.asnumpy(a @ a)
    for name, size, make in workloads(sizes, matmuls, pca):
        row: dict[str, Any] = {"workload": name, "size": size, "numpy_ms": median_ms(make(np), reps)}
        for label, rt in rts.items():
            xp.use(rt)
            row[f"gpuport_{label}_ms"] = median_ms(make(xp), reps)
        if (name, size) in cupy_calls:
            row["cupy_ms"] = median_ms(cupy_calls[(name, size)], reps)
        rows.append(row)
        print(f"xp {name:12s} {size:>10,}  " + "  ".join(f"{k[:-3]} {v:9.3f} ms" for k, v in row.items()
                                                         if k.endswith("_ms")), flush=True)
    fused = fusion(rts["webgpu"], 1 << 22)
    overhead = {label: per_call_overhead(rt) for label, rt in rts.items()}
    print(f"fusion (4M elements): one function {fused['one_function_device_ms']:.3f} ms on the device, 8 arithmetic "
          f"{fused['arithmetic_device_ms']:.3f} ms in {fused['arithmetic_dispatches']} dispatch; per call "
          + ", ".join(f"{k} {o['round_trip_us']:.0f} us" for k, o in overhead.items()))
    return {"rows": rows, "fusion": fused, "per_call": overhead}


def profile(rt: Any, folder: Path, tokens: int = 16, round_trips: int = 300) -> dict:
    """Where the host's time goes (cProfile) in a SmolLM2 decode on `rt` (memory level 0, `tokens` greedy tokens
    after warm-up) and in xp's 4-element add read back: each one's functions with the largest own and cumulative
    times. On the H200 both were host work: a decode step's 514 dispatches in wgpu-py's bind groups and the engine."""
    import cProfile
    import pstats

    from gpuport import xp

    def top(pr: Any, seconds: float, n: int = 12) -> dict:
        st = pstats.Stats(pr).stats   # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
        rows = [{"function": f"{Path(f).name}:{line}({name})", "calls": c[1], "own_s": round(c[2], 4),
                 "cumulative_s": round(c[3], 4), "ours": "/gpuport/" in f or "/wgpu/" in f}
                for (f, line, name), c in st.items()]
        # cumulative: gpuport's and wgpu-py's functions (asyncio's and this file's wrappers hold everything)
        return {"seconds": round(seconds, 4), "by_own": sorted(rows, key=lambda r: -r["own_s"])[:n],
                "by_cumulative": sorted((r for r in rows if r["ours"]), key=lambda r: -r["cumulative_s"])[:n]}

    def profiled(fn: Callable[[], Any]) -> dict:
        pr = cProfile.Profile()
        t0 = time.perf_counter()
        pr.enable()
        fn()
        pr.disable()
        return top(pr, time.perf_counter() - t0)
    out: dict[str, Any] = {}
    a = xp.asarray(np.ones(4, np.float32), device=rt)
    for _ in range(20):
        np.asarray(a + a)
    out["round_trip"] = profiled(lambda: [np.asarray(a + a) for _ in range(round_trips)])
    out["round_trip"]["calls"] = round_trips
    runs = json.loads((ROOT / "tests/fixtures/smollm2_reference.json").read_text())["runs"]
    ids = next(r for r in runs if r["kind"] == "chat")["prompt_ids"]
    m = asyncio.run(gp.models.load(LLM, rt, source=str(folder)))

    async def generate(n: int) -> list[int]:
        return [t.id async for t in m.generate(ids, max_new_tokens=n, ignore_eos=True)]
    asyncio.run(generate(4))
    out["decode"] = profiled(lambda: asyncio.run(generate(tokens)))
    out["decode"]["tokens"] = tokens
    out["decode"]["per_step"] = m.stats()["per_decode_step"]
    for k, v in out.items():
        print(f"profile {k}: {v['seconds'] * 1e3:.1f} ms profiled; by cumulative: "
              + ", ".join(f"{r['function']} {r['cumulative_s'] * 1e3:.0f}" for r in v["by_cumulative"][:8]), flush=True)
    return out


def checks(rt: Any) -> dict:
    """Integer remainder and floor division against NumPy, the same through a hand-written WGSL kernel (naga's % and /
    on i32 alone: NVIDIA's Vulkan driver took that % as unsigned on an H100 and an H200, -1 % 3 reading 0, so xp forms
    the remainder from the division), and whether the device flushes subnormal results and copies."""
    from gpuport import xp
    xp.use(rt)
    rows = []
    for dt in (np.int8, np.int16, np.int32):
        for a, b in ((-1, 3), (-7, 2), (5, -3), (-128, 3), (7, 3)):
            x, y = np.array(a, dt), np.array(b, dt)
            got = [int(np.asarray(xp.remainder(xp.asarray(x), xp.asarray(y)))),
                   int(np.asarray(xp.floor_divide(xp.asarray(x), xp.asarray(y))))]
            want = [int(np.remainder(x, y)), int(np.floor_divide(x, y))]
            rows.append({"dtype": np.dtype(dt).name, "a": a, "b": b, "got": got, "want": want})
    k = rt.kernel("""struct P { a: i32, b: i32, _0: u32, _1: u32 }
@group(0) @binding(0) var<storage, read_write> o: array<i32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(1) fn main() {
  let r = p.a % p.b;
  o[0] = r; o[1] = p.a / p.b; o[2] = select(r, r + p.b, r != 0 && ((r < 0) != (p.b < 0)));
}""")
    raw = []
    for a, b in ((-1, 3), (-7, 2), (5, -3)):
        o = rt.tensor(np.zeros(4, np.int32))
        k.dispatch(1, o, uniforms=np.array([a, b, 0, 0], np.int32).view(np.uint32).tolist())
        raw.append({"a": a, "b": b, "rem_div_python_mod": o.numpy()[:3].tolist()})
    tiny = xp.asarray(np.array([[1e-45, 1e-38]], np.float32))
    res = {"integers": rows, "wrong": [r for r in rows if r["got"] != r["want"]], "raw_wgsl": raw,
           "flushes_results": float(np.asarray(tiny * 0.5)[0, 1]) == 0.0,
           "copy_keeps_subnormals": float(np.asarray(xp.permute_dims(tiny, (1, 0)))[0, 0]) != 0.0}
    print("checks:", json.dumps({k: v for k, v in res.items() if k != "integers"}), flush=True)
    return res


def run(models: Path, out: Path, reps: int, quick: bool, only: set[str]) -> int:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "gpuport-gpu-models"
    rts = {"webgpu": gp.open_sync(backend="webgpu"), "cpu": gp.open_sync(backend="cpu"), "auto": gp.open_sync()}
    info = rts["webgpu"].info()
    result: dict[str, Any] = {"adapter": info["adapter"], "tier": info["tier"], "features": info.get("features"),
                              "limits": info.get("limits"), "auto": {k: rts["auto"].info().get(k)
                                                                     for k in ("backend", "mode", "tier")},
                              "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    from gpuport.host import native_kernels
    result["native_kernels"] = {"available": native_kernels.available(), "reason": native_kernels.reason()}
    print("adapter:", json.dumps(info["adapter"]), "native kernels:", result["native_kernels"], flush=True)
    if info["adapter"].get("is_fallback"):
        print("warning: the adapter is a software fallback, not the GPU")
    drawn: dict[str, Path] = {}

    def llm_folder() -> Path:   # drawn once for the llm and profile steps (a ~100 MB file)
        if "llm" not in drawn:
            drawn["llm"] = gguf_checkpoint(models, work)
        return drawn["llm"]
    steps = {
        "checks": lambda: checks(rts["webgpu"]),
        "kernels": lambda: bench_kernels(rts["webgpu"], quick),
        "minilm": lambda: bench_minilm(rts, minilm_checkpoint(models, work), reps),
        "llm": lambda: bench_llm(rts, llm_folder(), 2 if quick else 3, 32),
        "arrays": lambda: bench_arrays({"auto": rts["auto"], "webgpu": rts["webgpu"]}, reps, quick),
        "profile": lambda: profile(rts["webgpu"], llm_folder()),
    }
    failed = 0
    for name, step in steps.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = step()
        except Exception:   # one part's failure must not lose the others' numbers from a scarce machine
            failed += 1
            result[name] = {"error": traceback.format_exc()}
            print(f"{name} FAILED:\n{result[name]['error']}", flush=True)
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out / 'gpu.json'}")
    from _harness import draw_chart
    print(draw_chart(Path(__file__).resolve().parent / "_gpu_chart.py", out / "gpu.json", out / "gpu.png"))
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu" / "models")
    r = sub.add_parser("run")
    r.add_argument("--models", type=Path, default=ROOT / ".gpu" / "models")
    r.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    r.add_argument("--reps", type=int, default=9)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", default="", help="comma-separated: checks, kernels, minilm, llm, arrays, profile")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out)
        return 0
    return run(a.models, a.out, a.reps, a.quick, {s for s in a.only.split(",") if s})


if __name__ == "__main__":
    sys.exit(main())
