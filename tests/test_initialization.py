"""Chapter 2: the answers against torch.nn.init and autograd, and the measurements behind the plots."""
import math

import pytest
import torch
import torch.nn as nn

from course_utils import initialization as init
from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.runtime import triton_status
from solutions.ch02_initialization import kaiming_normal, mup_param_groups, tie_weights, xavier_uniform


def _kurtosis(w):
    w = w.double().flatten()
    return float(((w - w.mean()) ** 4).mean() / w.var() ** 2)


@pytest.mark.parametrize("fan_out,fan_in,gain", [(1024, 256, 1.0), (300, 300, 5 / 3)])
def test_xavier_matches_torch_statistics(fan_out, fan_in, gain):
    torch.manual_seed(0)
    mine = xavier_uniform(fan_out, fan_in, gain)
    theirs = nn.init.xavier_uniform_(torch.empty(fan_out, fan_in), gain=gain)
    torch.testing.assert_close(mine.std(), theirs.std(), rtol=0.01, atol=0)  # sampling noise of 1e5 values
    torch.testing.assert_close(mine.abs().max(), theirs.abs().max(), rtol=1e-3, atol=0)  # both ≈ the bound
    assert abs(_kurtosis(mine) - 1.8) < 0.03


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity", ["relu", "linear", "tanh"])
def test_kaiming_matches_torch_statistics(mode, nonlinearity):
    torch.manual_seed(0)
    mine = kaiming_normal(256, 1024, mode, nonlinearity)
    theirs = nn.init.kaiming_normal_(torch.empty(256, 1024), mode=mode, nonlinearity=nonlinearity)
    torch.testing.assert_close(mine.std(), theirs.std(), rtol=0.01, atol=0)  # sampling noise
    assert abs(_kurtosis(mine) - 3.0) < 0.05


def test_gpt_init_by_name():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(n_layer=8, d_model=128, bias=True, depth_scaled_init=True))
    for name, p in model.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.down.weight")):
            assert abs(p.std().item() - 0.02 / 4) < 0.0005, name
        elif name.endswith("bias") and "ln" not in name and "norm" not in name:
            assert torch.count_nonzero(p) == 0, name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.001, name
        else:  # norm weights stay 1
            assert torch.all(p == 1) or torch.all(p == 0), name


def test_tied_gradient_is_the_sum_of_both_uses():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=16, d_model=16, n_layer=1, block_size=8)
    tied, untied = TinyTransformer(config), TinyTransformer(config)
    tie_weights(tied)
    assert tied.lm_head.weight is tied.tok_emb.weight
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.tok_emb.weight.detach().clone()})
    tokens = torch.randint(0, 16, (2, 8))
    for model in (tied, untied):
        model(tokens, tokens.roll(-1, 1))[1].backward()
    torch.testing.assert_close(tied.tok_emb.weight.grad, untied.tok_emb.weight.grad + untied.lm_head.weight.grad)


def test_mup_groups_cover_every_parameter_once():
    model = init.WidthMLP(128)
    groups = mup_param_groups(model, 1e-2, 32)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lrs[id(model.input.weight)] == 1e-2
    assert lrs[id(model.hidden.weight)] == lrs[id(model.output.weight)] == pytest.approx(1e-2 / 4)


def test_signal_propagation_follows_the_variance_rule():
    linear = init.signal_propagation(10, 1.0, "linear")
    assert all(0.8 < s < 1.25 for s in linear["activation_std"])
    relu_he = init.signal_propagation(10, math.sqrt(2), "relu")
    relu_default = init.signal_propagation(10, 1 / math.sqrt(3), "relu")
    assert relu_default["activation_std"][-1] < 1e-3 < relu_he["activation_std"][-1]
    exploding = init.signal_propagation(10, 2.0, "linear")
    assert exploding["activation_std"][-1] > 100 and exploding["gradient_std"][0] > 100


def test_default_init_report_measures_pytorch():
    report = init.default_init_report()
    assert abs(report["linear_weight_std_x_sqrt_fan_in"] - 1 / math.sqrt(3)) < 0.01
    assert report["linear_weight_max_x_sqrt_fan_in"] <= 1.0 + 1e-6
    assert abs(report["embedding_std"] - 1.0) < 0.02


def test_tied_head_initial_loss_is_near_ln_v_only_for_small_embeddings():
    assert abs(init.tied_head_initial_loss(0.02) - math.log(512)) < 0.5
    assert init.tied_head_initial_loss(1.0) > 10 * math.log(512)
    t5 = init.tied_head_initial_loss(1.0, head_scale=256 ** -0.5)  # T5's d^-1/2 head rescale
    assert math.log(512) < t5 < init.tied_head_initial_loss(1.0) / 10


@pytest.mark.parametrize("groups,zero_output", [(init.standard_param_groups, False), (mup_param_groups, True)])
def test_batched_width_sweep_matches_the_plain_adam_loop(groups, zero_output):
    """train_width_mlp_batched (the notebook's sweep) against train_width_mlp (torch.optim.Adam), per seed and lr."""
    lrs, seeds = (1e-2, 1e-1), (0, 1)
    batched = init.train_width_mlp_batched(64, lrs, groups, zero_output=zero_output, steps=30, seeds=seeds)
    for i, seed in enumerate(seeds):
        for j, lr in enumerate(lrs):
            plain = init.train_width_mlp(64, lr, groups, zero_output=zero_output, steps=30, seed=seed)
            assert abs(batched[i][j] - plain) < 1e-4, (seed, lr)  # bmm vs mm: another summation order


def test_width_sweep_cache_has_the_notebook_shape():
    sweeps = init.load_width_sweeps()
    assert list(sweeps) == ["standard (SP)", "μP"]
    for sweep in sweeps.values():
        assert sweep.widths == [32, 128, 512] and len(sweep.lrs) == 13 and sweep.seeds == (0, 1, 2)
        assert all(len(rows) == 3 and all(len(r) == 13 for r in rows) for rows in sweep.losses.values())


def test_pytorch_default_relu_stack_forgets_its_input():
    with_bias, without = init.pytorch_default_relu_stack(bias=True), init.pytorch_default_relu_stack(bias=False)
    assert without["output_std"] < 1e-6
    assert with_bias["output_std"] > 1e-3 and with_bias["input_dependent_std"] < 1e-6


def test_init_recipe_table_follows_fan_in_times_variance():
    table = init.init_recipe_table()
    assert all(0.9 < v < 1.1 for v in table["fan-in"].values())
    for layer, fan_in in (("attn.qkv", 64), ("attn.proj", 64), ("mlp.up", 64), ("mlp.down", 256), ("lm_head", 64)):
        assert abs(table["fixed 0.02"][layer] / (fan_in * 0.02 ** 2) - 1) < 0.1, layer  # sampling noise
        expected = table["fixed 0.02"][layer] / (8 if layer in ("attn.proj", "mlp.down") else 1)
        assert abs(table["GPT-2"][layer] / expected - 1) < 0.1, layer


@pytest.mark.kernel
@pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)
def test_triton_normal_init_is_counter_based_and_normal():
    from course_utils.kernels.randn import normal_init_triton

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = normal_init_triton((50, 999), 0.5, seed=7, device=dev)
    assert torch.equal(a, normal_init_triton((50, 999), 0.5, seed=7, block=128, device=dev))
    assert torch.equal(a.flatten()[:999], normal_init_triton((999,), 0.5, seed=7, device=dev))
    assert not torch.equal(a, normal_init_triton((50, 999), 0.5, seed=8, device=dev))
    z = (a / 0.5).double().flatten()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02 and abs(_kurtosis(z) - 3) < 0.1
    # Kolmogorov-Smirnov distance to the normal CDF; 1.63/sqrt(n) is the 1% critical value
    sorted_z = z.sort().values
    cdf = 0.5 * (1 + torch.erf(sorted_z / math.sqrt(2)))
    n = z.numel()
    ks = torch.maximum(torch.arange(1, n + 1) / n - cdf, cdf - torch.arange(n) / n).max()
    assert ks < 1.63 / math.sqrt(n)
    assert normal_init_triton((0, 3), 1.0, seed=1).shape == (0, 3)


def test_readout_ablation_cache_has_the_notebook_shape():
    sweeps = init.load_width_sweeps(names=init.ABLATION_SWEEPS)
    assert list(sweeps) == list(init.ABLATION_SWEEPS)
    for sweep in sweeps.values():
        assert sweep.widths == [32, 512] and len(sweep.lrs) == 13 and sweep.seeds == (0, 1, 2)
        assert all(len(rows) == 3 and all(len(r) == 13 for r in rows) for rows in sweep.losses.values())


def test_swiglu_block_ratios_match_the_identity_case():
    # the block is linear in W_down: doubling it multiplies both second-moment ratios by 4
    base = init.swiglu_block_ratios(0.0625, 1 / 32)
    doubled = init.swiglu_block_ratios(0.0625, 1 / 32, gains=(1, 1, 2))
    assert abs(doubled["forward"] / base["forward"] - 4) < 1e-9
    assert abs(doubled["backward"] / base["backward"] - 4) < 1e-9


def test_signal_propagation_std_does_not_overflow_when_finite():
    # float32 activations near 1e37 are finite; their std must be too (computed in float64)
    act = init.signal_propagation(62, 4.0, "linear")["activation_std"]
    assert all(math.isfinite(v) for v in act)
