"""The benchmark recipes (recipes/*.sh, recipes/hydra/*.yaml) and their helper modules.

Smoke mode (SMOKE=1) runs every command of a recipe for real: preprocessing, fairseq-train
(fastdiss_tiny, 20 updates), checkpoint averaging, fairseq-generate at 1 and 2 steps and the
scoring report, on slices small enough that a whole recipe takes well under a minute. The
translation recipe runs on 300 pairs of the bundled German-English slice, the summarization
recipe on the committed tests/fixtures/debdesc-summ slice, so nothing outside the repository
is needed.
"""

import argparse
import dataclasses
import glob
import gzip
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
HYDRA = os.path.join(RECIPES, "hydra")
BUNDLED_DE_EN = os.path.join(ROOT, "user_dir_examples", "data", "de-en")
SUMM_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "debdesc-summ")
ALL_RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(RECIPES, "*.sh"))
                     if not p.endswith("common.sh"))
SLICE = {"train": 300, "valid": 20, "test": 20}


def recipe_env(**extra):
    """The recipes find fairseq-train etc. on PATH and python as $PYTHON: this interpreter's."""
    env = dict(os.environ, PYTHON=sys.executable, PYTHONWARNINGS="ignore",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for key in ("NGPU", "RAW", "DATA", "OUT", "STEPS", "TRAIN_MINUTES", "SMOKE", "DRY_RUN", "AMP", "FP16",
                "EXTRA_TRAIN_ARGS", "EXTRA_GEN_ARGS", "PREPARE_ARGS", "NUM_AVG"):
        env.pop(key, None)  # a developer's own settings must not leak into the tests
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_recipe(name, timeout=600, **env):
    return subprocess.run(["bash", os.path.join(RECIPES, f"{name}.sh")], env=recipe_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def smoke(name, out, **env):
    proc = run_recipe(name, SMOKE=1, OUT=out, **env)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def de_en_run(tmp_path_factory):
    raw = tmp_path_factory.mktemp("de-en-raw")
    for split, n in SLICE.items():
        for lang in ("de", "en"):
            with gzip.open(os.path.join(BUNDLED_DE_EN, f"{split}.{lang}.gz"), "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (raw / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return smoke("de_en_cpu", tmp_path_factory.mktemp("de_en_cpu"), RAW=raw)


@pytest.fixture(scope="module")
def summ_run(tmp_path_factory):
    return smoke("debdesc_summ_cpu", tmp_path_factory.mktemp("debdesc_summ_cpu"), RAW=SUMM_FIXTURE)


def load_results(out):
    with open(out / "results.json") as f:
        report = json.load(f)
    return report, (out / "results.md").read_text(encoding="utf-8")


def table_rows(md):
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d+) \|.*$", md, flags=re.M)}


# ------------------------------------------------------------------ end-to-end smoke runs


def test_translation_recipe_end_to_end(de_en_run):
    report, md = load_results(de_en_run)
    assert report["recipe"] == "de_en_cpu" and report["kind"] == "translation"
    assert [r["steps"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["sentences"] == SLICE["test"]
        for metric in ("sacrebleu", "bleu_tokenized"):
            assert 0.0 <= row[metric] <= 100.0, (metric, row)
        assert row["sentences_per_second"] > 0
        hyps = (de_en_run / f"hyps.test.{row['steps']}.txt").read_text(encoding="utf-8").splitlines()
        assert len(hyps) == SLICE["test"]
    assert "SacreBLEU (detok.)" in md and "BLEU (tokenized)" in md
    assert sorted(table_rows(md)) == [1, 2]
    # the last 5 interval checkpoints of 20 updates saved every 5: 4 of them, newest first
    assert report["checkpoint"]["num_updates"] == [20, 15, 10, 5]
    assert report["settings"]["arch"] == "fastdiss_tiny" and report["settings"]["smoke"] == 1


def test_translation_detokenizes_hypotheses_not_references(de_en_run):
    """D-lines are scored detokenized; T-lines (tokenized BLEU) keep their Moses tokens."""
    text = (de_en_run / "generate.test.1.txt").read_text(encoding="utf-8")
    targets = re.findall(r"^T-\d+\t(.*)$", text, flags=re.M)
    assert any(" ," in t or " ." in t for t in targets), "T-lines should be tokenized"


def test_a_run_folder_is_resumed_only_with_its_training_command(de_en_run):
    """fairseq-train resumes checkpoint_last.pt whatever trained it: a rerun into the same OUT with
    another training option is refused in one line, and a smoke slice is never taken for real data."""
    proc = run_recipe("de_en_cpu", SMOKE=1, OUT=de_en_run, EXTRA_TRAIN_ARGS="--lr 0.5")
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"OUT={de_en_run} holds a run trained with another command" in last and "now: --lr 0.5)" in last, last
    proc = run_recipe("de_en_cpu", OUT=de_en_run / "real", DATA=de_en_run / "data-bin")
    assert proc.returncode != 0 and "holds a SMOKE=1 slice" in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_summarization_recipe_end_to_end(summ_run):
    report, md = load_results(summ_run)
    assert report["kind"] == "summarization"
    assert [r["steps"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["sentences"] == 20
        for metric in ("rouge1", "rouge2", "rougeL"):
            assert 0.0 <= row[metric] <= 100.0, (metric, row)
    assert "ROUGE-1" in md and "ROUGE-L" in md
    rows = table_rows(md)
    assert sorted(rows) == [1, 2]
    assert all(len(row.split("|")) == 8 for row in rows.values())  # steps, R-1/2/L, speed x2


# ------------------------------------------------------------------ checkpoint averaging


def update_checkpoints(run):
    paths = glob.glob(str(run / "checkpoints" / "checkpoint_*_*.pt"))
    return sorted(paths, key=lambda p: int(re.search(r"_(\d+)\.pt$", p).group(1)))


def test_averaging_two_checkpoints_gives_their_mean_and_loads_in_fairseq(de_en_run, tmp_path):
    first, last = update_checkpoints(de_en_run)[0], update_checkpoints(de_en_run)[-1]
    out = tmp_path / "avg.pt"
    proc = subprocess.run([sys.executable, "-m", "fastdiss_fairseq.average_checkpoints",
                           "--inputs", first, last, "--output", str(out)],
                          env=recipe_env(PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    import fastdiss_fairseq  # noqa: F401  (makes fairseq checkpoints loadable with weights_only)
    from fairseq import checkpoint_utils

    a, b = (torch.load(p, map_location="cpu")["model"] for p in (first, last))
    avg = torch.load(out, map_location="cpu")  # torch's default (weights_only) load
    changed = 0
    for key, value in avg["model"].items():
        if torch.is_floating_point(value):
            torch.testing.assert_close(value, (a[key] + b[key]) / 2, rtol=0, atol=1e-6)
            changed += not torch.equal(a[key], b[key])
    assert changed > 0, "the two checkpoints should differ, or the test proves nothing"
    # the newest input's training state is kept, so the file is a normal fairseq checkpoint
    assert avg["optimizer_history"][-1]["num_updates"] == 20

    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(out)], arg_overrides={"data": str(de_en_run / "data-bin")})
    loaded = models[0].state_dict()
    for key, value in avg["model"].items():
        torch.testing.assert_close(loaded[key], value)
    assert cfg.model._name == "fastdiss_tiny"


def test_averaging_rejects_bad_input_in_one_line(tmp_path):
    from fastdiss_fairseq import average_checkpoints

    cases = [
        ["--inputs", str(tmp_path / "missing"), "--num-update-checkpoints", "2"],
        ["--inputs", str(tmp_path), "--num-update-checkpoints", "2"],  # no checkpoints there
        ["--inputs", str(tmp_path / "nope.pt")],
        ["--inputs", str(tmp_path), "--num-update-checkpoints", "0"],
        ["--inputs", str(tmp_path / "gen.txt")],  # not a checkpoint
    ]
    (tmp_path / "gen.txt").write_text("H-0\t-0.5\tHello world\n")
    for argv in cases:
        with pytest.raises(SystemExit) as e:
            average_checkpoints.main(argv + ["--output", str(tmp_path / "avg.pt")])
        message = str(e.value.code)
        assert message.startswith("average_checkpoints: error:") and "\n" not in message, message
        if "0" in argv:
            assert message.endswith("the number of checkpoints must be >= 1, got 0"), message
    assert message.endswith("gen.txt: not a PyTorch checkpoint (torch.load cannot unpickle it)"), message
    assert not (tmp_path / "avg.pt").exists()


# ------------------------------------------------------------------ recipe scripts without running them


def test_every_benchmark_and_direction_has_a_recipe():
    wanted = {"iwslt14_de_en", "iwslt14_en_de", "wmt14_en_de", "wmt14_de_en", "wmt16_en_ro",
              "wmt16_ro_en", "qqp", "wiki_auto", "gigaword", "de_en_cpu", "debdesc_summ_cpu"}
    assert wanted <= set(ALL_RECIPES)


@pytest.mark.parametrize("env, message", [
    ({"STEPS": "1 x"}, "STEPS: 'x' is not a step count"),
    ({"STEPS": " "}, "STEPS is empty"),
    ({"NGPU": "two"}, "NGPU='two' is not a number of GPUs"),
    ({"TRAIN_MINUTES": "soon"}, "TRAIN_MINUTES='soon' is not a positive number"),
    ({"AMP": "yes"}, "AMP='yes' must be 0 or 1"),
    ({"RAW": "/nonexistent/de-en"}, "raw data /nonexistent/de-en does not exist"),
])
def test_bad_input_is_a_one_line_error(tmp_path, env, message):
    out = tmp_path / "out"
    proc = run_recipe("de_en_cpu", timeout=60, OUT=out, DATA=tmp_path / "no-data-bin", **env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("de_en_cpu: error: "), proc.stderr
    assert message in proc.stderr
    assert not out.exists(), "nothing is written before the input is checked"


# The CPU recipes read a raw folder even in a dry run; point them at committed data, so the
# test does not depend on ../shared being beside the checkout.
DRY_RUN_RAW = {"de_en_cpu": BUNDLED_DE_EN, "debdesc_summ_cpu": SUMM_FIXTURE}


def train_options(name, **env):
    """The fairseq-train options a recipe would run, from its DRY_RUN=1 listing."""
    if name in DRY_RUN_RAW:
        env.setdefault("RAW", DRY_RUN_RAW[name])
    proc = run_recipe(name, timeout=60, DRY_RUN=1, STEPS=1, **env)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(next(l for l in proc.stdout.splitlines() if l.startswith("fairseq-train ")))
    options, i = {}, 2  # argv[1] is the data folder
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            options[argv[i]] = argv[i + 1]
            i += 2
        else:
            options[argv[i]] = True
            i += 1
    return options


def test_the_report_records_the_generation_and_preparation_overrides():
    """EXTRA_GEN_ARGS can override the recipe's --length-beam: the report must say so, not only
    the recipe's own length_beam."""
    proc = run_recipe("wmt14_en_de", timeout=60, DRY_RUN=1, STEPS=1, EXTRA_GEN_ARGS="--length-beam 3")
    assert proc.returncode == 0, proc.stderr
    report = shlex.split(next(l for l in proc.stdout.splitlines() if "fastdiss_fairseq.recipe_report" in l))
    assert "extra_gen_args=--length-beam 3" in report and "prepare_args=none" in report


@pytest.mark.parametrize("ngpu", [1, 2, 3, 4, 8])
def test_effective_batch_is_fixed_whatever_the_gpu_count(ngpu):
    opts = train_options("wmt14_en_de", NGPU=ngpu)  # published: 16,000 tokens x 4 GPUs
    assert int(opts["--distributed-world-size"]) == ngpu
    effective = ngpu * int(opts["--update-freq"]) * int(opts["--max-tokens"])
    assert 64000 - ngpu * int(opts["--update-freq"]) < effective <= 64000
    assert int(opts["--max-tokens"]) <= 16000  # never more per GPU than the published run
    assert ("--ddp-backend" in opts) == (ngpu > 1)


def test_cpu_recipe_defaults():
    opts = train_options("de_en_cpu")
    assert opts["--cpu"] is True and opts["--arch"] == "fastdiss_small"
    assert float(opts["--stop-time-hours"]) == pytest.approx(25 / 60, abs=1e-5)
    assert opts["--scp"] is True and opts["--mans"] is True
    assert opts["--amp"] is True  # bfloat16 autocast on the CPU
    assert "--amp" not in train_options("de_en_cpu", AMP=0)


# ------------------------------------------------------------------ fairseq-hydra-train configs

HYDRA_REQUIRED = {"iwslt14_de_en", "wmt14_en_de", "wmt16_en_ro", "qqp", "wiki_auto", "gigaword", "de_en_cpu"}
HYDRA_CONFIGS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(HYDRA, "*.yaml")))

# fairseq-train option of the shell recipe -> the same setting in the hydra config
SHELL_TO_HYDRA = {
    "--arch": "model._name", "--dropout": "model.dropout",
    "--pred-length-offset": "model.pred_length_offset", "--noise-scale": "model.noise_scale",
    "--source-copy-input": "model.source_copy_input",
    "--encoder-normalize-before": "model.encoder_normalize_before",
    "--decoder-normalize-before": "model.decoder_normalize_before",
    "--label-smoothing": "criterion.label_smoothing", "--scp": "criterion.scp", "--mans": "criterion.mans",
    "--t-min": "criterion.t_min",
    "--adam-betas": "optimizer.adam_betas", "--weight-decay": "optimizer.weight_decay",
    "--lr": "optimization.lr.0", "--update-freq": "optimization.update_freq.0",
    "--max-update": "optimization.max_update", "--clip-norm": "optimization.clip_norm",
    "--stop-time-hours": "optimization.stop_time_hours",
    "--warmup-updates": "lr_scheduler.warmup_updates", "--warmup-init-lr": "lr_scheduler.warmup_init_lr",
    "--max-tokens": "dataset.max_tokens", "--disable-validation": "dataset.disable_validation",
    "--save-interval-updates": "checkpoint.save_interval_updates",
    "--keep-interval-updates": "checkpoint.keep_interval_updates",
    "--distributed-world-size": "distributed_training.distributed_world_size",
    "--ddp-backend": "distributed_training.ddp_backend",
    "--source-lang": "task.source_lang", "--target-lang": "task.target_lang",
    "--truncate-source": "task.truncate_source",
    "--cpu": "common.cpu", "--fp16": "common.fp16", "--amp": "common.amp", "--seed": "common.seed",
    "--log-interval": "common.log_interval", "--num-workers": "dataset.num_workers",
    "--no-epoch-checkpoints": "checkpoint.no_epoch_checkpoints",
}


def same_value(shell, config):
    if shell is True:
        return config is True
    try:
        return float(shell) == pytest.approx(float(config), rel=1e-5)
    except (TypeError, ValueError):
        return str(shell).replace(" ", "") == str(config).replace(" ", "")


def test_hydra_configs_cover_the_benchmarks():
    assert HYDRA_REQUIRED <= set(HYDRA_CONFIGS)
    assert set(HYDRA_CONFIGS) <= set(ALL_RECIPES), "each config mirrors a recipe script"


def dataclass_fields(dc):
    return {f.name for f in dataclasses.fields(dc)}


@pytest.mark.parametrize("name", HYDRA_CONFIGS)
def test_hydra_config_parses_with_registered_names_and_known_fields(name):
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_REGISTRY
    from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY
    from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    import fastdiss_fairseq  # noqa: F401  (registers task, model, criterion)

    cfg = OmegaConf.load(os.path.join(HYDRA, f"{name}.yaml"))
    top = dataclass_fields(FairseqConfig)
    assert set(cfg.keys()) - {"hydra"} <= top, set(cfg.keys()) - top
    assert cfg.task._name == "fastdiss_translation"
    assert cfg.criterion._name == "fastdiss_loss"
    assert ARCH_MODEL_NAME_REGISTRY.get(cfg.model._name) == "fastdiss_transformer", cfg.model._name

    # Every key must be a field of the registered config, or fairseq would reject or ignore it.
    groups = {
        "task": TASK_DATACLASS_REGISTRY[cfg.task._name],
        "criterion": CRITERION_DATACLASS_REGISTRY[cfg.criterion._name],
        "optimizer": OPTIMIZER_DATACLASS_REGISTRY[cfg.optimizer._name],
        "lr_scheduler": LR_SCHEDULER_DATACLASS_REGISTRY[cfg.lr_scheduler._name],
    }
    for group in ("common", "dataset", "optimization", "checkpoint", "distributed_training"):
        if group in cfg:
            groups[group] = FairseqConfig.__dataclass_fields__[group].type
    for group, dc in groups.items():
        unknown = set(cfg[group].keys()) - {"_name"} - dataclass_fields(dc)
        assert not unknown, f"{group}: {unknown}"
    parser = argparse.ArgumentParser()
    MODEL_REGISTRY["fastdiss_transformer"].add_args(parser)  # a legacy (argparse) model
    model_options = {a.dest for a in parser._actions}
    assert set(cfg.model.keys()) - {"_name"} <= model_options


@pytest.mark.parametrize("name", HYDRA_CONFIGS)
def test_hydra_config_has_the_hyperparameters_of_its_shell_recipe(name):
    cfg = OmegaConf.to_container(OmegaConf.load(os.path.join(HYDRA, f"{name}.yaml")))
    opts = train_options(name)
    for flag, path in SHELL_TO_HYDRA.items():
        node = cfg
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else (node or {}).get(part)
        if flag in opts:
            assert same_value(opts[flag], node), f"{flag} {opts[flag]} but {path}: {node}"
        else:
            assert node in (None, False), f"{path} is {node} but the recipe has no {flag}"


def test_hydra_config_trains_with_fairseq_hydra_train(de_en_run, tmp_path):
    """de_en_cpu.yaml through the stock fairseq-hydra-train, for 2 updates of the tiny model."""
    save = tmp_path / "checkpoints"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
         "--config-dir", HYDRA, "--config-name", "de_en_cpu",
         f"task.data={de_en_run / 'data-bin'}", f"checkpoint.save_dir={save}",
         f"common.user_dir={os.path.join(ROOT, 'fastdiss_fairseq')}", "model._name=fastdiss_tiny",
         "optimization.max_update=2", "optimization.stop_time_hours=0", "dataset.max_tokens=1024"],
        cwd=tmp_path, env=recipe_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (save / "checkpoint_last.pt").exists()
    # hydra's own files go beside the checkpoints, not into the working folder
    assert (save / ".hydra").is_dir() and sorted(os.listdir(tmp_path)) == ["checkpoints"]
