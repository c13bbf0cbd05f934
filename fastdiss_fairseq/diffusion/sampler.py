"""The K-step sampler: DDIM or re-noising updates, self-conditioning carried from step to step.

Start from z_1 ~ N(0, F^2 I); for k = 0 .. K-1 with t_k = t_end + (1 - t_end) (1 - k / K)^rho
(rho = 1: uniform steps; rho > 1 spends more of them near t_end, rho < 1 near t = 1):
    z0_hat_k = f(z_{t_k}, z_sc, t_k),   z_sc = z0_hat_{k-1} (zeros at k = 0)
    eps_hat  = (z_{t_k} - alpha(t_k) z0_hat_k) / sigma(t_k)
    z_{t_{k+1}} = alpha(t_{k+1}) z0_hat_k + sigma(t_{k+1}) eps_hat      ("ddim")
or, re-noising the estimate with fresh noise eps_k ~ N(0, I) instead of the implied eps_hat,
    z_{t_{k+1}} = alpha(t_{k+1}) z0_hat_k + sigma(t_{k+1}) eps_k          ("renoise")
(sigma carries the noise scale F, schedules.py)
and output the logits of the last z0_hat. t_end is the lowest noise level of the time grid:
0 for a model trained on U(0, 1), its training t_min for one trained on U(t_min, 1), so that
no pass runs at a level the model has never seen. With clamping (Diffusion-LM's trick), the z0_hat
of each update is replaced by the embeddings of its nearest tokens, which keeps the
trajectory on the embedding manifold; the self-conditioning input stays the raw estimate.
The denoiser runs exactly K times
("reuse", the normal sampler) or 2K times ("recompute": the self-conditioning estimate is
made anew at t_k from f(z_{t_k}, 0, t_k), the upper bound of the paper's analysis).
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch

from .schedules import NoiseSchedule

SELF_CONDITIONING_MODES = ("reuse", "recompute", "none")
SAMPLER_UPDATES = ("ddim", "renoise")


@dataclass
class SamplerConfig:
    # The plain sampler of DESIGN.md (DDIM, uniform grid, no clamping) by default. The generator's
    # options (generator.py) set every field, with defaults measured on de-en/valid: renoise,
    # rho 0.5, clamping on.
    steps: int = 5
    clamping: bool = False
    self_conditioning: str = "reuse"
    t_end: float = 0.0
    time_exponent: float = 1.0  # rho of the time grid
    update: str = "ddim"  # how z_{t_{k+1}} is made from z0_hat_k: SAMPLER_UPDATES

    def validate(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"decoding steps must be an integer >= 1, got {self.steps!r}")
        if not 0.0 <= self.t_end < 1.0:
            raise ValueError(f"the sampler's end time t_end must lie in [0, 1), got {self.t_end!r}")
        if not 0.0 < self.time_exponent <= 10.0:
            raise ValueError(f"the time grid's exponent rho must lie in (0, 10], got {self.time_exponent!r}")
        if self.self_conditioning not in SELF_CONDITIONING_MODES:
            raise ValueError(
                f"unknown inference self-conditioning {self.self_conditioning!r}; "
                f"choose one of {SELF_CONDITIONING_MODES}"
            )
        if self.update not in SAMPLER_UPDATES:
            raise ValueError(f"unknown sampler update {self.update!r}; choose one of {SAMPLER_UPDATES}")

    @property
    def step_noise_draws(self) -> int:
        """How many fresh noise draws sample() takes from step_noise: one per update for renoise."""
        return self.steps - 1 if self.update == "renoise" else 0


class SamplerOutput(NamedTuple):
    logits: Optional[torch.Tensor]  # (B, n, V) of the last estimate; None if not asked for
    z0_hat: torch.Tensor  # (B, n, d)
    denoiser_calls: int


def step_times(steps: int, t_end: float = 0.0, device=None, exponent: float = 1.0) -> torch.Tensor:
    """t_0 = 1 > t_1 > ... > t_K = t_end, t_k = t_end + (1 - t_end) (1 - k / K)^rho: K + 1 values.
    The K denoiser passes run at t_0 .. t_{K-1}; t_K is only where the (unused) last update
    would land."""
    remaining = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64) ** exponent
    return (t_end + (1.0 - t_end) * remaining).float()


def ddim_step(z: torch.Tensor, z0_hat: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              schedule: NoiseSchedule) -> torch.Tensor:
    """z_{t_next} = alpha(t_next) z0_hat + sigma(t_next) eps_hat, eps_hat = (z_t - alpha(t) z0_hat) / sigma(t).

    Every candidate of a step shares the level t, so the update is rewritten with two scalar
    coefficients, z_{t_next} = (sigma(t_next) / sigma(t)) z_t + c z0_hat with
    c = alpha(t_next) - sigma(t_next) alpha(t) / sigma(t): two passes over the (B, n, d) latents
    instead of six.
    """
    a_t, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
    a_next, s_next = float(schedule.alpha(t_next)), float(schedule.sigma(t_next))
    ratio = s_next / s_t
    return z0_hat.mul(a_next - ratio * a_t).add_(z, alpha=ratio)


def renoise_step(z0_hat: torch.Tensor, t_next: torch.Tensor, noise: torch.Tensor,
                 schedule: NoiseSchedule) -> torch.Tensor:
    """z_{t_next} = alpha(t_next) z0_hat + sigma(t_next) eps, eps fresh standard normal noise.

    Unlike DDIM, the new latent keeps nothing of z_t but what z0_hat took from it: the noise
    direction of z_1, and the errors it carried into each estimate, are not handed on."""
    return z0_hat.mul(float(schedule.alpha(t_next))).add_(noise, alpha=float(schedule.sigma(t_next)))


def sample(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    z_start: torch.Tensor,
    schedule: NoiseSchedule,
    cfg: SamplerConfig,
    clamp_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    final_logits: bool = True,
    step_noise: Union[torch.Tensor, Callable[[int], torch.Tensor], None] = None,
    on_estimate: Optional[Callable[[int, torch.Tensor], None]] = None,
) -> SamplerOutput:
    """Runs the K-step sampler from z_start = z_1 (already scaled noise), (B, n, d).

    clamp_fn maps an estimate z0_hat (B, n, d) to the embeddings of its nearest tokens (the
    argmax of its rounding logits); needed when clamping.
    final_logits=False leaves the last rounding to the caller (the generator rounds only the
    real, unpadded positions).
    step_noise: the standard normal noise of the "renoise" update, one (B, n, d) draw per update:
    a (K - 1, B, n, d) tensor, or a function called with k = 0 .. K - 2, once each and in order,
    that makes each draw when it is needed (the generator's, which keeps one in memory, not K).
    on_estimate(k, z0_hat_k), if given, is called after each step's pass, k = 0 .. K-1 (the
    generator's --retain-iter-history rounds each estimate to tokens); it must not change z0_hat_k.
    """
    cfg.validate()
    if cfg.clamping and clamp_fn is None:
        raise ValueError("clamping needs clamp_fn")
    draws = cfg.step_noise_draws
    if draws and (step_noise is None or isinstance(step_noise, torch.Tensor) and step_noise.size(0) < draws):
        raise ValueError(f"the renoise update needs step_noise with {draws} draws")
    noise_at = step_noise.__getitem__ if isinstance(step_noise, torch.Tensor) else step_noise
    bsz, n, _ = z_start.shape
    times = step_times(cfg.steps, cfg.t_end, z_start.device, cfg.time_exponent).to(z_start.dtype)
    z = z_start
    z_sc = torch.zeros_like(z_start)
    calls = 0
    z0_hat = logits = None
    for k in range(cfg.steps):
        t = times[k].expand(bsz, n)
        if cfg.self_conditioning == "recompute":
            z_sc = denoise(z, torch.zeros_like(z), t)
            calls += 1
        elif cfg.self_conditioning == "none":
            z_sc = torch.zeros_like(z)
        z0_hat = denoise(z, z_sc, t)
        calls += 1
        if on_estimate is not None:
            on_estimate(k, z0_hat)
        z_sc = z0_hat
        last = k == cfg.steps - 1
        if last:
            break
        z0_update = z0_hat
        if cfg.clamping:
            z0_update = clamp_fn(z0_hat)
        if cfg.update == "renoise":
            z = renoise_step(z0_update, times[k + 1], noise_at(k), schedule)
        else:
            z = ddim_step(z, z0_update, times[k], times[k + 1], schedule)
    logits = logits_fn(z0_hat) if final_logits else None
    return SamplerOutput(logits, z0_hat, calls)
