"""The verdicts of notebook 04 (loss functions), asserted over the seeds and settings the notebook uses.

Label smoothing (the fact check "what label smoothing buys"; its cell is not compared exactly because training
outcomes can differ in their last digits between CPUs), the fused cross-entropy's memory (backward allocations and the
peaks with the logits' storage counted), the masking rule (the assistant's end-of-turn token stays in the loss), and
the `.view` / label-shift conventions (including the note's no-shift combination).
"""
import pytest
import torch
import torch.nn.functional as F
from conftest import requires_triton

from course_utils import losses
from solutions.ch04_loss_functions import assistant_only_labels


@pytest.fixture(scope="module")
def smoothing():
    return losses.smoothing_over_seeds(0.1)  # the notebook's call: 3 settings x seeds 0-2 x eps 0 and 0.1


def test_chapter4_smoothing_gains_a_little_accuracy_on_the_small_set_only(smoothing):
    """Row "prevents overfitting": on 256 examples every seed's test accuracy rises, by less than 0.01 (stored: after
    200 steps +0.006..+0.008, after 1000 steps +0.001..+0.005); on 1024 examples the changes straddle 0 and stay within
    0.006 (stored -0.004..+0.003). ECE moves by more than 0.05 (below), so accuracy is the smaller effect."""
    for setting, at_least in (((200, 256), 0.004), ((1000, 256), 0.0)):
        before, after = smoothing[setting]["accuracy"]
        for a, b in zip(before, after):
            assert at_least < b - a < 0.01, (setting, before, after)
    before, after = smoothing[(1000, 1024)]["accuracy"]
    diffs = [b - a for a, b in zip(before, after)]
    assert min(diffs) < 0 < max(diffs) and max(abs(d) for d in diffs) < 0.006, diffs


def test_chapter4_smoothing_accuracy_gain_over_ten_seeds():
    """The 10-seed rerun the fact check quotes (seeds 0-9, the two 256-example settings): after 200 steps every seed
    gains (measured +0.003..+0.010, mean +0.0071), after 1000 steps the mean gain is positive (measured +0.0044) with
    at least 7 of 10 seeds positive (measured 8), and no seed gains 0.02 or more."""
    results = losses.smoothing_over_seeds(0.1, settings=((200, 256), (1000, 256)), seeds=range(10))
    early = [b - a for a, b in zip(*results[(200, 256)]["accuracy"])]
    late = [b - a for a, b in zip(*results[(1000, 256)]["accuracy"])]
    assert min(early) > 0 and sum(early) / 10 > 0.004, early
    assert sum(late) / 10 > 0.001 and sum(d > 0 for d in late) >= 7, late
    assert max(early + late) < 0.02, (early, late)


def test_chapter4_smoothing_calibrates_the_overfitted_small_set(smoothing):
    """Row "not too confident": 1000 steps on 256 examples, on every seed the plain model is overconfident
    (confidence - accuracy > 0.05; stored about 0.1) and eps = 0.1 lowers ECE by more than 0.05 (stored 0.079..0.089)
    and the test loss by more than 0.03 (stored 0.070..0.085): the effect exceeds the seed spread of either."""
    m = smoothing[(1000, 256)]
    for i in range(3):
        assert m["confidence"][0][i] - m["accuracy"][0][i] > 0.05, m
        assert m["ece"][0][i] - m["ece"][1][i] > 0.05, m
        assert m["test_loss"][0][i] - m["test_loss"][1][i] > 0.03, m
    spread = max(m["ece"][0]) - min(m["ece"][0])
    assert losses.paired_change(*m["ece"])[2] < -spread, m  # the smallest improvement beats the spread


def test_chapter4_smoothing_hurts_the_larger_set_and_the_unfitted_model(smoothing):
    """Row "especially on small datasets": on 1024 examples (1000 steps) and after only 200 steps on 256, eps = 0.1
    raises ECE on every seed (stored +0.078..+0.086 and +0.029..+0.032); on 1024 it also raises the test loss
    (stored +0.052..+0.059)."""
    large, early = smoothing[(1000, 1024)], smoothing[(200, 256)]
    assert losses.paired_change(*large["ece"])[1] > 0.04, large
    assert losses.paired_change(*large["test_loss"])[1] > 0.02, large
    assert losses.paired_change(*early["ece"])[1] > 0.01, early


@requires_triton
def test_chapter4_fused_cross_entropy_backward_allocates_no_n_by_v_tensor():
    """4.5, memory: F.cross_entropy's backward writes (N, V) tensors; the fused kernel's backward, with or without
    inplace_grad, allocates less than one row (only autograd's 4-byte seed gradient)."""
    from course_utils.kernels import cross_entropy as ce_kernels

    n, v = 8, 4096
    y = torch.randint(0, v, (n,))
    for fn, at_least, at_most in [
        (lambda z: F.cross_entropy(z, y), n * v * 4, None),
        (lambda z: ce_kernels.cross_entropy_triton(z, y), 0, v * 4),
        (lambda z: ce_kernels.cross_entropy_triton(z, y, inplace_grad=True), 0, v * 4),
    ]:
        z = torch.randn(n, v).requires_grad_() * 1.0
        allocated = losses.backward_allocated_bytes(fn(z), z)
        assert allocated >= at_least and (at_most is None or allocated < at_most), allocated


def test_chapter4_masking_keeps_the_assistants_end_of_turn():
    """Masking fact check: role headers are masked, the assistant's <|end|> is counted, the user's is not."""
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    ids, roles = losses.render_chat(chat)
    labels = assistant_only_labels(ids, roles)
    end = losses.SPECIAL_TOKENS["<|end|>"]
    ends = (ids == end).nonzero().flatten().tolist()
    assert labels[ends[0]] == -100 and labels[ends[1]] == end  # user's end masked, assistant's kept
    assert (labels[ids >= 256] != -100).sum() == 1  # headers masked: only that <|end|> among the specials


def test_chapter4_view_on_shifted_logits_fails_and_the_two_label_conventions_agree():
    """`.view` fact check: .view on logits[:, :-1] raises; the note's pre-shifted labels on the full logits equal
    the shift-in-the-loss convention (within 1e-6); shifting pre-shifted labels again gives another loss."""
    torch.manual_seed(0)
    B, T, V = 2, 6, 11
    logits, ids = torch.randn(B, T, V), torch.randint(0, V, (B, T))
    with pytest.raises(RuntimeError, match="reshape"):
        logits[:, :-1].view(-1, V)
    note_labels = torch.cat([ids[:, 1:], torch.full((B, 1), -100)], dim=1)
    note = F.cross_entropy(logits.view(-1, V), note_labels.view(-1))
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    mixed = F.cross_entropy(logits[:, :-1].reshape(-1, V), note_labels[:, 1:].reshape(-1))
    assert abs(note - shifted) < 1e-6 and abs(mixed - shifted) > 0.1
    # the note's masking loop (labels = input_ids) with its loss line: no shift at all, and copying the input wins
    copy_logits = 20.0 * F.one_hot(ids, V).float()
    assert F.cross_entropy(copy_logits.view(-1, V), ids.view(-1)) < 1e-3
    assert F.cross_entropy(copy_logits.view(-1, V), note_labels.view(-1)) > 5


@requires_triton
def test_chapter4_lm_head_memory_peaks():
    """4.5, memory counted with the logits' own storage (losses.lm_head_memory): all three variants hold one (N, V)
    buffer from forward to backward; the forward peak is 2 / 2 / 1 (N, V) tensors for F.cross_entropy / fused with a
    new buffer / fused over the logits, and the backward peak 3 / 1 / 1. Margin: each within 0.05 of an (N, V) tensor
    (the rest, the (N,) losses and the (N, d) gradient of h, is far smaller)."""
    from course_utils.kernels import cross_entropy as ce_kernels

    n, v = 8, 4096
    one = n * v * 4
    for fn, expected in [
        (lambda z, y: F.cross_entropy(z, y), (2, 1, 3)),
        (lambda z, y: ce_kernels.cross_entropy_triton(z, y), (2, 1, 1)),
        (lambda z, y: ce_kernels.cross_entropy_triton(z, y, inplace_grad=True), (1, 1, 1)),
    ]:
        memory = losses.lm_head_memory(fn, n=n, v=v)
        measured = [memory[key] / one for key in ("forward_peak", "held", "backward_peak")]
        assert all(abs(m - e) < 0.05 for m, e in zip(measured, expected)), (measured, expected)


@requires_triton
def test_chapter4_fused_backward_runs_once():
    """4.5: the fused backward scales its own buffer in place, so a second backward (retain_graph) raises (autograd
    sees the saved buffer modified) instead of returning a gradient scaled twice."""
    from course_utils.kernels import cross_entropy as ce_kernels

    z = torch.randn(4, 50).requires_grad_() * 1.0
    loss = ce_kernels.cross_entropy_triton(z, torch.randint(0, 50, (4,)))
    torch.autograd.grad(loss, z, retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, z)
