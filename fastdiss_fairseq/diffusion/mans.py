"""MANS, model-aware noise scaling: per-token noise levels from the model's own confidence.

From a no-grad pass z0_hat = f(z_t, 0, t):
    d_i = ||z0_hat_i - z0_i||^2             ("distance")
       or -log p(y_i | z0_hat_i)            ("likelihood")
    r_i in [0, 1], 1 = most confident (smallest d_i) within the sentence ("rank" or "minmax")
    t_i = t + lambda (1 - t) r_i, clipped to [t_min, 1]

With granularity "sentence" the same is done one level up: d_b is the mean of d_i over the
real tokens of sentence b, r_b its confidence within the batch, and every position of the
sentence gets t_b = t + lambda (1 - t) r_b. Training then keeps one noise level a sentence,
as the sampler uses, instead of per-token levels it never sees at inference.

Confident tokens get more noise, so their loss keeps a learning signal and the model
learns to denoise from the high noise levels that few-step sampling starts from.
"""

import torch

CONFIDENCE_MEASURES = ("distance", "likelihood")
# the measures computed from the rounding logits of the probe pass (the training pass makes
# them only for these)
MEASURES_NEEDING_LOGITS = ("likelihood",)
CONFIDENCE_NORMALIZATIONS = ("rank", "minmax")
MANS_GRANULARITIES = ("token", "sentence")


def token_error(
    z0_hat: torch.Tensor,
    z0: torch.Tensor,
    measure: str = "distance",
    logits: torch.Tensor = None,
    target: torch.Tensor = None,
) -> torch.Tensor:
    """d_i per token, (B, n): the model's error on token i, so lower means more confident.
    (confidence_rank turns it into r_i, where 1 is the most confident.)"""
    if measure == "distance":
        return ((z0_hat - z0) ** 2).sum(-1)
    if measure == "likelihood":
        if logits is None or target is None:
            raise ValueError("the 'likelihood' confidence measure needs logits and target")
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    raise ValueError(
        f"unknown MANS confidence measure {measure!r}; choose one of {CONFIDENCE_MEASURES}"
    )


def confidence_rank(
    d: torch.Tensor, mask: torch.Tensor, normalization: str = "rank"
) -> torch.Tensor:
    """r_i in [0, 1] within each sentence, 1 = most confident; 0 at padding.

    mask is True at real tokens. A sentence of one token gets r = 0.5 (nothing to compare).
    """
    if normalization not in CONFIDENCE_NORMALIZATIONS:
        raise ValueError(
            f"unknown MANS normalization {normalization!r}; "
            f"choose one of {CONFIDENCE_NORMALIZATIONS}"
        )
    d = d.float()
    n = mask.sum(-1, keepdim=True).float()
    if normalization == "rank":
        # Rank 0 = smallest distance. Padding sorts last by giving it +inf.
        ranks = d.masked_fill(~mask, float("inf")).argsort(-1).argsort(-1).float()
        r = 1.0 - ranks / (n - 1).clamp_min(1.0)
    else:
        big = torch.finfo(d.dtype).max
        d_min = d.masked_fill(~mask, big).min(-1, keepdim=True).values
        d_max = d.masked_fill(~mask, -big).max(-1, keepdim=True).values
        r = 1.0 - (d - d_min) / (d_max - d_min).clamp_min(1e-6)
    r = torch.where(n > 1, r, torch.full_like(r, 0.5))
    return r.masked_fill(~mask, 0.0)


def sentence_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of x (B, n) over each sentence's real tokens (mask True), (B,), in x's dtype."""
    mask_x = mask.to(x.dtype)
    return (x * mask_x).sum(-1) / mask_x.sum(-1).clamp_min(1.0)


def sentence_confidence_rank(
    d: torch.Tensor, mask: torch.Tensor, normalization: str = "rank"
) -> torch.Tensor:
    """r_b in [0, 1] within the batch from each sentence's mean d_i, broadcast to (B, n).

    Every position of sentence b, padding included, gets r_b, so the time built from it is
    one level per sentence. A batch of one sentence gets r = 0.5.
    """
    d_sentence = sentence_mean(d.float(), mask)  # (B,)
    one_row = torch.ones(1, d_sentence.numel(), dtype=torch.bool, device=d.device)
    r = confidence_rank(d_sentence[None, :], one_row, normalization)[0]  # (B,)
    return r[:, None].expand_as(d).contiguous()


def model_aware_time(
    t: torch.Tensor, r: torch.Tensor, strength: float, t_min: float
) -> torch.Tensor:
    """t_i = t + lambda (1 - t) r_i, clipped to [t_min, 1]; t is (B,), r is (B, n)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"MANS strength lambda must lie in [0, 1], got {strength}")
    t = t[:, None]
    return (t + strength * (1.0 - t) * r).clamp(t_min, 1.0)
