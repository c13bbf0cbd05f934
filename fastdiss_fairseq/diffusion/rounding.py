"""The rounding loss CE(z0_hat E^T / sqrt(d), y) with label smoothing, a block of rows at a time.

Per real token i, with logits l_i = h_i E^T (h_i = z0_hat_i / sqrt(d)) and p_i = softmax(l_i):

    L = (1/N) sum_i [ (1 - eps) (-log p_{i, y_i}) + (eps / V) sum_v (-log p_{i, v}) ]

which is F.cross_entropy(l, y, label_smoothing=eps). Its gradient needs no autograd graph over
the (N, V) logits:

    dL/dl_i = (p_i - q_i) / N,   q_i = (1 - eps) onehot(y_i) + eps / V
    dL/dh = (dL/dl) E,           dL/dE = (dL/dl)^T h

So the forward pass computes, block by block, the loss and these two gradients, and the backward
pass only scales them by the incoming gradient. The naive graph keeps several fresh (N, V)
tensors (logits, log-probabilities, the NLL's scattered gradient, the smoothing term's gradient):
on a CPU each is a new allocation of tens of MB that the OS maps page by page, and measured here
they cost more than the denoiser's own matrix products. A block of 256 rows is a few MB and stays
in cache. Peak memory drops from O(N V) to O(block V).
"""

from typing import NamedTuple, Tuple

import torch

ROUNDING_BLOCK_ROWS = 256


class RoundingLoss(NamedTuple):
    loss: torch.Tensor  # scalar, label-smoothed CE, with grad to h and the table
    nll: torch.Tensor  # scalar, mean -log p(y), no grad (for logging)


def _blocked_loss_and_grads(h, table, target, eps, block_rows, need_grads=True) -> Tuple:
    """(loss, nll, dL/dh, dL/dtable); the gradients are None unless need_grads."""
    n, vocab = h.size(0), table.size(0)
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    nll = torch.zeros((), dtype=torch.float32, device=h.device)
    # The gradients are kept in float32 whatever the model's dtype: they are (p - q) / N, far
    # below float16's range for large N, and are only scaled up by fairseq's loss scale (the
    # incoming gradient) in the backward.
    grad_h = torch.empty_like(h, dtype=torch.float32) if need_grads else None
    grad_table = torch.zeros_like(table, dtype=torch.float32) if need_grads else None
    table32 = table.float() if need_grads else None  # no copy when it already is float32
    for start in range(0, n, block_rows):
        rows = slice(start, min(start + block_rows, n))
        hb, yb = h[rows], target[rows]
        logits = (hb @ table.t()).float()  # (b, V)
        # log_softmax and softmax: one fused pass over the block each
        lprobs = torch.log_softmax(logits, -1)
        nll_b = -lprobs.gather(-1, yb[:, None]).squeeze(-1)
        smooth_b = -lprobs.mean(-1)
        loss += ((1.0 - eps) * nll_b + eps * smooth_b).sum()
        nll += nll_b.sum()
        if not need_grads:
            continue
        grad_logits = torch.softmax(logits, -1)  # p
        grad_logits.sub_(eps / vocab)
        grad_logits.scatter_add_(
            -1, yb[:, None], torch.full((yb.numel(), 1), -(1.0 - eps), device=h.device)
        )
        grad_h[rows] = grad_logits @ table32
        grad_table.addmm_(grad_logits.t(), hb.float())
    scale = 1.0 / max(n, 1)
    if not need_grads:
        return loss * scale, nll * scale, None, None
    return loss * scale, nll * scale, grad_h.mul_(scale), grad_table.mul_(scale)


class _BlockedRoundingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, table, target, eps, block_rows):
        loss, nll, grad_h, grad_table = _blocked_loss_and_grads(
            h.detach(), table.detach(), target, eps, block_rows
        )
        ctx.save_for_backward(grad_h, grad_table)
        ctx.h_dtype, ctx.table_dtype = h.dtype, table.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        grad_h, grad_table = ctx.saved_tensors
        g = grad_loss.float()
        return (grad_h * g).to(ctx.h_dtype), (grad_table * g).to(ctx.table_dtype), None, None, None


def rounding_loss(
    h: torch.Tensor,
    table: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    block_rows: int = ROUNDING_BLOCK_ROWS,
) -> RoundingLoss:
    """h: (N, d) scaled estimates of the real tokens, table: (V, d), target: (N,) token ids.

    Same value and gradients as F.cross_entropy(h @ table.T, target, label_smoothing=eps);
    an empty h gives a zero loss that still backpropagates (zeros).
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label smoothing must lie in [0, 1], got {label_smoothing}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    eps = float(label_smoothing)
    if not (torch.is_grad_enabled() and (h.requires_grad or table.requires_grad)):
        # validation, or a frozen model: the loss alone, no gradient products
        loss, nll, _, _ = _blocked_loss_and_grads(h, table, target, eps, int(block_rows), False)
        return RoundingLoss(loss, nll)
    loss, nll = _BlockedRoundingLoss.apply(h, table, target, eps, int(block_rows))
    return RoundingLoss(loss, nll)
