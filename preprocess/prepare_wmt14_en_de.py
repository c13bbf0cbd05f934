#!/usr/bin/env python3
"""Prepare WMT14 English-German for fairseq, as fairseq's prepare-wmt14en2de.sh --icml17 does.

Official release (statmt.org), as downloaded by the fairseq script; --raw is the folder holding
them, extracted or still packed (files are found by name at any depth):
  training-parallel-europarl-v7.tgz  training/europarl-v7.de-en.{de,en}
  training-parallel-commoncrawl.tgz  commoncrawl.de-en.{de,en}
  training-parallel-nc-v9.tgz        training/news-commentary-v9.de-en.{de,en}
  dev.tgz                            dev/newstest2013-src.en.sgm, dev/newstest2013-ref.de.sgm
  test-full.tgz                      test-full/newstest2014-deen-src.en.sgm, -ref.de.sgm
The .sgm files hold one <seg id="N"> sentence </seg> per line.

Preparation, following examples/translation/prepare-wmt14en2de.sh with --icml17 (the WMT14
training data: Europarl v7 + Common Crawl + News Commentary v9, about 4.5M pairs):
  * training text: remove-non-printing-char, normalize-punctuation, Moses tokenizer -a
    (hyphens split into @-@);
  * clean training pairs: 1-250 tokens, length ratio <= 1.5 (the shell script measures the
    ratio on BPE units, we on Moses tokens);
  * valid = newstest2013 (3,000 pairs), the usual WMT14 development set (the shell script
    instead holds out every 100th training pair; newstest2013 is what papers tune on);
  * test = newstest2014, full version (3,003 pairs); valid and test are not normalized, only
    their ’ is mapped to ' before tokenizing, as in the shell script
    (--normalize-punctuation train). refs/ keep the official text, as sacrebleu's wmt14/full;
  * 40,000 joint BPE merges (BPE_TOKENS=40000), cased.
The binarized data serve both directions (fairseq finds train.en-de.* for de->en too).

Example:
  python preprocess/prepare_wmt14_en_de.py --raw orig/ --out data-bin/wmt14.en-de --workers 8
"""

import sys

import common

PROG = "prepare_wmt14_en_de"
SRC, TGT = "en", "de"
URLS = [
    ("http://statmt.org/wmt13/training-parallel-europarl-v7.tgz", "training-parallel-europarl-v7.tgz"),
    ("http://statmt.org/wmt13/training-parallel-commoncrawl.tgz", "training-parallel-commoncrawl.tgz"),
    ("http://statmt.org/wmt14/training-parallel-nc-v9.tgz", "training-parallel-nc-v9.tgz"),
    ("http://data.statmt.org/wmt17/translation-task/dev.tgz", "dev.tgz"),
    ("http://statmt.org/wmt14/test-full.tgz", "test-full.tgz"),
]
CORPORA = ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v9.de-en")


def main(argv=None) -> None:
    p = common.parser(__doc__, bpe_merges=40000)
    args, passthrough = common.parse(p, argv)
    with common.reporting(PROG):
        raw = common.open_raw(args, URLS)
        train = {SRC: [], TGT: []}
        for corpus in CORPORA:
            s, t = common.read_parallel(raw, [f"{corpus}.{SRC}"], [f"{corpus}.{TGT}"], corpus)
            train[SRC] += map(common.remove_non_printing, s)
            train[TGT] += map(common.remove_non_printing, t)
        common.write_split(args, "train", SRC, TGT, train[SRC], train[TGT])

        valid = common.read_parallel(raw, [f"newstest2013-src.{SRC}.sgm", f"newstest2013-ref.{SRC}.sgm"],
                                     [f"newstest2013-ref.{TGT}.sgm", f"newstest2013-src.{TGT}.sgm"],
                                     "newstest2013", reader=common.read_segs)
        common.write_split(args, "valid", SRC, TGT, *valid)
        test = common.read_parallel(raw, [f"newstest2014-deen-src.{SRC}.sgm"], [f"newstest2014-deen-ref.{TGT}.sgm"],
                                    "newstest2014", reader=common.read_segs)
        common.write_split(args, "test", SRC, TGT, *test)

    common.run_prepare_parallel(args, passthrough, SRC, TGT,
                                ["--aggressive-dash", "--normalize-punctuation", "train", "--max-tokens", "250",
                                 "--clean-ratio", "1.5"])


if __name__ == "__main__":
    main(sys.argv[1:])
