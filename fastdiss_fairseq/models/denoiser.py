"""The denoising decoder f(z_t, z_sc, t) -> z0_hat.

A non-causal transformer decoder with cross-attention to the encoder. Its input at each
position is a projection of [z_t ; z_sc] (z_sc: the self-conditioning estimate, zeros when
absent) plus a positional embedding and a *per-token* time embedding, since MANS gives every
token its own noise level.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqDecoder
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import LayerNorm, PositionalEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from .packed_layers import PackedPositions, attention_bias, packed_layer_forward, supports_packing


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t * 1000 (the usual discrete-step scale), any shape -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = (t.float() * 1000.0)[..., None] * freqs
    feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        feats = F.pad(feats, (0, 1))
    return feats


def uniform_copy(encoder_states, encoder_padding_mask, tgt_mask):
    """Source states copied uniformly onto target positions (Gu et al., 2018), B x n x C.

    Target position j of a sentence with n target and m source tokens reads source token
    floor(j m / n). fairseq pads the source on the left or on the right, but always keeps the
    real tokens contiguous, so they start at the first non-pad index.
    """
    states = encoder_states.transpose(0, 1)  # B x T x C
    bsz, src_len, _ = states.shape
    if encoder_padding_mask is None:
        real = torch.ones(bsz, src_len, dtype=torch.bool, device=states.device)
    else:
        real = ~encoder_padding_mask
    m = real.sum(-1, keepdim=True)
    start = real.long().argmax(-1, keepdim=True)
    n = tgt_mask.sum(-1, keepdim=True).clamp_min(1)
    j = torch.arange(tgt_mask.size(1), device=states.device)[None, :]
    index = (start + torch.div(j * m, n, rounding_mode="floor")).clamp(max=src_len - 1)
    return states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.size(-1)))


@dataclass
class InferenceCache:
    """What stays fixed over the K denoiser passes of one generation call.

    attention_state: fairseq incremental state holding every layer's cross-attention keys and
        values, computed once per *sentence* (fairseq's MultiheadAttention lets B x C queries
        attend to B sentences' keys when a sentence's C candidates are contiguous); without it
        every step would recompute them for every candidate. Both layer forwards read them here.
    source_copy: the projected uniform copy of the source (B*C, n, dim), or None.
    packed: where the real positions lie, when the layers run on them alone (packed_layers.py);
        None keeps fairseq's padded layer forward.
    source_bias: (B, 1, 1, S) additive cross-attention scores, -inf at source padding; None
        without source padding.
    """

    attention_state: Dict[str, Dict[str, Optional[torch.Tensor]]]
    source_copy: Optional[torch.Tensor]
    packed: Optional[PackedPositions] = None
    source_bias: Optional[torch.Tensor] = None


class DiffusionDenoiser(FairseqDecoder):
    def __init__(self, args, dictionary, latent_dim: int):
        super().__init__(dictionary)
        cfg = TransformerConfig.from_namespace(args)
        dim = cfg.decoder.embed_dim
        self.latent_dim = latent_dim
        self.padding_idx = dictionary.pad()
        self.max_target_positions = cfg.max_target_positions
        self.input_proj = nn.Linear(2 * latent_dim, dim)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.embed_positions = PositionalEmbedding(
            cfg.max_target_positions, dim, self.padding_idx, learned=cfg.decoder.learned_pos
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            [TransformerDecoderLayerBase(cfg) for _ in range(cfg.decoder.layers)]
        )
        self.layer_norm = LayerNorm(dim) if cfg.decoder.normalize_before else None
        self.output_proj = nn.Linear(dim, latent_dim)
        # Optional NAT-style input: z_t carries nothing at t = 1, so the first step must find
        # the source through cross-attention alone; a uniform copy of the encoder states gives
        # every position a source-aligned start and speeds up early training.
        self.source_copy_proj = (
            nn.Linear(cfg.encoder.embed_dim, dim) if getattr(args, "source_copy_input", False) else None
        )

    def time_embedding(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, n) -> (B, n, dim). The MLP runs once per distinct level: a sampler step (and a
        training pass without MANS) has one level per sentence, not one per token."""
        levels, index = torch.unique(t, return_inverse=True)
        return self.time_mlp(timestep_features(levels, self.time_mlp[0].in_features).to(dtype))[index]

    def inference_cache(self, encoder_out, candidates: int, mask, packed: bool = True) -> InferenceCache:
        """encoder_out of B sentences; each has `candidates` contiguous rows in the B*C batch
        that `mask` (B*C, n) describes. packed: run the layers on the real positions only,
        where every layer allows it."""
        enc = encoder_out["encoder_out"][0]  # S x B x C
        enc_pad = encoder_out["encoder_padding_mask"]
        enc_pad = enc_pad[0] if len(enc_pad) > 0 else None
        src_len, bsz, _ = enc.shape
        state: Dict[str, Dict[str, Optional[torch.Tensor]]] = {}
        for layer in self.layers:
            attn = layer.encoder_attn
            k = attn.k_proj(enc).view(src_len, bsz, attn.num_heads, attn.head_dim).permute(1, 2, 0, 3)
            v = attn.v_proj(enc).view(src_len, bsz, attn.num_heads, attn.head_dim).permute(1, 2, 0, 3)
            attn._set_input_buffer(state, {"prev_key": k.contiguous(), "prev_value": v.contiguous(),
                                           "prev_key_padding_mask": enc_pad})
        source_copy = None
        if self.source_copy_proj is not None:
            rows = torch.arange(bsz, device=enc.device).repeat_interleave(candidates)
            source_copy = self.source_copy_proj(uniform_copy(
                enc.index_select(1, rows), None if enc_pad is None else enc_pad.index_select(0, rows), mask,
            ))
        if not (packed and all(supports_packing(layer) for layer in self.layers)):
            return InferenceCache(state, source_copy)
        source_bias = None if enc_pad is None else attention_bias(~enc_pad, enc.dtype)
        return InferenceCache(state, source_copy, PackedPositions.from_mask(mask, enc.dtype), source_bias)

    def forward(self, z_t, z_sc, t, mask, encoder_out, cache: Optional[InferenceCache] = None):
        """z_t, z_sc: (B, n, d); t: (B, n); mask: (B, n) True at real tokens -> z0_hat (B, n, d).

        With `cache` (generation), encoder_out is the sentence-level one the cache was built from."""
        # PositionalEmbedding numbers positions from the non-pad entries of a token tensor.
        pseudo_tokens = torch.where(
            mask, torch.full_like(mask, self.padding_idx + 1, dtype=torch.long),
            torch.full_like(mask, self.padding_idx, dtype=torch.long),
        )
        x = self.input_proj(torch.cat([z_t, z_sc], dim=-1))
        x = x + self.embed_positions(pseudo_tokens)
        x = x + self.time_embedding(t, x.dtype)
        enc = encoder_out["encoder_out"][0]
        enc_pad = encoder_out["encoder_padding_mask"]
        enc_pad = enc_pad[0] if len(enc_pad) > 0 else None
        if cache is not None and cache.source_copy is not None:
            x = x + cache.source_copy
        elif self.source_copy_proj is not None:
            x = x + self.source_copy_proj(uniform_copy(enc, enc_pad, mask))
        if cache is not None and cache.packed is not None and not self.training:
            # generation: the packed layers apply no dropout, so never while training
            return self._forward_packed(x, cache)
        x = self.dropout(x).transpose(0, 1)  # T x B x C, fairseq's layer layout

        self_pad = ~mask
        state = cache.attention_state if cache is not None else None
        for layer in self.layers:
            if state is not None:
                # The incremental state is there for the cached cross-attention keys; the
                # self-attention must see the whole sequence afresh at every step.
                layer.self_attn._set_input_buffer(state, {})
            x, _, _ = layer(
                x, enc, enc_pad, incremental_state=state,
                self_attn_mask=None, self_attn_padding_mask=self_pad,
            )
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_proj(x.transpose(0, 1))

    def _forward_packed(self, x, cache: InferenceCache):
        """The layers on the real positions of x (B*C, n, dim) alone; zeros at the pad positions."""
        pos = cache.packed
        h = pos.pack(x)
        for layer in self.layers:
            # the (B, H, S, hd) keys and values inference_cache stored for fairseq's padded path
            source = layer.encoder_attn._get_input_buffer(cache.attention_state)
            key, value = source["prev_key"], source["prev_value"]
            h = packed_layer_forward(layer, h, pos, key, value, cache.source_bias, pos.rows // key.size(0))
        if self.layer_norm is not None:
            h = self.layer_norm(h)
        return pos.unpack(self.output_proj(h))

    def max_positions(self):
        return self.max_target_positions
