"""The verdicts of notebook 03 (normalisation): BatchNorm's leak and batch dependence (and the per-time-step variant),
which norm is faster (interleaved timing), whether centring matters (LayerNorm vs RMSNorm, with and without a shared
offset in the stream, at 150 and 600 steps, against the noise of a paired gap), LayerNorm's backward by hand against
autograd (exercise 3.6) and its 1/std scaling, where attention logits come from in a Pre-LN block and what QK-norm
does in training over an init x learning-rate x seed grid (the QK-norm fact check), and where soft-capping's gradient
ends. (The Triton "under the hood" claims are
test_chapter3_under_the_hood_claims in tests/test_notebook_claims.py.)

Run with ``-o addopts=""`` (the slow marker is deselected by default)."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import normalization as norms
from solutions.ch03_normalization import EX_3_6, layer_norm_backward, soft_cap


def test_chapter3_batchnorm_leak_padding_and_batch_mates_taken_apart():
    """03, BatchNorm fact check, seeds 0, 1, 2: with statistics over (batch, time) BatchNorm leaks the future (measured
    0.63 to 1.55) and a sequence's outputs change with padding alone in a batch of one (1.89 to 2.14), with a batch-mate
    alone (0.59 to 1.02) and with both (0.94 to 1.94); LayerNorm's change is exactly 0 in every case. BatchNorm over
    (B, T) runs on one sequence (statistics over time) and raises on a single vector; per-time-step BatchNorm
    (Cooijmans et al., 2016) does not leak (exactly 0) but changes with the batch-mate (stored 2.0, a sign flip in a
    batch of 2; in a batch of 16, 0.48 and 0.71 on seeds 0 and 1) and raises on a batch of one."""
    for seed in (0, 1, 2):
        leak = norms.batchnorm_future_leak(seed)
        assert leak["batchnorm"] > 0.3 and leak["layernorm"] == 0.0 and leak["batchnorm per time step"] == 0.0, leak
        for part, change in norms.padding_and_batchmate_parts(seed).items():
            assert change["batchnorm"] > 0.3 and change["layernorm"] == 0.0, (seed, part, change)
    mate = norms.batchmate_changes_output()
    assert mate["batchnorm per time step"] > 0.5 and mate["layernorm"] == 0.0, mate
    # in a batch of 2 that change is a sign flip (0 or 2); in a batch of 16 it is smaller and still there (stored 0.48)
    for seed in (0, 1):
        mate = norms.batchmate_changes_output(seed, batch=16)
        assert 0.2 < mate["batchnorm per time step"] < 1.5 and mate["layernorm"] == 0.0, (seed, mate)
    assert norms._batch_norm_over_bt(torch.randn(1, 16, 8)).shape == (1, 16, 8)
    for bad in (lambda: torch.nn.functional.batch_norm(torch.randn(1, 8), None, None, training=True),
                lambda: norms._batch_norm_per_step(torch.randn(1, 16, 8))):
        with pytest.raises(ValueError):
            bad()


def test_chapter3_rmsnorm_faster_from_scratch_and_slower_as_pytorch_ops():
    """03, speed fact check and prediction 3.a: timed in interleaved pairs (norms.norm_time_ratios), the from-scratch
    RMSNorm takes less than 0.85 of the from-scratch LayerNorm's time (measured 0.39 to 0.67 over 21 runs on a busy
    2-core machine, 0.55 to 0.70 under ATEN_CPU_CAPABILITY=default) and PyTorch's CPU F.rms_norm more than 1.05 times
    F.layer_norm's (measured 1.5 to 5.5). Without vector instructions (ATEN_CPU_CAPABILITY=default) the chapter states
    a smaller lead, 1.07 to 1.31 on a quiet machine, so there only the direction is asserted."""
    ratios = norms.norm_time_ratios(rows=4096, cols=1024, reps=60)
    slower = 1.0 if torch.backends.cpu.get_cpu_capability() == "DEFAULT" else 1.05
    assert ratios["from scratch"] < 0.85 and ratios["PyTorch ops"] > slower, ratios


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_centring_matters_only_with_an_offset_and_most_early():
    """03, "Does centring matter?" and prediction 3.b (4-block Pre-LN, fixed 0.02, AdamW 3e-3, seeds 0, 1, 2):
    recomputes the stored runs and checks them (every loss within 0.02), then asserts seed by seed, with a gap measured
    per seed (the runs of a seed share init draws and batches): LayerNorm and RMSNorm end within 0.003 of each other at
    150 and at 600 steps (stored: at most 0.002), and both learn (between the entropy rate 2.485 and 3.0, uniform
    guessing being 3.47). The runs the noise is read from (plain RMSNorm, offset 0.03) straddle 0 at 600 steps (stored
    -0.005 to +0.004); their largest |gap| there is the noise of a gap (stored 0.0048). The test can fail: with an
    offset of 1.0 RMSNorm is at least 0.03 behind LayerNorm at 150 steps on every seed (stored 0.069 to 0.128); by 600
    steps every gap is below 0.03 and still positive (stored +0.018, +0.003, +0.010; seed 1's is +0.002 under
    ATEN_CPU_CAPABILITY=default) and the mean gap exceeds 1.5 times the noise (stored 0.0107 against 0.0048, 2.2 times).
    The trained embeddings still write the offset (mean feature above 0.9, stored 0.985 to 0.996), but the stream loses
    most of it in the first block: its mean feature is below 0.5 after the first block (stored 0.30 to 0.40) and below
    0.35 after the last (stored 0.10 to 0.26), and on some seed plain RMSNorm's stream carries a larger mean of its own
    after the last block (stored -0.65 to +0.14); stored block means are reproduced within 0.1. LayerNorm's logits
    do not change with either offset at init. The offset of 0.03 is no null run: at 150 steps it is behind on every
    seed (stored +0.013, +0.044, +0.006); and, unlike 1.0, the network learns to remove most of it (mean feature below
    half of 0.03, stored 0.006 to 0.010). The sign of the offset-1.0 gap on three more seeds:
    test_chapter3_offset_gap_positive_on_three_more_seeds."""
    for offset in (0.03, 1.0):
        change = norms.offset_invariance(offset=offset)
        assert change["layernorm"] < 1e-4 and change["rmsnorm"] > 0.1, change
    fresh, stored = norms.centring_runs(), norms.load_centring_runs()
    assert fresh["checkpoints"] == stored["checkpoints"] == [150, 600]
    for label, per_step in stored["loss"].items():
        for step, values in per_step.items():
            assert all(abs(a - b) < 0.02 for a, b in zip(fresh["loss"][label][step], values)), (label, step)
    loss = fresh["loss"]

    def gaps(label, step):
        return [v - a for v, a in zip(loss[label][step], loss["layernorm"][step])]

    for step in ("150", "600"):
        layernorm, rmsnorm = loss["layernorm"][step], loss["rmsnorm"][step]
        for a, r in zip(layernorm, rmsnorm):
            assert abs(a - r) < 0.003 and 2.485 < min(a, r) and max(a, r) < 3.0, (step, layernorm, rmsnorm)
    controls = {label: gaps(label, "600") for label in ("rmsnorm", "rmsnorm, offset 0.03")}
    assert all(min(g) < 0 < max(g) for g in controls.values()), controls
    noise = max(abs(g) for values in controls.values() for g in values)
    assert min(gaps("rmsnorm, offset 0.03", "150")) > 0, "the small offset slows RMSNorm early on every seed"
    early, late = gaps("rmsnorm, offset 1", "150"), gaps("rmsnorm, offset 1", "600")
    assert min(early) > 0.03, early
    assert 0 < min(late) and max(late) < 0.03 and sum(late) / len(late) > 1.5 * noise, (late, noise)
    assert all(m > 0.9 for m in fresh["stream_mean"]["rmsnorm, offset 1"]), fresh["stream_mean"]
    blocks = fresh["block_mean"]
    for label, per_seed in stored["block_mean"].items():
        assert all(abs(a - b) < 0.1 for f, s in zip(blocks[label], per_seed) for a, b in zip(f, s)), label
    assert all(m[0] < 0.5 and m[-1] < 0.35 for m in blocks["rmsnorm, offset 1"]), blocks["rmsnorm, offset 1"]
    assert max(abs(m[-1]) for m in blocks["rmsnorm"]) > max(m[-1] for m in blocks["rmsnorm, offset 1"]), blocks
    assert all(0 < m < 0.015 for m in fresh["stream_mean"]["rmsnorm, offset 0.03"]), fresh["stream_mean"]


def test_chapter3_offset_gap_is_gone_by_1200_steps():
    """03, reveal 3.b and "Does centring matter?": trained 1200 steps (the stored "long" runs, same seeds, init draws
    and batches), RMSNorm with an offset of 1.0 minus LayerNorm is +0.005, -0.006, -0.001 on seeds 0, 1, 2 (stored:
    +0.0054, -0.0057, -0.0007; mean -0.0003), against +0.069 to +0.128 at 150 steps and +0.003 to +0.018 at 600: not
    positive on every seed and its mean inside the noise, so prediction 3.b's answer is (c). The plain runs (RMSNorm,
    offset 0.03) stay within 0.002 of LayerNorm there; the offset runs scatter about three times as wide, both ways."""
    long = norms.load_centring_runs()["long"]
    assert long["steps"] == 1200
    loss = long["loss"]

    def gaps(label):
        return [v - a for v, a in zip(loss[label], loss["layernorm"])]

    offset = gaps("rmsnorm, offset 1")
    noise = max(abs(g) for label in ("rmsnorm", "rmsnorm, offset 0.03") for g in gaps(label))
    assert noise < 0.003, noise
    assert min(offset) < 0 < max(offset) and max(abs(g) for g in offset) < 0.01, offset
    assert abs(sum(offset) / len(offset)) < noise, (offset, noise)


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_long_centring_runs_recomputed():
    """The stored 1200-step runs (ch03_centring.json, "long") recomputed: every loss within 0.02."""
    fresh, stored = norms.centring_long_runs(), norms.load_centring_runs()["long"]
    assert fresh["steps"] == stored["steps"]
    for label, values in stored["loss"].items():
        assert all(abs(a - b) < 0.02 for a, b in zip(fresh["loss"][label], values)), label


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_offset_gap_closes_as_the_embeddings_grow_their_token_part():
    """03, "Does centring matter?" and reveal 3.b: how RMSNorm works around an offset of 1.0 (seed 0, the stored
    run). The part of the embedding output that carries the tokens (its RMS after removing each position's mean) is
    about 0.028 at init (measured 0.0284), some 35 times below the offset-inflated RMS RMSNorm divides by; after 600
    steps it has grown about tenfold (measured 0.2685, x9.5; seed 2: 0.0288 -> 0.2603), so the ratio is about 4
    (measured 3.8). The fall of the stream's mean in the first block (stored: 0.60 to 0.69 on seeds 0, 1, 2; seed 0
    rerun here) is no evidence of cancelling: plain RMSNorm's first block, from embeddings whose mean is near 0
    (measured 0.0009; seeds 1, 2: -0.0012, -0.0046), moves the mean as much on some seed (stored after block 1:
    +0.12, -0.17, -0.64 on seeds 0, 1, 2)."""
    tokens = torch.arange(32)[None, :16]

    def token_part(x):
        return float((x - x.mean(-1, keepdim=True)).pow(2).mean().sqrt())

    from course_utils.gradflow import init_fields, stack_config

    torch.manual_seed(0)
    grid = norms.CENTRING_GRID
    config = stack_config("pre", grid["depth"], norm="rmsnorm", **init_fields(grid["init"]))
    with torch.no_grad():
        x = norms.OffsetStreamTransformer(config, 1.0).embed(tokens)
    at_init, rms_at_init = token_part(x), float(x.pow(2).mean().sqrt())
    _, trained = norms.centring_run("rmsnorm", 1.0, 0)
    with torch.no_grad():
        x = trained.embed(tokens)
    grown, rms_trained = token_part(x), float(x.pow(2).mean().sqrt())
    assert 0.02 < at_init < 0.035 and rms_at_init / at_init > 30, (at_init, rms_at_init)
    assert 7 < grown / at_init < 13 and 3 < rms_trained / grown < 5, (grown, rms_trained)
    means = norms.stream_means(trained, tokens)
    _, plain = norms.centring_run("rmsnorm", None, 0)
    assert abs(norms.stream_means(plain, tokens)[0]) < 0.02
    stored = norms.load_centring_runs()
    label = "rmsnorm, offset 1"
    moves = [e - b[0] for e, b in zip(stored["stream_mean"][label], stored["block_mean"][label])]
    assert abs(means[0] - means[1] - moves[0]) < 0.1 and all(0.55 < m < 0.75 for m in moves), (means, moves)
    assert max(abs(m[0]) for m in stored["block_mean"]["rmsnorm"]) > 0.9 * min(moves), stored["block_mean"]


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_first_block_cancels_most_of_the_offset():
    """03, "Does centring matter?" and reveal 3.b: the first block of the offset-1.0 runs cancels most of the offset
    (the stream's mean falls from 0.99 to 0.30-0.40, stored). Plain RMSNorm's first block moves the mean as much on
    seed 2 (-0.64), but as a by-product: the mean is 3% of the energy of what that block adds (RMS 6.05), against 35%
    for the offset run's block (RMS 1.17) on the same seed (measured by the round-12 reader, re-measured here)."""
    tokens = torch.arange(32)[None, :16]

    def first_block_output(offset):
        _, model = norms.centring_run("rmsnorm", offset, 2)
        with torch.no_grad():
            x = model.embed(tokens)
            d = model.blocks[0](x) - x
        return float(d.pow(2).mean().sqrt()), float(d.mean(-1).pow(2).mean() / d.pow(2).mean())

    plain_rms, plain_share = first_block_output(None)
    offset_rms, offset_share = first_block_output(1.0)
    assert plain_share < 0.1 and offset_share > 0.2 and plain_rms > 3 * offset_rms, (plain_rms, plain_share,
                                                                                      offset_rms, offset_share)


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_offset_gap_positive_on_three_more_seeds():
    """03, "Does centring matter?": the statement that an offset of 1.0 still slows RMSNorm at 600 steps (the gap is
    gone by 1200: test_chapter3_offset_gap_is_gone_by_1200_steps) rests on the sign of the paired gap, so it is
    checked on seeds 3, 4, 5 too (not in the stored grid): RMSNorm with the offset
    minus LayerNorm is positive on each at 150 steps (measured +0.092, +0.080, +0.077) and at 600 (+0.006, +0.005,
    +0.014). Seeds 0, 1, 2 prompted the verdict, so these three are its test: with no gap, 3 positive of 3 would come
    up once in 8."""
    from course_utils.training import final_loss

    for seed in (3, 4, 5):
        layernorm, _ = norms.centring_run("layernorm", None, seed)
        offset, _ = norms.centring_run("rmsnorm", 1.0, seed)
        for step in (150, 600):
            assert final_loss(offset[:step]) > final_loss(layernorm[:step]), (seed, step)


def test_chapter3_logit_growth_with_depth_depends_on_the_init():
    """03, fact check "|x_L| ~ √L", row 2, stated per init (Pre-LN at init, seeds 0, 1, 2, depth 2 against 48; the
    notebook prints seed 0 at depths 2, 12, 48). Without a final norm the logits' std grows with depth from fan-in
    (seed 0: 1.71 -> 7.72) and from fixed 0.02 (0.009 -> 0.038), both by more than x3, but from fixed 0.02 it stays
    below 0.1, under the final norm's (about 0.16): the logits grow without becoming large. From GPT-2 (depth-scaled)
    it does not grow (0.006 at both depths, within x1.5). With a final norm it is flat in depth (within x1.3): about
    1 from fan-in, 0.16 from fixed 0.02."""
    for seed in (0, 1, 2):
        std = {(init, variant, depth): norms.pre_ln_scale(depth, variant, init=init, seed=seed)["logit_std"]
               for init in ("fan-in", "fixed 0.02", "GPT-2") for variant in ("Pre-LN, no final norm", "+ final norm")
               for depth in (2, 48)}
        plain = {init: (std[(init, "Pre-LN, no final norm", 2)], std[(init, "Pre-LN, no final norm", 48)])
                 for init in ("fan-in", "fixed 0.02", "GPT-2")}
        normed = {init: (std[(init, "+ final norm", 2)], std[(init, "+ final norm", 48)])
                  for init in ("fan-in", "fixed 0.02")}
        assert plain["fan-in"][1] > 3 * plain["fan-in"][0] and plain["fan-in"][1] > 5, plain
        assert plain["fixed 0.02"][1] > 3 * plain["fixed 0.02"][0] and plain["fixed 0.02"][1] < 0.1, plain
        assert plain["fixed 0.02"][1] < min(normed["fixed 0.02"]) / 3, (plain, normed)
        assert 1 / 1.5 < plain["GPT-2"][1] / plain["GPT-2"][0] < 1.5, plain
        for init, (shallow, deep) in normed.items():
            assert 1 / 1.3 < deep / shallow < 1.3, (init, normed)
        assert 0.8 < min(normed["fan-in"]) and max(normed["fan-in"]) < 1.25, normed


def test_chapter3_stream_growth_shrinks_the_gradient_through_every_pre_ln_norm():
    """03, problem table row 1 ("where it bites"): backward, the final norm divides the gradient it passes into the
    stream by the stream's std, which grows like sqrt(L); over depths 2 to 32, seeds 0, 1, 2, ||dL/dx_L|| falls like
    L^-0.5 (measured exponents -0.46 to -0.50) from fan-in and from fixed 0.02, and with it the last block's gradient,
    no faster (within 0.02) and at fan-in clearly slower on some seed (fixed 0.02: -0.44 on every seed; fan-in: -0.28
    to -0.45), while from GPT-2, whose last stream does not grow with depth, neither falls (-0.05 to 0.00)."""
    from course_utils import gradflow
    from course_utils.measure import loglog_slope

    depths = [2, 4, 8, 16, 32]
    lag = []  # at fan-in, how much more slowly the last block's gradient falls than the stream's, per seed
    for seed in (0, 1, 2):
        for init in gradflow.INITS:
            sweep = gradflow.depth_sweep("pre", depths, seed=seed, **gradflow.init_fields(init))
            stream, last = loglog_slope(depths, sweep["output_grad"]), loglog_slope(depths, sweep["last_block_grad"])
            if init == "GPT-2":
                assert abs(stream) < 0.1 and abs(last) < 0.15, (seed, init, stream, last)
            else:
                assert -0.6 < stream < -0.4 and stream - 0.02 < last < -0.2, (seed, init, stream, last)
                if init == "fan-in":
                    lag.append(last - stream)
    assert max(lag) > 0.1, lag


def _ln_autograd(x, gamma, dy, eps):
    """(dx, dgamma, dbeta) of F.layer_norm by autograd (beta's value does not matter: zeros)."""
    leaves = [t.clone().requires_grad_() for t in (x, gamma, torch.zeros_like(gamma))]
    return torch.autograd.grad(F.layer_norm(leaves[0], x.shape[-1:], leaves[1], leaves[2], eps), leaves, dy)


def test_chapter3_layer_norm_backward_by_hand_is_autograds():
    """Exercise 3.6 against an independent reference: on every case of the exercise (in float64, so that only the
    formula can differ), the reference's (dx, dgamma, dbeta) equal autograd's through F.layer_norm within 1e-9."""
    for case in EX_3_6.cases():
        x, gamma, dy = (t.double() for t in case.args)
        eps = case.kwargs.get("eps", 1e-5)
        for name, mine, theirs in zip(("dx", "dgamma", "dbeta"), layer_norm_backward(x, gamma, dy, eps),
                                      _ln_autograd(x, gamma, dy, eps)):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9, msg=f"{case.name}: {name}")


def test_chapter3_layer_norm_divides_the_gradient_by_the_std():
    """Prediction 3.c and the prose after it: x times 10 (gamma, dy kept) divides dx by 10 and leaves dgamma and dbeta
    (the notebook prints 0.1000, 1.0000, 1.0000); here within 1e-4, by autograd of F.layer_norm."""
    torch.manual_seed(0)
    x, gamma, dy = (3 * torch.randn(2, 7, 50, dtype=torch.float64) + 1, torch.randn(50, dtype=torch.float64),
                    torch.randn(2, 7, 50, dtype=torch.float64))
    ratios = [float(s.norm() / m.norm()) for s, m in zip(_ln_autograd(10 * x, gamma, dy, 1e-5),
                                                           _ln_autograd(x, gamma, dy, 1e-5))]
    assert all(abs(r - e) < 1e-4 for r, e in zip(ratios, (0.1, 1.0, 1.0))), ratios


def _rows():
    rows = norms.attention_logit_growth((1, 4, 16), stream_scales=(1, 50))
    return {(r["stream_scale"], r["weight_scale"]): r for r in rows}


def test_chapter3_stream_growth_does_not_reach_pre_ln_attention_logits():
    """03, QK-norm fact check, row 1, verdict "misfiled" (a deduction the rows illustrate): in a Pre-LN block the
    stream x50 changes no head's logits (within 1e-3 relative; only LayerNorm's eps sees the scale), and
    LN(50 x) = LN(x) within 1e-4 with a random gain and bias too (the notebook's last line of that cell)."""
    rows = _rows()
    for s in (1, 4, 16):
        for a, b in zip(rows[(1, s)]["max_logit"], rows[(50, s)]["max_logit"]):
            assert abs(a - b) <= 1e-3 * a, (s, a, b)
    torch.manual_seed(0)
    stream, gain, bias = torch.randn(4, 16, 64), torch.randn(64), torch.randn(64)
    assert (F.layer_norm(50 * stream, (64,), gain, bias) - F.layer_norm(stream, (64,), gain, bias)).abs().max() < 1e-4


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
    """03, soft-capping: in float32 the gradient of 30 tanh(z/30) is nonzero at 100 and 250 and exactly 0 at 300; on
    a grid of step 0.5 the first exact 0 is about 270 (stored 270.5; asserted between 260 and 280), and from there on
    every gradient is 0."""
    z = torch.tensor([100.0, 250.0, 300.0], requires_grad=True)
    soft_cap(z, 30.0).sum().backward()
    assert z.grad[0] > 0 and z.grad[1] > 0 and z.grad[2] == 0, z.grad
    grid = torch.arange(240.0, 320.0, 0.5, requires_grad=True)
    soft_cap(grid, 30.0).sum().backward()
    first = int((grid.grad == 0).nonzero()[0])
    assert 260 < float(grid.detach()[first]) < 280 and bool((grid.grad[first:] == 0).all()), first


def test_chapter3_course_norm_kernels_already_use_16_warps_on_long_rows():
    """03, "Under the hood": the course's RMSNorm and LayerNorm kernels launch every block above 4096 columns with 16
    warps (their spills at 16384 and 32768 columns are listed in tests/test_compiled.py's KNOWN_SPILLS)."""
    common = pytest.importorskip("course_utils.kernels.common")
    assert common.block_and_warps(4096, 65536)[1] == 8
    assert common.block_and_warps(16384, 65536)[1] == common.block_and_warps(32768, 65536)[1] == 16


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter3_qk_norm_prevents_attention_entropy_collapse_on_the_grid():
    """03, QK-norm in training (2 inits x lr 3e-3, 3e-2, 1e-1 x seeds 0, 1, 2): recomputes the stored grid and checks
    it. At 3e-3 every run must match (loss and entropy within 0.02, logits within 25%). At 3e-2 and 1e-1 the runs are
    chaotic, and another arithmetic order (ATEN_CPU_CAPABILITY=default) moves them by up to 0.082 in loss, 0.051 in
    entropy and a factor 0.62 to 1.18 in the largest logit (measured), so there they must agree within 0.15, 0.1 and a
    factor 2. Then it asserts, on the fresh runs, seed by seed: at 3e-3 no run has a head below 0.5 of its maximum
    entropy (stored: 0.69 and up); at 3e-2 and 1e-1 every plain run has a head below 0.03 (stored: 0.013 at most) and
    logits above 100, every QK-norm run keeps every head above 0.05 (stored: 0.09 and up) with logits below 50, and
    ends with a lower loss, though above both 3e-3 runs of its init and seed (stored 2.68 to 3.27 against 2.62 to
    2.67); its logits reach more than half the bound its learned gains allow (stored 0.70 to 0.88),
    its largest gain rose by less than one learning rate a step (stored: at most 0.23), and block 0's heads stay
    sharply peaked (below 0.5, stored 0.09 to 0.39). At 3e-3 from fixed 0.02, QK-norm lowers the smallest head's
    entropy by more than 0.1 (stored 0.69 against 0.90 to 0.95). The stored gains must agree within 0.25 (0.5 at the
    chaotic rates)."""
    fresh, stored = norms.qk_norm_training(progress=False), norms.load_qk_norm_training()
    assert len(fresh) == len(stored) == 36
    for a, b in zip(fresh, stored):
        assert (a["init"], a["lr"], a["qk_norm"], a["seed"]) == (b["init"], b["lr"], b["qk_norm"], b["seed"])
        loss, entropy, logit, gain = (0.02, 0.02, 1.25, 0.25) if a["lr"] == 3e-3 else (0.15, 0.1, 2.0, 0.5)
        assert abs(a["loss"] - b["loss"]) < loss, (a, b)
        assert abs(min(a["head_entropy"]) - min(b["head_entropy"])) < entropy, (a, b)
        assert 1 / logit < a["max_logit"] / b["max_logit"] < logit, (a, b)
        assert abs(a.get("max_gain", 0) - b.get("max_gain", 0)) < gain, (a, b)
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
                # ... but those rates stay worse than 3e-3 (stored: QK-norm 2.68 to 3.27 against 2.62 to 2.67)
                assert normed["loss"] > max(runs[(init, 3e-3, qk, seed)]["loss"] for qk in (False, True)), normed
                # QK-norm bounds the logits through its learned gains, which grow by less than one lr a step
                # (stored: largest |gain| 1.7 to 3.5, logit / bound 0.70 to 0.88); block 0 stays sharply peaked
                # (stored: its heads 0.09 to 0.39)
                assert 1.2 < normed["max_gain"] and (normed["max_gain"] - 1) / 150 < lr, normed
                assert 0.5 < normed["max_logit"] / max(normed["logit_bound"]) <= 1 + 1e-4, normed
                assert all(0.05 < e < 0.5 for e in normed["head_entropy"][:4]), normed
            # fixed 0.02 at 3e-3: QK-norm lowers the smallest head's entropy (stored 0.69 against 0.90 to 0.95)
            if init == "fixed 0.02":
                assert (min(runs[(init, 3e-3, True, seed)]["head_entropy"])
                        < min(runs[(init, 3e-3, False, seed)]["head_entropy"]) - 0.1)
