#!/usr/bin/env bash
# Fetch the pure-Python wheels that bench/gpu.py can use on the GPU machine, which has no network,
# into bench/wheels/ (ignored by git). Run it here, then pass "bench/wheels" in the device run's
# carry list. Today: pytorch-cka 1.1.3 (its cka_from_features is an anchor of issue 11; 16 KB).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
PY=$(command -v python3 || command -v python)
"$PY" -m pip download --no-deps --only-binary=:all: -d wheels "pytorch-cka==1.1.3"
ls -l wheels
