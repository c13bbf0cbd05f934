"""Silence the deprecation noise that fairseq 0.12's use of hydra 1.3 prints on every command.

Every fairseq-train, fairseq-generate and fairseq-interactive run (with or without this plugin)
starts with about 30 lines of stderr: hydra's warnings about APIs fairseq calls
(hydra.experimental.initialize, version_base, '# @package _group_', schema matching, the strict
flag) and two DEBUG lines of hydra's. Users cannot act on any of them, and they bury the
one-line errors the plugin promises. A command line fairseq cannot turn into its config adds
fairseq's own ERROR line of all the overrides (thousands of characters) before the plugin's
one-line report of the same failure (errors.py); that line goes too.
"""

import logging
import warnings

# hydra's messages (matched from their start, leading whitespace allowed)
_HYDRA_DEPRECATIONS = (
    r"hydra\.experimental\.\w+\(\) is no longer experimental",
    r"The version_base parameter is not specified",
    r"In '[\w/]+': Usage of deprecated keyword in package header",
    r"'[\w/]+' is validated against ConfigStore schema",
    r"The strict flag in the compose API is deprecated",
)


class _DropComposeError(logging.Filter):
    """fairseq.dataclass.utils logs "Error when composing. Overrides: [...]" and re-raises;
    errors.py reports the exception in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error when composing")


def install() -> None:
    """Idempotent; called when the plugin is imported."""
    for message in _HYDRA_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=r"\s*" + message)
    logging.getLogger("hydra").setLevel(logging.INFO)
    composer = logging.getLogger("fairseq.dataclass.utils")
    if not any(isinstance(f, _DropComposeError) for f in composer.filters):
        composer.addFilter(_DropComposeError())
