"""Checks and safe behaviours for bad input, used by the task `fastdiss_translation`.

Each check fails early with a FastDiSSError (one line on the CLIs, see errors.py) that names
the problem, or applies a documented safe behaviour:

- fairseq-train's --fp16 / --memory-efficient-fp16 without a CUDA GPU, and --bf16 /
  --memory-efficient-bf16 (fairseq's TPU options) without torch_xla, are refused when the model
  is built (fairseq stopped later with "Torch not compiled with CUDA enabled" or an
  AttributeError about xla_device), and so is --lr-scheduler inverse_sqrt with --warmup-updates 0
  (a ZeroDivisionError);
- a checkpoint used in the other direction than it was trained in (de->en fed English, e.g.
  when fairseq inferred the pair from a folder holding both) is refused, naming the flags;
- more than one model (fairseq-generate's ensemble, --path a.pt:b.pt) is refused, pointing to
  checkpoint averaging;
- a criterion other than fastdiss_loss (fairseq's default, cross_entropy, when --criterion is
  left out) is refused when it is built, before training, and so is fastdiss_loss under another task;
- a model that is not a FastDiSS model (a fairseq `transformer` checkpoint given to
  `--task fastdiss_translation`) is refused when it is built, before its weights are read, and
  so is a FastDiSS model built by another task (fairseq-generate without `--task`);
- a data folder without dictionaries, or whose language pair cannot be inferred, is refused;
- a checkpoint whose dictionary size differs from the data folder's is refused with both sizes;
- a split whose binarized files are missing or hold 0 sentences is refused;
- a valid/test split with a sentence longer than the position limits is refused when it is
  batched, before any decoding, naming the side and a sentence (fairseq stopped with a
  traceback); --truncate-source (sources), --max-target-positions (targets) or
  --skip-invalid-size-inputs-valid-test are the ways on;
- a sentence pair longer than --max-tokens (which no batch could hold) is refused before
  batching, with its split, index and length;
- an inference source longer than the model's source positions is truncated, with a warning
  (fairseq-interactive and the hub interface would otherwise stop with a traceback);
- fairseq-generate's options that only fairseq's own generators read (beam search, NAT
  refinement: --iter-decode-max-iter, --score-reference, --lenpen, ...) are refused when set,
  naming what to use instead; --beam other than 1 or the length beam gets a warning, and an
  unknown key of --eval-bleu-args is refused; fairseq-generate's --bf16, which decoded in
  float32, is refused, pointing to --decoding-dtype bfloat16;
- --best-checkpoint-metric bleu without --eval-bleu is refused before training (fairseq's
  KeyError came at the first validation, before any checkpoint);
- --nbest larger than the candidates a sentence gets (--length-beam x --noise-samples) is
  refused: fairseq-generate would print fewer hypotheses than asked, without a word;
- an empty source (only EOS, e.g. an empty line on fairseq-interactive's stdin) gets an empty
  translation instead of a hallucinated one.
"""

import glob
import importlib.util
import logging
import os
from typing import Dict, List

import torch
from fairseq import utils
from fairseq.data import data_utils
from omegaconf import DictConfig, open_dict

from .errors import FastDiSSError

logger = logging.getLogger(__name__)


def check_language_pair(task_cfg) -> None:
    """fairseq infers the pair from binarized file names; say what to do when it cannot."""
    if task_cfg.source_lang is not None and task_cfg.target_lang is not None:
        return
    data = utils.split_paths(task_cfg.data)[0] if task_cfg.data else None
    if data is None or not os.path.isdir(data):
        return  # remote, or missing: fairseq's own lookup reports it
    if None in tuple(data_utils.infer_language_pair(data)):
        raise FastDiSSError(
            f"cannot tell the language pair: {data} holds no binarized split to infer it from; "
            "pass --source-lang and --target-lang (from Python: source_lang=..., target_lang=...)"
        )


def run_config(task_cfg):
    """The run's whole config, or None. task_cfg: the task's config; under fairseq-train its
    parent is the whole config (the model's config is a plain Namespace without one)."""
    get_parent = getattr(task_cfg, "_get_parent", None)
    root = get_parent() if get_parent else None
    return root if getattr(root, "common", None) is not None else None


def check_training_run(task_cfg) -> None:
    """fairseq-train options that fairseq itself would fail on later, with a traceback. Loading a
    checkpoint never calls this: its saved options describe the run and machine it came from."""
    root = run_config(task_cfg)
    if root is None:
        return
    check_training_precision(root.common)
    scheduler = getattr(root, "lr_scheduler", None)
    if getattr(scheduler, "_name", None) == "inverse_sqrt" and scheduler.warmup_updates <= 0:
        raise FastDiSSError(f"--lr-scheduler inverse_sqrt needs --warmup-updates >= 1 (fairseq divides by it), "
                            f"got {scheduler.warmup_updates}")
    checkpoint = getattr(root, "checkpoint", None)
    if getattr(checkpoint, "best_checkpoint_metric", None) == "bleu" and not getattr(task_cfg, "eval_bleu", False):
        # fairseq looked the metric up at the first validation: a KeyError, and no checkpoint saved
        raise FastDiSSError("--best-checkpoint-metric bleu needs --eval-bleu (validation computes BLEU only "
                            "with it); add --eval-bleu, or keep the default metric, the validation loss")


def bf16_without_xla(common) -> bool:
    """fairseq's --bf16 / --memory-efficient-bf16 are TPU options, and torch_xla is not installed."""
    return bool(common.bf16) and importlib.util.find_spec("torch_xla") is None


def check_training_precision(common) -> None:
    """fairseq-train's half-precision options need a device this process may not have."""
    if bf16_without_xla(common):
        flag = "--memory-efficient-bf16" if common.memory_efficient_bf16 else "--bf16"
        raise FastDiSSError(
            f"{flag} is fairseq's TPU option (it implies --tpu and needs torch_xla, not installed); "
            "leave it out: training runs in float32, and --fp32-matmul-precision medium computes its "
            "matrix products in bfloat16 on CPUs and GPUs that have them"
        )
    if common.fp16 and (common.cpu or not torch.cuda.is_available()):
        flag = "--memory-efficient-fp16" if common.memory_efficient_fp16 else "--fp16"
        where = "--cpu is set" if common.cpu else "torch sees no CUDA GPU"
        raise FastDiSSError(
            f"{flag} trains with fairseq's float16 optimizer, which needs a CUDA GPU ({where}); "
            "leave it out on the CPU, where training runs in float32"
        )


def record_or_check_direction(model_cfg, task_cfg, from_checkpoint: bool) -> None:
    """A model translates the direction it was trained in. fairseq infers the pair from the
    data folder's file names when --source-lang/--target-lang are left out, and a folder with
    both directions (IWSLT14's de-en and en-de recipes share one) or a swapped pair on the
    command line fed a de->en model English without a word. Training records the direction in
    the model's options, which the checkpoint keeps; loading compares (older checkpoints: no
    record, no check)."""
    direction = f"{task_cfg.source_lang}-{task_cfg.target_lang}"
    if not from_checkpoint:
        if isinstance(model_cfg, DictConfig):  # fairseq-hydra-train's model config is a struct
            with open_dict(model_cfg):
                model_cfg.trained_direction = direction
        else:
            model_cfg.trained_direction = direction
        return
    trained = getattr(model_cfg, "trained_direction", None)
    if trained and trained != direction:
        src, tgt = trained.split("-", 1)
        raise FastDiSSError(f"the checkpoint translates {src}->{tgt} but this run reads {task_cfg.source_lang}->"
                            f"{task_cfg.target_lang}: pass --source-lang {src} --target-lang {tgt}")


def check_fastdiss_task(task, error: str = "a fastdiss_transformer model needs --task fastdiss_translation") -> None:
    """A FastDiSS model decodes only with the task's diffusion generator; fairseq's default task
    (translation) would hand it to the autoregressive beam search, which fails deep inside.
    error: what needs the task (the model by default; the criterion passes its own)."""
    from .tasks.fastdiss_translation import FastDiSSTranslationTask

    if not isinstance(task, FastDiSSTranslationTask):
        raise FastDiSSError(f"{error} (got task {type(task).__name__})")


# fairseq-generate's options that only fairseq's own generators read (the beam search of
# autoregressive models, the iterative refinement of its NAT models), with their defaults and
# what to do instead. The diffusion generator does not read them, so a value other than the
# default would be ignored without a word (--iter-decode-max-iter 4 would decode 5 steps,
# --score-reference would print the model's outputs, not the references' scores) or would fail
# deep inside fairseq-generate (--print-alignment, --replace-unk: there is no attention).
# Left out: --beam and --iter-decode-force-max-iter, which fairseq's own NAT recipes pass and
# which change nothing here (the sampler always runs its K steps; --length-beam is the beam).
_LENGTH_HEAD = "the target lengths come from the length head: use --length-beam L"
_NO_ATTENTION = "the diffusion generator has no attention alignment"
_NOISE_IS_SAMPLING = "the diffusion noise is the sampling: use --noise-samples S and --seed"
_NO_BEAM_SEARCH = "no beam search; use --noise-samples S for more candidates"
FOREIGN_GENERATION_OPTIONS = {
    "iter_decode_max_iter": (10, "use --decoding-steps K instead"),
    "iter_decode_with_beam": (1, "use --length-beam L instead"),
    "iter_decode_eos_penalty": (0.0, _LENGTH_HEAD),
    "iter_decode_with_external_reranker": (False, "use --candidate-ranking instead"),
    "score_reference": (False, "a diffusion model gives no likelihood of a given target to score"),
    "print_alignment": (None, _NO_ATTENTION),
    "replace_unk": (None, _NO_ATTENTION),
    "prefix_size": (0, "the whole target is denoised at once, no prefix can be forced"),
    "constraints": (None, "the whole target is denoised at once, no words can be forced"),
    "sampling": (False, _NOISE_IS_SAMPLING),
    "sampling_topk": (-1, _NOISE_IS_SAMPLING),
    "sampling_topp": (-1.0, _NOISE_IS_SAMPLING),
    "temperature": (1.0, _NOISE_IS_SAMPLING),
    "max_len_a": (0, _LENGTH_HEAD),
    "max_len_b": (200, _LENGTH_HEAD),
    "min_len": (1, _LENGTH_HEAD),
    "match_source_len": (False, _LENGTH_HEAD),
    "lenpen": (1, "candidates are ranked by their mean token log-probability, which needs no length penalty"),
    "unnormalized": (False, "candidates are ranked by their mean token log-probability"),
    "unkpen": (0, "no word-by-word search to penalize"),
    "no_repeat_ngram_size": (0, "no word-by-word search to constrain; --collapse-repeats drops repeated tokens"),
    "diverse_beam_groups": (-1, _NO_BEAM_SEARCH),
    "diversity_rate": (-1.0, _NO_BEAM_SEARCH),
    "lm_path": (None, "no word-by-word search to fuse a language model into"),
}


def reject_foreign_generation_options(generation_args) -> None:
    """generation_args: fairseq-generate's generation config (None from the hub or tests)."""
    for name, (default, instead) in FOREIGN_GENERATION_OPTIONS.items():
        value = getattr(generation_args, name, default)
        if value is None or value == default:
            continue
        flag = "--" + name.replace("_", "-")
        given = flag if isinstance(value, bool) else f"{flag} {value}"
        raise FastDiSSError(f"{given} is read by fairseq's own generators, not by FastDiSS's "
                            f"diffusion generator: {instead}")


def check_generation_precision(task_cfg) -> None:
    """fairseq-generate casts the model for --fp16 but not for --bf16 (a TPU option there), which
    decoded in float32 without a word."""
    root = run_config(task_cfg)
    common = getattr(root, "common", None)
    if common is not None and bf16_without_xla(common):
        raise FastDiSSError("--bf16 is fairseq's TPU option and fairseq-generate would decode in float32 "
                            "here; decode in bfloat16 with --decoding-dtype bfloat16")


def check_generation_arguments(args, known) -> None:
    """args: a Namespace of --eval-bleu-args' keys; known: the names the generator or fairseq's
    generation config read. A misspelt key ({"decodingsteps": 1}) was ignored without a word."""
    unknown = sorted(set(vars(args)) - set(known))
    if unknown:
        raise FastDiSSError(f"--eval-bleu-args: unknown key(s) {', '.join(map(repr, unknown))}; FastDiSS's "
                            "decoding options there are the task's, e.g. {\"decoding_steps\": 5, \"length_beam\": 1}")


def warn_unused_beam(args, length_beam: int) -> None:
    """fairseq-generate's --beam (5 by default, 1 in fairseq's NAT recipes) sizes beam search, which
    the diffusion generator does not do; another value would look like a wider search."""
    beam = getattr(args, "beam", None)
    if beam is not None and beam not in (1, length_beam):
        logger.warning("fastdiss: --beam %s has no effect: FastDiSS's search width is --length-beam (%d)",
                       beam, length_beam)


def check_single_model(models) -> None:
    """The diffusion generator runs one denoiser; fairseq-generate ensembles "--path a.pt:b.pt"."""
    if len(models) != 1:
        raise FastDiSSError(
            f"the FastDiSS generator does not ensemble models (--path names {len(models)}); pass one "
            "checkpoint, or average them into one: python -m fastdiss_fairseq.average_checkpoints "
            "--inputs a.pt b.pt --output avg.pt"
        )


def check_nbest(generation_args, length_beam: int, noise_samples: int) -> None:
    """The generator makes length_beam x noise_samples candidates a sentence and returns them
    all, best first; fairseq-generate prints the first --nbest and would print fewer, silently."""
    nbest = getattr(generation_args, "nbest", 1) or 1
    candidates = length_beam * noise_samples
    if nbest > candidates:
        raise FastDiSSError(
            f"--nbest {nbest} asks for more hypotheses than the generator makes a sentence: "
            f"--length-beam {length_beam} x --noise-samples {noise_samples} = {candidates} candidates; "
            "raise --length-beam or --noise-samples, or lower --nbest"
        )


def check_fastdiss_criterion(criterion, criterion_cfg) -> None:
    """The model's training forward needs the target and the noise options that only the
    FastDiSS criterion passes; fairseq's default criterion (cross_entropy) would fail in the
    first update with an AttributeError deep inside the model."""
    from .criterions.fastdiss_loss import FastDiSSLoss

    if not isinstance(criterion, FastDiSSLoss):
        name = getattr(criterion_cfg, "_name", None) or type(criterion).__name__
        default = ", fairseq's default when --criterion is left out" if name == "cross_entropy" else ""
        raise FastDiSSError(f"--task fastdiss_translation trains with --criterion fastdiss_loss (got {name}{default})")


def check_fastdiss_model(model, model_cfg) -> None:
    from .models.fastdiss_transformer import FastDiSSTransformerModel

    if isinstance(model, FastDiSSTransformerModel):
        return
    name = getattr(model_cfg, "_name", None) or getattr(model_cfg, "arch", None) or type(model).__name__
    raise FastDiSSError(
        f"the model is not a FastDiSS model (got arch '{name}', class {type(model).__name__}): "
        "--task fastdiss_translation needs a checkpoint trained with --arch fastdiss_*"
    )


def guard_dictionary_size(model, dictionary, dict_path: str) -> None:
    """Refuse, before loading, a state dict whose embedding table has another vocabulary size."""

    def hook(module, state_dict, prefix, *unused):
        weight = state_dict.get(prefix + "encoder.embed_tokens.weight")
        if weight is not None and weight.size(0) != len(dictionary):
            raise FastDiSSError(
                f"the checkpoint's dictionary has {weight.size(0)} symbols but {dict_path} has "
                f"{len(dictionary)}: use the data folder (dictionaries) the model was trained with"
            )

    model.register_load_state_dict_pre_hook(hook)


def check_split(data_path: str, split: str) -> None:
    """Before fairseq reads it: fairseq-preprocess writes an empty split as empty .bin files,
    which fairseq cannot even memory-map (ValueError: cannot mmap an empty file)."""
    empty = [p for p in glob.glob(os.path.join(data_path, f"{split}.*-*.*.bin")) if os.path.getsize(p) == 0]
    if empty:
        raise FastDiSSError(f"split '{split}' in {data_path} has 0 sentences ({os.path.basename(empty[0])} is empty)")


def missing_data_error(e: FileNotFoundError) -> FastDiSSError:
    name = str(e.filename or e)
    if name.endswith(".txt"):
        return FastDiSSError(f"{name} not found: the data folder needs the dict.*.txt files written by fairseq-preprocess")
    return FastDiSSError(f"{name} not found")


def missing_split_error(data_path: str, split: str, src: str, tgt: str) -> FastDiSSError:
    return FastDiSSError(
        f"no split '{split}' in {data_path} (expected {split}.{src}-{tgt}.{src}.bin/.idx "
        f"from fairseq-preprocess); choose another one with --gen-subset / --valid-subset"
    )


def check_batchable(dataset, split: str, max_tokens, max_positions, refuse_too_long: bool) -> None:
    """Before fairseq batches a split, on one pass of its position filter:
    - refuse_too_long (a valid/test split without --skip-invalid-size-inputs-valid-test): a
      sentence over the position limits is refused, naming it, before any decoding (fairseq's
      traceback stopped generation at that batch);
    - every pair filtered out: fairseq stopped with an IndexError or a ZeroDivisionError;
    - a pair longer than --max-tokens, which no batch could hold: fairseq's AssertionError.
      Checked on the pairs the filter keeps (fairseq-train folds --max-tokens into the training
      split's limits and skips what exceeds them), so a dropped pair cannot cause a false refusal."""
    import numpy as np

    kept = np.arange(len(dataset))
    if max_positions is not None:
        kept, too_long = dataset.filter_indices_by_size(kept, max_positions)
        if refuse_too_long and len(too_long) > 0:
            raise FastDiSSError(position_limit_error(dataset, split, too_long, max_positions))
    if not hasattr(dataset, "num_tokens_vec") or len(dataset) == 0:
        return
    if len(kept) == 0:
        shortest = int(np.min(dataset.num_tokens_vec(np.arange(len(dataset)))))
        raise FastDiSSError(
            f"every sentence pair of split {split} exceeds the size limits {max_positions} (the model's "
            f"positions, --max-source/target-positions and, when training, --max-tokens {max_tokens}), so "
            f"all would be skipped; the shortest has {shortest} tokens"
        )
    if not max_tokens:
        return
    num_tokens = np.asarray(dataset.num_tokens_vec(kept))
    longest = int(num_tokens.argmax())
    if num_tokens[longest] > max_tokens:
        raise FastDiSSError(
            f"--max-tokens {max_tokens} is smaller than the longest sentence pair of split {split} "
            f"(sentence {int(kept[longest])}: {int(num_tokens[longest])} tokens), which no batch could hold; "
            f"raise --max-tokens to at least {int(num_tokens[longest])}"
        )


def position_limit_error(dataset, split: str, too_long, max_positions) -> str:
    """Which side of the too-long pairs is over its limit, and the way on for that side: a source
    can be cut (--truncate-source), a reference is never cut."""
    import numpy as np

    src_limit, tgt_limit = max_positions if isinstance(max_positions, tuple) else (max_positions, max_positions)
    too_long = np.asarray(too_long)
    tgt_sizes = dataset.tgt_sizes if dataset.tgt_sizes is not None else np.zeros(len(dataset), dtype=np.int64)
    found, ways = [], []
    for name, limit, sizes, way in (("source", src_limit, dataset.src_sizes, "--truncate-source"),
                                    ("target", tgt_limit, tgt_sizes, "--max-target-positions up to the model's")):
        if limit is None:
            continue
        over = too_long[sizes[too_long] > limit]
        if len(over):
            found.append(f"{len(over)} {name}(s) over {limit} positions (sentence {int(over[0])} has "
                         f"{int(sizes[over[0]])})")
            ways.append(way)
    ways.append("--skip-invalid-size-inputs-valid-test to leave them out of the scores")
    return f"split {split}: {len(too_long)} sentence pair(s) too long: {'; '.join(found)}; add " + ", or ".join(ways)


def truncate_sources(src_tokens: List[torch.Tensor], src_lengths, max_positions: int, eos: int):
    """Sources longer than max_positions keep their first max_positions - 1 tokens and EOS."""
    if max_positions is None or all(len(t) <= max_positions for t in src_tokens):
        return src_tokens, src_lengths
    tokens = []
    for t in src_tokens:
        if len(t) > max_positions:
            logger.warning(
                "fastdiss: an input of %d tokens (subword units with EOS) is longer than the %d source "
                "positions of the model; it is truncated to them", len(t), max_positions,
            )
            t = torch.cat([t[: max_positions - 1], t.new_tensor([eos])])
        tokens.append(t)
    lengths = [len(t) for t in tokens]
    if torch.is_tensor(src_lengths):
        lengths = torch.tensor(lengths, dtype=src_lengths.dtype)
    return tokens, lengths


def empty_hypothesis(eos: int) -> Dict:
    return {
        "tokens": torch.tensor([eos]),
        "score": 0.0,
        "positional_scores": torch.zeros(1),
        "attention": None,
        "alignment": None,
    }


def empty_sources_get_empty_output(sample: Dict, hypos: List[List[Dict]], eos: int) -> List[List[Dict]]:
    """Sentences whose source holds nothing but EOS get empty hypotheses, as many as the others
    (--nbest N prints N per sentence)."""
    lengths = sample["net_input"]["src_lengths"].tolist()
    return [[empty_hypothesis(eos) for _ in h] if n <= 1 else h for n, h in zip(lengths, hypos)]
