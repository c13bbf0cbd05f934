#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels the GPU machine lacks (its image has Python 3.12
# with CUDA torch, numpy, sacrebleu, matplotlib... but no fairseq and nothing fairseq alone
# needs), into .whl/ at the repository root (git-ignored). run_gpu_checks.sh installs them there
# with no network. Pure-Python packages published only as source (antlr4) are built here.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYVER="${PYVER:-3.12}"  # the GPU image's Python; 3.11 for a test of the install path here
DEST="${DEST:-$ROOT/.whl}"
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" \
    ve-fairseq==0.12.3 hydra-core==1.3.2 omegaconf==2.3.0 bitarray==3.12.3 sacremoses==0.2.0 tensorboardX==2.6.5
python3 -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$DEST"
ls -1 "$DEST"
du -sh "$DEST"
