"""SmolLM2-135M-Instruct generation natively, in one run: time to first token, prefill and decode tokens/s on
webgpu (lavapipe), cpu (NumPy) and auto, per memory level; ratios against the cpu backend at level 0 measured in
the same run, rounds interleaved (one generation per backend per round).

The prompt is the chat fixture's (tests/fixtures/smollm2_reference.json, 40 tokens); decoding is greedy for
--tokens new tokens with EOS ignored, so every backend does the same work.

Run: .venv/bin/python bench/generate_native.py [--rounds 3] [--tokens 32] [--levels 0,1,2,3].
JSON: bench/results/generate_native.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpuport as gp  # noqa: E402
from _harness import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


async def one(llm, ids: list[int], tokens: int) -> dict:
    n = 0
    async for _ in llm.generate(ids, max_new_tokens=tokens, ignore_eos=True):
        n += 1
    s = llm.stats()
    assert n == tokens, (n, tokens)
    return {k: s[k] for k in ("time_to_first_token_s", "prefill_tokens_per_s", "decode_tokens_per_s",
                              "kv_cache_bytes", "resident_weight_bytes", "placement")}


async def main(rounds: int, tokens: int, levels: list[int]) -> dict:
    runs = json.loads((ROOT / "tests/fixtures/smollm2_reference.json").read_text())["runs"]
    ids = next(r for r in runs if r["kind"] == "chat")["prompt_ids"]
    configs = [("cpu", 0), *(("webgpu", lv) for lv in levels), ("auto", 0)]
    runtimes = {b: await gp.open(backend=b) for b in dict.fromkeys(b for b, _ in configs)}
    models = {(b, lv): await gp.models.load("smollm2-135m-instruct", runtimes[b], memory_level=lv) for b, lv in configs}
    samples: dict[str, list[dict]] = {f"{b}/L{lv}": [] for b, lv in configs}
    for _ in range(rounds):
        for backend, level in configs:
            samples[f"{backend}/L{level}"].append(await one(models[(backend, level)], ids, tokens))
    out = {}
    for key, got in samples.items():
        out[key] = {k: statistics.median(s[k] for s in got) for k in got[0] if k != "placement"}
        out[key]["placement"] = got[-1]["placement"]
    base = out["cpu/L0"]
    for key, row in out.items():
        row["decode_vs_cpu"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["prefill_vs_cpu"] = row["prefill_tokens_per_s"] / base["prefill_tokens_per_s"]
        print(f"{key:10} ttft {row['time_to_first_token_s'] * 1e3:8.0f} ms  prefill {row['prefill_tokens_per_s']:7.1f}"
              f" tok/s ({row['prefill_vs_cpu']:.2f}x)  decode {row['decode_tokens_per_s']:6.2f} tok/s "
              f"({row['decode_vs_cpu']:.2f}x)  kv {row['kv_cache_bytes'] / 1e6:.2f} MB  weights on device "
              f"{row['resident_weight_bytes'] / 1e6:.1f} MB  [{row['placement']}]")
    return {"prompt_tokens": len(ids), "new_tokens": tokens, "rounds": rounds, "results": out}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--levels", default="0,1,2,3")
    a = ap.parse_args()
    result = asyncio.run(main(a.rounds, a.tokens, [int(v) for v in a.levels.split(",")]))
    print(write_result("generate_native", result))
