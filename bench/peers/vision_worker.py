"""One native system of bench/vision.py, kept alive in its own process so that the parent can alternate repetitions
between systems (threads are fixed by the environment the parent starts it with).

  python vision_worker.py hf CHECKPOINT PHOTOS_DIR        transformers on torch (the bench venv's python)
  python vision_worker.py gpuport CHECKPOINT PHOTOS_DIR   gpuport's default (auto; gpuport's venv, PYTHONPATH=py)

The cases and their inputs are bench/peers/vision_inputs.json's (the photographs read from PHOTOS_DIR as their file
bytes: every system decodes and preprocesses them itself). Protocol, one JSON object per line: the worker first
writes {"ready": true, "info": {...}}; then for each request {"case": name, "embeddings": bool} it runs the case once
and answers {"ms": float, "embeddings": [[...], ...] | null} (unit image or text embeddings; for the zero-shot case
the label probabilities); {"after": true} answers {"after": {...}}; an empty line or EOF ends it.
"""

import json
import os
import sys
import time
from pathlib import Path

from worker import serve

INPUTS = json.loads((Path(__file__).resolve().parent / "vision_inputs.json").read_text())


def cases(photos: list[bytes]) -> dict:
    """case -> (images, texts) it takes; the zero-shot case: one image, the labels in the template."""
    many = [photos[i % len(photos)] for i in range(16)]
    labels = [INPUTS["template"].format(label) for label in INPUTS["labels"]]
    return {"image1": (photos[:1], []), "image16": (many, []), "text1": ([], INPUTS["texts"][:1]),
            "text16": ([], INPUTS["texts"][:16]), "zeroshot10": (photos[:1], labels)}


def hf_system(checkpoint: str):
    import io

    import numpy as np
    import torch
    import transformers
    from PIL import Image, ImageOps
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    model = CLIPModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = CLIPImageProcessorPil.from_pretrained(checkpoint)
    tokenizer = CLIPTokenizer.from_pretrained(checkpoint)
    info = {"torch": torch.__version__, "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}

    def unit(x):
        return (x / x.norm(dim=-1, keepdim=True)).numpy()

    def run(images: list[bytes], texts: list[str]):
        with torch.inference_mode():
            img = txt = None
            if images:
                pil = [ImageOps.exif_transpose(Image.open(io.BytesIO(b))).convert("RGB") for b in images]
                pixels = torch.from_numpy(np.asarray(processor(pil, return_tensors="np")["pixel_values"]))
                img = unit(model.get_image_features(pixel_values=pixels).pooler_output)   # projected, in 5.x
            if texts:
                enc = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
                txt = unit(model.get_text_features(**enc).pooler_output)
        if img is not None and txt is not None:
            logits = model.logit_scale.exp().item() * (img @ txt.T)[0]
            p = np.exp(logits - logits.max())
            return (p / p.sum())[None]
        return img if img is not None else txt
    return run, info, dict


def gpuport_system(checkpoint: str):
    import asyncio

    import numpy as np

    import gpuport as gp
    from gpuport import models

    rt = gp.open_sync()
    loop = asyncio.new_event_loop()
    clip = loop.run_until_complete(models.load("clip-vit-base-patch32", rt, source=checkpoint))
    rinfo = rt.info()
    info = {"gpuport": gp.__version__, "backend": rinfo.get("backend"), "tier": rinfo.get("tier"),
            "mode": rinfo.get("mode")}

    async def case(images: list[bytes], texts: list[str]):
        if images and texts:   # zero-shot: a cold label cache, as the peers embed the labels every call
            clip.clear_labels()
            top = dict(await clip.classify(images[0], INPUTS["labels"], template=INPUTS["template"]))
            return np.array([[top[label] for label in INPUTS["labels"]]])
        return await (clip.embed_images(images) if images else clip.embed_texts(texts))

    def run(images: list[bytes], texts: list[str]):
        return loop.run_until_complete(case(images, texts))

    def after():
        i = rt.info()
        return {"selection": i.get("selection"), "stats": clip.stats()}
    return run, info, after


def main(argv: list) -> int:
    kind, checkpoint, photos_dir = argv
    run, info, after = (hf_system if kind == "hf" else gpuport_system)(checkpoint)
    photos = [(Path(photos_dir) / name).read_bytes() for name in INPUTS["photos"]]
    table = cases(photos)
    info.update(pid=os.getpid(), python=sys.version.split()[0],
                env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ})

    def call(req: dict) -> dict:
        images, texts = table[req["case"]]
        t = time.perf_counter()
        out = run(images, texts)
        ms = (time.perf_counter() - t) * 1000
        return {"ms": ms, "embeddings": out.tolist() if req.get("embeddings") else None}

    return serve(info, after, call)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
