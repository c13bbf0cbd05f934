"""Unit tests of the diffusion math (fastdiss_fairseq.diffusion): no fairseq involved."""

import math
from unittest import mock

import pytest
import torch

from fastdiss_fairseq.diffusion import (
    SCHEDULES,
    SamplerConfig,
    TrainingNoiseConfig,
    build_schedule,
    confidence_rank,
    diffusion_training_pass,
    model_aware_time,
    normalize_embeddings,
    perturbed_time,
    q_sample,
    sample,
    sample_time,
    sentence_confidence_rank,
    step_times,
    token_error,
)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# ---- schedules ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_ranges_and_monotonicity(name):
    s = build_schedule(name)
    t = torch.linspace(0, 1, 1001)
    a, sig = s.alpha(t), s.sigma(t)
    assert torch.all((a > 0) & (a <= 1)) and torch.all((sig >= 0) & (sig < 1))
    assert torch.all(a[1:] <= a[:-1] + 1e-7), "alpha must not increase with t"
    assert torch.all(sig[1:] >= sig[:-1] - 1e-7), "sigma must not decrease with t"
    assert torch.allclose(a**2 + sig**2, torch.ones_like(t), atol=1e-5)
    assert a[0] > 0.95 and a[-1] < 0.05, "t=0 is nearly clean, t=1 nearly pure noise"


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ddim_never_divides_by_a_zero_sigma(name):
    """A steep time grid puts its last levels near t = 0, where the linear and cosine schedules
    reach alpha_bar = 1: sigma is kept above 0, so the DDIM update stays finite."""
    s = build_schedule(name)
    assert s.sigma(torch.zeros(())) > 0
    table = torch.randn(7, 8)
    out = sample(lambda z, sc, t: torch.tanh(z), lambda z: z @ table.t(), torch.randn(2, 5, 8), s,
                 SamplerConfig(steps=50, time_exponent=5, update="ddim"))
    assert torch.isfinite(out.z0_hat).all()


def test_noise_scale_multiplies_sigma_only():
    s1, s4 = build_schedule("sqrt", 1.0), build_schedule("sqrt", 4.0)
    t = torch.rand(50)
    assert torch.allclose(s4.sigma(t), 4 * s1.sigma(t))
    assert torch.allclose(s4.alpha(t), s1.alpha(t))


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        build_schedule("quadratic")
    with pytest.raises(ValueError, match="noise scale"):
        build_schedule("sqrt", 0.0)


# ---- q-sampling -------------------------------------------------------------------------------

def test_normalized_embeddings_have_norm_sqrt_d():
    e = normalize_embeddings(torch.randn(100, 64) * 5)
    assert torch.allclose(e.norm(dim=-1), torch.full((100,), 8.0), atol=1e-4)


def test_sample_time_range():
    t = sample_time((10000,), t_min=0.2)
    assert t.min() >= 0.2 and t.max() <= 1.0
    assert abs(t.mean().item() - 0.6) < 0.01


def test_q_sample_statistics():
    s = build_schedule("cosine", 2.0)
    z0 = torch.ones(4000, 1, 16) * 0.5
    t = torch.full((4000,), 0.3)
    zt = q_sample(z0, t, s, torch.randn_like(z0))
    a, sig = s.alpha(torch.tensor(0.3)), s.sigma(torch.tensor(0.3))
    assert abs(zt.mean().item() - 0.5 * a.item()) < 0.02
    assert abs(zt.std().item() - sig.item()) < 0.02


def test_q_sample_per_token_times():
    s = build_schedule("sqrt")
    z0 = torch.randn(2, 3, 8)
    eps = torch.randn_like(z0)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]])
    zt = q_sample(z0, t, s, eps)
    for b in range(2):
        for i in range(3):
            expect = s.alpha(t[b, i]) * z0[b, i] + s.sigma(t[b, i]) * eps[b, i]
            assert torch.allclose(zt[b, i], expect, atol=1e-6)
    # a per-sentence t is the same as that t for every token
    assert torch.allclose(q_sample(z0[1:], t[1:, 0], s, eps[1:]), zt[1:])


# ---- SCP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["uniform", "fixed"])
def test_scp_always_conditions_above_the_trained_level(mode):
    torch.manual_seed(0)
    t = torch.rand(64, 7)
    tp = perturbed_time(t, 0.3, mode)
    assert tp.shape == t.shape
    assert torch.all(tp >= t) and torch.all(tp <= 1.0)
    assert torch.all(tp - t <= 0.3 + 1e-6)
    assert torch.any(tp == 1.0), "levels near 1 are clipped to it"
    # one delta per sentence, shared by its tokens: below 0.7 nothing is clipped
    t = torch.rand(64, 7) * 0.7
    gap = perturbed_time(t, 0.3, mode) - t
    assert torch.allclose(gap, gap[:, :1].expand_as(gap), atol=1e-6)
    if mode == "fixed":
        assert torch.allclose(gap, torch.full_like(gap, 0.3), atol=1e-6)
    else:
        assert gap[:, 0].std() > 0, "uniform: the delta differs between sentences"


def test_scp_rejects_out_of_range_gap():
    with pytest.raises(ValueError, match="delta_max"):
        perturbed_time(torch.rand(3), 1.5)


# ---- MANS --------------------------------------------------------------------------------------

def test_mans_gives_more_noise_to_more_confident_tokens():
    z0 = torch.zeros(1, 4, 8)
    # token i is predicted with error i: token 0 most confident, token 3 least
    z0_hat = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 8)
    mask = torch.ones(1, 4, dtype=torch.bool)
    for norm in ("rank", "minmax"):
        r = confidence_rank(token_error(z0_hat, z0), mask, norm)
        assert torch.allclose(r[0, [0, 3]], torch.tensor([1.0, 0.0]))
        ti = model_aware_time(torch.tensor([0.4]), r, strength=0.5, t_min=0.0)
        assert torch.all(ti[0, :-1] >= ti[0, 1:]), "more confident -> more noise"
        assert torch.all(ti >= 0.4) and torch.all(ti <= 1.0)
        assert torch.isclose(ti[0, 0], torch.tensor(0.4 + 0.5 * 0.6))


def test_mans_likelihood_measure_and_padding():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]]])
    target = torch.tensor([[0, 0, 0]])
    d = token_error(None, None, "likelihood", logits, target)
    assert d[0, 0] < d[0, 1]
    mask = torch.tensor([[True, True, False]])
    r = confidence_rank(d, mask)
    assert r[0, 2] == 0.0 and r[0, 0] == 1.0 and r[0, 1] == 0.0


def test_mans_single_token_sentence_is_neutral():
    r = confidence_rank(torch.tensor([[3.0, 0.0]]), torch.tensor([[True, False]]))
    assert r[0, 0] == 0.5


def test_mans_zero_strength_is_identity():
    torch.manual_seed(0)
    t = torch.rand(5)
    r = torch.rand(5, 6)
    assert torch.allclose(model_aware_time(t, r, 0.0, 0.0), t[:, None].expand(5, 6))


def test_mans_sentence_granularity_ranks_sentences_by_mean_confidence():
    # sentence 0: mean d 1.0 over its 2 real tokens (the padded 9.0 must not count)
    # sentence 1: mean d 2.0, sentence 2: mean d 3.0
    d = torch.tensor([[0.5, 1.5, 9.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    for norm in ("rank", "minmax"):
        r = sentence_confidence_rank(d, mask, norm)
        assert r.shape == d.shape
        assert torch.allclose(r, torch.tensor([1.0, 0.5, 0.0])[:, None].expand(3, 3))
    assert torch.all(sentence_confidence_rank(d[:1], mask[:1]) == 0.5)


# ---- one training pass -------------------------------------------------------------------------

class RecordingDenoiser:
    """Records the (t, z_sc) of every call; returns a fixed function of its input."""

    def __init__(self):
        self.calls = []

    def __call__(self, z_t, z_sc, t):
        self.calls.append((t.clone(), z_sc.clone(), torch.is_grad_enabled()))
        return z_t * 0.5 + z_sc * 0.1


def _pass(cfg, seed=0):
    torch.manual_seed(seed)
    z0 = normalize_embeddings(torch.randn(6, 5, 8))
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 3:] = False
    rec = RecordingDenoiser()
    out = diffusion_training_pass(rec, z0, mask, build_schedule("sqrt"), cfg)
    return out, rec


def test_self_conditioning_off_runs_one_pass_with_zero_estimate():
    out, rec = _pass(TrainingNoiseConfig(self_condition_prob=0.0))
    assert len(rec.calls) == 1
    t, z_sc, grad = rec.calls[0]
    assert torch.all(z_sc == 0) and grad
    assert out.t_sc is None and out.z0_hat.shape == (6, 5, 8)


def test_self_conditioning_on_runs_a_no_grad_pass_first():
    out, rec = _pass(TrainingNoiseConfig(self_condition_prob=1.0))
    assert len(rec.calls) == 2
    (t1, sc1, grad1), (t2, sc2, grad2) = rec.calls
    assert not grad1 and grad2
    assert torch.all(sc1 == 0) and sc2.abs().sum() > 0
    assert torch.allclose(t1, t2), "baseline: the estimate is made at the trained level"


def test_scp_estimate_is_made_above_the_trained_level():
    for seed in range(5):
        out, rec = _pass(TrainingNoiseConfig(self_condition_prob=1.0, scp=True, scp_delta_max=0.4), seed)
        (t_sc, _, _), (t_train, _, _) = rec.calls
        assert torch.all(t_sc >= t_train) and torch.any(t_sc > t_train)
        assert torch.allclose(out.t_sc, t_sc)
        gap = out.t_sc - out.t_theta
        assert torch.all(gap <= 0.4 + 1e-6) and torch.all(out.t_sc <= 1), "t' - t within delta_max"


def test_scp_chain_self_conditions_the_scp_estimate_from_a_noisier_level():
    for seed in range(5):
        cfg = TrainingNoiseConfig(self_condition_prob=1.0, scp=True, scp_delta_max=0.4, scp_chain=True)
        out, rec = _pass(cfg, seed)
        assert len(rec.calls) == 3  # estimate at t'', SCP estimate at t', trained pass
        (t2, sc0, grad0), (t1, sc1, grad1), (t0, sc2, grad2) = rec.calls
        assert not grad0 and not grad1 and grad2
        assert torch.all(sc0 == 0), "the first estimate of the chain has none to condition on"
        assert sc1.abs().sum() > 0 and sc2.abs().sum() > 0
        assert torch.all(t2 >= t1) and torch.all(t1 >= t0) and torch.any(t2 > t1)
        assert torch.allclose(out.t_sc, t1)


def test_mans_pass_raises_per_token_times_and_scp_stays_above():
    cfg = TrainingNoiseConfig(
        self_condition_prob=1.0, scp=True, mans=True, mans_strength=0.8, mans_granularity="token"
    )
    out, rec = _pass(cfg)
    assert len(rec.calls) == 3  # MANS probe, SC estimate, trained pass
    probe_t = rec.calls[0][0]
    assert torch.allclose(probe_t, out.t[:, None].expand_as(probe_t))
    assert out.t_theta.shape == (6, 5)
    assert torch.all(out.t_theta >= out.t[:, None] - 1e-6)
    assert (out.t_theta - out.t[:, None]).abs().sum() > 0
    assert torch.all(rec.calls[1][0] >= rec.calls[2][0])


def test_mans_sentence_granularity_keeps_one_level_per_sentence():
    cfg = TrainingNoiseConfig(
        self_condition_prob=1.0, scp=True, mans=True, mans_strength=0.8, mans_granularity="sentence"
    )
    out, rec = _pass(cfg)
    assert torch.allclose(out.t_theta, out.t_theta[:, :1].expand(6, 5)), "one level a sentence"
    assert torch.all(out.t_theta >= out.t[:, None] - 1e-6)
    assert (out.t_theta - out.t[:, None]).abs().sum() > 0
    assert torch.allclose(out.t_sc, out.t_sc[:, :1].expand(6, 5))
    assert torch.all(out.t_sc >= out.t_theta)


class KnownErrorDenoiser:
    """Returns z_0 plus a known error per position, so MANS's confidence ranking is known: the
    smaller the error, the more confident the model."""

    def __init__(self, z0, error):
        self.z0, self.error = z0, error

    def __call__(self, z_t, z_sc, t):
        return self.z0 + self.error[..., None]


@pytest.mark.parametrize("granularity", ["token", "sentence"])
def test_mans_pass_noises_the_most_confident_most_by_lambda(granularity):
    """t_theta = t + lambda (1 - t) r with r = 1 for the smallest error, 0 for the largest."""
    torch.manual_seed(0)
    z0 = normalize_embeddings(torch.randn(3, 4, 8))
    mask = torch.ones(3, 4, dtype=torch.bool)
    if granularity == "token":  # token 0 has the smallest error in every sentence
        error = torch.arange(4.0).expand(3, 4)
        r = torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]).expand(3, 4)
    else:  # sentence 0 has the smallest error of the batch
        error = torch.arange(3.0)[:, None].expand(3, 4)
        r = torch.tensor([1.0, 0.5, 0.0])[:, None].expand(3, 4)
    cfg = TrainingNoiseConfig(self_condition_prob=0.0, mans=True, mans_strength=0.6,
                              mans_granularity=granularity)
    out = diffusion_training_pass(KnownErrorDenoiser(z0, error), z0, mask, build_schedule("sqrt"), cfg)
    t = out.t[:, None]
    assert torch.allclose(out.t_theta, t + 0.6 * (1 - t) * r, atol=1e-6)


@pytest.mark.parametrize("granularity", ["token", "sentence"])
def test_mans_pass_at_zero_strength_is_the_pass_without_mans(granularity):
    base = dict(self_condition_prob=1.0, scp=True, mans_granularity=granularity)
    a, _ = _pass(TrainingNoiseConfig(mans=True, mans_strength=0.0, **base))
    b, _ = _pass(TrainingNoiseConfig(mans=False, **base))
    assert torch.equal(a.t_theta, b.t_theta) and torch.equal(a.t_sc, b.t_sc)
    assert torch.equal(a.z0_hat, b.z0_hat)


@pytest.mark.parametrize("shared_noise", [False, True])
def test_scp_estimate_noise_is_fresh_unless_shared(shared_noise):
    """--scp-shared-noise builds z_{t'} from the trained latent's eps; by default it is a new draw."""
    torch.manual_seed(1)
    z0 = normalize_embeddings(torch.randn(6, 5, 8))
    mask = torch.ones(6, 5, dtype=torch.bool)
    rec = InputRecordingDenoiser()
    s = build_schedule("sqrt")
    cfg = TrainingNoiseConfig(self_condition_prob=1.0, scp=True, scp_shared_noise=shared_noise)
    out = diffusion_training_pass(rec, z0, mask, s, cfg)
    (t_sc, _, _), (t_theta, _, _) = rec.calls
    eps = (rec.inputs[1] - s.alpha(t_theta)[..., None] * z0) / s.sigma(t_theta)[..., None]
    shared = q_sample(z0, t_sc, s, eps)
    assert torch.allclose(rec.inputs[0], shared, atol=1e-5) == shared_noise


def test_mans_model_time_sentence_tells_the_denoiser_one_level_a_sentence():
    cfg = TrainingNoiseConfig(
        self_condition_prob=1.0, scp=True, mans=True, mans_strength=0.8,
        mans_granularity="token", mans_model_time="sentence",
    )
    out, rec = _pass(cfg)
    assert (out.t_theta - out.t_theta[:, :1]).abs().sum() > 0, "the noise itself stays per token"
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 3:] = False
    for t_told, levels in ((rec.calls[1][0], out.t_sc), (rec.calls[2][0], out.t_theta)):
        assert torch.allclose(t_told, t_told[:, :1].expand(6, 5))
        mean = (levels * mask).sum(-1) / mask.sum(-1)
        assert torch.allclose(t_told[:, 0], mean)


class InputRecordingDenoiser(RecordingDenoiser):
    """Also records each call's z_t."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def __call__(self, z_t, z_sc, t):
        self.inputs.append(z_t.clone())
        return super().__call__(z_t, z_sc, t)


def _estimate_input_pass(prob, clamp_fn=None, seed=0):
    torch.manual_seed(seed)
    z0 = normalize_embeddings(torch.randn(6, 5, 8)).requires_grad_()
    mask = torch.ones(6, 5, dtype=torch.bool)
    rec = InputRecordingDenoiser()
    schedule = build_schedule("sqrt")
    cfg = TrainingNoiseConfig(self_condition_prob=1.0, estimate_input_prob=prob)
    out = diffusion_training_pass(rec, z0, mask, schedule, cfg, clamp_fn=clamp_fn)
    return z0, rec, schedule, out


def test_estimate_input_centres_the_trained_latent_on_the_clamped_estimate():
    """Baseline self-conditioning shares eps between its two passes, so z_t - alpha z_0 of the
    estimate's pass is the sigma eps that the trained latent must carry around clamp(z_sc)."""
    clamp = lambda z: z.round()  # noqa: E731  any fixed map stands in for the nearest token
    z0, rec, schedule, out = _estimate_input_pass(1.0, clamp)
    (t, _, _), (_, z_sc, _) = rec.calls
    alpha = schedule.alpha(t.unsqueeze(-1))
    noise = rec.inputs[0] - alpha * z0
    assert torch.allclose(rec.inputs[1], alpha * clamp(z_sc) + noise, atol=1e-5)
    assert not torch.allclose(rec.inputs[1], rec.inputs[0])


def test_estimate_input_off_keeps_the_z0_latent_and_its_gradient():
    z0, rec, _, out = _estimate_input_pass(0.0)
    assert torch.equal(rec.inputs[1], rec.inputs[0])
    out.z0_hat.sum().backward()
    assert z0.grad is not None and z0.grad.abs().sum() > 0


def test_estimate_input_keeps_the_gradient_of_the_sentences_it_leaves():
    torch.manual_seed(3)
    z0, rec, _, out = _estimate_input_pass(0.5, seed=3)
    out.z0_hat.sum().backward()
    moved = (rec.inputs[1] - rec.inputs[0]).abs().sum((1, 2)) > 0
    assert moved.any() and not moved.all(), "seed 3 moves some sentences, not all"
    kept_grad = z0.grad.abs().sum((1, 2)) > 0
    assert torch.equal(kept_grad, ~moved)


def test_noise_levels_stay_float32_for_half_precision_latents():
    """Under --fp16 (or --bf16) the latents are half precision; the levels must not be, or they
    would lie on a grid of 2^-11 (2^-8) in [0.5, 1), off the sampler's float32 levels."""
    torch.manual_seed(0)
    z0 = normalize_embeddings(torch.randn(6, 5, 8)).to(torch.bfloat16)
    rec = RecordingDenoiser()
    cfg = TrainingNoiseConfig(self_condition_prob=1.0, scp=True, mans=True, mans_granularity="token")
    out = diffusion_training_pass(rec, z0, torch.ones(6, 5, dtype=torch.bool), build_schedule("sqrt"), cfg)
    assert out.t.dtype == out.t_theta.dtype == out.t_sc.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t, _, _ in rec.calls)
    assert not torch.equal(out.t, out.t.to(torch.bfloat16).float()), "levels off the bfloat16 grid"
    assert out.z0_hat.dtype == torch.bfloat16  # the latents keep their dtype


def test_unknown_mans_choices_are_refused_not_read_as_token():
    for field in ("mans_granularity", "mans_model_time"):
        cfg = TrainingNoiseConfig(mans=True, **{field: "sentnce"})
        with pytest.raises(ValueError, match=f"unknown {field} 'sentnce'"):
            _pass(cfg)


def test_mans_off_leaves_times_per_sentence():
    out, _ = _pass(TrainingNoiseConfig(mans=False))
    assert torch.allclose(out.t_theta, out.t[:, None].expand(6, 5))


# ---- the K-step sampler -------------------------------------------------------------------------

def test_step_times():
    assert torch.allclose(step_times(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert torch.allclose(step_times(4, t_end=0.2), torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2]))


@pytest.mark.parametrize("exponent", [0.25, 0.5, 2.0])
def test_step_times_exponent_keeps_the_ends_and_moves_the_steps(exponent):
    """t_k = t_end + (1 - t_end) (1 - k/K)^rho: same ends as the uniform grid, strictly
    decreasing; rho < 1 keeps every inner level above the uniform one (more steps at high
    noise), rho > 1 below it."""
    uniform, shaped = step_times(5, t_end=0.5), step_times(5, t_end=0.5, exponent=exponent)
    assert shaped[0] == 1.0 and shaped[-1] == pytest.approx(0.5)
    assert (shaped[1:] < shaped[:-1]).all()
    inner = shaped[1:-1] - uniform[1:-1]
    assert ((inner > 0) if exponent < 1 else (inner < 0)).all()
    assert shaped[2].item() == pytest.approx(0.5 + 0.5 * 0.6 ** exponent)
    with pytest.raises(ValueError, match="exponent"):
        SamplerConfig(time_exponent=0.0).validate()


@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_sampler_never_runs_below_its_end_time(steps):
    """A model trained on U(t_min, 1) is never asked to denoise a level it has not seen."""
    rec = RecordingDenoiser()
    sample(rec, lambda z: z, torch.randn(2, 3, 4), build_schedule("sqrt"), SamplerConfig(steps=steps, t_end=0.3))
    levels = [t[0, 0].item() for t, _, _ in rec.calls]
    assert levels[0] == 1.0 and min(levels) > 0.3
    assert levels[-1] == pytest.approx(0.3 + 0.7 / steps)
    with pytest.raises(ValueError, match="end time"):
        SamplerConfig(t_end=1.0).validate()


@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_sampler_runs_the_denoiser_exactly_k_times(steps):
    rec = RecordingDenoiser()
    table = torch.randn(11, 8)
    out = sample(rec, lambda z: z @ table.t(), torch.randn(3, 4, 8), build_schedule("sqrt"), SamplerConfig(steps=steps))
    assert out.denoiser_calls == steps == len(rec.calls)
    assert out.logits.shape == (3, 4, 11)
    # time goes 1 -> 1/K; self-conditioning is the previous step's estimate (zeros first)
    assert torch.allclose(rec.calls[0][0], torch.ones(3, 4))
    assert torch.all(rec.calls[0][1] == 0)
    if steps > 1:
        assert rec.calls[1][1].abs().sum() > 0
        assert torch.isclose(rec.calls[-1][0][0, 0], torch.tensor(1.0 / steps))


@pytest.mark.parametrize("self_conditioning, passes_a_step", [("reuse", 1), ("recompute", 2)])
def test_sampler_hands_each_steps_estimate_to_on_estimate(self_conditioning, passes_a_step):
    """on_estimate sees step k's estimate, the one the next step is conditioned on (with
    recompute, the step's second pass, not the self-conditioning one), and the last is the output."""
    estimates, outputs = [], []

    def den(z_t, z_sc, t):
        outputs.append(z_t * 0.5 + z_sc * 0.1 + t[..., None])
        return outputs[-1]

    out = sample(den, lambda z: z, torch.randn(2, 3, 4), build_schedule("sqrt"),
                 SamplerConfig(steps=3, self_conditioning=self_conditioning),
                 on_estimate=lambda k, z0_hat: estimates.append((k, z0_hat)))
    assert out.denoiser_calls == 3 * passes_a_step
    assert [k for k, _ in estimates] == [0, 1, 2]
    for (_, seen), made in zip(estimates, outputs[passes_a_step - 1::passes_a_step]):
        assert seen is made
    assert estimates[-1][1] is out.z0_hat


def test_sampler_is_deterministic_and_rejects_bad_steps():
    table = torch.randn(7, 8)

    def run():
        torch.manual_seed(3)
        z = torch.randn(2, 5, 8)
        return sample(lambda a, b, t: torch.tanh(a + b), lambda z: z @ table.t(), z,
                      build_schedule("cosine"), SamplerConfig(steps=5, clamping=True),
                      clamp_fn=lambda z: table[(z @ table.t()).argmax(-1)]).logits

    assert torch.equal(run(), run())
    # the generator's batch independence rests on this: noise comes in through z and
    # step_noise only, never from the global generator
    state = torch.get_rng_state()
    run_once = sample(lambda a, b, t: torch.tanh(a + b), lambda z: z @ table.t(), torch.ones(2, 5, 8),
                      build_schedule("cosine"), SamplerConfig(steps=3, update="renoise"),
                      step_noise=torch.zeros(2, 2, 5, 8))
    assert run_once.denoiser_calls == 3
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="decoding steps"):
        SamplerConfig(steps=0).validate()


def test_one_step_sampler_is_the_direct_prediction():
    den = lambda z, sc, t: z * 0 + 1.0
    out = sample(den, lambda z: z, torch.randn(1, 2, 3), build_schedule("sqrt"), SamplerConfig(steps=1))
    assert torch.allclose(out.z0_hat, torch.ones(1, 2, 3))


def test_ddim_recovers_z0_from_a_perfect_denoiser():
    """With f(z_t) = z_0 exactly, every DDIM step stays on the forward trajectory."""
    s = build_schedule("sqrt")
    z0 = torch.randn(2, 3, 4)
    eps = torch.randn_like(z0)
    z1 = q_sample(z0, torch.ones(2), s, eps)
    seen = []

    def den(z_t, z_sc, t):
        seen.append((z_t, t[0, 0].item()))
        return z0

    sample(den, lambda z: z, z1, s, SamplerConfig(steps=4))
    for z_t, tk in seen:
        assert torch.allclose(z_t, q_sample(z0, torch.full((2,), tk), s, eps), atol=1e-5)


def test_renoise_puts_each_step_on_the_forward_process_of_the_estimate_with_fresh_noise():
    """z_{t_{k+1}} = alpha(t_{k+1}) z0_hat_k + sigma(t_{k+1}) eps_k: with f = z_0 exactly, the
    latent at step k + 1 is q_sample(z_0, t_{k+1}) with the k-th draw, not z_1's noise."""
    s = build_schedule("sqrt", noise_scale=2.0)
    z0 = torch.randn(2, 3, 4)
    z1 = q_sample(z0, torch.ones(2), s, torch.randn_like(z0))
    step_noise = torch.randn(3, 2, 3, 4)
    seen = []

    def den(z_t, z_sc, t):
        seen.append((z_t, t[0, 0].item()))
        return z0

    sample(den, lambda z: z, z1, s, SamplerConfig(steps=4, update="renoise"), step_noise=step_noise)
    assert torch.equal(seen[0][0], z1)
    for k, (z_t, tk) in enumerate(seen[1:]):
        assert torch.allclose(z_t, q_sample(z0, torch.full((2,), tk), s, step_noise[k]), atol=1e-5)
    # the same draws handed over one at a time, as the generator does, give the same trajectory
    asked = []
    on_demand = sample(den, lambda z: z, z1, s, SamplerConfig(steps=4, update="renoise"),
                       step_noise=lambda k: asked.append(k) or step_noise[k])
    assert asked == [0, 1, 2] and len(seen) == 8
    assert all(torch.equal(a[0], b[0]) for a, b in zip(seen[1:4], seen[5:]))
    assert torch.equal(on_demand.z0_hat, z0)
    with pytest.raises(ValueError, match="renoise update needs step_noise with 3 draws"):
        sample(den, lambda z: z, z1, s, SamplerConfig(steps=4, update="renoise"), step_noise=step_noise[:2])
    with pytest.raises(ValueError, match="unknown sampler update 'ancestral'"):
        SamplerConfig(update="ancestral").validate()


def test_uniform_copy_maps_target_positions_onto_real_source_tokens():
    from fastdiss_fairseq.models.denoiser import uniform_copy

    # two sentences, source length 4 (left-padded: 2 real tokens in row 0), C = 1
    states = torch.tensor([[0.0, 0.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]]).t().unsqueeze(-1)  # T x B x C
    pad = torch.tensor([[True, True, False, False], [False, False, False, False]])
    tgt_mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    out = uniform_copy(states, pad, tgt_mask).squeeze(-1)
    assert out[0].tolist() == [5.0, 5.0, 6.0, 6.0]
    assert out[1, :2].tolist() == [1.0, 3.0]


def test_training_noise_options_reach_the_training_pass():
    """Every TrainingNoiseConfig field is a criterion option of the same name and default (a
    default changed in one place only, as --scp-delta-max once was, fails here), and the
    criterion hands each option's value on: a value it dropped would train with the default."""
    import dataclasses
    from types import SimpleNamespace

    from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLoss, FastDiSSLossConfig

    criterion = FastDiSSLossConfig()
    for f in dataclasses.fields(TrainingNoiseConfig):
        assert hasattr(criterion, f.name), f"TrainingNoiseConfig.{f.name} has no criterion option"
        assert getattr(criterion, f.name) == f.default, f.name
    changed = dict(t_min=0.3, self_condition_prob=0.7, scp=True, scp_mode="fixed", scp_delta_max=0.1,
                   scp_shared_noise=True, scp_chain=True, mans=True, mans_strength=0.6,
                   mans_measure="likelihood", mans_normalization="minmax", mans_granularity="token",
                   mans_model_time="sentence", estimate_input_prob=0.2)
    assert set(changed) == {f.name for f in dataclasses.fields(TrainingNoiseConfig)}
    assert all(value != getattr(criterion, name) for name, value in changed.items())
    task = SimpleNamespace(target_dictionary=SimpleNamespace(eos=lambda: 2, pad=lambda: 1))
    with mock.patch("fastdiss_fairseq.criterions.fastdiss_loss.check_fastdiss_task"):
        loss = FastDiSSLoss(task, FastDiSSLossConfig(**changed))
    assert dataclasses.asdict(loss.noise_cfg) == changed


def test_packed_positions_round_trip_and_scratch_keeps_zero_padding():
    from fastdiss_fairseq.models.packed_layers import PackedPositions

    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pos = PackedPositions.from_mask(mask, torch.float32)
    x = torch.randn(2, 3, 4)
    packed = pos.pack(x)
    assert torch.equal(packed, x[mask])
    for scratch in (False, True):
        out = pos.unpack(packed, scratch=scratch)
        assert torch.equal(out[mask], x[mask]) and not out[~mask].any()
    # a second scratch unpack of the same width reuses the buffer: new real rows, pad rows still zero
    again = pos.unpack(packed * 2, scratch=True)
    assert again.data_ptr() == out.data_ptr()
    assert torch.equal(again[mask], 2 * x[mask]) and not again[~mask].any()
    # another width (or dtype) gets its own buffer; a plain unpack never shares one
    assert pos.unpack(torch.ones(3, 5), scratch=True).data_ptr() != again.data_ptr()
    assert pos.unpack(packed).data_ptr() != again.data_ptr()
