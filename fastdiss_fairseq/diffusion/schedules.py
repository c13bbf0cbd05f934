"""Noise schedules alpha(t), sigma(t) on continuous time t in [0, 1].

z_t = alpha(t) z_0 + F sigma(t) eps with alpha(t)^2 = alpha_bar(t), sigma(t)^2 = 1 - alpha_bar(t),
and F the noise scale factor of Difformer/DINOISER (F > 1 makes every step noisier, which
keeps the denoiser from reading tokens straight off z_t at small t).
"""

import math
from typing import Callable, Dict

import torch

# alpha_bar is kept inside [ALPHA_BAR_MIN, 1 - ALPHA_BAR_MIN] so that sigma never reaches 0
# (the DDIM update divides by it; the linear and cosine schedules give alpha_bar(0) = 1) and
# alpha never reaches 0 (z_1 keeps no signal in practice).
ALPHA_BAR_MIN = 1e-5


def _sqrt_alpha_bar(t: torch.Tensor, s: float = 1e-4) -> torch.Tensor:
    # Diffusion-LM: alpha_bar = 1 - sqrt(t + s); noise rises quickly near t = 0.
    return 1.0 - torch.sqrt(t + s)


def _cosine_alpha_bar(t: torch.Tensor, s: float = 8e-3) -> torch.Tensor:
    # Nichol & Dhariwal: alpha_bar = cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)).
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def _linear_alpha_bar(t: torch.Tensor, beta_0: float = 0.1, beta_1: float = 20.0) -> torch.Tensor:
    # Continuous limit of DDPM's linear beta schedule: log alpha_bar = -(b0 t + (b1 - b0) t^2 / 2).
    return torch.exp(-(beta_0 * t + 0.5 * (beta_1 - beta_0) * t**2))


SCHEDULES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sqrt": _sqrt_alpha_bar,
    "cosine": _cosine_alpha_bar,
    "linear": _linear_alpha_bar,
}


class NoiseSchedule:
    """alpha(t) and sigma(t) of one named schedule, with the noise scale factor F."""

    def __init__(self, name: str = "sqrt", noise_scale: float = 1.0):
        if name not in SCHEDULES:
            raise ValueError(
                f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}"
            )
        if noise_scale <= 0:
            raise ValueError(f"noise scale must be > 0, got {noise_scale}")
        self.name = name
        self.noise_scale = noise_scale
        self._alpha_bar = SCHEDULES[name]

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clamp(0.0, 1.0)
        return self._alpha_bar(t).clamp(ALPHA_BAR_MIN, 1.0 - ALPHA_BAR_MIN)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar(t).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The *scaled* noise coefficient F * sqrt(1 - alpha_bar(t))."""
        return self.noise_scale * (1.0 - self.alpha_bar(t)).clamp_min(0.0).sqrt()

    def input_scale(self, t: torch.Tensor) -> torch.Tensor:
        """c_in(t) = 1 / sqrt(alpha(t)^2 + sigma(t)^2): the factor that gives z_t unit variance per
        coordinate at every t (z_0's coordinates have unit variance), as EDM preconditions its
        denoiser input. Without it z_t's scale grows from 1 to F with t, and at high noise the
        noise swamps everything else the denoiser's first layer adds to it."""
        return (self.alpha(t) ** 2 + self.sigma(t) ** 2).rsqrt()

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, noise_scale={self.noise_scale})"


def build_schedule(name: str, noise_scale: float = 1.0) -> NoiseSchedule:
    return NoiseSchedule(name, noise_scale)
