"""What fairseq users expect around the plugin: the hub interface, fairseq's distributed
engine, TensorBoard logging, and the step-sweep tool. Real CLIs on the tiny data and model."""

import glob
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

import fastdiss_fairseq  # noqa: F401  (lets torch.load read fairseq checkpoints)
from conftest import ROOT, SIZES, TINY_TRAIN_ARGS, run_cli

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


# ---- hub interface ---------------------------------------------------------------------------

def readme_snippet(heading: str, language: str) -> str:
    """The first ```language block under the README heading."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split(heading + "\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture(scope="module")
def model_dir(tiny_data, tiny_model, tmp_path_factory):
    """What a user puts together: the checkpoint with the data folder's dictionaries and codes."""
    ckpt, _ = tiny_model
    folder = tmp_path_factory.mktemp("hub") / "model_dir"
    folder.mkdir()
    shutil.copy(ckpt, folder / "checkpoint_best.pt")
    for name in ("dict.de.txt", "dict.en.txt", "bpecodes", "prepare.json"):
        shutil.copy(tiny_data / name, folder)
    return folder


def test_readme_hub_snippet_runs(model_dir, monkeypatch, capsys):
    code = readme_snippet("### Python (hub interface)", "python")
    monkeypatch.chdir(model_dir.parent)
    namespace = {}
    exec(compile(code, "README.md (hub interface)", "exec"), namespace)
    translations = namespace["translations"]
    assert isinstance(translations, list) and len(translations) == 2
    assert all(isinstance(t, str) and t.strip() for t in translations)
    assert str(translations) in capsys.readouterr().out


@pytest.fixture(scope="module")
def hub(model_dir):
    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel

    return FastDiSSTransformerModel.from_pretrained(
        str(model_dir), checkpoint_file="checkpoint_best.pt", source_lang="de", target_lang="en")


def test_hub_applies_generation_options_per_call(hub, monkeypatch):
    built = []
    build_generator = hub.task.build_generator

    def spy(models, args, **kwargs):
        built.append(build_generator(models, args, **kwargs))
        return built[-1]

    monkeypatch.setattr(hub.task, "build_generator", spy)
    one_step = hub.translate(["Hallo Welt", "Klicken Sie auf OK."], decoding_steps=1, length_beam=2)
    assert built[-1].cfg.decoding_steps == 1 and built[-1].cfg.length_beam == 2
    assert built[-1].denoiser_calls == 1, "one batch, one denoising step"
    hub.translate(["Hallo Welt"])
    assert built[-1].cfg.decoding_steps == hub.task.cfg.decoding_steps, "the override was for one call"
    assert hub.translate(["Hallo Welt", "Klicken Sie auf OK."], decoding_steps=1, length_beam=2) == one_step
    assert hub.translate("Hallo Welt", decoding_steps=1, length_beam=2) == one_step[0]
    assert hub.translate([""]) == [""], "an empty sentence gives an empty translation"


def test_hub_tokenizes_as_the_data_were_prepared(hub):
    """fairseq's hub builds its Moses tokenizer itself (escaping, dash splits); with the data's
    prepare.json in the folder, the plugin's tokenizer replaces it."""
    assert hub.encode('Klicken Sie auf "Drag-and-Drop".').tolist() == hub.src_dict.encode_line(
        hub.apply_bpe('Klicken Sie auf " Drag-and-Drop " .'), add_if_not_exist=False).long().tolist()
    assert hub.tokenizer.decode('Click " OK " .') == 'Click "OK".'


def test_hub_rejects_bad_options(hub, model_dir, tmp_path):
    from fastdiss_fairseq.errors import FastDiSSError
    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel

    with pytest.raises(ValueError, match="--decoding-steps must be an integer >= 1, got 0"):
        hub.translate(["Hallo Welt"], decoding_steps=0)
    with pytest.raises(TypeError, match="decoding_step"):
        hub.translate(["Hallo Welt"], decoding_step=3)
    with pytest.raises(TypeError, match="item 1 is NoneType"):  # fairseq translated the word "None"
        hub.translate(["Hallo Welt", None])
    with pytest.raises(TypeError, match="a string or a list of strings, got int"):
        hub.translate(3)
    shutil.copytree(model_dir, tmp_path / "no_codes")
    os.remove(tmp_path / "no_codes" / "bpecodes")
    with pytest.raises(FastDiSSError, match="no bpecodes"):
        FastDiSSTransformerModel.from_pretrained(str(tmp_path / "no_codes"), source_lang="de", target_lang="en")


# ---- fairseq's distributed engine ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(tiny_data, save, tmp_path, max_update: int):
    """fairseq-train on two gloo workers into save; returns (exit codes, [rank 0's log, rank 1's]).
    On CPUs fairseq cannot spawn the workers itself (see the README), so each rank is started
    the way fairseq's multi-node launch does it: --distributed-no-spawn --distributed-rank R."""
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(tiny_data), *TINY_TRAIN_ARGS, "--scp", "--mans",
           "--save-dir", str(save), "--max-update", str(max_update), "--distributed-world-size", "2",
           "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-no-spawn",
           "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}"]
    logs = [open(tmp_path / f"rank{rank}.{max_update}.log", "w+") for rank in (0, 1)]
    workers = [subprocess.Popen(cmd + ["--distributed-rank", str(rank)], stdout=log, stderr=subprocess.STDOUT,
                                env=ENV) for rank, log in enumerate(logs)]
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    text = []
    for log in logs:
        log.seek(0)
        text.append(log.read())
        log.close()
    return codes, text


def test_two_process_training_with_fairseqs_distributed_engine_and_its_resume(tiny_data, tmp_path):
    """Two gloo workers through fairseq's own distributed_main, DDP and logging aggregation; then
    the same command resumes. fairseq sent rank 0's checkpoint to rank 1 as a pickle that torch's
    safe loader refused (UnpicklingError: omegaconf's DictConfig): the resume exited 1."""
    save = tmp_path / "ckpt"
    codes, text = run_two_ranks(tiny_data, save, tmp_path, 6)
    assert codes == [0, 0], text[0][-3000:] + text[1][-3000:]
    for rank in (0, 1):
        assert f"distributed init (rank {rank})" in text[rank]
    assert "training on 2 devices" in text[0]
    final = [line for line in text[0].splitlines() if "| train |" in line][-1]
    assert "num_updates 6" in final
    assert float(re.search(r"mans_t_increase ([-\d.]+)", final).group(1)) > 0
    state = torch.load(save / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 6
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2

    codes, text = run_two_ranks(tiny_data, save, tmp_path, 8)
    assert codes == [0, 0], text[0][-3000:] + text[1][-3000:]
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ 6 updates\)", text[0]), text[0][-3000:]
    assert torch.load(save / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 8


def test_each_data_parallel_rank_draws_its_own_noise():
    """fairseq seeded every rank with --seed + updates: ranks whose batches had the same shape drew
    the same t, eps and self-conditioning coin. Rank 0 keeps fairseq's seed (one process unchanged)."""
    from types import SimpleNamespace

    from fairseq.trainer import Trainer

    from fastdiss_fairseq import data_parallel

    assert Trainer._set_seed is data_parallel.set_seed
    assert Trainer.load_checkpoint is data_parallel.load_checkpoint_on_every_rank

    def draws(rank, updates=5):
        trainer = SimpleNamespace(cfg=SimpleNamespace(common=SimpleNamespace(seed=1)), data_parallel_rank=rank,
                                  get_num_updates=lambda: updates)
        Trainer._set_seed(trainer)
        return torch.rand(4)

    rank0 = draws(0)
    torch.manual_seed(1 + 5)  # fairseq's own seed for update 5
    assert torch.equal(rank0, torch.rand(4))
    assert not torch.equal(draws(1), draws(0))
    assert torch.equal(draws(1), draws(1))  # reproducible on resume
    assert not torch.equal(draws(1, updates=6), draws(1))


# ---- TensorBoard -----------------------------------------------------------------------------

def read_scalars(folder: str):
    """{tag: [(step, value)]} of a TensorBoard run folder; TensorBoard's reader if installed,
    else the TFRecord framing (u64 length, u32 crc, payload, u32 crc) with tensorboardX's proto."""
    scalars = defaultdict(list)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        from tensorboardX.proto import event_pb2

        for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
            data = open(path, "rb").read()
            pos = 0
            while pos + 12 <= len(data):
                (length,) = struct.unpack("<Q", data[pos:pos + 8])
                event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
                pos += 12 + length + 4
                for value in event.summary.value:
                    if value.WhichOneof("value") == "simple_value":
                        scalars[value.tag].append((event.step, value.simple_value))
        return scalars
    accumulator = EventAccumulator(folder)
    accumulator.Reload()
    for tag in accumulator.Tags()["scalars"]:
        scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return scalars


def test_tensorboard_events_hold_the_loss_terms_and_mans_statistics(tiny_model):
    ckpt, _ = tiny_model  # trained for 30 updates with --scp --mans --tensorboard-logdir
    logdir = ckpt.parent / "tensorboard"
    inner, train, valid = (read_scalars(str(logdir / tag)) for tag in ("train_inner", "train", "valid"))
    for tag in ("loss", "diffusion_loss", "rounding_loss", "length_loss", "mans_t_increase", "mans_t_std", "t_mean"):
        for run in (inner, train, valid):
            assert run[tag] and all(math.isfinite(v) for _, v in run[tag]), tag
    assert [step for step, _ in inner["diffusion_loss"]] == [5, 10, 15, 20, 25, 30]  # --log-interval 5
    assert train["mans_t_increase"][-1][0] == 30 and train["mans_t_increase"][-1][1] > 0
    assert train["mans_t_std"][-1][1] > 0


# ---- step sweep ------------------------------------------------------------------------------

def test_a_report_figure_is_saved_and_closed_and_a_failed_drawing_leaves_no_file(tmp_path):
    """The step sweep and both benchmarks draw through plotting.saved_figure: pyplot keeps every
    figure until it is closed, and the speed report is redrawn after each of its rows."""
    import matplotlib.pyplot as plt

    from fastdiss_fairseq.plotting import saved_figure

    with saved_figure(str(tmp_path / "drawn.png"), figsize=(2, 2)) as (fig, ax):
        ax.plot([1, 2], [3, 4])
    assert (tmp_path / "drawn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no data"):
        with saved_figure(str(tmp_path / "failed.png")) as (fig, ax):
            raise ValueError("no data")
    assert not (tmp_path / "failed.png").exists()  # never a half-drawn figure
    assert plt.get_fignums() == []


def test_step_sweep_writes_table_json_and_plot_matching_fairseq_generate(tiny_data, tiny_model, tmp_path):
    ckpt, _ = tiny_model
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "fastdiss_fairseq.step_sweep", "--data", str(tiny_data), "--path", str(ckpt),
         "--steps", "1", "2", "--subset", "test", "--refs", str(tiny_data / "refs" / "test.en"),
         "--out", str(out), "--length-beam", "2", "--cpu"],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(out / "step_sweep.json"))
    assert [r["steps"] for r in results["results"]] == [1, 2]
    assert results["meta"]["sentences"] == SIZES["test"] and results["meta"]["length_beam"] == 2
    for r in results["results"]:
        assert 0.0 <= r["sacrebleu"] <= 100.0 and r["sentences_per_second"] > 0
    table = open(out / "step_sweep.md").read()
    assert re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", table, flags=re.M)
    assert re.search(r"^\| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", table, flags=re.M)
    assert (out / "step_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the sweep decodes exactly as fairseq-generate does with the same options
    generated = run_cli("generate", tiny_data, "--user-dir", os.path.join(ROOT, "fastdiss_fairseq"),
                        "--task", "fastdiss_translation", "--path", ckpt, "--cpu", "--decoding-steps", "2",
                        "--length-beam", "2", "--seed", "1", "--max-tokens", "4096", "--remove-bpe",
                        "--tokenizer", "moses", "--source-lang", "de", "--target-lang", "en").stdout
    detok = dict(re.findall(r"^D-(\d+)\t\S+\t?(.*)$", generated, flags=re.M))
    assert open(out / "hypotheses.2.txt", encoding="utf-8").read().splitlines() == \
        [detok[str(i)] for i in range(SIZES["test"])]


def test_generator_profile_splits_wall_time_into_model_passes_and_the_rest(tiny_data, tiny_model, tmp_path):
    """recipes/profile_generator.py (issue 5's profile): every part timed, K denoiser calls per batch."""
    ckpt, _ = tiny_model
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "profile_generator.py"), str(tiny_data), "--path", str(ckpt),
         "--decoding-steps", "3", "--length-beam", "2", "--batch-size", "5", "--json", str(out)],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(out))
    batches = -(-SIZES["test"] // 5)
    assert report["sentences"] == SIZES["test"] and report["denoiser_calls"] == 3 * batches
    parts = report["parts_s"]
    assert parts["denoiser"] > 0 and parts["encoder"] > 0 and parts["source-side cache"] > 0
    assert parts["seeded noise"] > 0
    # the final tokens are always searched (max over the vocabulary), clamping or not
    assert parts["token search: max over V, log-softmax"] > 0
    assert report["model_passes_s"] == pytest.approx(
        sum(parts[k] for k in ("encoder", "length head", "encoder reorder", "source-side cache", "denoiser",
                               "embedding table", "rounding logits")))
    assert sum(parts.values()) == pytest.approx(report["wall_s"])
    assert "| **everything else** |" in proc.stdout


def test_plugin_options_are_listed_where_fairseqs_help_cannot_show_them():
    """fairseq-train --help exits before the task, criterion and model add their options;
    fastdiss-options lists exactly the plugin's own, with their defaults."""
    proc = subprocess.run([sys.executable, "-m", "fastdiss_fairseq.list_options"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sections = re.split(r"^(task|criterion|model) \S+ .*:$", proc.stdout, flags=re.M)
    own = dict(zip(sections[1::2], sections[2::2]))
    assert set(own) == {"task", "criterion", "model"}
    for section, option in (("task", "--decoding-steps"), ("task", "--sampler-update"), ("criterion", "--scp"),
                            ("criterion", "--mans-strength"), ("model", "--noise-schedule")):
        assert re.search(rf"^  {option}\b", own[section], flags=re.M), (section, option)
    mans_strength = own["criterion"].split("--mans-strength")[1].split("--mans-measure")[0]
    assert "(default: 0.25)" in " ".join(mans_strength.split())
    for inherited in ("--max-tokens", "--arch", "--seed", "--eval-bleu", "--encoder-layers", "--source-lang"):
        assert not re.search(rf"^  {inherited}\b", proc.stdout, flags=re.M), inherited


def test_hub_keeps_the_callers_process_settings_unless_asked(model_dir):
    """Loading from Python must not switch the caller's process to bf16 matmuls or flip the
    denormal mode behind their back; asking for it by keyword does."""
    import torch
    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel

    def denormals_flushed():  # torch has no getter; a denormal times one is zero when flushed
        return (torch.tensor([1e-39]) * torch.tensor([1.0])).item() == 0.0

    before = torch.get_float32_matmul_precision()
    flash = torch.backends.cuda.flash_sdp_enabled()
    flushed = denormals_flushed()
    try:
        torch.set_flush_denormal(False)  # whatever tests before this one did to the process
        FastDiSSTransformerModel.from_pretrained(str(model_dir), source_lang="de", target_lang="en")
        assert torch.get_float32_matmul_precision() == before
        assert not denormals_flushed()
        assert torch.backends.cuda.flash_sdp_enabled() == flash
        FastDiSSTransformerModel.from_pretrained(str(model_dir), source_lang="de", target_lang="en",
                                                 fp32_matmul_precision="medium", no_cpu_tuning=False)
        assert torch.get_float32_matmul_precision() == "medium"
        assert denormals_flushed()
    finally:
        torch.set_float32_matmul_precision(before)
        torch.set_flush_denormal(flushed)
        torch.backends.cuda.enable_flash_sdp(flash)


# ---- installation ----------------------------------------------------------------------------

def other_python(version: str):
    """An interpreter of this minor version (pyenv's, or on PATH), or None."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    return pyenv[-1] if pyenv else shutil.which(f"python{version}")


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_setup_script_refuses_an_unsupported_python_before_any_download(version, tmp_path):
    """ve-fairseq has wheels for 3.11 and 3.12 only, and fairseq 0.12.2 does not build from PyPI:
    on another Python the script must stop at once, not after pulling torch."""
    python = other_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_env.sh"), str(venv)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=python), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"setup_env.sh: error: Python {version}."), proc.stderr
    assert "needs Python 3.11 or 3.12" in proc.stderr
    assert not venv.exists(), "nothing was created"
