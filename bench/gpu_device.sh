#!/bin/bash
# bench/gpu.py's run on a lent GPU machine (no registry there; see bench/gpu.py): run from the checkout's root with
# what `prepare` made carried beside it:
#   .gl/       Debian's Vulkan and GL loaders (.deb, unpacked into /: the machine has NVIDIA's driver, no loader)
#   .gpu/whl/  wgpu-py and what it needs, gguf and array-api-compat, as py3.12 wheels
#   .gpu/native-v3|v4/libgpuport_simd.so  the C host kernels built for x86-64-v3 / v4 (AVX2 / AVX-512)
#   .gpu/models/  the checkpoints' headers (bench/gpu.py prepare)
# The kernel, array-namespace and backend unit tests on that GPU first (under a minute on an H200: what fixes for
# that driver need to see run), then bench/gpu.py. Everything lands in $OUT.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD/py PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/xdg
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
level=v3; grep -q avx512bw /proc/cpuinfo && level=v4
export GPUPORT_NATIVE_KERNELS=$PWD/.gpu/native-$level/libgpuport_simd.so
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; nproc
  grep -m1 "model name" /proc/cpuinfo; python3 -c "import torch, numpy; print(torch.__version__, numpy.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
# Left out: what needs what that machine lacks: the SmolLM2 package (test_identity's generation) and scikit-learn
# 1.6 (test_sklearn.py: its image has a newer one, whose float64 handling differs).
timeout "${TESTS_S:-120}" python3 -m pytest -q --maxfail=40 -n 12 -p no:cacheprovider --timeout 100 -rfE \
    --deselect tests/backends/test_identity.py::test_a_generation_that_auto_keeps_on_the_host_never_loads_the_gpu_driver \
    --ignore tests/xp/test_sklearn.py \
    --junitxml="$OUT/tests.xml" tests/ops tests/xp tests/test_kernel.py tests/backends tests/engine 2>&1 \
    | tail -40 | tee "$OUT/tests.log"
# then the measurements (their parts write gpu.json as each ends: a call cut short keeps what was done)
timeout "${BENCH_S:-270}" python3 bench/gpu.py run --out "$OUT" ${GPU_ARGS:-} 2>&1 | grep -v "Loading weights\|Converting" \
    | tee "$OUT/gpu.log"
