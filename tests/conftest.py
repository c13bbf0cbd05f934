"""Shared fixtures: a tiny German-English corpus, binarized once, and a tiny trained model.

The corpus is the first lines of the bundled example slice, so the end-to-end tests run the
real fairseq CLIs on real text in well under a minute each.
"""

import gzip
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The package under test is this checkout's, in this process and in every command a test starts,
# also where another clone is installed editable in the same environment (bare `pytest` would
# import that one, while the CLIs' --user-dir loads this one).
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))

# Tests that load checkpoints in-process (fairseq's Python API) need what --user-dir gives the
# CLIs: the plugin's registrations and its torch.load allowlist. Imported here, not by whichever
# test happens to run first.
import fastdiss_fairseq  # noqa: E402

if os.path.dirname(os.path.abspath(fastdiss_fairseq.__file__)) != os.path.join(ROOT, "fastdiss_fairseq"):
    raise ImportError(f"the tests of {ROOT} imported fastdiss_fairseq from {fastdiss_fairseq.__file__}")
BUNDLED = os.path.join(ROOT, "user_dir_examples", "data", "de-en")
USER_DIR = os.path.join(ROOT, "fastdiss_fairseq")
SIZES = {"train": 400, "valid": 21, "test": 13}  # not multiples of 8: nothing may be dropped

TINY_TRAIN_ARGS = [
    "--user-dir", USER_DIR, "--task", "fastdiss_translation", "--arch", "fastdiss_tiny",
    "--criterion", "fastdiss_loss", "--optimizer", "adam", "--lr", "1e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10", "--max-tokens", "1024",
    "--log-format", "simple", "--log-interval", "5", "--num-workers", "0", "--cpu", "--seed", "1",
    "--no-epoch-checkpoints",
]


def run_cli(module: str, *args, stdin: str = None, check: bool = True, timeout: int = 300):
    """Runs `python -m fairseq_cli.<module> args...` and returns the completed process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_cli.{module}", *map(str, args)],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq {module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_gpu_script(name: str, tiny_data, tmp_path, **settings):
    """recipes/gpu/NAME.sh with DEVICE=cpu, in a copy of what a lease sends (the code, and the
    ablation's data-bin, here the tiny one); its report under tmp_path/out, its work under
    tmp_path/work. Fails with the script's output unless it exits 0."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("recipes", "fastdiss_fairseq", "preprocess"):
        os.symlink(os.path.join(ROOT, part), repo / part)
    (repo / "runs" / "ablation").mkdir(parents=True)
    shutil.copytree(tiny_data, repo / "runs" / "ablation" / "data-bin")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               OMP_NUM_THREADS="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), DEVICE="cpu",
               **settings)
    proc = subprocess.run(["bash", str(repo / "recipes" / "gpu" / f"{name}.sh")], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    for split, n in SIZES.items():
        for lang in ("de", "en"):
            with gzip.open(os.path.join(BUNDLED, f"{split}.{lang}.gz"), "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (folder / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_data(tiny_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("data-bin")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "preprocess", "prepare_parallel.py"), "--raw", tiny_raw,
         "--src", "de", "--tgt", "en", "--bpe-merges", "300", "--out", out, "--workers", "1"],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory):
    """A tiny FastDiSS (SCP + MANS) model trained for 30 updates; returns (checkpoint, log).

    Its TensorBoard event files are in <checkpoint folder>/tensorboard."""
    save = tmp_path_factory.mktemp("ckpt")
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--scp", "--mans", "--max-update", "30",
                   "--save-dir", save, "--tensorboard-logdir", save / "tensorboard")
    return save / "checkpoint_last.pt", proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def tiny_ar_model(tiny_data, tmp_path_factory):
    """fairseq's own autoregressive transformer, one update on the tiny data: a checkpoint of
    another model (robustness tests) and a teacher for distillation (preprocess/distill.py).
    Stock fairseq, without the plugin's clean-exit hook: --data-buffer-size 0 starts no batch
    prefetch thread, whose exit after --max-update can abort the process (see clean_exit.py)."""
    save = tmp_path_factory.mktemp("ar-ckpt")
    run_cli("train", tiny_data, "--task", "translation", "--arch", "transformer", "--share-all-embeddings",
            "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
            "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "16", "--decoder-ffn-embed-dim", "16",
            "--encoder-attention-heads", "1", "--decoder-attention-heads", "1", "--optimizer", "adam",
            "--lr", "1e-3", "--max-tokens", "1024", "--max-update", "1", "--disable-validation",
            "--no-epoch-checkpoints", "--num-workers", "0", "--data-buffer-size", "0", "--cpu", "--seed", "1",
            "--save-dir", save)
    return save / "checkpoint_last.pt"
