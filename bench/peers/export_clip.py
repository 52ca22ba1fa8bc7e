"""The CLIP checkpoint bench/vision.py runs, exported for transformers.js in its split-tower layout (what its
CLIPTextModelWithProjection and CLIPVisionModelWithProjection load: onnx/text_model.onnx and onnx/vision_model.onnx,
fp32, with tokenizer.json, config.json and preprocessor_config.json beside them), then checked against transformers
on onnxruntime (cosine of the embeddings). Run with the bench venv's python (torch, transformers, onnx,
onnxruntime):   python export_clip.py CHECKPOINT_DIR OUT_DIR CHECK_JSON
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection


class Text(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.text_embeds, out.last_hidden_state


class Vision(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.image_embeds, out.last_hidden_state


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float((a * b).sum(-1).min())


def main(src: str, out: str, check: str) -> int:
    src_dir, out_dir = Path(src), Path(out)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "onnx").mkdir(parents=True)
    text = CLIPTextModelWithProjection.from_pretrained(src_dir, attn_implementation="eager").eval()
    vision = CLIPVisionModelWithProjection.from_pretrained(src_dir, attn_implementation="eager").eval()
    tok = CLIPTokenizer.from_pretrained(src_dir)
    enc = tok(["a photo of a cat", "a rocket on a launch pad at night"], padding=True, return_tensors="pt")
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(Text(text), (enc["input_ids"], enc["attention_mask"]), tmp / "onnx" / "text_model.onnx",
                          input_names=["input_ids", "attention_mask"], output_names=["text_embeds", "last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                                        "text_embeds": {0: "batch"}, "last_hidden_state": {0: "batch", 1: "sequence"}},
                          opset_version=17, dynamo=False)
        torch.onnx.export(Vision(vision), (pixels,), tmp / "onnx" / "vision_model.onnx", input_names=["pixel_values"],
                          output_names=["image_embeds", "last_hidden_state"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"},
                                        "last_hidden_state": {0: "batch"}}, opset_version=17, dynamo=False)
        want_text = text(**enc).text_embeds.numpy()
        want_image = vision(pixel_values=pixels).image_embeds.numpy()
    tok.save_pretrained(tmp)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(src_dir / name, tmp / name)
    t = ort.InferenceSession(str(tmp / "onnx" / "text_model.onnx"))
    v = ort.InferenceSession(str(tmp / "onnx" / "vision_model.onnx"))
    got_text = t.run(["text_embeds"], {"input_ids": enc["input_ids"].numpy(),
                                       "attention_mask": enc["attention_mask"].numpy()})[0]
    got_image = v.run(["image_embeds"], {"pixel_values": pixels.numpy()})[0]
    report = {"text_cosine_min": cosine_min(got_text, want_text), "image_cosine_min": cosine_min(got_image, want_image),
              "torch": torch.__version__, "onnxruntime": ort.__version__}
    if min(report["text_cosine_min"], report["image_cosine_min"]) < 0.9999:
        print(f"the ONNX export disagrees with transformers: {report}")
        return 1
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    Path(check).write_text(json.dumps(report, indent=1))
    print(f"exported {out_dir}: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
