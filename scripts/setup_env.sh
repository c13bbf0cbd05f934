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

# Before any download: fairseq installs from PyPI on Python 3.11 and 3.12 only (setup.py says why).
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
    echo "setup_env.sh: error: Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') is not supported: FastDiSS needs Python 3.11 or 3.12 (set PYTHON=python3.11)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# The install runs again whenever setup.py changed since the last one (a requirement added later
# reaches an existing venv) or the plugin does not import from outside the clone (from its root,
# `import fastdiss_fairseq` would find the folder whether it is installed or not).
STAMP="$VENV/.fastdiss-setup-py.sha256"
WANT="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] \
        || ! (cd / && "$VENV/bin/python" -c "import fastdiss_fairseq, fairseq, sacremoses, pytest") 2>/dev/null; then
    "${PIP[@]}" install --upgrade pip wheel setuptools
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        "${PIP[@]}" install "torch==2.13.0"
    fi
    # The venv's torch stays as it is: fairseq pulls torchaudio, whose newer releases ask for a
    # newer torch, and pip would replace the installed build with PyPI's default, a CUDA build.
    TORCH_PIN="$(mktemp)"
    "$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$TORCH_PIN"
    "${PIP[@]}" install -c "$TORCH_PIN" -e "$ROOT[test]"
    rm -f "$TORCH_PIN"
    echo "$WANT" > "$STAMP"
fi
"$VENV/bin/python" -c "import torch, fairseq, fastdiss_fairseq; print(f'env ready: torch {torch.__version__}, fairseq {fairseq.__version__}, fastdiss {fastdiss_fairseq.__version__}')"
