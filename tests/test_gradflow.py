"""The measurements behind chapter 1's plots, and the claims the notebook makes from them."""
import math

import pytest
import torch

from course_utils import gradflow
from course_utils.training import train_markov_lm, warmup_factor


def test_layer_stats_shapes_and_post_ln_stream_is_normalised():
    stats = gradflow.layer_stats("post", 5)
    assert len(stats.input_grad_norm) == len(stats.param_grad_norm) == len(stats.stream_rms) == 5
    assert all(abs(r - 1.0) < 1e-3 for r in stats.stream_rms)
    assert all(g > 0 and math.isfinite(g) for g in stats.param_grad_norm)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="arch must be one of"):
        gradflow.stack_config("sandwich", 4)


def test_pre_ln_variance_grows_linearly_and_top_gradient_like_one_over_sqrt_depth():
    sweep = gradflow.depth_sweep("pre", [8, 16, 32, 64])
    assert 0.8 < gradflow.loglog_slope(sweep["depth"], sweep["output_var"]) < 1.2
    assert -0.7 < gradflow.loglog_slope(sweep["depth"], sweep["last_block_grad"]) < -0.3


def test_post_ln_output_variance_does_not_depend_on_depth():
    sweep = gradflow.depth_sweep("post", [2, 16, 64])
    assert all(abs(v - 1.0) < 1e-3 for v in sweep["output_var"])


def test_loglog_slope_recovers_a_power_law():
    xs = [1, 2, 4, 8]
    assert abs(gradflow.loglog_slope(xs, [3 * x ** -0.5 for x in xs]) + 0.5) < 1e-9


def test_jacobian_products_vanish_without_residual_and_survive_with_it():
    plain = gradflow.jacobian_product_norms(20, 0.5, residual=False)
    skip = gradflow.jacobian_product_norms(20, 0.5, residual=True)
    assert plain[-1] < 1e-4 and skip[-1] > 1.0
    assert len(plain) == 20


def test_swiglu_scaling_exponents():
    sweep = gradflow.swiglu_scale_sweep([10, 30, 100])
    assert abs(gradflow.loglog_slope(sweep["scale"], sweep["output"]) - 2) < 0.05
    assert abs(gradflow.loglog_slope(sweep["scale"], sweep["grad_gate"]) - 1) < 0.05


def test_clipping_survives_the_bad_batch_that_breaks_plain_sgd():
    plain = gradflow.swiglu_spike_run(10.0, None)
    clipped = gradflow.swiglu_spike_run(10.0, 1.0)
    assert not math.isfinite(plain.losses[-1]) or plain.losses[-1] > 1e6
    assert clipped.losses[-1] < clipped.losses[0]
    assert max(clipped.grad_norms) > 100  # the spike happened; clipping contained it


def test_warmup_factor():
    assert warmup_factor(0, 0) == 1.0
    assert warmup_factor(0, 4) == 0.25 and warmup_factor(3, 4) == 1.0 and warmup_factor(10, 4) == 1.0


def test_training_reduces_the_loss_and_is_reproducible():
    config = gradflow.stack_config("pre", 2, block_size=16)
    a = train_markov_lm(config, steps=30, lr=3e-3, progress=False)
    b = train_markov_lm(config, steps=30, lr=3e-3, progress=False)
    assert a.losses == b.losses
    assert sum(a.losses[-5:]) / 5 < a.losses[0] - 0.2


def test_training_stops_cleanly_on_divergence():
    config = gradflow.stack_config("pre", 2, block_size=8, init_std=1.0)
    run = train_markov_lm(config, steps=40, lr=1e3, progress=False)  # absurd lr: the loss blows up
    assert run.diverged and len(run.losses) < 40
    assert all(math.isfinite(x) for x in run.losses)  # the NaN step is not recorded
