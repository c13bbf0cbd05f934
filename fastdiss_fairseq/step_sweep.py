"""Step sweep: SacreBLEU and speed of one checkpoint at several numbers of decoding steps.

    python -m fastdiss_fairseq.step_sweep --data data-bin/de-en --path ckpt/checkpoint_best.pt \
        --steps 1 2 5 10 --subset test --refs data-bin/de-en/refs/test.en --out sweep/

The model is loaded once and the subset decoded in-process, through the task's generator and
inference_step exactly as fairseq-generate does it (same batching, the same per-sentence noise
seeds, the same post-processing as `--remove-bpe --tokenizer moses`), once per step count.
Reported per step count: detokenized SacreBLEU against the raw references (scoring.py) and
sentences/s of the generation calls alone (fairseq-generate's own "sentences/s" measure; model
loading, batching and detokenization are excluded, and one untimed batch warms up first).
Writes OUT/step_sweep.md (a table), OUT/step_sweep.json, OUT/step_sweep.png (BLEU and speed
against steps, log x) and OUT/hypotheses.K.txt (the detokenized outputs).
"""

import argparse
import json
import logging
import os
import sys
import time
from argparse import Namespace
from typing import Dict, List

import torch

from .plotting import saved_figure

logger = logging.getLogger("fastdiss_fairseq.step_sweep")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastdiss_fairseq.step_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="fairseq-preprocess folder (dictionaries and the subset)")
    p.add_argument("--path", required=True, help="checkpoint file")
    p.add_argument("--steps", type=positive_int, nargs="+", required=True, help="decoding step counts K")
    p.add_argument("--subset", default="test", help="split to decode (default: test)")
    p.add_argument("--refs", required=True, help="raw (untokenized) references, one line per sentence")
    p.add_argument("--out", required=True, help="folder for step_sweep.{md,json,png} and hypotheses.K.txt")
    p.add_argument("--length-beam", type=positive_int, default=None, help="default: the checkpoint's")
    p.add_argument("--noise-samples", type=positive_int, default=None, help="default: the checkpoint's")
    p.add_argument("--batch-size", type=positive_int, default=None, help="sentences per batch")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="tokens per batch (default 4096 "
                   "when --batch-size is not given)")
    p.add_argument("--seed", type=int, default=1, help="noise seed (default: 1)")
    p.add_argument("--remove-bpe", default="subword_nmt", help="fairseq post-process symbol; 'none' to keep BPE")
    p.add_argument("--tokenizer", default="moses", choices=["moses", "none"], help="detokenizer of the output")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is there")
    args = p.parse_args(argv)
    if args.batch_size is None and args.max_tokens is None:
        args.max_tokens = 4096
    return args


class Sweep:
    def __init__(self, args):
        from fairseq import checkpoint_utils, utils

        import fastdiss_fairseq  # noqa: F401  (registers the task and model)
        from .errors import FastDiSSError

        if not os.path.isfile(args.path):
            raise FastDiSSError(f"no checkpoint {args.path}")
        self.args = args
        self.use_cuda = torch.cuda.is_available() and not args.cpu
        overrides = {"data": args.data}
        if getattr(args, "fp32_matmul_precision", None):  # else the checkpoint's, as fairseq-generate's
            overrides["fp32_matmul_precision"] = args.fp32_matmul_precision
        models, _, self.task = checkpoint_utils.load_model_ensemble_and_task([args.path], arg_overrides=overrides)
        self.model = models[0].eval()
        if self.use_cuda:
            self.model.cuda()
        self.task.load_dataset(args.subset)
        self.dataset = self.task.dataset(args.subset)
        self.max_positions = utils.resolve_max_positions(self.task.max_positions(), self.model.max_positions())
        self.detok = None
        if args.tokenizer == "moses":
            # through the task: on prepared data, the Moses language prepare.json names (English
            # for src/tgt data), as the recipes detokenize
            self.detok = self.task.build_tokenizer(Namespace(
                tokenizer="moses", source_lang=self.task.cfg.source_lang, target_lang=self.task.cfg.target_lang,
                moses_no_dash_splits=False, moses_no_escape=False,
            ))

    def batches(self):
        return self.task.get_batch_iterator(
            self.dataset, max_tokens=self.args.max_tokens, max_sentences=self.args.batch_size,
            max_positions=self.max_positions,
        ).next_epoch_itr(shuffle=False)

    def generator(self, steps: int, **generation):
        """The task's generator for `steps`; `generation`: further options as fairseq-generate's
        (clamping_shortlist=..., decoding_dtype=...)."""
        options = {"decoding_steps": steps, "seed": self.args.seed, **generation}
        if self.args.length_beam is not None:
            options["length_beam"] = self.args.length_beam
        if self.args.noise_samples is not None:
            options["noise_samples"] = self.args.noise_samples
        return self.task.build_generator([self.model], Namespace(**options))

    def _to_device(self, sample):
        from fairseq import utils

        return utils.move_to_cuda(sample) if self.use_cuda else sample

    def warm_up(self) -> None:
        sample = next(iter(self.batches()))
        self.task.inference_step(self.generator(1), [self.model], self._to_device(sample))
        self._sync()

    def _sync(self):
        if self.use_cuda:
            torch.cuda.synchronize()

    def run(self, steps: int) -> Dict:
        generator = self.generator(steps)
        tgt_dict = self.task.target_dictionary
        outputs: Dict[int, str] = {}
        seconds = 0.0
        for sample in self.batches():
            sample = self._to_device(sample)
            self._sync()
            start = time.perf_counter()
            hypos = self.task.inference_step(generator, [self.model], sample)
            self._sync()
            seconds += time.perf_counter() - start
            for i, sid in enumerate(sample["id"].tolist()):
                text = tgt_dict.string(
                    hypos[i][0]["tokens"].int().cpu(), self.args.remove_bpe,
                    extra_symbols_to_ignore=generator.symbols_to_strip_from_output,
                )
                outputs[sid] = self.detok.decode(text) if self.detok else text
        return {"steps": steps, "hypotheses": [outputs[i] for i in range(len(outputs))], "seconds": seconds}


def write_table(rows: List[Dict], meta: Dict, path: str) -> None:
    lines = [
        f"# Step sweep: {meta['checkpoint']}",
        "",
        f"{meta['sentences']} sentences of `{meta['subset']}` ({meta['data']}), length beam {meta['length_beam']}, "
        f"noise samples {meta['noise_samples']}, seed {meta['seed']}, {meta['batching']}, {meta['device']}"
        f" ({meta['threads']} threads). SacreBLEU is detokenized (sacrebleu default 13a) against {meta['refs']}; "
        "sentences/s counts the generation calls only.",
        "",
        "| steps | SacreBLEU | sentences/s | generation seconds |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['sacrebleu']:.2f} | {r['sentences_per_second']:.1f} | {r['seconds']:.3f} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(rows: List[Dict], meta: Dict, path: str) -> None:
    steps = [r["steps"] for r in rows]
    with saved_figure(path, ncols=2, figsize=(9, 3.5)) as (fig, (left, right)):
        left.plot(steps, [r["sacrebleu"] for r in rows], marker="o")
        left.set(xscale="log", xlabel="decoding steps", ylabel="SacreBLEU", title="quality")
        right.plot(steps, [r["sentences_per_second"] for r in rows], marker="o", color="tab:orange")
        right.set(xscale="log", xlabel="decoding steps", ylabel="sentences/s", title=f"speed ({meta['device']})")
        for ax in (left, right):
            ax.set_xticks(steps)
            ax.set_xticklabels([str(s) for s in steps])
            ax.grid(alpha=0.3)
        fig.suptitle(os.path.basename(meta["checkpoint"]))


def main(argv=None) -> None:
    args = parse_args(argv)
    # force: importing this fairseq build already set the root logger to DEBUG
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stderr, force=True)
    from .errors import FastDiSSError
    from .prepared_text import data_was_lowercased
    from .scoring import read_refs, sacrebleu_detok

    try:
        # IWSLT14: the model writes lowercase, as the recipes score it
        refs = read_refs(args.refs, lowercase=data_was_lowercased(args.data))
        sweep = Sweep(args)
        if len(refs) != len(sweep.dataset):
            raise FastDiSSError(f"{args.refs} has {len(refs)} lines but subset '{args.subset}' has "
                                f"{len(sweep.dataset)} sentences")
        os.makedirs(args.out, exist_ok=True)
    except (OSError, FastDiSSError) as e:
        sys.exit(f"step_sweep: error: {e}")

    sweep.warm_up()
    gen_cfg = sweep.generator(1).cfg
    meta = {
        "checkpoint": args.path, "data": args.data, "subset": args.subset, "refs": args.refs,
        "sentences": len(refs), "length_beam": gen_cfg.length_beam, "noise_samples": gen_cfg.noise_samples,
        "seed": args.seed, "device": "cuda" if sweep.use_cuda else "cpu", "threads": torch.get_num_threads(),
        "batching": f"batch size {args.batch_size}" if args.batch_size else f"max tokens {args.max_tokens}",
    }
    rows = []
    for steps in sorted(set(args.steps)):
        result = sweep.run(steps)
        with open(os.path.join(args.out, f"hypotheses.{steps}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(h + "\n" for h in result["hypotheses"]))
        row = {
            "steps": steps,
            "sacrebleu": sacrebleu_detok(result["hypotheses"], refs),
            "seconds": result["seconds"],
            "sentences_per_second": len(refs) / max(result["seconds"], 1e-9),
        }
        logger.info("steps %d: SacreBLEU %.2f, %.1f sentences/s", steps, row["sacrebleu"], row["sentences_per_second"])
        rows.append(row)

    with open(os.path.join(args.out, "step_sweep.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    write_table(rows, meta, os.path.join(args.out, "step_sweep.md"))
    write_plot(rows, meta, os.path.join(args.out, "step_sweep.png"))
    print(open(os.path.join(args.out, "step_sweep.md"), encoding="utf-8").read(), end="")


if __name__ == "__main__":
    main()
