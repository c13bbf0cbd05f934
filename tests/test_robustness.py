"""Faults and bad input: a clear one-line error or a documented safe behaviour, never a
traceback, a half-written checkpoint or a poisoned one. Real CLIs on the tiny data and model."""

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from fairseq import checkpoint_utils

import fastdiss_fairseq  # noqa: F401  (lets torch.load read fairseq checkpoints; patches checkpoint_utils)
from conftest import ROOT, TINY_TRAIN_ARGS, USER_DIR, run_cli

GEN_ARGS = ["--user-dir", USER_DIR, "--task", "fastdiss_translation", "--cpu",
            "--max-tokens", "2000", "--remove-bpe", "--seed", "7"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def assert_one_line_error(proc, *fragments) -> str:
    """Exit status 1, no traceback anywhere, and a last stderr line naming the problem."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # nor the hydra deprecation warnings and fairseq's override dump that buried it (hydra_noise.py)
    for noise in ("site-packages/hydra", "DEBUG:hydra", "Error when composing"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fastdiss: error: "), last
    for fragment in fragments:
        assert fragment in last, last
    return last


def inverse_sqrt_lr(num_updates: int, lr=1e-3, warmup=10) -> float:
    """The LR fairseq's inverse_sqrt schedule gives TINY_TRAIN_ARGS after num_updates updates."""
    return lr * num_updates / warmup if num_updates < warmup else lr * (warmup / num_updates) ** 0.5


# ---- bad options -----------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--decoding-steps", "0"), ("--length-beam", "0"),
                                           ("--noise-samples", "-1")])
def test_impossible_generation_option_is_one_line(tiny_data, tiny_model, option, value):
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, option, value, check=False)
    assert_one_line_error(proc, f"{option} must be an integer >= 1, got {value}")
    assert not re.search(r"^H-\d+", proc.stdout, flags=re.M), "nothing was generated"


def test_hydras_deprecation_warnings_do_not_bury_the_error(tiny_data, tiny_model):
    """fairseq 0.12 on hydra 1.3 prints about 30 lines of deprecation warnings on every command;
    with the plugin loaded they are gone, even where Python shows warnings (run_cli hides them)."""
    ckpt, _ = tiny_model
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.generate", str(tiny_data), *GEN_ARGS,
                           "--path", str(ckpt), "--decoding-steps", "0"],
                          capture_output=True, text=True, timeout=300, env=dict(env, OMP_NUM_THREADS="1"))
    assert_one_line_error(proc, "--decoding-steps must be an integer >= 1")
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("option, value, message", [
    ("--decoding-t-end", "1.5", "--decoding-t-end must lie in [0, 1), got 1.5"),
    ("--decoding-time-exponent", "0", "--decoding-time-exponent must lie in (0, 10], got 0.0"),
])
def test_time_grid_outside_its_range_is_one_line(tiny_data, tiny_model, option, value, message):
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, option, value, check=False)
    assert_one_line_error(proc, message)


@pytest.mark.parametrize("options, message", [
    (["--iter-decode-max-iter", "4"], "--iter-decode-max-iter 4 is read by fairseq's own generators, not by "
                                      "FastDiSS's diffusion generator: use --decoding-steps K instead"),
    (["--score-reference"], "--score-reference is read by fairseq's own generators"),
    (["--print-alignment"], "--print-alignment hard is read by"),  # a TypeError deep in fairseq-generate before
    (["--lenpen", "0.6"], "--lenpen 0.6 is read by"),
])
def test_options_of_fairseqs_own_generators_are_refused_not_ignored(tiny_data, tiny_model, options, message):
    """The diffusion generator does not read them: they would be ignored without a word."""
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, *options, check=False)
    assert_one_line_error(proc, message)
    assert not re.search(r"^H-\d+", proc.stdout, flags=re.M), "nothing was generated"


def test_generate_bf16_is_refused_not_decoded_in_float32(tiny_data, tiny_model):
    """fairseq-generate casts the model for --fp16 but ignores --bf16 (fairseq's TPU option): the
    output was float32's, byte for byte."""
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--bf16", check=False)
    assert_one_line_error(proc, "--bf16 is fairseq's TPU option", "--decoding-dtype bfloat16")


def test_beam_other_than_the_length_beam_is_a_warning(tiny_data, tiny_model):
    """--beam sizes fairseq's beam search, which the diffusion generator does not run: the output
    is the same, and a value that would look like a wider search is said to do nothing."""
    ckpt, _ = tiny_model
    args = [*GEN_ARGS, "--path", ckpt, "--decoding-steps", "1"]
    plain = run_cli("generate", tiny_data, *args)
    wide = run_cli("generate", tiny_data, *args, "--beam", "10")
    hypotheses = [re.findall(r"^H-.*$", p.stdout, flags=re.M) for p in (plain, wide)]
    assert hypotheses[0] and hypotheses[0] == hypotheses[1]
    assert "--beam 10 has no effect: FastDiSS's search width is --length-beam (5)" in wide.stderr
    assert "--beam" not in plain.stderr  # fairseq's default, 5, is the length beam's too


def test_an_ensemble_is_refused_before_decoding(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", f"{ckpt}:{ckpt}", check=False)
    assert_one_line_error(proc, "does not ensemble models (--path names 2)", "fastdiss_fairseq.average_checkpoints")
    assert not re.search(r"^H-\d+", proc.stdout, flags=re.M), "nothing was generated"


def test_nbest_over_the_candidates_is_one_line_and_within_them_prints_them_best_first(tiny_data, tiny_model):
    """fairseq-generate prints the first --nbest hypotheses; with fewer candidates it printed
    fewer than asked, without a word."""
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--nbest", "5", "--length-beam", "2",
                   "--noise-samples", "2", check=False)
    assert_one_line_error(proc, "--nbest 5 asks for more hypotheses", "--length-beam 2 x --noise-samples 2 = 4")
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--nbest", "4", "--length-beam", "2",
                   "--noise-samples", "2")
    scores = [float(s) for s in re.findall(r"^H-0\t(\S+)\t", proc.stdout, flags=re.M)]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True), scores


def test_negative_clamping_shortlist_is_one_line(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--clamping-shortlist", "-1", check=False)
    assert_one_line_error(proc, "--clamping-shortlist must be an integer >= 0", "got -1")


@pytest.mark.parametrize("option, value", [("decoding_dtype", "float16"), ("length_beam_noise", "per-length")])
def test_unknown_generator_choice_is_one_line(option, value):
    """The CLI's choices stop it in argparse; the hub and --eval-bleu-args reach the config."""
    from fastdiss_fairseq.errors import FastDiSSError
    from fastdiss_fairseq.generator import GeneratorConfig

    flag = "--" + option.replace("_", "-")
    with pytest.raises(FastDiSSError, match=rf"{flag} must be one of .*got '{value}'"):
        GeneratorConfig(**{option: value}).validate()


def test_clamping_and_no_clamping_together_is_one_line(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--clamping", "--no-clamping", check=False)
    assert_one_line_error(proc, "--clamping and --no-clamping contradict each other")


def test_out_of_range_training_option_is_one_line(tiny_data, tmp_path):
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--mans", "--mans-strength", "1.5",
                   "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, "--mans-strength must lie in [0, 1], got 1.5")
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("options, message", [
    (["--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"],
     "--best-checkpoint-metric bleu needs --eval-bleu"),
    (["--eval-bleu", "--eval-bleu-args", '{"decodingsteps": 1}'], "--eval-bleu-args: unknown key(s) 'decodingsteps'"),
])
def test_validation_options_fairseq_would_fail_on_or_ignore_are_one_line(tiny_data, tmp_path, options, message):
    """The metric: fairseq's KeyError at the first validation, after the first epoch's training and
    before any checkpoint. The misspelt key: validation decoded with the defaults, without a word."""
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, *options, "--max-update", "2", "--save-dir", tmp_path,
                   check=False)
    assert_one_line_error(proc, message)
    assert "| epoch 001 |" not in proc.stdout + proc.stderr, "refused before training"
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("option, message", [
    ("--fp16", "--fp16 trains with fairseq's float16 optimizer, which needs a CUDA GPU (--cpu is set)"),
    ("--memory-efficient-bf16", "--memory-efficient-bf16 is fairseq's TPU option (it implies --tpu and needs torch_xla"),
])
def test_half_precision_training_without_its_device_is_one_line(tiny_data, tmp_path, option, message):
    """fairseq stopped later with "Torch not compiled with CUDA enabled" / an xla_device AttributeError."""
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, option, "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, message)
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("options, message", [
    (["--decoder-embed-dim", "48"], "--share-all-embeddings requires --encoder-embed-dim to match --decoder-embed-dim"),
    (["--encoder-attention-heads", "5"], "the model's options do not fit together: embed_dim must be divisible by num_heads"),
])
def test_architecture_options_that_do_not_fit_together_are_one_line(tiny_data, tmp_path, options, message):
    """fairseq's own checks when the model is built: a ValueError / AssertionError traceback before."""
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, *options, "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, message)


@pytest.mark.parametrize("option, value, message", [
    ("--length-loss-factor", "-1", "--length-loss-factor must be >= 0, got -1.0"),  # trained to raise the loss
    ("--noise-scale", "0", "--noise-scale must be > 0, got 0.0"),  # 0 became the default 1.0
    ("--length-classes", "0", "--length-classes must be an integer >= 1, got 0"),  # 0 became the default 256
    ("--warmup-updates", "0", "--lr-scheduler inverse_sqrt needs --warmup-updates >= 1"),  # a ZeroDivisionError
])
def test_loss_weights_and_model_options_out_of_range_are_one_line(tiny_data, tmp_path, option, value, message):
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, option, value, "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, message)
    assert not list(tmp_path.glob("*.pt"))


def test_training_without_the_fastdiss_criterion_is_one_line(tiny_data, tmp_path):
    """--criterion left out: fairseq's cross_entropy failed in the first update, deep in the model."""
    args = list(TINY_TRAIN_ARGS)
    i = args.index("--criterion")
    del args[i:i + 2]
    proc = run_cli("train", tiny_data, *args, "--max-update", "2", "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, "--task fastdiss_translation trains with --criterion fastdiss_loss (got cross_entropy")
    assert not list(tmp_path.glob("*.pt"))


def test_the_fastdiss_criterion_under_another_task_is_one_line(tiny_data, tmp_path):
    """fairseq's transformer got the criterion's keyword arguments and failed in the first update."""
    proc = run_cli("train", tiny_data, "--user-dir", USER_DIR, "--task", "translation", "--arch", "transformer",
                   "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
                   "--decoder-embed-dim", "16", "--criterion", "fastdiss_loss", "--optimizer", "adam",
                   "--lr", "1e-3", "--max-tokens", "1024", "--num-workers", "0", "--cpu", "--max-update", "2",
                   "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, "--criterion fastdiss_loss trains a FastDiSS model: it needs --task "
                                "fastdiss_translation", "(got task TranslationTask)")
    assert not list(tmp_path.glob("*.pt"))


def test_estimate_input_without_self_conditioning_is_rejected():
    from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLossConfig, check_loss_config

    check_loss_config(FastDiSSLossConfig(estimate_input_prob=0.5))
    with pytest.raises(ValueError, match="--self-condition-prob 0 never makes one"):
        check_loss_config(FastDiSSLossConfig(estimate_input_prob=0.5, self_condition_prob=0.0))
    with pytest.raises(ValueError, match="--estimate-input-prob must lie in"):
        check_loss_config(FastDiSSLossConfig(estimate_input_prob=1.5))


def test_scp_chain_without_scp_is_refused():
    from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLossConfig, check_loss_config

    with pytest.raises(ValueError, match="--scp-chain self-conditions the SCP estimate, but SCP is off"):
        check_loss_config(FastDiSSLossConfig(scp_chain=True))
    check_loss_config(FastDiSSLossConfig(scp=True, scp_chain=True))


def test_one_line_report_finds_the_user_error_behind_fairseqs_wrappers():
    from torch.multiprocessing.spawn import ProcessRaisedException

    from fastdiss_fairseq.errors import FastDiSSError, one_line_message

    try:  # the trainer re-raises a failed model load as a plain Exception
        try:
            raise FastDiSSError("the checkpoint's dictionary has 456 symbols but dict.de.txt has 457")
        except FastDiSSError:
            raise Exception("Cannot load model parameters from checkpoint")
    except Exception as e:
        wrapped = e
    assert one_line_message(wrapped) == "fastdiss: error: the checkpoint's dictionary has 456 symbols but dict.de.txt has 457"
    # a multi-GPU worker (torch.multiprocessing.spawn) hands its traceback to the parent as text
    worker = ProcessRaisedException(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "fastdiss_fairseq.errors.FastDiSSError: --length-beam must be an integer >= 1, got 0\n", 1, 1234)
    assert one_line_message(worker) == "fastdiss: error: --length-beam must be an integer >= 1, got 0"
    # hydra could not merge an override that fairseq made from the command line
    from hydra.errors import ConfigCompositionException
    try:
        try:
            raise ValueError("Value 'x' could not be converted to Integer\n    full_key: dataset.max_tokens")
        except ValueError as cause:
            raise ConfigCompositionException("Error merging override dataset.max_tokens=x") from cause
    except ConfigCompositionException as e:
        composed = e
    assert one_line_message(composed) == ("fastdiss: error: fairseq could not build its configuration from the "
                                          "command line: Value 'x' could not be converted to Integer")
    assert one_line_message(RuntimeError("a bug")) is None, "bugs keep their traceback"
    assert one_line_message(FloatingPointError("outside fairseq's trainer")) is None


# ---- checkpoints and data that do not fit -------------------------------------------------------

def test_checkpoint_of_another_model_is_one_line(tiny_data, tiny_ar_model):
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", tiny_ar_model, check=False)
    assert_one_line_error(proc, "not a FastDiSS model", "'transformer'")


def test_truncated_checkpoint_is_one_line(tiny_data, tiny_model, tmp_path):
    """A checkpoint cut short, as plain fairseq could leave one when killed during a copy."""
    ckpt, _ = tiny_model
    truncated = tmp_path / "checkpoint_last.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", truncated, check=False)
    assert_one_line_error(proc, f"cannot read checkpoint {truncated}")


def test_a_file_that_is_not_a_checkpoint_is_one_line(tiny_data, tmp_path):
    """A text file given as --path: torch's own message advised weights_only=False, in a traceback."""
    not_a_checkpoint = tmp_path / "gen.txt"
    not_a_checkpoint.write_text("S-0\tHallo Welt\nH-0\t-0.5\tHello world\n")
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", not_a_checkpoint, check=False)
    assert_one_line_error(proc, f"cannot read checkpoint {not_a_checkpoint}: not a PyTorch checkpoint")


class Custom:
    """A type that torch.load (weights_only) does not load by default."""


def test_a_checkpoint_holding_a_type_torch_does_not_load_names_it():
    from fastdiss_fairseq.errors import checkpoint_load_problem

    buffer = io.BytesIO()
    torch.save({"model": {}, "extra": Custom()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception) as raised:
        torch.load(buffer)
    problem = checkpoint_load_problem(raised.value)
    assert "Custom, which torch.load does not load by default" in problem, problem
    assert "add_safe_globals" in problem and "\n" not in problem


def test_checkpoint_used_in_the_other_direction_is_one_line(tiny_data, tiny_model):
    """A de->en model given --source-lang en --target-lang de translated English without a word."""
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--source-lang", "en", "--target-lang", "de",
                   check=False)
    assert_one_line_error(proc, "the checkpoint translates de->en but this run reads en->de: "
                                "pass --source-lang de --target-lang en")
    run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--source-lang", "de", "--target-lang", "en")


def test_fastdiss_checkpoint_without_its_task_is_one_line(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    args = [a for a in GEN_ARGS if a not in ("--task", "fastdiss_translation")]  # fairseq's default task
    proc = run_cli("generate", tiny_data, *args, "--path", ckpt, check=False)
    assert_one_line_error(proc, "needs --task fastdiss_translation")


def test_dictionary_that_does_not_match_names_both_sizes(tiny_data, tiny_model, tmp_path):
    ckpt, _ = tiny_model
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    size = sum(1 for _ in open(data / "dict.de.txt", encoding="utf-8")) + 4  # + <s> <pad> </s> <unk>
    for lang in ("de", "en"):  # a joined dictionary with one more symbol
        with open(data / f"dict.{lang}.txt", "a", encoding="utf-8") as f:
            f.write("zzzextra 1\n")
    proc = run_cli("generate", data, *GEN_ARGS, "--path", ckpt, check=False)
    assert_one_line_error(proc, f"has {size} symbols", f"has {size + 1}")


def test_empty_test_set_is_one_line(tiny_data, tiny_model, tmp_path):
    from fairseq.data import indexed_dataset

    ckpt, _ = tiny_model
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dict.de.txt", "dict.en.txt"):
        shutil.copy(tiny_data / name, data)
    for lang in ("de", "en"):  # what fairseq-preprocess writes for an empty test file
        prefix = str(data / f"test.de-en.{lang}")
        indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=1000).finalize(prefix + ".idx")
    proc = run_cli("generate", data, *GEN_ARGS, "--path", ckpt, check=False)
    assert_one_line_error(proc, "split 'test'", "has 0 sentences")


def test_test_sentence_over_the_position_limit_is_one_line_and_truncate_source_fixes_it(tiny_data, tiny_model):
    """A 1,845-token Debian description in debdesc-summ/test stopped fairseq-generate with a
    traceback after 25 minutes of training; now one line says what to add."""
    ckpt, _ = tiny_model
    limit = ["--max-source-positions", "6"]  # the tiny test sources are longer than 6 subwords
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, *limit, check=False)
    last = assert_one_line_error(proc, "split test:", "13 source(s) over 6 positions", "add --truncate-source")
    assert "target" not in last, last
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, *limit, "--truncate-source", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"^H-\d+", proc.stdout, flags=re.M)) == 13
    # a reference over its limit is never cut: --truncate-source is not the way on there
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--max-target-positions", "6",
                   "--truncate-source", check=False)
    last = assert_one_line_error(proc, "split test:", "target(s) over 6 positions", "--max-target-positions")
    assert "--truncate-source" not in last and "source(s)" not in last, last


# ---- numerical faults ------------------------------------------------------------------------

def test_max_tokens_below_the_longest_test_pair_is_one_line(tiny_data, tiny_model):
    """fairseq stopped with "AssertionError: Sentences lengths should not exceed max_tokens"."""
    ckpt, _ = tiny_model
    args = [a for a in GEN_ARGS if a not in ("--max-tokens", "2000")]
    proc = run_cli("generate", tiny_data, *args, "--path", ckpt, "--max-tokens", "2", check=False)
    assert_one_line_error(proc, "--max-tokens 2 is smaller than the longest sentence pair of split test",
                          "raise --max-tokens to at least")


def test_training_pairs_all_over_max_tokens_is_one_line(tiny_data, tmp_path):
    """fairseq-train skips training pairs over --max-tokens; with none left it stopped with an IndexError."""
    args = [a for a in TINY_TRAIN_ARGS if a not in ("--max-tokens", "1024")]
    proc = run_cli("train", tiny_data, *args, "--max-tokens", "1", "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, "every sentence pair of split train exceeds the size limits (1, 1)",
                          "--max-tokens 1")
    assert not list(tmp_path.glob("*.pt"))


def test_nan_loss_stops_in_one_line_and_writes_no_checkpoint(tiny_data, tiny_model, tmp_path):
    """An absurd LR (1e30) on a resumed run: the first update blows the weights up, the next loss
    is NaN. fairseq would print a traceback and dump crash.pt with the weights that made the NaN."""
    ckpt, _ = tiny_model
    shutil.copy(ckpt, tmp_path / "checkpoint_last.pt")
    before = (tmp_path / "checkpoint_last.pt").read_bytes()
    args = ["1e30" if a == "1e-3" else a for a in TINY_TRAIN_ARGS]  # the --lr value
    assert args != TINY_TRAIN_ARGS
    proc = run_cli("train", tiny_data, *args, "--max-update", "60", "--save-dir", tmp_path, check=False)
    assert_one_line_error(proc, "non-finite FastDiSS loss")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"], "no crash.pt, no new or temp file"
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == before


def test_save_refuses_weights_with_nan(tmp_path):
    target = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save({"model": {"w": torch.ones(3)}}, str(target))
    with pytest.raises(FloatingPointError, match="model weight w holds NaN"):
        checkpoint_utils.torch_persistent_save({"model": {"w": torch.tensor([1.0, float("nan")])}}, str(target))
    assert torch.equal(torch.load(target)["model"]["w"], torch.ones(3))


# ---- killed runs and interrupted writes -------------------------------------------------------

class ExplodingPickle:
    def __reduce__(self):
        raise RuntimeError("pickling failed midway")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save({"model": {"w": torch.ones(1000)}}, str(target))
    with pytest.raises(RuntimeError, match="pickling failed midway"):
        checkpoint_utils.torch_persistent_save(
            {"model": {"w": torch.zeros(1000)}, "extra": ExplodingPickle()}, str(target))
    assert torch.equal(torch.load(target)["model"]["w"], torch.ones(1000))
    assert os.listdir(tmp_path) == ["checkpoint_last.pt"], "the temp file is removed"


def test_interrupted_copy_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """fairseq copies checkpoint_E_U.pt to checkpoint_last.pt; a copy that dies halfway must not
    truncate the file the next run resumes from."""
    old, new = tmp_path / "checkpoint_last.pt", tmp_path / "checkpoint_1_10.pt"
    old.write_bytes(b"old checkpoint")
    new.write_bytes(b"new checkpoint" * 1000)

    def copy_half_then_die(src, dst, length=0):
        dst.write(src.read(100))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfileobj", copy_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(new), str(old), overwrite=True)
    assert old.read_bytes() == b"old checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_10.pt", "checkpoint_last.pt"]


SLOW_SAVE = """
import sys, time, torch
from fairseq import checkpoint_utils
import fastdiss_fairseq

class Slow:
    def __reduce__(self):
        print("saving", flush=True)
        time.sleep(60)
        return (int, (0,))

checkpoint_utils.torch_persistent_save({"model": {"w": torch.zeros(1000)}, "slow": Slow()}, sys.argv[1])
"""


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "checkpoint_last.pt"
    torch.save({"model": {"w": torch.ones(1000)}}, target)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "saving"  # the save is under way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert torch.equal(torch.load(target)["model"]["w"], torch.ones(1000))


def test_sigkill_mid_epoch_resumes_with_the_same_update_counter_and_lr(tiny_data, tmp_path):
    save = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(tiny_data), *TINY_TRAIN_ARGS,
           "--save-dir", str(save), "--save-interval-updates", "5", "--max-update", "40"]

    # first run: SIGKILL as soon as an update checkpoint past update 5 exists
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
        try:
            deadline = time.time() + 240
            while not any(int(m.group(1)) > 5 for p in save.glob("checkpoint_*_*.pt")
                          if (m := re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", p.name))):
                assert proc.poll() is None, "training ended before it could be killed"
                assert time.time() < deadline
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # every checkpoint on disk is whole (the kill may have hit the copy to checkpoint_last.pt)
    for path in save.glob("*.pt"):
        torch.load(path)
    last = torch.load(save / "checkpoint_last.pt")
    updates = last["optimizer_history"][-1]["num_updates"]
    iterator = last["extra_state"]["train_iterator"]
    assert updates >= 5 and iterator["epoch"] == 1 and iterator["iterations_in_epoch"] == updates
    assert last["last_optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(inverse_sqrt_lr(updates))

    # second run, the same command: resumes there, mid-epoch, on the same LR schedule
    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert re.search(rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch 1 @ {updates} updates\)", log), log[-3000:]
    inner = re.findall(r"\| train_inner \| epoch 001:\s+(\d+) / \d+ .*num_updates=(\d+), lr=([\d.e-]+)", log)
    assert inner, log[-3000:]
    first_iteration, first_update, first_lr = inner[0]
    assert int(first_update) == int(first_iteration) > updates, "the counter and the epoch position continue"
    for _, update, lr in inner:
        assert float(lr) == pytest.approx(inverse_sqrt_lr(int(update)), rel=1e-4)
    assert re.search(r"\| train \| .*num_updates 40\b", log)


# fairseq's BufferedIterator with a batch source that is always inside torch's C++ code, as a
# training stopped by --max-update leaves its prefetch thread. Without the plugin this process
# dies with SIGABRT ("terminate called without an active exception") on torch 2.13.
PREFETCH_AT_EXIT = """
import torch
import fastdiss_fairseq
from fairseq.data.iterators import BufferedIterator

class CollatingForever:
    def __len__(self):
        return 10 ** 6

    def __iter__(self):
        torch.manual_seed(0)
        while True:
            x = torch.randn(64, 64)
            for _ in range(200):
                x = torch.stack([x, x]).sum(0) * 0.5
            yield x

batches = BufferedIterator(10 ** 6, CollatingForever())
next(batches)
print("first batch")
"""


def test_exit_with_a_prefetch_thread_mid_batch_is_clean():
    for _ in range(3):  # the abort it prevents is a race; three tries all exit cleanly
        proc = subprocess.run([sys.executable, "-c", PREFETCH_AT_EXIT], capture_output=True, text=True,
                              timeout=120, env=ENV)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip() == "first batch"


@pytest.mark.parametrize("options, message", [
    # (and another MANS strength, which alone would be resumed with a warning: not given for a
    # resume that is refused)
    (["--decoder-layers", "2", "--mans-strength", "0.8"],
     "its model options differ: --decoder-layers 1 (now 2); train into a new --save-dir"),
    (["--optimizer", "sgd"], "Optimizer does not match; please reset the optimizer (--reset-optimizer)"),
])
def test_resuming_a_checkpoint_of_another_model_or_optimizer_is_one_line(tiny_data, tiny_model, tmp_path,
                                                                           options, message):
    """A run restarted with other options into the same --save-dir: fairseq raised "Cannot load
    model parameters ...; please ensure that the architectures match" over the state-dict diff."""
    ckpt, _ = tiny_model
    shutil.copy(ckpt, tmp_path / "checkpoint_last.pt")
    args = [a for a in TINY_TRAIN_ARGS if a not in ("--optimizer", "adam")] if "--optimizer" in options \
        else list(TINY_TRAIN_ARGS)
    proc = run_cli("train", tiny_data, *args, *options, "--max-update", "1000", "--save-dir", tmp_path, check=False)
    last = assert_one_line_error(proc, message)
    if "--decoder-layers" in options:
        assert f"cannot resume from {tmp_path / 'checkpoint_last.pt'}" in last
        assert "resuming from" not in proc.stdout + proc.stderr


def test_scp_and_mans_options_count_only_while_that_part_is_on():
    from fastdiss_fairseq.resume_check import changed_options

    old = {"_name": "fastdiss_loss", "scp": False, "scp_delta_max": 0.5, "mans": "True", "mans_strength": 0.5}
    new = dict(old, scp_delta_max=0.25, mans_strength=0.25)
    # a baseline (SCP off) resumed after SCP's default changed: nothing to report; MANS's
    # strength is (its on-switch stored as a string by an older cfg still counts)
    assert changed_options(old, new) == ["--mans-strength 0.5 -> 0.25"]
    assert changed_options(old, dict(new, scp=True)) == [
        "--mans-strength 0.5 -> 0.25", "--scp False -> True"]


def test_resuming_with_changed_scp_mans_options_is_logged(tiny_data, tiny_model, tmp_path):
    ckpt, _ = tiny_model  # trained with --scp --mans (defaults: t' - t up to 0.25, strength 0.25)
    shutil.copy(ckpt, tmp_path / "checkpoint_last.pt")
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--scp", "--scp-delta-max", "0.5", "--mans-strength", "0.8",
                   "--max-update", "31", "--save-dir", tmp_path)
    log = proc.stdout + proc.stderr
    warning = re.search(r"fastdiss: resuming from \S+ with changed criterion options: (.*)", log)
    assert warning, log[-3000:]
    # MANS is off now, so its strength no longer matters and is not reported; SCP's gap is
    assert warning.group(1) == "--mans True -> False, --scp-delta-max 0.25 -> 0.5"
    assert "(epoch 2 @ 30 updates)" in log and "num_updates 31" in log


# ---- fairseq-interactive input ---------------------------------------------------------------

LONG_LINE = b"Hallo " * 1100  # about 4400 subword units: more than the 1024 source positions
STDIN = b"Hallo Welt\n\nKlicken Sie auf \xff\xfe OK.\n" + LONG_LINE + b"\n"


@pytest.fixture(scope="module")
def interactive_runs(tiny_data, tiny_model):
    """The same input through fairseq-interactive twice. PYTHONIOENCODING=utf-8 makes stdin
    strict, as it is under most locales (fairseq then died on the first non-UTF-8 byte)."""
    ckpt, _ = tiny_model
    cmd = [sys.executable, "-m", "fairseq_cli.interactive", str(tiny_data), "--user-dir", USER_DIR,
           "--task", "fastdiss_translation", "--path", str(ckpt), "--cpu", "--source-lang", "de",
           "--target-lang", "en", "--tokenizer", "moses", "--bpe", "subword_nmt",
           "--bpe-codes", str(tiny_data / "bpecodes"), "--decoding-steps", "3", "--buffer-size", "2",
           "--seed", "3"]
    env = dict(ENV, PYTHONIOENCODING="utf-8")
    runs = [subprocess.run(cmd, input=STDIN, capture_output=True, env=env, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    return [(run.stdout.decode("utf-8"), run.stdout + run.stderr) for run in runs]


def test_an_empty_source_gets_as_many_empty_hypotheses_as_the_other_sentences():
    """--nbest N prints N hypotheses a sentence; a source of nothing but EOS is no exception."""
    from fastdiss_fairseq.safeguards import empty_sources_get_empty_output

    hypos = [[{"rank": r} for r in range(3)] for _ in range(2)]
    out = empty_sources_get_empty_output({"net_input": {"src_lengths": torch.tensor([1, 4])}}, hypos, eos=2)
    assert [h["tokens"].tolist() for h in out[0]] == [[2], [2], [2]]
    assert out[1] is hypos[1]


def test_interactive_empty_line_gives_an_empty_translation(interactive_runs):
    stdout, _ = interactive_runs[0]
    assert re.search(r"^S-1\t$", stdout, flags=re.M)
    assert re.search(r"^H-1\t0\.0\t$", stdout, flags=re.M)
    assert re.search(r"^D-1\t0\.0\t$", stdout, flags=re.M)
    assert len(re.findall(r"^D-\d+\t", stdout, flags=re.M)) == 4, "every line gets an answer"


def test_interactive_non_utf8_bytes_become_unk_with_a_warning(interactive_runs):
    stdout, everything = interactive_runs[0]
    assert b"fastdiss: input line 3 is not valid UTF-8" in everything
    assert re.search(r"^S-2\t.*<unk>.*$", stdout, flags=re.M)
    assert re.search(r"^H-2\t-?[\d.]+\t\S", stdout, flags=re.M)
    assert b"Traceback" not in everything


def test_interactive_too_long_line_is_truncated_with_a_warning(interactive_runs):
    stdout, everything = interactive_runs[0]
    assert re.search(rb"fastdiss: an input of \d{4} tokens .* longer than the 1024 source positions", everything)
    assert re.search(r"^H-3\t-?[\d.]+\t\S", stdout, flags=re.M)


def test_interactive_output_is_byte_identical_across_runs(interactive_runs):
    """Same checkpoint, input and --seed: the same bytes, apart from the W- (wall time) lines."""
    first, second = (re.sub(r"^W-\d+\t.*\n", "", stdout, flags=re.M) for stdout, _ in interactive_runs)
    assert first == second
    assert len(first.splitlines()) == 4 * 4  # S, H, D, P per input


def test_interactive_moses_without_languages_is_one_line(tiny_data, tiny_model):
    """--tokenizer moses without --source-lang/--target-lang: fairseq passed their null values to
    the tokenizer's config and stopped with hydra's ConfigCompositionException."""
    ckpt, _ = tiny_model
    proc = run_cli("interactive", tiny_data, "--user-dir", USER_DIR, "--task", "fastdiss_translation",
                   "--path", ckpt, "--cpu", "--tokenizer", "moses", "--bpe", "subword_nmt",
                   "--bpe-codes", tiny_data / "bpecodes", stdin="Hallo Welt\n", check=False)
    assert_one_line_error(proc, "tokenizer.source_lang is empty", "pass both")


@pytest.mark.parametrize("old_output", ["other_bpe", "no_amp"])
def test_readme_job_refuses_an_output_folder_of_an_older_version(old_output, tiny_model, tmp_path):
    """The README's job resumes what it finds in OUT. Data of another vocabulary, or a checkpoint
    trained without --amp (fairseq would stop on resume: "Optimizer does not match"), is refused in
    one line before any work."""
    out = tmp_path / "out"
    if old_output == "other_bpe":
        (out / "data-bin").mkdir(parents=True)
        (out / "data-bin" / "prepare.json").write_text('{"bpe_merges": 3000}')
        expected = "holds data preprocessed with other BPE merges than 10000"
    else:
        (out / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_model[0], out / "checkpoints" / "checkpoint_last.pt")  # trained without --amp
        expected = "checkpoint_last.pt was trained without --amp by an older version of this script"
    proc = subprocess.run(["bash", os.path.join(ROOT, "user_dir_examples", "run_de_en_example.sh")],
                          env=dict(ENV, OUT=str(out), VENV=sys.prefix), capture_output=True, text=True,
                          timeout=300)  # past the guards, the job would preprocess and train
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_de_en_example.sh: error: ") and expected in last, last
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [("data-bin" if old_output == "other_bpe" else "checkpoints")]


def test_readme_job_names_the_step_that_failed_and_its_logs_last_line(tmp_path):
    """Every step's output goes to a log; a failure used to end the job with no message at all.
    Here the data folder says it is finished (prepare.json) but holds no data."""
    out = tmp_path / "out"
    (out / "data-bin").mkdir(parents=True)
    (out / "data-bin" / "prepare.json").write_text('{"bpe_merges": 10000}')
    proc = subprocess.run(["bash", os.path.join(ROOT, "user_dir_examples", "run_de_en_example.sh")],
                          env=dict(ENV, OUT=str(out), VENV=sys.prefix), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_de_en_example.sh: error: training failed: "), last
    assert last.endswith(f"(log: {out}/train.log)"), last
