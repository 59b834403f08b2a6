#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there), in about 9 minutes:
#
#   facts      GPU, driver, CUDA, versions, python/pip/nvcc/compute-sanitizer paths, shared-memory
#              limits, optional packages present (bench/facts.py)
#   build      pip install -e . with FASTSIM_CUDA=ON (a missing CUDA compiler fails loudly; only
#              when no nvcc is found at all: a CPU-only build, said so); full log kept
#   tests      the GPU-marked tests, FASTSIM_TEST_TIMEOUT per test (tests/conftest.py), junit XML
#   bench      fastsim beside issue 11's anchors, float64 error column (bench/gpu.py)
#   sanitizer  compute-sanitizer memcheck, racecheck, synccheck of the top-k and overlap kernels
#              on small inputs (bench/sanitize_native.py)
#   analyze    analysis throughput of speech models (bench/analyze_gpu.py)
#   mimic      fused mimicking block and whole model (bench/mimic_gpu.py)
#   prune      skip_layers memory and time (bench/prune_gpu.py)
#
# One deadline for the whole run (--deadline, default 540 s from the start): every step gets at
# most its own limit and at most what is left after keeping the minimum of the steps after it
# (but at least its own minimum: earlier steps come first); a step with less than its minimum
# left is skipped with a line saying so. Python steps also get the step's
# deadline (FASTSIM_BENCH_DEADLINE) and stop between rows. A failing step does not stop the
# others. Every step's output is printed as it comes and kept in a file; table rows also go to
# summary.md (Markdown) and results.jsonl (one JSON object a row). Files go to $OUT when it is
# set, else to --out DIR, else to bench/out/<mode>-<time>/. The run ends with a recap: every
# step's status and every table row.
#
# Usage:
#   bash bench/device.sh                      # on the GPU machine
#   bash bench/device.sh --cpu-dry-run        # here: every step on the CPU, tiny sizes, Triton's
#                                             # interpreter, optional packages hidden as on the GPU box
#   options: --deadline SECONDS  --only STEP,...  --skip STEP,...  --out DIR
#   environment: PYTHON (the interpreter), FASTSIM_TEST_TIMEOUT (60), FASTSIM_TESTS_EXTRA (pytest args),
#   FASTSIM_NO_PIP=1 (build with cmake and stage the package, as when the machine has no pip)
# pytorch-cka on the GPU machine: run bash bench/fetch_wheels.sh here and carry "bench/wheels".
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
RUN_START=$(date +%s)

MODE=device
DEADLINE=""
ONLY=""
SKIP=""
OUTARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) MODE=dry ;;
    --deadline) DEADLINE=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --skip) SKIP=$2; shift ;;
    --out) OUTARG=$2; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "bench/device.sh: unknown option $1 (see --help)"; exit 2 ;;
  esac
  shift
done
if [ "$MODE" = dry ]; then DEADLINE=${DEADLINE:-1200}; else DEADLINE=${DEADLINE:-540}; fi
DEADLINE_AT=$((RUN_START + DEADLINE))

OUTDIR=${OUTARG:-${OUT:-$REPO/bench/out/$MODE-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUTDIR/steps"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastsim-device.XXXXXX")
exec > >(tee -a "$OUTDIR/device.log") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MODE REPO OUTDIR WORK
export FASTSIM_BENCH_OUT="$OUTDIR"
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$MODE" = dry ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  # as on the GPU machine: no soundfile, maybe no matplotlib (transformers needs tqdm, so it stays)
  export FASTSIM_SIMULATE_ABSENT=soundfile,matplotlib
fi

# --- the interpreter: the first of $PYTHON, python3, python that imports torch
PY=""
for c in ${PYTHON:-} python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if "$p" -c "import torch" >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  PY=$(command -v python3 || command -v python || echo python3)
  echo "!!! no python on PATH imports torch; using $PY anyway"
fi
export PY

if [ "$MODE" = device ] && [ -z "${FASTSIM_DEVICE_FORCE:-}" ] && \
   ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  "$PY" "$REPO/bench/facts.py" 2>&1 | head -n 20
  echo "!!! bench/device.sh: torch sees no CUDA device here. This mode installs fastsim (pip install -e .) and times GPUs;"
  echo "!!! on a machine without a GPU run 'bash bench/device.sh --cpu-dry-run' (FASTSIM_DEVICE_FORCE=1 runs it anyway)."
  exit 3
fi
# --- nvcc and compute-sanitizer: PATH, the usual CUDA homes, pip's nvidia wheels
find_nvcc() {
  local c
  for c in "${CUDACXX:-}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc \
           $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -rV) /opt/cuda/bin/nvcc /usr/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return; fi
  done
  "$PY" - <<'EOF' 2>/dev/null
import glob, os, sys
for p in sys.path:
    for c in sorted(glob.glob(os.path.join(p, "nvidia", "*", "bin", "nvcc"))):
        print(c)
        raise SystemExit
EOF
}
find_sanitizer() {
  local c d
  d=$(dirname "${NVCC:-/nonexistent/x}")
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "$d/compute-sanitizer" "$d/../compute-sanitizer/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
           $(ls -d /usr/local/cuda-*/bin/compute-sanitizer /usr/local/cuda-*/compute-sanitizer/compute-sanitizer 2>/dev/null | sort -rV); do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return; fi
  done
}
NVCC=$(find_nvcc)
SANITIZER=$(find_sanitizer)
export NVCC SANITIZER FASTSIM_NVCC="$NVCC" FASTSIM_SANITIZER="$SANITIZER"
echo "# bench/device.sh $MODE run · $(date '+%Y-%m-%d %H:%M:%S') · deadline ${DEADLINE}s · python $PY · nvcc ${NVCC:-not found} · output $OUTDIR"

# Everything a step needs beyond the exported variables (the build may add PYTHONPATH here).
: > "$WORK/env.sh"
export STEP_ENV="$WORK/env.sh"

# ------------------------------------------------------------------------------------- the steps

step_facts() {
  . "$STEP_ENV"
  "$PY" "$REPO/bench/facts.py" --json "$OUTDIR/facts.json"
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi || true; fi
  for t in cmake ninja c++ gcc; do command -v $t >/dev/null && echo "$t: $(command -v $t): $($t --version | head -n 1)"; done
  [ -n "$NVCC" ] && "$NVCC" --version | tail -n 2
  return 0
}

check_module() {  # check_module REQUIRE_CUDA: import fastsim from outside the source tree, report its _C
  (cd "$WORK" && "$PY" - "$1" <<'EOF'
import sys
import fastsim, fastsim.native as n
print(f"fastsim {fastsim.__version__} from {fastsim.__file__}; _C built: {n.available()}; CUDA kernels: {n.cuda_compiled()}")
if not n.available():
    sys.exit(f"fastsim._C did not import: {n.IMPORT_ERROR}")
if sys.argv[1] == "1" and not n.cuda_compiled():
    sys.exit("FASTSIM_CUDA=ON but fastsim._C has no CUDA kernels")
EOF
  )
}

cmake_build() {  # no pip: build _C with cmake and stage the package (fastsim/ + kernels/ as fastsim.kernels)
  local gen=() pyb
  command -v ninja >/dev/null && gen=(-G Ninja)
  pyb=$("$PY" -m pybind11 --cmakedir 2>/dev/null)
  cmake -S "$REPO" -B "$WORK/cmake-build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" \
        ${pyb:+-Dpybind11_DIR="$pyb"} && cmake --build "$WORK/cmake-build" -j "$(nproc)" || return 1
  mkdir -p "$WORK/stage"
  cp -r "$REPO/fastsim" "$WORK/stage/" && rm -rf "$WORK/stage/fastsim/kernels" && cp -r "$REPO/kernels" "$WORK/stage/fastsim/kernels"
  cp "$WORK"/cmake-build/_C*.so "$WORK/stage/fastsim/" || return 1
  echo "export PYTHONPATH=\"$WORK/stage\${PYTHONPATH:+:\$PYTHONPATH}\"" >> "$STEP_ENV"
  echo "staged the package in $WORK/stage (PYTHONPATH for the later steps)"
}

step_build() {
  . "$STEP_ENV"
  local want_cuda=0 rc log="$OUTDIR/build.log"
  if [ -n "$NVCC" ]; then
    export FASTSIM_CUDA=ON CUDACXX="$NVCC" PATH="$(dirname "$NVCC"):$PATH"
    want_cuda=1
    echo "building with FASTSIM_CUDA=ON, CUDACXX=$NVCC"
  else
    export FASTSIM_CUDA=OFF
    echo "!!! no nvcc found (PATH, /usr/local/cuda*/bin, pip's nvidia wheels): building WITHOUT the CUDA kernels (FASTSIM_CUDA=OFF);"
    echo "!!! the CUDA top-k and overlap kernels, their tests and the sanitizer step cannot run"
  fi
  local t0=$(date +%s)
  if [ "$MODE" = dry ]; then
    # here the editable install is shared with other work: build a wheel elsewhere, check it, install nothing
    "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/wheel" \
      --config-settings=build-dir="$WORK/build" "$REPO" > "$log" 2>&1
    rc=$?
  elif [ -z "${FASTSIM_NO_PIP:-}" ] && "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -v --no-build-isolation --no-deps -e "$REPO" > "$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && grep -qiE "editable|PEP 660|build_editable" "$log"; then
      echo "!!! the editable install failed (an old pip?): installing a regular copy instead (log appended)"
      "$PY" -m pip install -v --no-build-isolation --no-deps "$REPO" >> "$log" 2>&1
      rc=$?
    fi
  else
    echo "!!! '$PY -m pip' is not available: building with cmake directly"
    cmake_build > "$log" 2>&1
    rc=$?
  fi
  echo "build: rc=$rc in $(( $(date +%s) - t0 )) s; full log: $log"
  grep -E "Looking for a CUDA compiler|CUDA compiler identification|fastsim: CUDA kernels|Building CUDA|error:|Error|FAILED" "$log" | head -n 25
  echo "--- last lines of the build log"
  tail -n 12 "$log"
  [ $rc -eq 0 ] || return $rc
  . "$STEP_ENV"  # (the cmake path adds the staged package to PYTHONPATH)
  if [ "$MODE" = dry ]; then
    local whl
    whl=$(ls "$WORK"/wheel/fastsim-*.whl 2>/dev/null | head -n 1)
    [ -n "$whl" ] || { echo "no wheel was built"; return 1; }
    mkdir -p "$WORK/wheelcheck" && (cd "$WORK/wheelcheck" && "$PY" -m zipfile -e "$whl" . ) || return 1
    (cd "$WORK/wheelcheck/fastsim" && "$PY" -c "
import _C, sys
print('built wheel', sys.argv[1].rsplit('/', 1)[-1], '- its _C: CUDA kernels compiled:', bool(_C.cuda_compiled()))
sys.exit(0 if (bool(_C.cuda_compiled()) or sys.argv[2] == '0') else 'FASTSIM_CUDA=ON but the wheel has no CUDA kernels')
" "$whl" "$want_cuda") || return 1
    echo "dry run: the wheel was built and checked, not installed; the steps below use this machine's fastsim:"
    check_module 0
  else
    check_module "$want_cuda"
  fi
}

junit_summary() {  # junit_summary FILE: one line of counts, then every failure's name and message
  "$PY" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as exc:
    sys.exit(f"no junit summary ({exc})")
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
t = sum(float(s.get("time", 0)) for s in suites)
print(f"junit: {c['tests']} tests, {c['tests'] - c['failures'] - c['errors'] - c['skipped']} passed, "
      f"{c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped in {t:.0f} s ({sys.argv[1]})")
for case in root.iter("testcase"):
    for bad in list(case.findall("failure")) + list(case.findall("error")):
        print(f"  {bad.tag.upper()}: {case.get('classname')}::{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:200] if bad.get('message') else ''}")
EOF
}

step_tests() {
  . "$STEP_ENV"
  local rc=0 r
  export FASTSIM_TEST_TIMEOUT=${FASTSIM_TEST_TIMEOUT:-60}
  cd "$REPO/tests" || return 1  # not the repo root: its source fastsim/ must not shadow the installed one
  if [ "$MODE" = dry ]; then
    echo "--- collection with soundfile, matplotlib, transformers and tqdm hidden (optional: must skip, not fail)"
    PYTHONPATH="$REPO/bench/simulate${PYTHONPATH:+:$PYTHONPATH}" FASTSIM_BLOCK_IMPORTS=soundfile,matplotlib,transformers,tqdm \
      "$PY" -m pytest --collect-only -q -p no:cacheprovider . > "$OUTDIR/collect-blocked.log" 2>&1
    r=$?
    grep -vE "^tests/.*::" "$OUTDIR/collect-blocked.log" | grep -v '^$' | tail -n 15
    echo "collection with optional packages hidden: rc=$r"
    [ $r -eq 0 ] || rc=$r
    echo "--- the GPU-marked tests (skipped here: no GPU), with soundfile and matplotlib hidden"
    PYTHONPATH="$REPO/bench/simulate${PYTHONPATH:+:$PYTHONPATH}" FASTSIM_BLOCK_IMPORTS=$FASTSIM_SIMULATE_ABSENT \
      "$PY" -m pytest -m gpu -q -rfE -p no:cacheprovider --junitxml="$OUTDIR/junit-gpu.xml" . 2>&1 | tail -n 5
    r=${PIPESTATUS[0]}
    [ $r -eq 0 ] || rc=$r
    junit_summary "$OUTDIR/junit-gpu.xml"
    echo "--- a small real subset, FASTSIM_TEST_TIMEOUT=$FASTSIM_TEST_TIMEOUT"
    # shellcheck disable=SC2086
    "$PY" -m pytest -q -rfE -p no:cacheprovider --junitxml="$OUTDIR/junit-subset.xml" ${FASTSIM_DRY_TESTS:-test_errors.py test_native.py} ${FASTSIM_TESTS_EXTRA:-}
    r=$?
    [ $r -eq 0 ] || rc=$r
    junit_summary "$OUTDIR/junit-subset.xml"
    return $rc
  fi
  # SIGINT 20 s before the step's end: pytest stops, prints its summary and writes the junit XML
  local soft=$(( FASTSIM_BENCH_DEADLINE - $(date +%s) - 15 ))
  [ $soft -lt 10 ] && soft=10
  echo "pytest -m gpu, FASTSIM_TEST_TIMEOUT=${FASTSIM_TEST_TIMEOUT}s per test, interrupted after ${soft}s"
  # shellcheck disable=SC2086
  timeout -s INT -k 15 "$soft" "$PY" -m pytest -m gpu -q -rfE -p no:cacheprovider --durations=15 \
    --junitxml="$OUTDIR/junit-gpu.xml" . ${FASTSIM_TESTS_EXTRA:-}
  rc=$?
  [ $rc -eq 124 ] && echo "!!! pytest was interrupted at the step's time limit: the tests after that point did not run"
  junit_summary "$OUTDIR/junit-gpu.xml"
  return $rc
}

bench_script() {  # bench_script SCRIPT [ARGS]: the device arguments, or the small CPU ones in a dry run
  . "$STEP_ENV"
  local script=$1
  shift
  if [ "$MODE" = dry ]; then
    PYTHONPATH="$REPO/bench/simulate${PYTHONPATH:+:$PYTHONPATH}" FASTSIM_BLOCK_IMPORTS=$FASTSIM_SIMULATE_ABSENT \
      "$PY" "$REPO/bench/$script" --device cpu --small "$@"
  else
    "$PY" "$REPO/bench/$script" "$@"
  fi
}
step_bench() { bench_script gpu.py; }
step_analyze() { bench_script analyze_gpu.py; }
step_mimic() { bench_script mimic_gpu.py; }
step_prune() { bench_script prune_gpu.py; }

step_sanitizer() {
  . "$STEP_ENV"
  local rc=0 r tool left limit
  if [ "$MODE" = dry ]; then
    echo "--- the driver's checks on the CPU kernels (the same checks the sanitizer runs on CUDA)"
    "$PY" "$REPO/bench/sanitize_native.py" --device cpu || rc=$?
    for tool in memcheck racecheck synccheck; do echo "compute-sanitizer $tool: skipped: no GPU"; done
    return $rc
  fi
  echo "--- the driver without the sanitizer (results against torch)"
  "$PY" "$REPO/bench/sanitize_native.py" || rc=$?
  if [ -z "$SANITIZER" ]; then
    echo "compute-sanitizer: skipped: not found (PATH, next to nvcc, /usr/local/cuda*/bin, /usr/local/cuda*/compute-sanitizer)"
    return $rc
  fi
  "$SANITIZER" --version 2>&1 | tail -n 1
  local opts=(--error-exitcode 9 --print-limit 20)
  # torch's own CUDA API calls may return errors it handles; they are not what this step looks for
  "$SANITIZER" --help 2>&1 | grep -q -- "--report-api-errors" && opts+=(--report-api-errors no)
  for tool in memcheck racecheck synccheck; do
    left=$(( FASTSIM_BENCH_DEADLINE - $(date +%s) ))
    limit=$(( left < 50 ? left : 50 ))
    if [ $limit -lt 20 ]; then echo "compute-sanitizer $tool: skipped, ${left}s left in this step"; continue; fi
    echo "--- compute-sanitizer --tool $tool ${opts[*]} (limit ${limit}s)"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 5 "$limit" "$SANITIZER" --tool "$tool" "${opts[@]}" \
      "$PY" "$REPO/bench/sanitize_native.py" 2>&1 | tail -n 40
    r=${PIPESTATUS[0]}
    case $r in
      0) echo "compute-sanitizer $tool: clean" ;;
      9) echo "compute-sanitizer $tool: ERRORS REPORTED (above)"; rc=9 ;;
      124|137) echo "compute-sanitizer $tool: timed out after ${limit}s"; rc=$r ;;
      *) echo "compute-sanitizer $tool: rc=$r"; rc=$r ;;
    esac
  done
  return $rc
}

export -f step_facts step_build step_tests step_bench step_analyze step_mimic step_prune step_sanitizer
export -f check_module cmake_build junit_summary bench_script

# name, limit on the GPU machine, limit in a dry run, minimum (a step with less left is skipped)
STEPS=(facts build tests bench sanitizer analyze mimic prune)
declare -A LIMIT=([facts]=45 [build]=240 [tests]=170 [bench]=200 [sanitizer]=110 [analyze]=60 [mimic]=75 [prune]=60)
declare -A LIMIT_DRY=([facts]=60 [build]=300 [tests]=240 [bench]=300 [sanitizer]=60 [analyze]=120 [mimic]=120 [prune]=120)
declare -A MIN=([facts]=5 [build]=30 [tests]=30 [bench]=60 [sanitizer]=20 [analyze]=20 [mimic]=20 [prune]=20)

selected() {
  local name=$1
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 1; fi
  if [ -n "$SKIP" ] && [[ ",$SKIP," == *",$name,"* ]]; then return 1; fi
  return 0
}

RECAP=()
FAILED=0
i=0
for name in "${STEPS[@]}"; do
  i=$((i + 1))
  if ! selected "$name"; then
    RECAP+=("| $name | - | - | not selected |")
    continue
  fi
  reserve=0
  after=0
  for other in "${STEPS[@]}"; do
    if [ "$after" = 1 ] && selected "$other"; then reserve=$((reserve + MIN[$other])); fi
    [ "$other" = "$name" ] && after=1
  done
  now=$(date +%s)
  left=$((DEADLINE_AT - now))
  if [ "$MODE" = dry ]; then limit=${LIMIT_DRY[$name]}; else limit=${LIMIT[$name]}; fi
  # what is left after keeping the later steps' minimums, but never less than this step's own
  # minimum while the run has that much left (earlier steps come first)
  allowed=$((left - reserve))
  [ $allowed -lt ${MIN[$name]} ] && allowed=$((left < MIN[$name] ? left : MIN[$name]))
  [ "$name" = facts ] && allowed=$left  # a few seconds, and what every later step is read against
  [ $allowed -gt $limit ] && allowed=$limit
  if [ $allowed -lt ${MIN[$name]} ]; then
    echo
    echo "=== [$i/${#STEPS[@]}] $name: SKIPPED, ${left}s left before the deadline (needs ${MIN[$name]}s; ${reserve}s kept for later steps)"
    RECAP+=("| $name | skipped | 0 | ${left}s left before the deadline |")
    FAILED=$((FAILED + 1))
    continue
  fi
  log="$OUTDIR/steps/$i-$name.log"
  echo
  echo "=== [$i/${#STEPS[@]}] $name (limit ${allowed}s; ${left}s left in the run) $(date '+%H:%M:%S')"
  export FASTSIM_BENCH_DEADLINE=$((now + allowed - 5))
  timeout -k 10 "$allowed" bash -c "step_$name" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  took=$(( $(date +%s) - now ))
  case $rc in
    0) status="ok" ;;
    124|137) status="TIMED OUT at ${allowed}s (output so far above and in steps/$i-$name.log)" ;;
    *) status="FAILED (rc=$rc)" ;;
  esac
  if [ $rc -eq 3 ] && [[ " bench analyze mimic prune " == *" $name "* ]]; then
    status="INCOMPLETE: rows skipped for the deadline (see the notes)"  # benchlib.finish()
  fi
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
  echo "=== [$i/${#STEPS[@]}] $name: $status in ${took}s"
  RECAP+=("| $name | $rc | $took | $status |")
  printf '{"step": "%s", "rc": %d, "seconds": %d, "limit": %d}\n' "$name" "$rc" "$took" "$allowed" >> "$OUTDIR/results.jsonl"
done

echo
echo "## every table row (also in $OUTDIR/summary.md and results.jsonl)"
[ -f "$OUTDIR/summary.md" ] && grep -v '^$' "$OUTDIR/summary.md"
{
  echo
  echo "## recap: bench/device.sh $MODE run, $(date '+%Y-%m-%d %H:%M'), $(( $(date +%s) - RUN_START ))s of the ${DEADLINE}s deadline"
  echo
  echo "| step | rc | seconds | status |"
  echo "|---|---:|---:|---|"
  printf '%s\n' "${RECAP[@]}"
} | tee "$OUTDIR/steps.md"
if [ -f "$OUTDIR/junit-gpu.xml" ]; then junit_summary "$OUTDIR/junit-gpu.xml" | head -n 30; fi
echo "files in $OUTDIR: $(cd "$OUTDIR" && find . -type f | sort | tr '\n' ' ')"
[ -n "${FASTSIM_KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
RC=$(( FAILED > 0 ? 1 : 0 ))
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit $RC
