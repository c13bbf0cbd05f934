"""One-line errors for bad options, inputs, checkpoints and data folders.

The plugin raises `FastDiSSError` (a ValueError, so Python callers can catch it as one) for
anything the user can fix: an impossible option, a checkpoint that is not a FastDiSS model, a
dictionary that does not match, an empty split. The stock fairseq CLIs would print such an
exception as a traceback; people running `fairseq-generate` want the reason, so once the
plugin is imported an uncaught FastDiSSError is printed as

    fastdiss: error: --decoding-steps must be an integer >= 1, got 0

and the process exits with status 1, as argparse does for a bad flag. This also holds when
fairseq wraps the error in its own exception (the trainer re-raises a failed model load as
"Cannot load model parameters ...") and when a multi-GPU worker started by
torch.multiprocessing.spawn raised it. A FloatingPointError raised in fairseq's training loop
(non-finite loss or gradients; fairseq re-raises it after its NanDetector pass), and a
checkpoint that fairseq cannot read (missing, truncated, not a checkpoint) are reported the
same way; so are a command line that fairseq cannot turn into its hydra config (e.g.
--tokenizer moses without --source-lang / --target-lang) and a resume that finds in --save-dir
a checkpoint of another model (the differing options are named) or optimizer. Every other
exception keeps its traceback: those are bugs.
"""

import os
import pickle
import re
import sys
import traceback
from typing import Optional


class FastDiSSError(ValueError):
    """A problem the user can fix; the CLIs report it as one line without a traceback."""


PREFIX = "fastdiss: error: "
_TRAINER = os.path.join("fairseq", "trainer.py")
_CHECKPOINT_UTILS = os.path.join("fairseq", "checkpoint_utils.py")
# How a spawned worker's exception reads in the parent's ProcessRaisedException (its traceback as text).
_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?(FastDiSSError|FloatingPointError): (.*)$", flags=re.M)


def _raised_in_fairseq_training(exc: BaseException) -> bool:
    return any(frame.filename.endswith(_TRAINER) for frame in traceback.extract_tb(exc.__traceback__))


def checkpoint_load_problem(exc: BaseException) -> str:
    """What torch.load's exc says about the file, in one line. torch's own text for a file that
    is not a checkpoint at all (a text file given as --path) advises weights_only=False, which
    would not help; for a checkpoint holding a type torch does not load by default it is long."""
    text = str(exc).strip()
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found is None:
            return "not a PyTorch checkpoint (torch.load cannot unpickle it)"
        return (f"it pickles {found.group(1)}, which torch.load does not load by default; if the file "
                "is trusted, allow it with torch.serialization.add_safe_globals")
    return (text.splitlines() or [type(exc).__name__])[0]


def _unreadable_checkpoint(exc: BaseException) -> Optional[str]:
    """The path, if exc is an I/O or format error raised while fairseq read a checkpoint."""
    if not isinstance(exc, (OSError, EOFError, RuntimeError, pickle.UnpicklingError)):
        return None
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in frames:
        if frame.f_code.co_name == "load_checkpoint_to_cpu" and frame.f_code.co_filename.endswith(_CHECKPOINT_UTILS):
            return str(frame.f_locals.get("path"))  # torch.load and what it calls
    raised_in = frames[-1].f_code if frames else None
    if isinstance(exc, OSError) and raised_in and raised_in.co_name == "load_model_ensemble_and_task" \
            and raised_in.co_filename.endswith(_CHECKPOINT_UTILS):
        return str(frames[-1].f_locals.get("filename"))  # its own "Model file not found" check
    return None


def _finite_hint(text: str) -> str:
    if "checkpoint" not in text:  # fairseq's own "gradients are Nan/Inf"
        text += ": training stopped before the update and before any further checkpoint; lower --lr or check the data"
    return text


def _config_composition_problem(exc: BaseException) -> str:
    """hydra's ConfigCompositionException: fairseq turned the command line into overrides of its
    config and one does not fit. The common case: --tokenizer moses without --source-lang and
    --target-lang, whose null values fairseq passes on to the tokenizer's language fields."""
    cause = str(exc.__cause__ or exc).strip()
    field = re.search(r"field '([\w.]+)' is not Optional", cause)
    if field and field.group(1).startswith("tokenizer.") and field.group(1).endswith("_lang"):
        return (f"{field.group(1)} is empty: the tokenizer takes its languages from --source-lang and "
                "--target-lang, which fairseq does not infer from the data folder for it; pass both")
    return "fairseq could not build its configuration from the command line: " + (cause.splitlines() or [""])[0]


# The model options a checkpoint's weights depend on, compared when resuming fails.
_SHAPE_OPTIONS = re.compile(r"^(arch|\w*_layers|\w*embed_dim|\w*attention_heads|length_classes|"
                            r"max_(source|target)_positions|share_\w*)$")


def _option(config, name: str):
    return config.get(name) if hasattr(config, "get") else getattr(config, name, None)


def _resume_mismatch(exc: BaseException) -> Optional[str]:
    """fairseq-train found, in --save-dir, a checkpoint of another model or optimizer (a run
    restarted with other options): fairseq raised "Cannot load model parameters ...; please
    ensure that the architectures match" over the whole state-dict diff, or asserted that the
    optimizer or criterion does not match."""
    frame = next((f for f, _ in traceback.walk_tb(exc.__traceback__) if f.f_code.co_name == "load_checkpoint"
                  and f.f_code.co_filename.endswith(_TRAINER)), None)
    text = (str(exc).strip().splitlines() or [""])[0]
    if frame is None or not text:
        return None
    if not text.startswith("Cannot load model parameters"):
        return PREFIX + text if isinstance(exc, AssertionError) else None  # the optimizer's or criterion's
    saved = _option(_option(frame.f_locals.get("state") or {}, "cfg") or {}, "model")
    current = getattr(getattr(frame.f_locals.get("self"), "cfg", None), "model", None)
    names = [n for n in vars(current) if _SHAPE_OPTIONS.match(n)] if hasattr(current, "__dict__") else []
    differ = [f"--{n.replace('_', '-')} {_option(saved, n)} (now {_option(current, n)})" for n in names
              if saved is not None and _option(saved, n) != _option(current, n)]
    detail = "its model options differ: " + ", ".join(differ) if differ else "its weights do not fit this model"
    return (PREFIX + f"cannot resume from {frame.f_locals.get('filename')}: {detail}; train into a new "
            "--save-dir, or resume with the options it was trained with")


def one_line_message(exc: BaseException) -> Optional[str]:
    """The one-line report for exc, or None when it deserves a traceback."""
    first, seen = exc, set()
    while exc is not None and id(exc) not in seen:  # the exception, then what it was raised from
        seen.add(id(exc))
        if isinstance(exc, FastDiSSError):
            return PREFIX + str(exc)
        if isinstance(exc, FloatingPointError) and _raised_in_fairseq_training(exc):
            return PREFIX + _finite_hint(str(exc))
        path = _unreadable_checkpoint(exc)
        if path is not None:
            return PREFIX + f"cannot read checkpoint {path}: {checkpoint_load_problem(exc)}"
        if type(exc).__name__ == "ConfigCompositionException":
            return PREFIX + _config_composition_problem(exc)
        if type(exc).__name__ == "ProcessRaisedException":
            found = _WORKER_ERROR.findall(str(exc))
            if found:
                kind, text = found[-1]
                return PREFIX + (_finite_hint(text) if kind == "FloatingPointError" else text)
        exc = exc.__cause__ or exc.__context__
    return _resume_mismatch(first) if first is not None else None


def install_excepthook() -> None:
    """Idempotent: the plugin may be imported through --user-dir and as a package."""
    previous = sys.excepthook
    if getattr(previous, "fastdiss_one_line", False):
        return

    def excepthook(exc_type, exc, tb):
        message = one_line_message(exc) if isinstance(exc, Exception) else None
        if message is None:
            previous(exc_type, exc, tb)
        else:
            print(message, file=sys.stderr, flush=True)  # the interpreter then exits with status 1

    excepthook.fastdiss_one_line = True
    sys.excepthook = excepthook
