"""Chapter 3: answers against PyTorch's own ops, and the measurements behind the plots."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import normalization as norms
from course_utils.stability import attention_score_max
from solutions.ch03_normalization import layer_norm, qk_norm_scores, rms_norm, soft_cap


@pytest.mark.parametrize("shape", [(4, 16), (2, 5, 7), (3, 1)])
def test_layer_norm_and_rms_norm_match_torch(shape):
    torch.manual_seed(0)
    x, w, b = 5 * torch.randn(shape) + 2, torch.randn(shape[-1]), torch.randn(shape[-1])
    torch.testing.assert_close(layer_norm(x, w, b), F.layer_norm(x, (shape[-1],), w, b, 1e-5))
    torch.testing.assert_close(rms_norm(x, w), F.rms_norm(x, (shape[-1],), w, 1e-6))
    torch.testing.assert_close(layer_norm(x, w, b, eps=0.5), F.layer_norm(x, (shape[-1],), w, b, 0.5))


def test_layer_norm_gradients_match_autograd_of_torch():
    x = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: layer_norm(x, w, b), (x, w, b))


def test_soft_cap_matches_the_formula_and_stays_inside():
    z = torch.tensor([-1e30, -100.0, -1.0, 0.0, 1.0, 100.0, 1e30, math.inf])
    out = soft_cap(z, 30.0)
    torch.testing.assert_close(out, 30 * torch.tanh(z / 30))
    assert out.abs().max() <= 30.0
    torch.testing.assert_close(soft_cap(torch.tensor([0.01]), 30.0), torch.tensor([0.01]), rtol=1e-6, atol=0)


def test_qk_norm_scores_match_sdpa_logits_of_normalised_inputs():
    torch.manual_seed(0)
    q, k = 100 * torch.randn(2, 5, 16), 100 * torch.randn(2, 7, 16)
    q_hat, k_hat = F.rms_norm(q, (16,), eps=1e-6), F.rms_norm(k, (16,), eps=1e-6)
    torch.testing.assert_close(qk_norm_scores(q, k), q_hat @ k_hat.transpose(-2, -1) / 4)
    assert qk_norm_scores(q, k).abs().max() <= 4.0 + 1e-4  # sqrt(d) = 4


def test_batchnorm_leaks_and_depends_on_padding_layernorm_does_not():
    leak, pad = norms.batchnorm_future_leak(), norms.padding_changes_output()
    assert leak["batchnorm"] > 0.1 and leak["layernorm"] == 0.0
    assert pad["batchnorm"] > 0.1 and pad["layernorm"] == 0.0


def test_pre_ln_stream_grows_like_sqrt_depth_and_final_norm_bounds_logits():
    plain = norms.pre_ln_scale(32, "Pre-LN, no final norm")
    normed = norms.pre_ln_scale(32, "+ final norm")
    ratio = plain["stream_rms"][31] / plain["stream_rms"][7]  # block 32 vs block 8: sqrt(4) = 2
    assert 1.6 < ratio < 2.6
    assert normed["logit_std"] < plain["logit_std"] / 3


def test_qk_norm_bounds_attention_logits():
    assert attention_score_max(16.0, qk_norm=True) <= 8.0 + 1e-9
    assert attention_score_max(16.0) > 1000


def test_norm_speed_reports_positive_times():
    speed = norms.norm_speed(64, 32, reps=3)
    assert set(speed) == {"F.layer_norm", "F.rms_norm", "LayerNorm from scratch", "RMSNorm from scratch"}
    assert all(v > 0 for v in speed.values())


def test_batchnorm_noise_falls_like_one_over_sqrt_batch():
    """03: one example's BatchNorm output varies across batches like B^-1/2 (a variance effect)."""
    from course_utils.measure import loglog_slope

    spread = norms.batchnorm_batch_noise([2, 8, 32, 128])
    assert spread[2] > 0.6 and spread[128] < 0.15
    assert -0.6 < loglog_slope([8, 32, 128], [spread[b] for b in (8, 32, 128)]) < -0.4
