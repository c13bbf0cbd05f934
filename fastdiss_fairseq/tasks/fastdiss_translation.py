"""fairseq task `fastdiss_translation`: fairseq's translation task plus diffusion decoding.

Any fairseq-preprocess output with a joined dictionary works unchanged. The task owns the
generation options, so `fairseq-generate --task fastdiss_translation --decoding-steps 5`
and `--eval-bleu` during training both use the few-step diffusion generator.
"""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Optional

from fairseq import utils
from fairseq.data.encoders.moses_tokenizer import MosesTokenizer as FairseqMosesTokenizer
from fairseq.dataclass import ChoiceEnum
from fairseq.dataclass.configs import GenerationConfig
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II
import torch

from .. import safeguards
from ..cpu_performance import (
    MATMUL_PRECISIONS, apply_cpu_settings, cpu_training_autocast, use_fused_cpu_attention,
)
from ..diffusion.sampler import SAMPLER_UPDATES, SELF_CONDITIONING_MODES
from ..errors import FastDiSSError
from ..generator import DECODING_DTYPES, LENGTH_BEAM_NOISES, RANKINGS, FastDiSSGenerator, GeneratorConfig
from ..prepared_text import SETTINGS_FILE, tokenizer_for_data

logger = logging.getLogger(__name__)


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
    length_beam_noise: ChoiceEnum(LENGTH_BEAM_NOISES) = field(
        default="shared",
        metadata={"help": "'shared': a sentence's length candidates are denoised from the same noise "
                  "(the first n positions of it for length n), so they differ by their length alone, "
                  "and L times less noise is drawn; 'independent': each candidate its own noise. "
                  "shared chosen on de-en/valid (docs/measurements.md): level with independent in "
                  "SacreBLEU (-0.19 to +0.28 a cell, +0.03 on average over 1, 2 and 5 steps and "
                  "two models, 3 seeds each), and the noise drawn at 5 steps and length beam 5 "
                  "fell from 3.4 % of the decode to 1.2 %"},
    )
    candidate_ranking: ChoiceEnum(RANKINGS) = field(
        default="model",
        metadata={"help": "pick the output among candidates by the model's mean token log-probability ('model') or by MBR"},
    )
    no_clamping: bool = field(
        default=False,
        metadata={"help": "do not clamp the intermediate estimates z0_hat to the embeddings of "
                  "their nearest tokens (clamping is on by default: it measured +1 to +3 "
                  "SacreBLEU at 2-50 steps on de-en/valid, docs/measurements.md)"},
    )
    clamping: bool = field(
        default=False,
        metadata={"help": "no effect: clamping is the default (kept so that older command lines "
                  "and checkpoints load); see --no-clamping"},
    )
    clamping_shortlist: int = field(
        default=8,
        metadata={"help": "clamp to a shortlist: the first clamp searches the whole vocabulary and "
                  "keeps, per candidate, the words among the top k of any of its positions; later "
                  "clamps search only those (k = this; 0: the whole vocabulary at every step). "
                  "The final rounding always searches the whole vocabulary. 8 chosen on "
                  "de-en/valid: -0.03 to -0.04 SacreBLEU against 0, at a quarter of the clamping "
                  "cost at 5 steps (docs/measurements.md)"},
    )
    inference_self_conditioning: ChoiceEnum(SELF_CONDITIONING_MODES) = field(
        default="reuse",
        metadata={"help": "self-conditioning at inference: the previous step's estimate ('reuse'), "
                  "one made anew at the current noise level ('recompute', 2K passes), or none"},
    )
    collapse_repeats: bool = field(
        default=False,
        metadata={"help": "drop a token equal to the one before it in the output (a common NAT "
                  "post-processing: one-step outputs repeat words); scores stay the candidate's"},
    )
    decoding_t_end: Optional[float] = field(
        default=None,
        metadata={"help": "lowest noise level t_K of the sampler's time grid (see --decoding-time-exponent) "
                  "(default: the --t-min the model was trained with, stored in its checkpoint)"},
    )
    decoding_time_exponent: float = field(
        default=0.5,
        metadata={"help": "shape rho of the sampler's time grid, t_k = t_end + (1 - t_end) (1 - k/K)^rho: "
                  "1 spaces the K steps uniformly, > 1 puts more of them at low noise, < 1 at high "
                  "noise. 0.5 chosen on de-en/valid (docs/measurements.md): +0.02 to +0.21 SacreBLEU "
                  "over 1 at 2 and 5 steps with the ddim update, within 0.2 of 0.7 and 1 with renoise"},
    )
    sampler_update: ChoiceEnum(SAMPLER_UPDATES) = field(
        default="renoise",
        metadata={"help": "how each step makes the next latent from the estimate z0_hat: 'ddim' "
                  "(deterministic, z_next = alpha z0_hat + sigma eps_hat with eps_hat implied by "
                  "z_t) or 'renoise' (z_next = alpha z0_hat + sigma eps with fresh noise, seeded per "
                  "sentence). renoise chosen on de-en/valid: +1.8 to +2.8 SacreBLEU over ddim at 5 "
                  "and 50 steps (docs/measurements.md)"},
    )
    decoding_dtype: ChoiceEnum(DECODING_DTYPES) = field(
        default="float32",
        metadata={"help": "'bfloat16': fairseq-generate and fairseq-interactive decode with the model "
                  "cast to bfloat16 (as --fp16 casts it to half); the sampler's latents, the rounding "
                  "logits and the scores stay float32. Faster on CPUs with AVX512-BF16 or AMX "
                  "(docs/measurements.md). --eval-bleu during training decodes the float32 model"},
    )
    fp32_matmul_precision: ChoiceEnum(MATMUL_PRECISIONS) = field(
        default="highest",
        metadata={"help": "torch.set_float32_matmul_precision for this run: 'medium' computes "
                  "float32 matrix products with bfloat16 inputs on CPUs with AMX/AVX512-BF16 "
                  "(1.4x faster training per thread measured here) and allows TF32/bf16 on GPUs; "
                  "'highest' (torch's default) is exact float32"},
    )
    no_cpu_tuning: bool = field(
        default=False,
        metadata={"help": "leave the allocator and the denormal handling as they are (by default "
                  "glibc keeps freed blocks of up to 32 MiB and denormals are flushed to zero; "
                  "both are faster on a CPU and do not change results beyond 1e-38)"},
    )
    seed: int = II("common.seed")


@register_task("fastdiss_translation", dataclass=FastDiSSTranslationConfig)
class FastDiSSTranslationTask(TranslationTask):
    cfg: FastDiSSTranslationConfig
    _building_model = False  # True inside build_model (see _model_being_built)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        safeguards.check_language_pair(cfg)
        try:
            task = super().setup_task(cfg, **kwargs)
        except FileNotFoundError as e:  # the data folder or its dictionaries
            raise safeguards.missing_data_error(e) from e
        # Impossible generation options fail here, before any checkpoint or data is read.
        if cfg.clamping and cfg.no_clamping:
            raise FastDiSSError("--clamping and --no-clamping contradict each other; clamping is "
                                "the default, pass --no-clamping alone to switch it off")
        task.generator_config().validate()
        apply_cpu_settings(str(cfg.fp32_matmul_precision), tune=not cfg.no_cpu_tuning)
        return task

    def generator_config(self, **overrides) -> GeneratorConfig:
        values = dict(
            decoding_steps=self.cfg.decoding_steps,
            length_beam=self.cfg.length_beam,
            noise_samples=self.cfg.noise_samples,
            length_beam_noise=str(self.cfg.length_beam_noise),
            candidate_ranking=str(self.cfg.candidate_ranking),
            clamping=not self.cfg.no_clamping,
            clamping_shortlist=self.cfg.clamping_shortlist,
            inference_self_conditioning=str(self.cfg.inference_self_conditioning),
            collapse_repeats=self.cfg.collapse_repeats,
            decoding_t_end=self.cfg.decoding_t_end,
            decoding_time_exponent=self.cfg.decoding_time_exponent,
            sampler_update=str(self.cfg.sampler_update),
            decoding_dtype=str(self.cfg.decoding_dtype),
            seed=self.cfg.seed,
        )
        values.update(overrides)
        return GeneratorConfig(**values)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, **kwargs):
        # This fairseq build drops the last batch whenever its size is not a multiple of
        # --required-batch-size-multiple (default 8): up to 7 sentences of a valid/test set
        # would silently go unscored. Only fairseq-train's training iterator may lose its
        # remainder; it is the one caller that passes update_epoch_batch_itr. Every other
        # (validation, fairseq-generate and fairseq-validate, also on --gen-subset train) keeps
        # every sentence.
        training = "update_epoch_batch_itr" in kwargs
        if not training:
            required_batch_size_multiple = 1
        safeguards.check_batchable(dataset, self.split_name(dataset), max_tokens, max_positions,
                                   refuse_too_long=not training and not ignore_invalid_inputs)
        return super().get_batch_iterator(
            dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
            required_batch_size_multiple, **kwargs,
        )

    def split_name(self, dataset) -> str:
        return next((name for name, d in self.datasets.items() if d is dataset), "given")

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **unused):
        for model in models:
            safeguards.check_fastdiss_model(model, getattr(model, "cfg", None))
        safeguards.check_single_model(models)
        safeguards.reject_foreign_generation_options(args)
        if self._building_model:  # args holds --eval-bleu-args' keys alone
            safeguards.check_generation_arguments(
                args, {f.name for f in fields(GeneratorConfig)} | {f.name for f in fields(GenerationConfig)})
        else:
            safeguards.check_generation_precision(self.cfg)
        # Generation options passed with the call (the hub's translate(..., decoding_steps=3),
        # --eval-bleu-args '{"decoding_steps": 3}') override the task's own.
        overrides = {f.name: getattr(args, f.name) for f in fields(GeneratorConfig)
                     if getattr(args, f.name, None) is not None}
        cfg = self.generator_config(**overrides)
        generator = FastDiSSGenerator(self.target_dictionary, cfg)  # validates cfg
        safeguards.check_nbest(args, cfg.length_beam, cfg.noise_samples)
        safeguards.warn_unused_beam(args, cfg.length_beam)
        if cfg.decoding_dtype == "bfloat16" and not self._building_model:
            for model in models:  # fairseq-generate's own --fp16 casts the same way, in place
                model.to(torch.bfloat16)
            use_fused_cpu_attention(torch.bfloat16)
        return generator

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's train_step, except for --amp (an AMPOptimizer) on a CPU: fairseq autocasts
        CUDA operations only, so there the forward runs under bfloat16 autocast instead
        (cpu_performance.cpu_training_autocast). The backward stays outside autocast, as torch
        recommends: its operations take the dtypes their forward ones had."""
        model.train()
        model.set_num_updates(update_num)
        amp = isinstance(optimizer, AMPOptimizer)
        if next(model.parameters()).device.type == "cpu":
            autocast = cpu_training_autocast(amp)
        else:
            autocast = torch.autocast("cuda", enabled=amp)
        with torch.autograd.profiler.record_function("forward"), autocast:
            loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
        with torch.autograd.profiler.record_function("backward"):
            optimizer.backward(loss)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        """fairseq's valid_step with the loss's draws (t, eps, the self-conditioning coin) seeded by
        --seed and the batch's first sentence: a checkpoint's validation loss, which picks
        checkpoint_best.pt and drives --patience, is then the same at every validation and in
        fairseq-validate, and training's own random stream is left where it was."""
        ids = sample.get("id") if isinstance(sample, dict) else None
        if ids is None or ids.numel() == 0:
            return super().valid_step(sample, model, criterion)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed * 1_000_003 + int(ids.min()))
            return super().valid_step(sample, model, criterion)

    @contextmanager
    def _model_being_built(self):
        """TranslationTask.build_model builds --eval-bleu's generator for the model it returns:
        the model that will be trained, which build_generator must not cast."""
        self._building_model = True
        try:
            yield
        finally:
            self._building_model = False

    # ---- bad input: one-line errors or documented safe behaviour (see safeguards.py) ---------

    def build_model(self, cfg, from_checkpoint=False):
        if not from_checkpoint:  # fairseq-train: fail before the model and the data are built
            safeguards.check_training_run(self.cfg)
        safeguards.record_or_check_direction(cfg, self.cfg, from_checkpoint)
        with self._model_being_built():
            try:
                model = super().build_model(cfg, from_checkpoint)
            except ValueError as e:  # fairseq's architecture checks, e.g. shared embeddings' dims
                raise FastDiSSError(str(e)) from e
            except AssertionError as e:  # fairseq asserts others, e.g. the attention heads' split
                if not str(e):
                    raise
                raise FastDiSSError(f"the model's options do not fit together: {e}") from e
        safeguards.check_fastdiss_model(model, cfg)
        safeguards.guard_dictionary_size(
            model, self.source_dictionary, os.path.join(utils.split_paths(self.cfg.data)[0],
                                                        f"dict.{self.cfg.source_lang}.txt"))
        self.model_max_source_positions = model.encoder.max_positions()
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        try:
            criterion = super().build_criterion(cfg, from_checkpoint)
        except ValueError as e:  # the criterion's range checks (check_loss_config)
            raise FastDiSSError(str(e)) from e
        safeguards.check_fastdiss_criterion(criterion, cfg)
        return criterion

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)] if split == self.cfg.train_subset else paths[0]
        safeguards.check_split(data_path, split)
        try:
            super().load_dataset(split, epoch, combine, **kwargs)
        except FileNotFoundError as e:
            raise safeguards.missing_split_error(data_path, split, self.cfg.source_lang, self.cfg.target_lang) from e

    def build_tokenizer(self, args):
        """--tokenizer moses on data from preprocess/prepare_parallel.py tokenizes as the data
        were (prepared_text.py says why fairseq's defaults do not)."""
        tokenizer = super().build_tokenizer(args)
        if not isinstance(tokenizer, FairseqMosesTokenizer):
            return tokenizer
        data_dir = utils.split_paths(self.cfg.data)[0]
        prepared = tokenizer_for_data(data_dir, self.cfg.source_lang, self.cfg.target_lang)
        if prepared is None:
            logger.info("--tokenizer moses: no %s in %s, so fairseq's Moses settings (escaping, dash "
                        "splits) apply; they must be the ones the training data were tokenized with",
                        SETTINGS_FILE, data_dir)
            return tokenizer
        logger.info("--tokenizer moses: tokenizing as %s says the test split was: %s",
                    os.path.join(data_dir, SETTINGS_FILE), prepared.describe())
        return prepared

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        limit = min(self.cfg.max_source_positions, getattr(self, "model_max_source_positions", float("inf")))
        src_tokens, src_lengths = safeguards.truncate_sources(
            src_tokens, src_lengths, int(limit), self.source_dictionary.eos())
        return super().build_dataset_for_inference(src_tokens, src_lengths, constraints)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        hypos = super().inference_step(generator, models, sample, prefix_tokens, constraints)
        return safeguards.empty_sources_get_empty_output(sample, hypos, self.target_dictionary.eos())
