#!/usr/bin/env python3
"""Speed and quality next to fairseq's own AR transformer and CMLM (mask-predict).

On the ablation benchmark's data (recipes/ablation.py: ../shared/data/de-en, length-bounded
training slice, full 2,000-sentence test set) and at the same model size, batch and number of
updates (an update budget, unlike a time budget, does not depend on what else the machine runs):

  * trains fairseq's `transformer` (autoregressive) and `cmlm_transformer` (task
    translation_lev) to the budget, resuming an interrupted training (--no-train decodes the
    checkpoints as they are; the report gives every model's updates); FastDiSS is the
    ablation's SCP+MANS model;
  * runs the stock fairseq-generate for AR beam 5, AR greedy, CMLM 4 and 10 iterations
    (length beam 5), FastDiSS at 1, 2, 5, 10, 20, 50 steps with length beam 5 and 1, all with
    the same --batch-size and threads;
  * per configuration: SacreBLEU (detokenized), sentences/s and target tokens/s of the
    generator (fairseq's own timer; median of --repeats timed runs after a warm-up run) and of
    the whole process, and peak resident memory; AR beam 5, the reference of every ratio, is
    timed first and again after the last row, so that a drift of the host's speed during the
    run shows in the report instead of biasing the ratios;
  * writes docs/speed.{json,md,png} (SacreBLEU against sentences/s, log x), with every trained
    model's training target tokens/s (fairseq's wps) above the table.

On a GPU (recipes/gpu/run_gpu_speed.sh) the same comparison runs from scratch:
--device cuda --size iwslt --train-fastdiss trains FastDiSS (SCP+MANS, the ablation's settings)
beside the peers, all IWSLT-sized, and the report is speed_gpu.* with peak GPU memory.

    python recipes/speed_benchmark.py                 # after recipes/ablation.py
    python recipes/speed_benchmark.py --quick --out /tmp/speed-quick
    # or on the de_en_cpu recipe's data and averaged checkpoint:
    python recipes/speed_benchmark.py --work runs/speed --data data-bin/de-en-cpu \
        --fastdiss runs/de_en_cpu/checkpoints/checkpoint_avg.pt --train-minutes 25
    # (--train-minutes trains the peers for a time instead of --train-updates updates)

A configuration whose warm-up run already takes longer than --single-run-seconds is timed
once (its warm-up is the timed run): minutes-long runs vary by a few percent, not more, and
the full table would otherwise not fit in a CPU session. The JSON says how many timed runs
each figure has. The generator profile at 5 steps (recipes/profile_generator.py) lands beside
the table as speed_profile.md.
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fastdiss_fairseq.cpu_performance import MATMUL_PRECISIONS  # noqa: E402
from fastdiss_fairseq.plotting import saved_figure  # noqa: E402
from fastdiss_fairseq.generator import DECODING_DTYPES  # noqa: E402
from fastdiss_fairseq.recipe_report import parse_speed  # noqa: E402
from fastdiss_fairseq.resume_check import trained_with_amp  # noqa: E402
from fastdiss_fairseq.scoring import read_refs, score_generate_output  # noqa: E402

USER_DIR = os.path.join(ROOT, "fastdiss_fairseq")
# The peers at the size of a FastDiSS architecture: (dim, FFN, heads, layers a side) and that arch.
SIZES = {"small": ((256, 512, 4, 3), "fastdiss_small"),  # the CPU benchmarks' model
         "iwslt": ((512, 1024, 4, 6), "fastdiss_iwslt_de_en")}  # fairseq's transformer_iwslt_de_en


# The peers put layer normalization before each block, as every FastDiSS model here does
# (recipes/ablation.py). fairseq's default post-norm collapsed at this short warm-up (300 updates
# to lr 1e-3) at both sizes: the 6+6-layer transformer of the first GPU lease ("The The The ...",
# SacreBLEU 0.00 after 1,386 updates) and the CPU table's 3+3-layer CMLM (twenty-sixth session:
# one output per predicted length, loss stuck near 10 bits from the learning-rate peak on).
def size_args(size):
    (dim, ffn, heads, layers), _ = SIZES[size]
    return [arg for side in ("encoder", "decoder") for arg in (
        f"--{side}-embed-dim", dim, f"--{side}-ffn-embed-dim", ffn, f"--{side}-attention-heads", heads,
        f"--{side}-layers", layers)] + ["--share-all-embeddings", "--encoder-normalize-before",
                                         "--decoder-normalize-before"]


# fairseq's usual settings for these models; the batch (--max-tokens) is the FastDiSS model's.
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "300", "--clip-norm", "1.0", "--dropout", "0.1"]
PEERS = {
    "ar": ["--task", "translation", "--arch", "transformer", "--criterion", "label_smoothed_cross_entropy",
           "--label-smoothing", "0.1"],
    "cmlm": ["--task", "translation_lev", "--arch", "cmlm_transformer", "--criterion", "nat_loss",
             "--label-smoothing", "0.1", "--noise", "random_mask", "--apply-bert-init",
             "--length-loss-factor", "0.1", "--pred-length-offset"],
}
# Runs one fairseq CLI in-process and reports its peak resident memory (KiB) on stderr.
# FASTDISS_MATMUL_PRECISION (--fp32-matmul-precision) applies the plugin's CPU settings before
# the CLI starts, so fairseq's own AR and CMLM models decode under the same ones as FastDiSS.
# HALF_IS_BFLOAT16=1 makes Module.half() cast to bfloat16: with it, fairseq-generate's --fp16
# (its only cast: model.half() after loading) decodes fairseq's AR and CMLM models in bfloat16,
# as the plugin's --decoding-dtype bfloat16 does with FastDiSS (stock fairseq has no bf16 option),
# and picks the attention kernel for bfloat16 inputs as the plugin then does.
# SYNC_CUDA_TIMER=1 (GPU runs): the CUDA context and the matrix-product library are set up before
# the CLI starts (one-time costs a long-running server pays once, not per batch), and fairseq's
# generation timer waits for the GPU when it starts and stops, so queued kernels are charged to
# the batch that launched them, for every model alike; the peak GPU memory the process allocated
# is reported beside its resident memory.
PEAK_RSS_WRAPPER = (
    "import os, resource, runpy, sys; sys.argv = sys.argv[1:]\n"
    "if os.environ.get('SYNC_CUDA_TIMER'):\n"
    "    import torch\n"
    "    from fairseq.logging.meters import StopwatchMeter\n"
    "    def synced(method):\n"
    "        return lambda self, *a, **k: (torch.cuda.synchronize(), method(self, *a, **k))[1]\n"
    "    StopwatchMeter.start, StopwatchMeter.stop = synced(StopwatchMeter.start), synced(StopwatchMeter.stop)\n"
    "    (torch.ones(8, 8, device='cuda') @ torch.ones(8, 8, device='cuda')).sum().item()\n"
    "if os.environ.get('FASTDISS_MATMUL_PRECISION'):\n"
    "    from fastdiss_fairseq.cpu_performance import apply_cpu_settings\n"
    "    apply_cpu_settings(os.environ['FASTDISS_MATMUL_PRECISION'])\n"
    "if os.environ.get('HALF_IS_BFLOAT16'):\n"
    "    import torch\n"
    "    torch.nn.Module.half = lambda module: module.to(torch.bfloat16)\n"
    "    from fastdiss_fairseq.cpu_performance import use_fused_cpu_attention\n"
    "    use_fused_cpu_attention(torch.bfloat16)\n"
    "try:\n    (runpy.run_path if sys.argv[0].endswith('.py') else runpy.run_module)(sys.argv[0], run_name='__main__')\n"
    "finally:\n    print(f'PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
    "    if os.environ.get('SYNC_CUDA_TIMER'):\n"
    "        print(f'PEAK_CUDA_BYTES {torch.cuda.max_memory_allocated()}', file=sys.stderr)\n"
)


def log(msg):
    print(f"[speed {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_fairseq(module, args, out_path=None, threads=None, mode="w", env_extra=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env_extra or {}))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    # module: a fairseq CLI's name, or a script's path (recipes/generate_many.py)
    target = module if module.endswith(".py") else f"fairseq_cli.{module}"
    cmd = [sys.executable, "-c", PEAK_RSS_WRAPPER, target, *map(str, args)]
    # A training's log is its stdout and stderr together: under the wrapper fairseq is imported (by
    # the plugin's settings) before fairseq-train sets up its logging to stdout, and importing
    # fairseq already gives the root logger a stderr handler: its progress lines (wps) go there.
    # fairseq-generate's stderr is read here (its timer line); its stdout is the hypotheses.
    merged = module == "train" and out_path is not None
    with open(out_path or os.devnull, mode) as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                                text=True, env=env)
    proc.log_path = out_path if merged else None
    return proc


def finish_fairseq(module, proc):
    stderr = proc.communicate()[1]
    if proc.log_path:
        with open(proc.log_path, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
    if proc.returncode != 0:
        sys.exit(f"speed_benchmark: error: fairseq {module} failed:\n{stderr[-2000:]}")
    return stderr


def fairseq(module, args, out_path=None, threads=None, env_extra=None):
    start = time.perf_counter()
    stderr = finish_fairseq(module, start_fairseq(module, args, out_path, threads, env_extra=env_extra))
    return stderr, time.perf_counter() - start


def checkpoint_updates(path):
    """The number of updates a fairseq checkpoint was trained for."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    return int(state["optimizer_history"][-1]["num_updates"])


def training_log(args, model):
    return os.path.join(args.work, "fastdiss.log" if model == "fastdiss" else f"peer_{model}.log")


def training_tokens_per_s(log_path):
    """Median target tokens/s (fairseq's wps) of a training's log intervals, the first left out
    (start-up); None without at least two intervals."""
    if not os.path.exists(log_path):
        return None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        # fairseq's own format ("| train_inner |"), or the root logger's ("INFO:train_inner:") where
        # the wrapper's CPU settings imported fairseq before fairseq-train set up its logging
        wps = [float(x) for x in re.findall(r"(?:\| train_inner \||INFO:train_inner:).*?wps=([\d.]+)", f.read())]
    return statistics.median(wps[1:]) if len(wps) > 1 else None


def fastdiss_training_args(args):
    """FastDiSS with SCP+MANS as the ablation trains it (recipes/ablation.py: model, optimizer,
    criterion), at this run's size, batch and --t-min; the device flag is added by the caller."""
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    import ablation

    ablation.configure(argparse.Namespace(device=args.device, arch=SIZES[args.size][1],
                                          max_tokens=args.max_tokens, t_min=args.t_min))
    return ["--task", "fastdiss_translation", "--criterion", "fastdiss_loss", *ablation.MODEL_ARGS,
            *ablation.OPTIM_ARGS, *ablation.VARIANTS["scp_mans"],
            "--fp32-matmul-precision", args.fp32_matmul_precision]  # the task sets it (the wrapper too)


def device_args(args):
    """fairseq's device flag: its CLIs take the GPU unless told --cpu."""
    return ["--cpu"] if args.device == "cpu" else []


def generate_command(args, data, ckpt, model, extra):
    """(fairseq-generate arguments, environment for the wrapper, decoding dtype) of one row."""
    # --user-dir for the peers too: on torch >= 2.6 the stock fairseq-generate cannot load
    # fairseq's own checkpoints (weights_only); the plugin allowlists what they pickle.
    command = [data, "--path", ckpt, "--gen-subset", "test", "--batch-size", args.batch_size,
               "--required-batch-size-multiple", "1", "--remove-bpe", *device_args(args), "--seed", "1",
               "--user-dir", USER_DIR, *extra]
    # fairseq-generate cannot decode a bfloat16 CMLM (its iterative refinement hands the
    # scores to numpy, which has no bfloat16): CMLM decodes in float32, and its rows say so.
    dtype = "float32" if model == "cmlm" else args.decoding_dtype
    env = {"SYNC_CUDA_TIMER": "1"} if args.device == "cuda" else {}
    if model == "fastdiss":
        # the task applies its own setting when set up: the same one
        command += ["--task", "fastdiss_translation", "--fp32-matmul-precision", args.fp32_matmul_precision,
                    "--decoding-dtype", dtype]
    elif dtype == "bfloat16":
        command += ["--fp16"]
        env["HALF_IS_BFLOAT16"] = "1"
    if model == "cmlm":
        command += ["--task", "translation_lev"]
    return command, env, dtype


REFERENCE = "AR beam 5"  # the row every speed ratio is taken against


def configurations(quick):
    steps = [1, 5] if quick else [1, 2, 5, 10, 20, 50]
    confs = [("AR beam 5", "ar", ["--beam", "5"]), ("AR greedy", "ar", ["--beam", "1"])]
    confs += [(f"CMLM {i} it.", "cmlm", ["--iter-decode-max-iter", str(i), "--iter-decode-with-beam", "5",
                                           "--iter-decode-force-max-iter"]) for i in (4, 10)]
    # Cheapest (fewest passes x candidates) first, so that an interrupted run has the most rows
    # (the report is rewritten after every row); the many-step, wide-beam runs take minutes.
    for _, k, beam in sorted((k * beam, k, beam) for beam in (5, 1) for k in steps):
        confs.append((f"FastDiSS {k} st. (L={beam})", "fastdiss",
                      ["--decoding-steps", str(k), "--length-beam", str(beam)]))
    return confs


def row_output(args, name):
    return os.path.join(args.work, f"{report_name(args)}.{re.sub(r'[^A-Za-z0-9]+', '_', name)}.txt")


def timed_run(log_text, wall):
    """(sentences/s, tokens/s, end-to-end sentences/s, peak RSS KiB, peak GPU bytes) of one run
    from what it logged (fairseq's timer line, the wrapper's or generate_many's peaks)."""
    speed = parse_speed(log_text)
    if not speed:
        sys.exit("speed_benchmark: error: a fairseq-generate run logged no 'Translated N sentences' line")
    # fairseq's rates, not N over its seconds: those are printed to 0.1 s, which is 1.5 % of a
    # 3-second CPU row and more of a GPU row; the rates keep the timer's full precision
    sents_per_s, toks_per_s = speed["sentences_per_second"], speed["tokens_per_second"]
    rss = int(re.findall(r"PEAK_RSS_KB (\d+)", log_text)[-1])
    gpu = [int(b) for b in re.findall(r"PEAK_CUDA_BYTES (\d+)", log_text)] or [0]
    secs = speed["generated_sentences"] / sents_per_s
    return sents_per_s, toks_per_s, speed["generated_sentences"] / wall, rss, gpu[-1], secs


def measure_in_own_processes(args, data, ckpt, model, extra, gen_path):
    """One row as the stock CLI runs it: a fairseq-generate process a run (a warm-up, then
    --repeats timed); its timed runs and decoding dtype."""
    common, env_extra, dtype = generate_command(args, data, ckpt, model, extra)
    runs = []
    for r in range(args.repeats + 1):  # run 0 is the warm-up
        stderr, wall = fairseq("generate", common, out_path=gen_path, threads=args.threads, env_extra=env_extra)
        run = timed_run(stderr, wall)
        if r > 0 or args.repeats == 0 or run[-1] > args.single_run_seconds:
            runs.append(run[:-1])
        if r == 0 and run[-1] > args.single_run_seconds:
            break
    return runs, dtype


def measure_in_one_process(args, data, ckpt, confs):
    """--one-process-per-model: every run of these rows (one model's) in one process
    (recipes/generate_many.py), so start-up is paid once, not once a run (30-60 s a process on the
    lent GPU machine). The figures are the same fairseq timer's; end-to-end sentences/s is then
    loading and decoding without the process's start, and the peak resident memory is the
    process's up to that run. {row: (timed runs, dtype)}."""
    spec, rows = [], {}
    for name, model, extra in confs:
        command, env_extra, dtype = generate_command(args, data, ckpt, model, extra)
        out = row_output(args, name)
        logs = [f"{out}.run{r}.log" for r in range(args.repeats + 1)]  # run 0 is the warm-up
        spec += [{"args": [str(a) for a in command], "out": out, "log": path} for path in logs]
        rows[name] = (logs[1:] or logs, dtype)
    spec_path = row_output(args, confs[0][0]) + ".spec.json"
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    fairseq(os.path.join(ROOT, "recipes", "generate_many.py"), [spec_path], threads=args.threads, env_extra=env_extra)
    measured = {}
    for name, (logs, dtype) in rows.items():
        runs = []
        for path in logs:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            runs.append(timed_run(text, float(re.findall(r"RUN_SECONDS ([\d.]+)", text)[-1]))[:-1])
        measured[name] = (runs, dtype)
    return measured


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=os.path.join(ROOT, "runs", "ablation"),
                   help="the ablation's work folder (its data-bin and SCP+MANS checkpoint are reused)")
    p.add_argument("--data", help="binarized data with refs/test.en (default: WORK/data-bin)")
    p.add_argument("--fastdiss", help="FastDiSS checkpoint (default: WORK/scp_mans.seed1/checkpoint_last.pt, "
                   "or with --train-fastdiss WORK/fastdiss/checkpoint_last.pt)")
    p.add_argument("--train-fastdiss", action="store_true",
                   help="train the FastDiSS model (SCP+MANS, the ablation's settings) from scratch here, "
                        "to the peers' budget, instead of reusing the ablation's (the GPU design)")
    p.add_argument("--t-min", type=float, default=0.5,
                   help="with --train-fastdiss: the criterion's --t-min (the CPU ablation's 0.5)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where every model trains and decodes (cuda: recipes/gpu/run_gpu_speed.sh)")
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="model size of the peers (and of FastDiSS with --train-fastdiss): small = "
                        "fastdiss_small's 3+3 layers of 256, iwslt = transformer_iwslt_de_en's 6+6 of 512")
    p.add_argument("--max-tokens", type=int, default=3072, help="training batch in tokens, every model alike")
    p.add_argument("--train-updates", type=int, default=None,
                   help="updates of AR and CMLM (default: the FastDiSS model's, warm start + variant "
                        "updates from --ablation-report)")
    p.add_argument("--train-minutes", type=float, default=None,
                   help="train AR and CMLM for this time instead of --train-updates updates (with "
                        "both, each training stops at whichever comes first: a cap for a timed machine)")
    p.add_argument("--ablation-report", default=os.path.join(ROOT, "docs", "ablation.json"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs"))
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--train-threads", type=int, default=None,
                   help="threads of each peer's training (default: --threads)")
    p.add_argument("--train-side-by-side", action="store_true",
                   help="train AR and CMLM at the same time (e.g. one thread each, as the FastDiSS "
                        "model of the CPU recipes trained next to the other recipe)")
    p.add_argument("--no-train", action="store_true",
                   help="decode the peers' checkpoints as they are (the report gives their updates)")
    p.add_argument("--train-only", action="store_true",
                   help="train to the budget and stop before any decode (a GPU lease trains the peers beside "
                        "the ablation's variants, then decodes them alone with --no-train)")
    p.add_argument("--fastdiss-log", metavar="LOG",
                   help="fairseq-train log of the --fastdiss checkpoint, for its training target tokens/s "
                        "(e.g. the ablation's WORK/scp_mans.seed1.log)")
    p.add_argument("--one-process-per-model", action="store_true",
                   help="run each model's rows (warm-ups and timed runs) in one process (recipes/generate_many.py) "
                        "instead of one fairseq-generate process a run: the same timer, start-up paid once (a GPU "
                        "machine's 30-60 s a process); no --single-run-seconds shortcut")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single-run-seconds", type=float, default=45.0,
                   help="a configuration whose warm-up run takes longer is timed once")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="measure only the configurations with these names (e.g. 'AR greedy' "
                        "'FastDiSS 5 st. (L=1)'); AR beam 5, the reference of the ratios, is always "
                        "measured; the report keeps the other rows of an existing report of the same host, "
                        "precision and dtype (each row names its model's updates and date). Only the "
                        "models these rows decode are trained and need a checkpoint")
    p.add_argument("--quick", action="store_true", help="the ablation's --quick work folder, 1 repeat")
    p.add_argument("--decoding-dtype", default="float32", choices=DECODING_DTYPES,
                   help="bfloat16: every model decodes cast to bfloat16 (FastDiSS with its "
                   "--decoding-dtype, fairseq's models with --fp16 made to cast to bfloat16); the "
                   "report is speed_bf16.*")
    p.add_argument("--fp32-matmul-precision", default="highest", choices=MATMUL_PRECISIONS,
                   help="for every training and decoding row alike, fairseq's own models included "
                        "(on a GPU, high and medium allow TF32 matrix products)")
    return p


def selected_configurations(args):
    """The rows this run measures: all, or --only's and the reference."""
    confs = configurations(args.quick)
    if args.only:
        unknown = set(args.only) - {name for name, _, _ in confs}
        if unknown:
            sys.exit(f"speed_benchmark: error: no configuration named {sorted(unknown)}; "
                     f"choose from {[name for name, _, _ in confs]}")
        confs = [c for c in confs if c[0] in args.only or c[0] == REFERENCE]
    return confs


def refs_path(data):
    """The detokenized English test references the ablation's preprocessing leaves in data-bin."""
    return os.path.join(data, "refs", "test.en")


def check_inputs(args, data, fastdiss, decoded):
    """Every input this run reads must exist before any training or decoding starts."""
    needed = [(data, "data-bin")] + ([] if args.train_fastdiss or args.train_only or "fastdiss" not in decoded
                                     else [(fastdiss, "FastDiSS checkpoint")])
    needed += [(args.fastdiss_log, "--fastdiss-log")] if args.fastdiss_log else []
    needed += [] if args.train_only else [(refs_path(data), "test references")]
    for path, what in needed:
        if not os.path.exists(path):
            sys.exit(f"speed_benchmark: error: no {what} at {path}; run recipes/ablation.py first")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("speed_benchmark: error: --device cuda but torch sees no GPU")
    if args.train_fastdiss and args.train_minutes is None and args.train_updates is None:
        sys.exit("speed_benchmark: error: --train-fastdiss needs --train-updates or --train-minutes")


def training_budget(args):
    """(fairseq-train's budget flags, the budget in words). Without --train-updates or
    --train-minutes the peers get as many updates as the ablation's FastDiSS model had."""
    if args.train_minutes is None and args.train_updates is None:
        report = args.ablation_report
        if not os.path.exists(report):
            sys.exit(f"speed_benchmark: error: no {report}; give --train-updates or run recipes/ablation.py")
        with open(report) as f:
            ablation = json.load(f)
        if not ablation.get("warm_updates"):
            sys.exit(f"speed_benchmark: error: {report} has a time-budgeted warm start; give --train-updates")
        args.train_updates = ablation["warm_updates"] + ablation["settings"]["variant_updates"]
    budget, what = [], []
    if args.train_updates is not None:
        budget, what = budget + ["--max-update", args.train_updates], what + [f"{args.train_updates} updates"]
    if args.train_minutes is not None:
        budget, what = budget + ["--stop-time-hours", args.train_minutes / 60], what + [f"{args.train_minutes} minutes"]
    return budget, " or ".join(what)


def train_models(args, data, fastdiss, used):
    """Trains the models of `used` that are not yet at the budget (AR, CMLM, and FastDiSS with
    --train-fastdiss); {model: checkpoint path} of every model, trained or not."""
    budget, what = training_budget(args)
    ckpts = {"fastdiss": fastdiss}
    trainees = {peer: (os.path.join(args.work, f"peer_{peer}"), [*peer_args, *size_args(args.size), *OPTIM,
                                                                 "--max-tokens", args.max_tokens])
                for peer, peer_args in PEERS.items()}
    if args.train_fastdiss:
        trainees["fastdiss"] = (os.path.dirname(fastdiss), fastdiss_training_args(args))
    training = []
    for peer, (save, model_args) in trainees.items():
        ckpts[peer] = os.path.join(save, "checkpoint_last.pt")
        if peer not in used:
            continue
        # An update budget resumes an interrupted training (fairseq-train continues from
        # checkpoint_last.pt and stops at once if the budget is spent); a time budget would
        # start its clock again, so a finished time-budgeted peer is reused as it is.
        if args.no_train or (args.train_minutes is not None and os.path.exists(ckpts[peer])):
            continue
        # fairseq-train resumed from a checkpoint already at --max-update runs one update more
        # (it stops after the update, not before): a finished peer is not started again.
        if (args.train_minutes is None and os.path.exists(ckpts[peer])
                and checkpoint_updates(ckpts[peer]) >= args.train_updates):
            continue
        log(f"training {peer} for {what}")
        proc = start_fairseq(
            "train", [data, *model_args, *device_args(args), "--num-workers", "0", "--seed", "1",
                      *budget, "--disable-validation", "--user-dir", USER_DIR,  # resumes on torch >= 2.6
                      "--no-epoch-checkpoints", "--save-dir", save, "--log-format", "simple",
                      "--log-interval", "50"],
            out_path=training_log(args, peer), threads=args.train_threads or args.threads,
            mode="a",  # a resumed training adds to its log
            env_extra={"FASTDISS_MATMUL_PRECISION": args.fp32_matmul_precision})
        training.append(proc)
        if not args.train_side_by_side:
            finish_fairseq("train", proc)
    for proc in training:
        finish_fairseq("train", proc)
    return ckpts


def measure_rows(args, confs, data, refs, ckpts, kept):
    """Decodes and times every row of confs, scored against refs, rewriting the report after
    each; the reference row is timed again after the last one."""
    rows = []
    order = [name for name, _, _ in configurations(args.quick)]
    updates = {"fastdiss": args.fastdiss_updates, **args.peer_updates}
    os.environ["FASTDISS_MATMUL_PRECISION"] = args.fp32_matmul_precision
    in_one_process = {}

    def write_rows():  # the report so far: this run's rows, and the kept ones it did not re-measure
        measured = {r["config"]: r for r in rows}
        by_name = {**kept, **measured}
        write_report([by_name[n] for n in order if n in by_name], args,
                     kept_rows=[n for n in order if n in kept and n not in measured])

    for name, model, extra in confs:
        gen_path = row_output(args, name)
        if args.one_process_per_model and name not in in_one_process:  # this model's rows, all at once
            in_one_process.update(measure_in_one_process(args, data, ckpts[model],
                                                         [c for c in confs if c[1] == model]))
        if args.one_process_per_model:
            runs, dtype = in_one_process[name]
        else:
            runs, dtype = measure_in_own_processes(args, data, ckpts[model], model, extra, gen_path)
        if name == REFERENCE:
            first_runs = runs
        with open(gen_path, encoding="utf-8") as f:
            bleu = score_generate_output(f.read(), refs, detok_lang="en")["sacrebleu"]
        row = {"config": name, "model": model, "updates": updates[model], "measured": time.strftime("%Y-%m-%d"),
               "decoding_dtype": dtype, "sacrebleu": bleu, **run_figures(runs, args.device)}
        rows.append(row)
        log(f"{name:<24} SacreBLEU {bleu:6.2f}  {row['sentences_per_s']:8.1f} sent/s  "
            f"{row['tokens_per_s']:9.1f} tok/s  {row['peak_rss_mib']:.0f} MiB")
        write_rows()
    if len(rows) > 1:
        # The reference is timed again after the last row: a shared host's speed can drift by a
        # third within a run, which would bias every ratio one way; its row and the ratios take
        # the median of both sets of timed runs, and the report gives both.
        reference = next(c for c in confs if c[0] == REFERENCE)
        if args.one_process_per_model:
            again, _ = measure_in_one_process(args, data, ckpts["ar"], [reference])[REFERENCE]
        else:
            again, _ = measure_in_own_processes(args, data, ckpts["ar"], "ar", reference[2],
                                                row_output(args, REFERENCE))
        reference_row = next(r for r in rows if r["config"] == REFERENCE)
        retime_reference(reference_row, first_runs, again, args.device)
        log(f"{REFERENCE} again: {reference_row['sentences_per_s_last']:.1f} sent/s "
            f"(first {reference_row['sentences_per_s_first']:.1f})")
        write_rows()


def profile_at_five_steps(args, data, fastdiss):
    """recipes/profile_generator.py at 5 steps, length beam 5, beside the table."""
    log("profiling the generator at 5 steps, length beam 5")
    name = report_name(args)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads))
    with open(os.path.join(args.out, f"{name}_profile.md"), "w") as out:
        subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "profile_generator.py"), data,
                        "--path", fastdiss, "--decoding-steps", "5", "--length-beam", "5",
                        "--batch-size", str(args.batch_size), "--fp32-matmul-precision", args.fp32_matmul_precision,
                        "--decoding-dtype", args.decoding_dtype,
                        "--json", os.path.join(args.out, f"{name}_profile.json")],
                       stdout=out, stderr=subprocess.DEVNULL, env=env, check=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    # the report quotes it: a table without the command that made it cannot be reproduced
    args.command = shlex.join(["python", "recipes/speed_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.work, args.repeats = args.work + "-quick", 1
        args.train_updates = args.train_updates or 20
    confs = selected_configurations(args)
    data = args.data or os.path.join(args.work, "data-bin")
    fastdiss = args.fastdiss or os.path.join(
        args.work, *(("fastdiss",) if args.train_fastdiss else ("scp_mans.seed1",)), "checkpoint_last.pt")
    # the models whose rows this run decodes: only their checkpoints must exist (--only 'CMLM 10 it.'
    # re-measures CMLM and AR beam 5 without a FastDiSS checkpoint; the FastDiSS rows are kept)
    decoded = {model for _, model, _ in confs}
    check_inputs(args, data, fastdiss, decoded)
    args.host = host_name(args.device)
    os.makedirs(args.out, exist_ok=True)
    refs = None if args.train_only else read_refs(refs_path(data))  # read before hours of training
    # FastDiSS, AR (beam 5 is every ratio's reference) and the models of the rows named by
    # --only: a peer no row decodes is neither trained nor needed.
    used = {"fastdiss"} | decoded
    ckpts = train_models(args, data, fastdiss, used)
    if args.train_only:
        log("trained; --train-only: no decodes")
        return
    for peer in ckpts:  # in ckpts' order, so that the first missing one named is always the same
        if peer in decoded and not os.path.exists(ckpts[peer]):
            sys.exit(f"speed_benchmark: error: no checkpoint {ckpts[peer]}; run without --no-train")
    args.peer_updates = {peer: checkpoint_updates(ckpts[peer]) for peer in PEERS if peer in used}
    kept = previous_rows(args) if args.only else {}
    args.fastdiss_updates = (checkpoint_updates(fastdiss) if "fastdiss" in decoded else
                             next((r["updates"] for r in kept.values() if r["model"] == "fastdiss"), None))
    log(f"updates: {args.peer_updates}, FastDiSS {args.fastdiss_updates}")
    if "fastdiss" in decoded:  # the report says how the FastDiSS model was trained, next to the peers
        args.fastdiss_trained_with_amp = trained_with_amp(fastdiss)
    trained_here = [*PEERS, *(["fastdiss"] if args.train_fastdiss else [])]
    logs = {model: training_log(args, model) for model in trained_here if model in used}
    if args.fastdiss_log:
        logs["fastdiss"] = args.fastdiss_log
    args.training_tokens_per_s = {model: training_tokens_per_s(path) for model, path in logs.items()}
    log(f"training target tokens/s: {args.training_tokens_per_s}")
    measure_rows(args, confs, data, refs, ckpts, kept)
    if args.device == "cpu" and "fastdiss" in decoded:  # recipes/profile_generator.py times CPU work
        profile_at_five_steps(args, data, fastdiss)


def run_figures(runs, device):
    """A row's speed and memory figures from its timed runs (medians; peaks)."""
    figures = {"sentences_per_s": statistics.median(x[0] for x in runs),
               "tokens_per_s": statistics.median(x[1] for x in runs),
               "end_to_end_sentences_per_s": statistics.median(x[2] for x in runs),
               "peak_rss_mib": max(x[3] for x in runs) / 1024, "timed_runs": len(runs)}
    if device == "cuda":
        figures["peak_gpu_mib"] = max(x[4] for x in runs) / 2**20
    return figures


def retime_reference(row, first, again, device):
    """The reference row timed before the other rows (`first` runs) and after them (`again`):
    its figures become those of all its runs together, and both medians are kept."""
    row.update(run_figures(first + again, device),
               sentences_per_s_first=statistics.median(x[0] for x in first),
               sentences_per_s_last=statistics.median(x[0] for x in again))


def previous_rows(args):
    """{configuration: row} of the existing report, if it was made on the same host (a report from
    before the report named it is taken for another), at the same precision and dtype, on the same
    data and checkpoints, with models of the same size trained on batches of the same size."""
    path = os.path.join(args.out, f"{report_name(args)}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        report = json.load(f)
    settings = {"decoding_dtype": "float32", **report["settings"]}  # reports from before the option
    settings.setdefault("device", "cpu")
    if any(settings.get(k) != getattr(args, k)
           for k in ("fp32_matmul_precision", "decoding_dtype", "batch_size", "threads", "device", "host",
                     "work", "data", "fastdiss", "size", "max_tokens")):
        return {}
    # rows of a report from before rows named their updates, date and dtype get the report's
    updates = {"fastdiss": settings.get("fastdiss_updates"), **settings.get("peer_updates", {})}
    measured = time.strftime("%Y-%m-%d", time.gmtime(os.path.getmtime(path)))
    return {r["config"]: {"updates": updates.get(r["model"]), "measured": measured,
                          "decoding_dtype": settings["decoding_dtype"], **r} for r in report["rows"]}


def report_name(args):
    return (("speed-quick" if args.quick else "speed") + ("_gpu" if args.device == "cuda" else "")
            + ("_bf16" if args.decoding_dtype == "bfloat16" else ""))


def host_name(device):
    """The GPU, or the CPU's model name, that the rows ran on: speed figures of two hosts
    are not comparable, and the sessions that measure them do not always get the same one."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.M)
    except OSError:
        names = []
    return names[0].strip() if names else (platform.processor() or "unknown")


def training_precision(args):
    """How the models were trained, in words, for the report (None where unknown): a FastDiSS
    checkpoint trained with --amp ran under bfloat16 autocast on a CPU (the plugin's task), while
    fairseq's own translation tasks autocast only on CUDA."""
    amp = getattr(args, "fastdiss_trained_with_amp", None)
    if amp is None:
        return None
    if not amp:
        return "every model in float32"
    if args.device == "cpu":
        return ("FastDiSS with --amp (bfloat16 autocast, float32 weights), AR and CMLM in float32 "
                "(fairseq's translation tasks autocast only on CUDA)")
    return "FastDiSS with --amp, AR and CMLM without"


def write_report(rows, args, kept_rows=()):
    """docs/speed.{json,md,png}; kept_rows: the names of the rows --only kept from the earlier report."""
    name = report_name(args)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump({"settings": vars(args), "rows": rows}, f, indent=2)
    ar5 = next(r for r in rows if r["config"] == REFERENCE)
    gpu = args.device == "cuda"
    host = getattr(args, "host", None)
    where = "QUICK smoke run" if args.quick else ("GPU" if gpu else "CPU") + (f": {host}" if host else "")
    (dim, ffn, heads, layers), _ = SIZES[args.size]
    precision = training_precision(args)
    # FastDiSS's is unknown (None) when its rows were neither decoded nor kept
    updates = {"FastDiSS": args.fastdiss_updates, **{peer.upper(): n for peer, n in args.peer_updates.items()}}
    lines = [f"# Decoding speed and quality on de-en/test ({where}, batch size {args.batch_size}, "
             f"{args.threads} threads)", "",
             f"Model size: {args.size} ({layers} layers a side of {dim}, FFN {ffn}, {heads} heads). "
             f"Training updates (batches of {args.max_tokens} tokens): "
             + ", ".join(f"{model} {n}" for model, n in updates.items() if n is not None)
             + f". Matrix-product precision: {args.fp32_matmul_precision}. Decoding dtype: "
             + ("bfloat16 (the model cast; FastDiSS's latents and rounding float32; CMLM float32)."
                if args.decoding_dtype == "bfloat16" else "float32.")
             + (f" Training precision: {precision}." if precision else ""), ""]
    if getattr(args, "command", None):  # a report rewritten from an older JSON may lack it
        source = ("" if args.train_fastdiss or args.fastdiss else
                  " FastDiSS is the SCP+MANS model (seed 1) of `python recipes/ablation.py --work` in the same folder.")
        kept = (f" Kept from an earlier report of this host, not re-measured (--only): {', '.join(kept_rows)}."
                if kept_rows else "")
        lines += [f"Command: `{args.command}`.{source}{kept}", ""]
    trained = {m: v for m, v in getattr(args, "training_tokens_per_s", {}).items() if v}
    if trained:
        ar = trained.get("ar")
        together = "FastDiSS and the peers" if args.train_fastdiss else "the peers"
        # A FastDiSS log from elsewhere (--fastdiss-log) was written by another run than the
        # peers' (other jobs beside it, perhaps --amp): its wps is not a like-for-like ratio to
        # AR's, so none is given; the same-batch benchmark gives one.
        elsewhere = ("; FastDiSS's from its own log (--fastdiss-log), another run than the peers', so no "
                     "ratio: recipes/benchmark_train_step.py compares the update on the same batches"
                     if "fastdiss" in trained and not args.train_fastdiss else "")
        like_for_like = {m for m in trained if m != "ar" and (m != "fastdiss" or args.train_fastdiss)}
        lines += ["Training target tokens/s (median of fairseq's wps over the log intervals after the first"
                  + (f", {together} trained side by side" if args.train_side_by_side else "") + elsewhere + "): "
                  + ", ".join(f"{m} {v:.0f}" + (f" ({v / ar:.2f}x AR)" if ar and m in like_for_like else "")
                              for m, v in trained.items()) + ".", ""]
    if "sentences_per_s_last" in ar5:
        first, last = ar5["sentences_per_s_first"], ar5["sentences_per_s_last"]
        lines += [f"{REFERENCE}, the reference of the ratios, was timed before the other rows and again after "
                  f"them: {first:.1f} and {last:.1f} sentences/s (the host's speed moved {100 * (last / first - 1):+.0f} % "
                  "during the run); its row and the ratios use the median of both sets of timed runs.", ""]
    memory = "peak GPU MiB | peak RSS MiB" if gpu else "peak RSS MiB"
    lines += [f"| configuration | dtype | updates | measured | SacreBLEU | sentences/s | tokens/s | end-to-end sent/s | {memory} | speed vs AR beam 5 | timed runs |",
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for r in rows:
        memory = (f"{r['peak_gpu_mib']:.0f} | " if gpu else "") + f"{r['peak_rss_mib']:.0f}"
        lines.append(f"| {r['config']} | {r['decoding_dtype']} | {r['updates']} | "
                     f"{r['measured']} | {r['sacrebleu']:.2f} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['end_to_end_sentences_per_s']:.1f} | {memory} | "
                     f"{r['sentences_per_s'] / ar5['sentences_per_s']:.2f}x | {r['timed_runs']} |")
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with saved_figure(os.path.join(args.out, f"{name}.png"), figsize=(6.5, 4.5)) as (fig, ax):
        for model, marker, color in (("ar", "s", "C0"), ("cmlm", "^", "C1"), ("fastdiss", "o", "C2")):
            sel = [r for r in rows if r["model"] == model]
            if not sel:  # a model without rows (--only) gets no legend entry
                continue
            ax.scatter([r["sentences_per_s"] for r in sel], [r["sacrebleu"] for r in sel], marker=marker,
                       color=color, label=model)
            for r in sel:
                ax.annotate(r["config"].replace("FastDiSS ", ""), (r["sentences_per_s"], r["sacrebleu"]), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel(f"sentences/s (generator, {'GPU' if gpu else 'CPU'})")
        ax.set_ylabel("SacreBLEU (de-en/test)")
        ax.legend()
        ax.grid(alpha=0.3)


if __name__ == "__main__":
    main()
