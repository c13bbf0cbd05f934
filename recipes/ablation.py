#!/usr/bin/env python3
"""Evidence benchmark: does FastDiSS (SCP, MANS) close the few-step / many-step gap?

On ../shared/data/de-en, at one equal budget, it trains the four variants of the paper's
ablation (standard self-conditioning = baseline, +SCP, +MANS, +SCP+MANS) and decodes
de-en/test at 1, 2, 5, 10, 20, 50 and 100 steps. CPU time is the binding constraint, so the
design is the warm-start one allowed by the issue:

  1. one shared warm-start checkpoint, trained with the baseline objective for --warm-updates
     (or, on a machine of unknown speed, --warm-minutes);
  2. each variant continued from it for the same --variant-updates (same data order, seed,
     batch, learning-rate schedule), with its own SCP/MANS flags;
  3. every variant decoded at every step count (SacreBLEU, detokenized, full test set);
  4. baseline and SCP+MANS trained again with a second seed, compared at 5 steps (spread);
  5. unless --no-sweep: the SCP/MANS defaults sweep and the sampler sweep on valid, and the
     baseline and SCP+MANS at 5 steps again, each with its own best sampler on valid.

On a GPU the issue's from-scratch design runs instead: --from-scratch-updates N trains every
variant from scratch for N updates, --device cuda --arch fastdiss_iwslt_de_en, --jobs trainings
at once (recipes/gpu/run_gpu_checks.sh, one command of < 10 minutes).

Run again with a larger --warm-updates or --warm-minutes, it resumes the existing warm start up
to the new total (fairseq counts --stop-time-hours cumulatively) and trains and decodes the
variants again. Run again with a larger --variant-updates, it continues each variant from its
own checkpoint for the added updates, and decodes again.

The warm start keeps an interval checkpoint every --curve-every updates; each is decoded at
50 steps: the baseline objective's learning curve, which says whether the baseline is a real
model (the issue's bar: 50-step SacreBLEU >= 10) before any variant is compared. --curve-only
stops there (warm start and curve only), to size --warm-updates before spending the rest.
--t-min sets the criterion's lower end of the training times for every training of a run
(a run folder is bound to one value: a warm start trained with another is refused).

Outputs under --out (default docs/): ablation.json, ablation.md, ablation.png, and the run
folder with logs and checkpoints under --work. --quick runs the same pipeline in minutes on
a slice (for smoke tests; its numbers mean nothing).

    python recipes/ablation.py                      # about 2.5 hours on 2 CPU cores (AMD EPYC, AVX512-BF16):
                                                    # warm start 53 min, 10 trainings of 400 updates 47 min,
                                                    # decodes ~45 min; trains under --amp (bfloat16 autocast)
    python recipes/ablation.py --no-amp             # float32 trainings: about 2.8 hours (docs/ablation_fp32.md)
    python recipes/ablation.py --variant-updates 200   # the design until the 26th session
    python recipes/ablation.py --variants baseline scp_mans --no-sweep   # the targets only: 1.6 hours
    python recipes/ablation.py --quick --out /tmp/ablation-quick
"""

import argparse
import dataclasses
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fastdiss_fairseq import resume_check  # noqa: E402
from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLossConfig  # noqa: E402
from fastdiss_fairseq.plotting import saved_figure  # noqa: E402
from fastdiss_fairseq.scoring import read_refs, score_generate_output  # noqa: E402

USER_DIR = os.path.join(ROOT, "fastdiss_fairseq")
VARIANTS = {"baseline": [], "scp": ["--scp"], "mans": ["--mans"], "scp_mans": ["--scp", "--mans"]}
# The defaults sweep (on valid, never test): one SCP or MANS setting changed at a time against
# SCP+MANS with the criterion's defaults: how t' is drawn (uniform t' - t ~ U(0, 0.25), which
# replaced U(0, 0.5) after the twenty-third session's sweep: "scp_delta_0.5" is the old default;
# or a fixed gap), and MANS's confidence measure and strength (distance, rank, strength 0.25,
# which replaced 0.5 after the sixth session's sweep). Settings whose question is answered
# (U(0, 0.125), shared noise for z_{t'}, per-token MANS levels) were dropped when the variants
# went from 200 to 400 updates, to keep the run near 2.5 hours; their figures are in
# docs/ablation_variant200.md and docs/measurements.md.
SWEEP = {
    "scp_delta_0.5": ["--scp", "--mans", "--scp-delta-max", "0.5"],
    "scp_fixed_0.2": ["--scp", "--mans", "--scp-mode", "fixed", "--scp-delta-max", "0.2"],
    "mans_strength_0.5": ["--scp", "--mans", "--mans-strength", "0.5"],
    "mans_likelihood": ["--scp", "--mans", "--mans-measure", "likelihood"],
}
SWEEP_STEPS = (2, 5)
# The sampler sweep (on valid, decode-only) for the baseline and SCP+MANS: the update
# (--sampler-update) and rho of the time grid t_k = t_end + (1 - t_end) (1 - k/K)^rho. The
# generator's defaults since the twenty-third session: renoise, rho 0.5; before: ddim, rho 1.
SAMPLER_SETTINGS = (("ddim", 1.0), ("ddim", 0.5), ("renoise", 1.0), ("renoise", 0.5), ("renoise", 0.35))
SAMPLER_SWEEP_VARIANTS = ("baseline", "scp_mans")
# The lead at 5 steps is also compared with each model decoding with its own best sampler on valid
# (the shared default grid was chosen for both; the baseline prefers another, docs/measurements.md,
# thirty-ninth session), so that the lead is not an artefact of the sampler's default.
TUNED_STEPS = 5
MODEL_ARGS = [
    "--arch", "fastdiss_small", "--noise-scale", "4", "--pred-length-offset", "--source-copy-input",
    "--encoder-normalize-before", "--decoder-normalize-before",
]
# The example's settings, where they were measured (docs/measurements.md): a budget far below
# one pass over the data wants a high learning rate and no dropout.
OPTIM_ARGS = [
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "2.5e-3", "--lr-scheduler",
    "inverse_sqrt", "--warmup-updates", "200", "--clip-norm", "1.0", "--dropout", "0.0",
    "--max-tokens", "3072",
]
# fairseq's device flag and the float32 matrix-product precision (the task's option) for every
# train and decode; configure() sets them from --device and --fp32-matmul-precision.
DEVICE_ARGS = ["--cpu"]
# fairseq-train's --amp for every training of a run, or nothing; configure() sets it from --amp.
# On a CPU the plugin's train_step then runs the forward under bfloat16 autocast (1.4x the
# updates a second on AVX512-BF16 hosts, docs/measurements.md, thirty-seventh session).
AMP_ARGS = []


def configure(args):
    """Point every fairseq command of this run at --device, --arch and --max-tokens (module
    level: all trainings and decodes of one run share them)."""
    global DEVICE_ARGS, AMP_ARGS
    DEVICE_ARGS = ["--cpu"] if args.device == "cpu" else []
    AMP_ARGS = ["--amp"] if getattr(args, "amp", False) else []
    # on a GPU, high lets float32 matrix products run as TF32 (several times faster training)
    precision = getattr(args, "fp32_matmul_precision", "highest")
    if precision != "highest":
        DEVICE_ARGS = DEVICE_ARGS + ["--fp32-matmul-precision", precision]
    MODEL_ARGS[MODEL_ARGS.index("--arch") + 1] = args.arch
    OPTIM_ARGS[OPTIM_ARGS.index("--max-tokens") + 1] = str(args.max_tokens)
    # Training times U(t_min, 1) for the warm start and every variant alike; each decode then
    # ends its grid at the checkpoint's own t_min (the generator's default). Set, not added to:
    # configure() may run more than once in a process (speed_benchmark.py, tests).
    if "--t-min" in MODEL_ARGS:
        del MODEL_ARGS[MODEL_ARGS.index("--t-min"):MODEL_ARGS.index("--t-min") + 2]
    if args.t_min:
        MODEL_ARGS.extend(["--t-min", str(args.t_min)])


def log(msg):
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, out_path=None, append=False):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(out_path, "a" if append else "w") if out_path else open(os.devnull, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"ablation: error: {' '.join(map(str, cmd[:4]))} ... failed:\n{proc.stderr[-2000:]}")
    return proc.stderr


def fairseq(module, *args, out_path=None, append=False):
    return run([sys.executable, "-m", f"fairseq_cli.{module}", *map(str, args)], out_path, append)


def read_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def make_slice(raw, dest, max_words, limits):
    """The length-bounded training slice (and optionally smaller valid/test for --quick)."""
    os.makedirs(dest, exist_ok=True)
    for split in ("train", "valid", "test"):
        sides = {lang: read_gz(os.path.join(raw, f"{split}.{lang}.gz")) for lang in ("de", "en")}
        pairs = list(zip(sides["de"], sides["en"]))
        if split == "train":
            pairs = [(a, b) for a, b in pairs if len(a.split()) <= max_words and len(b.split()) <= max_words]
        pairs = pairs[: limits.get(split) or None]
        for i, lang in enumerate(("de", "en")):
            with open(os.path.join(dest, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                f.writelines(p[i] + "\n" for p in pairs)


def checkpoint_updates(path):
    return warm_state(path)[0]


# fairseq refuses to resume a checkpoint with the other optimizer ("Optimizer does not match")
trained_with_amp = resume_check.trained_with_amp


def amp_mismatch(path):
    """'--amp on -> off' (or off -> on) if the checkpoint was trained with the other --amp
    setting than this run's; '' if the same or if it cannot tell."""
    saved = trained_with_amp(path)
    if saved is None or saved == bool(AMP_ARGS):
        return ""
    return f"--amp {'on' if saved else 'off'} -> {'on' if AMP_ARGS else 'off'}"


def warm_state(path):
    """(updates, epoch, cumulative training seconds) of a fairseq checkpoint. fairseq's
    --stop-time-hours counts the cumulative time, so a resumed run stops at the total."""
    import torch

    import fastdiss_fairseq  # noqa: F401

    state = torch.load(path, map_location="cpu")
    extra = state["extra_state"]
    return (state["optimizer_history"][-1]["num_updates"], extra["train_iterator"]["epoch"],
            extra.get("previous_training_time", 0.0))


def criterion_settings(flags):
    """The fastdiss_loss settings that a training with these command-line flags gets: the
    criterion's defaults, overridden by the flags (other flags are ignored)."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLossConfig

    parser = argparse.ArgumentParser()
    gen_parser_from_dataclass(parser, FastDiSSLossConfig())
    return {"_name": "fastdiss_loss", **vars(parser.parse_known_args(flags)[0])}


# The criterion settings a checkpoint was trained with (a memory-mapped read, None if it cannot
# tell): the plugin's own resume check, which warns when fairseq-train resumes with other ones.
saved_criterion = resume_check.stored_criterion_cfg


def criterion_changes(ckpt, flags):
    """'--name saved -> wanted, ...' for each criterion setting in which the checkpoint differs
    from what `flags` now give (a changed default included); '' if none or if it cannot tell.
    The comparison is the resume check's, on the settings that matter to this run."""
    saved = saved_criterion(ckpt)
    if saved is None:
        return ""
    return ", ".join(resume_check.changed_options(saved, criterion_settings(flags)))


def settings_changes(ckpt, flags):
    """What a checkpoint was trained with that this run would not: criterion settings and --amp
    ('' if nothing, or if it cannot tell)."""
    return ", ".join(filter(None, (criterion_changes(ckpt, flags), amp_mismatch(ckpt))))


def training_seconds(log_path):
    """fairseq-train's own "done training in X seconds" lines of a run, summed: a variant continued
    to a larger --variant-updates appends its second training to the same log."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        found = re.findall(r"done training in ([\d.]+) seconds", f.read())
    return sum(map(float, found)) if found else None


def started_from(log_path):
    """The updates of the checkpoint a run's first training started from, read from its log
    (fairseq's "Loaded checkpoint ... (epoch E @ U updates)", 0 for "No existing checkpoint
    found"); None if the log cannot tell."""
    if not os.path.exists(log_path):
        return None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        m = re.search(r"Loaded checkpoint \S+ \(epoch \d+ @ (\d+) updates\)|(No existing checkpoint found)", f.read())
    if m is None:
        return None
    return 0 if m.group(2) else int(m.group(1))


def train(data, save_dir, extra, log_path, append=False):
    return fairseq("train", data, "--user-dir", USER_DIR, "--task", "fastdiss_translation",
                   "--criterion", "fastdiss_loss", *MODEL_ARGS, *OPTIM_ARGS,
                   *DEVICE_ARGS, *AMP_ARGS, "--num-workers", "0", "--disable-validation", "--no-epoch-checkpoints",
                   "--save-dir", save_dir, "--log-format", "simple", "--log-interval", "50", *extra,
                   out_path=log_path, append=append)


def decode_job(data, ckpt, steps, length_beam, out_path, subset="test", extra=()):
    """One decode into out_path (its log beside it, .log): the run for generate_many, and whether
    a decode that finished in an earlier run of this script (output and log complete) *with the
    same generation settings* is there to be reused, so a re-run after an interruption or with
    more configurations only decodes what is missing, and a changed option or generator default
    (e.g. clamping) is never mixed with old outputs."""
    args = [data, "--user-dir", USER_DIR, "--task", "fastdiss_translation", "--path", ckpt,
            "--gen-subset", subset, "--decoding-steps", steps, "--length-beam", length_beam,
            "--max-tokens", "12000", "--remove-bpe", "--seed", "1", *DEVICE_ARGS,
            # the exact sampler: clamping searches the whole vocabulary at every step (the
            # shortlist, the speed default since the twelfth session, is an approximation)
            "--clamping-shortlist", "0", *extra]
    settings = decode_settings(args)
    log_path = out_path + ".log"
    done = os.path.exists(log_path) and os.path.exists(out_path)
    # ...and only if it is newer than its checkpoint (a retrained variant is decoded again).
    done = done and os.path.getmtime(out_path) >= os.path.getmtime(ckpt)
    if done:
        with open(out_path, encoding="utf-8") as f:
            done = f"Generate {subset} with beam=" in f.read()
    if done:
        with open(log_path, encoding="utf-8") as f:
            done = f.read().startswith(settings + "\n")
    return {"args": [str(a) for a in args], "out": out_path, "log": log_path, "header": settings}, done


def generate_many(runs):
    """fairseq-generate for each of decode_job's runs, one after another in one process
    (recipes/generate_many.py): start-up paid once, not once a decode. Its spec stays beside the
    first output (what that process decoded)."""
    spec = runs[0]["out"] + ".spec.json"
    with open(spec, "w", encoding="utf-8") as f:
        json.dump(runs, f, indent=1)
    run([sys.executable, os.path.join(ROOT, "recipes", "generate_many.py"), spec])


def sentences_per_s(log_path):
    """fairseq-generate's own timer figure from a decode's log (None if it has none)."""
    if not os.path.exists(log_path):
        return None
    with open(log_path, encoding="utf-8") as f:
        m = re.search(r"\(([\d.]+) sentences/s", f.read())
    return float(m.group(1)) if m else None


def decode(data, ckpt, steps, length_beam, out_path, subset="test", extra=()):
    """fairseq-generate into out_path (its log beside it, .log), or the finished decode reused
    (decode_job); sentences/s."""
    return decode_many([(data, ckpt, steps, length_beam, out_path, subset, extra)])[0]


def generator_defaults() -> dict:
    from dataclasses import asdict

    from fastdiss_fairseq.generator import GeneratorConfig

    return asdict(GeneratorConfig())


def default_sampler():
    """(update, rho): the generator's default sampler, which the table decodes every variant with."""
    defaults = generator_defaults()
    return defaults["sampler_update"], defaults["decoding_time_exponent"]


def sampler_flags(update, rho):
    """The fairseq-generate flags of one sampler setting of the sweep."""
    return ("--sampler-update", update, "--decoding-time-exponent", f"{rho:g}")


def decode_settings(args) -> str:
    """One line naming a decode: its command and the generator's defaults at the time."""
    return "# decode: " + json.dumps({"args": [str(a) for a in args], "generator_defaults": generator_defaults()})


def decode_many(tasks, jobs=1):
    """decode(*task) for every task: the decodes not already there shared among `jobs` processes
    at once, each running its share one after another; their sentences/s in task order. Decoding
    is seeded, so decodes side by side give the same outputs: only their speed figures are shared."""
    todo = [job for job, done in (decode_job(*task) for task in tasks) if not done]
    shares = [todo[i::max(1, jobs)] for i in range(min(max(1, jobs), len(todo)))]
    with ThreadPoolExecutor(max_workers=max(1, len(shares))) as pool:
        list(pool.map(generate_many, shares))
    return [sentences_per_s(task[4] + ".log") for task in tasks]


def sacrebleu(gen_path, refs):
    with open(gen_path, encoding="utf-8") as f:
        return score_generate_output(f.read(), refs, detok_lang="en")["sacrebleu"]


def continue_from_warm(data, work, name, flags, seed, warm_ckpt, max_update, interval=None, max_minutes=0.0):
    """Train one variant from the shared warm start up to update `max_update`; its checkpoint.
    With warm_ckpt None, from scratch, keeping a checkpoint every `interval` updates. With
    max_minutes, the training also stops after that many minutes (a timed GPU machine), and a
    finished one is kept whatever its updates (the report gives them). One trained to fewer
    updates from this same warm start with the same settings is continued to `max_update`: a
    larger --variant-updates costs only the added updates."""
    save = os.path.join(work, name)
    ckpt = os.path.join(save, "checkpoint_last.pt")
    log_path = os.path.join(work, f"{name}.log")
    trained_to = checkpoint_updates(ckpt) if os.path.exists(ckpt) else None
    changes = settings_changes(ckpt, MODEL_ARGS + flags) if trained_to is not None else ""
    stale = continued = None
    if changes:
        # Trained with other SCP/MANS settings (e.g. before a criterion default changed) or --amp.
        stale = f"was trained with other settings ({changes})"
    elif trained_to is not None and trained_to != max_update and not max_minutes:
        origin = checkpoint_updates(warm_ckpt) if warm_ckpt else 0
        if trained_to < max_update and started_from(log_path) == origin:
            continued = trained_to
        else:
            # Continued from an earlier (shorter) warm start, or trained past this budget.
            stale = f"was trained to update {trained_to}, not {max_update}"
    if stale:
        # Kept aside as NAME.stale (one generation) rather than deleted: a mistaken verdict
        # must not cost a training.
        log(f"{name} {stale}: training it again (the old one is kept in {name}.stale)")
        shutil.rmtree(save + ".stale", ignore_errors=True)
        os.rename(save, save + ".stale")
    if continued is not None:
        # fairseq resumes its own checkpoint_last (optimizer, data position, update count): the
        # data order and learning-rate schedule of a single run to max_update (not bitwise: CPU
        # training is not repeatable to the bit anyway).
        log(f"continuing {name} from update {continued} to {max_update}")
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"\n# continued at update {continued} to {max_update}\n")
        keep = [] if warm_ckpt else ["--save-interval-updates", str(interval)]
        budget = [*keep, "--max-update", str(max_update)]
    elif not os.path.exists(ckpt):
        log(f"training {name} from {'the warm start' if warm_ckpt else 'scratch'} to update {max_update}")
        start = (["--restore-file", warm_ckpt, "--reset-dataloader"] if warm_ckpt
                 else ["--save-interval-updates", str(interval)])
        cap = ["--stop-time-hours", str(max_minutes / 60)] if max_minutes else []
        budget = [*start, "--max-update", str(max_update), *cap]
    else:
        return ckpt
    t0 = time.time()
    train(data, save, flags + ["--seed", str(seed), *budget], log_path, append=continued is not None)
    log(f"  trained in {time.time() - t0:.0f} s")
    return ckpt


def curve_decodes(data, warm, warm_updates, length_beam, steps=50, extra=(), tag=""):
    """(updates, decode task) for each interval checkpoint of the warm start (from scratch: of the
    baseline's run) and its last one, in order of updates."""
    points = []
    for name in os.listdir(warm):
        m = re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", name)
        if m:
            points.append((int(m.group(1)), os.path.join(warm, name)))
    if warm_updates not in {u for u, _ in points}:
        points.append((warm_updates, os.path.join(warm, "checkpoint_last.pt")))
    return [(updates, (data, ckpt, steps, length_beam, os.path.join(warm, f"curve.{updates}.gen{steps}{tag}.txt"),
                       "test", extra)) for updates, ckpt in sorted(points)]


def learning_curve(points, refs, jobs=1):
    """The baseline objective's SacreBLEU at each of curve_decodes' points: what the issue asks
    for when the baseline stays below its 10-BLEU bar."""
    decode_many([task for _, task in points], jobs)
    curve = []
    for updates, task in points:
        bleu = sacrebleu(task[4], refs)
        curve.append({"updates": updates, "steps": task[2], "sacrebleu": bleu})
        log(f"  baseline objective at {updates} updates, K={task[2]}: SacreBLEU {bleu:.2f}")
    return curve


def warm_start(args, data):
    """The shared warm start, trained (or resumed) to the budget asked: its checkpoint, updates
    and cumulative training seconds. The checkpoint is read once before and once after."""
    warm = os.path.join(args.work, "warm")
    ckpt = os.path.join(warm, "checkpoint_last.pt")
    if args.warm_updates:
        budget, what = ["--max-update", str(args.warm_updates)], f"{args.warm_updates} updates"
    else:
        budget, what = ["--stop-time-hours", str(args.warm_minutes / 60)], f"{args.warm_minutes} minutes"
    warm_args = ["--seed", "1", *budget, "--save-interval-updates", str(args.curve_every)]
    if not os.path.exists(ckpt):
        log(f"warm start: baseline objective for {what}")
        train(data, warm, warm_args, os.path.join(args.work, "warm.log"))
    else:
        updates, epoch, seconds = warm_state(ckpt)
        changes = settings_changes(ckpt, MODEL_ARGS)
        if changes:
            sys.exit(f"ablation: error: the warm start in {warm} was trained with other settings "
                     f"({changes}); pass another --work")
        if args.warm_updates and updates > args.warm_updates:
            sys.exit(f"ablation: error: the warm start in {warm} has {updates} updates, more "
                     f"than --warm-updates {args.warm_updates}; pass another --work")
        if updates < args.warm_updates if args.warm_updates else seconds < args.warm_minutes * 60 - 60:
            # A longer budget than the existing warm start's: fairseq resumes it from its last
            # checkpoint. That checkpoint is kept under fairseq's interval name first, so the
            # learning curve keeps the point; the variants and their decodes are redone.
            shutil.copy2(ckpt, os.path.join(warm, f"checkpoint_{epoch}_{updates}.pt"))
            log(f"warm start: extending it from {updates} updates ({seconds / 60:.1f} minutes) to {what}")
            with open(os.path.join(args.work, "warm.log"), "a", encoding="utf-8") as f:
                f.write(f"\n# resumed at update {updates} for {what}\n")
            train(data, warm, warm_args, os.path.join(args.work, "warm.resume.log"))
    updates, _, seconds = warm_state(ckpt)
    log(f"warm start has {updates} updates")
    return ckpt, updates, seconds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", default=os.path.join(ROOT, "..", "shared", "data", "de-en"))
    p.add_argument("--work", default=os.path.join(ROOT, "runs", "ablation"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs"))
    # 4000 at --t-min 0.5: the baseline's 50-step SacreBLEU crosses the issue's bar of 10 there
    # (4.78 / 7.42 / 10.71 / 12.41 at 1000-4000 updates in docs/ablation.md; 4.72 / 7.28 / 10.22 /
    # 11.83 in float32, docs/ablation_fp32.md; 3.81 / 6.29 / 8.92 / 10.52 in an earlier run,
    # docs/measurements.md, twenty-first session). At --t-min 0 it took
    # 6000-7000 updates and the benchmark about 3 hours (docs/ablation_tmin0.md).
    p.add_argument("--warm-updates", type=int, default=4000,
                   help="warm-start length in updates (the reproducible budget; 0: use --warm-minutes)")
    p.add_argument("--warm-minutes", type=float, default=0.0,
                   help="train the warm start for this many minutes instead (overrides --warm-updates)")
    p.add_argument("--from-scratch-updates", type=int, default=0, metavar="N",
                   help="no warm start: train every variant from scratch for N updates (the GPU design)")
    p.add_argument("--from-scratch-minutes", type=float, default=0.0, metavar="M",
                   help="with --from-scratch-updates: each training also stops after M minutes (a cap "
                        "for a timed machine; the report gives the updates every variant reached)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--fp32-matmul-precision", choices=["highest", "high", "medium"], default="highest",
                   help="every training and decode (the task's option; on a GPU, high: TF32)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="train under fairseq's --amp (on a CPU: the forward in bfloat16 autocast; the default "
                        "since the thirty-ninth session: three runs of the benchmark gave the same result, "
                        "the --amp one 1.3x faster); --no-amp trains in float32; a run folder is bound to one "
                        "setting (a warm start trained with the other is refused)")
    p.add_argument("--arch", default="fastdiss_small", help="fastdiss_iwslt_de_en on a GPU")
    p.add_argument("--max-tokens", type=int, default=3072, help="training batch size in tokens")
    # 0.5: the baseline learns 1.3-1.5x faster per update from U(0.5, 1) on this data
    # (docs/measurements.md, eighth and eleventh sessions), which brings the CPU benchmark
    # under the issue's 2.5 hours. The GPU script passes --t-min 0 (the paper's U(0, 1)).
    p.add_argument("--t-min", type=float, default=0.5,
                   help="the criterion's --t-min (training times U(t_min, 1)) for every training of the run")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run at once, then processes sharing the decodes (each runs its share one "
                        "after another, recipes/generate_many.py); on one GPU several small models share it "
                        "well; the decodes' sentences/s are then shared-machine figures")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="the variants to train and decode (baseline and scp_mans, whose comparison the "
                        "targets are, at least): a short GPU lease trains two side by side in the time of four")
    p.add_argument("--variant-updates", type=int, default=400,
                   help="updates of each variant from the warm start (200 until the twenty-sixth session: "
                        "SCP+MANS's lead grew with more; a larger value continues trained variants)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100])
    p.add_argument("--length-beam", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bpe-merges", type=int, default=6000)
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--curve-every", type=int, default=1000,
                   help="warm-start checkpoint interval (updates) of the baseline's learning curve")
    p.add_argument("--recompute-max-steps", type=int, default=5,
                   help="decode baseline and SCP+MANS with recomputed self-conditioning up to this K")
    p.add_argument("--no-sweep", action="store_true",
                   help="skip the SCP/MANS defaults sweep and the sampler sweep on valid")
    p.add_argument("--no-clamping", action="store_true",
                   help="decode with --no-clamping (the generator's default before the fourth session); "
                        "report ablation_no_clamping.* beside the default one")
    p.add_argument("--quick", action="store_true", help="minutes-long smoke run on a slice")
    p.add_argument("--curve-only", action="store_true",
                   help="train (or extend) the warm start, print its learning curve at 50 steps, and stop: "
                        "how many updates the baseline needs to reach the 10-BLEU bar, before any variant runs")
    p.add_argument("--report-from", metavar="JSON",
                   help="only rewrite the table and plot under --out from a finished run's JSON")
    return p


# What the data-bin, the warm start and every variant of a --work folder were made from. They are
# reused by later runs (the checkpoint checks compare only the criterion's settings and --amp), so
# another slice, vocabulary, model or batch would be reused silently while the report printed the
# new settings.
WORK_IDENTITY = ("raw", "max_words", "bpe_merges", "arch", "max_tokens")


def check_work_identity(args):
    """Refuse a --work folder made with other data or model settings; record them in a new one."""
    path = os.path.join(args.work, "run.json")
    now = {k: os.path.realpath(args.raw) if k == "raw" else getattr(args, k) for k in WORK_IDENTITY}
    if os.path.exists(path):
        with open(path) as f:
            kept = json.load(f)
        changed = [f"--{k.replace('_', '-')} {kept.get(k)} -> {now[k]}" for k in WORK_IDENTITY if kept.get(k) != now[k]]
        if changed:
            sys.exit(f"ablation: error: --work {args.work} was made with other settings ({'; '.join(changed)}); "
                     "use another --work or the same settings")
    with open(path, "w") as f:
        json.dump(now, f, indent=2)


def main(argv=None):
    # the command as given, for the report (options like --quick rewrite args below)
    command = shlex.join(["python", "recipes/ablation.py", *(sys.argv[1:] if argv is None else argv)])
    args = build_parser().parse_args(argv)
    if args.report_from:
        with open(args.report_from) as f:
            results = json.load(f)
        os.makedirs(args.out, exist_ok=True)
        write_report(results, args.out, results["settings"]["quick"])
        return
    limits = {}
    if args.warm_minutes:
        args.warm_updates = 0
    if not (args.warm_updates or args.warm_minutes or args.from_scratch_updates):
        sys.exit("ablation: error: the warm start needs --warm-updates > 0 or --warm-minutes > 0")
    configure(args)
    if args.quick:
        args.warm_updates, args.warm_minutes = 0, 0.5
        args.variant_updates, args.steps, args.curve_every = 10, [1, 2, 5], 5
        args.recompute_max_steps = 2
        args.bpe_merges, limits = 500, {"train": 2000, "valid": 50, "test": 50}
        args.work = args.work + "-quick"
    if not 0.0 <= args.t_min < 1.0:
        sys.exit(f"ablation: error: --t-min must be in [0, 1), got {args.t_min}")
    missing = {"baseline", "scp_mans"} - set(args.variants)
    if missing:
        sys.exit(f"ablation: error: --variants must include {sorted(missing)} (the targets compare them)")
    args.variants = [v for v in VARIANTS if v in args.variants]  # the report's order
    for k in args.steps:
        if k < 1:
            sys.exit(f"ablation: error: --steps must be >= 1, got {k}")
    os.makedirs(args.work, exist_ok=True)
    check_work_identity(args)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    decode_extra, tag = (("--no-clamping",), ".noclamp") if args.no_clamping else ((), "")

    data = os.path.join(args.work, "data-bin")
    if not os.path.exists(os.path.join(data, "prepare.json")):
        if not os.path.isdir(args.raw):
            sys.exit(f"ablation: error: --raw {args.raw} is not a folder (expected ../shared/data/de-en)")
        log("preparing the length-bounded slice")
        make_slice(args.raw, os.path.join(args.work, "raw"), args.max_words, limits)
        run([sys.executable, os.path.join(ROOT, "preprocess", "prepare_parallel.py"), "--raw",
             os.path.join(args.work, "raw"), "--src", "de", "--tgt", "en", "--bpe-merges",
             str(args.bpe_merges), "--out", data])
    refs = read_refs(os.path.join(data, "refs", "test.en"))

    if args.from_scratch_updates:
        warm_ckpt, warm_updates, warm_seconds = None, 0, None
        variant_max_update = args.from_scratch_updates
        curve_dir = os.path.join(args.work, f"baseline.seed{args.seeds[0]}")
    else:
        warm_ckpt, warm_updates, warm_seconds = warm_start(args, data)
        variant_max_update = warm_updates + args.variant_updates  # every variant: the same updates
        curve_dir = os.path.dirname(warm_ckpt)
        if args.curve_only:
            curve = learning_curve(curve_decodes(data, curve_dir, warm_updates, args.length_beam,
                                                 extra=decode_extra, tag=tag), refs, args.jobs)
            with open(os.path.join(args.work, "warm_curve.json"), "w") as f:
                json.dump({"settings": dict(vars(args)), "train_seconds": warm_seconds, "curve": curve}, f, indent=2)
            log(f"learning curve in {os.path.join(args.work, 'warm_curve.json')}; "
                f"done in {(time.time() - start) / 60:.1f} minutes")
            return

    runs = [(v, args.seeds[0]) for v in args.variants] + [
        (v, s) for s in args.seeds[1:] for v in ("baseline", "scp_mans")
    ]
    # The sweep's reference rows are variants already trained: SCP+MANS with the defaults, and
    # the baseline (is any setting above it on valid?).
    sweep = {} if args.no_sweep else {
        "defaults": (f"scp_mans.seed{args.seeds[0]}", VARIANTS["scp_mans"]),
        "baseline (reference)": (f"baseline.seed{args.seeds[0]}", VARIANTS["baseline"]),
        **{name: (f"sweep.{name}", flags) for name, flags in SWEEP.items()}}
    # Every training first (--jobs at once), then every decode.
    trainings = [(f"{v}.seed{seed}", VARIANTS[v], seed) for v, seed in runs] + [
        (run_name, flags, args.seeds[0]) for run_name, flags in sweep.values() if run_name.startswith("sweep.")]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(continue_from_warm, data, args.work, name, flags, seed, warm_ckpt,
                                   variant_max_update, args.curve_every, args.from_scratch_minutes)
                       for name, flags, seed in trainings]:
            future.result()
    def last_checkpoint(variant, seed):
        return os.path.join(args.work, f"{variant}.seed{seed}", "checkpoint_last.pt")

    # what each run reached (below variant_max_update only where --from-scratch-minutes stopped it)
    updates = {f"{v}.seed{seed}": checkpoint_updates(last_checkpoint(v, seed)) for v, seed in runs}

    # Every decode of the run: the baseline's learning curve, every variant at every K (the
    # second seeds at 5), the recomputed self-conditioning, the defaults sweep on valid.
    seed0 = args.seeds[0]
    curve = curve_decodes(data, curve_dir, warm_updates or updates[f"baseline.seed{seed0}"], args.length_beam,
                          extra=decode_extra, tag=tag)
    cells = [(variant, seed, k) for variant, seed in runs for k in (args.steps if seed == seed0 else [5])]
    table = [(data, last_checkpoint(variant, seed), k, args.length_beam,
              os.path.join(args.work, f"{variant}.seed{seed}.gen{k}{tag}.txt"), "test", decode_extra)
             for variant, seed, k in cells]
    # The analysis upper bound: the self-conditioning estimate recomputed at the current level
    # (f(z_t, 0, t), 2K passes) instead of reused from the previous step.
    recompute_cells = [(variant, k) for variant in ("baseline", "scp_mans") for k in args.steps
                       if k <= args.recompute_max_steps]
    recompute = [(data, last_checkpoint(variant, seed0), k, args.length_beam,
                  os.path.join(args.work, f"{variant}.seed{seed0}.recompute.gen{k}{tag}.txt"), "test",
                  ("--inference-self-conditioning", "recompute", *decode_extra)) for variant, k in recompute_cells]
    sweep_cells = [(name, run_name, flags, k) for name, (run_name, flags) in sweep.items() for k in SWEEP_STEPS]
    sweep_decodes = [(data, os.path.join(args.work, run_name, "checkpoint_last.pt"), k, args.length_beam,
                      os.path.join(args.work, f"{run_name}.valid.gen{k}{tag}.txt"), "valid", decode_extra)
                     for _, run_name, _, k in sweep_cells]
    # The sampler sweep, decode-only: the trained baseline and SCP+MANS, each update and grid.
    grid_cells = [] if args.no_sweep else [(variant, update, rho, k) for variant in SAMPLER_SWEEP_VARIANTS
                                           for update, rho in SAMPLER_SETTINGS for k in SWEEP_STEPS]
    grid_decodes = [(data, last_checkpoint(variant, seed0), k, args.length_beam,
                     os.path.join(args.work, f"{variant}.seed{seed0}.valid.gen{k}.{update}.rho{rho:g}{tag}.txt"),
                     "valid", (*sampler_flags(update, rho), *decode_extra))
                    for variant, update, rho, k in grid_cells]
    # All at once, shared among --jobs processes (each pays its start-up once), so that the
    # per-part decode_many calls below find them done and only read their speed figures.
    decode_many([task for _, task in curve] + table + recompute + sweep_decodes + grid_decodes, args.jobs)

    results = {"settings": dict(vars(args), scp_mans_defaults=scp_mans_defaults(), command=command),
               "warm_updates": warm_updates, "updates": updates,
               "train_seconds": {"warm": warm_seconds}, "runs": [],
               "baseline_curve": learning_curve(curve, refs, args.jobs)}
    for variant, seed in runs:
        results["train_seconds"][f"{variant}.seed{seed}"] = training_seconds(
            os.path.join(args.work, f"{variant}.seed{seed}.log"))
    for (variant, seed, k), task, sps in zip(cells, table, decode_many(table, args.jobs)):
        results["runs"].append({"variant": variant, "seed": seed, "steps": k,
                                "sacrebleu": sacrebleu(task[4], refs), "sentences_per_s": sps})
        log(f"  {variant} seed {seed} K={k}: SacreBLEU {results['runs'][-1]['sacrebleu']:.2f} ({sps} sent/s)")
    results["recompute"] = []
    for (variant, k), task, sps in zip(recompute_cells, recompute, decode_many(recompute, args.jobs)):
        results["recompute"].append({"variant": variant, "steps": k, "sacrebleu": sacrebleu(task[4], refs),
                                     "sentences_per_s": sps})
        log(f"  {variant} K={k} recomputed self-conditioning: SacreBLEU {results['recompute'][-1]['sacrebleu']:.2f}")
    # Defaults sweep on valid: SCP+MANS with the defaults, and each alternative setting.
    valid_refs = read_refs(os.path.join(data, "refs", "valid.en"))
    results["sweep"] = []
    decode_many(sweep_decodes, args.jobs)
    for (name, run_name, flags, k), task in zip(sweep_cells, sweep_decodes):
        results["sweep"].append({"setting": name, "flags": flags, "steps": k,
                                 "sacrebleu_valid": sacrebleu(task[4], valid_refs)})
        log(f"  sweep {name} K={k}: valid SacreBLEU {results['sweep'][-1]['sacrebleu_valid']:.2f}")
    results["sampler_sweep"] = []
    for (variant, update, rho, k), task in zip(grid_cells, grid_decodes):
        results["sampler_sweep"].append({"variant": variant, "update": update, "exponent": rho, "steps": k,
                                         "sacrebleu_valid": sacrebleu(task[4], valid_refs)})
        log(f"  sampler {variant} {update} rho={rho:g} K={k}: valid SacreBLEU "
            f"{results['sampler_sweep'][-1]['sacrebleu_valid']:.2f}")
    # Each model with its own sampler: test at TUNED_STEPS, every seed, with the setting the
    # sampler sweep found best on valid (the table's own cell where that is the default).
    default = default_sampler()
    tuned_cells = []
    if results["sampler_sweep"] and TUNED_STEPS in args.steps:
        tuned_cells = [(variant, seed, *best_sampler(results["sampler_sweep"], variant))
                       for variant in SAMPLER_SWEEP_VARIANTS for seed in args.seeds]

    def tuned_path(variant, seed, update, rho):
        return os.path.join(args.work, f"{variant}.seed{seed}.gen{TUNED_STEPS}.{update}.rho{rho:g}{tag}.txt")

    tuned_decodes = [(data, last_checkpoint(variant, seed), TUNED_STEPS, args.length_beam,
                      tuned_path(variant, seed, update, rho), "test",
                      (*sampler_flags(update, rho), *decode_extra))
                     for variant, seed, update, rho in tuned_cells if (update, rho) != default]
    decode_many(tuned_decodes, args.jobs)
    table_score = {(r["variant"], r["seed"]): r["sacrebleu"] for r in results["runs"] if r["steps"] == TUNED_STEPS}
    results["tuned_sampler"] = []
    for variant, seed, update, rho in tuned_cells:
        score = (table_score[(variant, seed)] if (update, rho) == default
                 else sacrebleu(tuned_path(variant, seed, update, rho), refs))
        results["tuned_sampler"].append({"variant": variant, "seed": seed, "update": update, "exponent": rho,
                                         "steps": TUNED_STEPS, "sacrebleu": score})
        log(f"  {variant} seed {seed} K={TUNED_STEPS} with its own sampler ({update}, rho={rho:g}): "
            f"SacreBLEU {score:.2f}")
    results["wall_minutes"] = (time.time() - start) / 60
    write_report(results, args.out, args.quick)
    log(f"done in {results['wall_minutes']:.1f} minutes; report in {args.out}")


def best_sampler(sampler_sweep, variant, steps=TUNED_STEPS):
    """(update, rho) of the sampler sweep's setting that scores best on valid for `variant` at
    `steps` (the first in SAMPLER_SETTINGS order on a tie); None if the sweep has no such cell."""
    scored = [(r["sacrebleu_valid"], -SAMPLER_SETTINGS.index((r["update"], r["exponent"])), r["update"], r["exponent"])
              for r in sampler_sweep if r["variant"] == variant and r["steps"] == steps]
    return max(scored)[2:] if scored else None


def scp_mans_defaults():
    """What `--scp --mans` meant in this run: the criterion's SCP and MANS defaults (they have
    changed between runs; docs/measurements.md says when and why)."""
    cfg = FastDiSSLossConfig()
    # every --scp-* and --mans-* option, so that one added later is recorded too
    return {f.name: str(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if f.name.startswith(("scp_", "mans_"))}


def target_lines(cell, seed, seeds, tuned=()):
    """The issue's targets, each met or not with its margin; the comparison is reported as
    inconclusive when the baseline is not a real model (50-step SacreBLEU below 10). `tuned`:
    the results' "tuned_sampler" rows (each model with its own sampler), for the lead once more."""
    def get(variant, k, at_seed=seed):
        return cell.get((variant, at_seed, k), float("nan"))

    base50 = get("baseline", 50)
    checks = [
        ("baseline is a real model: its 50-step SacreBLEU >= 10 (SacreBLEU)", base50, base50 >= 10),
        # "within" is one-sided: fewer steps scoring above 50 steps is not a miss
        ("FastDiSS 5 steps within 0.3 of its own 50 steps (5 - 50)", get("scp_mans", 5) - get("scp_mans", 50),
         get("scp_mans", 5) - get("scp_mans", 50) >= -0.3),
        ("FastDiSS 5 steps >= baseline 5 steps + 1.0 (difference)", get("scp_mans", 5) - get("baseline", 5),
         get("scp_mans", 5) - get("baseline", 5) >= 1.0),
        ("FastDiSS 2 steps within 1.0 of its own 50 steps (2 - 50)", get("scp_mans", 2) - get("scp_mans", 50),
         get("scp_mans", 2) - get("scp_mans", 50) >= -1.0),
    ]
    lines = ["| target | figure | met |", "|---|---|---|"]
    lines += [f"| {what} | {value:{'.2f' if i == 0 else '+.2f'}} | {'yes' if ok else 'no'} |"
              for i, (what, value, ok) in enumerate(checks)]
    if len(seeds) > 1:
        gaps = [get("scp_mans", 5, x) - get("baseline", 5, x) for x in seeds]
        lines.append(f"| FastDiSS - baseline at 5 steps, per seed ({', '.join(map(str, seeds))}) | "
                     f"{', '.join(f'{g:+.2f}' for g in gaps)} | spread {max(gaps) - min(gaps):.2f} |")
    own = {(r["variant"], r["seed"]): r["sacrebleu"] for r in tuned}
    if own:
        leads = [own.get(("scp_mans", x), float("nan")) - own.get(("baseline", x), float("nan")) for x in seeds]
        lines.append(f"| FastDiSS 5 steps >= baseline 5 steps + 1.0, each with its own sampler (below), per seed "
                     f"({', '.join(map(str, seeds))}) | {', '.join(f'{g:+.2f}' for g in leads)} | "
                     f"{', '.join('yes' if g >= 1.0 else 'no' for g in leads)} |")
    if not base50 >= 10:
        lines += ["", f"The baseline scores {base50:.2f} at 50 steps, below the bar of 10: the variant "
                  "comparison is **inconclusive** at this budget (see the learning curve below)."]
    return lines


def write_report(results, out, quick):
    s = results["settings"]
    name = ("ablation-quick" if quick else "ablation") + ("_gpu" if s.get("device") == "cuda" else "") + (
        "_no_clamping" if s.get("no_clamping") else "")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    cell = {(r["variant"], r["seed"], r["steps"]): r["sacrebleu"] for r in results["runs"]}
    seed0 = s["seeds"][0]
    lines = [
        f"# FastDiSS ablation on de-en/test ({'QUICK smoke run: numbers mean nothing' if quick else 'SacreBLEU, detokenized'})",
        "",
        (f"From scratch: each variant {s['from_scratch_updates']} updates" + (
            f" or {s['from_scratch_minutes']:g} minutes, whichever came first (reached: "
            + ", ".join(f"{run} {n}" for run, n in results.get("updates", {}).items()) + ")"
            if s.get("from_scratch_minutes") else "") if s.get("from_scratch_updates") else
         f"Warm start: {results['warm_updates']} updates of the baseline objective; each variant then "
         f"{s['variant_updates']} updates")
        + f"; {s.get('arch', 'fastdiss_small')} on {s.get('device', 'cpu')}"
        + (", trained with --amp (on the CPU: bfloat16 autocast)" if s.get("amp") else "")
        + f", {s.get('max_tokens', 3072)} tokens "
        f"a batch; training times U({s.get('t_min', 0.0)}, 1); {s['bpe_merges']} BPE merges; training pairs "
        f"with at most {s['max_words']} words a side; length beam {s['length_beam']}; seed {seed0}; decoded "
        f"{'with --no-clamping' if s.get('no_clamping') else 'with clamping (the default since the fourth session)'}.",
        *([] if "command" not in s else [
            "", f"Reproduce from a clean clone: `bash scripts/setup_env.sh && . .venv/bin/activate && {s['command']}` "
            "(run again in the same checkout, it reuses the trainings and decodes already done)."]),
        *([] if "scp_mans_defaults" not in s else [
            "", "SCP and MANS with the criterion's defaults: " + ", ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in s["scp_mans_defaults"].items()) + "."]),
        "",
        "| variant | " + " | ".join(f"K={k}" for k in s["steps"]) + " |",
        "|---|" + "---|" * len(s["steps"]),
    ]
    variants = s.get("variants", list(VARIANTS))  # reports from before the option had all four
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{cell.get((v, seed0, k), float('nan')):.2f}" for k in s["steps"]) + " |")
    if len(s["seeds"]) > 1:
        lines += ["", "Second seed, 5 steps:", "", "| variant | " + " | ".join(f"seed {x}" for x in s["seeds"]) + " |",
                  "|---|" + "---|" * len(s["seeds"])]
        for v in ("baseline", "scp_mans"):
            lines.append(f"| {v} | " + " | ".join(f"{cell.get((v, x, 5), float('nan')):.2f}" for x in s["seeds"]) + " |")
    if results.get("recompute"):
        ks = sorted({r["steps"] for r in results["recompute"]})
        redo = {(r["variant"], r["steps"]): r["sacrebleu"] for r in results["recompute"]}
        lines += ["", "Self-conditioning at inference: reused from the previous step (the sampler, K passes) "
                  "against recomputed at the current level (the analysis upper bound, 2K passes):", "",
                  "| variant | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for v in ("baseline", "scp_mans"):
            lines.append(f"| {v}, reused | " + " | ".join(f"{cell.get((v, seed0, k), float('nan')):.2f}" for k in ks) + " |")
            lines.append(f"| {v}, recomputed | " + " | ".join(f"{redo.get((v, k), float('nan')):.2f}" for k in ks) + " |")
    lines += ["", "Targets (issue 4), from the table above:", ""] + target_lines(
        cell, seed0, s["seeds"], results.get("tuned_sampler", ()))
    if results.get("tuned_sampler"):
        seeds = sorted({r["seed"] for r in results["tuned_sampler"]})
        own = {(r["variant"], r["seed"]): r for r in results["tuned_sampler"]}
        lines += ["", f"Each model with its own sampler at {TUNED_STEPS} steps (test): the update and rho that "
                  f"scored best on valid at {TUNED_STEPS} steps in the sampler sweep below; the table above "
                  "decodes every variant with the generator's defaults:", "",
                  "| variant | sampler | " + " | ".join(f"seed {x}" for x in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for v in SAMPLER_SWEEP_VARIANTS:
            first = own[(v, seeds[0])]
            lines.append(f"| {v} | {first['update']}, rho {first['exponent']:g} | "
                         + " | ".join(f"{own[(v, x)]['sacrebleu']:.2f}" for x in seeds) + " |")
    if results["sweep"]:
        budget = (f"from scratch for {s['from_scratch_updates']} updates" if s.get("from_scratch_updates")
                  else f"from the warm start for {s['variant_updates']} updates")
        lines += ["", f"SCP/MANS defaults sweep on de-en/valid (never test), each {budget}, seed {seed0}:", "",
                  "| setting | flags | " + " | ".join(f"valid K={k}" for k in SWEEP_STEPS) + " |",
                  "|---|---|" + "---|" * len(SWEEP_STEPS)]
        sweep = {}
        for r in results["sweep"]:
            sweep.setdefault((r["setting"], " ".join(r["flags"])), {})[r["steps"]] = r["sacrebleu_valid"]
        for (setting, flags), by_k in sweep.items():
            flags = flags or "(none)"
            lines.append(f"| {setting} | `{flags}` | " + " | ".join(f"{by_k[k]:.2f}" for k in SWEEP_STEPS) + " |")
    if results.get("sampler_sweep"):
        default = default_sampler()
        lines += ["", "The sampler on de-en/valid (never test), decode-only, the variants above (seed "
                  f"{seed0}): `--sampler-update` and rho of the time grid t_k = t_end + (1 - t_end) (1 - k/K)^rho; "
                  f"the table above used the defaults, {default[0]} and rho = {default[1]:g}:",
                  "", "| variant | update | rho | " + " | ".join(f"valid K={k}" for k in SWEEP_STEPS) + " |",
                  "|---|---|---|" + "---|" * len(SWEEP_STEPS)]
        grid = {}
        for r in results["sampler_sweep"]:
            grid.setdefault((r["variant"], r["update"], r["exponent"]), {})[r["steps"]] = r["sacrebleu_valid"]
        for (variant, update, rho), by_k in grid.items():
            mark = " (default)" if (update, rho) == default else ""
            lines.append(f"| {variant} | {update} | {rho:g}{mark} | "
                         + " | ".join(f"{by_k[k]:.2f}" for k in SWEEP_STEPS) + " |")
    lines += ["", "Baseline objective's learning curve ("
              + ("the baseline's interval checkpoints" if s.get("from_scratch_updates") else "warm-start checkpoints")
              + ", 50 steps):", "",
              "| updates | " + " | ".join(str(p["updates"]) for p in results["baseline_curve"]) + " |",
              "|---|" + "---|" * len(results["baseline_curve"]),
              "| SacreBLEU | " + " | ".join(f"{p['sacrebleu']:.2f}" for p in results["baseline_curve"]) + " |"]
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with saved_figure(os.path.join(out, f"{name}.png"), figsize=(6, 4)) as (fig, ax):
        for v in variants:
            ax.plot(s["steps"], [cell.get((v, seed0, k), float("nan")) for k in s["steps"]], marker="o", label=v)
        ax.set_xscale("log")
        ax.set_xlabel("decoding steps K")
        ax.set_ylabel("SacreBLEU (de-en/test)")
        ax.legend()
        ax.grid(alpha=0.3)


if __name__ == "__main__":
    main()
