"""Raw text tokenized at inference exactly as preprocess/prepare_parallel.py tokenized the data.

prepare_parallel.py normalizes punctuation (on every split, on train only, or nowhere:
--normalize-punctuation), Moses-tokenizes without HTML escaping and (unless --aggressive-dash)
without dash splits, may lowercase (IWSLT14), and writes these settings to DATA/prepare.json.
Raw text at inference is tokenized as the test split was. fairseq's own `--tokenizer moses`
escapes (don't -> don &apos;t), splits dashes (well-known -> well @-@ known), normalizes nothing
and never lowercases: text it tokenizes at inference holds tokens the model never saw in
training, and the Moses language of src/tgt data (QQP, Wiki-Auto) would be "src" or "tgt". So
wherever the data folder holds a prepare.json, `--tokenizer moses` (fairseq-interactive,
fairseq-generate, the hub interface) tokenizes with this module instead, and
preprocess/distill.py feeds its teacher the same way.
"""

import json
import os
from typing import Callable, Dict, Optional

SETTINGS_FILE = "prepare.json"

# --normalize-punctuation: which splits get Moses's punctuation normalization. fairseq's
# prepare-iwslt14.sh normalizes none; prepare-wmt14en2de.sh the training data only, and its test
# set gets just the curly apostrophe mapped (sed "s/’/'/g"); most other setups normalize all.
NORMALIZATION_SCOPES = ("all", "train", "none")
# What a line's punctuation gets before tokenizing:
PUNCTUATION_NORMALIZE = "normalize"  # Moses's normalize-punctuation
PUNCTUATION_APOSTROPHE = "apostrophe"  # only U+2019 mapped to ', as fairseq's sed does
PUNCTUATION_KEEP = "keep"  # nothing


def split_punctuation(scope: str, split: str) -> str:
    """What one split's lines get under --normalize-punctuation scope."""
    if scope not in NORMALIZATION_SCOPES:
        raise ValueError(f"unknown punctuation normalization scope {scope!r}; "
                         f"choose one of {NORMALIZATION_SCOPES}")
    if scope == "all" or (scope == "train" and split == "train"):
        return PUNCTUATION_NORMALIZE
    return PUNCTUATION_APOSTROPHE if scope == "train" else PUNCTUATION_KEEP


def default_moses_lang(lang: str) -> str:
    """A language suffix that is a 2-letter code is its own Moses language; others (src, tgt,
    complex, ...) are English."""
    return lang if len(lang) == 2 else "en"


def line_tokenizer(moses_lang: str, lowercase: bool = False, aggressive_dash: bool = False,
                   pretokenized: bool = False, punctuation: str = PUNCTUATION_NORMALIZE) -> Callable[[str], str]:
    """The function prepare_parallel.py applies to every line of one language in one split."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    tok = MosesTokenizer(lang=moses_lang)
    normalize = {
        PUNCTUATION_NORMALIZE: MosesPunctNormalizer(lang=moses_lang).normalize,
        PUNCTUATION_APOSTROPHE: lambda line: line.replace("\u2019", "'"),
        PUNCTUATION_KEEP: lambda line: line,
    }[punctuation]

    def tokenize(line: str) -> str:
        if pretokenized:
            # Already tokenized corpora (e.g. Gigaword's PTB tokens, '#' digit masks) would be
            # damaged by Moses ("'s" -> "' s", "#.##" -> "# . # #"): only squeeze whitespace.
            line = " ".join(line.split())
        else:
            line = tok.tokenize(normalize(line), aggressive_dash_splits=aggressive_dash,
                                escape=False, return_str=True)
        return line.lower() if lowercase else line

    return tokenize


def read_settings(data_dir: Optional[str]) -> Optional[Dict]:
    """DATA/prepare.json, or None where the data did not come from prepare_parallel.py."""
    if not data_dir:
        return None
    path = os.path.join(data_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def data_was_lowercased(data_dir: Optional[str]) -> bool:
    """True when preprocess/ lowercased the data (IWSLT14): raw references must then be
    lowercased too before scoring."""
    return bool((read_settings(data_dir) or {}).get("lowercase", False))


class PreparedTextTokenizer:
    """fairseq's tokenizer interface (encode the source, decode the target) with the settings
    the data were prepared with."""

    def __init__(self, settings: Dict, source_lang: str, target_lang: str):
        from sacremoses import MosesDetokenizer

        langs = settings.get("moses_langs") or {}
        self.source_moses_lang = langs.get(source_lang) or default_moses_lang(source_lang)
        self.target_moses_lang = langs.get(target_lang) or default_moses_lang(target_lang)
        self.lowercase = bool(settings.get("lowercase", False))
        self.aggressive_dash = bool(settings.get("aggressive_dash", False))
        # prepare.json files from before the option normalized every split
        self.punctuation = split_punctuation(settings.get("normalize_punctuation", "all"), "test")
        self._encode = line_tokenizer(self.source_moses_lang, self.lowercase, self.aggressive_dash,
                                      bool(settings.get("pretokenized", False)), self.punctuation)
        self._detok = MosesDetokenizer(lang=self.target_moses_lang)

    def encode(self, x: str) -> str:
        return self._encode(x)

    def decode(self, x: str) -> str:
        return self._detok.detokenize(x.split())

    def describe(self) -> str:
        punctuation = {PUNCTUATION_NORMALIZE: "punctuation normalized",
                       PUNCTUATION_APOSTROPHE: "curly apostrophes mapped",
                       PUNCTUATION_KEEP: "punctuation kept"}[self.punctuation]
        return (f"Moses {self.source_moses_lang}->{self.target_moses_lang}, {punctuation}, "
                f"no escaping, {'' if self.aggressive_dash else 'no '}dash splits"
                f"{', lowercased' if self.lowercase else ''}")


def tokenizer_for_data(data_dir: Optional[str], source_lang: str, target_lang: str) -> Optional[PreparedTextTokenizer]:
    settings = read_settings(data_dir)
    return None if settings is None else PreparedTextTokenizer(settings, source_lang, target_lang)
