"""fairseq task `fastdiss_translation`: fairseq's translation task plus diffusion decoding.

Any fairseq-preprocess output with a joined dictionary works unchanged. The task owns the
generation options, so `fairseq-generate --task fastdiss_translation --decoding-steps 5`
and `--eval-bleu` during training both use the few-step diffusion generator.
"""

from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from ..diffusion.sampler import SELF_CONDITIONING_MODES
from ..generator import RANKINGS, FastDiSSGenerator, GeneratorConfig


@dataclass
class FastDiSSTranslationConfig(TranslationConfig):
    decoding_steps: int = field(
        default=5, metadata={"help": "number of denoising steps K of the sampler (any K >= 1)"}
    )
    length_beam: int = field(
        default=5, metadata={"help": "number of target lengths tried per sentence (top-L of the length head)"}
    )
    noise_samples: int = field(
        default=1, metadata={"help": "number of noise samples per candidate length"}
    )
    candidate_ranking: ChoiceEnum(RANKINGS) = field(
        default="model",
        metadata={"help": "pick the output among candidates by the model's mean token log-probability ('model') or by MBR"},
    )
    clamping: bool = field(
        default=False,
        metadata={"help": "clamp each intermediate z0_hat to the embedding of its argmax token"},
    )
    inference_self_conditioning: ChoiceEnum(SELF_CONDITIONING_MODES) = field(
        default="reuse",
        metadata={"help": "self-conditioning at inference: the previous step's estimate ('reuse'), "
                  "one made anew at the current noise level ('recompute', 2K passes), or none"},
    )
    seed: int = II("common.seed")


@register_task("fastdiss_translation", dataclass=FastDiSSTranslationConfig)
class FastDiSSTranslationTask(TranslationTask):
    cfg: FastDiSSTranslationConfig

    def generator_config(self, **overrides) -> GeneratorConfig:
        values = dict(
            decoding_steps=self.cfg.decoding_steps,
            length_beam=self.cfg.length_beam,
            noise_samples=self.cfg.noise_samples,
            candidate_ranking=str(self.cfg.candidate_ranking),
            clamping=self.cfg.clamping,
            inference_self_conditioning=str(self.cfg.inference_self_conditioning),
            seed=self.cfg.seed,
        )
        values.update(overrides)
        return GeneratorConfig(**values)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **unused):
        return FastDiSSGenerator(self.target_dictionary, self.generator_config())
