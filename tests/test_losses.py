"""Chapter 4: answers against F.cross_entropy, and the measurements behind the notebook."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import losses
from course_utils.data import load_corpus
from solutions.ch04_loss_functions import (
    assistant_only_labels,
    cross_entropy,
    label_smoothed_cross_entropy,
    masked_mean_cross_entropy,
)


def test_cross_entropy_and_masked_mean_match_torch():
    torch.manual_seed(0)
    z, y = 4 * torch.randn(9, 30), torch.randint(0, 30, (9,))
    torch.testing.assert_close(cross_entropy(z, y), F.cross_entropy(z, y))
    y[::2] = -100
    torch.testing.assert_close(masked_mean_cross_entropy(z, y), F.cross_entropy(z, y))
    assert masked_mean_cross_entropy(z, torch.full((9,), -100)).isnan()


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 1.0])
def test_label_smoothing_matches_torch(eps):
    torch.manual_seed(1)
    z, y = 2 * torch.randn(7, 11), torch.randint(0, 11, (7,))
    torch.testing.assert_close(label_smoothed_cross_entropy(z, y, eps), F.cross_entropy(z, y, label_smoothing=eps))


def test_smoothed_optimum_is_the_target_distribution():
    eps, v = 0.2, 6
    gap = losses.optimal_logit_gap(v, eps)
    z = torch.zeros(1, v)
    z[0, 2] = gap
    q = losses.smoothed_target(v, 2, eps)
    torch.testing.assert_close(torch.softmax(z, 1)[0], q)
    z.requires_grad_()
    F.cross_entropy(z, torch.tensor([2]), label_smoothing=eps).backward()
    assert z.grad.abs().max() < 1e-6  # a stationary point
    assert losses.optimal_logit_gap(v, 0.0) == math.inf


def test_render_chat_and_assistant_labels():
    ids, roles = losses.render_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert ids.tolist() == [257, ord("h"), ord("i"), 259, 258, ord("y"), ord("o"), 259]
    assert roles == ["template", "user", "user", "user", "template", "assistant", "assistant", "assistant"]
    assert assistant_only_labels(ids, roles).tolist() == [-100] * 5 + [ord("y"), ord("o"), 259]
    with pytest.raises(ValueError, match="unknown role"):
        losses.render_chat([{"role": "tool", "content": "x"}])
    html = losses.labels_html(ids, assistant_only_labels(ids, roles))
    assert html.count("line-through") == 5 and "&lt;|user|&gt;" in html


def test_perplexities_are_ordered_and_uniform_is_256():
    text = load_corpus()
    ppl = losses.byte_perplexities(text[:2000], text[2000:])
    assert ppl["uniform over 256 bytes"] == 256.0
    assert ppl["bigram (previous byte)"] < ppl["unigram (byte frequencies)"] < 40


def test_label_smoothing_calibrates_an_overfitting_classifier():
    """04: trained long enough to become overconfident, the plain model's confidence exceeds its accuracy by far;
    with eps = 0.1 the gap and the test loss shrink while the accuracy stays."""
    plain, smoothed = losses.smoothing_calibration(0.0), losses.smoothing_calibration(0.1)
    assert plain["confidence"] - plain["accuracy"] > 0.05 and plain["ece"] > 0.05
    assert smoothed["ece"] < plain["ece"] / 2 and smoothed["test_loss"] < plain["test_loss"]
    assert abs(smoothed["accuracy"] - plain["accuracy"]) < 0.03


def test_smoothing_raises_the_reachable_loss_on_real_data():
    from course_utils.data import MarkovChain

    chain = MarkovChain(32)
    floors = [losses.smoothing_loss_floor(chain.transitions, chain.stationary(), eps) for eps in (0.0, 0.1, 0.2)]
    assert abs(floors[0]) < 1e-9 and 0 < floors[1] < floors[2]


def test_batched_smoothing_runs_equal_separate_runs():
    """smoothing_over_seeds trains its models stacked under one Adam: each must follow its own separate run."""
    batched = losses._smoothing_runs([(0.0, 3), (0.1, 4)], steps=50, n_train=64)
    for (eps, seed), stacked in zip([(0.0, 3), (0.1, 4)], batched):
        alone = losses.smoothing_calibration(eps, steps=50, n_train=64, seed=seed)
        for key in ("confidence", "test_loss"):
            assert abs(stacked[key] - alone[key]) < 1e-5, (key, stacked, alone)


def test_paired_change():
    assert losses.paired_change([1.0, 2.0, 3.0], [1.5, 1.0, 3.0]) == (pytest.approx(-0.5 / 3), -1.0, 0.5)


def test_backward_allocated_bytes_sees_out_of_place_results_only():
    z = torch.randn(16, 100).requires_grad_() * 1.0
    assert losses.backward_allocated_bytes((z * 2).sum(), z) >= 16 * 100 * 4  # MulBackward writes a new (16, 100)
    assert losses.backward_allocated_bytes(F.cross_entropy(z, torch.randint(0, 100, (16,))), z) >= 2 * 16 * 100 * 4


def test_lm_head_memory_counts_the_logits_and_the_log_softmax():
    """F.cross_entropy on an LM head: logits + log-softmax in forward (2 (N, V) tensors), the log-softmax held, and
    two more (N, V) tensors in backward (3), each within 0.05 of an (N, V) tensor."""
    n, v = 8, 1024
    memory = losses.lm_head_memory(lambda z, y: F.cross_entropy(z, y), n=n, v=v)
    measured = [memory[key] / (n * v * 4) for key in ("forward_peak", "held", "backward_peak")]
    assert all(abs(m - e) < 0.05 for m, e in zip(measured, (2, 1, 3))), measured
