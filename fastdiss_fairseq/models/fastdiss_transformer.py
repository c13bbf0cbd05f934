"""fairseq model `fastdiss_transformer`: encoder, denoising decoder, tied rounding, length head.

The model owns what inference also needs (the noise schedule, the latent space, the length
head). How training noise is drawn (self-conditioning, SCP, MANS) is the criterion's
choice and reaches `forward` as a `TrainingNoiseConfig`.
"""

import math
from argparse import Namespace

import torch
import torch.nn as nn
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture
from omegaconf import OmegaConf

from ..clamping import TokenClamp
from ..diffusion import (
    TrainingNoiseConfig,
    build_schedule,
    diffusion_training_pass,
    normalize_embeddings,
    SCHEDULES,
)
from ..errors import FastDiSSError
from ..safeguards import check_fastdiss_task
from .denoiser import DiffusionDenoiser


@register_model("fastdiss_transformer")
class FastDiSSTransformerModel(TransformerModel):
    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--noise-schedule", choices=sorted(SCHEDULES),
                            help="alpha_bar(t) schedule of the diffusion (default: sqrt)")
        parser.add_argument("--noise-scale", type=float,
                            help="noise scale factor F: z_t = alpha z_0 + F sigma eps (default: 1.0)")
        parser.add_argument("--length-classes", type=int,
                            help="number of classes of the length head (default: 256)")
        parser.add_argument("--pred-length-offset", action="store_true",
                            help="predict the target length as an offset from the source length")
        parser.add_argument("--source-copy-input", action="store_true",
                            help="add a uniform copy of the encoder states to the denoiser input "
                                 "(NAT-style; faster early training)")
        parser.add_argument("--input-scaling", action="store_true",
                            help="scale z_t by c_in(t) = 1/sqrt(alpha^2 + sigma^2) before the denoiser "
                                 "(unit-variance input at every noise level)")

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.schedule = build_schedule(args.noise_schedule, args.noise_scale)
        self.length_classes = args.length_classes
        self.pred_length_offset = args.pred_length_offset
        self.input_scaling = args.input_scaling
        self.length_head = nn.Linear(args.encoder_embed_dim, args.length_classes)
        self.padding_idx = decoder.dictionary.pad()
        self.latent_dim = args.decoder_embed_dim
        # The lowest noise level the model is trained at (the criterion's --t-min, written by
        # every training forward): the generator ends its time grid there by default, since
        # the model has never seen a lower level. Saved with the checkpoint.
        self.register_buffer("trained_t_min", torch.zeros(()))
        # Special symbols are never content: the sampler must not emit them.
        d = decoder.dictionary
        # Ids, not a (V,) mask: content_logits fills these few columns in place.
        self.register_buffer("special_symbol_ids", torch.tensor(sorted({d.pad(), d.bos(), d.eos()})),
                             persistent=False)

    @classmethod
    def build_model(cls, args, task):
        if not isinstance(args, Namespace):
            # fairseq-hydra-train hands a DictConfig; fairseq's own conversion of it keeps only
            # the transformer's fields, so the FastDiSS options would be lost.
            args = Namespace(**OmegaConf.to_container(args, resolve=True))
        fastdiss_base_architecture(args)
        if not args.noise_scale > 0:
            raise FastDiSSError(f"--noise-scale must be > 0, got {args.noise_scale}")
        if args.length_classes < 1:
            raise FastDiSSError(f"--length-classes must be an integer >= 1, got {args.length_classes}")
        check_fastdiss_task(task)  # e.g. fairseq-generate without --task fastdiss_translation
        if task.source_dictionary != task.target_dictionary:
            raise FastDiSSError(
                "fastdiss_transformer ties source, target and output embeddings: binarize the "
                "data with fairseq-preprocess --joined-dictionary"
            )
        return super().build_model(args, task)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="checkpoint_best.pt", data_name_or_path=".",
                        bpe="subword_nmt", bpe_codes=None, tokenizer="moses", **kwargs):
        """A hub object whose translate(sentences, decoding_steps=K) works on raw text (hub_interface.py)."""
        from ..hub_interface import from_pretrained

        return from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,
                               bpe=bpe, bpe_codes=bpe_codes, tokenizer=tokenizer, **kwargs)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        decoder = DiffusionDenoiser(args, tgt_dict, latent_dim=args.decoder_embed_dim)
        decoder.embed_tokens = embed_tokens  # shared table: z_0 = E[y], logits = z0_hat E^T
        return decoder

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        # checkpoints written before trained_t_min existed were all trained on U(0, 1)
        state_dict.setdefault(f"{name}.trained_t_min" if name else "trained_t_min", torch.zeros(()))

    # ---- pieces used by training and by the generator -------------------------------------

    def latent_table(self) -> torch.Tensor:
        """E, the normalized embedding table (V, d) that defines the diffusion space."""
        return normalize_embeddings(self.decoder.embed_tokens.weight)

    def embed_target(self, tokens: torch.Tensor, table: torch.Tensor = None) -> torch.Tensor:
        return nn.functional.embedding(tokens, self.latent_table() if table is None else table)

    def rounding_logits(self, z0_hat: torch.Tensor, table: torch.Tensor = None) -> torch.Tensor:
        """table: latent_table(), when the caller already has it (it is the same for every
        pass of one forward or one generation call), or (B, S, d) rows of it per sequence of a
        (B, n, d) z0_hat (the clamping shortlist): then (B, n, S) logits."""
        # logits = z0_hat E^T / sqrt(d): both have norm about sqrt(d), so the 1/sqrt(d)
        # temperature keeps the logits in +-sqrt(d) instead of +-d. The scale is applied to
        # z0_hat (n x d), not to the n x V product.
        table = self.latent_table() if table is None else table
        return self.rounding_input(z0_hat) @ table.transpose(-1, -2)

    def content_logits(self, z0_hat: torch.Tensor, table: torch.Tensor = None) -> torch.Tensor:
        """rounding_logits with the special symbols at -inf: the logits of every rounding to an
        output token (the sampler's clamping and final rounding, the training clamp of
        --estimate-input-prob), so a special symbol is never chosen as content."""
        # in place, a few columns: the logits are a fresh tensor, (positions, V) or larger
        return self.rounding_logits(z0_hat, table).index_fill_(-1, self.special_symbol_ids, float("-inf"))

    def rounding_input(self, z0_hat: torch.Tensor) -> torch.Tensor:
        """h = z0_hat / sqrt(d): the rounding temperature, shared by the logits at inference
        and the blocked training loss (diffusion/rounding.py)."""
        return z0_hat / math.sqrt(self.latent_dim)

    def denoise(self, z_t, z_sc, t, mask, encoder_out, cache=None):
        if self.input_scaling:
            z_t = z_t * self.schedule.input_scale(t).unsqueeze(-1).to(z_t.dtype)
        return self.decoder(z_t, z_sc, t, mask, encoder_out, cache=cache)

    def length_logits(self, encoder_out) -> torch.Tensor:
        enc = encoder_out["encoder_out"][0].transpose(0, 1)  # B x T x C
        pad = encoder_out["encoder_padding_mask"]
        if len(pad) > 0:
            keep = (~pad[0]).unsqueeze(-1).type_as(enc)
            pooled = (enc * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        else:
            pooled = enc.mean(1)
        return self.length_head(pooled)

    def length_to_class(self, tgt_lengths, src_lengths):
        if self.pred_length_offset:
            value = tgt_lengths - src_lengths + self.length_classes // 2
        else:
            value = tgt_lengths
        return value.clamp(0, self.length_classes - 1)

    def _unclamped_length(self, classes, src_lengths):
        if self.pred_length_offset:
            return classes - self.length_classes // 2 + src_lengths
        return classes

    def class_to_length(self, classes, src_lengths):
        return self._unclamped_length(classes, src_lengths).clamp(1, self.decoder.max_positions())

    def length_class_fits(self, src_lengths):
        """(B, classes): True where a class's length lies in [1, max_positions] without clamping.
        Two classes outside it would be clamped onto one length, the same candidate twice."""
        classes = torch.arange(self.length_classes, device=src_lengths.device)[None, :]
        lengths = self._unclamped_length(classes, src_lengths[:, None])
        return (lengths >= 1) & (lengths <= self.decoder.max_positions())

    # ---- training forward -----------------------------------------------------------------

    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None,
                noise_cfg: TrainingNoiseConfig = None, **kwargs):
        """tgt_tokens: (B, n) content tokens, right-padded, without EOS."""
        noise_cfg = noise_cfg or TrainingNoiseConfig()
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
        mask = tgt_tokens.ne(self.padding_idx)
        table = self.latent_table()  # normalized once; z_0 and every rounding share it
        z0 = self.embed_target(tgt_tokens, table)

        def denoise(z_t, z_sc, t):
            return self.denoise(z_t, z_sc, t, mask, encoder_out)

        def logits_fn(z0_hat):
            return self.rounding_logits(z0_hat, table)

        # the sampler's clamping (nearest content token at each real position), the same object
        clamp_fn = TokenClamp(table, mask, lambda z: self.content_logits(z, table), self.rounding_logits)
        out = diffusion_training_pass(
            denoise, z0, mask, self.schedule, noise_cfg, logits_fn=logits_fn, target=tgt_tokens,
            clamp_fn=clamp_fn,
        )
        tgt_lengths = mask.sum(-1)
        return {
            "z0_hat": out.z0_hat,
            "z0": z0,
            "mask": mask,
            # the rounding loss takes h = z0_hat / sqrt(d) at real tokens and the table, and
            # computes the (tokens, V) logits a block at a time (diffusion/rounding.py)
            "rounding_input": self.rounding_input(out.z0_hat[mask]),
            "latent_table": table,
            "target": tgt_tokens,
            "length_logits": self.length_logits(encoder_out),
            "length_target": self.length_to_class(tgt_lengths, src_lengths),
            "t": out.t,
            "t_theta": out.t_theta,
            "t_sc": out.t_sc,
        }


def fastdiss_base_architecture(args):
    args.noise_schedule = getattr(args, "noise_schedule", None) or "sqrt"
    # `is None`, not `or`: an explicit 0 must reach the range check, not become the default
    args.noise_scale = 1.0 if getattr(args, "noise_scale", None) is None else args.noise_scale
    args.length_classes = 256 if getattr(args, "length_classes", None) is None else args.length_classes
    args.pred_length_offset = getattr(args, "pred_length_offset", False)
    args.source_copy_input = getattr(args, "source_copy_input", False)
    args.input_scaling = getattr(args, "input_scaling", False)
    # z_0 = E[y] and logits = z0_hat E^T need one table for source, target and output.
    args.share_all_embeddings = True
    base_architecture(args)


@register_model_architecture("fastdiss_transformer", "fastdiss_base")
def fastdiss_base(args):
    fastdiss_base_architecture(args)


@register_model_architecture("fastdiss_transformer", "fastdiss_wmt_en_de")
def fastdiss_wmt_en_de(args):
    fastdiss_base_architecture(args)


def _symmetric_size(args, dim, ffn, heads, layers):
    """Encoder and decoder of one size, unless set on the command line."""
    for side in ("encoder", "decoder"):
        for key, value in (("embed_dim", dim), ("ffn_embed_dim", ffn),
                           ("attention_heads", heads), ("layers", layers)):
            name = f"{side}_{key}"
            setattr(args, name, getattr(args, name, value))
    fastdiss_base_architecture(args)


@register_model_architecture("fastdiss_transformer", "fastdiss_iwslt_de_en")
def fastdiss_iwslt_de_en(args):
    """IWSLT-sized, as fairseq's transformer_iwslt_de_en: 512 dim, 1024 FFN, 4 heads, 6+6 layers."""
    _symmetric_size(args, dim=512, ffn=1024, heads=4, layers=6)


@register_model_architecture("fastdiss_transformer", "fastdiss_small")
def fastdiss_small(args):
    """CPU-sized model of the bundled example and the benchmarks on ../shared/data."""
    _symmetric_size(args, dim=256, ffn=512, heads=4, layers=3)


@register_model_architecture("fastdiss_transformer", "fastdiss_tiny")
def fastdiss_tiny(args):
    """For tests: runs a training update in milliseconds."""
    _symmetric_size(args, dim=32, ffn=64, heads=2, layers=1)
