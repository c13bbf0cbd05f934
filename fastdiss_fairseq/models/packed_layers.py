"""The denoiser's layers at generation over the real positions only.

A generation batch is padded to its longest candidate: with the speed table's model on de-en/test,
24 % of the positions are padding at length beam 1 and 29 % at length beam 5. A pad position never
changes a real one (self-attention masks pad keys; every other operation is per position), so the
projections and feed-forward blocks, nearly all of a layer's multiply-adds, run here on the N real
rows packed together. Only the two attention products see the padded (rows, n) layout, through
torch's scaled_dot_product_attention.

The weights are those of fairseq's TransformerDecoderLayerBase and the arithmetic is the same
(pre- or post-norm, its activation), so outputs differ from the padded path only by float rounding.
Layers built with options this does not implement (head or residual scaling, extra layer norms,
cross-self-attention, bias_kv, bias-free projections) keep the padded path: see `supports_packing`.
"""

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
import torch.nn.functional as F


@dataclass
class PackedPositions:
    """Where the N real positions of a (rows, n) batch lie, found once per generation call.

    flat_index: (N,) indices into the rows * n grid, row-major (a row's positions in order).
    key_bias: (rows, 1, 1, n), 0 at real keys and -inf at pad keys: the self-attention's mask.
    """

    flat_index: torch.Tensor
    key_bias: torch.Tensor
    rows: int
    width: int
    # unpack(..., scratch=True)'s buffers, one per (channels, dtype): zeroed once per batch
    _scratch: Dict[Tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, dtype: torch.dtype) -> "PackedPositions":
        rows, width = mask.shape
        return cls(mask.reshape(-1).nonzero().squeeze(1), attention_bias(mask, dtype), rows, width)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, n, C) -> (N, C)."""
        return x.reshape(self.rows * self.width, -1).index_select(0, self.flat_index)

    def unpack(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """(N, C) -> (rows, n, C), zeros at the pad positions.

        scratch: write into a buffer this batch keeps for the width C and reuses at the next
        scratch unpack of that width, for an input the caller consumes at once (the attention's
        q/k/v). Only real rows are ever written into it, so its pad rows stay zero, and the
        zeroing, a pass over the whole padded grid, is paid once per batch, not at every call.
        """
        if not scratch:
            out = x.new_zeros(self.rows * self.width, x.size(-1))
        else:
            key = (x.size(-1), x.dtype)
            out = self._scratch.get(key)
            if out is None:
                out = self._scratch[key] = x.new_zeros(self.rows * self.width, x.size(-1))
        out.index_copy_(0, self.flat_index, x)
        return out.view(self.rows, self.width, -1)


def supports_packing(layer) -> bool:
    """True when `layer` uses only what `packed_layer_forward` implements."""
    extras = (layer.c_attn, layer.attn_ln, layer.ffn_layernorm, layer.w_resid)
    attns = (layer.self_attn, layer.encoder_attn)
    return (
        all(e is None for e in extras)
        and not layer.cross_self_attention
        and layer.encoder_attn is not None
        and all(a.bias_k is None and not a.add_zero_attn for a in attns)
        # the self-attention's q, k and v run as one product of their stacked weights
        and all(p.bias is not None for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj))
    )


def attention_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(R, n) True at the keys to attend -> (R, 1, 1, n) additive scores: 0 there, -inf elsewhere."""
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, float("-inf"))
    return bias[:, None, None, :]


def _attend(q, k, v, bias):
    """softmax(q k^T / sqrt(hd) + bias) v, as fairseq's MultiheadAttention computes it."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., n, H*hd) -> (..., H, n, hd)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., H, n, hd) -> (..., n, H*hd)."""
    return x.transpose(-3, -2).flatten(-2)


def _self_attention(attn, x, pos: PackedPositions) -> torch.Tensor:
    # q, k and v in one product and one unpacking
    weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    q, k, v = _heads(pos.unpack(F.linear(x, weight, bias), scratch=True), 3 * attn.num_heads).chunk(3, dim=-3)
    return attn.out_proj(pos.pack(_merge_heads(_attend(q, k, v, pos.key_bias))))


def _cross_attention(attn, x, pos: PackedPositions, key, value, source_bias, candidates: int) -> torch.Tensor:
    """key, value: (B, H, S, hd), one per sentence; a sentence's `candidates` rows are
    contiguous, so its queries are stacked into one (C*n)-long sequence against its keys."""
    q = pos.unpack(attn.q_proj(x), scratch=True)  # (B*C, n, dim)
    bsz = key.size(0)
    q = _heads(q.view(bsz, candidates * pos.width, -1), attn.num_heads)
    out = _attend(q, key, value, source_bias)
    return attn.out_proj(pos.pack(_merge_heads(out).reshape(pos.rows, pos.width, -1)))


def packed_layer_forward(layer, x, pos: PackedPositions, key, value, source_bias, candidates: int):
    """One TransformerDecoderLayerBase in eval mode on packed rows x (N, dim) -> (N, dim)."""
    before = layer.normalize_before

    def block(x, norm, fn):
        y = fn(norm(x) if before else x)
        y = layer.residual_connection(y, x)
        return y if before else norm(y)

    x = block(x, layer.self_attn_layer_norm, lambda y: _self_attention(layer.self_attn, y, pos))
    x = block(x, layer.encoder_attn_layer_norm, lambda y: _cross_attention(
        layer.encoder_attn, y, pos, key, value, source_bias, candidates))
    return block(x, layer.final_layer_norm, lambda y: layer.fc2(layer.activation_fn(layer.fc1(y))))
