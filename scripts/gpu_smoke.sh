#!/usr/bin/env bash
# GPU smoke run, for a machine with an NVIDIA GPU and its driver: installs from requirements.lock into a venv, runs the
# CUDA-marked tests, then the `slpt bench` commands on the GPU, and prints their figures (also kept under OUT).
# About 6-8 minutes. Usage: scripts/gpu_smoke.sh [OUT]   (default runs/gpu_smoke)
# SLPT_SMOKE_PYTHON=/path/python uses an interpreter that already has the lock installed instead of a new venv;
# PYTHON (default python3.11) makes the venv otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_smoke}
mkdir -p "$out"

if [ -n "${SLPT_SMOKE_PYTHON:-}" ]; then
  python=$SLPT_SMOKE_PYTHON
else
  [ -x .venv-gpu/bin/python ] || "${PYTHON:-python3.11}" -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
  .venv-gpu/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  python=.venv-gpu/bin/python
fi
slpt="$python -m slpt"
export PYTHONUNBUFFERED=1

"$python" - <<'PY' | tee "$out/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PY

"$python" -m pytest -q -m cuda -rs tests/models/test_cuda.py tests/sim/test_simulate_cuda.py 2>&1 | tee "$out/cuda_tests.txt"
timeout 150 $slpt bench infer --device cuda --repeats 3 --out "$out/bench_infer.md"
timeout 100 $slpt bench train --device cuda --steps 20 --out "$out/bench_train.md"
timeout 100 $slpt bench scoring --device cuda --volumes 20 --out "$out/bench_scoring.md"
echo "figures in $out/"
