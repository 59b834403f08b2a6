#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there): install fastsim offline, run the
# GPU-marked tests, then the GPU timings, and print short tables. Usage: bash bench/device.sh
# Each step has its own time limit and a failing step does not stop the others, so one run of
# the (15-minute) device budget reports on everything; the total stays under ~9.5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

step() {  # step SECONDS NAME COMMAND...: run with a limit, report failure, go on
  local limit=$1 name=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - start)) s"
}

pip install --no-build-isolation --no-deps -e . -q 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import fastsim.native as n; print('CUDA kernels compiled:', n.cuda_compiled())"
step 170 "GPU-marked tests" bash -c "python -m pytest -q -m gpu -rfE tests -s -p no:cacheprovider 2>&1 | tail -n 80"
step 170 "metrics and kNN targets (bench/gpu.py)" python bench/gpu.py
step 60 "analysis throughput (bench/analyze_gpu.py)" python bench/analyze_gpu.py
step 60 "fused mimic block (bench/mimic_gpu.py)" python bench/mimic_gpu.py
step 60 "skip_layers memory and time (bench/prune_gpu.py)" python bench/prune_gpu.py
