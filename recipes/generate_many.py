#!/usr/bin/env python3
"""Several fairseq-generate runs in one process, so that Python, fairseq and the CUDA context
start once for all of them rather than once a run (on the lent GPU machine each process paid
30-60 s of start-up for a few seconds of decoding: docs/measurements.md, twentieth session).

    python recipes/generate_many.py SPEC.json

SPEC is a JSON list of runs, each {"args": [...], "out": PATH, "log": PATH, "header": LINE}:
"args" are fairseq-generate's command-line arguments, run by fairseq's own fairseq_cli.generate
(the stock CLI's code, arguments parsed as the CLI parses them); its stdout (the hypotheses and
the closing "Generate ... with beam=" line) goes to "out", its log lines (among them the timer's
"Translated N sentences ... (X sentences/s ...)") to "log", after "header". Each run loads its
checkpoint itself, as the CLI does; decoding is seeded per sentence, so a run's output does not
depend on what ran before it in the process (tests/test_generate_many.py).
"""

import contextlib
import json
import logging
import resource
import sys
import time

FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"  # fairseq-generate's own


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(f"usage: generate_many.py SPEC.json\n\n{__doc__.strip()}")
        return
    if len(argv) != 1:
        sys.exit("usage: generate_many.py SPEC.json")
    with open(argv[0], encoding="utf-8") as f:
        runs = json.load(f)
    from fairseq import options
    from fairseq_cli import generate

    # fairseq-generate's logging.basicConfig only acts on a root logger without handlers: each
    # run's log file is the root's one handler while it runs (importing fairseq added a stderr one).
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    for run in runs:
        # Batches are loaded in this process: a finished run's loader worker is otherwise shut
        # down by the next run's garbage collection, which waits 5 s for it (torch's status
        # check interval), longer than a small decode takes. The batches are the same.
        argv = [str(a) for a in run["args"]] + ([] if "--num-workers" in run["args"] else ["--num-workers", "0"])
        parser = options.get_generation_parser()
        # as fairseq_cli.generate.cli_main does (a default architecture for audio tasks)
        parser.add_argument("--arch", "-a", metavar="ARCH", default="wav2vec2")
        args = options.parse_args_and_arch(parser, input_args=argv)
        with open(run["log"], "w", encoding="utf-8") as log, open(run["out"], "w", encoding="utf-8") as out:
            if run.get("header"):
                log.write(run["header"] + "\n")
            handler = logging.StreamHandler(log)
            handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
            root.addHandler(handler)
            start = time.perf_counter()
            try:
                with contextlib.redirect_stdout(out):
                    generate.main(args)
            finally:
                root.removeHandler(handler)
            # for recipes/speed_benchmark.py --one-process-per-model: this run's wall time, the
            # process's peak resident memory so far, and this run's peak GPU memory
            log.write(f"RUN_SECONDS {time.perf_counter() - start:.3f}\n"
                      f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")
            if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
                torch = sys.modules["torch"]
                log.write(f"PEAK_CUDA_BYTES {torch.cuda.max_memory_allocated()}\n")
                torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
