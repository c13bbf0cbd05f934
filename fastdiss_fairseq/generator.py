"""The few-step diffusion generator behind fairseq-generate and fairseq-interactive.

For each source sentence: the length head proposes the top-L lengths, each length gets S
noise samples (C = L x S candidates; by default the L lengths share those S noises,
--length-beam-noise), the K-step sampler (diffusion/sampler.py) denoises all
candidates of the batch together, and candidates are ranked by the model's mean token
log-probability or by MBR. Output is fairseq's hypothesis format, best first, with "steps"
(K, for --print-step) and, with --retain-iter-history, "history": each step's estimate
rounded to tokens, as fairseq's iterative refinement generator returns its iterations.

Noise is drawn per sentence from a generator seeded by (seed, sentence id), so a sentence
gets the same output whatever batch it lands in, and runs with one --seed are identical.
fairseq-interactive hands over batches without ids; there the key is the sentence's source
tokens (source_noise_keys).
"""

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from . import clamping
from . import safeguards
from .diffusion import SamplerConfig
from .diffusion.sampler import SAMPLER_UPDATES, sample as run_sampler
from .errors import FastDiSSError

RANKINGS = ("model", "mbr")
DECODING_DTYPES = ("float32", "bfloat16")
LENGTH_BEAM_NOISES = ("shared", "independent")


@dataclass
class GeneratorConfig:
    decoding_steps: int = 5
    length_beam: int = 5
    noise_samples: int = 1
    length_beam_noise: str = "shared"
    candidate_ranking: str = "model"
    clamping: bool = True
    clamping_shortlist: int = 8
    inference_self_conditioning: str = "reuse"
    collapse_repeats: bool = False
    decoding_t_end: Optional[float] = None  # None: the model's trained_t_min
    # Both chosen on de-en/valid in the twenty-third session (docs/measurements.md): renoise,
    # not ddim, +1.8 to +2.8 SacreBLEU at 5 and 50 steps; rho 0.5, not 1, +0.02 to +0.21 at 2
    # and 5 steps under ddim and the best mean (by a little) under renoise.
    decoding_time_exponent: float = 0.5
    sampler_update: str = "renoise"
    decoding_dtype: str = "float32"  # the task casts the model; the generator takes any dtype
    seed: int = 1
    # fairseq-generate's own --retain-iter-history (GenerationConfig), read by the task; one
    # extra rounding of the real positions per step
    retain_iter_history: bool = False

    def validate(self) -> None:
        for name, minimum in (("decoding_steps", 1), ("length_beam", 1), ("noise_samples", 1),
                              ("clamping_shortlist", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise FastDiSSError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")
        if self.decoding_t_end is not None and not 0.0 <= self.decoding_t_end < 1.0:
            raise FastDiSSError(f"--decoding-t-end must lie in [0, 1), got {self.decoding_t_end!r}")
        if not 0.0 < self.decoding_time_exponent <= 10.0:
            raise FastDiSSError(
                f"--decoding-time-exponent must lie in (0, 10], got {self.decoding_time_exponent!r}"
            )
        if self.decoding_dtype not in DECODING_DTYPES:
            raise FastDiSSError(
                f"--decoding-dtype must be one of {DECODING_DTYPES}, got {self.decoding_dtype!r}"
            )
        if self.length_beam_noise not in LENGTH_BEAM_NOISES:
            raise FastDiSSError(
                f"--length-beam-noise must be one of {LENGTH_BEAM_NOISES}, got {self.length_beam_noise!r}"
            )
        if self.sampler_update not in SAMPLER_UPDATES:
            raise FastDiSSError(f"--sampler-update must be one of {SAMPLER_UPDATES}, got {self.sampler_update!r}")
        if self.candidate_ranking not in RANKINGS:
            raise FastDiSSError(
                f"--candidate-ranking must be one of {RANKINGS}, got {self.candidate_ranking!r}"
            )
        try:
            self.sampler_config().validate()
        except ValueError as e:  # diffusion/ is plain PyTorch and raises plain ValueErrors
            raise FastDiSSError(str(e)) from e

    def sampler_config(self, trained_t_min: float = 0.0) -> SamplerConfig:
        """trained_t_min: the model's, the end time unless --decoding-t-end is given."""
        t_end = trained_t_min if self.decoding_t_end is None else self.decoding_t_end
        return SamplerConfig(
            steps=self.decoding_steps,
            clamping=self.clamping,
            self_conditioning=self.inference_self_conditioning,
            t_end=float(t_end),
            time_exponent=float(self.decoding_time_exponent),
            update=self.sampler_update,
        )


def _ngrams(tokens: List[int], max_n: int = 4) -> Counter:
    grams = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            grams[tuple(tokens[i:i + n])] += 1
    return grams


def _overlap_f1(a: Counter, b: Counter) -> float:
    """n-gram F1 between two candidates: the utility of MBR selection."""
    common = sum((a & b).values())
    total = sum(a.values()) + sum(b.values())
    return 2.0 * common / total if total else 0.0


def mbr_order(candidates: List[List[int]]) -> List[int]:
    """Candidate indices sorted by their mean similarity to the others, best first."""
    grams = [_ngrams(c) for c in candidates]
    utility = [
        sum(_overlap_f1(g, h) for j, h in enumerate(grams) if j != i) for i, g in enumerate(grams)
    ]
    return sorted(range(len(candidates)), key=lambda i: -utility[i])


def collapse_repeats(hypo: Dict) -> Dict:
    """The hypothesis without tokens equal to their predecessor ("of of of the" -> "of the").

    Candidates are ranked before this, so "score" stays the candidate's mean log-probability;
    the positional scores follow the tokens that remain.
    """
    tokens = hypo["tokens"]
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[1:] = tokens[1:].ne(tokens[:-1])
    return dict(hypo, tokens=tokens[keep], positional_scores=hypo["positional_scores"][keep])


def source_noise_keys(src_tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """(B,) a key per sentence from its source tokens alone (CRC-32 of the non-pad ids):
    fairseq-interactive's samples carry no "id", and the batch position it would fall back to
    changes with --batch-size, --buffer-size and the other lines of the input."""
    rows = src_tokens.cpu().numpy().astype("<i8")
    keys = [zlib.crc32(row[row != pad].tobytes()) for row in rows]
    return torch.tensor(keys, dtype=torch.long)


class CandidateNoise:
    """Standard normal noise for a batch's B*C candidate latents, one (B*C, n_max, d) draw at a
    time: draw 0 is z_1's noise, the renoise update takes one more per step. Sentence i's
    noise comes from its own generator, seeded (seed, id_i), so it does not depend on the batch
    the sentence is in. Drawn per step, not all K up front: that held K times the batch's
    latents in memory (the ablation's 100-step decodes peaked at 2.5 GB RSS, against 0.9 GB
    with ddim).

    The C = L x S candidates of a sentence are its L lengths x S noise samples (sample s of
    length l is candidate l * S + s). shared_across_lengths: a sentence draws S noises of its
    longest candidate's length, and candidate (l, s) takes the first n_l positions of noise s, so
    the L lengths are tried under the same noise and differ by their length alone; L times
    fewer random numbers are drawn (at length beam 5 and 5 steps they were 3.5 % of the
    decode). Otherwise every candidate has its own noise."""

    def __init__(self, seed: int, ids: torch.Tensor, lengths: torch.Tensor, dim: int, device,
                 samples: int = 1, shared_across_lengths: bool = True):
        self.cands = lengths.size(1)  # lengths: B x C
        if self.cands % samples:
            raise ValueError(f"{self.cands} candidates a sentence are not lengths x {samples} noise samples")
        self.noises = samples if shared_across_lengths else self.cands  # distinct noises a sentence
        self.longest = lengths.max(dim=1).values.tolist()  # per sentence, its longest candidate
        self.dim = dim
        self.device = device
        self.generators = [torch.Generator().manual_seed(seed * 1_000_003 + int(i)) for i in ids.cpu()]

    def draw(self) -> torch.Tensor:
        bsz, n_max = len(self.longest), max(self.longest)
        distinct = torch.zeros(bsz, self.noises, n_max, self.dim)
        for b, (g, n_b) in enumerate(zip(self.generators, self.longest)):
            distinct[b, :, :n_b] = torch.randn(self.noises, n_b, self.dim, generator=g)
        # candidate l * S + s is noise s: one copy of the batch's noise per length
        sharing = self.cands // self.noises
        noise = distinct[:, None].expand(bsz, sharing, self.noises, n_max, self.dim)
        return noise.reshape(-1, n_max, self.dim).to(self.device)


class FastDiSSGenerator:
    def __init__(self, tgt_dict, cfg: GeneratorConfig):
        cfg.validate()
        self.tgt_dict = tgt_dict
        self.cfg = cfg
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        # fairseq-generate strips these when it prints hypotheses
        self.symbols_to_strip_from_output = {tgt_dict.bos(), tgt_dict.eos()}
        self.denoiser_calls = 0  # counted for tests and profiling

    @torch.no_grad()
    def generate(self, models, sample: Dict, prefix_tokens=None, constraints=None, **unused):
        # the task refuses both when it builds the generator; Python callers too
        safeguards.check_single_model(models)
        if prefix_tokens is not None or constraints is not None:
            raise FastDiSSError("the FastDiSS generator supports neither --prefix-size nor constraints")
        model = models[0]
        cfg = self.cfg
        src_tokens = sample["net_input"]["src_tokens"]
        src_lengths = sample["net_input"]["src_lengths"]
        bsz = src_tokens.size(0)
        device = src_tokens.device
        ids = sample.get("id")
        if ids is None:  # fairseq-interactive
            ids = source_noise_keys(src_tokens, self.pad)

        encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)

        # Top-L lengths, each repeated for S noise samples: C candidates per sentence.
        L = min(cfg.length_beam, model.length_classes)
        length_lprobs = torch.log_softmax(model.length_logits(encoder_out).float(), dim=-1)
        # Classes whose length needs clamping are not candidates: a short source's negative
        # offsets would all become length 1, and fill the length beam with copies of one candidate.
        length_lprobs = length_lprobs.masked_fill(~model.length_class_fits(src_lengths), float("-inf"))
        top_classes = length_lprobs.topk(L, dim=-1).indices  # B x L
        lengths = model.class_to_length(top_classes, src_lengths[:, None])
        lengths = lengths.repeat_interleave(cfg.noise_samples, dim=1)  # B x C
        cands = lengths.size(1)

        # A sentence's C candidates are contiguous rows of the B*C batch; the source side
        # (cross-attention keys and values, source copy) is computed once for all K steps.
        flat_lengths = lengths.reshape(-1)
        n_max = int(flat_lengths.max())
        mask = torch.arange(n_max, device=device)[None, :] < flat_lengths[:, None]
        cache = model.decoder.inference_cache(encoder_out, cands, mask)

        # The latents the sampler updates, the rounding logits and the scores are float32 whatever
        # the network's dtype (--decoding-dtype bfloat16, --fp16): bfloat16 logits, 8 significant
        # bits, would tie near-equal words; the denoiser's input and output are cast at its border.
        sampler_cfg = cfg.sampler_config(float(model.trained_t_min))
        noise = CandidateNoise(cfg.seed, ids, lengths, model.latent_dim, device, samples=cfg.noise_samples,
                               shared_across_lengths=cfg.length_beam_noise == "shared")
        z_start = model.schedule.sigma(torch.ones((), device=device)) * noise.draw()
        network_dtype = encoder_out["encoder_out"][0].dtype

        table = model.latent_table().float()  # fixed during generation: normalized once, not per step

        def logits_fn(z0_hat):
            return model.content_logits(z0_hat, table)

        def denoise(z_t, z_sc, t):
            self.denoiser_calls += 1
            return model.denoise(z_t.to(network_dtype), z_sc.to(network_dtype), t, mask, encoder_out,
                                 cache=cache).float()

        clamp_fn = clamping.TokenClamp(table, mask, logits_fn, model.rounding_logits, cfg.clamping_shortlist)
        # Round only the real positions: padding is a fifth or more of a length-beam batch. Their
        # flat indices (faster than mask indexing) are the clamp's, found from the same mask.
        real = clamp_fn.real_index

        def round_real(z0_hat, scores=True):
            """(B*C, n, d) -> (B*C, n) tokens, pad past each length, and their log-probabilities."""
            real_tokens, real_scores = clamping.round_rows(
                z0_hat.reshape(-1, z0_hat.size(-1)).index_select(0, real), logits_fn, scores=scores)
            tokens = torch.full(mask.shape, self.pad, dtype=torch.long, device=device)
            tokens.view(-1).index_copy_(0, real, real_tokens)
            if not scores:
                return tokens, None
            token_scores = torch.zeros(mask.shape, dtype=real_scores.dtype, device=device)
            token_scores.view(-1).index_copy_(0, real, real_scores)
            return tokens, token_scores

        history = []  # --retain-iter-history: step k's estimate, rounded

        def keep_estimate(k, z0_hat):
            history.append(round_real(z0_hat, scores=False)[0])

        out = run_sampler(
            denoise, logits_fn, z_start, model.schedule, sampler_cfg,
            clamp_fn=clamp_fn, final_logits=False, step_noise=lambda k: noise.draw(),
            on_estimate=keep_estimate if cfg.retain_iter_history else None,
        )
        tokens, token_scores = round_real(out.z0_hat)
        scores = token_scores.sum(-1) / flat_lengths.to(token_scores.dtype)

        return self._finalize(tokens, token_scores, scores, flat_lengths, bsz, cands, history)

    def _with_eos(self, tokens, lengths):
        """(R, n) tokens, pad past each row's length -> (R, n + 1) on the CPU with each row's eos
        after its last token."""
        tokens = torch.cat([tokens, tokens.new_full((tokens.size(0), 1), self.pad)], 1).cpu()
        return tokens.scatter_(1, lengths[:, None], self.eos)

    def _finalize(self, tokens, token_scores, scores, lengths, bsz, cands, history=()):
        """(B*C, n) tokens and their scores -> fairseq's hypotheses, B lists of C, best first;
        history: (B*C, n) tokens of each step, or empty."""
        # Every row gets its eos (score 0) after its last token in one pass over the batch; a
        # hypothesis is then a slice of its row, not two concatenations (10,000 per batch of
        # 100 sentences at length beam 5 cost more than the ranking).
        rows = tokens.size(0)
        lengths = lengths.cpu()
        tokens = self._with_eos(tokens, lengths)
        token_scores = torch.cat([token_scores, token_scores.new_zeros(rows, 1)], 1).cpu()
        history = [self._with_eos(step_tokens, lengths) for step_tokens in history]
        scores, lengths = scores.cpu().tolist(), lengths.tolist()
        finalized = []
        for b in range(bsz):
            hypos = []
            for c in range(cands):
                i = b * cands + c
                n = lengths[i] + 1  # with the eos
                hypo = {
                    "tokens": tokens[i, :n],
                    "score": scores[i],
                    "positional_scores": token_scores[i, :n],
                    "attention": None,
                    "alignment": None,
                    "steps": self.cfg.decoding_steps,  # fairseq-generate --print-step
                }
                if history:
                    # entry k: the estimate after k + 1 steps (the last is the output before
                    # --collapse-repeats)
                    hypo["history"] = [{"steps": k + 1, "tokens": step_tokens[i, :n]}
                                       for k, step_tokens in enumerate(history)]
                hypos.append(hypo)
            if self.cfg.candidate_ranking == "mbr" and cands > 1:
                ranked = mbr_order([h["tokens"][:-1].tolist() for h in hypos])
            else:
                ranked = sorted(range(cands), key=lambda c: -hypos[c]["score"])
            best_first = [hypos[c] for c in ranked]
            if self.cfg.collapse_repeats:
                best_first = [collapse_repeats(h) for h in best_first]
            finalized.append(best_first)
        return finalized
