#!/usr/bin/env bash
# One-time setup on a fresh machine: Fashion-MNIST (Debian package), pinned
# PyTorch, build tools, then this package with its compiled kernels (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

if [ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "== installing dataset-fashion-mnist (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

echo "== installing pinned torch and build tools (pip)"
# torch is pinned: an unpinned one pulls several GB; this pair lies on local disk here.
$PY -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
$PY -m pip install -q --disable-pip-version-check -r requirements-build.txt

echo "== building diffaug_fast (CPU + CUDA kernels when nvcc is found)"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export CMAKE_BUILD_PARALLEL_LEVEL=${MAX_JOBS:-2}
$PY -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
$PY -c "import diffaug_fast; assert diffaug_fast.build_info()['extension']['loaded'], 'extension did not load'"
echo "== done: try 'diffaug-fast info'"
