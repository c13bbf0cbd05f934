"""preprocess/distill.py: a teacher's translations replace the training targets, through the
stock fairseq-interactive; valid/test keep the human references."""

import gzip
import os
import subprocess
import sys

from conftest import ROOT, SIZES

SCRIPT = os.path.join(ROOT, "preprocess", "distill.py")


def run_distill(*args):
    # as `.venv/bin/python preprocess/distill.py` runs it: the environment's bin/ (where
    # fairseq-interactive lives) not on PATH
    bin_dir = os.path.dirname(sys.executable)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d != bin_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PATH=path)
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def read_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def test_distill_replaces_train_targets_only(tiny_raw, tiny_data, tiny_ar_model, tmp_path):
    out = tmp_path / "distilled"
    proc = run_distill("--raw", tiny_raw, "--src", "de", "--tgt", "en", "--teacher", tiny_ar_model,
                       "--teacher-data", tiny_data, "--beam", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    train_de, train_en = read_gz(out / "train.de.gz"), read_gz(out / "train.en.gz")
    assert len(train_de) == len(train_en) == SIZES["train"]
    assert train_de == (tiny_raw / "train.de").read_text(encoding="utf-8").splitlines()
    references = (tiny_raw / "train.en").read_text(encoding="utf-8").splitlines()
    assert train_en != references, "training targets are the teacher's, not the references"
    for split in ("valid", "test"):
        for lang in ("de", "en"):
            assert read_gz(out / f"{split}.{lang}.gz") == (tiny_raw / f"{split}.{lang}").read_text(
                encoding="utf-8").splitlines()
    assert (out / "distill.json").exists()


def test_distill_bad_input_is_one_line(tiny_raw, tiny_data, tmp_path):
    proc = run_distill("--raw", tiny_raw, "--src", "de", "--tgt", "en", "--teacher", tmp_path / "none.pt",
                       "--teacher-data", tiny_data, "--out", tmp_path / "o")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"distill: error: --teacher checkpoint not found: {tmp_path / 'none.pt'}"]
    proc = run_distill("--raw", tmp_path, "--src", "de", "--tgt", "en", "--teacher", "x", "--teacher-data", "y",
                       "--out", tmp_path / "o")
    assert proc.stderr.strip() == f"distill: error: missing train.de[.gz] in {tmp_path}"


def test_the_teacher_reads_text_tokenized_as_its_data_were(tiny_data, tmp_path, monkeypatch):
    """The teacher runs fairseq's translation task, whose --tokenizer moses would escape quotes
    and split dashes: distill.py tokenizes (as the teacher data's prepare.json says) and
    detokenizes itself."""
    import argparse

    monkeypatch.syspath_prepend(os.path.join(ROOT, "preprocess"))
    import prepare_parallel

    # importing distill renames prepare_parallel's errors; other tests expect the name back
    monkeypatch.setattr(prepare_parallel, "PROG", prepare_parallel.PROG)
    import distill

    seen = {}

    def fake_interactive(cmd, input, **kwargs):
        seen["cmd"], seen["input"] = cmd, input
        return subprocess.CompletedProcess(cmd, 0, stdout='D-0\t-0.5\tClick " Drag-and-Drop " .\n', stderr="")

    monkeypatch.setattr(distill.subprocess, "run", fake_interactive)
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")
    args = argparse.Namespace(teacher=str(teacher), teacher_data=str(tiny_data), src="de", tgt="en", beam=1,
                              max_tokens=100, gpu=False, out=str(tmp_path))
    assert distill.translate(['Klicken Sie auf "Drag-and-Drop".'], args) == ['Click "Drag-and-Drop".']
    assert seen["input"] == 'Klicken Sie auf " Drag-and-Drop " .\n'
    assert "--tokenizer" not in seen["cmd"]
