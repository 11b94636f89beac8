"""The verdicts of notebook 08 (further questions and capstone), asserted over the seeds and the grid each was drawn
from, with stated margins.

Q1 runs at init (seconds). The training verdicts (Q4's bad batch and max_norm rule, Pre/Post-LN with warmup, the
capstone trained longer) come from ``further.seed_grids()`` and ``further.capstone_longer()``, which take minutes on a
CPU: the notebook prints their stored results (``further.SEED_GRIDS``, ``further.LONGER_RUNS``); the slow tests here
re-run them, check the stored values, and assert the verdicts on the fresh runs.
"""

import pytest

from course_utils import further

DEPTHS = (4, 16, 64)
INITS = ("fixed 0.1", "fixed 0.02", "fan-in")

@pytest.fixture(scope="module")
def q1():
    table = further.depth_table(DEPTHS, inits=("fixed 0.1",))
    table |= further.depth_table(DEPTHS, variants=["+ final norm"], inits=INITS[1:])
    table |= further.depth_table(DEPTHS, variants=["Pre-LN, no final norm"], inits=INITS[1:])
    return table


def _mean(table, init, variant, depth, key):
    return table[(init, variant, depth)][key][0]


def test_chapter8_q1_saturation_without_final_norm_raises_the_output_gradient(q1):
    """08, Q1 rows 1-3 (no final norm, fixed 0.1): logit std and the largest probability rise with depth on every seed
    (the seed ranges do not overlap), and |p - y| per position rises too (1.03 -> 1.26): the output gradient does not
    vanish; every block's gradient grows."""
    v = "Pre-LN, no final norm"
    for key in ("logit_std", "max_prob", "out_grad", "grad_last", "grad_first"):
        for a, b in zip(DEPTHS, DEPTHS[1:]):
            assert q1[("fixed 0.1", v, a)][key][0] < q1[("fixed 0.1", v, b)][key][0], (key, a, b)
    for key in ("logit_std", "max_prob", "out_grad"):
        assert q1[("fixed 0.1", v, 4)][key][2] < q1[("fixed 0.1", v, 64)][key][1], key  # max at 4 < min at 64
    assert _mean(q1, "fixed 0.1", v, 64, "max_prob") > 0.6  # stored 0.74
    assert _mean(q1, "fixed 0.1", v, 64, "out_grad") > 1.15  # stored 1.26


def test_chapter8_q1_saturation_without_final_norm_depends_on_the_init(q1):
    """08, Q1 rows 1-2, per init, without a final norm: at fan-in the logits grow and the softmax saturates as at
    fixed 0.1 (logit std 2.10 -> 4.40 -> 8.84, largest probability 0.30 -> 0.83; the seed ranges at depth 4 and 64
    apart, above 0.6 at 64); at fixed 0.02 the logits grow from 0.01 but stay below 0.1 (stored 0.04 at depth 64) and
    the largest probability stays at the uniform 1/64 (below 0.03) at every depth: no saturation at init. At no init
    does |p - y| fall with depth (stored 1.06 -> 1.31 at fan-in, 0.99 at fixed 0.02)."""
    v = "Pre-LN, no final norm"
    for key in ("logit_std", "max_prob"):
        assert q1[("fan-in", v, 4)][key][2] < q1[("fan-in", v, 64)][key][1], key
    assert _mean(q1, "fan-in", v, 64, "max_prob") > 0.6
    for d in DEPTHS:
        assert _mean(q1, "fixed 0.02", v, d, "logit_std") < 0.1 and _mean(q1, "fixed 0.02", v, d, "max_prob") < 0.03
    for init in INITS:
        assert _mean(q1, init, v, 64, "out_grad") > _mean(q1, init, v, 4, "out_grad") - 0.02, init


def test_chapter8_q1_output_gradient_on_random_targets_cannot_fall_but_on_right_ones_it_does():
    """08, Q1 row 3's scope (seed 0, no final norm): on random targets |p - y| rises with depth (its expectation,
    1 - 2/V + sum p^2, can only rise with saturation); scored against the model's own argmax (a confident and right
    prediction) it falls, as the chapter prints: 0.86 -> 0.55 -> 0.36 (fixed 0.1), 0.73 -> 0.27 -> 0.16 (fan-in)."""
    v = "Pre-LN, no final norm"
    printed = {"fixed 0.1": (0.86, 0.55, 0.36), "fan-in": (0.73, 0.27, 0.16)}
    for init, expected in printed.items():
        runs = [further.depth_effects(d, v, init=init, seed=0) for d in DEPTHS]
        assert [round(r["out_grad_argmax"], 2) for r in runs] == pytest.approx(expected, abs=0.011), init
        assert runs[0]["out_grad"] < runs[-1]["out_grad"] and runs[0]["out_grad_argmax"] > runs[-1]["out_grad_argmax"]


@pytest.mark.slow
@pytest.mark.rerun  # re-trains runs whose figures depend on the CPU's arithmetic order
def test_chapter8_q4_the_too_high_lr_ends_with_the_largest_weights():
    """08, cell 4c692e4b (seed 0, the max_norm grid's runs): the norm of all Linear weights is 6.3 at init (fixed
    0.02) and ends at 85 at lr 3e-2 against 11 and 7 at 3e-3 and 1e-3; at fan-in 91 against 36 and 35 (init 34)."""
    import math

    import torch

    from course_utils.gradflow import stack_config
    from course_utils.models import TinyTransformer
    from course_utils.training import train_markov_lm

    def linear_norm(model):
        return math.sqrt(sum(float((m.weight.detach() ** 2).sum()) for m in model.modules()
                             if isinstance(m, torch.nn.Linear)))

    def make_model(config):  # the model train_markov_lm builds, kept to read its weights after training
        made.append(TinyTransformer(config))
        return made[-1]

    printed = {"fixed 0.02": (6.3, (85, 11, 7)), "fan-in": (34.4, (91, 36, 35))}
    for init, overrides in (("fixed 0.02", {}), ("fan-in", {"init": "fan_in"})):
        made, at_init = [], None
        for lr in (3e-2, 3e-3, 1e-3):
            config = stack_config("pre", 2, **overrides)
            torch.manual_seed(0)
            at_init = linear_norm(TinyTransformer(config))  # train_markov_lm seeds 0 before building: same weights
            train_markov_lm(config, steps=120, lr=lr, clip=1.0, seed=0, progress=False, make_model=make_model)
        ends = [linear_norm(m) for m in made]
        assert at_init == pytest.approx(printed[init][0], abs=0.06), (init, at_init)
        assert ends == pytest.approx(printed[init][1], abs=0.6), (init, ends)
        assert ends[0] > 2 * max(ends[1:]), init

@pytest.mark.parametrize("init", INITS)
def test_chapter8_q1_the_global_norm_is_carried_by_the_blocks_after_the_first(q1, init):
    """08, Q1 "how it could have come out the other way": with a final norm at depth 64, the blocks after the first
    carry most of the squared global gradient norm on every seed (stored 57-80%), more than the first block and the LM
    head together (stored 12-28% and 4-11%): the global norm grows with depth because it sums over more blocks."""
    r = q1[(init, "+ final norm", 64)]
    assert r["share_later"][1] > 0.5, r["share_later"]
    assert r["share_later"][1] > r["share_first"][2] + r["share_head"][2], r


def test_chapter8_q1_output_gradients_align_with_depth_without_a_final_norm(q1):
    """08, Q1 prose: without a final norm (fixed 0.1) |p - y| grows by less than 40% from depth 4 to 64 (stored 22%)
    while the coherence of the positions' output gradients grows by more than 1.4x (stored 0.17 -> 0.30, 1.8x), the
    depth-64 seed range above the depth-4 one, and the last block's gradient by more than 2x (stored 2.4x); with a final
    norm the coherence stays within 20% across depths (stored 0.11-0.12)."""
    v = "Pre-LN, no final norm"
    grow = {k: _mean(q1, "fixed 0.1", v, 64, k) / _mean(q1, "fixed 0.1", v, 4, k)
            for k in ("out_grad", "out_coherence", "grad_last")}
    assert grow["out_grad"] < 1.4 and grow["out_coherence"] > 1.4 and grow["grad_last"] > 2.0, grow
    assert q1[("fixed 0.1", v, 64)]["out_coherence"][1] > q1[("fixed 0.1", v, 4)]["out_coherence"][2]
    flat = [_mean(q1, "fixed 0.1", "+ final norm", d, "out_coherence") for d in DEPTHS]
    assert max(flat) < 1.2 * min(flat), flat


@pytest.mark.parametrize("init", INITS)
def test_chapter8_q1_late_block_gradients_fall_like_one_over_sqrt_depth_with_a_final_norm(q1, init):
    """08, Q1 row 3 (Pre-LN with a final norm, at each of three inits): the last and middle blocks' gradients fall
    with depth, the last by 3.0-3.8x from depth 4 to 64 (sqrt(16) = 4; asserted within 2.5-5; the middle block's
    by more than 2), with the seed ranges apart;
    |p - y| stays at 1.00 (within 0.02) and the logits stay flat (std within 15% across depths)."""
    v = "+ final norm"
    for key in ("grad_last", "grad_middle"):
        means = [_mean(q1, init, v, d, key) for d in DEPTHS]
        assert means[0] > means[1] > means[2], (key, means)
        low = 2.5 if key == "grad_last" else 2.0  # stored last block: 3.7, 3.8, 3.0; middle: 3.3, 2.9, 2.5
        assert low < means[0] / means[2] < 5.0, (key, means)
        assert q1[(init, v, 64)][key][2] < q1[(init, v, 4)][key][1] / 2, key  # the seed ranges are far apart
    for d in DEPTHS:
        assert abs(_mean(q1, init, v, d, "out_grad") - 1.0) < 0.02
    stds = [_mean(q1, init, v, d, "logit_std") for d in DEPTHS]
    assert max(stds) < 1.15 * min(stds), stds


def test_chapter8_q1_the_global_norm_would_have_said_the_opposite(q1):
    """08, Q1 "how it could have come out the other way": with a final norm the global gradient norm over all
    parameters grows with depth (2.3 -> 3.5 at fixed 0.1) while the last block's falls; and depth-scaled init without
    a final norm keeps the last block's gradient flat (within 20%)."""
    for init in INITS:
        assert _mean(q1, init, "+ final norm", 64, "grad_norm") > _mean(q1, init, "+ final norm", 4, "grad_norm")
    flat = [_mean(q1, "fixed 0.1", "+ depth-scaled init", d, "grad_last") for d in DEPTHS]
    assert max(flat) < 1.2 * min(flat), flat  # stored 0.77, 0.75, 0.83


# ------------------------------------------------------------------ training verdicts over seeds x init x lr

@pytest.fixture(scope="module")
def grids():
    return further.seed_grids()


def _close(fresh, stored, key):
    if key in ("flagged", "diverged"):
        return fresh == stored
    if fresh != fresh or stored != stored:  # NaN: a diverged run has no statistics
        return fresh != fresh and stored != stored
    if key in ("spike", "peak", "median_norm"):
        return abs(fresh - stored) <= 0.15 * abs(stored) + 0.05  # norms move more between CPUs than losses
    return abs(fresh - stored) <= 0.05  # losses (nats) and fractions of steps


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter8_stored_grids_reproduce(grids):
    """The notebook prints further.SEED_GRIDS: every stored statistic is what a re-run gives (within 0.05 for losses
    and fractions, 15% for gradient norms; flags and divergence exactly)."""
    stored = further.SEED_GRIDS
    assert grids.keys() == stored.keys()
    for part in grids:
        assert grids[part].keys() == stored[part].keys(), part
        for cell, fresh in grids[part].items():
            flat_fresh = fresh if part == "clipping" else {(a, b): v for a, d in fresh.items() for b, v in d.items()}
            old = stored[part][cell]
            flat_old = old if part == "clipping" else {(a, b): v for a, d in old.items() for b, v in d.items()}
            for key, value in flat_fresh.items():
                name = key if isinstance(key, str) else key[1]
                assert _close(value, flat_old[key], name), (part, cell, key, value, flat_old[key])


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter8_stored_longer_runs_reproduce():
    """The capstone config trained 150 and 600 steps (further.LONGER_RUNS, printed by the notebook): a re-run gives
    each held-out loss within 0.05; 600 steps end below 150 steps on every seed, by more than 0.4 nats/byte (stored:
    2.09-2.19 against 1.45-1.48), far beyond the seeds' spread."""
    fresh = further.capstone_longer()
    for key, value in further.LONGER_RUNS.items():
        assert abs(fresh[key] - value) < 0.05, (key, fresh[key], value)
    assert max(fresh[(600, s)] for s in (0, 1, 2)) < min(fresh[(150, s)] for s in (0, 1, 2)) - 0.4, fresh


def _bad_batch_verdicts(grids):
    """08, Q4 fact check, over 3 seeds x 2 inits x 2 lrs: no run diverges with or without clipping; the bad step's
    norm is over 10x the median before it (stored 13-89x) and the 8.4 detector flags it in every run; clipping moves
    the final loss by less than 0.1 per grid cell (paired by seed, mean over seeds; stored 0.01-0.06). (The within-run
    "jump", loss one step after minus one before, is no verdict: _paired_verdicts shows it is negative without a bad
    batch too.)"""
    for (init, lr, seed), runs in grids["bad_batch"].items():
        for clip, r in runs.items():
            assert r["diverged"] == 0.0 and r["flagged"] == 1.0, (init, lr, seed, clip)
            assert r["spike"] > 10, (init, lr, seed, clip, r)
    cells = {(init, lr) for init, lr, _ in grids["bad_batch"]}
    for cell in cells:
        pairs = [grids["bad_batch"][(*cell, s)] for s in further.GRID_SEEDS]
        diffs = [r["no clipping"]["end"] - r["clip 1.0"]["end"] for r in pairs]
        assert abs(sum(diffs) / len(diffs)) < 0.1, (cell, diffs)


def _clipping_verdicts(grids):
    """08, "always near max_norm -> lower the lr", over 3 seeds x 2 inits: on every seed the largest lr (3e-2) has the
    smallest median norm and is never at max_norm on more than 10% of steps, yet ends above the best lr (by > 0.2 at
    fixed 0.02, > 0.05 at fan-in); at fixed 0.02 the smallest lr sits at max_norm on > 90% of steps and ends within
    0.1 of the best; at fan-in no lr sits at max_norm on more than 20% of steps."""
    runs = grids["clipping"]
    for seed in further.GRID_SEEDS:
        for init, margin in (("fixed 0.02", 0.2), ("fan-in", 0.05)):
            r = {lr: runs[(init, lr, seed)] for lr in (3e-2, 3e-3, 1e-3)}
            assert r[3e-2]["clipped"] < 0.1 and r[3e-2]["median_norm"] < min(r[3e-3]["median_norm"],
                                                                            r[1e-3]["median_norm"]), (init, r)
            assert r[3e-2]["loss"] > min(r[3e-3]["loss"], r[1e-3]["loss"]) + margin, (init, r)
        r = {lr: runs[("fixed 0.02", lr, seed)] for lr in (3e-2, 3e-3, 1e-3)}
        assert r[1e-3]["clipped"] > 0.9 and r[1e-3]["loss"] < r[3e-3]["loss"] + 0.1, r
        assert all(runs[("fan-in", lr, seed)]["clipped"] < 0.2 for lr in (3e-2, 3e-3, 1e-3))


def _norm_warmup_verdicts(grids):
    """08, Pre-LN against Post-LN with and without warmup, over 3 seeds x 2 inits x 2 lrs (4 blocks, 100 steps): no
    run diverges. Warmup rescues Post-LN only at fan-in init and lr 1e-2 (by > 0.4 on every seed; stored 0.58-0.83);
    at fan-in and lr 3e-3 it moves neither norm position by 0.1 on any seed. At GPT-2 init and lr 1e-2 Post-LN ends
    > 0.15 above Pre-LN on every seed with and without warmup; at GPT-2 init and lr 3e-3 Post-LN stalls above 3.1 on
    one seed without warmup and on two with it (stored 2.76, 2.63, 3.24 against 3.25, 2.78, 3.25): warmup lowers its
    end on no seed by more than 0.05, while Pre-LN stays below 2.8 on every seed. Warmup moves Pre-LN by under
    0.1 on every seed outside GPT-2 init and lr 1e-2 (stored at most 0.055; there one seed moves 0.30)."""
    runs = grids["norm_warmup"]
    assert not any(r["diverged"] for cell in runs.values() for r in cell.values())
    for seed in further.GRID_SEEDS:
        fan_hi, fan_lo = runs[("fan-in", 1e-2, seed)], runs[("fan-in", 3e-3, seed)]
        assert fan_hi["post, warmup 0"]["loss"] > fan_hi["post, warmup 20"]["loss"] + 0.4, fan_hi
        assert abs(fan_hi["pre, warmup 0"]["loss"] - fan_hi["pre, warmup 20"]["loss"]) < 0.1, fan_hi
        for norm in ("pre", "post"):
            assert abs(fan_lo[f"{norm}, warmup 0"]["loss"] - fan_lo[f"{norm}, warmup 20"]["loss"]) < 0.1, fan_lo
        gpt_hi = runs[("GPT-2", 1e-2, seed)]
        for warmup in (0, 20):
            assert gpt_hi[f"post, warmup {warmup}"]["loss"] > gpt_hi[f"pre, warmup {warmup}"]["loss"] + 0.15, gpt_hi
    for cell, r in runs.items():  # warmup moves Pre-LN by under 0.1 per seed, except one seed at GPT-2, lr 1e-2
        if cell[:2] != ("GPT-2", 1e-2):
            assert abs(r["pre, warmup 0"]["loss"] - r["pre, warmup 20"]["loss"]) < 0.1, (cell, r)
    gpt_lo = [runs[("GPT-2", 3e-3, seed)] for seed in further.GRID_SEEDS]
    stalled = {w: sum(r[f"post, warmup {w}"]["loss"] > 3.1 for r in gpt_lo) for w in (0, 20)}
    assert stalled == {0: 1, 20: 2}, gpt_lo
    assert all(r["post, warmup 20"]["loss"] > r["post, warmup 0"]["loss"] - 0.05 for r in gpt_lo), gpt_lo
    for warmup in (0, 20):
        assert max(r[f"pre, warmup {warmup}"]["loss"] for r in gpt_lo) < 2.8, gpt_lo


def _paired_verdicts(paired, grids=None):
    """08, Q4 fact check with clean twins (BAD_BATCH_PAIRED), over 3 seeds x 2 inits x 2 lrs: no run diverges.
    Without clipping the bad batch raises the loss above the clean twin's by at most 0.15 over the 5 steps after it
    (stored 0.003-0.103) and leaves it above at the end on every seed, by less than 0.1 (stored 0.008-0.047). The cost
    does not fade: in at least 3 of the 12 unclipped runs the gap at the end is larger than the largest over the 5
    steps after the bad batch (stored 5, tied in one more), and the mean end gap is over half the mean of those largest
    rises (stored 0.022 against 0.032). With clipping the rises stay
    below 0.05 and the end gap below 0.02 (stored 0.023 and 0.010). The clean twins' own loss one step after step 60
    is below the loss one step before in all 24 runs (stored -0.05 to -0.32): the within-run jump sees the batches.
    Clipping's gain without the bad batch: in the three cells where clipped runs end lower on all 3 seeds with the bad
    batch, they also end lower without it, on every seed, and the mean gain without it is over half the gain with it
    (stored 60-74%); at GPT-2 init and lr 1e-2 the clipped run ends higher on 2 of 3 seeds."""
    grids = grids or further.SEED_GRIDS
    for cell, runs in paired.items():
        for clip, r in runs.items():
            assert r["diverged"] == 0.0, (cell, clip)
            assert r["jump_clean"] < 0, (cell, clip, r)
        off, on = runs["no clipping"], runs["clip 1.0"]
        assert off["rise_max"] < 0.15 and 0 < off["rise_end"] < 0.1, (cell, off)
        assert on["rise_max"] < 0.05 and on["rise_end"] < 0.02, (cell, on)
    off = [runs["no clipping"] for runs in paired.values()]
    assert sum(r["rise_end"] > r["rise_max"] for r in off) >= 3, off
    assert sum(r["rise_end"] for r in off) > 0.5 * sum(r["rise_max"] for r in off), off
    for init, lr in (("GPT-2", 3e-3), ("fan-in", 3e-3), ("fan-in", 1e-2)):
        with_bad = [grids["bad_batch"][(init, lr, s)]["clip 1.0"]["end"]
                    - grids["bad_batch"][(init, lr, s)]["no clipping"]["end"] for s in further.GRID_SEEDS]
        clean = [paired[(init, lr, s)]["clip 1.0"]["end_clean"] - paired[(init, lr, s)]["no clipping"]["end_clean"]
                 for s in further.GRID_SEEDS]
        assert all(d < 0 for d in with_bad) and all(d < 0 for d in clean), (init, lr, with_bad, clean)
        assert sum(clean) / sum(with_bad) > 0.5, (init, lr, with_bad, clean)
    worse = [grids["bad_batch"][("GPT-2", 1e-2, s)]["clip 1.0"]["end"]
             > grids["bad_batch"][("GPT-2", 1e-2, s)]["no clipping"]["end"] for s in further.GRID_SEEDS]
    assert sum(worse) == 2, worse


@pytest.mark.slow
def test_chapter8_q4_the_detector_also_flags_a_clean_step():
    """08, Q4 row 3: the 8.4 detector (window 10, factor 3) flags unusual batches, not only corrupt ones. In the
    notebook's run (GPT-2, lr 3e-3, seed 0, no clipping) and in its clean twin it flags step 46 (norm 5.7x the median of
    the 10 before; asserted over 4x), whose batch holds a run of at least 10 equal bytes (an ASCII table rule); the
    notebook prints [46, 60]. (About 10 s.)"""
    import re
    import statistics

    import torch

    from course_utils import charlm
    from course_utils.models import CAPSTONE_CONFIG

    pieces = further.reference_pieces()
    for bad in (None, 60):
        run = further.capstone_run(pieces, steps=100, micro_batches=1, max_lr=3e-3, clip=None, bad_batch_step=bad,
                                   seed=0, init="GPT-2", progress=False)
        flags = further.grad_norm_spikes(run.grad_norms, 10, 3.0)
        assert 46 in flags and run.grad_norms[46] > 4 * statistics.median(run.grad_norms[36:46]), flags
        assert flags == [46] + ([60] if bad else []), flags
    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    gen = torch.Generator().manual_seed(1)  # capstone_run's batches for seed 0, one micro-batch of 8 per step
    batch = [charlm.batch(train, 8, gen, CAPSTONE_CONFIG.block_size) for _ in range(47)][46]
    longest = max(len(m.group(0)) for w in batch.tolist() for m in re.finditer(r"(.)\1*", charlm.decode(w)))
    assert longest >= 10, longest


@pytest.mark.slow
@pytest.mark.rerun  # re-trains runs whose figures depend on the CPU's arithmetic order
def test_chapter8_q4_the_detector_on_the_clean_twins():
    """08, Q4 row 3: the 8.4 detector (window 10, factor 3) on the 24 clean twins of the grid (3 seeds x 2 inits x
    2 lrs x clipping at 1.0 or none, 100 steps, no bad batch) flags 26 steps in 15 of the runs, 7 of them in the 12
    unclipped runs. Of the 19 distinct batches flagged (a run's batches depend on its seed alone), 14 hold a run of 16
    or more equal bytes other than space and newline, against 80 of the 251 other batches at steps 10-99; at 10 or 20
    equal bytes instead, 16 and 11 of the 19 against 90 and 60 of the 251. (Minutes on a CPU.)"""
    import re

    import torch

    from course_utils import charlm
    from course_utils.models import CAPSTONE_CONFIG

    pieces, g = further.reference_pieces(), further.BAD_BATCH_GRID
    flags = {}
    for init in g["inits"]:
        for lr in g["lrs"]:
            for seed in further.GRID_SEEDS:
                for clip in (1.0, None):
                    run = further.capstone_run(pieces, steps=g["steps"], micro_batches=1, max_lr=lr, clip=clip,
                                               seed=seed, init=init, progress=False)
                    flags[(init, lr, seed, clip)] = further.grad_norm_spikes(run.grad_norms, 10, 3.0)
    assert sum(map(len, flags.values())) == 26 and sum(bool(f) for f in flags.values()) == 15, flags
    assert sum(len(f) for key, f in flags.items() if key[3] is None) == 7, flags
    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    longest = {}  # (seed, step) -> the longest run of one byte (not space or newline) in that step's batch
    for seed in further.GRID_SEEDS:
        gen = torch.Generator().manual_seed(seed + 1)  # capstone_run's batches: one micro-batch of 8 per step
        batches = [charlm.batch(train, 8, gen, CAPSTONE_CONFIG.block_size) for _ in range(g["steps"])]
        for step in range(10, g["steps"]):
            longest[(seed, step)] = max((len(m.group(0)) for w in batches[step].tolist()
                                         for m in re.finditer(r"([^ \n])\1*", charlm.decode(w))), default=0)
    flagged = {(key[2], step) for key, f in flags.items() for step in f}
    others = longest.keys() - flagged
    assert len(flagged) == 19 and len(others) == 251, (len(flagged), len(others))
    counts = {n: (sum(longest[b] >= n for b in flagged), sum(longest[b] >= n for b in others)) for n in (10, 16, 20)}
    assert counts == {10: (16, 90), 16: (14, 80), 20: (11, 60)}, counts


def test_chapter8_q4_bad_batch_paired_with_clean_twins():
    """The notebook prints further.BAD_BATCH_PAIRED: the paired verdicts hold on it (fast)."""
    _paired_verdicts(further.BAD_BATCH_PAIRED)


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter8_stored_paired_runs_reproduce_and_the_verdicts_hold():
    """A re-run of further.bad_batch_paired_grid() (48 runs, about 2 minutes) gives every stored loss difference within
    0.02 and every loss within 0.05, and the paired verdicts hold on it."""
    fresh = further.bad_batch_paired_grid()
    assert fresh.keys() == further.BAD_BATCH_PAIRED.keys()
    for cell, runs in fresh.items():
        for clip, r in runs.items():
            for key, value in r.items():
                old = further.BAD_BATCH_PAIRED[cell][clip][key]
                tol = 0.05 if key in ("end_clean", "jump_clean") else 0.02
                assert abs(value - old) <= tol, (cell, clip, key, value, old)
    _paired_verdicts(fresh)


# ------------------------------------------------------------------------ Q2, Q3 and Adam's step at a spike

@pytest.fixture(scope="module")
def decay():
    return further.decay_over_seeds()


def test_chapter8_q2_adam_l2_exaggerates_the_decay_of_small_gradient_weights_at_every_lr(decay):
    """08, Q2 row 2 (5 seeds): Adam + L2 removes more from small-gradient weights than AdamW, over 5x more at lr 1e-3
    (stored 9.3x) and over 2x at 1e-2 (3.1x) on every seed, about as much at 0.1 (both nearly all);
    large-gradient weights keep more under L2 than under AdamW at every lr, on every seed. Read as a high *per-weight*
    adaptive lr, the note's "high lr" holds: under Adam + L2 the small-gradient weights (whose eta / sqrt(v_hat) is
    large) keep less than the large-gradient ones, at every lr, on every seed (stored 0.638 against 0.996 at lr
    1e-3)."""
    for lr, ratio in ((1e-3, 5.0), (1e-2, 2.0)):
        for l2, w in zip(decay[lr]["Adam + L2 small"], decay[lr]["AdamW small"]):
            assert 1 - l2 > ratio * (1 - w), (lr, l2, w)
    l2, w = (sum(decay[1e-1][k]) / len(decay[1e-1][k]) for k in ("Adam + L2 small", "AdamW small"))
    assert 1 - l2 > 0.95 * (1 - w), (l2, w)  # at lr 0.1 both remove nearly all (stored 1.000 and 0.975)
    for row in decay.values():
        assert all(l2 > w for l2, w in zip(row["Adam + L2 large"], row["AdamW large"])), row
        assert all(small < large for small, large in zip(row["Adam + L2 small"], row["Adam + L2 large"])), row


def test_chapter8_q2_the_exaggeration_is_the_same_at_every_lr_at_equal_lr_times_steps(decay):
    """08, Q2 row 2 and the paragraph under it: at the same lr x steps (0.4: 400, 40 and 4 steps), before either
    optimizer has removed everything, Adam + L2 removes about 1/(lambda theta) = 10 times what AdamW removes from the
    small-gradient weights at every lr (seed means: 9.3x, 9.9x, 10.0x; asserted within 8.5-11.5), and more than 5x on
    every seed (per seed, as printed: 8.8-9.9x, 8.6-11.3x, 6.0-17.3x; at lr 0.1 4 noisy steps scatter AdamW's mean;
    asserted: 5-25x on every seed). After all 400 steps the
    ratio falls with the lr (9.3x, 3.1x, 1.0x), because the measure saturates: L2 has removed over 99.9% at lr 0.01
    and 0.1, AdamW over 95% at 0.1."""
    for lr, row in decay.items():
        assert row["budget steps"] * lr == pytest.approx(0.4), lr
        assert 8.5 < further.decay_removed_ratio(row, "budget") < 11.5, (lr, further.decay_removed_ratio(row, "budget"))
        for l2, w in zip(row["Adam + L2 small at budget"], row["AdamW small at budget"]):
            assert 1 - l2 > 5 * (1 - w), (lr, l2, w)
        assert 5 < min(further.decay_removed_ratios_per_seed(row, "budget")), lr
        assert max(further.decay_removed_ratios_per_seed(row, "budget")) < 25, lr
    end = [further.decay_removed_ratio(row) for row in decay.values()]
    assert end[0] > 5 and end[0] > end[1] > end[2] and end[2] < 1.5, end  # 9.3x, 3.1x, 1.0x
    assert max(decay[1e-2]["Adam + L2 small"]) < 1e-3 and max(decay[1e-1]["Adam + L2 small"]) < 1e-3
    assert sum(decay[1e-1]["AdamW small"]) / len(decay[1e-1]["AdamW small"]) < 0.05


def test_chapter8_q2_l2_decay_of_small_gradient_weights_is_set_by_the_lr_not_by_lambda(decay):
    """08, Q2 "why the exaggeration does not need a high lr": at lr 0.001 (400 steps, 5 seeds) Adam + L2 leaves the
    small-gradient weights at the same mean whatever lambda is (stored 0.640, 0.638, 0.638 at lambda 0.01, 0.1, 1;
    asserted within 0.01 of each other), so the ratio to AdamW is about 1/(lambda theta): stored 98x, 9.3x, 1.1x
    (asserted 60-150, 8-11, below 1.5)."""
    rows = {wd: further.decay_over_seeds(lrs=(1e-3,), weight_decay=wd)[1e-3] for wd in (0.01, 1.0)} | {0.1: decay[1e-3]}
    left = [sum(r["Adam + L2 small"]) / len(r["Adam + L2 small"]) for r in rows.values()]
    assert max(left) - min(left) < 0.01, left
    ratios = {wd: further.decay_removed_ratio(r) for wd, r in rows.items()}
    assert 60 < ratios[0.01] < 150 and 8 < ratios[0.1] < 11 and ratios[1.0] < 1.5, ratios


def test_chapter8_q2_adamw_follows_the_formula_and_its_decay_depends_on_the_lr(decay):
    """08, Q2 row 3 and the paragraph under the table: AdamW's seed mean is within 0.015 of (1 - lr wd)^400 at every lr
    (stored 0.025 and 0.029 against 0.018 at lr 0.1), the formula lies inside the seed range at lr 0.1, where one
    seed's small-gradient mean scatters (seed range wider than 0.05; stored -0.020 to 0.103); the large-gradient mean
    falls from above 0.9 (lr 1e-3) to below 0.1 (lr 0.1)."""
    for lr, row in decay.items():
        for key in ("AdamW large", "AdamW small"):
            assert abs(sum(row[key]) / len(row[key]) - row["formula"]) < 0.015, (lr, key, row[key])
    small = decay[1e-1]["AdamW small"]
    assert min(small) < decay[1e-1]["formula"] < max(small) and max(small) - min(small) > 0.05, small
    assert min(decay[1e-3]["AdamW large"]) > 0.9 and max(decay[1e-1]["AdamW large"]) < 0.1


def test_chapter8_q3_high_temperature_approaches_the_uniform_distribution():
    """08, Q3 row "T -> infinity": on chapter 6's model, 384 held-out contexts, the mean entropy rises with T and is
    within 0.01 of log 256 at T = 100 (stored 5.544 of 5.545), and every 96-context window's sample differs from
    greedy at more than 99% of positions (stored 99.5%)."""
    import math

    from course_utils import charlm, sampling

    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    logits = sampling.next_token_distributions(model, held_out, windows=4).log()
    greedy = logits.argmax(dim=-1)
    entropies = []
    for t in (1.0, 10.0, 100.0):
        p = sampling.softmax_with_temperature(logits, t)
        entropies.append(float(sampling.entropy(p).mean()))
    assert entropies[0] < entropies[1] < entropies[2] and abs(entropies[2] - math.log(256)) < 0.01, entropies
    p = sampling.softmax_with_temperature(logits, 100.0)
    differs = 1 - p.gather(1, greedy[:, None])[:, 0].view(4, -1).mean(dim=1)
    assert float(differs.min()) > 0.99, differs


def test_chapter8_q3_t01_is_almost_greedy_per_token_not_per_text():
    """08, Q3 row "T=0.1": a T = 0.1 sample differs from greedy at under 4% of the 384 held-out positions in every
    window of 96 (stored 2.9%, windows 2.2% to 3.8%), a tenth of T = 1's rate or less, yet were the departures
    independent, fewer than half of 40-byte samples would equal the greedy text (stored 31%; chapter 6 measures 24%,
    tests/test_claims_ch06.py)."""
    from course_utils import charlm, sampling

    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    logits = sampling.next_token_distributions(model, held_out, windows=4).log()
    greedy = logits.argmax(dim=-1)

    def differs(t):
        return 1 - sampling.softmax_with_temperature(logits, t).gather(1, greedy[:, None])[:, 0].view(4, -1).mean(dim=1)

    cold, warm = differs(0.1), differs(1.0)
    assert float(cold.max()) < 0.04 and float(cold.mean()) < 0.15 * float(warm.mean()), (cold, warm)
    assert (1 - float(cold.mean())) ** 40 < 0.5


def test_chapter8_q4_a_moderate_spike_steps_a_little_more_than_a_huge_one():
    """08, Q4 "why no spiral" and the summary: after a steady gradient, a spike G times as large moves Adam (late in a
    run, bias corrections about 1) by (b1 + (1 - b1) G) / sqrt(b2 + (1 - b2) G^2) lr, whose largest value over G is
    sqrt(b1^2 / b2 + (1 - b1)^2 / (1 - b2)) (Cauchy-Schwarz): 1.026 lr near G = 2.1 at b2 = 0.95, 3.288 lr near
    G = 111 at b2 = 0.999, above the huge-spike limits 0.447 and 3.162. Checked with torch.optim.Adam itself: 10,000
    steps of gradient 1, then one of G."""
    import math

    import torch

    for b2, bound, at, limit in ((0.95, 1.026, 2.1, 0.447), (0.999, 3.288, 111.0, 3.162)):
        assert math.sqrt(0.81 / b2 + 0.01 / (1 - b2)) == pytest.approx(bound, abs=1e-3)
        assert 0.1 / math.sqrt(1 - b2) == pytest.approx(limit, abs=1e-3)
        steps = {}
        for g in (at, 1e6):
            w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([w], lr=1.0, betas=(0.9, b2), eps=0.0)
            for grad in [1.0] * 10_000 + [g]:  # long enough for the bias corrections to reach 1 at b2 = 0.999
                before = w.item()
                w.grad = torch.tensor([grad], dtype=torch.float64)
                opt.step()
            steps[g] = before - w.item()
        assert steps[at] == pytest.approx(bound, abs=2e-3) and steps[1e6] == pytest.approx(limit, abs=2e-3), steps


def test_chapter8_q4_adam_bounds_a_spikes_step_and_its_total_push():
    """08, Q4 "why no spiral" (late in a run, betas 0.9, 0.95, N(0, 1) gradients): the step at a spike of 100 or 10^4
    is 0.42-0.46 lr (bound 0.447) and the spike's total extra displacement 5-6.5 lr (stored 5.8; 0.447 / (1 - 0.923)
    = 5.8), nearly the same for both spikes; at betas (0.9, 0.999) step 61 is still early, and the step there is
    below 1 lr (stored 0.77), not the late-run bound 3.16."""
    for spike in (1e2, 1e4):
        push = further.adam_spike_push(spike)
        assert 0.42 < push["at_spike"] < 0.46 and 5.0 < push["total"] < 6.5, (spike, push)
    assert further.adam_spike_push(1e4, betas=(0.9, 0.999))["at_spike"] < 1.0


def test_chapter8_q4_one_spike_stays_in_v_far_longer_than_one_over_one_minus_beta2():
    """08, Q4 "why no spiral": a spike G = 100 times the N(0, 1) gradients stays above the noise in Adam's v for about
    ln((1 - b2) G^2) / -ln b2 = 121 steps at b2 = 0.95 (measured 122; asserted 110-135), not 1/(1 - b2) = 20, and a
    spike of 10^4 outlasts the 139 steps measured (formula 301); meanwhile the update's response to the noise is
    muted: under 10% of the clean run's one step after a spike of 100 (stored 4%), under half 80 steps after (33%),
    and it recovers (over half at 120 steps, stored 70%)."""
    import math

    push = further.adam_spike_push(1e2)
    assert 110 < push["v_steps"] < 135 and abs(math.log(0.05 * 1e4) / -math.log(0.95) - 121) < 1, push
    assert push["muted"][1] < 0.1 and push["muted"][80] < 0.5 < push["muted"][120], push
    assert further.adam_spike_push(1e4)["v_steps"] is None


def _unigram_loss():
    """Cross-entropy (nats/byte) on the training text of predicting its byte frequencies alone, fit on it."""
    import torch

    from course_utils import charlm

    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    p = torch.bincount(train, minlength=256).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def test_chapter8_post_ln_stalls_at_the_unigram_level():
    """08, Post-LN fact check: "stalled" is the byte-frequency (unigram) level. A unigram model fit on the training
    text scores 3.27 nats/byte on it (asserted 3.2-3.3); every stored Post-LN run that ends above 3.1 (last-20
    training loss, 3.19-3.30) ends within 0.1 of it."""
    unigram = _unigram_loss()
    assert 3.2 < unigram < 3.3, unigram
    ends = [r[k]["loss"] for r in further.SEED_GRIDS["norm_warmup"].values() for k in r if k.startswith("post")]
    assert all(abs(e - unigram) < 0.1 for e in ends if e > 3.1), (unigram, ends)


@pytest.mark.slow
@pytest.mark.rerun  # re-trains runs whose figures depend on the CPU's arithmetic order
def test_chapter8_a_stalled_post_ln_run_predicts_the_byte_frequencies():
    """08, Post-LN fact check: a stalled run (GPT-2 init, lr 3e-3, seed 2, Post-LN without warmup; stored 3.24)
    predicts the same distribution at every position, within 0.05 nats (KL from the training text's byte
    frequencies; measured 0.013) of the unigram model; a Pre-LN run of the same cell does not (KL over 0.2 on
    average; measured 0.51). (Seconds.)"""
    import dataclasses

    import torch

    from course_utils import charlm
    from course_utils.models import CAPSTONE_CONFIG

    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    p = torch.bincount(train, minlength=256).double()
    p = p / p.sum()
    x = charlm.batch(train, 32, torch.Generator().manual_seed(123), 64)
    kl = {}
    for norm in ("post", "pre"):
        config = dataclasses.replace(CAPSTONE_CONFIG, norm_position=norm, n_layer=4)
        run = further.capstone_run(further.reference_pieces(), config=config, steps=100, warmup_steps=0, max_lr=3e-3,
                                   micro_batches=1, progress=False, seed=2, init="GPT-2")
        with torch.no_grad():
            q = torch.softmax(run.model(x[:, :-1])[0].double(), -1)
        kl[norm] = (p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum(-1)
    assert kl["post"].max() < 0.05 and kl["pre"].mean() > 0.2, {k: (float(v.mean()), float(v.max()))
                                                                 for k, v in kl.items()}


VERDICTS = {"Q4 one bad batch under AdamW": _bad_batch_verdicts,
            "max_norm rule": _clipping_verdicts,
            "Pre/Post-LN and warmup": _norm_warmup_verdicts}


@pytest.mark.parametrize("verdict", VERDICTS)
def test_chapter8_verdicts_hold_on_the_stored_grids(verdict):
    """The notebook prints further.SEED_GRIDS: each verdict holds on it (fast)."""
    VERDICTS[verdict](further.SEED_GRIDS)


@pytest.mark.slow
@pytest.mark.rerun
@pytest.mark.parametrize("verdict", VERDICTS)
def test_chapter8_verdicts_hold_on_a_re_run(grids, verdict):
    """The same verdicts on a fresh run of the grids (another CPU's arithmetic order moves the last digits)."""
    VERDICTS[verdict](grids)


# ------------------------------------------------------------------------ exercise 8.5: the capstone's loop

def _torch_loop(config, *, steps, micro_batches, size, max_lr, warmup, clip, seed, weight_decay=0.1):
    """The capstone's training written with torch's own pieces, independently of course_utils.further: AdamW
    (torch.optim, two groups: decay on Linear weights only), torch.nn.utils.clip_grad_norm_, the warmup + cosine
    schedule as a formula, and accumulation as one backward of each micro-batch's mean loss / micro_batches. The same
    model init and the same batches as further.capstone_run. Returns (losses, gradient norms)."""
    import math

    import torch
    import torch.nn.functional as F

    from course_utils import charlm
    from course_utils.models import TinyTransformer, gpt_init_

    torch.manual_seed(seed)
    model = TinyTransformer(config)
    gpt_init_(model, 0.02, True)
    decay = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    rest = [p for p in model.parameters() if all(p is not d for d in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=max_lr, betas=(0.9, 0.95), eps=1e-8)
    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    gen = torch.Generator().manual_seed(seed + 1)
    losses, norms = [], []
    for step in range(steps):
        opt.zero_grad()
        step_losses = []
        for _ in range(micro_batches):
            x = charlm.batch(train, size, gen, config.block_size)
            loss = F.cross_entropy(model(x[:, :-1])[0].flatten(0, 1), x[:, 1:].flatten())
            (loss / micro_batches).backward()
            step_losses.append(loss.item())
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip or math.inf)))
        progress = (step - warmup) / (steps - warmup)
        cosine = max_lr / 10 + 0.9 * max_lr * (1 + math.cos(math.pi * progress)) / 2
        lr = max_lr * (step + 1) / warmup if step < warmup else cosine
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        losses.append(sum(step_losses) / micro_batches)
    return losses, norms


@pytest.mark.parametrize("seed,clip", [(0, 1.0), (1, None)])
def test_chapter8_capstone_loop_matches_a_loop_of_torchs_own_pieces(seed, clip):
    """Exercise 8.5's reference, run by further.capstone_run on a tiny config (1 block of width 32, 32-byte windows, 12
    steps of 2 micro-batches of 4, warmup 3, lr 1e-2), against _torch_loop with the same seed: the same losses and
    gradient norms to float32 rounding (measured: within 3e-7 and 8e-7 relative; asserted 1e-5), with clipping at 1.0
    and without."""
    import dataclasses

    from course_utils.models import CAPSTONE_CONFIG

    config = dataclasses.replace(CAPSTONE_CONFIG, n_layer=1, d_model=32, block_size=32)
    run = further.capstone_run(further.reference_pieces(), config=config, steps=12, micro_batches=2, micro_batch_size=4,
                               max_lr=1e-2, warmup_steps=3, clip=clip, seed=seed, progress=False)
    losses, norms = _torch_loop(config, steps=12, micro_batches=2, size=4, max_lr=1e-2, warmup=3, clip=clip, seed=seed)
    assert not run.diverged and len(run.losses) == 12
    assert run.losses == pytest.approx(losses, rel=1e-5) and run.grad_norms == pytest.approx(norms, rel=1e-5)
    assert run.losses[-1] < run.losses[0] - 1.0  # it trains: from about 5.5 (uniform over 256 bytes)
