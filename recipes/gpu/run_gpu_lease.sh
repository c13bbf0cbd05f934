#!/usr/bin/env bash
# Both prepared GPU checks, issue 4's from-scratch ablation and issue 5's speed comparison, in ONE
# command that fits a session's 15-minute lease (about 9 minutes; the machine's start and the
# transfers take the rest), for a session that is lent the GPU machine:
#
#   here, once:   bash recipes/gpu/fetch_wheels.sh     (needs PyPI; writes .whl/)
#                 the ablation's data-bin must exist: python recipes/ablation.py prepares it
#   on the GPU:   run(command="bash recipes/gpu/run_gpu_lease.sh",
#                     carry=[".whl", "runs/ablation/data-bin"], timeout_s=600)
#
# run_gpu_checks.sh and run_gpu_speed.sh take about 8 and 7 minutes each: one lease holds one of
# them. Here the trainings of both share the GPU instead of following one another:
#   1. side by side for TRAIN_MINUTES (or UPDATES updates): the ablation's baseline and SCP+MANS
#      (IWSLT-sized, training times U(T_MIN, 1)), fairseq's transformer and cmlm_transformer (same size
#      and batch); the four trainings' target tokens/s are figures of the same shared GPU;
#   2. the ablation's decodes, shared among JOBS processes that each run theirs one after another
#      (recipes/generate_many.py: start-up paid once a process) (ablation_gpu.*: table, targets,
#      recomputed self-conditioning, the baseline's learning curve), stopped ABLATION_BY seconds
#      after the start;
#   3. the speed rows SPEED_ONLY, one process a model on the otherwise idle GPU (AR, CMLM, then
#      FastDiSS: the ablation's SCP+MANS checkpoint), until DEADLINE seconds after the start
#      (speed_gpu.*, rewritten after every row, so a cut-off run keeps the rows it has);
#   4. $OUT/gpu_lease.tgz: every report, log and decode output (no checkpoint), so that a report
#      the deadline cut off can still be scored here.
# What comes back ($OUT, 7 files): machine.txt, ablation_gpu.md and ablation.tgz (when phase 2
# ends), speed_gpu.{md,json,png} (rewritten after every row), gpu_lease.tgz (at the end).
# Without a GPU (DEVICE=cpu, ARCH=fastdiss_tiny, SIZE=small, tiny UPDATES) it is the same
# pipeline (tests/test_gpu_lease.py).
set -uo pipefail  # no -e: a phase that fails or runs out of time must not cost the others' figures
UPDATES="${UPDATES:-100000}"  # in practice TRAIN_MINUTES stops every training
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
CURVE_EVERY="${CURVE_EVERY:-500}"
ABLATION_BY="${ABLATION_BY:-410}"
DEADLINE="${DEADLINE:-555}"  # the packing after it takes seconds: run it with timeout_s=600
JOBS="${JOBS:-4}"  # processes sharing the ablation's decodes (its two trainings always run together)
MAX_TOKENS="${MAX_TOKENS:-8192}"
# 0.5, the CPU benchmark's: at U(0, 1) the first lease's baseline scored 1.83 after 1,173 updates
T_MIN="${T_MIN:-0.5}"
PRECISION="${PRECISION:-high}"  # float32 matrix products as TF32, every training and decode alike
ARCH="${ARCH:-fastdiss_iwslt_de_en}"
SIZE="${SIZE:-iwslt}"  # the peers' size: iwslt matches fastdiss_iwslt_de_en, small fastdiss_small
STEPS="${STEPS:-1 2 5 10 20 50 100}"
BATCH="${BATCH:-100}"
# The speed rows measured (AR beam 5, the reference, always), one process a model
# (--one-process-per-model: on the lent machine a process cost 30-60 s before its first sentence,
# first lease); "all" measures the 16 rows of the CPU table, whose 20- and 50-step FastDiSS rows
# may not fit before DEADLINE (a model's rows come back when its process ends).
SPEED_ONLY="${SPEED_ONLY:-AR greedy|CMLM 10 it.|FastDiSS 5 st. (L=1)|FastDiSS 5 st. (L=5)|FastDiSS 2 st. (L=1)}"
RESULTS="$(mkdir -p "${OUT:-runs/gpu-out}" && cd "${OUT:-runs/gpu-out}" && pwd)"
WORK="${WORK:-/tmp/fastdiss-gpu}"
export OUT="$WORK/report" WORK  # the reports gather here first and are packed into $RESULTS at the end
# shellcheck source=recipes/gpu/gpu_env.sh
source "$(dirname "$0")/gpu_env.sh" run_gpu_lease
export PYTHONUNBUFFERED=1
cp "$OUT/machine.txt" "$RESULTS/"

# $RESULTS/$1: the run so far but no checkpoint: reports, training logs and the decodes'
# hypotheses (their D- lines: what SacreBLEU scores against the references in the carried
# data-bin; the whole outputs would not come back under 16 MiB). Each phase leaves its results in
# $RESULTS as it ends, so a run cut short by the lease still brings back what it finished.
pack() {
    local stage="$WORK/pack" f
    rm -rf "$stage"
    (cd "$WORK" && find . \( -path ./data-bin -o -path ./pack \) -prune -o -type f -print) | while read -r f; do
        case "$f" in *.txt | *.log | *.json | *.md | *.png) ;; *) continue ;; esac
        mkdir -p "$stage/$(dirname "$f")"
        if grep -q '^D-' "$WORK/$f"; then
            grep -E '^(D-|Generate |Translated )' "$WORK/$f" > "$stage/$f"
        else
            cp "$WORK/$f" "$stage/$f"
        fi
    done
    tar czf "$RESULTS/$1" -C "$stage" .
}
# seconds left until $1 seconds after the start, at least 1 ("timeout 0" would never stop)
left() { local n=$(($1 - SECONDS)); echo $((n > 0 ? n : 1)); }

# --no-amp: as in run_gpu_checks.sh, float32 with TF32 matrix products, as sized
# shellcheck disable=SC2086  # STEPS is a list of numbers
OMP_NUM_THREADS=4 timeout "$(left "$ABLATION_BY")" python3 recipes/ablation.py --device "$DEVICE" --arch "$ARCH" \
    --variants baseline scp_mans --max-tokens "$MAX_TOKENS" --from-scratch-updates "$UPDATES" \
    --from-scratch-minutes "$TRAIN_MINUTES" --fp32-matmul-precision "$PRECISION" --no-amp --t-min "$T_MIN" \
    --curve-every "$CURVE_EVERY" --jobs "$JOBS" --seeds 1 --no-sweep --recompute-max-steps 5 --steps $STEPS \
    --work "$WORK" --out "$OUT" > "$OUT/ablation_gpu.log" 2>&1 &
ablation=$!
# the speed benchmark's settings, for its training (now) and its decodes (phase 3) alike
speed=(python3 recipes/speed_benchmark.py --device "$DEVICE" --size "$SIZE" --max-tokens "$MAX_TOKENS"
       --train-updates "$UPDATES" --train-minutes "$TRAIN_MINUTES" --train-side-by-side
       --fp32-matmul-precision "$PRECISION" --work "$WORK")
timeout "$(left "$ABLATION_BY")" "${speed[@]}" --train-threads 4 --train-only --out "$OUT" > "$OUT/speed_train.log" 2>&1
echo "run_gpu_lease: peers trained (exit $?) at ${SECONDS} s"
wait "$ablation"
echo "run_gpu_lease: ablation done (exit $?) at ${SECONDS} s"
tail -n 30 "$OUT/ablation_gpu.log"
cp "$OUT"/ablation*.md "$RESULTS/" 2>/dev/null
pack ablation.tgz

only=()
if [ "$SPEED_ONLY" != all ]; then IFS='|' read -r -a only <<< "$SPEED_ONLY"; only=(--only "${only[@]}"); fi
timeout "$(left "$DEADLINE")" "${speed[@]}" --no-train --fastdiss "$WORK/scp_mans.seed1/checkpoint_last.pt" \
    --fastdiss-log "$WORK/scp_mans.seed1.log" --batch-size "$BATCH" --repeats 0 --one-process-per-model "${only[@]}" \
    --out "$RESULTS" 2>&1 | tee "$OUT/speed_gpu.log"
echo "run_gpu_lease: speed decodes done (exit $?) at ${SECONDS} s"

pack gpu_lease.tgz
echo "run_gpu_lease: packed at ${SECONDS} s"
ls -la "$RESULTS"
