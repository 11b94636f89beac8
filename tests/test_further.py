"""The further questions and the capstone (course_utils.further, and the schedule in course_utils.training):
the schedule, decay arithmetic, spike detector, depth effects and the capstone run."""
import math
import statistics

import pytest
import torch

from course_utils import further, training
from course_utils.models import CAPSTONE_CONFIG, TinyTransformer
from course_utils.runtime import triton_status


def test_warmup_cosine_hand_values():
    def lr(s):
        return training.warmup_cosine_lr(s, 1.0, 10, 110, 0.1)

    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0) and lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55) and lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup


def test_remaining_after_decay_matches_torch_adamw_on_an_unused_weight():
    lrs = [training.warmup_cosine_lr(s, 3e-2, 20, 300, 3e-3) for s in range(300)]
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([p], lr=lrs[0], weight_decay=0.5)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.zeros(4)  # no gradient: Adam's step is 0/(0 + eps) = 0, only the decay acts
        opt.step()
    assert further.remaining_after_decay(lrs, 0.5) == pytest.approx(p[0].item(), rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_spike_detector_matches_a_direct_median(seed):
    g = torch.Generator().manual_seed(seed)
    norms = (1 + 0.2 * torch.rand(60, generator=g)).tolist()
    for i in (15, 17, 40):
        norms[i] *= 10
    expected = [i for i in range(5, 60) if norms[i] > 3.0 * statistics.median(norms[i - 5: i])]
    assert further.grad_norm_spikes(norms, 5, 3.0) == expected
    assert {15, 40} <= set(expected)


def test_capstone_learns_and_flags_a_bad_batch():
    run = further.capstone_run(further.reference_pieces(), steps=40, micro_batches=1, bad_batch_step=30, progress=False)
    assert not run.diverged and len(run.losses) == 40
    assert sum(run.losses[25:30]) / 5 < run.losses[0] - 1.5  # from ~5.5 (uniform over bytes) downwards
    assert 30 in further.grad_norm_spikes(run.grad_norms, 10, 3.0)
    assert run.lrs[0] == pytest.approx(3e-3 / 15)


def test_capstone_pieces_are_really_used():
    calls = []
    pieces = further.reference_pieces()
    adamw = pieces.adamw

    def counting_adamw(*args):
        calls.append(args[4])  # the step number
        return adamw(*args)

    pieces.adamw = counting_adamw
    further.capstone_run(pieces, steps=2, micro_batches=1, progress=False)
    n_params = len(list(TinyTransformer(CAPSTONE_CONFIG).parameters()))
    assert calls.count(1) == calls.count(2) == n_params


def test_capstone_runs_the_loop_piece_and_evaluates_on_held_out_text():
    """capstone_run hands its model, groups, batches and result to pieces.loop (exercise 8.5: the learner's loop in
    the notebook) and returns that result; with eval_every it records the held-out loss after those steps."""
    calls = []
    pieces = further.reference_pieces()

    def loop(*args, **kwargs):
        calls.append(kwargs["steps"])
        further.capstone_loop(*args, **kwargs)

    pieces.loop = loop
    run = further.capstone_run(pieces, steps=4, micro_batches=1, eval_every=2, progress=False)
    assert calls == [4] and len(run.losses) == 4 and list(run.evals) == [2, 4]
    assert all(2.0 < loss < 6.0 for loss in run.evals.values()), run.evals  # nats per byte; uniform is 5.55


@pytest.mark.kernel
@pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)
def test_the_capstone_model_trains_in_the_course_kernels_as_in_pytorch():
    """The capstone's own configuration (RoPE, RMSNorm, SwiGLU, vocabulary 256) with kernels="triton" and TritonAdamW
    (07's cell): two steps within the tolerances the cell states (stored: loss gaps below 1e-6, gradient gaps below
    1e-6 of each parameter's largest, parameter gaps after AdamW on the same gradients below 1e-7)."""
    from course_utils.training import triton_step_agreement

    for row in triton_step_agreement(CAPSTONE_CONFIG, steps=2, batch=1, length=32):
        assert row["loss gap"] < 1e-5 and row["grad gap"] < 1e-5 and row["param gap"] < 1e-6, row


def test_depth_effects_final_norm_keeps_logits_flat():
    deep = further.depth_effects(32, "Pre-LN, no final norm")
    normed = further.depth_effects(32, "+ final norm")
    assert deep["logit_std"] > 3 * normed["logit_std"] and deep["grad_norm"] > normed["grad_norm"]


def test_depth_effects_per_block_and_per_position_instruments():
    """The per-block norms are pieces of the global one; "out_grad" is |dL_i/dz_i| of each position's own loss,
    computed here independently with autograd on a copy of the logits."""
    import torch.nn.functional as F

    from course_utils.models import TransformerConfig

    r = further.depth_effects(6, "+ final norm", init="fixed 0.02", seed=1)
    assert max(r["grad_first"], r["grad_middle"], r["grad_last"]) < r["grad_norm"]
    assert r["grad_first"] ** 2 + r["grad_middle"] ** 2 + r["grad_last"] ** 2 < r["grad_norm"] ** 2
    torch.manual_seed(1)
    model = TinyTransformer(TransformerConfig(vocab_size=64, block_size=16, n_layer=6, d_model=64, n_head=4,
                                              init_std=0.02, final_norm=True))
    tokens = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(1))
    logits = model(tokens[:, :-1])[0].detach().requires_grad_(True)
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum").backward()
    assert r["out_grad"] == pytest.approx(float(logits.grad.norm(dim=-1).mean()), rel=1e-5)


def test_depth_table_spreads_over_seeds():
    table = further.depth_table((2,), variants=["+ final norm"], inits=("fan-in",), seeds=(0, 1))
    runs = [further.depth_effects(2, "+ final norm", init="fan-in", seed=s)["grad_last"] for s in (0, 1)]
    mean, lo, hi = table[("fan-in", "+ final norm", 2)]["grad_last"]
    assert (lo, hi) == (min(runs), max(runs)) and mean == pytest.approx(sum(runs) / 2)
    assert further.pm((1.0, 0.5, 1.5)) == "1.00±0.50"


def test_grid_tables_print_every_cell_of_the_stored_grids():
    for text, grid in ((further.bad_batch_table(), further.BAD_BATCH_GRID),
                       (further.clipping_table(), further.CLIPPING_GRID),
                       (further.norm_warmup_table(), further.NORM_WARMUP_GRID)):
        for init in grid["inits"]:
            assert init in text
        for lr in grid["lrs"]:
            assert f"{lr:g}" in text


def test_temperature_softmax_survives_a_tiny_temperature():
    """8.3's reference (course_utils.sampling): the max is subtracted before dividing by T, so float32 logits give
    the T -> 0 limit (ties split) at T = 1e-40 where softmax(z / T) is NaN, and the usual T agree with torch."""
    from course_utils.sampling import softmax_with_temperature

    z = torch.tensor([[10.0, 9.0, 10.0, 0.0], [-10.0, -9.0, -30.0, -9.5]])
    assert torch.isnan(torch.softmax(z / 1e-40, dim=-1)).all()
    expected = torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]])
    for t in (1e-40, 1e-300, 0.0):
        torch.testing.assert_close(softmax_with_temperature(z, t), expected)
    for t in (0.01, 0.7, 50.0):
        torch.testing.assert_close(softmax_with_temperature(z, t), torch.softmax(z / t, dim=-1))


def test_a_bad_batch_run_and_its_clean_twin_see_the_same_batches_elsewhere():
    """The paired design of Q4: until the bad step the two runs are identical (same batches, same weights)."""
    pieces = further.reference_pieces()
    clean, bad = (further.capstone_run(pieces, steps=12, micro_batches=1, clip=None, bad_batch_step=s,
                                       progress=False) for s in (None, 8))
    assert clean.losses[:8] == bad.losses[:8]
    assert bad.losses[8] > clean.losses[8] + 0.5  # the corrupt batch itself
    r = further.bad_batch_paired(pieces, init="GPT-2", lr=3e-3, seed=0, steps=20, bad_batch_step=10, after=3)
    assert set(r) == {"clip 1.0", "no clipping"}
    for stats in r.values():
        assert stats["diverged"] == 0.0 and stats["rise_max"] >= stats["rise_1"]
        assert all(math.isfinite(v) for v in stats.values())


def test_paired_tables_print_every_cell_of_the_stored_grids():
    text = further.bad_batch_paired_table()
    assert len(text.splitlines()) == 1 + 2 * 2 * 2 and "nan" not in text
    assert len(further.clipping_gain_table().splitlines()) == 1 + 2 * 2
    assert further.BAD_BATCH_PAIRED.keys() == further.SEED_GRIDS["bad_batch"].keys()


def test_decay_over_seeds_follows_torch_and_the_formula():
    table = further.decay_over_seeds(lrs=(1e-2,), seeds=(0, 1))
    row = table[1e-2]
    assert len(row["AdamW small"]) == 2 and row["formula"] == pytest.approx(0.999 ** 400)
    assert all(abs(v - row["formula"]) < 0.05 for v in row["AdamW large"])
    assert "1.000 / " in further.decay_table(table)


def test_adam_spike_push_is_bounded_whatever_the_spike():
    small, large = further.adam_spike_push(1e2, steps=120), further.adam_spike_push(1e6, steps=120)
    for push in (small, large):
        assert 0.40 < push["at_spike"] < 0.46  # (1 - 0.9) / sqrt(1 - 0.95) = 0.447 late in a run
    assert abs(large["total"] - small["total"]) < 0.3


def test_depth_effects_output_coherence_is_between_0_and_1():
    r = further.depth_effects(4, "+ final norm", seed=0)
    assert 0 < r["out_coherence"] < 1
