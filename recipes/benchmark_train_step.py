#!/usr/bin/env python3
"""Training-update wall time: FastDiSS baseline vs SCP+MANS vs fairseq's AR transformer.

Every variant trains on the *same* batches (same data, --max-tokens, order) with the same
model size, in one process, on the same threads; the figure is the median wall time of one
full update (forward, backward, Adam step) after warm-up, and target tokens per second.

    python recipes/benchmark_train_step.py DATA_BIN [--arch fastdiss_small] [--max-tokens 4096]
        [--updates 30] [--warmup 5] [--variants baseline scp_mans ar] [--model-args '...'] [--amp] [--json out.json]

--amp runs every variant's forward under CPU bfloat16 autocast, as fairseq-train --amp does for
FastDiSS on a CPU (fastdiss_translation's train_step); fairseq's own translation task autocasts
CUDA operations only, so there the AR figure is what the AR transformer would get, not what
fairseq-train --amp gives it on a CPU (float32).
"""

import argparse
import json
import statistics
import sys
import time

import torch


VARIANTS = {
    # name: (task, arch family, criterion, extra args)
    "baseline": ("fastdiss_translation", "fastdiss", "fastdiss_loss", []),
    "scp": ("fastdiss_translation", "fastdiss", "fastdiss_loss", ["--scp"]),
    "mans": ("fastdiss_translation", "fastdiss", "fastdiss_loss", ["--mans"]),
    "scp_mans": ("fastdiss_translation", "fastdiss", "fastdiss_loss", ["--scp", "--mans"]),
    "ar": ("translation", "transformer", "label_smoothed_cross_entropy",
           ["--label-smoothing", "0.1", "--share-all-embeddings"]),
}

# fairseq's transformer with the dimensions of each FastDiSS architecture.
AR_DIMS = {
    "fastdiss_small": ["--encoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512",
                       "--encoder-attention-heads", "4", "--encoder-layers", "3",
                       "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "512",
                       "--decoder-attention-heads", "4", "--decoder-layers", "3"],
    "fastdiss_tiny": ["--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                      "--encoder-attention-heads", "2", "--encoder-layers", "1",
                      "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                      "--decoder-attention-heads", "2", "--decoder-layers", "1"],
    "fastdiss_iwslt_de_en": ["--arch", "transformer_iwslt_de_en"],
}


def build(data, variant, arch, user_dir, model_args=(), matmul_precision="highest"):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    task_name, family, criterion, extra = VARIANTS[variant]
    argv = [data, "--user-dir", user_dir, "--task", task_name, "--criterion", criterion, "--cpu"]
    if family == "fastdiss":
        argv += ["--arch", arch, *model_args, "--fp32-matmul-precision", matmul_precision]
    else:
        dims = AR_DIMS.get(arch)
        if dims is None:
            sys.exit(f"benchmark_train_step: error: no AR counterpart defined for --arch {arch}")
        argv += (["--arch", "transformer"] + dims) if dims[0] != "--arch" else dims
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv + extra)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    return task, model, task.build_criterion(cfg.criterion)


def time_variant(data, variant, arch, user_dir, max_tokens, updates, warmup, model_args=(),
                 matmul_precision="highest", amp=False):
    from fastdiss_fairseq.cpu_performance import cpu_training_autocast

    torch.manual_seed(1)
    task, model, criterion = build(data, variant, arch, user_dir, model_args, matmul_precision)
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=max_tokens, seed=1)
    batches = itr.next_epoch_itr(shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times, tokens = [], []
    for i in range(warmup + updates):
        sample = next(batches)
        torch.manual_seed(1000 + i)  # same self-conditioning coin flips for every variant
        start = time.perf_counter()
        with cpu_training_autocast(amp):
            loss, _, _ = criterion(model, sample)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
            tokens.append(sample["ntokens"])
    params = sum(p.numel() for p in model.parameters())
    return {
        "variant": variant,
        "median_update_s": statistics.median(times),
        "mean_update_s": statistics.fmean(times),
        "target_tokens_per_s": sum(tokens) / sum(times),
        "updates_timed": len(times),
        "params": params,
    }


def main(argv=None):
    import fastdiss_fairseq
    import os
    from fastdiss_fairseq.cpu_performance import MATMUL_PRECISIONS, apply_cpu_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--arch", default="fastdiss_small")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--updates", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=["baseline", "scp_mans", "ar"], choices=sorted(VARIANTS))
    p.add_argument("--model-args", default="", help="extra FastDiSS model options, e.g. "
                   "'--noise-scale 4 --source-copy-input' (quote them as one argument)")
    p.add_argument("--fp32-matmul-precision", default="highest", choices=MATMUL_PRECISIONS,
                   help="set for the whole process, so the AR transformer runs under it too")
    p.add_argument("--amp", action="store_true",
                   help="forward under CPU bfloat16 autocast, as fairseq-train --amp on a CPU (every variant)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    user_dir = os.path.dirname(fastdiss_fairseq.__file__)
    # The fastdiss task applies its CPU settings when set up; applied here first, they hold for
    # every variant alike, fairseq's own translation task included.
    apply_cpu_settings(args.fp32_matmul_precision)
    print(f"torch threads: {torch.get_num_threads()}, arch {args.arch}, max tokens {args.max_tokens}, "
          f"fp32 matmul precision {args.fp32_matmul_precision}, bfloat16 autocast {args.amp}")
    results = []
    for v in args.variants:
        r = time_variant(args.data, v, args.arch, user_dir, args.max_tokens, args.updates, args.warmup,
                         args.model_args.split(), args.fp32_matmul_precision, args.amp)
        results.append(r)
        print(f"{v:<10} median update {r['median_update_s']:.3f} s   {r['target_tokens_per_s']:.0f} target tok/s   "
              f"({r['params'] / 1e6:.2f}M params)", flush=True)
    by = {r["variant"]: r for r in results}
    if "baseline" in by:
        for v, r in by.items():
            if v != "baseline":
                print(f"update time {v} / baseline = {r['median_update_s'] / by['baseline']['median_update_s']:.2f}")
    if "ar" in by:
        for v, r in by.items():
            if v != "ar":
                print(f"tokens/s {v} / AR transformer = {r['target_tokens_per_s'] / by['ar']['target_tokens_per_s']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
