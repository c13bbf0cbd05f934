"""One training forward of FastDiSS: noise levels, self-conditioning input, trained pass.

Order in one update (DESIGN.md section 3):
  1. sample t ~ U(t_min, 1) per sentence and eps ~ N(0, I);
  2. MANS (optional): a no-grad pass f(z_t, 0, t) measures per-token confidence and raises
     the noise of confident tokens (or sentences), giving t_theta (otherwise t_theta = t);
  3. self-conditioning with probability p: a no-grad pass gives z_sc; with SCP it runs at
     t' > t_theta on a fresh z_{t'}, otherwise at t_theta on the trained z_t;
  3a. (optional, not in the paper) the SCP pass is itself self-conditioned on an estimate made
     at t'' > t' (drawn by the same rule), one more no-grad pass;
  3b. (optional, not in the paper) with probability q per sentence, the trained latent is
     re-made around the estimate instead of z_0: z_t = alpha(t_theta) clamp(z_sc) + sigma eps;
  4. the trained pass z0_hat = f(z_{t_theta}, z_sc, t_theta).
SCP and MANS change only the noise levels and the self-conditioning input, never the loss.

Why 3a: every estimate the sampler hands over after its first pass was itself made with the
estimate before it, so it is better than what a pass without self-conditioning makes. A model
trained only on such unconditioned estimates learns how little they can be trusted, and may
under-use the better ones it gets at inference. (Measured at the CPU budget: no gain, a small
loss at 2 and 5 steps; docs/measurements.md, forty-second session.)

Why 3b: after its first pass the renoise sampler never hands the denoiser alpha z_0 + sigma eps;
it hands alpha clamp(z0_hat_prev) + sigma eps with z_sc = z0_hat_prev, whose signal is the
previous estimate, errors included. A model trained only on z_0-centred latents learns to trust
the signal in z_t, which at inference copies the previous estimate's errors forward; 3b trains
the step the sampler actually takes, so each pass must correct its input from the source.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

from .mans import (
    CONFIDENCE_MEASURES,
    CONFIDENCE_NORMALIZATIONS,
    MANS_GRANULARITIES,
    MEASURES_NEEDING_LOGITS,
    confidence_rank,
    model_aware_time,
    sentence_confidence_rank,
    sentence_mean,
    token_error,
)
from .noising import q_sample, sample_time
from .schedules import NoiseSchedule
from .scp import SCP_MODES, perturbed_time

# denoise(z_t, z_sc, t) -> z0_hat; z_t, z_sc: (B, n, d), t: (B, n)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainingNoiseConfig:
    """The noise options of one training pass. Each field is also an option of the criterion
    `fastdiss_loss`, of the same name, which copies them all (a new field here needs its option
    there, with a help text; a test checks both lists match)."""

    t_min: float = 0.0
    self_condition_prob: float = 0.5
    scp: bool = False
    scp_mode: str = "uniform"
    scp_delta_max: float = 0.25
    scp_shared_noise: bool = False  # z_{t'} from z_t's eps instead of fresh noise
    scp_chain: bool = False  # step 3a
    mans: bool = False
    mans_strength: float = 0.25
    mans_measure: str = "distance"
    mans_normalization: str = "rank"
    mans_granularity: str = "sentence"
    mans_model_time: str = "token"
    estimate_input_prob: float = 0.0  # q of step 3b

    def validate(self) -> None:
        """Rejects unknown choices and levels outside [0, 1]. (The criterion checks its options
        first, with the command line's names in its messages.)"""
        choices = {"scp_mode": SCP_MODES, "mans_measure": CONFIDENCE_MEASURES,
                   "mans_normalization": CONFIDENCE_NORMALIZATIONS,
                   "mans_granularity": MANS_GRANULARITIES, "mans_model_time": MANS_GRANULARITIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        for name in ("t_min", "self_condition_prob", "scp_delta_max", "mans_strength", "estimate_input_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


def sentence_mean_level(levels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of per-token levels (B, n) over each sentence's real tokens, broadcast to (B, n)."""
    return sentence_mean(levels, mask)[:, None].expand_as(levels)


def estimate_centred_latent(z_t, z_sc, t_theta, eps, schedule, prob, clamp_fn=None):
    """Step 3b: each sentence's z_t, with probability prob, replaced by
    alpha(t_theta) clamp(z_sc) + sigma(t_theta) eps (the same eps, so only the centre moves)."""
    chosen = torch.rand((z_t.size(0),), device=z_t.device) < prob
    if not chosen.any():
        return z_t
    with torch.no_grad():
        centre = clamp_fn(z_sc) if clamp_fn is not None else z_sc
    return torch.where(chosen[:, None, None], q_sample(centre, t_theta, schedule, eps), z_t)


class TrainingPassOutput(NamedTuple):
    z0_hat: torch.Tensor  # (B, n, d), with grad
    t: torch.Tensor  # (B,) the sampled level
    t_theta: torch.Tensor  # (B, n) the trained per-token level (= t without MANS)
    t_sc: Optional[torch.Tensor]  # (B, n) level of the self-conditioning pass, None if unused


def diffusion_training_pass(
    denoise: Denoiser,
    z0: torch.Tensor,
    mask: torch.Tensor,
    schedule: NoiseSchedule,
    cfg: TrainingNoiseConfig,
    logits_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    target: Optional[torch.Tensor] = None,
    clamp_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> TrainingPassOutput:
    """Runs steps 1-4 above. mask (B, n) is True at real target tokens. clamp_fn maps an
    estimate (B, n, d) to its nearest tokens' embeddings, as the sampler's clamping does (step
    3b; without it the raw estimate is re-noised)."""
    cfg.validate()
    bsz, n, _ = z0.shape
    t = sample_time((bsz,), cfg.t_min, device=z0.device)  # float32 whatever z0's dtype
    eps = torch.randn_like(z0)
    zeros = torch.zeros_like(z0)
    t_theta = t[:, None].expand(bsz, n)

    if cfg.mans:
        with torch.no_grad():
            probe = denoise(q_sample(z0, t_theta, schedule, eps), zeros, t_theta)
            logits = (
                logits_fn(probe)
                if cfg.mans_measure in MEASURES_NEEDING_LOGITS and logits_fn is not None
                else None
            )
            d = token_error(probe, z0, cfg.mans_measure, logits, target)
            if cfg.mans_granularity == "sentence":
                r = sentence_confidence_rank(d, mask, cfg.mans_normalization)
            else:
                r = confidence_rank(d, mask, cfg.mans_normalization)
            t_theta = model_aware_time(t, r, cfg.mans_strength, cfg.t_min)

    z_t = q_sample(z0, t_theta, schedule, eps)

    # What the denoiser is told about a pass's noise. With per-token MANS levels, telling it
    # each token's level also tells it which tokens it denoised best (the level is a function
    # of that rank), a hint it never gets at inference; "sentence" tells it the mean level.
    def model_time(levels):
        if cfg.mans and cfg.mans_model_time == "sentence":
            return sentence_mean_level(levels, mask)
        return levels

    z_sc, t_sc = zeros, None
    if cfg.self_condition_prob > 0 and torch.rand(()).item() < cfg.self_condition_prob:
        with torch.no_grad():
            z_sc_of_sc = zeros  # the self-conditioning pass's own self-conditioning input
            if cfg.scp:
                def scp_latent(level):  # z_0 noised at an SCP level, fresh or shared noise
                    return q_sample(z0, level, schedule,
                                    eps if cfg.scp_shared_noise else torch.randn_like(z0))

                t_sc = perturbed_time(t_theta, cfg.scp_delta_max, cfg.scp_mode)
                z_sc_input = scp_latent(t_sc)
                if cfg.scp_chain:  # step 3a, at t'' > t'
                    t_chain = perturbed_time(t_sc, cfg.scp_delta_max, cfg.scp_mode)
                    z_sc_of_sc = denoise(scp_latent(t_chain), zeros, model_time(t_chain))
            else:
                t_sc, z_sc_input = t_theta, z_t
            z_sc = denoise(z_sc_input, z_sc_of_sc, model_time(t_sc)).detach()
        if cfg.estimate_input_prob > 0:
            # outside no_grad: the sentences that keep their z_0-centred z_t keep its gradient
            # into the embedding table
            z_t = estimate_centred_latent(z_t, z_sc, t_theta, eps, schedule,
                                          cfg.estimate_input_prob, clamp_fn)

    z0_hat = denoise(z_t, z_sc, model_time(t_theta))
    return TrainingPassOutput(z0_hat, t, t_theta, t_sc)
