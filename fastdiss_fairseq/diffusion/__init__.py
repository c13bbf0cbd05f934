"""The diffusion math of FastDiSS in plain PyTorch.

Nothing in this subpackage imports fairseq: schedules, q-sampling, self-conditioning,
SCP, MANS and the K-step sampler can be unit-tested on their own and carried to another
toolkit. The fairseq task, model, criterion and generator are thin adapters over it.
"""

from .schedules import NoiseSchedule, build_schedule, SCHEDULES
from .noising import normalize_embeddings, q_sample, sample_time
from .scp import perturbed_time
from .mans import token_error, confidence_rank, model_aware_time, sentence_confidence_rank
from .training import TrainingNoiseConfig, diffusion_training_pass
from .sampler import SamplerConfig, sample, step_times

__all__ = [
    "NoiseSchedule",
    "build_schedule",
    "SCHEDULES",
    "normalize_embeddings",
    "q_sample",
    "sample_time",
    "perturbed_time",
    "token_error",
    "confidence_rank",
    "model_aware_time",
    "sentence_confidence_rank",
    "TrainingNoiseConfig",
    "diffusion_training_pass",
    "SamplerConfig",
    "sample",
    "step_times",
]
