"""Forward (noising) process: embedding normalization, time sampling, q(z_t | z_0)."""

import math

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


def sample_time(shape, t_min: float, device=None) -> torch.Tensor:
    """t ~ U(t_min, 1) in float32, one value per sentence (shape (B,)) unless a larger shape is
    given. Drawn from torch's global generator, which fairseq seeds per update."""
    u = torch.rand(shape, device=device)
    return t_min + (1.0 - t_min) * u


def q_sample(
    z0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, eps: torch.Tensor
) -> torch.Tensor:
    """z_t = alpha(t) z_0 + sigma(t) eps, with t per token (B, n) or per sentence (B,).

    t stays float32 under --fp16 (half precision would put the levels in [0.5, 1) on a grid of
    2^-11, and bfloat16 on one of 2^-8, off the sampler's float32 grid); only the coefficients
    take the latents' dtype."""
    if t.dim() == 1:
        t = t[:, None]
    t = t.unsqueeze(-1)  # (B, n, 1) broadcasts over the embedding dimension
    return schedule.alpha(t).to(z0.dtype) * z0 + schedule.sigma(t).to(eps.dtype) * eps
