# Sourced by the prepared GPU checks (run_gpu_checks.sh, run_gpu_speed.sh): the repository root
# as working folder, fairseq importable (from the carried .whl/ when the image lacks it), the
# carried ablation data-bin copied to $WORK/data-bin, and the machine described in $OUT/machine.txt.
# $1: the calling script's name, for its error lines.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-runs/gpu-out}"
WORK="${WORK:-/tmp/fastdiss-gpu}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT" "$WORK"

if ! python3 -c "import fairseq" 2>/dev/null; then
    [ -d .whl ] || { echo "$1: error: no .whl/ (run recipes/gpu/fetch_wheels.sh here and carry .whl)" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -f runs/ablation/data-bin/prepare.json ] || {
    echo "$1: error: runs/ablation/data-bin is missing (carry it; python recipes/ablation.py prepares it)" >&2; exit 2; }
mkdir -p "$WORK/data-bin" && cp -r runs/ablation/data-bin/. "$WORK/data-bin/"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import torch, fairseq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'fairseq', fairseq.__version__)"; } \
    | tee "$OUT/machine.txt"
