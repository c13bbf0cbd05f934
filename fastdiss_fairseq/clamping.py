"""Clamping for the sampler: each intermediate estimate z0_hat -> the embedding of its argmax token.

The argmax over the whole vocabulary costs (positions x V x d) multiply-adds per step: at an
8k vocabulary and d = 256, about half a denoiser pass, and it runs at every step but the last.
With a shortlist of k words (--clamping-shortlist k), only the first clamp searches the whole
vocabulary; it keeps, for each candidate, the words among the top k at any of its positions,
and later clamps search only those (a few dozen to a few hundred words per candidate). Which
words a candidate is made of is decided early, where the steps in between mostly reorder and
refine them; a word outside the shortlist can still appear in the output, because the final
rounding (the generator's, not this) always searches the whole vocabulary.
"""

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from fastdiss_fairseq.vocab_search import max_last, topk_last

# Rows of z0_hat rounded together. A (rows, V) block of logits small enough to stay in the CPU
# cache between the matmul, the log_softmax and the max is about 1.7x faster than one
# (positions, V) tensor (a batch of 100 sentences x 5 lengths x 8k words is 300 MB).
ROUNDING_ROWS = 256


def round_rows(z0_hat: torch.Tensor, logits_fn, scores: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(P, d) estimates -> their argmax tokens (P,) and log p(argmax) (P,) under logits_fn
    (None with scores=False: clamping needs only the tokens, not the log_softmax)."""
    tokens, token_scores = [], []
    for rows in z0_hat.split(ROUNDING_ROWS):
        logits = logits_fn(rows).float()
        if scores:
            top, index = max_last(torch.log_softmax(logits, dim=-1))
            token_scores.append(top)
        else:
            # the first maximum, as argmax(-1), whose CPU reduction is slower still
            index = max_last(logits)[1]
        tokens.append(index)
    return torch.cat(tokens), torch.cat(token_scores) if scores else None


def top_k_rows(z0_hat: torch.Tensor, logits_fn, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(P, d) estimates -> their k largest rounding logits and those words' ids, (P, k) each,
    largest first."""
    values, indices = zip(*(topk_last(logits_fn(rows), k) for rows in z0_hat.split(ROUNDING_ROWS)))
    return torch.cat(values), torch.cat(indices)


def candidate_shortlists(top: torch.Tensor, allowed: torch.Tensor, row_of: torch.Tensor,
                         rows: int, vocab: int) -> torch.Tensor:
    """(P, k) top words of P positions, allowed (P, k) which of them count (a special symbol's
    logit is -inf: never), row_of (P,) the candidate of each -> (rows, S) word ids: row r holds
    the union of its positions' allowed top words, its first word repeated as filler up to S,
    the largest union's size (a repeated word cannot change an argmax)."""
    member = torch.zeros(rows, vocab, dtype=torch.bool, device=top.device)
    member[row_of[:, None].expand_as(top)[allowed], top[allowed]] = True
    size = int(member.sum(-1).max())
    words = member.to(torch.uint8).topk(size, dim=-1).indices  # members first, in no set order
    return torch.where(member.gather(-1, words), words, words[:, :1])


class TokenClamp:
    """clamp_fn of the sampler for one batch of candidates.

    table: (V, d) word latents (the model's normalized embeddings); mask: (rows, n) real
    positions; logits_fn: (P, d) -> (P, V) rounding logits with special symbols at -inf;
    shortlist_logits_fn: (rows, n, d), (rows, S, d) -> (rows, n, S) the same logits on a
    per-candidate subset of the table; shortlist: k, 0 searches the whole vocabulary every time.
    """

    def __init__(self, table: torch.Tensor, mask: torch.Tensor, logits_fn: Callable,
                 shortlist_logits_fn: Callable, shortlist: int = 0):
        self.table = table
        self.mask = mask
        self.logits_fn = logits_fn
        self.shortlist_logits_fn = shortlist_logits_fn
        self.k = min(shortlist, table.size(0))
        # Flat indices of the real and the pad positions of the (rows * n) grid, found once:
        # index_select / index_copy_ with them are about twice as fast on the CPU as boolean-mask
        # indexing and torch.where over the (rows, n, d) latents, at every clamp of the batch.
        flat_mask = mask.reshape(-1)
        self.real_index = flat_mask.nonzero().squeeze(1)
        self.pad_index = flat_mask.logical_not().nonzero().squeeze(1)
        self.words: Optional[torch.Tensor] = None  # (rows, S), after the first clamp
        self.word_latents: Optional[torch.Tensor] = None  # table[words], (rows, S, d), gathered once

    def __call__(self, z0_hat: torch.Tensor) -> torch.Tensor:
        if self.words is not None:
            return self._clamp_to_shortlist(z0_hat)
        # padding is never read: only real positions are searched
        real = z0_hat.reshape(-1, z0_hat.size(-1)).index_select(0, self.real_index)
        if self.k:
            values, top = top_k_rows(real, self.logits_fn, self.k)
            row_of = self.mask.nonzero()[:, 0]
            self.words = candidate_shortlists(top, values > float("-inf"), row_of, self.mask.size(0),
                                              self.table.size(0))
            self.word_latents = self.table[self.words]
            tokens = top[:, 0]
        else:
            tokens = round_rows(real, self.logits_fn, scores=False)[0]
        clamped = z0_hat.clone(memory_format=torch.contiguous_format)  # for the flat view
        clamped.view(-1, clamped.size(-1)).index_copy_(0, self.real_index, F.embedding(tokens, self.table))
        return clamped

    def _clamp_to_shortlist(self, z0_hat: torch.Tensor) -> torch.Tensor:
        logits = self.shortlist_logits_fn(z0_hat, self.word_latents)  # (rows, n, S)
        clamped = F.embedding(self.words.gather(-1, logits.max(-1).indices), self.table)
        # padding is left as it was (a pad position's search result is discarded)
        flat = z0_hat.reshape(-1, z0_hat.size(-1))
        clamped.view(-1, flat.size(-1)).index_copy_(0, self.pad_index, flat.index_select(0, self.pad_index))
        return clamped
