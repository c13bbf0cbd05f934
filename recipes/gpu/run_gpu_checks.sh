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
# (environment): UPDATES (from-scratch updates per variant), TRAIN_MINUTES (their cap), JOBS
# (trainings at once on the one GPU, then processes sharing the decodes), MAX_TOKENS, PRECISION,
# STEPS, VARIANTS. Sized (an
# estimate: it has never run as it is on a GPU) at about 1 minute of set-up, 4 of training and 3
# of about 36 decodes, 4 processes sharing them (recipes/generate_many.py). The first lease
# (run_gpu_lease.sh) measured 30-60 s of start-up a decode process and about 5.5 updates/s for
# each of four IWSLT-sized trainings side by side. Without a GPU (DEVICE=cpu and tiny UPDATES) it is the same
# pipeline: the test of the install path on Python 3.12.
set -euo pipefail
UPDATES="${UPDATES:-2000}"
TRAIN_MINUTES="${TRAIN_MINUTES:-4}"  # each variant stops at UPDATES or this, whichever first (all 4 at once)
PRECISION="${PRECISION:-high}"  # float32 matrix products as TF32, every training and decode alike
JOBS="${JOBS:-4}"  # trainings at once, then decodes at once
MAX_TOKENS="${MAX_TOKENS:-8192}"
ARCH="${ARCH:-fastdiss_iwslt_de_en}"
STEPS="${STEPS:-1 2 5 10 20 50 100}"
# the variants trained (ablation.py --variants): "baseline scp_mans" gives each of the two
# trainings about twice the GPU share in a lease of its own (first lease: about 5.5 updates/s
# each with four trainings side by side; 4,000 updates would be about 12 minutes)
VARIANTS="${VARIANTS:-baseline scp mans scp_mans}"
# shellcheck source=recipes/gpu/gpu_env.sh
source "$(dirname "$0")/gpu_env.sh" run_gpu_checks

# shellcheck disable=SC2086  # STEPS and VARIANTS are lists
PYTHONUNBUFFERED=1 python3 recipes/ablation.py --device "$DEVICE" --arch "$ARCH" --max-tokens "$MAX_TOKENS" \
    --from-scratch-updates "$UPDATES" --from-scratch-minutes "$TRAIN_MINUTES" --fp32-matmul-precision "$PRECISION" \
    --t-min 0 --curve-every "$((UPDATES / 2))" --jobs "$JOBS" --seeds 1 --no-sweep --variants $VARIANTS \
    --recompute-max-steps 5 --steps $STEPS --work "$WORK" --out "$OUT" 2>&1 | tee "$OUT/ablation_gpu.log"
tail -n 4 "$WORK"/baseline.seed1.log > "$OUT/train_tail.txt" || true
