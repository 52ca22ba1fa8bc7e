"""bench/generate.py's gpuport side natively, in a process of its own so that its thread budget is the one asked
(OPENBLAS_NUM_THREADS, which gpuport's host kernels read once at import, set by the parent). Its default backend
(`gp.open()`, auto). First line out: {"ready", "ids" (the prompt's token ids), "backend", "load_s"}; then the
protocol of llama_cpp_worker.py: one JSON command per stdin line {"n": N}, one answer per stdout line with the
seconds at which each of the N greedy tokens arrived, their ids, where the forward ran, the process's peak RSS and
whether the GPU device was opened (auto opens it only when placement sends it work, once its adapter is recorded)."""

import asyncio
import json
import sys
import time

import gpuport as gp
from gpuport import models
from gpuport.host import hostops
from gpuport.platform import peak_rss_bytes

name, messages = sys.argv[1], json.loads(sys.argv[2])
rt = gp.open_sync()
t0 = time.perf_counter()
llm = asyncio.run(models.load(name, rt))
ids = llm.prompt_ids(messages)
kernels = hostops.layers()
print(json.dumps({"ready": True, "ids": ids, "backend": rt.backend, "load_s": time.perf_counter() - t0,
                  "host_threads": kernels[1] if kernels else None}), flush=True)


async def one(n: int) -> dict:
    times, out, t0 = [], [], time.perf_counter()
    async for tok in llm.generate(ids, max_new_tokens=n, ignore_eos=True):
        times.append(time.perf_counter() - t0)
        out.append(tok.id)
    return {"times_s": times, "ids": out, "placement": llm.stats().get("placement"), "peak_rss": peak_rss_bytes(),
            "device_open": rt.info()["device_open"]}


for line in sys.stdin:
    print(json.dumps(asyncio.run(one(json.loads(line)["n"]))), flush=True)
