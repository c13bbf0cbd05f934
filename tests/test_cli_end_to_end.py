"""End-to-end: the stock fairseq CLIs with --user-dir fastdiss_fairseq on tiny real data."""

import math
import re

import pytest
import torch

from conftest import SIZES, TINY_TRAIN_ARGS, USER_DIR, run_cli

GEN_ARGS = ["--user-dir", USER_DIR, "--task", "fastdiss_translation", "--cpu",
            "--max-tokens", "2000", "--remove-bpe", "--seed", "7"]


def hypotheses(stdout: str):
    return dict(re.findall(r"^H-(\d+)\t\S+\t?(.*)$", stdout, flags=re.M))


def load_with_test_batch(tiny_data, ckpt, max_sentences, **generation):
    """The checkpoint as fairseq-generate loads it (generation options as task overrides) and
    the first batch of the test split."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(tiny_data), **generation}
    )
    task.load_dataset("test")
    batch = next(task.get_batch_iterator(task.dataset("test"), max_sentences=max_sentences).next_epoch_itr(shuffle=False))
    return models, task, batch


def test_train_logs_each_loss_term_and_saves(tiny_model):
    ckpt, log = tiny_model
    assert ckpt.exists()
    line = [l for l in log.splitlines() if "| train |" in l][-1]
    for term in ("diffusion_loss", "rounding_loss", "length_loss", "mans_t_increase"):
        assert re.search(rf"{term} [-\d.]+", line), f"{term} missing from: {line}"
    assert float(re.search(r"mans_t_increase ([-\d.]+)", line).group(1)) > 0
    assert "num_updates 30" in line


@pytest.mark.parametrize("steps", [1, 5])
def test_generate_prints_hypotheses_and_bleu(tiny_data, tiny_model, steps):
    ckpt, _ = tiny_model
    out = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--decoding-steps", steps,
                  "--length-beam", "2").stdout
    hyps = hypotheses(out)
    assert len(hyps) == SIZES["test"]
    assert all(h.strip() for h in hyps.values()), "every hypothesis has tokens"
    bleu = re.search(r"Generate test with beam=\d+: BLEU4 = ([\d.]+)", out)
    assert bleu is not None and 0.0 <= float(bleu.group(1)) <= 100.0


def test_generate_is_deterministic_for_a_seed(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    args = [tiny_data, *GEN_ARGS, "--path", ckpt, "--decoding-steps", "3", "--noise-samples", "2"]
    first = run_cli("generate", *args).stdout
    # H-lines with their scores: a changed noise draw moves the score even where the words agree
    # (to 4 decimals: other batch shapes change float sums in the last digits)
    def scored(out):
        lines = re.findall(r"^H-(\d+)\t(\S+)\t?(.*)$", out, flags=re.M)
        return sorted((i, round(float(score), 4), words) for i, score, words in lines)

    assert scored(first) and scored(first) == scored(run_cli("generate", *args).stdout)
    # batching does not change a sentence's output
    assert scored(first) == scored(run_cli("generate", *args, "--batch-size", "3").stdout)
    # which would prove nothing if the output did not depend on the noise at all
    assert scored(first) != scored(run_cli("generate", *args, "--seed", "8").stdout)


def test_generate_on_the_train_split_keeps_every_sentence(tiny_data, tiny_model):
    """fairseq drops a last batch whose size is not a multiple of --required-batch-size-multiple
    (8): generating the train split (400 sentences, batches of 7) lost one sentence, silently."""
    ckpt, _ = tiny_model
    proc = run_cli("generate", tiny_data, *GEN_ARGS, "--path", ckpt, "--gen-subset", "train",
                   "--batch-size", "7", "--decoding-steps", "1", "--length-beam", "1")
    assert len(hypotheses(proc.stdout)) == SIZES["train"]


def test_validation_loss_is_the_same_at_every_run_and_follows_the_seed(tiny_data, tiny_model):
    """The loss draws t, eps and the self-conditioning coin: unseeded, fairseq-validate gave 7.446
    and 7.512 for one checkpoint, and checkpoint_best.pt and --patience followed that noise."""
    ckpt, _ = tiny_model

    def valid_loss(seed):
        proc = run_cli("validate", tiny_data, "--user-dir", USER_DIR, "--task", "fastdiss_translation",
                       "--path", ckpt, "--cpu", "--max-tokens", "2000", "--valid-subset", "valid",
                       "--seed", seed)
        return float(re.search(r"valid on 'valid' subset \| loss ([\d.]+)", proc.stdout + proc.stderr).group(1))

    first = valid_loss(1)
    assert valid_loss(1) == first
    assert valid_loss(2) != first


def test_generate_prints_steps_and_each_steps_estimate(tiny_data, tiny_model):
    """fairseq-generate's --print-step and --retain-iter-history, as for fairseq's own refinement
    models: I-<id> holds K, E-<id>_<k> the estimate after k + 1 steps, the last one the hypothesis
    (no --remove-bpe here: E- lines are printed with their BPE)."""
    ckpt, _ = tiny_model
    args = [tiny_data, "--user-dir", USER_DIR, "--task", "fastdiss_translation", "--cpu", "--seed", "7",
            "--path", ckpt, "--decoding-steps", "3", "--length-beam", "2", "--print-step"]
    out = run_cli("generate", *args, "--retain-iter-history").stdout
    hyps = hypotheses(out)
    assert re.findall(r"^I-(\d+)\t(\d+)$", out, flags=re.M) == [(i, "3") for i in hyps]
    history = re.findall(r"^E-(\d+)_(\d+)\t(.*)$", out, flags=re.M)
    assert [(i, k) for i, k, _ in history] == [(i, str(k)) for i in hyps for k in range(3)]
    assert {i: text for i, k, text in history if k == "2"} == hyps
    assert any(text != hyps[i] for i, k, text in history if k == "0"), "the first steps differ"
    # the history is only kept when asked for, and does not change the output
    plain = run_cli("generate", *args).stdout
    assert "E-" not in plain and hypotheses(plain) == hyps


def test_the_sampler_updates_share_the_start_noise(tiny_data, tiny_model):
    """z_1 is draw 0 of a sentence's seeded noise for both updates, so one step (no update yet)
    gives the same output either way; the renoise update draws its own noise after it."""
    ckpt, _ = tiny_model
    outputs = {}
    for update in ("ddim", "renoise"):
        models, task, batch = load_with_test_batch(tiny_data, ckpt, 4, decoding_steps=1, sampler_update=update)
        models[0].eval()  # as fairseq-generate does: no dropout
        outputs[update] = [h[0]["tokens"].tolist() for h in task.build_generator(models, None).generate(models, batch)]
    assert outputs["ddim"] == outputs["renoise"]


def test_candidate_noise_is_drawn_per_step_and_per_sentence_whatever_the_batch():
    """Each draw is fresh (B*C, n_max, d) noise, zero past each sentence's longest candidate;
    a sentence's draws come from its own seeded generator, the same in any batch."""
    from fastdiss_fairseq.generator import CandidateNoise

    pair = CandidateNoise(1, torch.tensor([7, 3]), torch.tensor([[4, 2], [3, 3]]), 16, "cpu")
    alone = CandidateNoise(1, torch.tensor([3]), torch.tensor([[3, 3]]), 16, "cpu")
    draws = [pair.draw() for _ in range(3)]
    assert all(d.shape == (4, 4, 16) for d in draws)
    for d in draws:
        assert torch.equal(alone.draw(), d[2:, :3]) and not d[2:, 3].any()
    assert not torch.equal(draws[0], draws[1])


def test_candidate_noise_is_shared_across_a_sentences_lengths_not_across_its_samples():
    """Candidate l * S + s takes noise s: the L lengths of a sentence share it on their common
    positions, its S samples do not; "independent" gives every candidate its own."""
    from fastdiss_fairseq.generator import CandidateNoise

    lengths = torch.tensor([[5, 5, 3, 3, 4, 4]])  # L = 3 lengths x S = 2 samples
    shared = CandidateNoise(1, torch.tensor([0]), lengths, 8, "cpu", samples=2).draw()
    for c in range(2, 6):
        assert torch.equal(shared[c], shared[c % 2])  # positions past a length are never read
    assert not torch.equal(shared[0], shared[1])
    independent = CandidateNoise(1, torch.tensor([0]), lengths, 8, "cpu", samples=2,
                                 shared_across_lengths=False).draw()
    assert not torch.equal(independent[0], independent[2])
    with pytest.raises(ValueError, match="lengths x 4 noise samples"):
        CandidateNoise(1, torch.tensor([0]), lengths, 8, "cpu", samples=4)


def test_interactive_translates_raw_stdin(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    out = run_cli(
        "interactive", tiny_data, "--user-dir", USER_DIR, "--task", "fastdiss_translation",
        "--path", ckpt, "--cpu", "--source-lang", "de", "--target-lang", "en",
        "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", tiny_data / "bpecodes",
        "--decoding-steps", "5", "--buffer-size", "2",
        stdin="Öffnen Sie die Datei.\nKlicken Sie auf OK.\nHallo Welt\n",
    ).stdout
    assert len(re.findall(r"^H-\d+\t", out, flags=re.M)) == 3
    assert len(re.findall(r"^D-\d+\t", out, flags=re.M)) == 3


def test_a_batch_without_ids_keys_each_sentences_noise_by_its_source(tiny_data, tiny_model, monkeypatch):
    """fairseq-interactive's batches carry no sentence ids (fairseq-generate's do). The noise of
    a sentence is keyed by its source there, not by its batch position, so --batch-size,
    --buffer-size and the other input lines do not change its translation."""
    import fastdiss_fairseq.generator as generator_module

    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 4, decoding_steps=1, length_beam=1)
    keys, real_noise = [], generator_module.CandidateNoise

    def recording_noise(seed, ids, *args, **kwargs):
        keys.append(ids.tolist())
        return real_noise(seed, ids, *args, **kwargs)

    monkeypatch.setattr(generator_module, "CandidateNoise", recording_noise)
    gen = task.build_generator(models, None)
    src = batch["net_input"]["src_tokens"]
    flipped = {"src_tokens": src.flip(0), "src_lengths": batch["net_input"]["src_lengths"].flip(0)}
    gen.generate(models, {"net_input": batch["net_input"]})
    gen.generate(models, {"net_input": flipped})
    gen.generate(models, {"net_input": {k: v[1:2] for k, v in batch["net_input"].items()}})
    gen.generate(models, batch)
    assert len(set(keys[0])) == len(keys[0]) == src.size(0), "a key per sentence"
    assert keys[1] == keys[0][::-1] and keys[2] == keys[0][1:2], "the same key wherever the sentence is"
    assert keys[3] == batch["id"].tolist(), "fairseq-generate's ids are used as they are"


def test_interactive_tokenizes_as_the_data_were_prepared(tiny_data, tiny_model):
    """prepare_parallel.py tokenized the data without HTML escaping or dash splits; fairseq's
    own --tokenizer moses would escape quotes and split dashes (tokens the model never saw)."""
    ckpt, _ = tiny_model
    proc = run_cli(
        "interactive", tiny_data, "--user-dir", USER_DIR, "--task", "fastdiss_translation",
        "--path", ckpt, "--cpu", "--source-lang", "de", "--target-lang", "en",
        "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", tiny_data / "bpecodes",
        "--decoding-steps", "1", stdin='Klicken Sie auf "Drag-and-Drop" & OK.\n',
    )
    assert "tokenizing as" in proc.stderr and "no escaping, no dash splits" in proc.stderr
    assert re.search(r"^D-0\t", proc.stdout, flags=re.M)
    # what that tokenizer makes of the line (the tiny dictionary knows too few characters for
    # the S-line to show it)
    from argparse import Namespace

    models, task, _ = load_with_test_batch(tiny_data, ckpt, 1)
    tokenizer = task.build_tokenizer(Namespace(tokenizer="moses", source_lang="de", target_lang="en",
                                               moses_no_dash_splits=False, moses_no_escape=False))
    assert tokenizer.encode('Klicken Sie auf "Drag-and-Drop" & OK.') == 'Klicken Sie auf " Drag-and-Drop " & OK .'
    assert tokenizer.decode("Click \" OK \" .") == 'Click "OK".'


def test_checkpoint_reloads_as_a_fastdiss_model(tiny_data, tiny_model):
    from fairseq import checkpoint_utils

    import fastdiss_fairseq  # noqa: F401
    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel

    ckpt, _ = tiny_model
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(tiny_data)}
    )
    assert isinstance(models[0], FastDiSSTransformerModel)
    assert cfg.criterion._name == "fastdiss_loss" and cfg.criterion.scp and cfg.criterion.mans
    state = torch.load(ckpt, map_location="cpu")  # torch's default weights_only load
    assert state["optimizer_history"][-1]["num_updates"] == 30


def test_generator_runs_the_denoiser_k_times_per_batch(tiny_data, tiny_model):
    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 8, decoding_steps=4, length_beam=3)
    gen = task.build_generator(models, None)
    hypos = gen.generate(models, batch)
    assert gen.denoiser_calls == 4
    assert len(hypos) == batch["nsentences"] and all(len(h) == 3 for h in hypos)
    scores = [h["score"] for h in hypos[0]]
    assert scores == sorted(scores, reverse=True), "candidates are ranked best first"


@pytest.mark.parametrize("offset", [True, False])
def test_the_length_beam_never_holds_one_length_twice(tiny_data, tiny_model, monkeypatch, offset):
    """A length head that favours classes below length 1 (a short source's negative offsets)
    must not fill the beam with copies of the length-1 candidate: such classes are skipped."""
    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 8, decoding_steps=1, length_beam=4)
    model = models[0]
    monkeypatch.setattr(model, "pred_length_offset", offset)
    lowest_first = -torch.arange(model.length_classes, dtype=torch.float)  # class 0 the likeliest
    monkeypatch.setattr(model, "length_logits",
                        lambda encoder_out: lowest_first.expand(batch["nsentences"], -1))
    hypos = task.build_generator(models, None).generate(models, batch)
    src_lengths = batch["net_input"]["src_lengths"].tolist()
    for sentence, src_len in zip(hypos, src_lengths):
        lengths = sorted(len(h["tokens"]) - 1 for h in sentence)
        # the four likeliest classes that give a length of at least 1
        first = src_len - model.length_classes // 2 if offset else 0
        assert lengths == [max(first, 1) + i for i in range(4)], (src_len, lengths)


def test_sampler_ends_at_the_trained_t_min_unless_told(tiny_data, tiny_model, tmp_path):
    """A model trained on U(t_min, 1) stores t_min; the generator's time grid ends there by
    default (--decoding-t-end overrides it), and checkpoints from before the field load as 0.
    The grid's shape is t_k = t_end + (1 - t_end) (1 - k/K)^rho, rho = 0.5 unless told."""
    from fairseq import checkpoint_utils

    def load(path, **overrides):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(path)], arg_overrides={"data": str(tiny_data), **overrides})
        return models, task

    def levels(models, task):  # the noise level of every denoiser pass of one batch, 4 steps
        task.load_dataset("test")
        batch = next(task.get_batch_iterator(task.dataset("test"), max_sentences=4).next_epoch_itr(shuffle=False))
        seen, model = [], models[0]
        denoise = model.denoise
        model.denoise = lambda z_t, z_sc, t, *a, **k: seen.append(t.max().item()) or denoise(z_t, z_sc, t, *a, **k)
        task.build_generator(models, None).generate(models, batch)
        return seen

    run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--t-min", "0.4", "--max-update", "2",
            "--save-dir", tmp_path / "tmin", "--disable-validation")
    trained = tmp_path / "tmin" / "checkpoint_last.pt"
    models, task = load(trained, decoding_steps=4)
    assert models[0].trained_t_min.item() == pytest.approx(0.4)
    assert levels(models, task) == pytest.approx([1.0, 0.4 + 0.6 * 0.75 ** 0.5, 0.4 + 0.6 * 0.5 ** 0.5, 0.7])
    uniform = dict(decoding_steps=4, decoding_time_exponent=1.0)
    assert levels(*load(trained, **uniform)) == pytest.approx([1.0, 0.85, 0.7, 0.55])
    assert levels(*load(trained, decoding_t_end=0.0, **uniform)) == pytest.approx([1.0, 0.75, 0.5, 0.25])

    # the tiny model trained on U(0, 1); and the same checkpoint without the field, as written
    # before it existed
    ckpt, _ = tiny_model
    assert load(ckpt)[0][0].trained_t_min.item() == 0.0
    state = torch.load(ckpt, map_location="cpu")
    del state["model"]["trained_t_min"]
    torch.save(state, tmp_path / "old.pt")
    assert levels(*load(tmp_path / "old.pt", **uniform)) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_the_training_loss_under_cpu_autocast_is_close_to_float32_and_backpropagates(tiny_data, tiny_model):
    """What fairseq-train --amp runs on a CPU (FastDiSSTranslationTask.train_step): the SCP+MANS
    loss with its custom rounding function, in bfloat16 products, near the float32 loss, with
    float32 gradients on the float32 parameters."""
    from fairseq import checkpoint_utils
    from fastdiss_fairseq.cpu_performance import cpu_training_autocast

    ckpt, _ = tiny_model
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(tiny_data)})
    model, criterion = models[0].train(), task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    batch = next(task.get_batch_iterator(task.dataset("train"), max_tokens=1024, seed=1).next_epoch_itr(shuffle=False))
    losses = {}
    for autocast in (False, True):
        torch.manual_seed(3)  # the same times, noise and self-conditioning coin flips
        model.zero_grad()
        with cpu_training_autocast(autocast):
            loss, _, _ = criterion(model, batch)
        loss.backward()
        losses[autocast] = loss.item()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert losses[True] != losses[False]  # the products really ran in bfloat16
    assert losses[True] == pytest.approx(losses[False], rel=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_amp_trains_under_bfloat16_autocast_on_the_cpu(tiny_data, tmp_path):
    """fairseq's --amp autocasts CUDA operations only; on a CPU the task autocasts to bfloat16,
    says so once, and saves an ordinary float32 checkpoint."""
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--scp", "--mans", "--amp", "--max-update", "3",
                   "--save-dir", tmp_path)
    log = proc.stdout + proc.stderr
    assert log.count("the forward runs under bfloat16 autocast") == 1, log[-3000:]
    losses = [float(x) for x in re.findall(r"\| train \|.* loss ([-\d.]+)", log)]
    assert losses and all(math.isfinite(x) for x in losses)
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("normalize_before", [True, False])
def test_inference_cache_gives_the_denoiser_output_of_the_plain_pass(tiny_data, tiny_model, normalize_before):
    """The generator computes the source side (cross-attention keys/values per sentence, the
    source copy) once per call, and runs the layers on the real positions only (packed);
    the denoiser output must equal the per-candidate, padded recomputation, pre- and post-norm."""
    from fairseq import checkpoint_utils

    ckpt, _ = tiny_model
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(tiny_data)})
    model = models[0].eval()
    torch.manual_seed(0)
    dim = model.decoder.layers[0].embed_dim
    model.decoder.source_copy_proj = torch.nn.Linear(dim, dim)  # exercise the cached copy too
    for layer in model.decoder.layers:
        layer.normalize_before = normalize_before
    task.load_dataset("test")
    batch = next(task.get_batch_iterator(task.dataset("test"), max_sentences=4).next_epoch_itr(shuffle=False))
    src_lengths = batch["net_input"]["src_lengths"]
    assert src_lengths.min() < src_lengths.max()  # the source side is padded too
    bsz, cands, n = batch["nsentences"], 3, 7
    with torch.no_grad():
        enc = model.encoder(batch["net_input"]["src_tokens"], src_lengths=src_lengths)
        mask = torch.arange(n)[None, :] < torch.randint(2, n + 1, (bsz * cands, 1))
        mask[0] = True  # one row without padding
        z_t, z_sc = torch.randn(2, bsz * cands, n, model.latent_dim)
        t = torch.rand(bsz * cands, 1).expand(-1, n)
        order = torch.arange(bsz).repeat_interleave(cands)
        plain = model.denoise(z_t, z_sc, t, mask, model.encoder.reorder_encoder_out(enc, order))
        for packed in (True, False):
            cache = model.decoder.inference_cache(enc, cands, mask, packed=packed)
            assert (cache.packed is not None) == packed
            for _ in range(2):  # a second step reuses the cache
                cached = model.denoise(z_t, z_sc, t, mask, enc, cache=cache)
                assert torch.allclose(plain[mask], cached[mask], atol=1e-5)
            if packed:
                assert not cached[~mask].any()  # nothing computed at the pad positions

        # a layer option the packed forward does not implement keeps the padded path
        model.decoder.layers[0].c_attn = torch.nn.Parameter(torch.ones(model.decoder.layers[0].nh))
        assert model.decoder.inference_cache(enc, cands, mask).packed is None


def test_eval_bleu_during_training_and_resume(tiny_data, tmp_path):
    # --decoding-dtype bfloat16 must not cast the model being trained to build its generator
    common = [tiny_data, *TINY_TRAIN_ARGS, "--save-dir", tmp_path, "--decoding-dtype", "bfloat16",
              "--eval-bleu", "--eval-bleu-remove-bpe", "--eval-bleu-detok", "space"]
    first = run_cli("train", *common, "--max-update", "12", "--validate-interval-updates", "12")
    valid = [l for l in (first.stdout + first.stderr).splitlines() if "| valid |" in l]
    assert valid and re.search(r"\| bleu [\d.]+", valid[-1]), valid
    weights = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")["model"]
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float32}
    # resuming continues the update counter from the last checkpoint
    second = run_cli("train", *common, "--max-update", "15")
    log = second.stdout + second.stderr
    assert re.search(r"Loaded checkpoint .*\(epoch \d+ @ 12 updates\)", log), log[-2000:]
    assert "num_updates 15" in log


def test_generator_rounds_real_positions_like_a_full_log_softmax(tiny_data, tiny_model, monkeypatch):
    """The generator rounds only unpadded positions, a block of rows at a time (speed); tokens
    and positional scores must be those of a log_softmax over the full padded batch of the
    sampler's last estimate."""
    import fastdiss_fairseq.clamping as token_search
    import fastdiss_fairseq.generator as generator_module

    captured = {}

    def capturing_sampler(*args, **kwargs):
        out = generator_module.sample_unpatched(*args, **kwargs)
        captured["z0_hat"] = out.z0_hat
        return out

    monkeypatch.setattr(generator_module, "sample_unpatched", generator_module.run_sampler, raising=False)
    monkeypatch.setattr(generator_module, "run_sampler", capturing_sampler)
    monkeypatch.setattr(token_search, "ROUNDING_ROWS", 7)  # several blocks and a remainder
    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 6, decoding_steps=3, length_beam=1)
    model = models[0].eval()
    hypos = task.build_generator(models, None).generate(models, batch)
    with torch.no_grad():
        logits = model.rounding_logits(captured["z0_hat"]).float()
        logits[..., model.special_symbol_ids] = float("-inf")
        lprobs, tokens = logits.log_softmax(-1).max(-1)
    for b, (best,) in enumerate(hypos):
        n = len(best["tokens"]) - 1
        assert best["tokens"][:n].tolist() == tokens[b, :n].tolist()
        assert torch.allclose(best["positional_scores"][:n], lprobs[b, :n], atol=1e-4)


def test_collapse_repeats_drops_only_tokens_equal_to_their_predecessor(tiny_data, tiny_model):
    from argparse import Namespace

    from fairseq import checkpoint_utils

    ckpt, _ = tiny_model
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(tiny_data), "decoding_steps": 1, "length_beam": 2}
    )
    models[0].eval()
    task.load_dataset("test")
    batch = next(task.get_batch_iterator(task.dataset("test"), max_sentences=50).next_epoch_itr(shuffle=False))
    plain = task.build_generator(models, Namespace()).generate(models, batch)
    collapsed = task.build_generator(models, Namespace(collapse_repeats=True)).generate(models, batch)
    changed = 0
    for p_hypos, c_hypos in zip(plain, collapsed):
        p, c = p_hypos[0], c_hypos[0]
        tokens = p["tokens"].tolist()
        keep = [i for i in range(len(tokens)) if i == 0 or tokens[i] != tokens[i - 1]]
        assert c["tokens"].tolist() == [tokens[i] for i in keep]
        assert torch.equal(c["positional_scores"], p["positional_scores"][keep])
        assert c["score"] == p["score"]  # ranked before collapsing: the same candidate wins
        changed += len(keep) < len(tokens)
    assert changed > 0, "the 30-update model repeats tokens; the option must have removed some"


def test_clamping_is_the_default_and_matches_clamping_every_position(tiny_data, tiny_model, monkeypatch):
    """The generator clamps real positions only, a block of rows at a time; the hypotheses must
    equal those of the sampler clamping the whole padded batch at once. --no-clamping differs."""
    from argparse import Namespace

    import fastdiss_fairseq.clamping as token_search
    import fastdiss_fairseq.generator as generator_module

    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 50, decoding_steps=4, length_beam=2)
    model = models[0].eval()
    assert task.generator_config().clamping and not task.generator_config(clamping=False).clamping

    def tokens(generator):
        return [h[0]["tokens"].tolist() for h in generator.generate(models, batch)]

    monkeypatch.setattr(token_search, "ROUNDING_ROWS", 5)
    clamped = tokens(task.build_generator(models, Namespace(clamping_shortlist=0)))
    unclamped = tokens(task.build_generator(models, Namespace(clamping=False)))
    assert clamped != unclamped
    # a shortlist as long as the vocabulary holds every word but the special symbols (-inf)
    whole = Namespace(clamping_shortlist=len(task.target_dictionary))
    assert tokens(task.build_generator(models, whole)) == clamped

    real_sampler = generator_module.run_sampler

    def sampler_clamping_everything(denoise, logits_fn, z_start, schedule, cfg, clamp_fn=None, **kw):
        table = model.latent_table()
        return real_sampler(denoise, logits_fn, z_start, schedule, cfg,
                            clamp_fn=lambda z: table[logits_fn(z).argmax(-1)], **kw)

    monkeypatch.setattr(generator_module, "run_sampler", sampler_clamping_everything)
    assert tokens(task.build_generator(models, Namespace(clamping_shortlist=0))) == clamped


def test_bfloat16_decoding_casts_the_network_but_not_the_latents(tiny_data, tiny_model, monkeypatch):
    """--decoding-dtype bfloat16: build_generator casts the model (as fairseq-generate's --fp16
    does), while the latents the sampler updates and the rounding logits stay float32."""
    from argparse import Namespace

    import fastdiss_fairseq.generator as generator_module

    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, 50, decoding_steps=3, length_beam=2)
    model = models[0].eval()
    seen = {"projection": set(), "latents": set(), "logits": set()}
    model.decoder.output_proj.register_forward_hook(lambda m, i, out: seen["projection"].add(out.dtype))
    real_sampler = generator_module.run_sampler

    rounding_logits = model.rounding_logits

    def recording_sampler(denoise, logits_fn, z_start, *args, **kwargs):
        def recording_denoise(*a):
            z0_hat = denoise(*a)
            seen["latents"].add(z0_hat.dtype)
            return z0_hat

        seen["latents"].add(z_start.dtype)
        return real_sampler(recording_denoise, logits_fn, z_start, *args, **kwargs)

    def recording_rounding_logits(*args):
        logits = rounding_logits(*args)
        seen["logits"].add(logits.dtype)
        return logits

    monkeypatch.setattr(generator_module, "run_sampler", recording_sampler)
    monkeypatch.setattr(model, "rounding_logits", recording_rounding_logits)
    float32_hypos = task.build_generator(models, None).generate(models, batch)
    assert seen["projection"] == {torch.float32}
    seen["projection"].clear()
    hypos = task.build_generator(models, Namespace(decoding_dtype="bfloat16")).generate(models, batch)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert seen == {"projection": {torch.bfloat16}, "latents": {torch.float32}, "logits": {torch.float32}}
    assert len(hypos) == len(float32_hypos) == batch["nsentences"] and all(len(h) == 2 for h in hypos)
    assert all(h[0]["positional_scores"].dtype == torch.float32 for h in hypos)


def test_cpu_speed_options_train_and_decode(tiny_data, tmp_path):
    """--fp32-matmul-precision medium and --input-scaling through the stock CLIs: training logs
    the settings it applied, and the checkpoint decodes (in bfloat16) with the input scaling it
    was trained with."""
    proc = run_cli("train", tiny_data, *TINY_TRAIN_ARGS, "--scp", "--mans", "--max-update", "3",
                   "--fp32-matmul-precision", "medium", "--input-scaling", "--save-dir", tmp_path)
    log = proc.stdout + proc.stderr
    assert "fastdiss CPU settings: fp32 matmul precision medium" in log
    assert "denormals flushed: True" in log
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert state["cfg"]["model"].input_scaling is True
    out = run_cli("generate", tiny_data, *GEN_ARGS, "--path", tmp_path / "checkpoint_last.pt",
                  "--decoding-steps", "2", "--no-cpu-tuning", "--decoding-dtype", "bfloat16").stdout
    assert len(hypotheses(out)) == SIZES["test"]


def test_estimate_input_centres_on_content_tokens_of_the_estimate(tiny_data, tiny_model):
    """--estimate-input-prob's latent is made around the clamped self-conditioning estimate as
    the sampler clamps it: the nearest *content* token of each real position (padding keeps the
    estimate itself, as in the sampler), same noise as z_t."""
    from fastdiss_fairseq.criterions.fastdiss_loss import content_tokens
    from fastdiss_fairseq.diffusion import TrainingNoiseConfig

    ckpt, _ = tiny_model
    models, task, batch = load_with_test_batch(tiny_data, ckpt, max_sentences=4)
    model = models[0].eval()
    calls, plain_denoise = [], model.denoise

    def recording_denoise(z_t, z_sc, t, *args, **kwargs):
        calls.append((z_t.detach().clone(), z_sc.detach().clone(), t.clone()))
        return plain_denoise(z_t, z_sc, t, *args, **kwargs)

    model.denoise = recording_denoise
    tgt = content_tokens(batch["target"], model.padding_idx, task.target_dictionary.eos())
    torch.manual_seed(0)
    out = model(batch["net_input"]["src_tokens"], batch["net_input"]["src_lengths"], tgt_tokens=tgt,
                noise_cfg=TrainingNoiseConfig(self_condition_prob=1.0, estimate_input_prob=1.0))
    (z_first, _, t), (z_trained, z_sc, _) = calls
    with torch.no_grad():
        logits = model.rounding_logits(z_sc)
        logits[..., model.special_symbol_ids] = float("-inf")
        tokens = logits.argmax(-1)
        alpha = model.schedule.alpha(t.unsqueeze(-1))
        real = out["mask"]
        centre = torch.where(real[..., None], model.latent_table()[tokens], z_sc)
        expected = z_first - alpha * out["z0"] + alpha * centre
    assert not real.all()  # the batch has padding, so both cases are checked
    assert not torch.isin(tokens[real], model.special_symbol_ids).any()
    assert torch.allclose(z_trained, expected, atol=1e-4)
