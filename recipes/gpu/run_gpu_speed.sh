#!/usr/bin/env bash
# The prepared GPU check of issue 5: recipes/speed_benchmark.py on one GPU, one command sized for
# about 7 minutes on one H200 (3 of training, 16 decodes; an estimate, never run on a GPU yet),
# for a session that is lent the GPU machine:
#
#   here, once:   bash recipes/gpu/fetch_wheels.sh     (needs PyPI; writes .whl/)
#                 the ablation's data-bin must exist (python recipes/ablation.py prepares it)
#   on the GPU:   run(command="bash recipes/gpu/run_gpu_speed.sh",
#                     carry=[".whl", "runs/ablation/data-bin"], timeout_s=600)
#
# FastDiSS (SCP+MANS), fairseq's transformer and fairseq's cmlm_transformer, all IWSLT-sized,
# train from scratch side by side on the GPU with the same batch, each until UPDATES updates or
# TRAIN_MINUTES minutes, whichever comes first (the report gives every model's updates and its
# training target tokens/s); then every configuration of the CPU table decodes the full
# de-en/test with the same batch, one process a model (--one-process-per-model, below). The
# report (speed_gpu.{md,json,png}) and the logs come back under $OUT. Without a GPU (DEVICE=cpu, SIZE=small and tiny UPDATES) it is
# the same pipeline (tests/test_speed_benchmark.py). Knobs (environment): UPDATES, TRAIN_MINUTES,
# MAX_TOKENS, SIZE, BATCH, PRECISION, REPEATS.
# Measured in the first lease (twentieth session, run_gpu_lease.sh): each decode process cost
# 30-60 s on that machine before its first sentence, so the rows run one process a model
# (--one-process-per-model); still an estimate, since that has not run on a GPU yet.
set -euo pipefail
UPDATES="${UPDATES:-3000}"
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
MAX_TOKENS="${MAX_TOKENS:-8192}"
SIZE="${SIZE:-iwslt}"
BATCH="${BATCH:-100}"
PRECISION="${PRECISION:-high}"  # float32 matrix products as TF32, every model alike (training and decoding)
REPEATS="${REPEATS:-0}"  # timed runs after a warm-up run; 0: the one run is timed (GPU minutes are few)
# shellcheck source=recipes/gpu/gpu_env.sh
source "$(dirname "$0")/gpu_env.sh" run_gpu_speed

PYTHONUNBUFFERED=1 python3 recipes/speed_benchmark.py --device "$DEVICE" --size "$SIZE" --max-tokens "$MAX_TOKENS" \
    --train-fastdiss --train-updates "$UPDATES" --train-minutes "$TRAIN_MINUTES" --train-side-by-side \
    --fp32-matmul-precision "$PRECISION" --batch-size "$BATCH" --repeats "$REPEATS" --one-process-per-model --work "$WORK" --out "$OUT" 2>&1 | tee "$OUT/speed_gpu.log"
for model in fastdiss peer_ar peer_cmlm; do
    tail -n 3 "$WORK/$model.log" > "$OUT/train_tail.$model.txt" || true
done
