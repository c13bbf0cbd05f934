#!/usr/bin/env bash
# WMT14 German->English (4.5M training pairs, newstest2014): FastDiSS (SCP + MANS) at published
# scale: train -> average the last 5 checkpoints -> decode at 1-50 steps -> score.
#
#   RAW=orig/ NGPU=4 bash recipes/wmt14_de_en.sh       # RAW: the statmt.org archives
#   RAW=orig/ SMOKE=1 bash recipes/wmt14_de_en.sh      # every command, tiny model
#
# Published-scale settings (Difformer's public WMT14 script; see recipes/README.md):
#   model      fastdiss_wmt_en_de (Transformer base: 6+6 layers, d 512, ffn 2048, 8 heads),
#              tied embeddings, length predicted as an offset from the source length
#   data       preprocess/prepare_wmt14_en_de.py (fairseq's prepare-wmt14en2de.sh --icml17,
#              cased, 40k joint BPE merges); the data-bin is shared with wmt14_en_de.sh
#   optimizer  Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, 10k warmup updates from 1e-7,
#              weight decay 0.01, clip-norm 1.0
#   batch      16,000 tokens per GPU x 4 GPUs = 64k tokens per update; with NGPU=N the
#              per-GPU --max-tokens and --update-freq change so that an update still sees 64k
#   length     300k updates; a checkpoint every 5k updates, the last 5 averaged
#   loss       dropout 0.1, label smoothing 0.1, --scp --mans (trained on the real data, not
#              distilled: add distillation by pointing DATA at a distilled data-bin)
#   decoding   length beam 5, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     detokenized SacreBLEU and tokenized BLEU
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=wmt14_de_en KIND=translation SRC=de TGT=en
DATASET=wmt14.en-de PREPARE=prepare_wmt14_en_de.py
ARCH=fastdiss_wmt_en_de MODEL_ARGS="--pred-length-offset"
LR=5e-4 WARMUP=10000 MAX_TOKENS=16000 REF_GPUS=4 MAX_UPDATE=300000
DROPOUT=0.1 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.01 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=5000 LENGTH_BEAM=5 NOISE_SAMPLES=1

run_recipe
