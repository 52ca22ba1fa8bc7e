#!/usr/bin/env bash
# bench/generate.py's peers, bench-only (never gpuport dependencies), idempotent, under $BENCH_LLM_DIR
# (default .cache/bench/llm):
#   venv/  llama-cpp-python (it compiles llama.cpp from source: ~15 min on 2 cores) and matplotlib (the chart)
#   js/    npm @wllama/wllama 3.x (llama.cpp compiled to WebAssembly SIMD, with its WebGPU backend)
# The compile runs under the machine-wide heavy lock and nice; CMAKE_BUILD_PARALLEL_LEVEL (default 2) caps it.
# WLLAMA_ONLY=1: js/ alone (bench/startup.py's peer needs nothing else).
set -euo pipefail
DIR=${BENCH_LLM_DIR:-.cache/bench/llm}
PYTHON=${PYTHON:-python3}
LLAMA_CPP=${LLAMA_CPP:-llama-cpp-python==0.3.36}
WLLAMA=${WLLAMA:-@wllama/wllama@3.8.1}
LOCK=${BENCH_LOCK-flock /tmp/gpuport-heavy.lock}

mkdir -p "$DIR"
wllama_js() {
  if [ ! -f "$DIR/js/node_modules/@wllama/wllama/package.json" ]; then
    mkdir -p "$DIR/js"
    npm install --prefix "$DIR/js" --no-audit --no-fund --ignore-scripts "$WLLAMA"
  fi
  node -e "console.log('wllama', require('$(realpath "$DIR")/js/node_modules/@wllama/wllama/package.json').version)"
}
if [ "${WLLAMA_ONLY:-0}" = 1 ]; then
  wllama_js
  exit 0
fi
[ -x "$DIR/venv/bin/python" ] || "$PYTHON" -m venv "$DIR/venv"
if ! "$DIR/venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  "$DIR/venv/bin/pip" install -q matplotlib
fi
if ! "$DIR/venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building $LLAMA_CPP (compiles llama.cpp; minutes)"
  # CPU only, no OpenMP threads beyond what the bench asks for; GGML_NATIVE: this machine's SIMD
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \
    $LOCK nice -n 10 "$DIR/venv/bin/pip" install --no-cache-dir "$LLAMA_CPP"
fi
wllama_js
"$DIR/venv/bin/python" -c "import llama_cpp, matplotlib; print('llama-cpp-python', llama_cpp.__version__, '| matplotlib', matplotlib.__version__)"
