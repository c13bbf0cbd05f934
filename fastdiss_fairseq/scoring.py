"""Scores for generated text, as the paper and DINOISER report them.

- detokenized SacreBLEU of the D-lines of fairseq-generate against the *raw* references
  (decode without --tokenizer and pass detok_lang / --detok-lang: with --tokenizer, fairseq
  detokenizes the T-lines too, and tokenized BLEU would compare unlike texts);
- tokenized BLEU (fairseq's own number) of the H-lines against the T-lines;
- ROUGE-1/2/L F1 (rouge-score, with stemming) for summarization.

Command line (installed as `fastdiss-score`):
    fastdiss-score GENERATE_OUTPUT --refs data-bin/x/refs/test.en --detok-lang en [--lowercase-refs]
        [--rouge] [--json out.json]
"""

import argparse
import json
import os
import re
import sys
from typing import Dict, List

_LINE = re.compile(r"^([STHDP])-(\d+)\t(.*)$")


def parse_generate_output(text: str) -> Dict[str, Dict[int, str]]:
    """{'S','T','H','D': {sentence id: text}} from fairseq-generate's stdout (first hypothesis)."""
    found: Dict[str, Dict[int, str]] = {k: {} for k in "STHD"}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or m.group(1) == "P":
            continue
        kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind in "HD":  # "score<TAB>text"; an empty hypothesis has no text field
            rest = rest.split("\t", 1)[1] if "\t" in rest else ""
        found[kind].setdefault(idx, rest)
    return found


def detokenize_d_lines(text: str, lang: str) -> str:
    """fairseq-generate output with each D-line's text Moses-detokenized in language `lang`,
    exactly as fairseq's moses tokenizer would (MosesDetokenizer(lang).detokenize(text.split()))."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang)
    lines = []
    for line in text.splitlines():
        if line.startswith("D-"):
            parts = line.split("\t", 2)  # D-id, score, text (absent for an empty hypothesis)
            if len(parts) == 3:
                line = "\t".join(parts[:2] + [detok.detokenize(parts[2].split())])
        lines.append(line)
    return "\n".join(lines) + "\n"


def ordered(by_id: Dict[int, str], n: int, what: str) -> List[str]:
    missing = [i for i in range(n) if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} of {n} sentences have no {what} line (first: id {missing[0]})")
    return [by_id[i] for i in range(n)]


def sacrebleu_detok(hyps: List[str], refs: List[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


def bleu_tokenized(hyps: List[str], refs: List[str]) -> float:
    import sacrebleu

    # force: the texts are tokenized on purpose; sacrebleu would warn that they look tokenized.
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score


def rouge(hyps: List[str], refs: List[str]) -> Dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hyps, refs):
        for k, s in scorer.score(r, h).items():
            totals[k] += s.fmeasure
    return {k: 100.0 * v / max(len(hyps), 1) for k, v in totals.items()}


def read_refs(path: str, lowercase: bool = False) -> List[str]:
    """The raw references, one a line; lowercase for data lowercased in preprocessing (IWSLT14)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").lower() if lowercase else line.rstrip("\n") for line in f]


def score_generate_output(text: str, refs: List[str], with_rouge: bool = False,
                          detok_lang: str = None) -> Dict[str, float]:
    if detok_lang:
        text = detokenize_d_lines(text, detok_lang)
    parsed = parse_generate_output(text)
    n = len(refs)
    if not parsed["D"]:
        raise ValueError("no D- lines in the generate output: was fairseq-generate run on this data?")
    if len(parsed["D"]) != n:
        raise ValueError(f"generate output has {len(parsed['D'])} hypotheses but the references have {n} lines")
    detok = ordered(parsed["D"], n, "D")
    result = {"sacrebleu": sacrebleu_detok(detok, refs), "sentences": n}
    if parsed["T"]:
        result["bleu_tokenized"] = bleu_tokenized(ordered(parsed["H"], n, "H"), ordered(parsed["T"], n, "T"))
    if with_rouge:
        result.update(rouge(detok, refs))
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Score fairseq-generate output (FastDiSS conventions).")
    p.add_argument("generate_output", help="file with the stdout of fairseq-generate ('-' = stdin)")
    p.add_argument("--refs", required=True, help="raw (untokenized) reference file, one line per sentence")
    p.add_argument("--detok-lang", help="Moses-detokenize the D-lines in this language first "
                   "(for output decoded without --tokenizer)")
    p.add_argument("--lowercase-refs", action="store_true",
                   help="lowercase the references first (data lowercased in preprocessing: IWSLT14)")
    p.add_argument("--rouge", action="store_true", help="also report ROUGE-1/2/L F1")
    p.add_argument("--json", help="write the scores to this JSON file")
    args = p.parse_args(argv)
    try:
        text = sys.stdin.read() if args.generate_output == "-" else open(args.generate_output, encoding="utf-8").read()
        refs = read_refs(args.refs, lowercase=args.lowercase_refs)
        scores = score_generate_output(text, refs, args.rouge, args.detok_lang)
    except (OSError, ValueError) as e:
        sys.exit(f"fastdiss-score: error: {e}")
    if args.json:  # written first: a reader that closes the pipe early must not lose it
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=2)
    try:
        for k, v in scores.items():
            print(f"{k}\t{v:.2f}" if isinstance(v, float) else f"{k}\t{v}")
        sys.stdout.flush()
    except BrokenPipeError:
        # `fastdiss-score ... | head -1`: the reader has what it wanted. Point stdout at
        # devnull so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
