#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there): install fastsim offline, run the
# GPU-marked tests, then the GPU timings, and print a short table. Usage: bash bench/device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip install --no-build-isolation --no-deps -e . -q 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import fastsim.native as n; print('CUDA kernels compiled:', n.cuda_compiled())"
python -m pytest -q -m gpu -rA tests -s 2>&1 | tail -n 60
python bench/gpu.py
python bench/analyze_gpu.py
python bench/mimic_gpu.py
python bench/prune_gpu.py
