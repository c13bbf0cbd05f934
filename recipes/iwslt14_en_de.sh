#!/usr/bin/env bash
# IWSLT14 English->German (TED talks, 160k training pairs): FastDiSS (SCP + MANS) at
# published scale: train -> average the last 5 checkpoints -> decode at 1-50 steps -> score.
#
#   RAW=de-en.tgz NGPU=1 bash recipes/iwslt14_en_de.sh
#   RAW=de-en.tgz SMOKE=1 bash recipes/iwslt14_en_de.sh     # every command, tiny model, minutes
#
# Published-scale settings (Difformer's public IWSLT14 script; see recipes/README.md):
#   model      fastdiss_iwslt_de_en (6+6 layers, d 512, ffn 1024, 4 heads), tied embeddings,
#              length predicted as an offset from the source length
#   data       preprocess/prepare_iwslt14.py (fairseq's prepare-iwslt14.sh: lowercased Moses
#              tokens, 10k joint BPE merges); the data-bin is shared with iwslt14_de_en.sh
#   optimizer  Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, 10k warmup updates from 1e-7,
#              weight decay 0.01, clip-norm 1.0
#   batch      8,000 tokens per GPU x 1 GPU = 8k tokens per update; with NGPU=N the per-GPU
#              --max-tokens and --update-freq change so that an update still sees 8k tokens
#   length     300k updates; a checkpoint every 2k updates, the last 5 averaged
#   loss       dropout 0.3, label smoothing 0.1, --scp --mans
#   decoding   length beam 5, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     detokenized SacreBLEU (against lowercased references, as the data are
#              lowercased) and tokenized BLEU
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=iwslt14_en_de KIND=translation SRC=en TGT=de
DATASET=iwslt14.de-en PREPARE=prepare_iwslt14.py
ARCH=fastdiss_iwslt_de_en MODEL_ARGS="--pred-length-offset"
LR=5e-4 WARMUP=10000 MAX_TOKENS=8000 REF_GPUS=1 MAX_UPDATE=300000
DROPOUT=0.3 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.01 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=2000 LENGTH_BEAM=5 NOISE_SAMPLES=1

run_recipe
