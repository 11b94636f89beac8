"""The verdicts of notebook 03 (normalisation): where attention logits come from in a Pre-LN block and what QK-norm
does in training over an init x learning-rate x seed grid (the QK-norm fact check), and where soft-capping's gradient
ends. The centring verdict is test_chapter3_centring_hardly_matters in tests/test_notebook_claims.py.

Run with ``-o addopts=""`` (the slow marker is deselected by default)."""
import pytest
import torch

from course_utils import normalization as norms
from solutions.ch03_normalization import soft_cap


def _rows():
    rows = norms.attention_logit_growth((1, 4, 16), stream_scales=(1, 50))
    return {(r["stream_scale"], r["weight_scale"]): r for r in rows}


def test_chapter3_stream_growth_does_not_reach_pre_ln_attention_logits():
    """03, QK-norm fact check, row 1: in a Pre-LN block the stream x50 changes no head's logits (within 1e-3
    relative; only LayerNorm's eps sees the scale)."""
    rows = _rows()
    for s in (1, 4, 16):
        for a, b in zip(rows[(1, s)]["max_logit"], rows[(50, s)]["max_logit"]):
            assert abs(a - b) <= 1e-3 * a, (s, a, b)


def test_chapter3_weight_growth_collapses_attention_and_qk_norm_undoes_it():
    """03, QK-norm fact check: W_q, W_k x s multiply every head's largest logit by s^2 (within 5%), attention
    entropy falls from about 0.85 of its maximum at s = 1 to below 0.01 at s = 16 in every head; with QK-norm the
    logits and the entropy do not move (within 1e-4) and stay below sqrt(16) = 4."""
    rows = _rows()
    base = rows[(1, 1)]
    for s in (4, 16):
        for head, top in enumerate(rows[(1, s)]["max_logit"]):
            assert abs(top / (s ** 2 * base["max_logit"][head]) - 1) < 0.05, (s, head)
        assert rows[(1, s)]["max_logit_qk"] == base["max_logit_qk"] or all(
            abs(a - b) < 1e-4 for a, b in zip(rows[(1, s)]["max_logit_qk"], base["max_logit_qk"]))
        assert all(abs(a - b) < 1e-4 for a, b in zip(rows[(1, s)]["entropy_qk"], base["entropy_qk"]))
    assert all(0.75 < e < 0.95 for e in base["entropy"]), base
    assert all(e < 0.01 for e in rows[(1, 16)]["entropy"]), rows[(1, 16)]
    assert all(m <= 4.0 for m in base["max_logit_qk"])


def test_chapter3_soft_cap_gradient_is_exactly_zero_far_out_in_float32():
    """03, soft-capping: in float32 the gradient of 30 tanh(z/30) is nonzero at 100 and 250 and exactly 0 at 300."""
    z = torch.tensor([100.0, 250.0, 300.0], requires_grad=True)
    soft_cap(z, 30.0).sum().backward()
    assert z.grad[0] > 0 and z.grad[1] > 0 and z.grad[2] == 0, z.grad


@pytest.mark.slow
def test_chapter3_qk_norm_prevents_attention_entropy_collapse_on_the_grid():
    """03, QK-norm in training (2 inits x lr 3e-3, 3e-2, 1e-1 x seeds 0, 1, 2): recomputes the stored grid and checks
    it (entropy within 0.02, loss within 0.02, the logits within 25%: 150 AdamW steps amplify another arithmetic
    order), then asserts seed by seed: at 3e-3 no run has a head below 0.5 of its maximum entropy (stored: 0.69 and
    up); at 3e-2 and 1e-1 every plain run has a head below 0.03 (stored: 0.013 at most) and logits above 100, every
    QK-norm run keeps every head above 0.05 (stored: 0.09 and up) with logits below 50, and ends with a lower loss."""
    fresh, stored = norms.qk_norm_training(progress=False), norms.load_qk_norm_training()
    assert len(fresh) == len(stored) == 36
    for a, b in zip(fresh, stored):
        assert (a["init"], a["lr"], a["qk_norm"], a["seed"]) == (b["init"], b["lr"], b["qk_norm"], b["seed"])
        assert abs(a["loss"] - b["loss"]) < 0.02 and abs(min(a["head_entropy"]) - min(b["head_entropy"])) < 0.02, (a, b)
        assert abs(a["max_logit"] / b["max_logit"] - 1) < 0.25, (a, b)
    runs = {(r["init"], r["lr"], r["qk_norm"], r["seed"]): r for r in fresh}
    for init in norms.QK_INITS:
        for seed in (0, 1, 2):
            for qk in (False, True):
                assert min(runs[(init, 3e-3, qk, seed)]["head_entropy"]) > 0.5
            for lr in (3e-2, 1e-1):
                plain, normed = runs[(init, lr, False, seed)], runs[(init, lr, True, seed)]
                assert not plain["diverged"] and not normed["diverged"]
                assert min(plain["head_entropy"]) < 0.03 and plain["max_logit"] > 100, plain
                assert min(normed["head_entropy"]) > 0.05 and normed["max_logit"] < 50, normed
                assert normed["loss"] < plain["loss"], (plain, normed)
