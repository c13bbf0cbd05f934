"""Log which criterion options (SCP, MANS, loss weights) changed when a training run resumes.

Resuming with other SCP/MANS settings is allowed (e.g. switching MANS on for the last part of
a run), but it should never happen unnoticed. fairseq gives the task no hook on resume: the
trainer reads the checkpoint in Trainer.load_checkpoint and keeps its stored cfg to itself,
and a criterion without parameters is not even handed its state. So importing the plugin
wraps Trainer.load_checkpoint: once fairseq has loaded the file (a resume it refuses, e.g.
into another model, ends with its one-line error and no warning), the stored criterion cfg is
read (a memory-mapped load: the weights are not read twice) and compared with the current
one, and the differences are logged as one warning on the first data-parallel rank:

    fastdiss: resuming from ckpt/checkpoint_last.pt with changed criterion options: --mans False -> True
"""

import logging
import os

import torch
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

logger = logging.getLogger(__name__)

_fairseq_load_checkpoint = getattr(Trainer.load_checkpoint, "fairseq_original", Trainer.load_checkpoint)


def stored_state(filename: str):
    """A fairseq checkpoint's state dict, memory-mapped (the weights are not read), or None if
    it cannot be read that way."""
    try:
        state = torch.load(filename, map_location="cpu", mmap=True)
    except Exception as e:  # legacy (non-zip) files cannot be memory-mapped; just skip the check
        logger.debug("could not read %s: %s", filename, e)
        return None
    return state if isinstance(state, dict) else None


def stored_criterion_cfg(filename: str):
    """The criterion cfg a fairseq checkpoint was trained with, or None if it cannot tell."""
    cfg = (stored_state(filename) or {}).get("cfg")
    criterion = cfg.get("criterion") if isinstance(cfg, dict) else None
    return criterion if isinstance(criterion, dict) else None


def stored_optimizer_name(filename: str):
    """The class name of the optimizer a fairseq checkpoint was last trained with
    ('AMPOptimizer' under --amp, 'FairseqAdam' without it), or None if it cannot tell.
    fairseq-train refuses to resume one with the other ("Optimizer does not match")."""
    try:
        return stored_state(filename)["optimizer_history"][-1]["optimizer_name"]
    except (TypeError, KeyError, IndexError):  # unreadable, or not one of fairseq's
        return None


def trained_with_amp(filename: str):
    """Whether a fairseq checkpoint was trained with --amp (its optimizer is fairseq's
    AMPOptimizer); None if it cannot tell."""
    name = stored_optimizer_name(filename)
    return None if name is None else name == "AMPOptimizer"


def effective_options(criterion: dict) -> dict:
    """The options that change training: SCP's own (scp_*) count only while --scp is on, MANS's
    (mans_*) only while --mans is on, so resuming a baseline run after an SCP default changed
    is not reported."""
    def on(part):
        return str(criterion.get(part)) == "True"  # a bool, or its string in an older cfg

    return {k: v for k, v in criterion.items()
            if not (k.startswith("scp_") and not on("scp")) and not (k.startswith("mans_") and not on("mans"))}


def changed_options(old: dict, new: dict):
    """['--name old -> new', ...] for the options whose value differs (the name must match),
    among those that change training on each side (effective_options)."""
    if old.get("_name") != new.get("_name"):
        return []
    old, new = effective_options(old), effective_options(new)
    changes = []
    # Options only one side knows (added to the plugin since the checkpoint was written) are
    # not reported: their absence says nothing about what the run trained with.
    for key in sorted(set(old) & set(new)):
        if key.startswith("_"):
            continue
        before, after = old.get(key), new.get(key)
        if str(before) != str(after):  # enums are stored as strings
            changes.append(f"--{key.replace('_', '-')} {before} -> {after}")
    return changes


def warn_if_criterion_changed(filename: str, current_cfg) -> None:
    if not os.path.isfile(filename):
        return
    old = stored_criterion_cfg(filename)
    if old is None or current_cfg is None:
        return
    new = OmegaConf.to_container(current_cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(current_cfg) \
        else dict(vars(current_cfg))
    changes = changed_options(old, new)
    if changes:
        logger.warning("fastdiss: resuming from %s with changed criterion options: %s", filename, ", ".join(changes))


def load_checkpoint(self, filename, *args, **kwargs):
    extra_state = _fairseq_load_checkpoint(self, filename, *args, **kwargs)
    if self.data_parallel_rank == 0:
        warn_if_criterion_changed(filename, getattr(self.cfg, "criterion", None))
    return extra_state


load_checkpoint.fairseq_original = _fairseq_load_checkpoint


def install() -> None:
    """Idempotent; called when the plugin is imported."""
    Trainer.load_checkpoint = load_checkpoint
