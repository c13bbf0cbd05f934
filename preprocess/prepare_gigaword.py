#!/usr/bin/env python3
"""Prepare the Gigaword headline generation benchmark (Rush et al., 2015) for fairseq.

Official data: the split of harvardnlp/sent-summary, 3,803,957 train / 189,651 valid /
1,951 test (article, headline) pairs, already tokenized and lowercased, digits masked as '#'
and rare words as UNK. Two distributions of the same text are accepted as --raw (a folder, or
the archive itself):
  * "sumdata" (summary.tar.gz of harvardnlp/sent-summary):
      sumdata/train/train.article.txt[.gz], train.title.txt[.gz],
      sumdata/train/valid.article.filter.txt[.gz], valid.title.filter.txt[.gz],
      sumdata/Giga/input.txt, sumdata/Giga/task1_ref0.txt      (test)
  * "org_data" (the copy reformatted by microsoft/unilm, used by Hugging Face `gigaword`):
      org_data/{train,dev,test}.{src,tgt}[.txt]
Without --raw the org_data archive is fetched from the Google Drive link Hugging Face uses.

Preparation: train/valid write rare words as "<unk>" but test as "UNK"; every "<unk>" becomes
"UNK", as Hugging Face's loader does since v1.2.0, so that the marker is one plain word (a
literal "<unk>" would be split by tokenizers and collide with fairseq's own <unk> symbol).
The text is kept as it is (tokenized, lowercase): no Moses pass (it would split "'s" and
"#.##"), no case folding (which would merge UNK with the word "unk"). Sides are named src
(article) and tgt (headline); 10,000 joint BPE merges by default (--bpe-merges).

Example:
  python preprocess/prepare_gigaword.py --raw summary.tar.gz --out data-bin/gigaword
"""

import sys

import common

PROG = "prepare_gigaword"
URLS = [("https://drive.google.com/uc?export=download&id=1USoQ8lJgN8kAWnUnRrupMGrPMLlDVqlV", "org_data.zip")]


def _gz(name: str):
    return [name, name + ".gz"]


# split -> (article patterns, headline patterns), per layout
LAYOUTS = {
    "sumdata": {
        "train": (_gz("train.article.txt"), _gz("train.title.txt")),
        "valid": (_gz("valid.article.filter.txt"), _gz("valid.title.filter.txt")),
        "test": (["Giga/input.txt"], ["Giga/task1_ref0.txt"]),
    },
    "org_data": {
        split: ([f"org_data/{name}.src.txt", f"org_data/{name}.src"],
                [f"org_data/{name}.tgt.txt", f"org_data/{name}.tgt"])
        for split, name in (("train", "train"), ("valid", "dev"), ("test", "test"))
    },
}


def detect_layout(raw: common.RawFiles) -> str:
    for layout, files in LAYOUTS.items():
        if any(raw.exists(pattern) for pattern in files["train"][0]):
            return layout
    raise common.DataError(f"{raw.path} holds neither sumdata/train/train.article.txt nor "
                           f"org_data/train.src.txt: not a Gigaword release")


def unk_safe(line: str) -> str:
    return line.replace("<unk>", "UNK")


def main(argv=None) -> None:
    p = common.parser(__doc__, bpe_merges=10000)
    args, passthrough = common.parse(p, argv)
    with common.reporting(PROG):
        raw = common.open_raw(args, URLS)
        layout = detect_layout(raw)
        print(f"Gigaword layout: {layout}", flush=True)
        for split, (article, title) in LAYOUTS[layout].items():
            src, tgt = common.read_parallel(raw, article, title, f"{split} ({layout})")
            common.write_split(args, split, "src", "tgt", list(map(unk_safe, src)), list(map(unk_safe, tgt)))

    common.run_prepare_parallel(args, passthrough, "src", "tgt", ["--pretokenized"])


if __name__ == "__main__":
    main(sys.argv[1:])
