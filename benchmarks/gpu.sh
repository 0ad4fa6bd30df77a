#!/usr/bin/env bash
# Run every GPU check and timing once on a GPU machine; writes gpu.md, gpu.json and gpu.log into the folder given.
#   MNIST_ROOT=<folder with MNIST/raw> bash benchmarks/gpu.sh [out folder] [benchmarks/gpu.py options]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results}
shift || true
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/nvidia-smi.txt" 2>&1
python benchmarks/gpu.py --out "$out" "$@"
