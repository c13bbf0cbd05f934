"""fairseq criterion `fastdiss_loss`: L = L_diffusion + L_round + w_len L_length.

The criterion also owns how training noise is drawn: standard self-conditioning (the
baseline), SCP and MANS, each switchable, so the four ablation rows train from one code
path. They change the noise levels and the self-conditioning input only, never the loss.
"""

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from ..diffusion import TrainingNoiseConfig
from ..diffusion.rounding import rounding_loss
from ..diffusion.mans import CONFIDENCE_MEASURES, CONFIDENCE_NORMALIZATIONS, MANS_GRANULARITIES
from ..diffusion.scp import SCP_MODES
from ..safeguards import check_fastdiss_task


@dataclass
class FastDiSSLossConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.1, metadata={"help": "label smoothing of the rounding loss, 0 = none"}
    )
    rounding_loss_factor: float = field(
        default=1.0, metadata={"help": "weight of the rounding loss CE(z0_hat E^T / sqrt(d), y)"}
    )
    diffusion_loss_factor: float = field(
        default=1.0, metadata={"help": "weight of the diffusion loss ||z0_hat - z0||^2 / d"}
    )
    length_loss_factor: float = field(
        default=0.1, metadata={"help": "weight of the length-prediction loss"}
    )
    t_min: float = field(
        default=0.0, metadata={"help": "training times are drawn from U(t_min, 1)"}
    )
    self_condition_prob: float = field(
        default=0.5,
        metadata={"help": "probability that an update trains with a self-conditioning estimate"},
    )
    scp: bool = field(
        default=False,
        metadata={"help": "SCP: make the self-conditioning estimate at a noise level t' > t"},
    )
    scp_mode: ChoiceEnum(SCP_MODES) = field(
        default="uniform",
        metadata={"help": "how t' is drawn: t + U(0, delta_max) ('uniform') or t + delta_max ('fixed')"},
    )
    scp_delta_max: float = field(
        # 0.25 since the twenty-fourth session: ahead of 0.5 on de-en/valid at 2 and 5 steps
        # with the renoise sampler (docs/ablation.md's sweep)
        default=0.25, metadata={"help": "largest SCP gap t' - t, the gap itself under --scp-mode fixed "
                                 "(1/K matches a K-step sampler)"}
    )
    scp_shared_noise: bool = field(
        default=False,
        metadata={"help": "build z_{t'} from the same eps as z_t instead of fresh noise"},
    )
    scp_chain: bool = field(
        default=False,
        metadata={
            "help": "not in the paper: the SCP estimate is itself self-conditioned on one made at "
            "t'' > t' (drawn as t' is; one more no-grad pass), as every estimate the sampler hands "
            "on was made with the one before it"
        },
    )
    mans: bool = field(
        default=False,
        metadata={"help": "MANS: more noise for the tokens (or sentences, see --mans-granularity) the model "
                          "denoises confidently"},
    )
    # 0.25, not 0.5: better at 5 steps on de-en/valid in every defaults sweep (docs/ablation.md,
    # docs/ablation_fp32.md, docs/ablation_tmin0.md, docs/measurements.md: fifth, sixth and
    # eleventh sessions)
    mans_strength: float = field(
        default=0.25, metadata={"help": "MANS lambda in t_i = t + lambda (1 - t) r_i"}
    )
    mans_measure: ChoiceEnum(CONFIDENCE_MEASURES) = field(
        default="distance",
        metadata={"help": "confidence: ||z0_hat - z0||^2 ('distance') or -log p(y|z0_hat) ('likelihood')"},
    )
    mans_normalization: ChoiceEnum(CONFIDENCE_NORMALIZATIONS) = field(
        default="rank",
        metadata={"help": "how confidences map to r_i in [0, 1]: within a sentence, or within the batch "
                          "under --mans-granularity sentence"},
    )
    # "sentence", not "token", since the nineteenth session: from scratch, 2,000 updates, SCP+MANS
    # scored 6.62 against 4.91 on de-en/valid at 5 steps (docs/measurements.md)
    mans_granularity: ChoiceEnum(MANS_GRANULARITIES) = field(
        default="sentence",
        metadata={
            "help": "'token': a level per token from its rank in the sentence; 'sentence': one "
            "level per sentence from its mean confidence's rank in the batch (as sampling uses)"
        },
    )
    mans_model_time: ChoiceEnum(MANS_GRANULARITIES) = field(
        default="token",
        metadata={
            "help": "the time the denoiser is given under MANS: each token's own level ('token') "
            "or its sentence's mean level ('sentence'; per-token levels leak the confidence rank)"
        },
    )
    estimate_input_prob: float = field(
        default=0.0,
        metadata={
            "help": "not in the paper: probability, per sentence of a self-conditioned update, that "
            "the trained latent is alpha clamp(z_sc) + sigma eps, centred on the self-conditioning "
            "estimate as the renoise sampler's latents are, instead of on z_0 (0 = never)"
        },
    )


def check_loss_config(cfg: FastDiSSLossConfig) -> None:
    """Rejects impossible settings at start-up, before any training time is spent."""
    for name in ("t_min", "self_condition_prob", "scp_delta_max", "mans_strength", "label_smoothing",
                 "estimate_input_prob"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1], got {value}")
    for name in ("diffusion_loss_factor", "rounding_loss_factor", "length_loss_factor"):
        value = getattr(cfg, name)
        if not value >= 0.0:  # a negative weight would train the model to raise that loss
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if cfg.t_min >= 1.0:
        raise ValueError(f"--t-min must be < 1, got {cfg.t_min}")
    if cfg.scp_chain and not cfg.scp:
        raise ValueError("--scp-chain self-conditions the SCP estimate, but SCP is off: add --scp")
    if cfg.estimate_input_prob > 0 and cfg.self_condition_prob == 0:
        raise ValueError("--estimate-input-prob re-noises the self-conditioning estimate, but "
                         "--self-condition-prob 0 never makes one")


def content_tokens(target: torch.Tensor, pad: int, eos: int) -> torch.Tensor:
    """fairseq targets end in EOS; the diffusion model generates the content before it."""
    return target.masked_fill(target.eq(eos), pad)[:, :-1]


@register_criterion("fastdiss_loss", dataclass=FastDiSSLossConfig)
class FastDiSSLoss(FairseqCriterion):
    def __init__(self, task, cfg: FastDiSSLossConfig):
        super().__init__(task)
        # the model's forward takes the target and noise options only a FastDiSS model takes;
        # fairseq's transformer failed in the first update
        check_fastdiss_task(task, "--criterion fastdiss_loss trains a FastDiSS model: it needs "
                                  "--task fastdiss_translation and an --arch fastdiss_*")
        check_loss_config(cfg)
        self.cfg = cfg
        self.eos_idx = task.target_dictionary.eos()
        # every noise option under its own name (test_diffusion_math checks the two lists match)
        self.noise_cfg = TrainingNoiseConfig(
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainingNoiseConfig)}
        )
        self.noise_cfg.validate()

    def forward(self, model, sample, reduce=True):
        model.trained_t_min.fill_(self.cfg.t_min)  # the generator's default end time
        tgt = content_tokens(sample["target"], self.padding_idx, self.eos_idx)
        net_input = sample["net_input"]
        out = model(
            net_input["src_tokens"], net_input["src_lengths"],
            tgt_tokens=tgt, noise_cfg=self.noise_cfg,
        )
        mask = out["mask"]
        n_tok = mask.sum().clamp_min(1)

        # float32, like the rounding and length losses: a half-precision sum over a large batch
        # overflows to inf
        diffusion = (((out["z0_hat"].float() - out["z0"].float()) ** 2).mean(-1) * mask).sum() / n_tok
        rounding, nll = rounding_loss(
            out["rounding_input"], out["latent_table"], out["target"][mask], self.cfg.label_smoothing
        )
        length = F.cross_entropy(out["length_logits"].float(), out["length_target"])

        loss = (
            self.cfg.diffusion_loss_factor * diffusion
            + self.cfg.rounding_loss_factor * rounding
            + self.cfg.length_loss_factor * length
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite FastDiSS loss (diffusion={diffusion.item()}, "
                f"rounding={rounding.item()}, length={length.item()}): stopping before a "
                "poisoned update or checkpoint; lower --lr or check the data"
            )

        t_theta = out["t_theta"][mask]
        t_base = out["t"][:, None].expand_as(mask)[mask]
        logging_output = {
            "loss": loss.data,
            "diffusion_loss": diffusion.data,
            "rounding_loss": rounding.data,
            "nll_loss": nll.data,
            "length_loss": length.data,
            "t_mean": t_base.mean().data,
            "mans_t_increase": (t_theta - t_base).mean().data,
            "mans_t_std": t_theta.std().data if t_theta.numel() > 1 else t_theta.sum().data * 0,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": 1,
        }
        return loss, 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        n = sum(log.get("sample_size", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        for key in ("loss", "diffusion_loss", "rounding_loss", "nll_loss", "length_loss",
                    "t_mean", "mans_t_increase", "mans_t_std"):
            value = sum(float(log.get(key, 0)) for log in logging_outputs)
            metrics.log_scalar(key, value / max(n, 1), n, round=3)
        # per batch, not per update: each batch (of each worker, and each of --update-freq)
        # reports a sample_size of 1; fairseq's own wpb is the per-update figure
        metrics.log_scalar("ntokens_per_batch", ntokens / max(n, 1), n, round=1)
        metrics.log_derived(
            "ppl", lambda meters: round(math.exp(min(meters["nll_loss"].avg, 50)), 2)
        )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
