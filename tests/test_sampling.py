"""Chapter 6: decoding filters, beam search and the byte model, against independent definitions."""
import itertools
import math

import pytest
import torch

from course_utils import charlm, sampling
from course_utils.runtime import triton_status


def _probs(logits):
    return torch.softmax(logits, dim=-1)


def test_temperature_limits_are_greedy_and_uniform():
    z = torch.tensor([2.0, 1.0, 0.5, -1.0])
    torch.testing.assert_close(sampling.softmax_with_temperature(z, 1e-3), torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(sampling.softmax_with_temperature(z, 1e6), torch.full((4,), 0.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(sampling.softmax_with_temperature(torch.tensor([1.0, 3.0, 3.0]), 0),
                               torch.tensor([0, 0.5, 0.5]))
    temps = [0.1, 0.5, 1.0, 2.0, 10.0]
    ent = [float(sampling.entropy(sampling.softmax_with_temperature(z, t))) for t in temps]
    assert ent == sorted(ent) and ent[-1] < math.log(4)
    with pytest.raises(ValueError, match="temperature"):
        sampling.softmax_with_temperature(z, -1.0)


def _nucleus_brute_force(probs, p):
    """The smallest prefix of the tokens sorted by (probability desc, id asc) with mass >= p."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= p - 1e-12:
            break
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_top_p_matches_the_definition(seed):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(12, generator=g, dtype=torch.float64)
    for p in (0.1, 0.5, 0.9, 0.99):
        kept = set(torch.isfinite(sampling.top_p_filter(z, p)).nonzero().flatten().tolist())
        assert kept == _nucleus_brute_force(_probs(z).tolist(), p)


def test_filters_on_hand_made_distributions():
    z = torch.tensor([0.125, 0.5, 0.125, 0.25]).log()

    def finite(t):
        return torch.isfinite(t).tolist()

    assert finite(sampling.top_p_filter(z, 0.75)) == [False, True, False, True]  # exactly on the boundary
    assert finite(sampling.top_p_filter(z, 0.76)) == [True, True, False, True]  # tie: lower id first
    assert finite(sampling.top_p_filter(z, 0.01)) == [False, True, False, False]  # top token always kept
    assert finite(sampling.top_k_filter(z, 3)) == [True, True, True, True]  # tie with the 3rd kept
    assert finite(sampling.min_p_filter(z, 0.25)) == [True, True, True, True]  # 1/8 = 0.25 * 1/2
    assert finite(sampling.min_p_filter(z, 0.26)) == [False, True, False, True]
    dominant = torch.tensor([0.97, 0.01, 0.01, 0.01]).log()
    assert finite(sampling.top_p_filter(dominant, 0.9)) == [True, False, False, False]
    with pytest.raises(ValueError):
        sampling.top_k_filter(z, 0)


def test_filtered_sampling_frequencies_match_the_renormalised_distribution():
    z = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]).log()
    filtered = sampling.process_logits(z, temperature=1.0, top_p=0.8)  # keeps 0.4, 0.3, 0.15
    target = torch.tensor([0.4, 0.3, 0.15, 0, 0]) / 0.85
    draws = torch.multinomial(_probs(filtered), 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5) / 20000
    assert freq[3] == freq[4] == 0
    torch.testing.assert_close(freq, target, atol=0.015, rtol=0)  # > 4 standard errors at n = 20000


def test_top_p_of_one_keeps_a_large_vocabulary_whole():
    z = 3 * torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(sampling.top_p_filter(z, 1.0)).all()
    assert torch.isfinite(sampling.top_p_filter(z, 0.999999)).sum() > 40_000


def test_bad_arguments_are_clear_errors():
    z = torch.randn(5)
    for kwargs in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=1.5)):
        with pytest.raises(ValueError):
            sampling.process_logits(z, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        sampling.generate(lambda seqs: torch.zeros(len(seqs), 4), [1], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="one position"):
        sampling.apply_repetition_penalty(torch.randn(2, 5), torch.tensor([0]), 1.2)
    with pytest.raises(ValueError, match="at least 1"):
        sampling.beam_search(lambda seqs: torch.zeros(len(seqs), 4), [0], 2, 0)
    assert len(sampling.generate(lambda seqs: torch.zeros(len(seqs), 4), [], 3, repetition_penalty=1.2)) == 3


def test_repetition_penalty_matches_the_ctrl_rule():
    z = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
    out = sampling.apply_repetition_penalty(z, torch.tensor([0, 1, 1, 3]), 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, -6.0, 1.0]
    p_before, p_after = _probs(z), _probs(out)
    assert all(p_after[i] < p_before[i] for i in (0, 1, 3))  # every penalised token becomes less likely


def _table_scorer(table):
    return lambda seqs: torch.stack([table[s[-1]] for s in seqs])


def _exhaustive(table, prompt, steps, eos_id, length_penalty):
    best, best_score = None, -math.inf
    for length in range(1, steps + 1):
        for seq in itertools.product(range(table.shape[0]), repeat=length):
            if eos_id is not None and eos_id in seq[:-1]:
                continue  # a sequence stops at its first eos
            if eos_id is not None and length < steps and seq[-1] != eos_id:
                continue  # unfinished sequences only exist at the last step
            logp, last = 0.0, prompt[-1]
            for t in seq:
                logp += float(table[last, t])
                last = t
            score = logp / length ** length_penalty
            if score > best_score:
                best, best_score = list(seq), score
    return best, best_score


@pytest.mark.parametrize("eos_id,length_penalty", [(None, 1.0), (3, 1.0), (3, 0.0), (0, 0.6)])
def test_beam_search_with_a_beam_wide_enough_is_exhaustive_search(eos_id, length_penalty):
    g = torch.Generator().manual_seed(1)
    table = torch.log_softmax(2 * torch.randn(4, 4, generator=g, dtype=torch.float64), dim=-1)
    steps = 4
    got = sampling.beam_search(_table_scorer(table), [1], 4 ** steps, steps, eos_id, length_penalty)
    best, score = _exhaustive(table, [1], steps, eos_id, length_penalty)
    assert got[0] == best and got[1] == pytest.approx(score)


def test_beam_search_beats_greedy_on_the_trap_and_beam_one_is_greedy():
    trap = torch.full((4, 4), math.log(0.25))
    trap[0] = torch.tensor([1e-9, 0.6, 0.4, 1e-9]).log()
    trap[2] = torch.tensor([1e-9, 1e-9, 1e-9, 1.0]).log()
    scorer = _table_scorer(trap)
    greedy = sampling.generate(scorer, [0], 2, temperature=0)
    assert greedy[0] == 1
    assert sampling.beam_search(scorer, [0], 1, 2, length_penalty=0.0)[0] == greedy
    assert sampling.beam_search(scorer, [0], 2, 2)[0] == [2, 3]


def test_generate_is_seeded_and_greedy_at_temperature_zero():
    model = charlm.load()
    scorer = sampling.model_logits(model)
    prompt = charlm.encode("The ").tolist()
    assert sampling.generate(scorer, prompt, 8, seed=3) == sampling.generate(scorer, prompt, 8, seed=3)
    seq = list(prompt)
    for _ in range(8):
        seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
    assert sampling.generate(scorer, prompt, 8, temperature=0) == seq[len(prompt):]


def test_best_of_n_picks_the_highest_mean_likelihood():
    scorer = sampling.model_logits(charlm.load())
    prompt = charlm.encode("A list ").tolist()
    best, scores = sampling.best_of_n(scorer, prompt, 10, 4, temperature=1.2)
    assert len(scores) == 4
    assert sampling.sequence_log_likelihood(scorer, prompt, best) / 10 == pytest.approx(max(scores))


def test_distinct_ngrams():
    assert sampling.distinct_ngram_fraction([1, 2, 3, 4, 5], 2) == 1.0
    assert sampling.distinct_ngram_fraction([1, 2] * 10, 2) == 2 / 19


# ------------------------------------------------------------------------------------ the byte model

def test_codec_round_trip():
    text = "héllo, wörld\n"
    assert charlm.decode(charlm.encode(text)) == text
    assert charlm.encode("A").tolist() == [65]


def test_committed_checkpoint_loads_and_beats_simple_baselines():
    model = charlm.load()
    info = charlm.checkpoint_info()
    assert info["val_loss"] < 1.9, info  # nats/byte; uniform over bytes is ln 256 = 5.55
    _, val = charlm.split(charlm.encode(charlm.training_text()))
    assert charlm.evaluate(model, val, batches=2) < 2.0


def test_training_briefly_lowers_the_loss():
    model, losses = charlm.train(12, lr=3e-3, batch_size=8, progress=False)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5  # from ~5.5 (uniform) downwards


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m course_utils.charlm"):
        charlm.load(tmp_path / "none.pt")


# ------------------------------------------------------------------------------------ Triton sampler

needs_triton = pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.kernel
@needs_triton
def test_triton_sampler_matches_the_distribution_and_torch_multinomial():
    from course_utils.kernels.gumbel_sampling import sample_triton

    probs = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
    n = 1200
    ours = torch.bincount(sample_triton(probs.log().repeat(n, 1), seed=0).cpu(), minlength=6).double()
    theirs = torch.bincount(torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(0)),
                            minlength=6).double()
    assert _chi_square(ours, probs.double()) < 20.5  # chi-square, 5 degrees of freedom, p = 0.001
    # the two samples are alike: chi-square test of homogeneity on the 2 x 6 table, 5 degrees of freedom
    pooled = (ours + theirs) / (2 * n)
    assert _chi_square(ours, pooled) + _chi_square(theirs, pooled) < 20.5


@pytest.mark.kernel
@needs_triton
def test_triton_sampler_temperature_min_p_greedy_and_long_rows():
    from course_utils.kernels.gumbel_sampling import sample_triton

    z = torch.tensor([[2.0, 1.9, -3.0, 0.0]]).repeat(300, 1)
    draws = sample_triton(z, min_p=0.5, seed=1).cpu()
    assert set(draws.tolist()) == {0, 1}  # e^-0.1 > 0.5 > e^-2: only tokens 0 and 1 pass
    cold = sample_triton(z[:50], temperature=0.005, seed=2).cpu()
    assert (cold == 0).all()  # gap 0.1 / T = 20: token 1 wins with probability e^-20 per draw
    assert sample_triton(z[:3], temperature=0).tolist() == [0, 0, 0]
    long = torch.randn(3, 10_000)
    long[:, 7777] = 60.0  # beyond the first 4096-column chunk
    assert sample_triton(long, seed=0).tolist() == [7777] * 3
    with pytest.raises(ValueError):
        sample_triton(z, min_p=1.5)


@pytest.mark.kernel
@needs_triton
def test_gumbel_exercise_kernel_samples_the_softmax():
    from course_utils.harness.launchers import launch_gumbel_kernel
    from solutions.ch06_token_prediction import gumbel_max_kernel

    probs = torch.tensor([0.5, 0.3, 0.2])
    draws = launch_gumbel_kernel(gumbel_max_kernel, probs.log().repeat(900, 1), 1.0, 5)
    assert _chi_square(torch.bincount(draws, minlength=3).double(), probs.double()) < 13.8  # 2 dof, p = 0.001


def test_kv_cache_decoder_matches_the_full_forward():
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    prompts = sampling.evaluation_prompts(held_out, n=3, length=10)
    full = sampling.model_logits(model)
    decoder = sampling.KVCacheDecoder(model)
    seqs = [list(p) for p in prompts]
    torch.testing.assert_close(decoder.prefill(torch.tensor(seqs)), full(seqs), atol=1e-4, rtol=1e-4)
    for token in (32, 101, 10):
        seqs = [s + [token] for s in seqs]
        torch.testing.assert_close(decoder.step(torch.tensor([token] * 3)), full(seqs), atol=1e-4, rtol=1e-4)
    decoder.reorder(torch.tensor([2, 2, 0]))
    seqs = [seqs[2], seqs[2], seqs[0]]
    seqs = [s + [97] for s in seqs]
    torch.testing.assert_close(decoder.step(torch.tensor([97] * 3)), full(seqs), atol=1e-4, rtol=1e-4)


def test_batched_decoding_agrees_with_the_single_prompt_functions():
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    prompts = sampling.evaluation_prompts(held_out, n=2, length=12)
    full = sampling.model_logits(model)
    greedy, ll = sampling.decode_batch(model, prompts, 12, temperature=0, return_loglik=True)
    beams = sampling.beam_search_batch(model, prompts, 3, 12)
    for i, p in enumerate(prompts):
        assert greedy[i][0] == sampling.generate(full, p, 12, temperature=0)
        assert abs(ll[i][0] - sampling.sequence_log_likelihood(full, p, greedy[i][0]) / 12) < 1e-4
        ids, score = sampling.beam_search(sampling.log_probs_of(full), p, 3, 12)
        assert beams[i][0][0] == ids and abs(beams[i][0][1] / 12 - score) < 1e-4
    lp = sampling.continuation_log_probs(model, prompts, [g[0] for g in greedy]).mean(dim=1)
    torch.testing.assert_close(lp.double(), torch.tensor([x[0] for x in ll], dtype=torch.float64), atol=1e-4, rtol=0)


def test_diversity_and_word_metrics():
    assert sampling.pairwise_ngram_diversity([[1, 2, 3, 4, 5]] * 3) == 0.0
    assert sampling.pairwise_ngram_diversity([[1, 2, 3, 4], [5, 6, 7, 8]]) == 1.0
    ids = list(b" the class xqzv method ")
    assert sampling.word_validity(ids) == 3 / 4  # the, class, method found, xqzv not (no word touches an end)
    assert math.isnan(sampling.word_validity(list(b"abc")))
    d = sampling.paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 4.0])
    assert d["n"] == 3 and d["reversed"] == 1 and abs(d["mean"] - 2 / 3) < 1e-12


def test_presence_penalty_is_additive():
    z = torch.tensor([1.0, 2.0, 3.0])
    out = sampling.apply_presence_penalty(z, torch.tensor([0, 0, 2]), presence=0.5, frequency=0.25)
    torch.testing.assert_close(out, torch.tensor([1.0 - 0.5 - 0.5, 2.0, 3.0 - 0.5 - 0.25]))


def test_batched_penalty_min_p_and_long_continuations_agree_with_generate():
    """decode_batch's repetition penalty and min-p are generate's, and past the context it re-reads the last
    block_size bytes as generate does (CroppedDecoder)."""
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    prompts = sampling.evaluation_prompts(held_out, n=2, length=24, min_letters=12)
    full = sampling.model_logits(model)
    for n_new in (20, 80):  # 24 + 80 - 1 > 96: the cropped path
        batch = sampling.decode_batch(model, prompts, n_new, temperature=0, repetition_penalty=1.3)
        for p, out in zip(prompts, batch):
            assert out[0] == sampling.generate(full, p, n_new, temperature=0, repetition_penalty=1.3)
    single = sampling.decode_batch(model, prompts[:1], 10, temperature=1.0, min_p=0.3, seed=3)[0][0]
    assert single == sampling.generate(full, prompts[0], 10, temperature=1.0, min_p=0.3, seed=3)


def test_evaluation_windows_are_prose_and_do_not_overlap():
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    prompts, refs = sampling.evaluation_windows(held_out, n=24, length=24, continuation=40, min_letters=12)
    assert len(prompts) == 24 and all(len(p) == 24 and len(r) == 40 for p, r in zip(prompts, refs))
    assert all(sampling._letters(p) >= 12 and 124 not in p + r for p, r in zip(prompts, refs))
    assert sampling.evaluation_prompts(held_out, n=24, length=24, min_letters=12) == prompts
    # without min_letters: the earlier draw, unchanged
    assert len(sampling.evaluation_prompts(held_out, n=5, length=10)) == 5


def test_spearman_handles_ties_and_is_robust_to_one_outlier():
    a = torch.tensor([1.0, 1.0, 2.0, 3.0, 4.0])
    assert sampling._average_ranks(a).tolist() == [1.5, 1.5, 3.0, 4.0, 5.0]
    x = torch.arange(10.0)
    y = x.clone()
    y[-1] = 1000.0
    assert abs(sampling.spearman(x, y) - 1.0) < 1e-12 and sampling.pearson(x, y) < 0.7
