#!/usr/bin/env bash
# `make test`'s pytest processes (docs/testing.md, "The processes"), run from the repository root by the Makefile
# with PY set to the project's Python. Two chains side by side on the two cores:
# - the browser lanes (e2e/), at normal priority, streamed to the terminal;
# - the unit tests (tests/) at nice 10: the cores go to the browsers first and the unit run fills the time their
#   pages wait.
# The other hosts' tests (they open their own pages and use no lane) come in four parts, each taken by whichever
# chain is free first, the longest first. A chain that ends early then keeps its core busy, where a fixed order left one
# core idle for minutes at the end (at a slow hour the unit chain ended 1 min before the browsers, and the hosts'
# 4 1/2 min then ran alone, one core mostly idle).
# Each process has a fresh gpuport cache, writes .cache/test-<name>.{log,xml,rc}, and its part of the coverage matrix;
# at the end come each process's output, the merged matrix and where the time went. Exit status: 1 if any failed.
# Where a pytest process died of a signal, the head of its crash dump (tests/crash_log.py) is printed last.
# With arguments, one pytest process runs with them instead (make test PYTEST_ARGS=...).
set -u
PY=${PY:?PY names the project Python}

crashed() {
  for f in .cache/crash*.txt; do
    if [ -s "$f" ]; then
      echo "a pytest process crashed; its crashing thread, innermost frames first ($f):"; head -25 "$f"
    fi
  done
}

if [ $# -gt 0 ]; then
  "$PY" -m pytest -q "$@" || { rc=$?; crashed; exit $rc; }
  exit 0
fi
# The parts, longest first (120-180, 80, 28 and 23 s): the last two are small so that the chains end close together
# (as one part of 51 s, one chain ran it alone for 43 s after the other had ended).
HOSTS=(plugin jupyterlite jsmodules pyscript)
declare -A PART=([plugin]="e2e/test_user_project.py" [jupyterlite]="e2e/test_jupyterlite.py"
                 [jsmodules]="e2e/test_page_jsmodules.py" [pyscript]="e2e/test_pyscript.py")

rm -rf .cache/crash*.txt .cache/test-*.xml .cache/test-*.log .cache/test-*.rc .cache/test-claims e2e/report/coverage-*.json
mkdir -p .cache/test-claims
caches=$(mktemp -d)
trap 'rm -rf "$caches"' EXIT
mkdir "$caches/unit" "$caches/e2e"
for part in "${HOSTS[@]}"; do mkdir "$caches/$part"; done

# The unit process's cache is calibrated first, on the quiet machine: auto's calibration measured beside a busy e2e
# run priced the host up to 400x too slow (OpenBLAS's threads on oversubscribed cores), and the stored record then
# sent later auto tests (Whisper's) to lavapipe for 77-89 s each.
GPUPORT_CACHE=$caches/unit "$PY" -c "import gpuport; gpuport.open_sync().close()"

hosts() {   # the parts of the other hosts not yet begun, claimed one at a time (mkdir: one chain wins each)
  local part
  for part in "${HOSTS[@]}"; do
    mkdir ".cache/test-claims/$part" 2>/dev/null || continue
    # shellcheck disable=SC2086  # the part's files, split on spaces
    GPUPORT_CACHE=$caches/$part nice -n 10 "$PY" -m pytest -q --durations=10 --junitxml=".cache/test-hosts-$part.xml" \
      --coverage-part="hosts-$part" ${PART[$part]} > ".cache/test-hosts-$part.log" 2>&1
    echo $? > ".cache/test-hosts-$part.rc"
  done
}

ignore=()
for part in "${HOSTS[@]}"; do for f in ${PART[$part]}; do ignore+=("--ignore=$f"); done; done
{
  GPUPORT_CACHE=$caches/e2e "$PY" -m pytest -q --durations=25 --junitxml=.cache/test-e2e.xml \
    --require-coverage=browsers "${ignore[@]}" e2e 2>&1 | tee .cache/test-e2e.log
  echo "${PIPESTATUS[0]}" > .cache/test-e2e.rc
  hosts
} &
# The unit process runs NumPy's BLAS on one thread: beside the browsers its threads only contend (a NumPy llama
# forward took 34 s there, 1.7 s alone); tests of the native kernels' own threads ask for their thread counts.
{
  OPENBLAS_NUM_THREADS=1 GPUPORT_CACHE=$caches/unit nice -n 10 "$PY" -m pytest -q --durations=15 \
    --junitxml=.cache/test-unit.xml --require-coverage=native tests > .cache/test-unit.log 2>&1
  echo $? > .cache/test-unit.rc
  hosts
} &
wait

status() { cat ".cache/test-$1.rc" 2>/dev/null || echo 1; }
echo "== tests/ (unit tests, beside e2e/) =="; cat .cache/test-unit.log
for part in "${HOSTS[@]}"; do
  echo "== ${PART[$part]} (the other hosts, after whichever chain was free first) =="; cat ".cache/test-hosts-$part.log"
done
echo "== e2e/, its last lines again (all of it: .cache/test-e2e.log) =="; tail -30 .cache/test-e2e.log
echo "== the coverage matrix =="; "$PY" e2e/e2e_coverage.py; cov=$?
echo "== where the time went =="
"$PY" tests/time_table.py .cache/test-unit.xml .cache/test-e2e.xml .cache/test-hosts-*.xml
failed=$(( cov != 0 ))
summary=""
for name in unit e2e "${HOSTS[@]/#/hosts-}"; do
  rc=$(status "$name"); [ "$rc" -eq 0 ] || failed=1; summary+="$name exit $rc, "
done
echo "== make test: ${summary}coverage matrix exit $cov =="
if [ "$failed" -ne 0 ]; then crashed; exit 1; fi
