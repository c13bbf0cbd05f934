#!/usr/bin/env python3
"""Prepare any raw parallel corpus for fairseq: clean, Moses-tokenize, joint BPE, binarize.

Input: a folder with {train,valid,test}.{SRC,TGT}, each optionally gzipped, raw UTF-8 text,
one segment per line (line i of X.SRC pairs with line i of X.TGT). This is what most users
have, and what every benchmark script in this folder reduces its official data to.

Output (--out DIR), ready for fairseq-train / fairseq-generate / fairseq-interactive:
  DIR/{train,valid,test}.SRC-TGT.{SRC,TGT}.{bin,idx}, DIR/dict.{SRC,TGT}.txt (joined)
  DIR/bpecodes          the subword-nmt codes (for --bpe subword_nmt --bpe-codes)
  DIR/refs/{split}.{l}  the raw, untokenized text of each split (detokenized SacreBLEU refs)
  DIR/prepare.json      the settings used; --tokenizer moses at inference tokenizes by them

Example:
  python preprocess/prepare_parallel.py --raw ../shared/data/de-en --src de --tgt en \
      --bpe-merges 8000 --out data-bin/de-en
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from multiprocessing import Pool

# The one definition of how a line is tokenized, shared with inference (--tokenizer moses on
# data with a prepare.json) so that both tokenize alike.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastdiss_fairseq.prepared_text import (  # noqa: E402
    NORMALIZATION_SCOPES,
    PUNCTUATION_NORMALIZE,
    SETTINGS_FILE,
    default_moses_lang,
    line_tokenizer,
    split_punctuation,
)

SPLITS = ("train", "valid", "test")


# Error prefix; scripts that reuse this module's readers (distill.py) set their own name.
PROG = "prepare_parallel"


def fail(msg: str) -> None:
    sys.exit(f"{PROG}: error: {msg}")


def raw_path(folder: str, split: str, lang: str) -> str:
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    fail(f"missing {split}.{lang}[.gz] in {folder}")


def read_lines(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError as e:
        fail(f"{path} is not valid UTF-8 ({e})")


_TOKENIZER = None


def _init_tokenizer(lang: str, lowercase: bool, aggressive_dash: bool, pretokenized: bool, punctuation: str) -> None:
    global _TOKENIZER
    _TOKENIZER = line_tokenizer(lang, lowercase, aggressive_dash, pretokenized, punctuation)


def _tokenize_chunk(lines):
    return [_TOKENIZER(line) for line in lines]


def tokenize(lines, lang: str, lowercase: bool, workers: int, aggressive_dash: bool = False,
             pretokenized: bool = False, punctuation: str = PUNCTUATION_NORMALIZE):
    chunks = [lines[i:i + 2000] for i in range(0, len(lines), 2000)]
    initargs = (lang, lowercase, aggressive_dash, pretokenized, punctuation)
    with Pool(workers, initializer=_init_tokenizer, initargs=initargs) as pool:
        return [line for chunk in pool.map(_tokenize_chunk, chunks) for line in chunk]


def keep_pairs(src_tok, tgt_tok, max_tokens: int, ratio: float = 0.0, min_tokens: int = 1):
    """Indices of the tokenized pairs that Moses clean-corpus-n.perl would keep.

    A pair goes when a side has fewer than min_tokens or more than max_tokens tokens, or,
    when ratio > 0, when one side is more than ratio times longer than the other.
    """
    keep = []
    for i, (a, b) in enumerate(zip(src_tok, tgt_tok)):
        la, lb = len(a.split()), len(b.split())
        if not (min_tokens <= la <= max_tokens and min_tokens <= lb <= max_tokens):
            continue
        if ratio > 0 and (la > ratio * lb or lb > ratio * la):
            continue
        keep.append(i)
    return keep


_BPE = None


def _init_bpe(codes_path: str) -> None:
    global _BPE
    from subword_nmt.apply_bpe import BPE

    with open(codes_path, encoding="utf-8") as f:
        _BPE = BPE(f)


def _bpe_chunk(lines):
    return [_BPE.process_line(line) for line in lines]


def apply_bpe(lines, codes_path: str, workers: int):
    chunks = [lines[i:i + 2000] for i in range(0, len(lines), 2000)]
    with Pool(workers, initializer=_init_bpe, initargs=(codes_path,)) as pool:
        return [line for chunk in pool.map(_bpe_chunk, chunks) for line in chunk]


def write_lines(path: str, lines) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", required=True, help="folder with {train,valid,test}.{src,tgt}[.gz]")
    p.add_argument("--src", required=True, help="source file suffix, e.g. de")
    p.add_argument("--tgt", required=True, help="target file suffix, e.g. en")
    p.add_argument("--out", required=True, help="destination folder of the binarized data")
    p.add_argument("--src-moses-lang", help="Moses language of the source (default: --src if 2 letters, else en)")
    p.add_argument("--tgt-moses-lang", help="Moses language of the target (default: --tgt if 2 letters, else en)")
    p.add_argument("--bpe-merges", type=int, default=10000, help="number of joint BPE merge operations")
    p.add_argument("--lowercase", action="store_true", help="lowercase after tokenizing (IWSLT14 convention)")
    p.add_argument("--max-tokens", type=int, default=250, help="drop training pairs with a side longer than this (tokenized)")
    p.add_argument("--clean-ratio", type=float, default=0.0,
                   help="also drop training pairs whose token-length ratio exceeds this, like Moses "
                        "clean-corpus-n -ratio (0 = off)")
    p.add_argument("--aggressive-dash", action="store_true",
                   help="Moses -a: split hyphens into @-@ tokens (WMT14/WMT16 convention)")
    p.add_argument("--normalize-punctuation", choices=NORMALIZATION_SCOPES, default="all",
                   help="splits that get Moses's punctuation normalization: all; train only (the others "
                        "get just U+2019 mapped to ', as fairseq's prepare-wmt14en2de.sh); none (fairseq's "
                        "prepare-iwslt14.sh). Raw text at inference is tokenized as the test split")
    p.add_argument("--pretokenized", action="store_true",
                   help="input is already tokenized: skip Moses normalization/tokenization (Gigaword)")
    p.add_argument("--max-train", type=int, default=0, help="keep only the first N training pairs (0 = all)")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    args = p.parse_args(argv)

    if args.bpe_merges < 1:
        fail(f"--bpe-merges must be >= 1, got {args.bpe_merges}")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
    if args.clean_ratio < 0:
        fail(f"--clean-ratio must be >= 0, got {args.clean_ratio}")
    if not os.path.isdir(args.raw):
        fail(f"--raw {args.raw} is not a folder")
    try:
        import fairseq_cli.preprocess  # noqa: F401
    except ImportError:
        fail("fairseq is not installed in this Python; install it first (see README)")
    moses = {
        args.src: args.src_moses_lang or default_moses_lang(args.src),
        args.tgt: args.tgt_moses_lang or default_moses_lang(args.tgt),
    }

    raw = {}
    for split in SPLITS:
        src, tgt = (read_lines(raw_path(args.raw, split, l)) for l in (args.src, args.tgt))
        if len(src) != len(tgt):
            fail(f"{split}: {len(src)} {args.src} lines but {len(tgt)} {args.tgt} lines")
        if not src:
            fail(f"{split} split is empty")
        raw[split] = {args.src: src, args.tgt: tgt}
    if args.max_train > 0:
        raw["train"] = {l: v[: args.max_train] for l, v in raw["train"].items()}

    os.makedirs(os.path.join(args.out, "refs"), exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        tok = {
            s: {l: tokenize(raw[s][l], moses[l], args.lowercase, args.workers, args.aggressive_dash,
                            args.pretokenized, split_punctuation(args.normalize_punctuation, s))
                for l in raw[s]}
            for s in SPLITS
        }

        # Training pairs with an empty or over-long side teach nothing and slow batching.
        keep = keep_pairs(tok["train"][args.src], tok["train"][args.tgt], args.max_tokens, args.clean_ratio)
        print(f"prepare_parallel: {len(keep)} of {len(raw['train'][args.src])} training pairs kept", flush=True)
        if not keep:
            fail(f"cleaning kept no training pair (--max-tokens {args.max_tokens}, --clean-ratio "
                 f"{args.clean_ratio}); loosen them or check the train files")
        for l in (args.src, args.tgt):
            tok["train"][l] = [tok["train"][l][i] for i in keep]
            # refs/train.* must stay line-aligned with the binarized train split.
            raw["train"][l] = [raw["train"][l][i] for i in keep]

        joint = os.path.join(work, "train.joint")
        write_lines(joint, tok["train"][args.src] + tok["train"][args.tgt])
        codes = os.path.join(args.out, "bpecodes")
        from subword_nmt.learn_bpe import learn_bpe

        with open(joint, encoding="utf-8") as fin, open(codes, "w", encoding="utf-8") as fout:
            learn_bpe(fin, fout, args.bpe_merges)

        for split in SPLITS:
            for l in (args.src, args.tgt):
                write_lines(os.path.join(work, f"{split}.{l}"), apply_bpe(tok[split][l], codes, args.workers))
                write_lines(os.path.join(args.out, "refs", f"{split}.{l}"), raw[split][l])

        cmd = [
            sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", args.src, "--target-lang", args.tgt,
            "--trainpref", os.path.join(work, "train"), "--validpref", os.path.join(work, "valid"),
            "--testpref", os.path.join(work, "test"), "--destdir", args.out,
            "--joined-dictionary", "--workers", str(args.workers),
        ]
        try:
            subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as e:
            fail(f"fairseq-preprocess failed (exit status {e.returncode}); its messages are above")

    settings = dict(vars(args), moses_langs=moses, train_pairs=len(keep))
    with open(os.path.join(args.out, SETTINGS_FILE), "w") as f:
        json.dump(settings, f, indent=2)
    print(f"prepare_parallel: binarized data in {args.out}", flush=True)


if __name__ == "__main__":
    main()
