"""Training on several data-parallel ranks: two fixes to fairseq 0.12 (on torch >= 2.6).

- **Resuming.** fairseq reads the checkpoint on rank 0 and sends it to the other ranks as a
  pickle, which they unpickle with torch's safe loader. The checkpoint's OmegaConf config is not
  on that loader's allowlist, so every rank but the first stopped with "UnpicklingError:
  Unsupported global: omegaconf.dictconfig.DictConfig" (and rank 0 with "Connection closed by
  peer"). Each rank now reads the file itself (fairseq's --load-checkpoint-on-all-dp-ranks),
  through the plugin's allowlist for checkpoint files (checkpoint_compat.py); the allowlist is
  not widened to whatever a pickle from another process may hold.
- **Seeds.** fairseq seeds every rank with --seed + the update number, so the ranks share one
  random stream: two ranks whose batches had the same shape drew the same diffusion times t,
  noise eps, self-conditioning coin and dropout. Rank r adds r * RANK_SEED_STRIDE. Rank 0, and
  so one-process training, keeps fairseq's seed, and a resumed run still draws what the
  uninterrupted one would have.
"""

from fairseq import utils
from fairseq.trainer import Trainer

RANK_SEED_STRIDE = 1_000_003  # a prime far above any update count, so no two (rank, update) seeds meet


def rank_seed(base_seed: int, num_updates: int, rank: int) -> int:
    return base_seed + num_updates + RANK_SEED_STRIDE * rank


def set_seed(self) -> None:
    """Trainer._set_seed, called before each update, with the rank's own offset."""
    utils.set_torch_seed(rank_seed(self.cfg.common.seed, self.get_num_updates(), self.data_parallel_rank))


def load_checkpoint_on_every_rank(self, filename, *args, **kwargs):
    if self.data_parallel_world_size > 1:
        self.cfg.checkpoint.load_checkpoint_on_all_dp_ranks = True
    return load_checkpoint_on_every_rank.wrapped(self, filename, *args, **kwargs)


def install() -> None:
    """Idempotent; called when the plugin is imported (after resume_check.install, whose
    Trainer.load_checkpoint it wraps)."""
    Trainer._set_seed = set_seed
    if Trainer.load_checkpoint is not load_checkpoint_on_every_rank:
        wrapped = Trainer.load_checkpoint
        load_checkpoint_on_every_rank.wrapped = wrapped
        # fairseq's own method, for a module that wraps it again after a re-import (resume_check)
        load_checkpoint_on_every_rank.fairseq_original = getattr(wrapped, "fairseq_original", wrapped)
        Trainer.load_checkpoint = load_checkpoint_on_every_rank
