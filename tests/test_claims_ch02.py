"""The verdicts of notebook 02 (initialisation), asserted over the seeds and grids the notebook states.

Run with ``-o addopts=""`` (the slow marker is deselected by default)."""
import math

import pytest
import torch

from course_utils import initialization as init
from course_utils.measure import loglog_slope


@pytest.mark.slow
@pytest.mark.rerun
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


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter2_mup_transfer_comes_from_the_learning_rates():
    """02, μP fact check, ablation: recomputes the stored readout ablation (widths 32 and 512, 13 rates, seeds 0-2),
    checks the stored numbers, and asserts that μP's rates with the fan-in readout keep every seed's best rate within
    one grid step from width 32 to 512 (at 1e-2 at 512), while SP's rate with the zero readout falls by at least 0.75
    decade on every seed (to 1e-3), as plain SP's does."""
    fresh = init.compute_readout_ablation(progress=False)
    stored = init.load_width_sweeps(names=init.ABLATION_SWEEPS)
    for name in fresh:
        for width in fresh[name].widths:
            for a_row, b_row in zip(fresh[name].losses[width], stored[name].losses[width]):
                for a, b in zip(a_row, b_row):
                    # as in the main sweep: another arithmetic order moves 80 Adam steps a little
                    assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 0.02, (name, width, a, b)
    mup_rates, sp_zero = (fresh[name] for name in init.ABLATION_SWEEPS)
    for i in range(3):
        assert abs(math.log10(mup_rates.best_lr(32, i) / mup_rates.best_lr(512, i))) <= 0.25 + 1e-9
        assert abs(mup_rates.best_lr(512, i) - 1e-2) < 1e-9
        assert math.log10(sp_zero.best_lr(32, i) / sp_zero.best_lr(512, i)) >= 0.75 - 1e-9
        assert abs(sp_zero.best_lr(512, i) - 1e-3) < 1e-12


def test_chapter2_tanh_gain_4_gradient_growth():
    """02, section 2.1: at gain 4 a 20-layer tanh stack's gradient grows about 3500x from layer 20 to layer 1."""
    stats = init.signal_propagation(20, 4.0, "tanh")
    assert 2500 < stats["gradient_std"][0] / stats["gradient_std"][-1] < 5000


def test_chapter2_pytorch_defaults_forget_the_input_only_with_bias():
    """02, fact check "nn.Linear: Kaiming uniform": without bias the default weights shrink the output to ~1e-8 but a
    bias-free ReLU stack is positively homogeneous, so the input-dependent share (per-feature std over the batch /
    output std) is the same as under He's weights (stored 0.23 and 0.21); with the default bias it collapses to ~5e-7
    at the default weights and stays at He's share (0.20) with He's weights."""
    he = math.sqrt(2 / 512)
    default_nb = init.pytorch_default_relu_stack(bias=False)
    he_nb = init.pytorch_default_relu_stack(bias=False, weight_std=he)
    default_b = init.pytorch_default_relu_stack(bias=True)
    he_b = init.pytorch_default_relu_stack(bias=True, weight_std=he)
    assert 1e-9 < default_nb["output_std"] < 1e-7
    assert 5e-3 < default_b["output_std"] < 5e-2
    # no bias: the same share within 30% (two different weight draws), both far from 0
    assert 0.1 < default_nb["input_dependent_ratio"] < 0.4 and 0.1 < he_nb["input_dependent_ratio"] < 0.4
    assert abs(default_nb["input_dependent_ratio"] / he_nb["input_dependent_ratio"] - 1) < 0.3
    # with bias: the default weights leave a millionth, He's weights keep the no-bias share
    assert default_b["input_dependent_ratio"] < 1e-5  # stored 4.7e-7
    assert 0.1 < he_b["input_dependent_ratio"] < 0.4


def test_chapter2_explosion_turns_into_nan_past_float32_range():
    """02, fact check "too large a weight -> explode -> NaN": a linear stack at gain 4 is finite up to layer 62, has its
    first inf (float32 overflow) at layer 63 and its first NaN (inf - inf) at layer 64; ReLU at gain 4 is finite after
    60 layers (std ~4e26); gain 0.25 vanishes (std ~1e-12 after 20 layers)."""
    stats = init.signal_propagation(70, 4.0, "linear")
    act = stats["activation_std"]
    first_inf = next(layer for layer, n in enumerate(stats["inf_count"], 1) if n)
    first_nan = next(layer for layer, n in enumerate(stats["nan_count"], 1) if n)
    assert (first_inf, first_nan) == (63, 64) and 1e36 < act[61] < 1e38, (first_inf, first_nan, act[60:63])
    assert all(math.isfinite(v) for v in act[:62])
    relu = init.signal_propagation(60, 4.0, "relu")["activation_std"]
    assert all(math.isfinite(v) for v in relu) and 1e25 < relu[-1] < 1e28
    small = init.signal_propagation(20, 0.25, "linear")
    assert small["activation_std"][-1] < 1e-11 and small["gradient_std"][0] < 1e-11


def test_chapter2_swiglu_he_modes_and_where_the_gain_goes():
    """02, fact check "N(0, 2/fan_out) for SwiGLU": not a SwiGLU rule. At hidden = 4d (256 -> 1024 -> 256) He fan_out
    keeps neither direction (0.64, 1.30), nor at 3.5d (896, Llama 3 8B's and Mistral 7B's ratio: 0.74, 1.52); at
    LLaMA's 8d/3 (683) it keeps the forward scale (1.02) but the backward is 2.1; its forward ratio moves with hidden/d
    alone (1.4 at 2x, 0.29 at 8x). Under every init and ratio the backward ratio is about twice the forward one (2.0 to
    2.1), so no init keeps both. He fan_in (3.2, 6.6) and plain fan-in (0.36, 0.74) keep neither at any of the three
    ratios. The gain G gives ~1 forward (and ~2.1 backward) on W_down or on W_up alone, 1.11 as sqrt(G) on W_gate and
    W_up, and 3.4 as G on both (above 0.354 G^4, the homogeneous-silu value, by more than the factor 1.15 that
    prediction 2.b is scored with)."""
    ratios = {(hidden, name): init.swiglu_block_ratios(*stds(256, hidden), hidden=hidden)
              for hidden in (1024, 896, 683) for name, stds in init.SWIGLU_INITS.items()}
    r4, r35, r83 = (ratios[hidden, "He fan_out"] for hidden in (1024, 896, 683))
    assert 0.55 < r4["forward"] < 0.75 and 1.15 < r4["backward"] < 1.45, r4
    assert 0.68 < r35["forward"] < 0.8 and 1.35 < r35["backward"] < 1.7, r35  # stored 0.74, 1.52
    assert abs(r83["forward"] - 1) < 0.05 and 1.9 < r83["backward"] < 2.3, r83  # forward right, backward 2x off
    for hidden in (1024, 896, 683):
        he_in, plain = ratios[hidden, "He fan_in"], ratios[hidden, "fan-in"]
        assert 2.8 < he_in["forward"] < 3.6 and 5.8 < he_in["backward"] < 7.4, he_in
        assert 0.32 < plain["forward"] < 0.40 and 0.65 < plain["backward"] < 0.82, plain
    for r in ratios.values():  # backward about twice forward whatever the init: no init keeps both directions
        assert 1.9 < r["backward"] / r["forward"] < 2.2, ratios
    # the forward ratio of fan_out mode is a function of hidden/d: far from 1 at 2x and 8x
    fan_out = init.SWIGLU_INITS["He fan_out"]
    assert init.swiglu_block_ratios(*fan_out(256, 512), hidden=512, backward=False)["forward"] > 1.25
    assert init.swiglu_block_ratios(*fan_out(256, 2048), hidden=2048, backward=False)["forward"] < 0.4
    z = torch.randn(1_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = float((torch.nn.functional.silu(z) * z.roll(1)).pow(2).mean())
    G = 1 / math.sqrt(m)
    stds = init.SWIGLU_INITS["fan-in"](256, 1024)

    def forward(gains):
        return init.swiglu_block_ratios(*stds, gains=gains)["forward"]

    assert abs(forward((1, 1, G)) - 1) < 0.05 and abs(forward((1, G, 1)) - 1) < 0.05
    down = init.swiglu_block_ratios(*stds, gains=(1, 1, G))["backward"]
    assert 1.9 < down < 2.3, down  # the gain fixes the forward signal only
    assert 1.05 < forward((G ** 0.5, G ** 0.5, 1)) < 1.2
    both = forward((G, G, 1))
    # above 0.354 G^4 = 2.83, what a silu that scaled like ReLU (silu(G a) = G silu(a)) would give, by more than the 2%
    # sampling noise: silu is not positively homogeneous
    assert m * G ** 4 + 0.3 < both < 4.0, both
    assert both / (m * G ** 4) > 1.15, both  # reveal("2.b", factor=1.15) scores the homogeneous answer as outside


def test_chapter2_tanh_just_above_gain_1():
    """02, sections 2.1 and 2.3: without biases a tanh stack's gradient grows once settled for every gain above 1 (per
    layer over layers 60 to 31 of 60: about 1.01 at gain 1.1, 1.03 at 1.3, 1.10 at 5/3; below 1 at gain 1), yet over 20
    layers it still shrinks toward the input at gains 1.1 and 1.2 (layer 1 below layer 20); gain 1.3 keeps activations
    and gradients within 1.5x at layers 1, 10 and 20. Seeds 0, 1, 2."""
    for seed in range(3):
        def settled(gain):
            g = init.signal_propagation(60, gain, "tanh", seed=seed)["gradient_std"]
            return (g[30] / g[59]) ** (1 / 29)

        factors = {gain: settled(gain) for gain in (1.0, 1.1, 1.3, 5 / 3)}
        assert factors[1.0] < 1 < factors[1.1] < factors[1.3] < factors[5 / 3], factors
        assert 1.002 < factors[1.1] < 1.02 and 1.02 < factors[1.3] < 1.05 and 1.07 < factors[5 / 3] < 1.13, factors
        for gain in (1.1, 1.2):
            g = init.signal_propagation(20, gain, "tanh", seed=seed)["gradient_std"]
            assert g[0] < 0.8 * g[-1], (gain, seed, g[0], g[-1])
        st = init.signal_propagation(20, 1.3, "tanh", seed=seed)
        for key in ("activation_std", "gradient_std"):
            picked = [st[key][i] for i in (0, 9, 19)]
            assert max(picked) / min(picked) < 1.5, (key, seed, picked)


def test_chapter2_adam_epsilon_dwarfs_the_vanishing_gradients():
    """02, fact check "too small -> no training": in the gain-0.25 linear stack (20 layers, width 256, batch 256, the
    summed loss of section 2.1) the weight gradients are about 4e-11 at every layer, far below Adam's default eps 1e-8,
    so Adam's step lr * g / (|g| + eps) is far below lr there."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        ws = [(0.25 / 16 * torch.randn(256, 256, generator=g)).requires_grad_() for _ in range(20)]
        h = torch.randn(256, 256, generator=g)
        for w in ws:
            h = h @ w
        grads = torch.autograd.grad((h * torch.randn(256, 256, generator=g)).sum(), ws)
        medians = [float(gr.abs().median()) for gr in grads]
        assert all(1e-11 < m < 1e-10 for m in medians), (seed, medians)
        assert max(m / (m + 1e-8) for m in medians) < 0.02


def test_chapter2_adam_first_step_grows_with_fan_in_on_aligned_inputs():
    """02, section 2.6: one Adam step lr * sign(G^T X) from a batch of 32; |dW x| / |W x| on fresh inputs grows like
    fan_in for ReLU features (which share a direction through their mean) and only like sqrt(fan_in) for zero-mean
    Gaussian inputs; on the batch it came from, faster than sqrt. Widths 32 to 2048, seeds 0, 1, 2."""
    from course_utils.measure import loglog_slope

    widths = [32, 128, 512, 2048]
    for seed in range(3):
        torch.manual_seed(seed)
        slopes = {}
        for kind, draw in (("gaussian", torch.randn), ("relu", lambda *s: torch.relu(torch.randn(*s)))):
            fresh, batch = [], []
            for width in widths:
                w = torch.randn(width, width) / math.sqrt(width)
                x = draw(32, width)
                step = 1e-3 * torch.sign(torch.randn(32, width).T @ x)
                new = draw(256, width)
                fresh.append(float(((new @ step.T).norm(dim=1) / (new @ w.T).norm(dim=1)).mean()))
                batch.append(float(((x @ step.T).norm(dim=1) / (x @ w.T).norm(dim=1)).mean()))
            slopes[kind] = (loglog_slope(widths, fresh), loglog_slope(widths, batch))
        assert 0.9 < slopes["relu"][0] < 1.1, slopes
        assert 0.4 < slopes["gaussian"][0] < 0.6, slopes
        assert slopes["gaussian"][1] > 0.7, slopes


def test_chapter2_blocks_share_of_the_residual_stream():
    """02, fact check on depth-scaled projections: the blocks' share Var(x_L) - Var(x_0) grows like L^0.98 under fixed
    0.02 and stays flat (~0.0004, exponent 0.06) under GPT-2; the embeddings give ~0.0008."""
    depths = [2, 4, 8, 16, 32]
    plain = init.residual_stream_growth(depths)
    scaled = init.residual_stream_growth(depths, depth_scaled_init=True)
    assert 0.85 < loglog_slope(depths[1:], plain["blocks"][1:]) < 1.1
    assert abs(loglog_slope(depths[1:], scaled["blocks"][1:])) < 0.15
    assert all(3e-4 < v < 5e-4 for v in scaled["blocks"][1:]), scaled["blocks"]
    assert all(6e-4 < v < 1e-3 for v in scaled["embedding"]), scaled["embedding"]


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
    assert 0.8 < loglog_slope(depths[1:], plain["output_var"][1:]) < 1.1
    assert abs(loglog_slope(depths[1:], scaled["output_var"][1:])) < 0.05


def test_chapter2_embedding_n01_needs_a_head_rescale():
    """02, fact check "Embedding N(0, 1)": far above ln V at std 1 (254), near it at 0.02 only at (d, V) = (256, 512);
    at d = 768 std 0.02 starts at 15 (> 2 ln V). T5's d^-1/2 head rescale cuts std 1's loss more than tenfold at
    d = 256 (about 16) but not to ln V, and leaves 27 at d = 768: it shrinks d*sigma to sqrt(d)*sigma."""
    ln_v = math.log(512)
    assert init.tied_head_initial_loss(1.0) > 30 * ln_v
    assert abs(init.tied_head_initial_loss(0.02) - ln_v) < 0.5
    t5 = init.tied_head_initial_loss(1.0, head_scale=256 ** -0.5)
    assert ln_v < t5 < init.tied_head_initial_loss(1.0) / 10
    assert init.tied_head_initial_loss(0.02, d_model=768) > 2 * ln_v  # stored 15.05
    assert 3 * ln_v < init.tied_head_initial_loss(1.0, d_model=768, head_scale=768 ** -0.5) < 40  # stored 27.49


def test_chapter2_tied_n01_embedding_through_blocks():
    """02, the same fact check with blocks between the embedding and the tied head (PaLM's setting: N(0, 1) tied
    embedding, logits x d^-1/2, d = 256, V = 512), seeds 0, 1, 2: with 8 fan-in blocks the blocks take over the stream
    (embedding share ~0.14) and the initial loss falls to ~7.3, within 1.5 nats of ln V; with 8 fixed-0.02 blocks the
    embedding still makes up ~0.98 of the stream and the loss stays near the no-block limit (~15.8), so the rescale's
    leftover excess depends on the blocks' init."""
    ln_v = math.log(512)
    for seed in range(3):
        fan_in = init.tied_head_loss_through_blocks(8, "fan-in", seed=seed)
        fixed = init.tied_head_loss_through_blocks(8, "fixed 0.02", seed=seed)
        limit = init.tied_head_loss_through_blocks(0, "fan-in", seed=seed)
        assert fan_in["loss"] < ln_v + 1.5 and fan_in["embedding_share"] < 0.2, (seed, fan_in)
        assert fixed["embedding_share"] > 0.95 and fixed["loss"] > 2 * ln_v, (seed, fixed)
        assert abs(fixed["loss"] - limit["loss"]) < 1.0 and fixed["loss"] - fan_in["loss"] > 5, (seed, fixed, limit)


def test_chapter2_squaring_layers_fail_before_float32_overflow():
    """02, fact check "too large -> NaN": a layer that squares its input fails long before the bare stack's 3.4e38:
    on rows of 256 float32 values, rms_norm and layer_norm work at std 1e18, return exact zeros at 1e19 (the mean
    square overflows: a silent failure, not a NaN), and layer_norm returns NaN at 1e26 (the ReLU gain-4 stack's
    level)."""
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    F = torch.nn.functional
    for std in (1e18, 1e19, 1e26):
        rms, ln = F.rms_norm(std * x, (256,)), F.layer_norm(std * x, (256,))
        if std == 1e18:
            assert 3 < float(rms.abs().max()) < 6 and 3 < float(ln.abs().max()) < 6
        elif std == 1e19:
            assert float(rms.abs().max()) == 0 and float(ln.abs().max()) == 0
        else:
            assert float(rms.abs().max()) == 0 and bool(ln.isnan().any())


def test_chapter2_xavier_keeps_variance_only_on_square_layers():
    """02, fact check "Var[output] = Var[input] gives Xavier": 0.4 and 1.6 on 256 -> 1024, 1 on 512 -> 512."""
    from solutions.ch02_initialization import xavier_uniform

    torch.manual_seed(0)
    w, x, g = xavier_uniform(1024, 256), torch.randn(4096, 256), torch.randn(4096, 1024)
    assert abs((x @ w.T).var() / x.var() - 0.4) < 0.02 and abs((g @ w).var() / g.var() - 1.6) < 0.05
    w, x = xavier_uniform(512, 512), torch.randn(4096, 512)
    assert abs((x @ w.T).var() / x.var() - 1.0) < 0.05
