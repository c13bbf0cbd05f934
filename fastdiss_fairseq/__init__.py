"""FastDiSS for fairseq: a user-dir plugin (task, model, criterion, few-step generator).

Load it with `fairseq-train --user-dir <this folder>`; importing the package registers
task `fastdiss_translation`, model `fastdiss_transformer` (and its architectures) and
criterion `fastdiss_loss`.
"""

from . import checkpoint_compat  # noqa: F401  (must precede any checkpoint load)
from . import criterions, models, tasks  # noqa: F401

__version__ = "0.1.0"
