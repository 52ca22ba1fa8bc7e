#!/bin/bash
# Here, before a lent GPU machine's call: everything bench/gpu_device.sh needs there, which reaches no registry and
# takes 64 MiB with the call. Idempotent. Then, with the device tool:
#   run  command: OUT=$OUT bash bench/gpu_device.sh      carry: [".gl", ".gpu"]      (about 4 minutes on an H100)
# .gl/ and .gpu/ are ignored through .git/info/exclude (local to this checkout, never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.gl/ /.gpu/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
# Debian's Vulkan and GL loaders (the machine has NVIDIA's driver and ICD, no loader)
mkdir -p .gl /tmp/amd64/partial
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64"
ls .gl/libvulkan1_*.deb >/dev/null 2>&1 || { apt-get $o update -qq && (cd .gl && apt-get $o download -qq libvulkan1 \
    libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2); }
# wgpu-py (the version pyproject pins) and what it needs, gguf for the GGUF peer, array-api-compat for scikit-learn:
# py3.12 wheels, as the machine's python is
mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    "wgpu>=0.32,<0.33" cffi pycparser rendercanvas gguf==0.19.0 array-api-compat
# the C host kernels for x86-64-v3 (AVX2) and v4 (AVX-512): gpu_device.sh loads the one that machine's CPU runs.
# The Makefile's flags, with -march=native (this CPU) replaced.
cflags=$(printf 'print-cflags:\n\t@echo $(NATIVE_CFLAGS)\n' | make -s --no-print-directory -f Makefile -f - print-cflags)
clang=$(printf 'print-clang:\n\t@echo $(CLANG)\n' | make -s --no-print-directory -f Makefile -f - print-clang)
for v in v3 v4; do
    mkdir -p .gpu/native-$v
    [ -f .gpu/native-$v/libgpuport_simd.so ] && continue
    objs=()
    for c in hostkernels/*.c; do
        $clang ${cflags/-march=native/-march=x86-64-$v} -c "$c" -o ".gpu/native-$v/$(basename "$c" .c).o"
        objs+=(".gpu/native-$v/$(basename "$c" .c).o")
    done
    $clang -shared -pthread -o .gpu/native-$v/libgpuport_simd.so "${objs[@]}"
    rm -f "${objs[@]}"
done
# the models' headers and small files (their tensors are drawn there)
PYTHONPATH=py .venv/bin/python bench/gpu.py prepare
du -sh .gl .gpu
