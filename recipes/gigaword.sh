#!/usr/bin/env bash
# Gigaword headline generation (Rush et al., 2015; 3.8M training pairs, 1,951 test): FastDiSS
# (SCP + MANS) at published scale: train -> average the last 5 checkpoints -> decode at 1-50
# steps -> ROUGE.
#
#   RAW=summary.tar.gz NGPU=4 bash recipes/gigaword.sh   # RAW: sumdata or org_data release
#   RAW=summary.tar.gz SMOKE=1 bash recipes/gigaword.sh  # every command, tiny model
#
# Published-scale settings (no Difformer script for Gigaword: its Wiki-Auto settings with
# more updates for the 5x larger training set; see recipes/README.md):
#   model      fastdiss_base (Transformer base: 6+6 layers, d 512, ffn 2048, 8 heads), tied
#              embeddings; the headline length is predicted directly (it hardly depends on
#              the article's)
#   data       preprocess/prepare_gigaword.py (the release's own tokens and lowercasing,
#              no Moses pass, 10k joint BPE merges)
#   optimizer  Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, 10k warmup updates from 1e-7,
#              weight decay 0.01, clip-norm 1.0
#   batch      16,000 tokens per GPU x 4 GPUs = 64k tokens per update; with NGPU=N the
#              per-GPU --max-tokens and --update-freq change so that an update still sees 64k
#   length     100k updates; a checkpoint every 2k updates, the last 5 averaged
#   loss       dropout 0.1, label smoothing 0.1, --scp --mans
#   decoding   length beam 5, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     ROUGE-1/2/L F1 (rouge-score, stemming) of the tokenized hypotheses against
#              the release's tokenized references
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=gigaword KIND=summarization SRC=src TGT=tgt DETOK=none
DATASET=gigaword PREPARE=prepare_gigaword.py
ARCH=fastdiss_base MODEL_ARGS=""
LR=5e-4 WARMUP=10000 MAX_TOKENS=16000 REF_GPUS=4 MAX_UPDATE=100000
DROPOUT=0.1 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.01 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=2000 LENGTH_BEAM=5 NOISE_SAMPLES=1

run_recipe
