#!/usr/bin/env bash
# QQP paraphrase generation (DiffuSeq's split of Quora Question Pairs, 145k training pairs):
# FastDiSS (SCP + MANS) at published scale: train -> average the last 5 checkpoints ->
# decode at 1-50 steps -> score.
#
#   RAW=datasets/QQP NGPU=1 bash recipes/qqp.sh        # RAW: DiffuSeq's QQP folder (required)
#   RAW=datasets/QQP SMOKE=1 bash recipes/qqp.sh       # every command, tiny model
#
# Published-scale settings (Difformer's public QQP script; see recipes/README.md):
#   model      fastdiss_base (Transformer base: 6+6 layers, d 512, ffn 2048, 8 heads), tied
#              embeddings, length predicted as an offset from the source length
#   data       preprocess/prepare_qqp.py (Moses tokens as English, cased, 10k joint BPE merges)
#   optimizer  Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, 10k warmup updates from 1e-7,
#              weight decay 0.01, clip-norm 1.0
#   batch      8,000 tokens per GPU x 1 GPU = 8k tokens per update; with NGPU=N the per-GPU
#              --max-tokens and --update-freq change so that an update still sees 8k tokens
#   length     50k updates; a checkpoint every 1k updates, the last 5 averaged
#   loss       dropout 0.1, label smoothing 0.1, --scp --mans
#   decoding   length beam 5, 1 noise sample; STEPS="1 2 5 10 20 50"
#   scores     BLEU, both detokenized SacreBLEU and tokenized BLEU (DiffuSeq-style papers
#              report BLEU; say which one you compare with)
# Knobs (NGPU, RAW, DATA, OUT, STEPS, TRAIN_MINUTES, SMOKE, DRY_RUN, ...): see recipes/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECIPE=qqp KIND=paraphrase SRC=src TGT=tgt MOSES_TGT=en
DATASET=qqp PREPARE=prepare_qqp.py
ARCH=fastdiss_base MODEL_ARGS="--pred-length-offset"
LR=5e-4 WARMUP=10000 MAX_TOKENS=8000 REF_GPUS=1 MAX_UPDATE=50000
DROPOUT=0.1 LABEL_SMOOTHING=0.1 WEIGHT_DECAY=0.01 CLIP_NORM=1.0 FASTDISS_ARGS="--scp --mans"
SAVE_INTERVAL=1000 LENGTH_BEAM=5 NOISE_SAMPLES=1

run_recipe
