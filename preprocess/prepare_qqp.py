#!/usr/bin/env python3
"""Prepare DiffuSeq's Quora Question Pairs (QQP) paraphrase split for fairseq.

Official data: the QQP folder of DiffuSeq (Gong et al., 2023; github.com/Shark-NLP/DiffuSeq),
https://drive.google.com/drive/folders/1BHGCeHRZU7MQF3rsqXBIOCU2WIC3W6fb, with
  train.jsonl (144,715 pairs), valid.jsonl (2,048), test.jsonl (2,500),
one {"src": question, "trg": paraphrase} object a line, English on both sides. Google Drive
folders cannot be fetched with urllib, so --raw DIR (that folder, or a zip of it) is required.

Preparation: sides named src/tgt, Moses-tokenized as English, cased (pass --lowercase to fold
case), 10,000 joint BPE merges by default (--bpe-merges), as in DiffuSeq-derived fairseq setups.
DiffuSeq's own figures are on lowercased text (its bert-base-uncased tokenizer): for scores
comparable with them, pass --lowercase (the recipes' scoring then lowercases the references too).

Example:
  python preprocess/prepare_qqp.py --raw datasets/QQP --out data-bin/qqp
"""

import sys

import common

DOWNLOAD_PAGE = "https://drive.google.com/drive/folders/1BHGCeHRZU7MQF3rsqXBIOCU2WIC3W6fb"


def main(argv=None) -> None:
    common.diffuseq_main("prepare_qqp", __doc__, argv, DOWNLOAD_PAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
