"""Atomic checkpoint writes: no checkpoint file is ever left half-written.

Why this module patches fairseq: fairseq 0.12's trainer writes a checkpoint with
`checkpoint_utils.torch_persistent_save` (a `<name>.tmp` file renamed into place, but never
fsync'ed, and left behind when pickling fails) and `save_checkpoint` then *copies* that file to
the other names of the same update (checkpoint_last.pt, checkpoint_best.pt, ...) with
`PathManager.copy`, i.e. shutil.copyfile straight into the target. A job killed (SIGKILL,
pre-emption, out of memory) during that copy leaves a truncated checkpoint_last.pt, the very
file the restarted job resumes from. fairseq has no hook for this, so importing the plugin
replaces both, for local paths only:

- every write goes to a unique hidden temp file in the target's folder, is flushed and
  fsync'ed, and is moved over the target with os.replace (atomic on POSIX), then the folder
  is fsync'ed: a reader sees the old file or the new one, never a part;
- a save whose model weights hold NaN/inf is refused (FloatingPointError) so that the last good
  checkpoint on disk is never replaced by a poisoned one;
- the `crash.pt` dump that fairseq's trainer writes while it handles a FloatingPointError
  (non-finite loss or gradients) is skipped: it would hold the weights that produced the NaN.
  Dumps for other crashes are still written.

Remote paths (iopath handlers) and --write-checkpoints-asynchronously keep fairseq's own code.
"""

import logging
import os
import shutil
import sys
import uuid

import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

logger = logging.getLogger(__name__)

_fairseq_torch_persistent_save = getattr(
    checkpoint_utils.torch_persistent_save, "fairseq_original", checkpoint_utils.torch_persistent_save
)


def _is_local(path: str) -> bool:
    return not PathManager.path_requires_pathmanager(path)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(filename: str, write) -> None:
    """Calls write(binary file) on a temp file next to filename, then moves it into place."""
    folder = os.path.dirname(os.path.abspath(filename))
    # Hidden, unique and ending in .tmp: fairseq's checkpoint globbing (checkpoint\d+.pt,
    # checkpoint_\d+_\d+.pt) never mistakes it for a checkpoint, and two writers never collide.
    tmp = os.path.join(folder, f".{os.path.basename(filename)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def check_finite_weights(obj, filename: str) -> None:
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        return
    for name, value in model.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise FloatingPointError(
                f"refusing to write {filename}: model weight {name} holds NaN/inf; the checkpoints "
                "already on disk are kept; lower --lr or check the data"
            )


def torch_persistent_save(obj, filename, async_write: bool = False):
    if async_write or not isinstance(filename, str) or not _is_local(filename):
        return _fairseq_torch_persistent_save(obj, filename, async_write=async_write)
    if isinstance(sys.exc_info()[1], FloatingPointError):  # called from the trainer's except block
        logger.warning("fastdiss: not writing %s: training hit a non-finite value; the checkpoints "
                       "already on disk are the last good ones", filename)
        return
    check_finite_weights(obj, filename)
    atomic_write(filename, lambda f: torch.save(obj, f))


torch_persistent_save.fairseq_original = _fairseq_torch_persistent_save


class AtomicCopyPathManager(PathManager):
    """fairseq's PathManager whose copy() replaces the target atomically (local paths)."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not (_is_local(src_path) and _is_local(dst_path)):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False

        def write(f):
            with open(src_path, "rb") as src:
                shutil.copyfileobj(src, f, length=16 * 1024 * 1024)

        atomic_write(dst_path, write)
        return True


def install() -> None:
    """Idempotent; called when the plugin is imported."""
    checkpoint_utils.torch_persistent_save = torch_persistent_save
    # Only checkpoint_utils' own name is swapped: fairseq's copies elsewhere are untouched.
    checkpoint_utils.PathManager = AtomicCopyPathManager
