"""recipes/ablation.py's report: the issue's targets judged from the table, and the rewrite of
the table and plot from a finished run's JSON (--report-from). The benchmark itself runs for
hours; its --quick mode is a manual smoke run, not a test."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "recipes"))
import ablation  # noqa: E402

STEPS = [1, 2, 5, 50]


def finished_run(scores):
    """A results dict as ablation.py writes it; scores[(variant, seed)] = {steps: BLEU}."""
    runs = [{"variant": v, "seed": seed, "steps": k, "sacrebleu": b, "sentences_per_s": 1.0}
            for (v, seed), by_k in scores.items() for k, b in by_k.items()]
    settings = {"steps": STEPS, "seeds": [1, 2], "variant_updates": 400, "bpe_merges": 6000,
                "max_words": 30, "length_beam": 1, "quick": False}
    sweep = [{"setting": "defaults", "flags": ["--scp", "--mans"], "steps": k, "sacrebleu_valid": 1.0}
             for k in ablation.SWEEP_STEPS]
    recompute = [{"variant": v, "steps": k, "sacrebleu": by_k[k] + 0.5, "sentences_per_s": 0.5}
                 for (v, seed), by_k in scores.items() if seed == 1 for k in (1, 2)]
    sampler_sweep = [{"variant": v, "update": u, "exponent": rho, "steps": k, "sacrebleu_valid": 2.0 + rho}
                     for v in ablation.SAMPLER_SWEEP_VARIANTS for u, rho in ablation.SAMPLER_SETTINGS
                     for k in ablation.SWEEP_STEPS]
    return {"settings": settings, "warm_updates": 3000, "runs": runs, "sweep": sweep, "recompute": recompute,
            "sampler_sweep": sampler_sweep, "baseline_curve": [{"updates": 1000, "steps": 50, "sacrebleu": 4.0}]}


def target_table(lines):
    return {row.split(" | ")[0].lstrip("| "): row.split(" | ")[-1].rstrip(" |") for row in lines if row.startswith("| ")}


def test_targets_met_on_a_real_baseline():
    results = finished_run({
        ("baseline", 1): {1: 9.0, 2: 10.0, 5: 11.0, 50: 12.0},
        ("scp_mans", 1): {1: 11.5, 2: 12.0, 5: 12.3, 50: 12.5},
        ("baseline", 2): {5: 11.2}, ("scp_mans", 2): {5: 12.1},
    })
    cell = {(r["variant"], r["seed"], r["steps"]): r["sacrebleu"] for r in results["runs"]}
    lines = ablation.target_lines(cell, 1, [1, 2])
    verdicts = {k: v for k, v in target_table(lines).items() if not k.startswith(("target", "FastDiSS - baseline"))}
    assert len(verdicts) == 4 and set(verdicts.values()) == {"yes"}, verdicts
    assert not any("inconclusive" in line for line in lines)
    assert "spread 0.40" in lines[-1]


def test_a_weak_baseline_makes_the_comparison_inconclusive(tmp_path):
    results = finished_run({
        ("baseline", 1): {1: 1.0, 2: 1.5, 5: 2.0, 50: 3.0},
        ("scp_mans", 1): {1: 1.0, 2: 1.2, 5: 2.1, 50: 3.2},
        ("baseline", 2): {5: 2.0}, ("scp_mans", 2): {5: 2.1},
    })
    results["settings"]["scp_mans_defaults"] = ablation.scp_mans_defaults()
    results["settings"]["command"] = "python recipes/ablation.py --seeds 1 2"
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(results))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "ablation.py"), "--report-from",
                           str(path), "--out", str(tmp_path / "docs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "docs" / "ablation.md").read_text()
    assert "| baseline | 1.00 | 1.50 | 2.00 | 3.00 |" in report
    assert "below the bar of 10: the variant comparison is **inconclusive**" in report
    assert "| FastDiSS 5 steps >= baseline 5 steps + 1.0 (difference) | +0.10 | no |" in report
    assert "| scp_mans, reused | 1.00 | 1.20 |" in report and "| scp_mans, recomputed | 1.50 | 1.70 |" in report
    assert "| defaults | `--scp --mans` |" in report and "| SacreBLEU | 4.00 |" in report
    assert "| scp_mans | renoise | 0.5 (default) | 2.50 | 2.50 |" in report
    assert "| baseline | ddim | 1 | 3.00 | 3.00 |" in report
    # what --scp --mans meant in the run (the criterion's defaults have changed between runs)
    assert "SCP and MANS with the criterion's defaults: --scp-mode uniform, --scp-delta-max 0.25" in report
    assert "--mans-granularity sentence" in report
    assert "Reproduce from a clean clone: `bash scripts/setup_env.sh && . .venv/bin/activate && " \
        "python recipes/ablation.py --seeds 1 2`" in report
    assert (tmp_path / "docs" / "ablation.png").stat().st_size > 0


def test_the_lead_is_also_judged_with_each_models_own_sampler(tmp_path):
    """The baseline may prefer another sampler than the shared default: the best (update, rho) on
    valid at 5 steps is chosen per model, and the lead at 5 steps is judged again with it."""
    results = finished_run({
        ("baseline", 1): {1: 9.0, 2: 10.0, 5: 11.0, 50: 12.0},
        ("scp_mans", 1): {1: 11.5, 2: 12.0, 5: 12.3, 50: 12.5},
        ("baseline", 2): {5: 11.2}, ("scp_mans", 2): {5: 12.4},
    })
    for r in results["sampler_sweep"]:  # the baseline prefers rho 1; SCP+MANS ties renoise 0.5 and 0.35
        r["sacrebleu_valid"] = {("baseline", "renoise", 1.0): 9.0, ("scp_mans", "renoise", 0.5): 9.5,
                                ("scp_mans", "renoise", 0.35): 9.5}.get((r["variant"], r["update"], r["exponent"]), 8.0)
    assert ablation.best_sampler(results["sampler_sweep"], "baseline") == ("renoise", 1.0)
    assert ablation.best_sampler(results["sampler_sweep"], "scp_mans") == ("renoise", 0.5)  # first of a tie
    assert ablation.best_sampler(results["sampler_sweep"], "scp") is None
    results["tuned_sampler"] = [
        {"variant": "baseline", "seed": 1, "update": "renoise", "exponent": 1.0, "steps": 5, "sacrebleu": 11.5},
        {"variant": "baseline", "seed": 2, "update": "renoise", "exponent": 1.0, "steps": 5, "sacrebleu": 11.3},
        {"variant": "scp_mans", "seed": 1, "update": "renoise", "exponent": 0.5, "steps": 5, "sacrebleu": 12.3},
        {"variant": "scp_mans", "seed": 2, "update": "renoise", "exponent": 0.5, "steps": 5, "sacrebleu": 12.4}]
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(results))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "ablation.py"), "--report-from",
                           str(path), "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "ablation.md").read_text()
    assert "| FastDiSS 5 steps >= baseline 5 steps + 1.0 (difference) | +1.30 | yes |" in report
    assert "| FastDiSS 5 steps >= baseline 5 steps + 1.0, each with its own sampler (below), per seed (1, 2) " \
        "| +0.80, +1.10 | no, yes |" in report
    assert "| baseline | renoise, rho 1 | 11.50 | 11.30 |" in report
    assert "| scp_mans | renoise, rho 0.5 | 12.30 | 12.40 |" in report


def test_a_finished_decode_is_reused(tiny_data, tiny_model, tmp_path, monkeypatch):
    ckpt = str(tmp_path / "checkpoint.pt")
    shutil.copy2(tiny_model[0], ckpt)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    gen = str(tmp_path / "gen.txt")
    extra = ("--inference-self-conditioning", "recompute")
    first = ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra)
    assert first and first > 0 and "Generate test with beam=" in open(gen).read()

    def no_second_run(*args, **kwargs):
        raise AssertionError("a finished decode was run again")

    monkeypatch.setattr(ablation, "generate_many", no_second_run)
    assert ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra) == first
    # other settings (here the clamping) are never served from the finished decode ...
    with pytest.raises(AssertionError, match="run again"):
        ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra + ("--no-clamping",))
    # ... nor is a decode made before a generator default changed
    defaults = ablation.generator_defaults()
    monkeypatch.setattr(ablation, "generator_defaults", lambda: dict(defaults, clamping=not defaults["clamping"]))
    with pytest.raises(AssertionError, match="run again"):
        ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra)
    monkeypatch.setattr(ablation, "generator_defaults", lambda: defaults)
    # ... nor is the decode of a checkpoint written since (a variant trained again)
    decoded_at = os.path.getmtime(gen)
    os.utime(ckpt, (decoded_at + 10, decoded_at + 10))
    with pytest.raises(AssertionError, match="run again"):
        ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra)
    os.utime(ckpt, (decoded_at - 10, decoded_at - 10))
    assert ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra) == first
    with open(gen, "a") as f:  # an output cut short is decoded again
        f.truncate(10)
    with pytest.raises(AssertionError, match="run again"):
        ablation.decode(tiny_data, ckpt, 2, 1, gen, extra=extra)


def test_warm_state_reads_updates_epoch_and_training_time(tiny_model):
    updates, epoch, seconds = ablation.warm_state(str(tiny_model[0]))
    assert updates == 30 and epoch >= 1 and seconds > 0
    # the tiny model is trained with --scp --mans and the criterion's defaults
    assert ablation.criterion_changes(str(tiny_model[0]), ["--scp", "--mans"]) == ""
    assert ablation.criterion_changes(str(tiny_model[0]), ["--scp"]) == "--mans True -> False"


def test_a_variant_from_an_earlier_warm_start_is_trained_again(tmp_path, monkeypatch):
    """After --warm-minutes grows, a variant continued from the shorter warm start is stale."""
    stale = tmp_path / "scp.seed1"
    stale.mkdir()
    (stale / "checkpoint_last.pt").write_text("stale")
    (stale / "old_file").write_text("")
    monkeypatch.setattr(ablation, "checkpoint_updates", lambda path: 3118)
    trained = []

    def fake_train(data, save_dir, extra, log_path, append=False):
        trained.append(extra)
        os.makedirs(save_dir, exist_ok=True)
        open(os.path.join(save_dir, "checkpoint_last.pt"), "w").close()

    monkeypatch.setattr(ablation, "train", fake_train)
    ablation.continue_from_warm("data", str(tmp_path), "scp.seed1", ["--scp"], 1, "warm.pt", 5200)
    assert len(trained) == 1 and trained[0][-2:] == ["--max-update", "5200"]
    assert not (stale / "old_file").exists() and (tmp_path / "scp.seed1.stale" / "old_file").exists()
    # one trained to the right update, with the settings the flags give, is kept
    monkeypatch.setattr(ablation, "checkpoint_updates", lambda path: 5200)
    monkeypatch.setattr(ablation, "saved_criterion", lambda path: ablation.criterion_settings(["--scp"]))
    ablation.continue_from_warm("data", str(tmp_path), "scp.seed1", ["--scp"], 1, "warm.pt", 5200)
    assert len(trained) == 1


def test_a_larger_variant_budget_continues_the_variants_from_the_same_warm_start(tmp_path, monkeypatch):
    """--variant-updates 200 -> 400: a variant continued from this warm start is resumed (fairseq's
    own checkpoint_last, no --restore-file) for the added updates; one from another warm start,
    or trained past the budget, is trained again from the warm start."""
    updates = {"warm.pt": 4000}
    monkeypatch.setattr(ablation, "checkpoint_updates", lambda path: updates.get(os.path.basename(path), 4200))
    monkeypatch.setattr(ablation, "saved_criterion", lambda path: ablation.criterion_settings(["--scp"]))
    trained = []

    def fake_train(data, save_dir, extra, log_path, append=False):
        trained.append((os.path.basename(save_dir), extra, append))
        os.makedirs(save_dir, exist_ok=True)
        with open(log_path, "a" if append else "w") as f:
            f.write("done training in 150.0 seconds\n")
        open(os.path.join(save_dir, "checkpoint_last.pt"), "a").close()

    monkeypatch.setattr(ablation, "train", fake_train)
    for name, started in (("scp.seed1", 4000), ("scp.seed2", 3000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint_last.pt").write_text("")
        (tmp_path / f"{name}.log").write_text(
            f"| fairseq.trainer | Loaded checkpoint /w/warm/checkpoint_last.pt (epoch 9 @ {started} updates)\n"
            "| fairseq_cli.train | done training in 172.5 seconds\n")
    ablation.continue_from_warm("data", str(tmp_path), "scp.seed1", ["--scp"], 1, "warm.pt", 4400)
    name, extra, append = trained[-1]
    assert name == "scp.seed1" and append and "--restore-file" not in extra and extra[-2:] == ["--max-update", "4400"]
    assert not (tmp_path / "scp.seed1.stale").exists()
    assert ablation.started_from(str(tmp_path / "scp.seed1.log")) == 4000  # the first training's origin
    assert ablation.training_seconds(str(tmp_path / "scp.seed1.log")) == 322.5  # both trainings
    # from an earlier warm start (3,000 updates): stale, trained again from this one
    ablation.continue_from_warm("data", str(tmp_path), "scp.seed2", ["--scp"], 2, "warm.pt", 4400)
    name, extra, append = trained[-1]
    assert name == "scp.seed2" and not append and extra[extra.index("--restore-file") + 1] == "warm.pt"
    assert (tmp_path / "scp.seed2.stale").exists()
    # trained past the budget (4,200 > 4,100): trained again
    ablation.continue_from_warm("data", str(tmp_path), "scp.seed1", ["--scp"], 1, "warm.pt", 4100)
    assert trained[-1][0] == "scp.seed1" and "--restore-file" in trained[-1][1] and len(trained) == 3


def test_a_variant_trained_with_other_criterion_settings_is_trained_again(tmp_path, monkeypatch):
    """A default that changed since (here MANS strength) makes the saved variant stale, though
    its flags (`--mans`) read the same."""
    (tmp_path / "mans.seed1").mkdir()
    (tmp_path / "mans.seed1" / "checkpoint_last.pt").write_text("old")
    monkeypatch.setattr(ablation, "checkpoint_updates", lambda path: 5200)
    old = dict(ablation.criterion_settings(["--mans"]), mans_strength=0.9)
    monkeypatch.setattr(ablation, "saved_criterion", lambda path: old)
    assert ablation.criterion_changes("ckpt", ["--mans"]).startswith("--mans-strength 0.9 -> ")
    assert ablation.criterion_changes("ckpt", ["--mans", "--mans-strength", "0.9"]) == ""
    # MANS's own options do not matter to a run without MANS
    monkeypatch.setattr(ablation, "saved_criterion", lambda path: dict(ablation.criterion_settings([]), mans_strength=0.9))
    assert ablation.criterion_changes("ckpt", []) == ""
    monkeypatch.setattr(ablation, "saved_criterion", lambda path: old)
    trained = []

    def fake_train(data, save_dir, extra, log_path, append=False):
        trained.append(extra)
        os.makedirs(save_dir, exist_ok=True)

    monkeypatch.setattr(ablation, "train", fake_train)
    ablation.continue_from_warm("data", str(tmp_path), "mans.seed1", ["--mans"], 1, "warm.pt", 5200)
    assert len(trained) == 1 and trained[0][0] == "--mans"


def test_the_gpu_design_trains_from_scratch_on_the_chosen_device(tmp_path, monkeypatch):
    """--device cuda --arch ... --max-tokens ...: no --cpu in any command, the arch and batch
    replaced; --from-scratch-updates: no --restore-file, interval checkpoints for the curve."""
    for name in ("MODEL_ARGS", "OPTIM_ARGS", "DEVICE_ARGS"):
        monkeypatch.setattr(ablation, name, list(getattr(ablation, name)))
    args = ablation.argparse.Namespace(device="cuda", arch="fastdiss_iwslt_de_en", max_tokens=8192, t_min=0.0,
                                       fp32_matmul_precision="high")
    ablation.configure(args)
    commands = []
    monkeypatch.setattr(ablation, "run", lambda cmd, out_path=None, append=False: commands.append(cmd) or "")
    monkeypatch.setattr(ablation, "checkpoint_updates", lambda path: 0)
    ablation.continue_from_warm("data", str(tmp_path), "baseline.seed1", [], 1, None, 2000, interval=1000,
                                max_minutes=4.5)
    cmd = commands[0]
    assert "--cpu" not in cmd and "--restore-file" not in cmd
    assert cmd[cmd.index("--arch") + 1] == "fastdiss_iwslt_de_en" and cmd[cmd.index("--max-tokens") + 1] == "8192"
    assert cmd[cmd.index("--save-interval-updates") + 1] == "1000" and cmd[cmd.index("--max-update") + 1] == "2000"
    assert cmd[cmd.index("--stop-time-hours") + 1] == str(4.5 / 60)  # the cap of a timed GPU machine
    assert cmd[cmd.index("--fp32-matmul-precision") + 1] == "high"  # TF32 on the GPU
    ablation.decode("data", "ckpt.pt", 5, 1, str(tmp_path / "gen.txt"))
    assert commands[1][1].endswith("generate_many.py")
    with open(commands[1][2]) as f:
        decoded = json.load(f)[0]["args"]
    assert "--cpu" not in decoded and "high" in decoded  # decodes alike


def test_configure_sets_t_min_rather_than_adding_it(monkeypatch):
    """speed_benchmark.py and the tests configure more than once in one process."""
    monkeypatch.setattr(ablation, "MODEL_ARGS", list(ablation.MODEL_ARGS))
    for t_min in (0.5, 0.25, 0.0, 0.3):
        ablation.configure(ablation.argparse.Namespace(device="cpu", arch="fastdiss_small", max_tokens=3072,
                                                       t_min=t_min))
    assert ablation.MODEL_ARGS.count("--t-min") == 1 and ablation.MODEL_ARGS[-2:] == ["--t-min", "0.3"]


@pytest.mark.parametrize("script", ["run_gpu_checks", "run_gpu_speed"])
def test_the_gpu_check_says_what_is_missing(tmp_path, script):
    """recipes/gpu/*.sh without the carried data-bin: one line, exit 2, no work."""
    repo = tmp_path / "repo"
    (repo / "recipes" / "gpu").mkdir(parents=True)
    for name in (f"{script}.sh", "gpu_env.sh"):
        shutil.copy(os.path.join(ROOT, "recipes", "gpu", name), repo / "recipes" / "gpu")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"))
    proc = subprocess.run(["bash", str(repo / "recipes" / "gpu" / f"{script}.sh")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"{script}: error: runs/ablation/data-bin is missing")


def test_a_warm_start_longer_than_asked_is_an_error_not_a_silent_reuse(tmp_path, monkeypatch):
    (tmp_path / "data-bin" / "refs").mkdir(parents=True)
    (tmp_path / "data-bin" / "prepare.json").write_text("{}")
    (tmp_path / "data-bin" / "refs" / "test.en").write_text("a\n")
    (tmp_path / "warm").mkdir()
    (tmp_path / "warm" / "checkpoint_last.pt").write_text("")
    monkeypatch.setattr(ablation, "warm_state", lambda path: (5500, 13, 4200.0))
    with pytest.raises(SystemExit, match="has 5500 updates, more than --warm-updates 100; pass another --work"):
        ablation.main(["--warm-updates", "100", "--work", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="needs --warm-updates > 0 or --warm-minutes > 0"):
        ablation.main(["--warm-updates", "0", "--work", str(tmp_path), "--out", str(tmp_path / "out")])


def test_t_min_reaches_every_training_and_is_checked(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "MODEL_ARGS", list(ablation.MODEL_ARGS))
    args = ablation.argparse.Namespace(device="cpu", arch="fastdiss_small", max_tokens=3072, t_min=0.5)
    ablation.configure(args)
    assert ablation.MODEL_ARGS[-2:] == ["--t-min", "0.5"]
    # a variant or warm start trained with t_min 0 is not reused by a run with 0.5
    assert ablation.criterion_changes(str(tiny_model[0]), ablation.MODEL_ARGS + ["--scp", "--mans"]) \
        == "--t-min 0.0 -> 0.5"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "ablation.py"), "--t-min", "1",
                           "--work", str(tmp_path / "work")], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip() == "ablation: error: --t-min must be in [0, 1), got 1.0"
    assert not (tmp_path / "work").exists()


def test_amp_reaches_every_training_and_binds_the_run_folder(tiny_model, tmp_path, monkeypatch):
    """--amp: every fairseq-train of the run gets --amp; a warm start or variant trained with the
    other setting is not resumed (fairseq would stop: "Optimizer does not match")."""
    for name in ("MODEL_ARGS", "OPTIM_ARGS", "DEVICE_ARGS", "AMP_ARGS"):
        monkeypatch.setattr(ablation, name, list(getattr(ablation, name)))
    ckpt = str(tiny_model[0])  # trained without --amp
    ablation.configure(ablation.argparse.Namespace(device="cpu", arch="fastdiss_small", max_tokens=3072,
                                                   t_min=0.5, amp=False))
    assert ablation.trained_with_amp(ckpt) is False and ablation.amp_mismatch(ckpt) == ""
    ablation.configure(ablation.argparse.Namespace(device="cpu", arch="fastdiss_small", max_tokens=3072,
                                                   t_min=0.5, amp=True))
    assert ablation.amp_mismatch(ckpt) == "--amp off -> on"
    (tmp_path / "not_a_checkpoint.pt").write_text("x")
    assert ablation.trained_with_amp(str(tmp_path / "not_a_checkpoint.pt")) is None
    commands = []
    monkeypatch.setattr(ablation, "run", lambda cmd, out_path=None, append=False: commands.append(cmd) or "")
    ablation.train("data", str(tmp_path / "w"), [], str(tmp_path / "w.log"))
    assert "--amp" in commands[0] and "--cpu" in commands[0]
    # a warm start trained without --amp is refused by a run with it (the default), in one line
    (tmp_path / "data-bin" / "refs").mkdir(parents=True)
    (tmp_path / "data-bin" / "prepare.json").write_text("{}")
    (tmp_path / "data-bin" / "refs" / "test.en").write_text("a\n")
    (tmp_path / "warm").mkdir()
    shutil.copy(ckpt, tmp_path / "warm" / "checkpoint_last.pt")
    monkeypatch.setattr(ablation, "criterion_changes", lambda path, flags: "")
    with pytest.raises(SystemExit, match=r"was trained with other settings \(--amp off -> on\); pass another --work"):
        ablation.main(["--warm-updates", "30", "--work", str(tmp_path), "--out", str(tmp_path / "out")])


def test_a_work_folder_made_from_other_data_or_model_settings_is_refused(tmp_path):
    """The data-bin, warm start and variants of --work are reused by a later run; one with another
    slice, vocabulary, architecture or batch must not reuse them under its own settings."""
    work = tmp_path / "work"
    work.mkdir()
    ablation.check_work_identity(ablation.build_parser().parse_args(["--work", str(work)]))
    kept = json.loads((work / "run.json").read_text())
    assert kept["bpe_merges"] == 6000 and kept["arch"] == "fastdiss_small"
    ablation.check_work_identity(ablation.build_parser().parse_args(["--work", str(work)]))  # the same: fine
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "ablation.py"), "--work", str(work),
                           "--bpe-merges", "8000", "--max-tokens", "4096", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip() == (
        f"ablation: error: --work {work} was made with other settings (--bpe-merges 6000 -> 8000; "
        "--max-tokens 3072 -> 4096); use another --work or the same settings"), proc.stderr
