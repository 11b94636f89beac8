"""The measurements behind chapter 1's plots, and the claims the notebook makes from them."""
import math

import pytest
import torch

from course_utils import gradflow
from course_utils.measure import loglog_slope
from course_utils.training import TrainResult, final_loss, train_markov_lm, warmup_factor


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
    assert 0.8 < loglog_slope(sweep["depth"], sweep["output_var"]) < 1.2
    assert -0.7 < loglog_slope(sweep["depth"], sweep["last_block_grad"]) < -0.3


def test_post_ln_output_variance_does_not_depend_on_depth():
    sweep = gradflow.depth_sweep("post", [2, 16, 64])
    assert all(abs(v - 1.0) < 1e-3 for v in sweep["output_var"])


def test_jacobian_products_vanish_without_residual_and_survive_with_it():
    plain = gradflow.jacobian_product_norms(20, 0.5, residual=False)
    skip = gradflow.jacobian_product_norms(20, 0.5, residual=True)
    assert plain[-1] < 1e-4 and skip[-1] > 1.0
    assert len(plain) == 20


def test_swiglu_scaling_exponents():
    sweep = gradflow.swiglu_scale_sweep([10, 30, 100])
    assert abs(loglog_slope(sweep["scale"], sweep["output"]) - 2) < 0.05
    assert abs(loglog_slope(sweep["scale"], sweep["grad_gate"]) - 1) < 0.05


def test_clipping_survives_the_bad_batch_that_breaks_plain_sgd():
    plain = gradflow.swiglu_spike_run(10.0, None)
    clipped = gradflow.swiglu_spike_run(10.0, 1.0)
    assert not math.isfinite(plain.losses[-1]) or plain.losses[-1] > 1e6
    assert clipped.losses[-1] < clipped.losses[0]
    assert max(clipped.grad_norms) > 100  # the spike happened; clipping contained it


def test_warmup_factor():
    assert warmup_factor(0, 0) == 1.0
    assert warmup_factor(0, 4) == 0.25 and warmup_factor(3, 4) == 1.0 and warmup_factor(10, 4) == 1.0


def test_final_loss_is_the_mean_of_the_last_20_steps():
    losses = [float(step) for step in range(50)]
    assert final_loss(losses) == sum(range(30, 50)) / 20
    assert TrainResult(losses, [], diverged=False).final_loss == final_loss(losses)


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


def test_layernorm_jacobian_matches_autograd_and_divides_by_the_input_scale():
    x = torch.randn(48, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.3
    for scale in (0.01, 1.0, 30.0):
        J = gradflow.layernorm_jacobian(scale * x)
        expected = torch.autograd.functional.jacobian(
            lambda v: torch.nn.functional.layer_norm(v, (48,)), scale * x)
        assert torch.allclose(J, expected, atol=1e-10, rtol=1e-9)
        sigma2 = (scale * x).var(unbiased=False)
        assert abs(float(torch.linalg.matrix_norm(J, 2)) - float(1 / torch.sqrt(sigma2 + 1e-5))) < 1e-8


def test_fan_in_init_gives_unit_scale_branches_and_embeddings():
    torch.manual_seed(0)
    config = gradflow.stack_config("pre", 2, d_model=256, init="fan_in")
    model = gradflow.TinyTransformer(config)
    up = model.blocks[0].mlp.up.weight
    assert abs(float(up.detach().std()) - 1 / math.sqrt(256)) < 0.05 / math.sqrt(256)
    stream = model.embed(torch.zeros(1, 16, dtype=torch.long))
    assert 0.8 < float(stream.pow(2).mean().sqrt()) < 1.2
    with pytest.raises(ValueError, match="init must be"):
        gradflow.stack_config("pre", 2, init="xavier")


def test_xiong_setting_post_ln_top_gradient_is_flat_and_larger_pre_ln_falls_like_one_over_sqrt_depth():
    """01, fact check: with fan-in init, Post-LN's last-block gradient does not depend on depth and exceeds
    Pre-LN's, which falls like L^-1/2, as the final norm's 1/RMS(x_L) (constant product) says."""
    depths = [8, 16, 32, 64]
    post = gradflow.depth_sweep_over_seeds("post", depths, init="fan_in")
    pre = gradflow.depth_sweep_over_seeds("pre", depths, init="fan_in")
    assert abs(loglog_slope(depths, post["last_block_grad"])) < 0.15
    assert -0.65 < loglog_slope(depths, pre["last_block_grad"]) < -0.35
    assert all(p > 2 * q for p, q in zip(post["last_block_grad"], pre["last_block_grad"]))
    for sweep in (post, pre):
        law = [g * v ** 0.5 for g, v in zip(sweep["output_grad"], sweep["output_var"])]
        assert max(law) / min(law) < 1.1


def test_gpt_init_makes_pre_ln_gradients_larger_with_the_same_exponent():
    depths = [8, 16, 32, 64]
    post = gradflow.depth_sweep_over_seeds("post", depths, init="gpt")
    pre = gradflow.depth_sweep_over_seeds("pre", depths, init="gpt")
    assert all(q > 2 * p for p, q in zip(post["last_block_grad"], pre["last_block_grad"]))
    assert -0.65 < loglog_slope(depths, pre["last_block_grad"]) < -0.35


def test_without_residuals_and_norms_the_gradient_vanishes_with_depth():
    """01: the plain stack's first-block gradient vanishes past about 16 blocks; with a norm before each
    branch (still no skip) it does not vanish."""
    shallow = gradflow.layer_stats("no residual, no norm", 8, init="fan_in")
    deep = gradflow.layer_stats("no residual, no norm", 32, init="fan_in")
    assert shallow.param_grad_norm[0] > 0.1 and deep.param_grad_norm[0] < 1e-5
    assert deep.stream_rms[-1] < 1e-6
    normed = gradflow.layer_stats("no residual", 32, init="fan_in")
    assert normed.param_grad_norm[0] > 0.1


def test_post_ln_buries_the_embedding_at_the_add_and_pre_ln_keeps_it():
    """01, "buried at the Add": with fan-in init the embedding's share of the stream (cosine) falls to noise within
    16 Post-LN blocks, while Pre-LN keeps about 1/RMS(x_L) of it; with GPT-2's init Post-LN keeps it."""
    post = gradflow.layer_stats("post", 16, init="fan_in").embedding_cosine
    pre = gradflow.layer_stats("pre", 16, init="fan_in").embedding_cosine
    assert post[0] > 0.5 and abs(post[-1]) < 0.05 and pre[-1] > 0.15
    assert gradflow.layer_stats("post", 16, init="gpt").embedding_cosine[-1] > 0.9


def test_init_names_map_to_config_fields():
    assert gradflow.init_fields("GPT-2") == dict(init="gpt", init_std=0.02, depth_scaled_init=True)
    assert gradflow.stack_config("pre", 2, **gradflow.init_fields("fan-in")).init == "fan_in"
    with pytest.raises(ValueError, match="init must be one of"):
        gradflow.init_fields("gpt")


def test_warmup_grid_keys_and_determinism_on_a_tiny_grid():
    kwargs = dict(inits=("fixed 0.02",), lrs=(1e-2,), seeds=(0, 1), depth=1, steps=4, warmup_steps=2)
    grid = gradflow.warmup_grid(**kwargs)
    assert set(grid) == {("fixed 0.02", 1e-2, arch, w) for arch in ("post", "pre") for w in (0, 2)}
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in grid.values())
    assert grid == gradflow.warmup_grid(**kwargs)


def test_warmup_verdicts_judge_the_gains_seed_by_seed():
    """helps / hurts: every seed's paired gain beyond the 0.1 margin one way; small: none beyond it; mixed: else."""
    grid = {("fan-in", 1e-2, "pre", 0): [3.0, 3.1, 3.05], ("fan-in", 1e-2, "pre", 40): [2.7, 2.71, 2.72],
            ("fan-in", 1e-2, "post", 0): [2.7, 3.0, 2.8], ("fan-in", 1e-2, "post", 40): [2.75, 2.8, 2.85],
            ("fan-in", 3e-3, "pre", 0): [2.80, 2.81, 2.82], ("fan-in", 3e-3, "pre", 40): [2.79, 2.83, 2.82],
            ("fan-in", 3e-3, "post", 0): [2.6, 2.6, 2.6], ("fan-in", 3e-3, "post", 40): [2.8, 2.9, 2.75]}
    verdicts = gradflow.warmup_verdicts(grid)
    high, low = verdicts[("fan-in", 1e-2)], verdicts[("fan-in", 3e-3)]
    assert high["pre"]["verdict"] == "helps" and abs(high["pre"]["spread"] - 0.1) < 1e-9
    assert high["post"]["verdict"] == "mixed"  # gains -0.05, +0.2, -0.05: the seeds disagree
    assert low["pre"]["verdict"] == "small" and low["post"]["verdict"] == "hurts"
    fig = gradflow.figure_warmup_grid(grid, 2.485, 3.417)
    assert all(ax.has_data() for ax in fig.axes)


def test_unigram_entropy_lies_between_the_entropy_rate_and_uniform():
    chain = gradflow.MarkovChain(32)
    assert chain.entropy_rate() < gradflow.unigram_entropy(chain) < math.log(32)


def test_spike_run_refuses_an_unknown_optimizer_and_adam_does_not_overflow():
    with pytest.raises(ValueError, match="optimizer must be"):
        gradflow.swiglu_spike_run(10.0, None, optimizer="lion")
    run = gradflow.swiglu_spike_run(10.0, None, optimizer="adam", lr=1e-2)
    assert all(math.isfinite(v) for v in run.losses) and max(run.grad_norms) > 100
