"""FastDiSS for fairseq: a user-dir plugin (task, model, criterion, few-step generator).

Load it with `fairseq-train --user-dir <this folder>`; importing the package registers
task `fastdiss_translation`, model `fastdiss_transformer` (and its architectures) and
criterion `fastdiss_loss`.
"""

from . import checkpoint_compat  # noqa: F401  (must precede any checkpoint load)
from . import atomic_checkpoint, clean_exit, data_parallel, errors, hydra_noise, interactive_input, resume_check
from . import criterions, models, tasks  # noqa: F401

# What importing the plugin changes in fairseq, and why (each module's docstring says more):
errors.install_excepthook()  # FastDiSSError / FloatingPointError: one line, no traceback
atomic_checkpoint.install()  # checkpoints are written atomically, never with NaN/inf weights
resume_check.install()  # resuming with changed SCP/MANS/loss options logs a warning
data_parallel.install()  # several ranks: each resumes from the file and draws its own noise
interactive_input.install()  # fairseq-interactive: non-UTF-8 input is replaced, not fatal
clean_exit.install()  # fairseq-train stopped mid-epoch exits 0, not SIGABRT (prefetch thread)
hydra_noise.install()  # no hydra deprecation warnings burying the one-line errors

__version__ = "0.1.0"
