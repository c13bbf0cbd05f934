#!/usr/bin/env python3
"""Sequence-level knowledge distillation: replace the training targets by a teacher's output.

Non-autoregressive models (fairseq's CMLM/NAT, and diffusion models such as FastDiSS) learn
much faster from the translations of a trained autoregressive teacher than from the human
references: the teacher's outputs are less varied, so a parallel decoder has fewer modes to
average over (Kim & Rush 2016; Gu et al. 2018). This script translates the *training* source of
a raw parallel folder with a fairseq checkpoint, through the stock `fairseq-interactive`, and
writes a raw folder in the same layout whose train.TGT is the teacher's output. valid and test
are copied unchanged: models are always scored against the human references.

Input:  --raw DIR with {train,valid,test}.{SRC,TGT}[.gz] (the layout prepare_parallel.py reads)
        --teacher CKPT (any fairseq translation checkpoint), --teacher-data DIR (its data-bin,
        holding the dictionaries and the `bpecodes` written by prepare_parallel.py)
Output: --out DIR with the same six files (gzipped) and distill.json (settings, timing)

Example (the distillation measured in docs/measurements.md; the teacher is the speed
benchmark's AR transformer, its data-bin prepared by prepare_parallel.py):
  python preprocess/distill.py --raw user_dir_examples/data/de-en --src de --tgt en \
      --teacher runs/speed/peer_ar/checkpoint_last.pt --teacher-data data-bin/de-en-cpu \
      --beam 5 --out runs/distilled-de-en
"""

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_parallel  # noqa: E402
from prepare_parallel import SPLITS, fail, raw_path, read_lines  # noqa: E402

from fastdiss_fairseq.prepared_text import PreparedTextTokenizer, read_settings  # noqa: E402

prepare_parallel.PROG = "distill"

PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastdiss_fairseq")
HYPOTHESIS_LINE = re.compile(r"^D-(\d+)\t[^\t]*\t(.*)$")


def parse_hypotheses(stdout: str, expected: int):
    """fairseq-interactive's D-lines (BPE removed, still tokenized), put back in input order."""
    by_id = {}
    for line in stdout.splitlines():
        match = HYPOTHESIS_LINE.match(line)
        if match:
            by_id[int(match.group(1))] = match.group(2)
    missing = [i for i in range(expected) if i not in by_id]
    if missing:
        fail(f"the teacher returned no translation for {len(missing)} of {expected} lines "
             f"(first: line {missing[0] + 1}); see the fairseq-interactive log")
    return [by_id[i] for i in range(expected)]


def translate(lines, args) -> list:
    """Translate raw source lines with the teacher through the stock fairseq-interactive.

    The lines are tokenized here, as the teacher's data were (its prepare.json; without one,
    prepare_parallel.py's defaults), and the teacher's output detokenized here: the teacher runs
    fairseq's own translation task, whose --tokenizer moses would escape quotes and split dashes."""
    codes = os.path.join(args.teacher_data, "bpecodes")
    for path, what in ((args.teacher, "--teacher checkpoint"), (codes, "bpecodes in --teacher-data")):
        if not os.path.isfile(path):
            fail(f"{what} not found: {path}")
    tokenizer = PreparedTextTokenizer(read_settings(args.teacher_data) or {}, args.src, args.tgt)
    # fairseq-interactive of this interpreter's fairseq: the script may run from a virtual
    # environment that is not activated (its bin/ not on PATH)
    cmd = [sys.executable, "-m", "fairseq_cli.interactive", args.teacher_data, "--path", args.teacher,
           # the plugin's checkpoint allowlist lets torch 2.13 load fairseq's own checkpoints
           "--user-dir", PLUGIN_DIR,
           "--source-lang", args.src, "--target-lang", args.tgt,
           "--bpe", "subword_nmt", "--bpe-codes", codes,
           "--beam", str(args.beam), "--buffer-size", "2000", "--max-tokens", str(args.max_tokens),
           "--seed", "1"]
    if not args.gpu:
        cmd.append("--cpu")
    log_path = os.path.join(args.out, "distill.log")
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, input="\n".join(tokenizer.encode(line) for line in lines) + "\n",
                              capture_output=True, text=True)
        log.write(proc.stderr)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        fail(f"fairseq-interactive failed ({last[0]}); full log: {log_path}")
    return [tokenizer.decode(line) for line in parse_hypotheses(proc.stdout, len(lines))]


def write_gz(path: str, lines) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", required=True, help="raw parallel folder ({train,valid,test}.{SRC,TGT}[.gz])")
    p.add_argument("--src", required=True, help="source language suffix")
    p.add_argument("--tgt", required=True, help="target language suffix")
    p.add_argument("--teacher", required=True, help="fairseq checkpoint of the teacher (SRC->TGT)")
    p.add_argument("--teacher-data", required=True, help="the teacher's data-bin (dictionaries + bpecodes)")
    p.add_argument("--out", required=True, help="output raw folder")
    p.add_argument("--beam", type=int, default=5, help="teacher beam size (5 is the usual choice)")
    p.add_argument("--max-tokens", type=int, default=12000, help="tokens per teacher batch")
    p.add_argument("--gpu", action="store_true", help="decode on the GPU (default: CPU)")
    args = p.parse_args(argv)
    if args.beam < 1:
        fail(f"--beam must be >= 1, got {args.beam}")

    os.makedirs(args.out, exist_ok=True)
    for split in SPLITS:  # check every input before the long decode
        for lang in (args.src, args.tgt):
            raw_path(args.raw, split, lang)
    source = read_lines(raw_path(args.raw, "train", args.src))
    if len(source) != len(read_lines(raw_path(args.raw, "train", args.tgt))):
        fail(f"train.{args.src} and train.{args.tgt} differ in length in {args.raw}")

    start = time.time()
    distilled = translate(source, args)
    seconds = time.time() - start
    write_gz(os.path.join(args.out, f"train.{args.src}.gz"), source)
    write_gz(os.path.join(args.out, f"train.{args.tgt}.gz"), distilled)
    for split in ("valid", "test"):
        for lang in (args.src, args.tgt):
            path = raw_path(args.raw, split, lang)
            if path.endswith(".gz"):
                shutil.copyfile(path, os.path.join(args.out, f"{split}.{lang}.gz"))
            else:
                write_gz(os.path.join(args.out, f"{split}.{lang}.gz"), read_lines(path))
    settings = dict(vars(args))
    settings.update(train_pairs=len(source), teacher_seconds=round(seconds, 1))
    with open(os.path.join(args.out, "distill.json"), "w") as f:
        json.dump(settings, f, indent=2)
    print(f"distilled {len(source)} training targets in {seconds:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
