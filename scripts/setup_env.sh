#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with FastDiSS, fairseq and a CPU build of torch.
# Usage: bash scripts/setup_env.sh [VENV_DIR]   (default: .venv in the repository root)
#
# torch is installed first and pinned to 2.13.0: on this machine kind that is a CPU build on
# local disk, whereas an unpinned `torch` requirement would download a multi-GB CUDA build.
# On a GPU machine, install the torch you need into the venv before running this script;
# an existing torch is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import fastdiss_fairseq, fairseq, sacremoses, pytest" 2>/dev/null; then
    "${PIP[@]}" install --upgrade pip wheel setuptools
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        "${PIP[@]}" install "torch==2.13.0"
    fi
    "${PIP[@]}" install -e "$ROOT[test]"
fi
"$VENV/bin/python" -c "import torch, fairseq, fastdiss_fairseq; print(f'env ready: torch {torch.__version__}, fairseq {fairseq.__version__}, fastdiss {fastdiss_fairseq.__version__}')"
