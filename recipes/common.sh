# Shared body of every recipe in this folder: prepare -> train -> average -> decode -> score.
#
# Not run on its own. A recipe script does
#     source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#     ... its benchmark's settings (the "recipe settings" below; they may use $ROOT) ...
#     run_recipe
#
# Environment knobs of every recipe (all optional):
#   NGPU           GPUs to train on; 0 = CPU (default: the recipe's REF_GPUS, or 0 for the
#                  *_cpu recipes). The effective batch, MAX_TOKENS x REF_GPUS tokens per update,
#                  is kept whatever NGPU is: --update-freq and the per-GPU --max-tokens follow.
#   RAW            the downloaded raw data (archive or folder) for the preprocess script
#   DATA           binarized data (default ROOT/data-bin/DATASET); prepared when it has no prepare.json
#   OUT            run folder: logs, checkpoints, results.json, results.md (default ROOT/runs/RECIPE)
#   STEPS          decoding step counts (default "1 2 5 10 20 50")
#   TRAIN_MINUTES  stop training after this many minutes (--stop-time-hours); empty = no limit
#   NUM_AVG        how many of the last interval checkpoints to average (default 5)
#   SMOKE=1        a quick end-to-end check: fastdiss_tiny, SMOKE_UPDATES (20) updates, STEPS "1 2",
#                  SMOKE_TRAIN (300) training pairs; data and run go to OUT (default ROOT/runs/RECIPE-smoke)
#   DRY_RUN=1      print the commands instead of running them
#   EXTRA_TRAIN_ARGS, EXTRA_GEN_ARGS, PREPARE_ARGS
#                  appended to fairseq-train, fairseq-generate and the preprocess script; they come
#                  last, so they override the recipe's settings
#   FP16=0         train in fp32 on GPUs (default: --fp16, as the published runs)
#   AMP=0          train in fp32 on the CPU (default: --amp, which this plugin's task runs as bfloat16
#                  autocast on a CPU: 1.4x the updates/s, same loss per update, docs/measurements.md)
#   PYTHON         the python that has fairseq and this package (default: python); fairseq-train
#                  and fairseq-generate are taken from PATH
#
# Recipe settings (set by each recipe script; not read from the environment):
#   RECIPE KIND(translation|paraphrase|summarization) SRC TGT DATASET
#   PREPARE (script in preprocess/) PREPARE_FIXED (array of its fixed options)
#   RAW_LAYOUT (generic = {train,valid,test}.{SRC,TGT}[.gz]; release = an official release) RAW_DEFAULT
#   ARCH LR WARMUP MAX_TOKENS REF_GPUS MAX_UPDATE DROPOUT LABEL_SMOOTHING WEIGHT_DECAY CLIP_NORM
#   FASTDISS_ARGS (criterion flags, e.g. "--scp --mans") MODEL_ARGS SAVE_INTERVAL LOG_INTERVAL VALIDATE
#   LENGTH_BEAM NOISE_SAMPLES DETOK(moses|none: hypotheses stay tokenized) MOSES_TGT (the
#   Moses language of the target; default TGT)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USER_DIR="$ROOT/fastdiss_fairseq"
PYTHON="${PYTHON:-python}"
# `python -m fastdiss_fairseq.*` must find this checkout, whatever else is installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() {
    echo "${RECIPE:-recipe}: error: $*" >&2
    exit 2
}

# Option strings (MODEL_ARGS="--foo --bar 1", EXTRA_TRAIN_ARGS, ...) -> the array WORDS, split
# on whitespace only: unlike an unquoted expansion, read -a does no pathname globbing.
split_words() { read -r -a WORDS <<< "${1:-}"; }

# ceil(a / b) for positive integers
ceil_div() { echo $(( ($1 + $2 - 1) / $2 )); }

is_positive_int() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

# Defaults of the optional recipe settings, and the overrides of smoke mode.
apply_defaults() {
    WARMUP_INIT_LR="${WARMUP_INIT_LR:-1e-07}"
    SAVE_INTERVAL="${SAVE_INTERVAL:-2000}"
    LOG_INTERVAL="${LOG_INTERVAL:-100}"
    VALIDATE="${VALIDATE:-1}"
    LENGTH_BEAM="${LENGTH_BEAM:-5}"
    NOISE_SAMPLES="${NOISE_SAMPLES:-1}"
    DETOK="${DETOK:-moses}"
    MOSES_TGT="${MOSES_TGT:-$TGT}"
    RAW_LAYOUT="${RAW_LAYOUT:-release}"
    GEN_SUBSET="${GEN_SUBSET:-test}"
    GEN_MAX_TOKENS="${GEN_MAX_TOKENS:-8000}"
    NUM_AVG="${NUM_AVG:-5}"
    WORKERS="${WORKERS:-$(nproc)}"
    if ! declare -p PREPARE_FIXED > /dev/null 2>&1; then
        PREPARE_FIXED=()
    fi
    if [ "${SMOKE:-0}" = 1 ]; then
        # Seconds per phase: the point is to exercise every command, not to learn anything.
        ARCH=fastdiss_tiny LR=1e-3 WARMUP=10 MAX_TOKENS=1024 REF_GPUS=1
        MAX_UPDATE="${SMOKE_UPDATES:-20}" SAVE_INTERVAL=5 LOG_INTERVAL=5 VALIDATE=0
        LENGTH_BEAM=2 NOISE_SAMPLES=1 TRAIN_MINUTES=""
        STEPS="${STEPS:-1 2}"
        NGPU="${NGPU:-0}"
        OUT="${OUT:-$ROOT/runs/$RECIPE-smoke}"
        # A private data-bin: a smoke slice must never stand in for the real data.
        DATA="${DATA:-$OUT/data-bin}"
    fi
    STEPS="${STEPS:-1 2 5 10 20 50}"
    NGPU="${NGPU:-$REF_GPUS}"
    OUT="${OUT:-$ROOT/runs/$RECIPE}"
    DATA="${DATA:-$ROOT/data-bin/$DATASET}"
    TRAIN_MINUTES="${TRAIN_MINUTES:-}"
    CKPT="$OUT/checkpoints"
    AVG="$CKPT/checkpoint_avg.pt"
    # A summarization source is a whole document and may exceed the model's 1,024 positions
    # (debdesc-summ/test has a 1,845-subword description): truncated, as summarization
    # setups do, in training and decoding alike.
    TRUNCATE=()
    if [ "$KIND" = summarization ]; then
        TRUNCATE=(--truncate-source)
    fi
}

# One-line errors for bad knobs, before any time is spent.
check_knobs() {
    local k
    [ -n "${STEPS// /}" ] || die "STEPS is empty; give step counts such as STEPS=\"1 5 50\""
    for k in $STEPS; do
        is_positive_int "$k" || die "STEPS: '$k' is not a step count (positive integer) in STEPS=\"$STEPS\""
    done
    [[ "$NGPU" =~ ^[0-9]+$ ]] || die "NGPU='$NGPU' is not a number of GPUs (0 = CPU)"
    is_positive_int "$NUM_AVG" || die "NUM_AVG='$NUM_AVG' is not a positive integer"
    for k in FP16 AMP; do
        [[ "${!k:-1}" =~ ^[01]$ ]] || die "$k='${!k}' must be 0 or 1"
    done
    if [ -n "$TRAIN_MINUTES" ]; then
        [[ "$TRAIN_MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] && [[ "$TRAIN_MINUTES" =~ [1-9] ]] \
            || die "TRAIN_MINUTES='$TRAIN_MINUTES' is not a positive number of minutes"
    fi
    if [ "${DRY_RUN:-0}" != 1 ]; then
        command -v "$PYTHON" > /dev/null || die "PYTHON=$PYTHON not found"
        local cli
        for cli in fairseq-train fairseq-generate; do
            command -v "$cli" > /dev/null || die "$cli is not on PATH; activate the environment that has fairseq (see README)"
        done
    fi
}

# The effective batch is fixed at MAX_TOKENS x REF_GPUS tokens per update. With G devices:
# update_freq = ceil(effective / (G x MAX_TOKENS)), then the per-device max-tokens is lowered
# so that G x update_freq x max_tokens is the effective batch again.
batch_plan() {
    local devices=$(( NGPU > 0 ? NGPU : 1 ))
    EFFECTIVE_TOKENS=$(( MAX_TOKENS * REF_GPUS ))
    UPDATE_FREQ=$(ceil_div "$EFFECTIVE_TOKENS" $(( devices * MAX_TOKENS )))
    TOKENS_PER_DEVICE=$(( EFFECTIVE_TOKENS / (devices * UPDATE_FREQ) ))
}

# SMOKE with a raw folder in the generic layout: the first SMOKE_TRAIN training and SMOKE_EVAL
# valid/test pairs, so that preprocessing and decoding take seconds.
smoke_slice() {
    local raw="$1" dest="$2" split lang n file
    mkdir -p "$dest"
    for split in train valid test; do
        n=$([ "$split" = train ] && echo "${SMOKE_TRAIN:-300}" || echo "${SMOKE_EVAL:-20}")
        for lang in "$SRC" "$TGT"; do
            file="$raw/$split.$lang"
            [ -f "$file" ] || file="$file.gz"
            [ -f "$file" ] || die "RAW=$raw has no $split.${lang}[.gz] (expected {train,valid,test}.{$SRC,$TGT}[.gz])"
            # awk reads to the end: `head` would close the pipe early and trip pipefail.
            gzip -cdf "$file" | awk -v n="$n" 'NR <= n' > "$dest/$split.$lang"
        done
    done
}

raw_hint() {
    if [ "$RAW_LAYOUT" = generic ]; then
        echo "a folder with {train,valid,test}.{$SRC,$TGT}[.gz]"
    else
        echo "the downloaded release, an archive or a folder (see preprocess/$PREPARE --help)"
    fi
}

prepare_command() {
    local raw="${RAW:-${RAW_DEFAULT:-}}"
    PREPARE_CMD=("$PYTHON" "$ROOT/preprocess/$PREPARE" "${PREPARE_FIXED[@]}" --out "$DATA" --workers "$WORKERS")
    if [ -n "$raw" ]; then
        [ -e "$raw" ] || die "raw data $raw does not exist; set RAW to $(raw_hint)"
        if [ "${SMOKE:-0}" = 1 ] && [ "$RAW_LAYOUT" = generic ]; then
            [ "${DRY_RUN:-0}" = 1 ] || smoke_slice "$raw" "$OUT/smoke-raw"
            raw="$OUT/smoke-raw"
        fi
        PREPARE_CMD+=(--raw "$raw")
    elif [ "$RAW_LAYOUT" = generic ]; then
        die "no raw data: set RAW to $(raw_hint)"
    fi
    if [ "${SMOKE:-0}" = 1 ]; then
        PREPARE_CMD+=(--max-train "${SMOKE_TRAIN:-300}" --bpe-merges "${SMOKE_BPE:-300}")
    fi
    split_words "${PREPARE_ARGS:-}"
    PREPARE_CMD+=("${WORDS[@]}")
}

train_command() {
    batch_plan
    TRAIN_CMD=(fairseq-train "$DATA" --user-dir "$USER_DIR"
        --task fastdiss_translation --source-lang "$SRC" --target-lang "$TGT"
        --arch "$ARCH" --dropout "$DROPOUT")
    split_words "${MODEL_ARGS:-}"
    TRAIN_CMD+=("${WORDS[@]}" --criterion fastdiss_loss --label-smoothing "$LABEL_SMOOTHING")
    split_words "${FASTDISS_ARGS:-}"
    TRAIN_CMD+=("${WORDS[@]}" "${TRUNCATE[@]}"
        --optimizer adam --adam-betas '(0.9,0.98)' --weight-decay "$WEIGHT_DECAY" --clip-norm "$CLIP_NORM"
        --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --warmup-init-lr "$WARMUP_INIT_LR"
        --max-tokens "$TOKENS_PER_DEVICE" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE"
        --save-dir "$CKPT" --save-interval-updates "$SAVE_INTERVAL" --keep-interval-updates "$NUM_AVG"
        --no-epoch-checkpoints --seed 1 --log-format simple --log-interval "$LOG_INTERVAL")
    PRECISION=float32
    if [ "$NGPU" -eq 0 ]; then
        TRAIN_CMD+=(--cpu --num-workers 0)
        if [ "${AMP:-1}" = 1 ]; then
            TRAIN_CMD+=(--amp)
            PRECISION=bfloat16-autocast
        fi
    else
        TRAIN_CMD+=(--distributed-world-size "$NGPU")
        if [ "${FP16:-1}" = 1 ]; then
            TRAIN_CMD+=(--fp16)
            PRECISION=float16
        fi
        if [ "$NGPU" -gt 1 ]; then
            # Some parameters get no gradient in an update (the self-conditioning input when
            # an update trains without self-conditioning): plain DDP would stall on them.
            TRAIN_CMD+=(--ddp-backend legacy_ddp)
        fi
    fi
    if [ -n "$TRAIN_MINUTES" ]; then
        TRAIN_CMD+=(--stop-time-hours "$(awk -v m="$TRAIN_MINUTES" 'BEGIN { printf "%.6f", m / 60 }')")
    fi
    if [ "$VALIDATE" != 1 ]; then
        TRAIN_CMD+=(--disable-validation)
    fi
    split_words "${EXTRA_TRAIN_ARGS:-}"
    TRAIN_CMD+=("${WORDS[@]}")
}

generate_command() {
    local steps="$1"
    GEN_CMD=(fairseq-generate "$DATA" --user-dir "$USER_DIR" --task fastdiss_translation "${TRUNCATE[@]}"
        --source-lang "$SRC" --target-lang "$TGT" --path "$AVG" --gen-subset "$GEN_SUBSET"
        --decoding-steps "$steps" --length-beam "$LENGTH_BEAM" --noise-samples "$NOISE_SAMPLES"
        --max-tokens "$GEN_MAX_TOKENS" --remove-bpe --seed 1)
    # No --tokenizer: it would detokenize the T-lines as well and spoil tokenized BLEU. The
    # report detokenizes the D-lines instead (fastdiss_fairseq/recipe_report.py says why).
    if [ "$NGPU" -eq 0 ]; then
        GEN_CMD+=(--cpu)
    fi
    split_words "${EXTRA_GEN_ARGS:-}"
    GEN_CMD+=("${WORDS[@]}")
}

report_command() {
    REPORT_CMD=("$PYTHON" -m fastdiss_fairseq.recipe_report --run-dir "$OUT" --recipe "$RECIPE"
        --kind "$KIND" --data "$DATA" --refs "$DATA/refs/$GEN_SUBSET.$TGT" --subset "$GEN_SUBSET")
    split_words "$STEPS"
    REPORT_CMD+=(--steps "${WORDS[@]}")
    if [ "$DETOK" = moses ]; then
        REPORT_CMD+=(--detok-lang "$MOSES_TGT")
    fi
    local kv
    for kv in "arch=$ARCH" "ngpu=$NGPU" "tokens_per_device=$TOKENS_PER_DEVICE" "update_freq=$UPDATE_FREQ" \
        "effective_tokens_per_update=$EFFECTIVE_TOKENS" "lr=$LR" "warmup=$WARMUP" "max_update=$MAX_UPDATE" \
        "train_minutes=${TRAIN_MINUTES:-none}" "dropout=$DROPOUT" "label_smoothing=$LABEL_SMOOTHING" \
        "weight_decay=$WEIGHT_DECAY" "clip_norm=$CLIP_NORM" "fastdiss=${FASTDISS_ARGS:-none}" \
        "length_beam=$LENGTH_BEAM" "noise_samples=$NOISE_SAMPLES" "smoke=${SMOKE:-0}" \
        "precision=$PRECISION" "extra_train_args=${EXTRA_TRAIN_ARGS:-none}" \
        "extra_gen_args=${EXTRA_GEN_ARGS:-none}" "prepare_args=${PREPARE_ARGS:-none}" "data=$DATA"; do
        REPORT_CMD+=(--setting "$kv")
    done
}

show() { printf '%q ' "$@"; echo; }

# run_logged WHAT LOG CMD...: runs CMD with its output in LOG; on failure, stops with the log's
# last line, which is where the tools put their one-line errors.
run_logged() {
    local what="$1" log="$2"
    shift 2
    if ! "$@" > "$log" 2>&1; then
        die "$what failed: $(tail -n 1 "$log") (log: $log)"
    fi
}

# The training command without its budget (--max-update, --stop-time-hours), one word a line:
# what a resumed run folder must have been trained with.
training_identity() {
    local skip=0 word
    for word in "${TRAIN_CMD[@]}"; do
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case "$word" in
            --max-update|--stop-time-hours) skip=1 ;;
            *) printf '%s\n' "$word" ;;
        esac
    done
}

# fairseq-train resumes checkpoint_last.pt whatever trained it: another LR, batch or option would
# continue a different run silently while the report names the new settings. So a run folder
# keeps its training command, and a resume with another one (budget aside) is refused.
check_resume() {
    local kept="$OUT/train_command.txt" now="$OUT/train_command.now"
    training_identity > "$now"
    if [ -f "$CKPT/checkpoint_last.pt" ] && [ -f "$kept" ] && ! cmp -s "$kept" "$now"; then
        local changes had now_has  # the words only one command has (diff exits 1 and head may close
        # the pipe early under pipefail, hence || true)
        changes="$(diff "$kept" "$now" || true)"
        had="$(sed -n 's/^< //p' <<< "$changes" | head -n 6 | tr '\n' ' ' | sed 's/ $//' || true)"
        now_has="$(sed -n 's/^> //p' <<< "$changes" | head -n 6 | tr '\n' ' ' | sed 's/ $//' || true)"
        rm -f "$now"
        die "OUT=$OUT holds a run trained with another command (it had: ${had:-nothing more}; now: ${now_has:-nothing more}); set OUT to a new folder or remove $CKPT"
    fi
    mv "$now" "$kept"
}

run_recipe() {
    apply_defaults
    check_knobs
    local need_prepare=0
    # prepare.json is written last by preprocess/: without it the data are absent or half made.
    if [ ! -f "$DATA/prepare.json" ]; then
        need_prepare=1
    elif [ "${SMOKE:-0}" != 1 ] && grep -q '"raw": ".*/smoke-raw"' "$DATA/prepare.json"; then
        # SMOKE=1 with an explicit DATA writes its 300-pair slice there
        die "DATA=$DATA holds a SMOKE=1 slice (its prepare.json says so); remove it or set DATA to the real data"
    fi
    if [ "$need_prepare" = 1 ]; then
        prepare_command
    fi
    train_command
    report_command

    if [ "${DRY_RUN:-0}" = 1 ]; then
        if [ "$need_prepare" = 1 ]; then
            show "${PREPARE_CMD[@]}"
        fi
        show "${TRAIN_CMD[@]}"
        show "$PYTHON" -m fastdiss_fairseq.average_checkpoints --inputs "$CKPT" \
            --num-update-checkpoints "$NUM_AVG" --allow-fewer --output "$AVG" --info "$OUT/average.json"
        local k
        for k in $STEPS; do generate_command "$k"; show "${GEN_CMD[@]}"; done
        show "${REPORT_CMD[@]}"
        return 0
    fi

    mkdir -p "$OUT"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
    local start=$SECONDS t0
    echo "== $RECIPE: run folder $OUT"
    if [ "$need_prepare" = 1 ]; then
        echo "== preparing $DATA (log: $OUT/prepare.log)"
        run_logged "preprocessing" "$OUT/prepare.log" "${PREPARE_CMD[@]}"
    fi
    [ -f "$DATA/dict.$SRC.txt" ] || die "DATA=$DATA has no dict.$SRC.txt: not binarized data for $SRC-$TGT"
    [ -f "$DATA/refs/$GEN_SUBSET.$TGT" ] || die "DATA=$DATA has no refs/$GEN_SUBSET.$TGT (the raw references that preprocess/ writes)"

    check_resume
    echo "== training $ARCH: $NGPU GPU(s), $TOKENS_PER_DEVICE tokens x $UPDATE_FREQ, up to $MAX_UPDATE updates${TRAIN_MINUTES:+ or $TRAIN_MINUTES minutes} (log: $OUT/train.log)"
    t0=$SECONDS
    run_logged "fairseq-train" "$OUT/train.log" "${TRAIN_CMD[@]}"
    grep "| train |" "$OUT/train.log" | tail -n 1 || true
    echo "   trained in $(( SECONDS - t0 )) s"

    echo "== averaging the last $NUM_AVG checkpoints"
    local inputs=(--inputs "$CKPT" --num-update-checkpoints "$NUM_AVG" --allow-fewer)
    if ! compgen -G "$CKPT/checkpoint_*_*.pt" > /dev/null; then
        # The run stopped (time limit) before its first --save-interval-updates checkpoint.
        echo "   warning: no interval checkpoints in $CKPT; decoding checkpoint_last.pt alone" >&2
        inputs=(--inputs "$CKPT/checkpoint_last.pt")
    fi
    run_logged "checkpoint averaging" "$OUT/average.log" \
        "$PYTHON" -m fastdiss_fairseq.average_checkpoints "${inputs[@]}" --output "$AVG" --info "$OUT/average.json"
    cat "$OUT/average.log"

    local k
    for k in $STEPS; do
        echo "== decoding $GEN_SUBSET with $k step(s)"
        generate_command "$k"
        "${GEN_CMD[@]}" > "$OUT/generate.$GEN_SUBSET.$k.txt" 2> "$OUT/generate.$GEN_SUBSET.$k.log" \
            || die "fairseq-generate failed: $(tail -n 1 "$OUT/generate.$GEN_SUBSET.$k.log") (log: $OUT/generate.$GEN_SUBSET.$k.log)"
    done

    echo "== scoring"
    "${REPORT_CMD[@]}" || die "scoring failed"
    echo "== done in $(( SECONDS - start )) s: $OUT/results.json, $OUT/results.md"
}
