#!/usr/bin/env bash
# Summarization on the shared Debian corpus (../shared/data/debdesc-summ): a package's long
# description -> its one-line synopsis. Sized for a 2-core CPU: FastDiSS (SCP + MANS),
# train -> average -> decode at 1-50 steps -> ROUGE.
#
#   bash recipes/debdesc_summ_cpu.sh                # about 40 minutes on 2 cores
#   SMOKE=1 bash recipes/debdesc_summ_cpu.sh        # a one-minute check of the whole pipeline
#
# Settings (CPU scale; recipes/gigaword.sh is the published-scale summarization recipe):
#   model      fastdiss_small (3+3 layers, d 256, ffn 512, 4 heads), pre-norm, tied
#              embeddings, noise scale F = 4, uniform source copy into the denoiser input; the
#              synopsis length is predicted directly (it hardly depends on the description's)
#   data       58k training pairs (56 -> 7 words on average), Moses tokens (English),
#              8,000 joint BPE merges, cased
#   optimizer  Adam (0.9, 0.98), lr 2.5e-3, inverse_sqrt, 200 warmup updates from 1e-7,
#              no weight decay, clip-norm 1.0
#   batch      3,072 tokens per update on one device (NGPU=0: the CPU)
#   length     TRAIN_MINUTES=25 minutes of training (--stop-time-hours), at most 100k updates;
#              a checkpoint every 25 updates, the last 5 averaged
#   loss       no dropout, label smoothing 0.1, --scp --mans
#   decoding   length beam 3, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     ROUGE-1/2/L F1 (rouge-score, stemming); the first 7 words of each description
#              score 26.5/11.2/23.5 on the test split
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=debdesc_summ_cpu KIND=summarization SRC=src TGT=tgt MOSES_TGT=en
DATASET=debdesc-summ-cpu RAW_LAYOUT=generic RAW_DEFAULT="$ROOT/../shared/data/debdesc-summ"
PREPARE=prepare_parallel.py
PREPARE_FIXED=(--src src --tgt tgt --src-moses-lang en --tgt-moses-lang en --bpe-merges 8000)
ARCH=fastdiss_small
MODEL_ARGS="--noise-scale 4 --source-copy-input --encoder-normalize-before --decoder-normalize-before"
LR=2.5e-3 WARMUP=200 MAX_TOKENS=3072 REF_GPUS=1 MAX_UPDATE=100000
DROPOUT=0.0 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.0 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=25 LOG_INTERVAL=10 VALIDATE=0 LENGTH_BEAM=3 NOISE_SAMPLES=1
: "${NGPU:=0}" "${TRAIN_MINUTES:=25}"

run_recipe
