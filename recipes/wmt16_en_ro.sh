#!/usr/bin/env bash
# WMT16 English->Romanian (610k training pairs, newstest2016): FastDiSS (SCP + MANS) at
# published scale: train -> average the last 5 checkpoints -> decode at 1-50 steps -> score.
#
#   RAW=orig/ NGPU=4 bash recipes/wmt16_en_ro.sh       # RAW: the statmt.org / OPUS archives
#   RAW=orig/ SMOKE=1 bash recipes/wmt16_en_ro.sh      # every command, tiny model
#
# Published-scale settings (Difformer publishes no WMT16 script: its WMT14 settings; see
# recipes/README.md):
#   model      fastdiss_base (Transformer base: 6+6 layers, d 512, ffn 2048, 8 heads), tied
#              embeddings, length predicted as an offset from the source length
#   data       preprocess/prepare_wmt16_en_ro.py (Sennrich et al.'s WMT16 preprocessing:
#              Romanian normalized, diacritics removed, cased, 40k joint BPE merges); the
#              data-bin serves both directions
#   optimizer  Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, 10k warmup updates from 1e-7,
#              weight decay 0.01, clip-norm 1.0
#   batch      16,000 tokens per GPU x 4 GPUs = 64k tokens per update; with NGPU=N the
#              per-GPU --max-tokens and --update-freq change so that an update still sees 64k
#   length     300k updates; a checkpoint every 5k updates, the last 5 averaged
#   loss       dropout 0.1, label smoothing 0.1, --scp --mans
#   decoding   length beam 5, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     detokenized SacreBLEU (references without diacritics, as the data) and
#              tokenized BLEU
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=wmt16_en_ro KIND=translation SRC=en TGT=ro
DATASET=wmt16.en-ro PREPARE=prepare_wmt16_en_ro.py
ARCH=fastdiss_base MODEL_ARGS="--pred-length-offset"
LR=5e-4 WARMUP=10000 MAX_TOKENS=16000 REF_GPUS=4 MAX_UPDATE=300000
DROPOUT=0.1 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.01 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=5000 LENGTH_BEAM=5 NOISE_SAMPLES=1

run_recipe
