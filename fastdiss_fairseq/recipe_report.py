"""Score one recipe run and write its results: OUT/results.json and OUT/results.md.

The recipes (recipes/common.sh) decode the test set once per step count K into
OUT/generate.SUBSET.K.txt (the stdout of fairseq-generate) and OUT/generate.SUBSET.K.log
(its stderr, with fairseq's own speed line). This module scores every K with
fastdiss_fairseq.scoring (the project's one implementation of the metrics) and writes:

  results.json           settings, the averaged checkpoints, per K the scores and decoding speed;
  results.md             the same as one markdown table, one row per K;
  hyps.SUBSET.K.txt      the detokenized hypotheses, one a line, in the order of the references.

Why --detok-lang instead of fairseq-generate --tokenizer moses: with --tokenizer, fairseq
detokenizes the T-lines too, so tokenized BLEU (H- vs T-lines) would compare tokenized
hypotheses with detokenized references; and its Moses language is --target-lang, which is
not a language for data whose sides are called src/tgt. The recipes therefore decode without
--tokenizer (D = H, tokenized, BPE removed) and the D-lines are detokenized here, exactly as
fairseq's moses tokenizer does (sacremoses MosesDetokenizer(lang).detokenize(text.split())).

Translation and paraphrase runs report detokenized SacreBLEU (D-lines against the raw
references) and tokenized BLEU (H- against T-lines); summarization runs report ROUGE-1/2/L.

    python -m fastdiss_fairseq.recipe_report --run-dir OUT --recipe de_en_cpu --kind translation \
        --data data-bin/de-en --refs data-bin/de-en/refs/test.en --steps 1 2 5 \
        --setting arch=fastdiss_small --setting lr=1e-3
"""

import argparse
import datetime
import json
import logging
import os
import re
import sys
from typing import Dict, List, Optional

from .prepared_text import data_was_lowercased
from .scoring import detokenize_d_lines, parse_generate_output, read_refs, score_generate_output

KINDS = ("translation", "paraphrase", "summarization")
# (key in the scores, column title) per kind; the JSON keeps every score computed.
COLUMNS = {
    "translation": [("sacrebleu", "SacreBLEU (detok.)"), ("bleu_tokenized", "BLEU (tokenized)")],
    "paraphrase": [("sacrebleu", "SacreBLEU (detok.)"), ("bleu_tokenized", "BLEU (tokenized)")],
    "summarization": [("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")],
}
_SPEED = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
    r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)"
)


class ReportError(Exception):
    """Missing or malformed run output; reported as one line."""


def parse_speed(log_text: str) -> Dict[str, float]:
    """fairseq-generate's own throughput line ("Translated N sentences (M tokens) in Xs ...")."""
    found = _SPEED.findall(log_text)
    if not found:
        return {}
    sents, toks, secs, sps, tps = found[-1]
    return {
        "generated_sentences": int(sents.replace(",", "")),
        "generated_tokens": int(toks.replace(",", "")),
        "generate_seconds": float(secs),
        "sentences_per_second": float(sps),
        "tokens_per_second": float(tps),
    }


def write_hypotheses(text: str, path: str) -> None:
    parsed = parse_generate_output(text)["D"]
    with open(path, "w", encoding="utf-8") as f:
        for i in sorted(parsed):
            f.write(parsed[i] + "\n")


def score_step(run_dir: str, subset: str, steps: int, refs: List[str], kind: str,
               detok_lang: Optional[str] = None) -> Dict:
    out_path = os.path.join(run_dir, f"generate.{subset}.{steps}.txt")
    if not os.path.exists(out_path):
        raise ReportError(f"no decoding output {out_path} for {steps} steps")
    with open(out_path, encoding="utf-8") as f:
        text = f.read()
    if detok_lang:
        text = detokenize_d_lines(text, detok_lang)
    try:
        scores = score_generate_output(text, refs, with_rouge=(kind == "summarization"))
    except ValueError as e:
        raise ReportError(f"{out_path}: {e}") from None
    write_hypotheses(text, os.path.join(run_dir, f"hyps.{subset}.{steps}.txt"))
    row = {"steps": steps, **scores}
    log_path = os.path.join(run_dir, f"generate.{subset}.{steps}.log")
    if os.path.exists(log_path):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            row.update(parse_speed(f.read()))
    return row


def parse_setting(text: str):
    """'key=value' -> (key, value), with numbers and booleans as JSON numbers and booleans."""
    if "=" not in text:
        raise ReportError(f"--setting {text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def build_report(run_dir: str, recipe: str, kind: str, refs_path: str, steps: List[int],
                 subset: str = "test", data_dir: Optional[str] = None,
                 settings: Optional[Dict] = None, detok_lang: Optional[str] = None) -> Dict:
    if kind not in KINDS:
        raise ReportError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if not os.path.exists(refs_path):
        raise ReportError(f"no reference file {refs_path}")
    lowercased = data_was_lowercased(data_dir)
    refs = read_refs(refs_path, lowercase=lowercased)
    report = {
        "recipe": recipe,
        "kind": kind,
        "subset": subset,
        "references": os.path.abspath(refs_path),
        "references_lowercased": lowercased,
        "detokenizer": f"sacremoses MosesDetokenizer(lang={detok_lang!r})" if detok_lang else None,
        "metrics": {
            "sacrebleu": "detokenized SacreBLEU (sacrebleu defaults, 13a) of D-lines vs raw references",
            "bleu_tokenized": "BLEU of H-lines vs T-lines (tokenized, BPE removed), as fairseq's own",
            "rouge": "ROUGE-1/2/L F1 x 100 of D-lines vs raw references (rouge-score, stemming)",
        },
        "settings": settings or {},
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    info = os.path.join(run_dir, "average.json")
    if os.path.exists(info):
        with open(info) as f:
            report["checkpoint"] = json.load(f)
    report["results"] = [score_step(run_dir, subset, k, refs, kind, detok_lang) for k in steps]
    return report


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: Dict) -> str:
    columns = COLUMNS[report["kind"]]
    rows = report["results"]
    n = rows[0]["sentences"] if rows else 0
    lines = [f"# {report['recipe']}: FastDiSS on {report['subset']} ({n} sentences)", ""]
    ckpt = report.get("checkpoint")
    if ckpt:
        updates = [u for u in ckpt.get("num_updates") or [] if u is not None]
        span = f", updates {min(updates)}-{max(updates)}" if updates else ""
        lines.append(f"Checkpoint: average of the last {len(ckpt['inputs'])} checkpoints{span}.")
    settings = report["settings"]
    if settings:
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".")
    if report.get("references_lowercased"):
        lines.append("The data were lowercased in preprocessing, so the references are lowercased too.")
    lines.append("")
    header = ["steps"] + [title for _, title in columns] + ["sentences/s", "tokens/s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---:|" * len(header))
    for row in rows:
        cells = [str(row["steps"])] + [_cell(row.get(key)) for key, _ in columns]
        cells += [_cell(row.get("sentences_per_second"), 1), _cell(row.get("tokens_per_second"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: Dict, run_dir: str) -> None:
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(run_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="the recipe's output folder (OUT)")
    p.add_argument("--recipe", required=True, help="recipe name, e.g. iwslt14_de_en")
    p.add_argument("--kind", required=True, choices=KINDS, help="which metrics the table shows")
    p.add_argument("--refs", required=True, help="raw reference file of the subset (DATA/refs/SUBSET.TGT)")
    p.add_argument("--steps", required=True, nargs="+", type=int, help="the decoding step counts run")
    p.add_argument("--subset", default="test", help="the decoded subset (default: test)")
    p.add_argument("--data", help="the binarized data folder; its prepare.json says whether text was lowercased")
    p.add_argument("--detok-lang", help="Moses-detokenize the D-lines in this language before scoring "
                                        "(omit for data that stay tokenized, such as Gigaword)")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the run to record in the report (repeatable)")
    args = p.parse_args(argv)
    # rouge-score logs an INFO line per scorer through absl; the table is the output here.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        settings = dict(parse_setting(s) for s in args.setting)
        report = build_report(args.run_dir, args.recipe, args.kind, args.refs, args.steps,
                              args.subset, args.data, settings, args.detok_lang)
    except (OSError, ReportError) as e:
        sys.exit(f"recipe_report: error: {e}")
    write_report(report, args.run_dir)
    print(markdown(report), end="")


if __name__ == "__main__":
    main()
