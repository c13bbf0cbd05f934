"""Forward (noising) process: embedding normalization, time sampling, q(z_t | z_0)."""

import math
from typing import Optional

import torch

from .schedules import NoiseSchedule


def normalize_embeddings(emb: torch.Tensor) -> torch.Tensor:
    """Rows L2-normalized and scaled by sqrt(d), as DINOISER does.

    Fixed-norm embeddings cannot shrink towards each other to make the diffusion loss
    trivially small (the collapse of jointly-learned embeddings), and every coordinate has
    about unit variance, the same scale as the Gaussian noise.
    """
    d = emb.size(-1)
    return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(d)


def sample_time(
    shape, t_min: float, device=None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """t ~ U(t_min, 1), one value per sentence (shape (B,)) unless a larger shape is given."""
    u = torch.rand(shape, device=device, generator=generator)
    return t_min + (1.0 - t_min) * u


def q_sample(
    z0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, eps: torch.Tensor
) -> torch.Tensor:
    """z_t = alpha(t) z_0 + sigma(t) eps, with t per token (B, n) or per sentence (B,)."""
    if t.dim() == 1:
        t = t[:, None]
    t = t.unsqueeze(-1)  # (B, n, 1) broadcasts over the embedding dimension
    return schedule.alpha(t) * z0 + schedule.sigma(t) * eps
