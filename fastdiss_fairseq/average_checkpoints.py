"""Average the weights of several fairseq checkpoints into one (checkpoint averaging).

fairseq ships scripts/average_checkpoints.py in its source tree only, not in the pip package,
so the recipes use this module instead. The output is an ordinary fairseq checkpoint: the
newest input with its "model" weights replaced by the element-wise mean, so fairseq-generate,
fairseq-interactive and checkpoint_utils load it like any other (also under torch's
weights_only loading, since nothing but the weights changes).

    python -m fastdiss_fairseq.average_checkpoints --inputs CKPT_DIR \
        --num-update-checkpoints 5 --output CKPT_DIR/checkpoint_avg5.pt
    python -m fastdiss_fairseq.average_checkpoints --inputs a.pt b.pt --output avg.pt
"""

import argparse
import json
import os
import re
import sys
from typing import Dict, List, Tuple

import torch

# Registers the plain-data types fairseq pickles into checkpoints as safe for torch.load.
from . import checkpoint_compat  # noqa: F401
from .errors import checkpoint_load_problem

UPDATE_CHECKPOINT = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")  # checkpoint_EPOCH_UPDATES.pt
EPOCH_CHECKPOINT = re.compile(r"^checkpoint(\d+)\.pt$")  # checkpointEPOCH.pt


class AverageError(Exception):
    """Bad input; reported as one line."""


def last_checkpoints(folder: str, n: int, by: str, allow_fewer: bool = False) -> List[str]:
    """The n newest update (by="update") or epoch (by="epoch") checkpoints in folder, newest first."""
    if not os.path.isdir(folder):
        raise AverageError(f"{folder} is not a folder")
    pattern = UPDATE_CHECKPOINT if by == "update" else EPOCH_CHECKPOINT
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(folder) if (m := pattern.match(name))),
        reverse=True,
    )
    if not found:
        kind = "checkpoint_E_U.pt (--save-interval-updates)" if by == "update" else "checkpointE.pt"
        raise AverageError(f"no {kind} files in {folder}")
    if len(found) < n and not allow_fewer:
        raise AverageError(f"asked for the last {n} {by} checkpoints but {folder} has only {len(found)} "
                           f"(pass --allow-fewer to average those)")
    return [os.path.join(folder, name) for _, name in found[:n]]


def load(path: str) -> Dict:
    try:
        # torch's default (weights_only on torch >= 2.6): checkpoint_compat allowlists what
        # fairseq stores besides tensors.
        state = torch.load(path, map_location="cpu")
    except FileNotFoundError:
        raise AverageError(f"{path} does not exist") from None
    except Exception as e:  # a truncated file, or not a checkpoint at all
        raise AverageError(f"cannot load {path}: {checkpoint_load_problem(e)[:200]}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise AverageError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def num_updates(state: Dict):
    history = state.get("optimizer_history") or [{}]
    return history[-1].get("num_updates")


def average(paths: List[str]) -> Tuple[Dict, List]:
    """The mean weights of the checkpoints in paths, and the update count of each.

    The result is the input with the most updates (its training state, config and optimizer
    history) with its "model" replaced by the mean: fairseq loads it like that checkpoint.
    Floating-point tensors are summed in float64 and cast back to their own dtype; other
    tensors (integer buffers) are not averaged and keep the value of that newest input.
    """
    if not paths:
        raise AverageError("no checkpoints to average")
    sums, keys, newest, updates = None, None, None, []
    for path in paths:
        state = load(path)
        updates.append(num_updates(state))
        params = state["model"]
        if sums is None:
            keys = list(params.keys())
            # copy=True: tied embeddings appear under several keys as one tensor, and each
            # key needs its own accumulator.
            sums = {k: v.to(torch.float64, copy=True) for k, v in params.items() if torch.is_floating_point(v)}
        else:
            if list(params.keys()) != keys:
                differ = sorted(set(keys) ^ set(params.keys()))
                example = f"e.g. {differ[0]}" if differ else "same names, another order"
                raise AverageError(f"{path} has other parameters than {paths[0]} ({example}); "
                                   f"only checkpoints of one model can be averaged")
            for k, total in sums.items():
                if params[k].shape != total.shape:
                    raise AverageError(f"{k}: shape {tuple(params[k].shape)} in {path} "
                                       f"but {tuple(total.shape)} in {paths[0]}")
                total.add_(params[k].double())
        if newest is None or (updates[-1] or 0) > (num_updates(newest) or 0):
            newest = state
    newest["model"] = {
        k: sums[k].div_(len(paths)).to(v.dtype) if k in sums else v for k, v in newest["model"].items()
    }
    return newest, updates


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", nargs="+", required=True,
                   help="checkpoint files to average, or one folder with --num-update-checkpoints / --num-epoch-checkpoints")
    p.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--num-update-checkpoints", type=int,
                       help="average the last N checkpoint_E_U.pt files of the --inputs folder")
    group.add_argument("--num-epoch-checkpoints", type=int,
                       help="average the last N checkpointE.pt files of the --inputs folder")
    p.add_argument("--allow-fewer", action="store_true",
                   help="average the checkpoints there are when the folder holds fewer than N "
                        "(a time-bounded run may save fewer than planned)")
    p.add_argument("--info", help="also write a JSON file naming the averaged checkpoints and their updates")
    args = p.parse_args(argv)

    try:
        # "is not None", not "or": --num-update-checkpoints 0 must reach the range check
        n = args.num_update_checkpoints if args.num_update_checkpoints is not None else args.num_epoch_checkpoints
        if n is not None:
            if n < 1:
                raise AverageError(f"the number of checkpoints must be >= 1, got {n}")
            if len(args.inputs) != 1:
                raise AverageError("with --num-update-checkpoints/--num-epoch-checkpoints, --inputs is one folder")
            by = "update" if args.num_update_checkpoints is not None else "epoch"
            paths = last_checkpoints(args.inputs[0], n, by, args.allow_fewer)
        else:
            paths = list(args.inputs)
            if any(os.path.isdir(x) for x in paths):
                raise AverageError("--inputs is a folder: say how many checkpoints with --num-update-checkpoints N")
        state, updates = average(paths)
    except AverageError as e:
        sys.exit(f"average_checkpoints: error: {e}")

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)  # never leave a half-written checkpoint under the final name
    print(f"average_checkpoints: averaged {len(paths)} checkpoints into {args.output}: "
          + ", ".join(os.path.basename(x) for x in paths), flush=True)
    if args.info:
        with open(args.info, "w") as f:
            json.dump({"output": args.output, "inputs": paths, "num_updates": updates}, f, indent=2)


if __name__ == "__main__":
    main()
