#!/usr/bin/env python3
"""Prepare WMT16 English-Romanian for fairseq, with the Romanian preprocessing of Sennrich et al.

Official release (statmt.org / OPUS); --raw is the folder holding them, extracted or still
packed (files are found by name at any depth):
  training-parallel-ep-v8.tgz   training-parallel-ep-v8/europarl-v8.ro-en.{en,ro}
  en-ro.txt.zip (OPUS SETIMES2) SETIMES.en-ro.{en,ro} (older copies: SETIMES2.en-ro.*)
  dev-romanian-updated.tgz      dev/newsdev2016-enro-src.en.sgm, -ref.ro.sgm (or -roen-)
  test.tgz                      test/newstest2016-enro-src.en.sgm, -ref.ro.sgm (or -roen-)
The .sgm files hold one <seg id="N"> sentence </seg> per line.

Preparation, following rsennrich/wmt16-scripts (sample/preprocess.sh, the Edinburgh WMT16
system) and the En-Ro setups of later NMT/NAT work derived from it:
  * train = Europarl v8 + SETimes2 (about 610k pairs), valid = newsdev2016 (1,999),
    test = newstest2016 (1,999);
  * Romanian side of every split (so also the test references): normalise-romanian.py
    (s/t-cedilla -> s/t-comma) then remove-diacritics.py (ș ț ă â î -> s t a a i);
  * normalize-punctuation, Moses tokenizer -a (hyphens split into @-@), cased;
  * clean training pairs like clean-corpus-n.perl ... 1 80 (its default ratio 9);
  * 40,000 joint BPE merges.
The binarized data serve both directions (fairseq finds train.en-ro.* for ro->en too).

Example:
  python preprocess/prepare_wmt16_en_ro.py --raw orig/ --out data-bin/wmt16.en-ro --workers 8
"""

import sys

import common

PROG = "prepare_wmt16_en_ro"
SRC, TGT = "en", "ro"
URLS = [
    ("http://data.statmt.org/wmt16/translation-task/training-parallel-ep-v8.tgz", "training-parallel-ep-v8.tgz"),
    ("https://object.pouta.csc.fi/OPUS-SETIMES/v2/moses/en-ro.txt.zip", "en-ro.txt.zip"),
    ("http://data.statmt.org/wmt16/translation-task/dev-romanian-updated.tgz", "dev-romanian-updated.tgz"),
    ("http://data.statmt.org/wmt16/translation-task/test.tgz", "test.tgz"),
]
CORPORA = ("europarl-v8.ro-en", "SETIMES*.en-ro")


def normalise_romanian(line: str) -> str:
    """wmt16-scripts normalise-romanian.py: s/t with cedilla (U+015E/F, U+0162/3) -> with comma."""
    return line.translate(_CEDILLA_TO_COMMA)


def remove_diacritics(line: str) -> str:
    """wmt16-scripts remove-diacritics.py (expects comma forms): ș ț ă â î and capitals -> ASCII."""
    return line.translate(_DIACRITICS)


_CEDILLA_TO_COMMA = str.maketrans({"\u015e": "\u0218", "\u015f": "\u0219", "\u0162": "\u021a", "\u0163": "\u021b"})
_DIACRITICS = str.maketrans({"\u0218": "S", "\u0219": "s", "\u021a": "T", "\u021b": "t", "\u0102": "A",
                             "\u0103": "a", "\u00c2": "A", "\u00e2": "a", "\u00ce": "I", "\u00ee": "i"})


def romanian(lines):
    return [remove_diacritics(normalise_romanian(line)) for line in lines]


def main(argv=None) -> None:
    p = common.parser(__doc__, bpe_merges=40000)
    args, passthrough = common.parse(p, argv)
    with common.reporting(PROG):
        raw = common.open_raw(args, URLS)
        train = {SRC: [], TGT: []}
        for corpus in CORPORA:
            s, t = common.read_parallel(raw, [f"{corpus}.{SRC}"], [f"{corpus}.{TGT}"], corpus)
            train[SRC] += s
            train[TGT] += t
        common.write_split(args, "train", SRC, TGT, train[SRC], romanian(train[TGT]))

        # The -enro- and -roen- files hold the same segments; take whichever direction is there.
        for split, name in (("valid", "newsdev2016"), ("test", "newstest2016")):
            en, ro = common.read_parallel(raw, [f"{name}-enro-src.en.sgm", f"{name}-roen-ref.en.sgm"],
                                          [f"{name}-enro-ref.ro.sgm", f"{name}-roen-src.ro.sgm"],
                                          name, reader=common.read_segs)
            common.write_split(args, split, SRC, TGT, en, romanian(ro))

    common.run_prepare_parallel(args, passthrough, SRC, TGT,
                                ["--aggressive-dash", "--max-tokens", "80", "--clean-ratio", "9"])


if __name__ == "__main__":
    main(sys.argv[1:])
