#!/usr/bin/env python3
"""Where the FastDiSS generator spends its time: model passes against everything else.

Loads a checkpoint the way fairseq-generate does, decodes a split batch by batch, and times
each part of `FastDiSSGenerator.generate` with wall-clock timers around

  model passes   the encoder, the length head, the denoiser passes (K per batch), the
                 rounding logits (and the normalized embedding table they use), the
                 reordering of the encoder states per candidate, and the source side of the
                 denoiser computed once per batch (cross-attention keys/values, source copy:
                 part of every denoiser pass before they were hoisted into the cache);
  bookkeeping    per-sentence seeded noise, candidate ranking and hypothesis building
                 (`_finalize`), the token search on the rounding logits (the max over the
                 vocabulary, for clamping at every step and for the final tokens, and the
                 final log-softmax that scores them), the sampler's own arithmetic (DDIM or
                 renoise updates, clamping's gather and scatter), and what fairseq-generate
                 does per sentence after the generator (token ids to text, BPE removal).

    python recipes/profile_generator.py DATA --path CKPT [--decoding-steps 5] [--length-beam 5]
        [--batch-size 100] [--subset test] [--json out.json]

Timers cost a few microseconds per call, negligible against the passes they surround.
"""

import argparse
import json
import os
import sys
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fastdiss_fairseq.cpu_performance import MATMUL_PRECISIONS  # noqa: E402
from fastdiss_fairseq.diffusion.sampler import SAMPLER_UPDATES  # noqa: E402
from fastdiss_fairseq.generator import DECODING_DTYPES, LENGTH_BEAM_NOISES  # noqa: E402

MODEL_PARTS = ("encoder", "length head", "encoder reorder", "source-side cache", "denoiser",
               "embedding table", "rounding logits")


def timed(fn, totals, name):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return wrapper


def search_timed(fn, totals):
    """timed(fn, totals, "round_rows"), and the rounding logits computed inside it counted apart."""
    timed_fn = timed(fn, totals, "round_rows")

    def wrapper(*args, **kwargs):
        before = totals["rounding logits"]
        try:
            return timed_fn(*args, **kwargs)
        finally:
            totals["rounding logits inside searches"] += totals["rounding logits"] - before

    return wrapper


def load(args):
    """Model, task, generator and batches exactly as the step-sweep tool (and fairseq-generate) has them."""
    from fastdiss_fairseq.step_sweep import Sweep

    sweep = Sweep(argparse.Namespace(
        data=args.data, path=args.path, subset=args.subset, batch_size=args.batch_size, max_tokens=None,
        length_beam=args.length_beam, noise_samples=None, seed=1, remove_bpe="subword_nmt",
        tokenizer="none", cpu=True, fp32_matmul_precision=args.fp32_matmul_precision,
    ))
    # given options go through the task's build_generator, as fairseq-generate's would
    generation = {k: getattr(args, k) for k in ("clamping_shortlist", "decoding_dtype", "length_beam_noise",
                                                "sampler_update")
                  if getattr(args, k) is not None}
    return sweep.task, sweep.model, sweep.generator(args.decoding_steps, **generation), sweep.batches()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--path", required=True)
    p.add_argument("--subset", default="test")
    p.add_argument("--decoding-steps", type=int, default=5)
    p.add_argument("--length-beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--fp32-matmul-precision", default=None, choices=MATMUL_PRECISIONS,
                   help="as fairseq-generate's option (default: the checkpoint's)")
    p.add_argument("--clamping-shortlist", type=int, default=None,
                   help="as fairseq-generate's option (default: the generator's)")
    p.add_argument("--decoding-dtype", default=None, choices=DECODING_DTYPES,
                   help="as fairseq-generate's option (default: the generator's)")
    p.add_argument("--length-beam-noise", default=None, choices=LENGTH_BEAM_NOISES,
                   help="as fairseq-generate's option (default: the generator's)")
    p.add_argument("--sampler-update", default=None, choices=SAMPLER_UPDATES,
                   help="as fairseq-generate's option (default: the generator's)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    for path in (args.data, args.path):
        if not os.path.exists(path):
            sys.exit(f"profile_generator: error: {path} does not exist")

    import torch

    torch.manual_seed(1)
    task, model, generator, batches = load(args)  # the task applies --fp32-matmul-precision
    totals = defaultdict(float)
    model.encoder.forward = timed(model.encoder.forward, totals, "encoder")
    model.encoder.reorder_encoder_out = timed(model.encoder.reorder_encoder_out, totals, "encoder reorder")
    model.length_logits = timed(model.length_logits, totals, "length head")
    model.denoise = timed(model.denoise, totals, "denoiser")
    model.rounding_logits = timed(model.rounding_logits, totals, "rounding logits")
    model.latent_table = timed(model.latent_table, totals, "embedding table")
    model.decoder.inference_cache = timed(model.decoder.inference_cache, totals, "source-side cache")
    # the noise object is made inside each generate() call: time its class's draw
    import fastdiss_fairseq.generator as generator_module
    generator_module.CandidateNoise.draw = timed(generator_module.CandidateNoise.draw, totals, "seeded noise")
    generator._finalize = timed(generator._finalize, totals, "ranking + hypotheses")
    # round_rows and top_k_rows (the full-vocabulary searches: the final rounding, clamping, the
    # shortlist's first clamp) are looked up as module globals at each call; the rounding
    # logits they compute are timed inside them (nested), so the token search is their total
    # minus those. A shortlisted clamp's logits are "rounding logits", its max is "other".
    import fastdiss_fairseq.clamping as token_search
    token_search.round_rows = search_timed(token_search.round_rows, totals)
    token_search.top_k_rows = search_timed(token_search.top_k_rows, totals)

    tgt_dict = task.target_dictionary
    generate_s = post_s = 0.0
    sentences = 0
    for sample in batches:
        start = time.perf_counter()
        hypos = task.inference_step(generator, [model], sample)
        generate_s += time.perf_counter() - start
        start = time.perf_counter()
        for h in hypos:  # what fairseq-generate does with each sentence's best hypothesis
            tgt_dict.string(h[0]["tokens"].int(), "subword_nmt",
                            extra_symbols_to_ignore=generator.symbols_to_strip_from_output)
        post_s += time.perf_counter() - start
        sentences += len(hypos)

    model_s = sum(totals[k] for k in MODEL_PARTS)
    rows = [(k, totals[k]) for k in MODEL_PARTS]
    token_search = totals["round_rows"] - totals["rounding logits inside searches"]
    rows += [("seeded noise", totals["seeded noise"]), ("ranking + hypotheses", totals["ranking + hypotheses"]),
             ("token search: max over V, log-softmax", token_search),
             ("sampler arithmetic, other", generate_s - model_s - totals["seeded noise"]
              - totals["ranking + hypotheses"] - token_search),
             ("ids -> text, BPE removal", post_s)]
    wall = generate_s + post_s
    print(f"# Generator profile: {sentences} sentences, {args.decoding_steps} steps, length beam "
          f"{args.length_beam}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"fp32 matmul precision {torch.get_float32_matmul_precision()}, clamping "
          f"{'shortlist ' + str(generator.cfg.clamping_shortlist) if generator.cfg.clamping else 'off'}, "
          f"decoding dtype {generator.cfg.decoding_dtype}\n")
    print("| part | seconds | share of wall |\n|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs:.2f} | {100 * secs / wall:.1f}% |")
    print(f"| **model passes** | {model_s:.2f} | {100 * model_s / wall:.1f}% |")
    print(f"| **everything else** | {wall - model_s:.2f} | {100 * (wall - model_s) / wall:.1f}% |")
    print(f"| total | {wall:.2f} | {sentences / wall:.1f} sentences/s |")
    print(f"\ndenoiser calls: {generator.denoiser_calls} for {len(batches)} batches")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "sentences": sentences, "wall_s": wall,
                       "model_passes_s": model_s, "parts_s": dict(rows),
                       "denoiser_calls": generator.denoiser_calls}, f, indent=2)


if __name__ == "__main__":
    main()
