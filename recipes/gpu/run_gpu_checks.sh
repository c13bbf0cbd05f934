#!/usr/bin/env bash
# The prepared GPU check (issue 4's from-scratch ablation with the IWSLT-sized model), one
# command of under 10 minutes on one H200, for a session that is lent the GPU machine:
#
#   here, once:   bash recipes/gpu/fetch_wheels.sh     (needs PyPI; writes .whl/)
#                 the ablation's data-bin must exist: python recipes/ablation.py prepares it
#                 (runs/ablation/data-bin), or any earlier run left it there
#   on the GPU:   run(command="bash recipes/gpu/run_gpu_checks.sh",
#                     carry=[".whl", "runs/ablation/data-bin"], timeout_s=600)
#
# The report (ablation_gpu.{md,json,png}) and the logs come back under $OUT. Budget knobs
# (environment): UPDATES (from-scratch updates per variant), JOBS (trainings at once on the
# one GPU), MAX_TOKENS, STEPS. Without a GPU (DEVICE=cpu and tiny UPDATES) it is the same
# pipeline: the test of the install path on Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-runs/gpu-out}"
WORK="${WORK:-/tmp/fastdiss-gpu}"
DEVICE="${DEVICE:-cuda}"
UPDATES="${UPDATES:-2000}"
JOBS="${JOBS:-4}"
MAX_TOKENS="${MAX_TOKENS:-8192}"
ARCH="${ARCH:-fastdiss_iwslt_de_en}"
STEPS="${STEPS:-1 2 5 10 20 50 100}"
mkdir -p "$OUT" "$WORK"

if ! python3 -c "import fairseq" 2>/dev/null; then
    [ -d .whl ] || { echo "run_gpu_checks: error: no .whl/ (run recipes/gpu/fetch_wheels.sh here and carry .whl)" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -f runs/ablation/data-bin/prepare.json ] || {
    echo "run_gpu_checks: error: runs/ablation/data-bin is missing (carry it; python recipes/ablation.py prepares it)" >&2; exit 2; }
mkdir -p "$WORK/data-bin" && cp -r runs/ablation/data-bin/. "$WORK/data-bin/"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import torch, fairseq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'fairseq', fairseq.__version__)"; } \
    | tee "$OUT/machine.txt"

# shellcheck disable=SC2086  # STEPS is a list of numbers
PYTHONUNBUFFERED=1 python3 recipes/ablation.py --device "$DEVICE" --arch "$ARCH" --max-tokens "$MAX_TOKENS" \
    --from-scratch-updates "$UPDATES" --t-min 0 --curve-every "$((UPDATES / 2))" --jobs "$JOBS" --seeds 1 --no-sweep \
    --recompute-max-steps 5 --steps $STEPS --work "$WORK" --out "$OUT" 2>&1 | tee "$OUT/ablation_gpu.log"
tail -n 4 "$WORK"/baseline.seed1.log > "$OUT/train_tail.txt" || true
