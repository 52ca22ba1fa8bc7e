"""bench/generate.py's native peer, run by the bench venv's Python (llama-cpp-python): one JSON command per stdin
line {"ids": [...], "n": N, "threads": T}, one JSON answer per stdout line: the seconds at which each of the N
greedy tokens after the prompt arrived (the first includes the prompt's prefill), and the process's peak RSS. The
model loads once per thread count (bench/generate.py runs one worker per thread count, so the RSS is one model's)."""

import json
import resource
import sys
import time

from llama_cpp import Llama

models = {}
path = sys.argv[1]
for line in sys.stdin:
    cmd = json.loads(line)
    threads = cmd["threads"]
    if threads not in models:
        models[threads] = Llama(model_path=path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                                verbose=False)
    llm = models[threads]
    llm.reset()
    times, ids = [], []
    t0 = time.perf_counter()
    for tok in llm.generate(cmd["ids"], temp=0.0, top_k=1, reset=True):   # greedy; never stops at EOS by itself
        times.append(time.perf_counter() - t0)
        ids.append(int(tok))
        if len(times) == cmd["n"]:
            break
    print(json.dumps({"times_s": times, "ids": ids, "text": llm.detokenize(ids).decode("utf-8", "replace"),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
