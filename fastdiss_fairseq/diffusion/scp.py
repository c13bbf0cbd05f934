"""SCP, self-conditioning perturbation.

At inference with K uniform steps, the self-conditioning estimate handed to step t was made
at t + 1/K, from a noisier input. Standard self-conditioning trains with an estimate made at
t itself, better than anything the few-step sampler will ever hand over. SCP makes the
training estimate at t' > t instead:

    t' = min(1, t + delta),   delta ~ U(0, delta_max)   ("uniform")
                              delta = delta_max          ("fixed", e.g. 1/K_target)

Here t is the level of the trained pass, t_theta: per token under MANS (the delta is still
drawn once per sentence). The paper does not publish how t' is drawn; both rules are options.
"""

import torch

SCP_MODES = ("uniform", "fixed")


def perturbed_time(t: torch.Tensor, delta_max: float, mode: str = "uniform") -> torch.Tensor:
    """t' >= t for the self-conditioning pass; one delta per sentence, shared by its tokens.

    t is (B,) or (B, n); the result has t's shape.
    """
    if mode not in SCP_MODES:
        raise ValueError(f"unknown SCP mode {mode!r}; choose one of {SCP_MODES}")
    if not 0.0 <= delta_max <= 1.0:
        raise ValueError(f"SCP delta_max must lie in [0, 1], got {delta_max}")
    if mode == "fixed":
        delta = torch.full((t.size(0),), delta_max, device=t.device, dtype=t.dtype)
    else:
        u = torch.rand((t.size(0),), device=t.device, dtype=t.dtype)
        delta = delta_max * u
    if t.dim() == 2:
        delta = delta[:, None]
    return (t + delta).clamp(max=1.0)
