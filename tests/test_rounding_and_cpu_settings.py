"""The blocked rounding loss, the denoiser's input scaling and the CPU settings of the task."""


import pytest
import torch
import torch.nn.functional as F

from fastdiss_fairseq.diffusion import build_schedule, normalize_embeddings, q_sample
from fastdiss_fairseq.diffusion.rounding import rounding_loss


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("block_rows", [3, 256])
def test_rounding_loss_matches_cross_entropy_in_value_and_gradients(eps, block_rows):
    h = (torch.randn(10, 8) * 3).requires_grad_()  # 10 rows: blocks of 3 leave a remainder
    table = torch.randn(13, 8, requires_grad=True)
    y = torch.randint(0, 13, (10,))

    ref = F.cross_entropy(h @ table.t(), y, label_smoothing=eps)
    ref_nll = F.cross_entropy(h @ table.t(), y)
    (2.5 * ref).backward()  # a factor in front, as --rounding-loss-factor puts there
    ref_grads = h.grad.clone(), table.grad.clone()
    h.grad = table.grad = None

    out = rounding_loss(h, table, y, eps, block_rows=block_rows)
    (2.5 * out.loss).backward()
    assert torch.allclose(out.loss, ref, atol=1e-5)
    assert torch.allclose(out.nll, ref_nll, atol=1e-5)
    assert not out.nll.requires_grad
    assert torch.allclose(h.grad, ref_grads[0], atol=1e-6)
    assert torch.allclose(table.grad, ref_grads[1], atol=1e-6)


def test_rounding_loss_without_grad_gives_the_same_value():
    h, table, y = torch.randn(7, 4), torch.randn(9, 4), torch.randint(0, 9, (7,))
    with torch.no_grad():
        out = rounding_loss(h.requires_grad_(), table, y, 0.1, block_rows=2)
    assert torch.allclose(out.loss, F.cross_entropy(h @ table.t(), y, label_smoothing=0.1), atol=1e-5)
    assert not out.loss.requires_grad


def test_rounding_loss_of_no_tokens_is_zero_and_backpropagates():
    h = torch.zeros(0, 4, requires_grad=True)
    table = torch.randn(5, 4, requires_grad=True)
    out = rounding_loss(h, table, torch.zeros(0, dtype=torch.long), 0.1)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(table.grad, torch.zeros_like(table))


def test_rounding_loss_rejects_bad_settings():
    h, table, y = torch.randn(2, 4), torch.randn(5, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="label smoothing"):
        rounding_loss(h, table, y, 1.5)
    with pytest.raises(ValueError, match="block_rows"):
        rounding_loss(h, table, y, 0.1, block_rows=0)


@pytest.mark.parametrize("t", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_input_scale_gives_z_t_unit_variance_at_every_level(t):
    schedule = build_schedule("sqrt", noise_scale=4.0)
    z0 = normalize_embeddings(torch.randn(40, 100, 64))  # (B, n, d), unit variance per coordinate
    level = torch.full((40, 100), t)  # per token, as the denoiser gets it
    z_t = q_sample(z0, level, schedule, torch.randn_like(z0))
    scaled = z_t * schedule.input_scale(level).unsqueeze(-1)
    assert abs(scaled.var().item() - 1.0) < 0.05
    assert z_t.var().item() > 1.5 or t < 0.01  # unscaled, it grows towards F^2 = 16


def test_cpu_settings_reject_an_unknown_precision_and_set_a_known_one():
    from fastdiss_fairseq.cpu_performance import apply_cpu_settings

    before = torch.get_float32_matmul_precision()
    flash = torch.backends.cuda.flash_sdp_enabled()
    try:
        with pytest.raises(ValueError, match="fp32-matmul-precision"):
            apply_cpu_settings("low")
        apply_cpu_settings("medium", tune=False)
        assert torch.get_float32_matmul_precision() == "medium"
        if not torch.cuda.is_available():
            assert not torch.backends.cuda.flash_sdp_enabled()
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cuda.enable_flash_sdp(flash)


def test_fused_cpu_attention_is_off_only_for_float32_attention_under_reduced_precision():
    from fastdiss_fairseq.cpu_performance import apply_cpu_settings, use_fused_cpu_attention

    if torch.cuda.is_available():
        pytest.skip("the CPU kernel choice; GPUs are left alone")
    before = torch.get_float32_matmul_precision()
    flash = torch.backends.cuda.flash_sdp_enabled()
    try:
        apply_cpu_settings("medium", tune=False)
        use_fused_cpu_attention(torch.bfloat16)  # a model cast for --decoding-dtype bfloat16
        assert torch.backends.cuda.flash_sdp_enabled()
        use_fused_cpu_attention(torch.float32)
        assert not torch.backends.cuda.flash_sdp_enabled()
        apply_cpu_settings("highest", tune=False)
        for dtype in (torch.float32, torch.bfloat16):  # at highest, the caller's flag stays
            use_fused_cpu_attention(dtype)
            assert not torch.backends.cuda.flash_sdp_enabled()
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cuda.enable_flash_sdp(flash)


def test_allocator_setting_reports_whether_it_applied():
    from fastdiss_fairseq.cpu_performance import keep_freed_memory_in_heap

    applied = keep_freed_memory_in_heap()
    assert isinstance(applied, bool)
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert applied


def test_rounding_loss_gradients_survive_float16_with_a_loss_scale():
    """Under --fp16 the precomputed gradients (p - q) / N would underflow in float16 for large
    N; they are kept in float32 until fairseq's loss scale (the incoming gradient) is applied."""
    n, d, vocab, loss_scale = 500_000, 8, 50, 1024.0  # unscaled gradients ~1e-6: float16 subnormals
    h32, table32 = torch.randn(n, d) * 0.1, torch.randn(vocab, d)
    y = torch.randint(0, vocab, (n,))
    ref_h = h32.clone().requires_grad_()
    (loss_scale * F.cross_entropy(ref_h @ table32.t(), y, label_smoothing=0.1)).backward()

    h = h32.half().requires_grad_()
    out = rounding_loss(h, table32.half().requires_grad_(), y, 0.1, block_rows=50_000)
    (loss_scale * out.loss).backward()
    assert h.grad.dtype == torch.float16
    assert torch.allclose(h.grad.float(), ref_h.grad, rtol=0.02, atol=1e-5)
    assert (h.grad != 0).float().mean() > 0.99


# ---- clamping with a shortlist (fastdiss_fairseq/clamping.py) -------------------------------

def _clamp_setup(rows=6, n=7, vocab=50, d=8):
    table = torch.randn(vocab, d)
    mask = torch.arange(n)[None] < torch.tensor([7, 5, 3, 7, 1, 4])[:rows, None]
    return table, mask, (lambda z: z @ table.t()), (lambda z, words: z @ words.transpose(-1, -2))


def test_candidate_shortlists_hold_the_union_of_each_candidates_allowed_top_words():
    from fastdiss_fairseq.clamping import candidate_shortlists

    top = torch.tensor([[3, 4], [4, 9], [7, 1], [2, 2]])
    allowed = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    row_of = torch.tensor([0, 0, 2, 1])
    words = candidate_shortlists(top, allowed, row_of, rows=3, vocab=10)
    assert words.shape == (3, 2)  # the largest union: {3, 4} and {7, 1}
    assert set(words[0].tolist()) == {3, 4} and set(words[2].tolist()) == {1, 7}
    assert set(words[1].tolist()) == {2}  # filler repeats the row's own word; 9 was not allowed


def test_token_clamp_with_the_whole_vocabulary_as_shortlist_equals_the_full_search():
    from fastdiss_fairseq.clamping import TokenClamp

    table, mask, logits_fn, shortlist_fn = _clamp_setup()
    full = TokenClamp(table, mask, logits_fn, shortlist_fn, shortlist=0)
    everything = TokenClamp(table, mask, logits_fn, shortlist_fn, shortlist=10_000)
    for _ in range(3):
        z = torch.randn(*mask.shape, table.size(1))
        expected = full(z)
        assert torch.equal(everything(z)[mask], expected[mask])
        assert torch.equal(expected[~mask], z[~mask])  # padding is left as it was
    assert full.words is None and everything.words.shape == (mask.size(0), table.size(0))


def test_token_clamp_takes_a_non_contiguous_estimate():
    from fastdiss_fairseq.clamping import TokenClamp

    table, mask, logits_fn, shortlist_fn = _clamp_setup()
    z = torch.randn(mask.size(1), mask.size(0), table.size(1)).transpose(0, 1)  # (rows, n, d), strided
    nearest = table[logits_fn(z[mask]).argmax(-1)]
    for shortlist in (0, 3):
        clamp = TokenClamp(table, mask, logits_fn, shortlist_fn, shortlist=shortlist)
        for _ in range(2):  # shortlist 3: the full search, then the shortlisted one
            clamped = clamp(z)
            assert torch.equal(clamped[~mask], z[~mask])
        assert torch.equal(clamped[mask], nearest)  # the same estimate: its nearest words are shortlisted


def test_token_clamp_shortlist_searches_only_the_first_clamps_top_words():
    from fastdiss_fairseq.clamping import TokenClamp

    table, mask, logits_fn, shortlist_fn = _clamp_setup()
    clamp = TokenClamp(table, mask, logits_fn, shortlist_fn, shortlist=1)
    full = TokenClamp(table, mask, logits_fn, shortlist_fn, shortlist=0)
    z = torch.randn(*mask.shape, table.size(1))
    first = clamp(z)
    assert torch.equal(first[mask], full(z)[mask])  # the first clamp is the full search
    first_words = [set((logits_fn(z[r][mask[r]])).argmax(-1).tolist()) for r in range(mask.size(0))]
    later = clamp(torch.randn_like(z))
    for r in range(mask.size(0)):
        rows = later[r][mask[r]]
        chosen = {int((table == row).all(-1).nonzero()[0]) for row in rows}
        assert chosen <= first_words[r]


# whole blocks, a short last block, the smallest vocabulary searched in blocks, torch's own search
@pytest.mark.parametrize("vocab", [6272, 6300, 2048, 700])
def test_blockwise_max_and_topk_over_the_vocabulary_equal_torchs(vocab):
    from fastdiss_fairseq.vocab_search import max_last, topk_last

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 37, vocab, generator=g) * 4
    x[..., :4] = float("-inf")  # special symbols, as in the rounding logits
    x[0, 0, -1] = 100.0  # a maximum in the short last block
    x[1, 0, 7::64] = 50.0  # tied maxima in several blocks: the first one counts
    x[2, 0, 5:9] = 60.0  # and within one block
    # the top two words in the last two blocks: for vocab 6300 the short last block is read as
    # the last 64 words, and word -40 (6260) is also in the block before it
    x[0, 1, -40], x[0, 1, -1] = 90.0, 80.0
    values, index = max_last(x)
    assert torch.equal(values, x.max(-1).values) and torch.equal(index, x.max(-1).indices)
    assert index[1, 0] == 7 and index[2, 0] == 5
    for k in (1, 8):  # without position 0: topk does not fix the order of the ties put there
        top_values, top_index = topk_last(x[:, 1:], k)
        expected = x[:, 1:].topk(k, dim=-1)
        assert torch.equal(top_values, expected.values) and torch.equal(top_index, expected.indices)


def test_blockwise_search_reads_no_padding_past_the_vocabulary():
    from fastdiss_fairseq.vocab_search import BLOCK, topk_last

    # every word ties except a short last block of larger ones: topk must not return a clamped
    # index twice or an index past the vocabulary
    vocab = 70 * BLOCK + 3  # past the size where blocks are used for k = 8
    x = torch.zeros(2, vocab)
    x[:, -3:] = torch.tensor([5.0, 6.0, 7.0])
    values, index = topk_last(x, 8)
    assert index[:, :3].tolist() == [[vocab - 1, vocab - 2, vocab - 3]] * 2
    assert values[:, 3:].eq(0).all() and index.lt(vocab).all()
    assert all(len(set(row)) == 8 for row in index.tolist())


def test_cpu_training_autocast_runs_products_in_bfloat16_and_puts_the_attention_kernel_back():
    from fastdiss_fairseq.cpu_performance import cpu_training_autocast

    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    flash = torch.backends.cuda.flash_sdp_enabled()
    try:
        torch.backends.cuda.enable_flash_sdp(True)
        with cpu_training_autocast(True):
            assert layer(x).dtype == torch.bfloat16
            assert not torch.backends.cuda.flash_sdp_enabled()  # the plain kernel while training
        assert torch.backends.cuda.flash_sdp_enabled() and layer(x).dtype == torch.float32
        with cpu_training_autocast(False):
            assert layer(x).dtype == torch.float32
        with pytest.raises(KeyError), cpu_training_autocast(True):
            raise KeyError("a failed forward")
        assert torch.backends.cuda.flash_sdp_enabled() and layer(x).dtype == torch.float32
    finally:
        torch.backends.cuda.enable_flash_sdp(flash)
