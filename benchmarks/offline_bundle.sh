#!/usr/bin/env bash
# Bundle what a GPU machine without internet needs beside its own torch, Lightning, torchmetrics and TensorBoard: the
# other dependencies' packages and MNIST / Fashion-MNIST as gzipped IDX files, into one folder (about 45 MB) to copy
# there with the checkout:
#   MNIST_ROOT=<folder with MNIST/raw> bash benchmarks/offline_bundle.sh [bundle folder, default offline_bundle]
# On the GPU machine, benchmarks/gpu.sh installs from it and reads the data from it:
#   GPU_BUNDLE=offline_bundle bash benchmarks/gpu.sh gpu_results
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-offline_bundle}
mkdir -p "$bundle/wheels" "$bundle/data/MNIST/raw" "$bundle/data/fashion-mnist"
# The pure-Python runtime dependencies a machine with torch and Lightning may lack (pyproject.toml), with their own
# (numpy, scipy and matplotlib, compiled for its Python, must be there already).
python -m pip download --quiet --dest "$bundle/wheels" \
  "hydra-core>=1.3.2" "omegaconf>=2.3" "hydra-joblib-launcher>=1.2" "hydra-submitit-launcher>=1.2" "opacus>=1.5" \
  "filelock>=3.12" "rich>=13" --no-deps
python -m pip download --quiet --dest "$bundle/wheels" antlr4-python3-runtime==4.9.3 joblib submitit cloudpickle \
  typing_extensions opt_einsum markdown-it-py mdurl pygments --no-deps
mnist=${MNIST_ROOT:-data}/MNIST/raw
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$mnist/$name.gz" ]; then cp "$mnist/$name.gz" "$bundle/data/MNIST/raw/"
  else gzip -c "$mnist/$name" > "$bundle/data/MNIST/raw/$name.gz"; fi
done
fashion=${FASHION_MNIST_ROOT:-/usr/share/datasets/fashion-mnist}
if [ -d "$fashion" ]; then cp "$fashion"/*.gz "$bundle/data/fashion-mnist/"; else echo "no Fashion-MNIST at $fashion: left out"; fi
du -sh "$bundle"
