"""Make fairseq checkpoints load under torch >= 2.6, where torch.load defaults to weights_only.

fairseq 0.12 checkpoints pickle an argparse.Namespace (the training args) and, depending on
the metrics tracked, numpy scalars and small arrays (best scores, --eval-bleu counts). With weights_only=True the stock
fairseq-generate/-interactive then fail with "Weights only load failed". Rather than turn
safe loading off for the whole process, we allowlist exactly these plain-data types, which
carry no code. The plugin is imported (--user-dir) before any checkpoint is read.
"""

import argparse

import numpy as np
import torch


def _numpy_scalar_globals():
    # numpy 2 pickles through numpy._core.multiarray (numpy.core before 2.0): `scalar` for
    # scalars, `_reconstruct` for arrays.
    found = []
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        for name in ("scalar", "_reconstruct"):
            try:
                found.append(getattr(__import__(module, fromlist=[name]), name))
            except (ImportError, AttributeError):
                pass
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return found + [np.ndarray, np.dtype] + dtypes


SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace] + _numpy_scalar_globals()

if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals(SAFE_CHECKPOINT_GLOBALS)
