#!/usr/bin/env python3
"""Prepare DiffuSeq's Wiki-Auto text simplification split for fairseq.

Official data: the Wiki-Auto folder of DiffuSeq (Gong et al., 2023; github.com/Shark-NLP/DiffuSeq;
sentences from Jiang et al.'s wiki-auto), https://drive.google.com/drive/folders/1BlWtD1UbnL_ef06Riq-gABlL0Zb50s-d,
with train.jsonl (677,751 pairs), valid.jsonl (2,048), test.jsonl (5,000), one
{"src": complex sentence, "trg": simplified sentence} object a line, English on both sides.
Google Drive folders cannot be fetched with urllib, so --raw DIR (that folder, or a zip of it)
is required.

Preparation: sides named src/tgt, Moses-tokenized as English, cased (pass --lowercase to fold
case), 10,000 joint BPE merges by default (--bpe-merges), as in DiffuSeq-derived fairseq setups.
DiffuSeq's own figures are on lowercased text (its bert-base-uncased tokenizer): for scores
comparable with them, pass --lowercase (the recipes' scoring then lowercases the references too).

Example:
  python preprocess/prepare_wiki_auto.py --raw datasets/WA --out data-bin/wiki_auto
"""

import sys

import common

DOWNLOAD_PAGE = "https://drive.google.com/drive/folders/1BlWtD1UbnL_ef06Riq-gABlL0Zb50s-d"


def main(argv=None) -> None:
    common.diffuseq_main("prepare_wiki_auto", __doc__, argv, DOWNLOAD_PAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
