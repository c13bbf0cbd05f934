#!/usr/bin/env bash
# The README's main job: FastDiSS on the bundled German->English slice, on a CPU.
#
#   bash user_dir_examples/run_de_en_example.sh
#
# 1. sets up .venv (scripts/setup_env.sh: torch CPU build, fairseq, this plugin);
# 2. preprocesses user_dir_examples/data/de-en (sacremoses + subword-nmt + fairseq-preprocess;
#    10,000 joint BPE merges: at this budget a larger vocabulary means shorter sequences and
#    more sentences per 6,144-token batch; valid SacreBLEU at 1 / 5 steps after 11 minutes was
#    2.07 / 2.88 with 3,000 merges, 3.75 / 4.36 with 6,000, 5.48 / 5.85 with 10,000 and
#    5.03 / 6.07 with 16,000, docs/measurements.md);
# 3. trains a small FastDiSS model (SCP + MANS) with the stock fairseq-train for a bounded time
#    (--fp32-matmul-precision medium: bfloat16 matrix products where the CPU has them, about
#    1.4x the updates of exact float32 on this project's machines; about 2 GB more memory;
#    --amp: fairseq's mixed-precision flag; on a CPU this plugin runs the forward under bfloat16
#    autocast, 1.4x the updates/s of medium alone on an AVX512-BF16 host at the same loss per update,
#    docs/measurements.md, thirty-seventh session; parameters and checkpoints stay float32;
#    --t-min 0.5: training times drawn from U(0.5, 1), about twice the BLEU of U(0, 1) after
#    650 updates, +1.1 at 5 steps after 2,000, docs/measurements.md; the sampler then ends at t = 0.5;
#    --max-tokens 6144: in the same 11 minutes, half the updates of 3,072-token batches and
#    about 0.4 SacreBLEU more; --encoder-layers 2 --decoder-layers 2: fastdiss_small with 2+2
#    layers instead of 3+3, 1.4x the updates in the same 11 minutes and about +1.5 SacreBLEU
#    at 1 and 5 steps on valid; 1+1 layers is no better, 3+1 is worse);
# 4. decodes the 500-sentence test slice with fairseq-generate at 1, 5 and 50 steps and prints
#    detokenized SacreBLEU for each, of the model's own output and with --collapse-repeats
#    (fairseq's tokenized BLEU and the decoding seconds are of the model's own output).
# About 15 minutes on 2 CPU cores. Environment knobs: TRAIN_MINUTES (default 11), STEPS
# (default "1 5 50"), OUT (default user_dir_examples/output), VENV (default .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
OUT="${OUT:-$ROOT/user_dir_examples/output}"
TRAIN_MINUTES="${TRAIN_MINUTES:-11}"
STEPS="${STEPS:-1 5 50}"
DATA="$OUT/data-bin"
CKPT="$OUT/checkpoints"
USER_DIR="$ROOT/fastdiss_fairseq"
BPE_MERGES=10000

bash "$ROOT/scripts/setup_env.sh" "$VENV"
export PATH="$VENV/bin:$PATH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
mkdir -p "$OUT"
start=$(date +%s)

# A step whose output goes to a log: on failure, say which and show the log's last line (set -e
# alone would end the script without a word).
run_logged() {
    local what="$1" log="$2"
    shift 2
    if ! "$@" > "$log" 2>&1; then
        echo "run_de_en_example.sh: error: $what failed: $(tail -n 1 "$log") (log: $log)" >&2
        exit 1
    fi
}

# An output folder from a version of this script with another vocabulary would resume its old
# checkpoint on its old data and print that run's scores again: refuse it before any work.
if [ -f "$DATA/prepare.json" ] && ! python -c "import json, sys; sys.exit(json.load(open(sys.argv[1]))['bpe_merges'] != $BPE_MERGES)" "$DATA/prepare.json"; then
    echo "run_de_en_example.sh: error: $OUT holds data preprocessed with other BPE merges than $BPE_MERGES; remove it or set OUT to a new folder" >&2
    exit 1
fi
# A checkpoint of a version of this script that trained without --amp holds another optimizer
# (fairseq's FairseqAdam, not its AMPOptimizer), which fairseq-train would refuse to resume.
# (A checkpoint whose optimizer cannot be read is left to fairseq-train to judge.)
if [ -f "$CKPT/checkpoint_last.pt" ] && ! python -c "import sys; from fastdiss_fairseq.resume_check import stored_optimizer_name as name; sys.exit(name(sys.argv[1]) not in ('AMPOptimizer', None))" "$CKPT/checkpoint_last.pt"; then
    echo "run_de_en_example.sh: error: $CKPT/checkpoint_last.pt was trained without --amp by an older version of this script; remove $OUT or set OUT to a new folder" >&2
    exit 1
fi
# prepare.json is written last: without it, a preprocessing was cut short (fairseq-preprocess
# refuses to write over its dictionaries, so what it left goes first)
if [ ! -f "$DATA/prepare.json" ]; then
    echo "== preprocessing the bundled slice"
    rm -rf "$DATA"
    run_logged preprocessing "$OUT/preprocess.log" \
        python "$ROOT/preprocess/prepare_parallel.py" --raw "$ROOT/user_dir_examples/data/de-en" \
        --src de --tgt en --bpe-merges "$BPE_MERGES" --out "$DATA" --workers "$(nproc)"
fi

echo "== training for $TRAIN_MINUTES minutes (log: $OUT/train.log)"
run_logged training "$OUT/train.log" fairseq-train "$DATA" --user-dir "$USER_DIR" \
    --task fastdiss_translation --arch fastdiss_small --encoder-layers 2 --decoder-layers 2 \
    --criterion fastdiss_loss --scp --mans --t-min 0.5 \
    --fp32-matmul-precision medium --amp \
    --noise-scale 4 --pred-length-offset --source-copy-input \
    --encoder-normalize-before --decoder-normalize-before \
    --optimizer adam --adam-betas '(0.9,0.98)' --lr 2.5e-3 --lr-scheduler inverse_sqrt \
    --warmup-updates 200 --clip-norm 1.0 --max-tokens 6144 --dropout 0.0 --seed 1 --cpu --num-workers 0 \
    --stop-time-hours "$(python -c "print($TRAIN_MINUTES / 60)")" --disable-validation \
    --save-dir "$CKPT" --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 \
    --log-format simple --log-interval 50
grep "| train |" "$OUT/train.log" | tail -1 || true

echo "== decoding the test slice ($(wc -l < "$DATA/refs/test.en") sentences)"
# Each step count is decoded twice: the model's own output, and with --collapse-repeats (drop a
# token equal to the one before it, the usual non-autoregressive post-processing: an early model
# repeats frequent words, worth +0.4 to +1.1 SacreBLEU here, docs/measurements.md).
printf "%-6s %-12s %-20s %-15s %s\n" steps SacreBLEU SacreBLEU_collapsed tokenized_BLEU seconds
for k in $STEPS; do
    t0=$(date +%s.%N)
    for variant in plain collapsed; do
        collapse=""; [ "$variant" = collapsed ] && collapse="--collapse-repeats"
        fairseq-generate "$DATA" --user-dir "$USER_DIR" --task fastdiss_translation \
            --path "$CKPT/checkpoint_last.pt" --gen-subset test --decoding-steps "$k" --length-beam 3 \
            --max-tokens 8000 --remove-bpe --fp32-matmul-precision medium $collapse \
            --seed 1 --cpu > "$OUT/generate.$k.$variant.txt" 2> "$OUT/generate.$k.$variant.log"
        [ "$variant" = plain ] && t1=$(date +%s.%N)
        fastdiss-score "$OUT/generate.$k.$variant.txt" --refs "$DATA/refs/test.en" --detok-lang en \
            --json "$OUT/scores.$k.$variant.json" > /dev/null
    done
    python - "$OUT/scores.$k.plain.json" "$OUT/scores.$k.collapsed.json" "$k" "$(python -c "print(round($t1 - $t0, 1))")" <<'PY'
import json, sys
plain, collapsed = (json.load(open(path)) for path in sys.argv[1:3])
print(f"{sys.argv[3]:<6} {plain['sacrebleu']:<12.2f} {collapsed['sacrebleu']:<20.2f} "
      f"{plain.get('bleu_tokenized', float('nan')):<15.2f} {sys.argv[4]}")
PY
done
echo "== done in $(( $(date +%s) - start )) s; outputs in $OUT"
