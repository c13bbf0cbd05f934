#!/usr/bin/env python3
"""Prepare IWSLT14 German-English (TED) for fairseq, as fairseq's prepare-iwslt14.sh does.

Official release: de-en.tgz of WIT3 release 2014-01 (mirrored by fairseq at
http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz), holding de-en/...
  train.tags.de-en.{de,en}   one sentence a line, plus talk metadata lines
                             (<url>, <talkid>, <keywords>, <title>, <description>, ...)
  IWSLT14.TED.{dev2010,tst2010,tst2011,tst2012}.de-en.{de,en}.xml, IWSLT14.TEDX.dev2012...xml
                             <seg id="N"> sentence </seg> lines

Preparation, following examples/translation/prepare-iwslt14.sh (itself from MIXER):
  * train: drop the <url>, <talkid>, <keywords> lines; keep the text of <title> and
    <description> lines with the tags removed (that is what the fairseq script does, and what
    the published split sizes below count); also drop <speaker>, <reviewer>, <translator>
    lines, found in WIT3 train.tags files, which the fairseq script does not filter (if the
    archive has them, fairseq's train/valid contain them as "sentences" and differ from ours);
  * clean like clean-corpus-n.perl -ratio 1.5 ... 1 175 on Moses tokens;
  * valid = every 23rd cleaned training pair (removed from train);
  * test = dev2010 + TEDX.dev2012 + tst2010 + tst2011 + tst2012 segs, concatenated in that
    order, with ’ mapped to ';
  * no punctuation normalization on any split (the script runs none), so the tokenized test
    references match fairseq's;
  * lowercase after tokenizing; 10,000 joint BPE merges (BPE_TOKENS=10000).
Published split sizes: 160,239 train / 7,283 valid / 6,750 test pairs. (Our Moses is
sacremoses, not the Perl tokenizer, so a handful of pairs may differ at the cleaning step.)
The binarized data serve both directions: fairseq finds train.de-en.* for en->de too.

Example:
  python preprocess/prepare_iwslt14.py --raw de-en.tgz --out data-bin/iwslt14.de-en
"""

import sys

import common
from fastdiss_fairseq.prepared_text import split_punctuation

PROG = "prepare_iwslt14"
SRC, TGT = "de", "en"
URLS = [("http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz", "de-en.tgz")]
# Metadata lines of train.tags.* that are not sentences (the "<reviewer href=..." form too).
DROP_TAGS = ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator")
# Metadata lines whose text is kept as a sentence pair, without the tags (as in fairseq).
STRIP_TAGS = ("<title>", "</title>", "<description>", "</description>")
TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
MAX_TOKENS, CLEAN_RATIO, VALID_EVERY = 175, 1.5, 23
NORMALIZE_PUNCTUATION = "none"  # both cleaning passes tokenize alike


def train_text_line(line: str):
    """A line of train.tags.* as sentence text, or None for a metadata line to drop."""
    if any(tag in line for tag in DROP_TAGS):
        return None
    for tag in STRIP_TAGS:
        line = line.replace(tag, "")
    return line


def train_text(path: str):
    return [text for text in map(train_text_line, common.read_text(path)) if text is not None]


def main(argv=None) -> None:
    p = common.parser(__doc__, bpe_merges=10000)
    # Parsed here, not passed on: the cleaning runs before valid is carved out, and a limit
    # that only reached prepare_parallel.py could not bring back the pairs already dropped.
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS,
                   help=f"drop training pairs with a side longer than this (default: {MAX_TOKENS})")
    p.add_argument("--clean-ratio", type=float, default=CLEAN_RATIO,
                   help=f"drop training pairs whose length ratio exceeds this (default: {CLEAN_RATIO})")
    args, passthrough = common.parse(p, argv)
    with common.reporting(PROG):
        raw = common.open_raw(args, URLS)
        de, en = common.read_parallel(raw, [f"train.tags.de-en.{SRC}"], [f"train.tags.de-en.{TGT}"],
                                      "train.tags", reader=train_text)

        # Clean before carving out valid, like the shell script, so valid is every 23rd *clean* pair.
        tokenize = common.prepare_parallel.tokenize
        punctuation = split_punctuation(NORMALIZE_PUNCTUATION, "train")
        tok = [tokenize(side, lang, False, args.workers, punctuation=punctuation)
               for side, lang in ((de, SRC), (en, TGT))]
        keep = common.prepare_parallel.keep_pairs(*tok, args.max_tokens, args.clean_ratio)
        print(f"{len(keep)} of {len(de)} training pairs pass clean-corpus-n", flush=True)
        valid = [i for n, i in enumerate(keep, 1) if n % VALID_EVERY == 0]
        train = [i for n, i in enumerate(keep, 1) if n % VALID_EVERY != 0]
        for split, idx in (("train", train), ("valid", valid)):
            common.write_split(args, split, SRC, TGT, [de[i] for i in idx], [en[i] for i in idx])

        test = {SRC: [], TGT: []}
        for name in TEST_SETS:
            s, t = common.read_parallel(raw, [f"IWSLT14.{name}.de-en.{SRC}.xml"],
                                        [f"IWSLT14.{name}.de-en.{TGT}.xml"], f"IWSLT14.{name}",
                                        reader=lambda path: common.read_segs(path, curly_apostrophe=True))
            test[SRC] += s
            test[TGT] += t
        common.write_split(args, "test", SRC, TGT, test[SRC], test[TGT])

    common.run_prepare_parallel(args, passthrough, SRC, TGT,
                                ["--lowercase", "--normalize-punctuation", NORMALIZE_PUNCTUATION,
                                 "--max-tokens", str(args.max_tokens), "--clean-ratio", str(args.clean_ratio)])


if __name__ == "__main__":
    main(sys.argv[1:])
