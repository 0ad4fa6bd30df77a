#!/usr/bin/env bash
# Run every GPU check and timing once on a GPU machine; writes gpu.md, gpu.json and gpu.log into the folder given.
#   MNIST_ROOT=<folder with MNIST/raw> bash benchmarks/gpu.sh [out folder] [benchmarks/gpu.py options]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results}
shift || true
mkdir -p "$out"
# A machine without internet: GPU_BUNDLE names the folder benchmarks/offline_bundle.sh wrote (packages and data).
if [ -n "${GPU_BUNDLE:-}" ]; then
  python -m pip install --quiet --no-index --find-links "$GPU_BUNDLE/wheels" hydra-core omegaconf opacus \
    hydra-joblib-launcher hydra-submitit-launcher filelock rich > "$out/install.log" 2>&1
  python -m pip install --quiet --no-deps -e . >> "$out/install.log" 2>&1
  export MNIST_ROOT="$GPU_BUNDLE/data" FASHION_MNIST_ROOT="$GPU_BUNDLE/data/fashion-mnist"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/nvidia-smi.txt" 2>&1
python benchmarks/gpu.py --out "$out" "$@"
