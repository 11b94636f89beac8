"""The verdicts of notebook 02 (initialisation), asserted over the seeds and grids the notebook states.

Run with ``-o addopts=""`` (the slow marker is deselected by default)."""
import math

import pytest
import torch

from course_utils import initialization as init


@pytest.mark.slow
def test_chapter2_mup_keeps_the_best_lr_and_sp_does_not():
    """02, fact check "μP: a learning rate found on a small model applies to a large one": recomputes the stored
    sweep (3 widths x 13 learning rates a quarter decade apart x seeds 0, 1, 2, SP and μP), checks that the
    notebook's stored numbers are what the code gives, and asserts the verdict seed by seed: under SP every seed's
    best rate falls by at least 0.75 decade from width 32 to 512 (stored: 1.0 to 1.25); under μP it moves by at most
    one grid step (0.25 decade) on every seed and not at all from 128 to 512; the smallest SP shift exceeds the largest
    μP shift by at least half a decade (the effect against the seed spread)."""
    fresh = init.compute_width_sweeps(progress=False)
    stored = init.load_width_sweeps()
    for name in fresh:
        for width in fresh[name].widths:
            for a_row, b_row in zip(fresh[name].losses[width], stored[name].losses[width]):
                for a, b in zip(a_row, b_row):
                    # 80 Adam steps amplify another arithmetic order a little; 0.02 is far below the gaps we read
                    assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 0.02, (name, width, a, b)
    sp, mup = fresh["standard (SP)"], fresh["μP"]

    def shift(sweep, seed_index, a=32, b=512):
        return math.log10(sweep.best_lr(a, seed_index)) - math.log10(sweep.best_lr(b, seed_index))

    sp_shifts = [shift(sp, i) for i in range(3)]
    mup_shifts = [abs(shift(mup, i)) for i in range(3)]
    assert min(sp_shifts) >= 0.75 - 1e-9, sp_shifts
    assert max(mup_shifts) <= 0.25 + 1e-9, mup_shifts
    assert all(mup.best_lr(128, i) == mup.best_lr(512, i) for i in range(3))
    assert min(sp_shifts) - max(mup_shifts) >= 0.5 - 1e-9, (sp_shifts, mup_shifts)


def test_chapter2_tanh_gain_4_gradient_growth():
    """02, section 2.1: at gain 4 a 20-layer tanh stack's gradient grows about 3500x from layer 20 to layer 1."""
    stats = init.signal_propagation(20, 4.0, "tanh")
    assert 2500 < stats["gradient_std"][0] / stats["gradient_std"][-1] < 5000


def test_chapter2_pytorch_defaults_forget_the_input_with_or_without_bias():
    """02, fact check "nn.Linear: Kaiming uniform": without bias the output is ~1e-8; with the default bias it is
    ~1e-2, and its input-dependent part ~1e-8 (a millionth of it)."""
    without, with_bias = init.pytorch_default_relu_stack(bias=False), init.pytorch_default_relu_stack(bias=True)
    assert 1e-9 < without["output_std"] < 1e-7
    assert 5e-3 < with_bias["output_std"] < 5e-2
    assert with_bias["input_dependent_std"] < 1e-5 * with_bias["output_std"]  # stored: 8e-9 against 1.6e-2 (5e-7)


def test_chapter2_init_table_and_depth_scaling():
    """02, the init table and the GPT-2 fact check: GPT-2's residual projections are 2L = 8 times below fixed 0.02;
    Pre-LN's Var(x_L) grows like L^0.9 under fixed 0.02 and is flat under GPT-2."""
    from course_utils import gradflow

    table = init.init_recipe_table()
    for layer in ("attn.proj", "mlp.down"):
        assert 6 < table["fixed 0.02"][layer] / table["GPT-2"][layer] < 10, table
    depths = [2, 4, 8, 16, 32]
    plain = gradflow.depth_sweep("pre", depths)
    scaled = gradflow.depth_sweep("pre", depths, depth_scaled_init=True)
    assert 0.8 < gradflow.loglog_slope(depths[1:], plain["output_var"][1:]) < 1.1
    assert abs(gradflow.loglog_slope(depths[1:], scaled["output_var"][1:])) < 0.05


def test_chapter2_embedding_n01_needs_a_head_rescale():
    """02, fact check "Embedding N(0, 1)": far above ln V at std 1 (254), near it at 0.02; T5's d^-1/2 head rescale
    cuts std 1's loss more than tenfold (about 16) but not to ln V in this toy."""
    ln_v = math.log(512)
    assert init.tied_head_initial_loss(1.0) > 30 * ln_v
    assert abs(init.tied_head_initial_loss(0.02) - ln_v) < 0.5
    t5 = init.tied_head_initial_loss(1.0, head_scale=256 ** -0.5)
    assert ln_v < t5 < init.tied_head_initial_loss(1.0) / 10


def test_chapter2_xavier_keeps_variance_only_on_square_layers():
    """02, fact check "Var[output] = Var[input] gives Xavier": 0.4 and 1.6 on 256 -> 1024, 1 on 512 -> 512."""
    from solutions.ch02_initialization import xavier_uniform

    torch.manual_seed(0)
    w, x, g = xavier_uniform(1024, 256), torch.randn(4096, 256), torch.randn(4096, 1024)
    assert abs((x @ w.T).var() / x.var() - 0.4) < 0.02 and abs((g @ w).var() / g.var() - 1.6) < 0.05
    w, x = xavier_uniform(512, 512), torch.randn(4096, 512)
    assert abs((x @ w.T).var() / x.var() - 1.0) < 0.05
