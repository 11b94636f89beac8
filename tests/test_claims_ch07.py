"""The verdicts of notebook 07 (long sequences) that the notebook states beyond its compared outputs.

* RoPE scaling on the byte model at 4x its context (cells "a model trained at 96 bytes" and "YaRN ... beta"), on each
  of 3 window sets (seeds 1, 2, 3 of ``charlm.loss_by_position``), not only the notebook's one (seed 1):
  YaRN as its reference code runs it (index ramp), published defaults, ends below Llama 3.1's rule at 192-383 and far
  below the paper's formula; the by-parts rules raise the loss at positions 32-95 by well over its standard error,
  NTK-aware scaling by little; dividing only the slow pairs (4 to 11) costs that rise by itself, far more than pair 4
  and pairs 5 to 11 each alone; YaRN's temperature is not detected (|mean| < 2.5 standard errors and < 0.03) except
  in the paper's form at beta 32.
* Short distances (positions 0-7), on the 60 non-overlapping windows that tile the held-out text (30 at factor 8):
  Llama 3.1's rule leaves the loss unchanged within noise; YaRN's code form, which keeps only pair 0 of this head,
  raises it a little (detected at factors 4 and 8), a rise the notebook's 16-window sets are too small to resolve.
* The same at factor 8 (768 bytes, positions 384-767) and factor 2 (192 bytes, 96-191): YaRN's temperature lowers
  the loss in every form that keeps pair 0 and still raises it in the paper's form at beta 32; YaRN's code form leads
  Llama 3.1's rule by more at factor 8 and does not lead it at factor 2.
* The two forms of YaRN's ramp: ``ramp="index"`` is a transcription of Hugging Face's ``_compute_yarn_parameters``;
  Llama 3.1's rule is the paper's gamma(r) with alpha 1, beta 4 and no temperature, not the index ramp.
* Shared memory of the FlashAttention forward = Q tile + num_stages x (K + V tiles) on sm_90, scores in registers
  (compiled with 1, 2 and 3 stages; slow, needs Triton but no GPU).
* The 128K arithmetic of the memory fact check and the float32 angle bounds.
* Ring attention: the course's worker waits for its transfers longer than it computes, but that wait grows far less
  than the bytes sent; with overlap=True it still matches SDPA; each rank's compute is blocks x 4 (N/P)^2 d, with the
  same blocks at every N (quadratic in N at a fixed P).
* Exercise 7.6's tiled attention equals torch's scaled_dot_product_attention.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import charlm, rope
from course_utils.runtime import triton_status

needs_triton = pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)

SEEDS = (1, 2, 3)
BASE = 10000.0  # the byte model's RoPE base
VARIANTS = {  # label: (method, options), as in the notebook
    "none": ("none", {}), "ntk": ("ntk", {}), "llama3": ("llama3", {}),
    **{(ramp, beta, temperature): ("yarn", {"ramp": ramp, "beta": beta, "temperature": temperature, "base": BASE})
       for ramp, beta in (("turns", 32.0), ("turns", 8.0), ("turns", 4.0), ("index", 32.0))
       for temperature in (True, False)},
}


CODE, PAPER = ("index", 32.0, True), ("turns", 32.0, True)  # YaRN's published defaults in each form
SLOW_PAIRS = "slow pairs only"  # pairs 4 to 11 (under one turn in 96 bytes) divided by 4, pairs 0 to 3 untouched
PAIR_SETS = {SLOW_PAIRS: slice(4, None), "pair 4 only": slice(4, 5), "pairs 5 to 11 only": slice(5, None)}


@pytest.fixture(scope="module")
def per_window():
    """{(seed, label): (16, 384) losses}: 16 windows of 384 bytes read at factor 4; the PAIR_SETS labels set the
    frequencies directly, dividing only those pairs by 4 (no method of ``rope`` divides chosen pairs alone)."""
    assert charlm.CONFIG.rope_base == BASE
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    losses = {}
    for seed in SEEDS:
        for label, (method, options) in VARIANTS.items():
            model.set_rope_scaling(method, 4.0, **options)
            losses[seed, label] = charlm.loss_by_position(model, held_out, 384, windows=16, seed=seed, per_window=True)
        for label, pairs in PAIR_SETS.items():
            model.set_rope_scaling("none")
            model.rope_inv_freq = model.rope_inv_freq.clone()
            model.rope_inv_freq[pairs] /= 4.0
            losses[seed, label] = charlm.loss_by_position(model, held_out, 384, windows=16, seed=seed, per_window=True)
    model.set_rope_scaling("none")
    return losses


FACTOR_VARIANTS = {  # label: (method, options) for the factor-8 and factor-2 runs
    "llama3": ("llama3", {}),
    **{(ramp, beta, temperature): ("yarn", {"ramp": ramp, "beta": beta, "temperature": temperature, "base": BASE})
       for ramp, beta in (("turns", 32.0), ("turns", 8.0), ("turns", 4.0), ("index", 32.0))
       for temperature in (True, False)},
}


@pytest.fixture(scope="module")
def other_factors():
    """{(factor, seed, label): (16,) loss per window over the far half (factor 8: 384-767 of 768 bytes; factor 2:
    96-191 of 192); factor 2 runs only the code form with temperature and Llama 3.1's rule."""
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    losses = {}
    for factor in (8.0, 2.0):
        length = int(96 * factor)
        for seed in SEEDS:
            for label, (method, options) in FACTOR_VARIANTS.items():
                if factor == 2.0 and label not in ("llama3", ("index", 32.0, True)):
                    continue
                model.set_rope_scaling(method, factor, **options)
                w = charlm.loss_by_position(model, held_out, length, windows=16, seed=seed, per_window=True)
                losses[factor, seed, label] = w[:, length // 2:].mean(dim=1)
    model.set_rope_scaling("none")
    return losses


@pytest.fixture(scope="module")
def tiled():
    """{(factor, label): (n, 96 * factor) losses} on every non-overlapping window of 96 * factor + 1 bytes that tiles
    the held-out text from its start (60 windows at factor 4, 30 at factor 8): independent text, unlike the
    notebook's 16 random windows, which may overlap."""
    model = charlm.load()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    losses = {}
    for factor in (4.0, 8.0):
        length = int(96 * factor)
        n = len(held_out) // (length + 1)
        x = held_out[: n * (length + 1)].view(n, length + 1)  # disjoint by construction
        for label, (method, options) in (("none", ("none", {})), ("llama3", ("llama3", {})),
                                         (CODE, ("yarn", {"ramp": "index", "base": BASE}))):
            model.set_rope_scaling(method, factor, **options)
            with torch.no_grad():
                logits, _ = model.eval()(x[:, :-1])
            losses[factor, label] = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(),
                                                    reduction="none").view(n, length)
    model.set_rope_scaling("none")
    return losses


def _mean_se(d):
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item()


def _paired(losses, seed, a, b, part):
    d = losses[seed, a][:, part].mean(dim=1) - losses[seed, b][:, part].mean(dim=1)
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item()


INSIDE, LATE, SHORT, LONGER = slice(0, 96), slice(192, 384), slice(0, 8), slice(32, 96)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_chapter7_yarn_temperature_not_detected_except_paper_form_at_beta_32(per_window, seed):
    """At factor 4 (the notebook's). Stored (seed 1), with - without temperature at 192-383: paper form beta 4 +0.005,
    beta 8 -0.007, code form beta 32 +0.001 (standard errors 0.012, 0.011, 0.009): not detected; paper form beta 32
    +0.072 (se 0.012).
    Seeds 2 and 3: paper beta 4 -0.001, +0.013; beta 8 +0.001, +0.002; code -0.012, -0.001; paper 32 +0.093, +0.073."""
    for ramp, beta in (("turns", 4.0), ("turns", 8.0), ("index", 32.0)):
        mean, se = _paired(per_window, seed, (ramp, beta, True), (ramp, beta, False), LATE)
        assert abs(mean) < 2.5 * se and abs(mean) < 0.03, (ramp, beta, seed, mean, se)
    mean, se = _paired(per_window, seed, ("turns", 32.0, True), ("turns", 32.0, False), LATE)
    assert mean > 4 * se and mean > 0.04, (seed, mean, se)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_chapter7_yarn_temperature_helps_at_factor_8(other_factors, seed):
    """The notebook scopes its temperature verdict to factor 4; at factor 8 (q and k x 1.21 instead of 1.14) the
    temperature lowers the loss at 384-767 in every form that keeps pair 0. Measured (seeds 1, 2, 3), with - without:
    code form -0.080, -0.047, -0.083 (standard errors 0.024, 0.022, 0.014); paper form beta 4 -0.083, -0.056, -0.093
    (0.021, 0.021, 0.023); beta 8 -0.067, -0.042, -0.049; and it still raises it in the paper form at beta 32:
    +0.058, +0.117, +0.084 (0.021, 0.019, 0.020)."""
    def effect(ramp, beta):
        return _mean_se(other_factors[8.0, seed, (ramp, beta, True)] - other_factors[8.0, seed, (ramp, beta, False)])

    for ramp, beta in (("index", 32.0), ("turns", 4.0), ("turns", 8.0)):
        mean, se = effect(ramp, beta)
        assert mean < -0.03 and mean < -2 * se, (ramp, beta, seed, mean, se)
    mean, se = effect("turns", 32.0)
    assert mean > 0.04 and mean > 2.5 * se, (seed, mean, se)


@pytest.mark.slow
def test_chapter7_reference_yarn_lead_over_llama31_depends_on_the_factor(other_factors):
    """Prediction 7.a is a close call: YaRN's code form minus Llama 3.1's rule over the far half, per window, is
    -0.149, -0.127, -0.158 at factor 8 (standard errors 0.023, 0.020, 0.025) and -0.003, +0.044, +0.015 at factor 2
    (0.016, 0.016, 0.009): a clear lead at 8, none at 2."""
    code = ("index", 32.0, True)
    at8 = [_mean_se(other_factors[8.0, s, code] - other_factors[8.0, s, "llama3"]) for s in SEEDS]
    at2 = [_mean_se(other_factors[2.0, s, code] - other_factors[2.0, s, "llama3"]) for s in SEEDS]
    assert all(m < -0.1 and m < -4 * se for m, se in at8), at8
    assert all(abs(m) < 0.06 for m, _ in at2) and max(m for m, _ in at2) > 0, at2


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_chapter7_reference_yarn_holds_up_best_of_the_published_defaults(per_window, seed):
    """Stored (seed 1), loss at 192-383 minus Llama 3.1's rule's, paired per window: YaRN (code) -0.045 (se 0.017),
    YaRN (paper) +1.279; seeds 2 and 3: code -0.068 (se 0.010), -0.039 (0.019). Below Llama 3.1 on every window set,
    by less than 0.12; the paper's form worse than the code form by more than 0.9 (stored 1.32, 1.17, 1.14)."""
    mean, se = _paired(per_window, seed, CODE, "llama3", LATE)
    assert -0.12 < mean < 0, (seed, mean, se)
    for other in ("ntk", PAPER):  # the other published defaults end far higher
        assert _paired(per_window, seed, other, CODE, LATE)[0] > 0.9, (seed, other)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_chapter7_by_parts_rules_keep_short_distances_and_raise_the_longer_ones(per_window, seed):
    """Loss minus no scaling's, paired per window. At positions 0-7 (at most 8 bytes of context), seeds 1, 2, 3:
    Llama 3.1 +0.008, +0.005, +0.020 (se 0.009, 0.016, 0.011): kept; YaRN (code) +0.036, +0.017, +0.052 (0.024, 0.027,
    0.033): small, each under 2 standard errors, a rise 16 windows do not resolve (the tiled test detects it). At
    32-95: Llama 3.1 +0.347, +0.239, +0.301; code +0.241, +0.227, +0.262. Over 0-95
    (stored, seed 1): code +0.220 (se 0.027), Llama 3.1 +0.270 (0.030), paper +1.543, NTK-aware +0.041 (0.008); seeds
    2, 3: code +0.181, +0.227; llama3 +0.191, +0.243; ntk +0.037, +0.055. Dividing only the slow pairs 4 to 11:
    +0.005, +0.002, +0.006 at 0-7 and +0.281, +0.218, +0.273 over 0-95; pair 4 alone +0.063, +0.043, +0.063, pairs 5
    to 11 alone +0.030, +0.043, +0.053 over 0-95: together far more than the sum of the parts. Had short distances
    lost accuracy like the longer ones, the 0-7 differences would have been as large as the later ones."""
    mean, se = _paired(per_window, seed, "llama3", "none", SHORT)
    assert abs(mean) < 0.03 and abs(mean) < 2.5 * se + 1e-3, (seed, mean, se)
    assert abs(_paired(per_window, seed, CODE, "none", SHORT)[0]) < 0.06, seed
    for label in (CODE, "llama3"):
        mean, se = _paired(per_window, seed, label, "none", LONGER)
        assert mean > 0.2 and mean > 5 * se, (seed, label, mean, se)
        mean, se = _paired(per_window, seed, label, "none", INSIDE)
        assert mean > 0.15 and mean > 5 * se, (seed, label, mean, se)
    assert _paired(per_window, seed, PAPER, "none", INSIDE)[0] > 1.0
    mean, _ = _paired(per_window, seed, "ntk", "none", INSIDE)
    assert 0 < mean < 0.08, (seed, mean)
    slow = (per_window[seed, SLOW_PAIRS] - per_window[seed, "none"])[:, INSIDE]
    assert abs(slow[:, SHORT].mean().item()) < 0.02, seed
    mean, se = _mean_se(slow.mean(dim=1))
    assert mean > 0.15 and mean > 5 * se, (seed, mean, se)
    parts = [_paired(per_window, seed, label, "none", INSIDE)[0] for label in ("pair 4 only", "pairs 5 to 11 only")]
    # the prose's ranges, and superadditive: the parts alone cost far less than all slow pairs together
    assert 0.04 <= round(parts[0], 2) <= 0.06 and 0.03 <= round(parts[1], 2) <= 0.05, (seed, parts)
    assert sum(parts) < 0.6 * mean, (seed, parts, mean)


@pytest.mark.slow
def test_chapter7_short_distances_llama31_keeps_yarn_code_raises_a_little(tiled):
    """The first row of the YaRN fact check, on the 60 non-overlapping 385-byte windows that tile the held-out text
    (30 of 769 bytes at factor 8). Loss at positions 0-7 minus no scaling's, paired per window, measured:
    factor 4: Llama 3.1 +0.005 (se 0.007), YaRN (code) +0.029 (se 0.008, z 3.5);
    factor 8: Llama 3.1 +0.017 (se 0.011), YaRN (code) +0.081 (se 0.022, z 3.7).
    Llama 3.1's rule keeps pairs 0 and 1 of this head and leaves the short distances unchanged within noise; YaRN's
    code form keeps only pair 0 and blends pairs 1 to 3, and costs a small, detected rise. Also YaRN (code) minus
    Llama 3.1 at 192-383, factor 4: -0.038 (se 0.009), the notebook's lead, firmer than on 16 windows."""
    assert len(tiled[4.0, "none"]) == 60 and len(tiled[8.0, "none"]) == 30

    def paired(factor, a, b, part):
        return _mean_se(tiled[factor, a][:, part].mean(dim=1) - tiled[factor, b][:, part].mean(dim=1))

    for factor, llama_bound, code_bounds in ((4.0, 0.02, (0.01, 0.06)), (8.0, 0.04, (0.04, 0.15))):
        mean, se = paired(factor, "llama3", "none", SHORT)
        assert abs(mean) < llama_bound and abs(mean) < 2.5 * se, (factor, mean, se)
        mean, se = paired(factor, CODE, "none", SHORT)
        assert code_bounds[0] < mean < code_bounds[1] and mean > 2.5 * se, (factor, mean, se)
    mean, se = paired(4.0, CODE, "llama3", LATE)
    assert mean < -0.02 and mean < -3 * se, (mean, se)


def _hf_yarn(dim, base, original_context, factor, beta_fast=32.0, beta_slow=1.0):
    """A transcription of Hugging Face transformers' ``_compute_yarn_parameters`` (truncate=True), inv_freq only."""
    def find_correction_dim(num_rotations):
        return (dim * math.log(original_context / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(find_correction_dim(beta_fast)), 0)
    high = min(math.ceil(find_correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp
    return interpolation * (1 - keep) + extrapolation * keep


SETTINGS = [(128, 500000.0, 8192, 8.0), (24, 10000.0, 96, 4.0), (64, 10000.0, 2048, 16.0)]


def test_chapter7_yarn_index_ramp_is_the_reference_code():
    """The byte model's head: divisors 1.00, 1.23, 1.60, 2.29, 4, ... (the paper's form: 1.68, 2.52, 3.27, 3.81)."""
    for head_dim, base, context, factor in SETTINGS:
        inv = rope.rope_inv_freq(head_dim, base)
        for beta in (32.0, 4.0):
            mine, attention = rope.yarn_scaled_inv_freq(inv, factor, context, beta=beta, ramp="index", base=base)
            torch.testing.assert_close(mine, _hf_yarn(head_dim, base, context, factor, beta_fast=beta),
                                       rtol=1e-6, atol=0)
            assert attention == pytest.approx(0.1 * math.log(factor) + 1)
            # the default base is read off inv_freq and lands on the same ramp
            torch.testing.assert_close(rope.yarn_scaled_inv_freq(inv, factor, context, beta=beta, ramp="index")[0],
                                       mine, rtol=0, atol=0)
    inv = rope.rope_inv_freq(24, 10000.0)
    code = inv / rope.yarn_scaled_inv_freq(inv, 4.0, 96, ramp="index", base=10000.0)[0]
    paper = inv / rope.yarn_scaled_inv_freq(inv, 4.0, 96)[0]
    assert [round(x, 2) for x in code[:5].tolist()] == [1.0, 1.23, 1.6, 2.29, 4.0]
    assert [round(x, 2) for x in paper[:5].tolist()] == [1.68, 2.52, 3.27, 3.81, 4.0]


def test_chapter7_llama31_is_yarn_papers_gamma_with_alpha1_beta4_no_temperature():
    for head_dim, base, context, factor in SETTINGS:
        inv = rope.rope_inv_freq(head_dim, base)
        llama = rope.llama3_scaled_inv_freq(inv, factor, context)
        yarn, attention = rope.yarn_scaled_inv_freq(inv, factor, context, alpha=1.0, beta=4.0, temperature=False)
        torch.testing.assert_close(yarn, llama, rtol=1e-6, atol=0)  # the same blend written in turns, not wavelengths
        assert attention == 1.0


def test_chapter7_llama31_is_not_yarns_index_ramp():
    """The index ramp's frequencies, relative to Llama 3.1's rule (the reference the notebook's sentence is about):
    |index ramp / llama3 - 1| reaches 31% on the byte model's head and 38% on Llama 3's."""
    gaps = []
    for head_dim, base, context, factor in SETTINGS[:2]:
        inv = rope.rope_inv_freq(head_dim, base)
        index, _ = rope.yarn_scaled_inv_freq(inv, factor, context, beta=4.0, ramp="index", base=base)
        gaps.append((index / rope.llama3_scaled_inv_freq(inv, factor, context) - 1).abs().max().item())
    assert [round(g, 2) for g in gaps] == [0.38, 0.31], gaps


def test_chapter7_128k_memory_arithmetic():
    n, heads, d = 131072, 8, 128
    assert n * n * 2 == 32 * 2**30  # 32 GiB of fp16 scores per head, not 32 TB
    assert n * 4 == 512 * 2**10  # the row LSE per head in float32
    assert 2 * heads * n * d * 2 == 512 * 2**20  # K and V per layer in bf16


def test_chapter7_float32_angle_error_within_two_roundings():
    """Stored: 1.4e-4 rad at position 4005 (above half an ulp of the position, 1.2e-4) and 2.7e-3 at 131000 (half an
    ulp 3.9e-3); each pair within half an ulp of its angle + angle x 2^-24 (the product's and the frequency's
    rounding), so within 1.5 ulps of the position; pair 0 exact."""
    inv = rope.rope_inv_freq(64)
    exact = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    for pos, stored in ((4005, 1.4e-4), (131000, 2.7e-3)):
        angle = pos * exact
        err = ((torch.tensor([float(pos)])[:, None] * inv[None, :])[0].double() - angle).abs()
        bound = 2.0 ** (torch.floor(torch.log2(angle)) - 24) + angle * 2.0 ** -24
        assert err[0] == 0 and (err <= bound).all(), (pos, err, bound)
        assert err.max() < 1.5 * 2.0 ** (math.floor(math.log2(pos)) - 23)
        assert f"{err.max():.1e}" == f"{stored:.1e}"
    assert 1.4e-4 > 2.0 ** (11 - 24)  # at 4005 the error exceeds half an ulp of the position
    assert torch.tensor(257.0, dtype=torch.bfloat16).item() == 256.0


@pytest.mark.slow
def test_chapter7_ring_worker_waits_longer_than_it_computes_and_overlap_is_exact():
    """The notebook's ring (4 ranks, 256 positions, d = 16): the ranks wait for transfers longer than they compute
    (the notebook's last stored run: waits of 39 to 98 ms against 2 to 38 ms of compute a rank, about 6x summed over
    the ranks; the run before: 5.7 to 7.9 ms against 1.8 to 4.3 ms, 2.4x; asserted as a sum with margin, since it is
    a timing); the overlapping variant (sends posted before the
    compute) gives the same result."""
    from course_utils.distributed import ring_inputs, run_workers

    q, k, v = ring_inputs(1, 2, 256, 16)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for overlap in (False, True):
        ranks = run_workers("ring_attention", 4, batch=1, heads=2, seq=256, head_dim=16, causal=True,
                            overlap=overlap, timeout_s=120)
        torch.testing.assert_close(torch.cat([r["o"] for r in ranks], dim=2), reference, rtol=0, atol=1e-5)
        if not overlap:  # a timing: asserted with a wide margin (stored ratios 2.4x to 6x; a busy CI machine stretches
            # both sides), summed over the ranks so that one descheduled rank does not decide it
            waits, computes = sum(r["wait_s"] for r in ranks), sum(r["compute_s"] for r in ranks)
            assert waits > computes, [(r["wait_s"], r["compute_s"]) for r in ranks]


@pytest.mark.slow
def test_chapter7_ring_wait_does_not_follow_the_bytes():
    """The ring fact check: what the demo's ranks wait for is not the transfer of the bytes. K+V blocks 64 times larger
    (sequences of 64 and 1,024 positions, i.e. blocks of 16 and 256 positions per rank, d = 16 and 64: K+V blocks of
    4 KiB and 256 KiB for the two heads) raise the ranks' summed wait far less than 64x
    (measured on the course machine: 1.8x to 4.6x, and the same setting varies several-fold between runs); asserted
    below 16x, a quarter of the bytes' growth. A timing, summed over the ranks; a bandwidth-bound wait would grow
    about 64x."""
    from course_utils.distributed import run_workers

    waits = {}
    for seq, head_dim in ((64, 16), (1024, 64)):
        ranks = run_workers("ring_attention", 4, batch=1, heads=2, seq=seq, head_dim=head_dim, causal=True,
                            timeout_s=120)
        assert {r["bytes_sent"] for r in ranks} == {3 * 2 * 2 * (seq // 4) * head_dim * 4}  # 3 blocks of K and V
        # the compute stays quadratic in N: rank r attends to r + 1 blocks of 4 (N/P)^2 d FLOPs whatever N is
        assert [r["blocks_computed"] for r in ranks] == [1, 2, 3, 4], seq
        waits[seq] = sum(r["wait_s"] for r in ranks)
    assert waits[1024] < 16 * waits[64], waits


def test_chapter7_tiled_attention_is_torchs_attention():
    """Exercise 7.6's reference against an independent one, torch's scaled_dot_product_attention: on every case of
    the exercise, and on a grid of tile sizes (1 to larger than the sequence, ones that do not divide it), causal and
    not, with scores in the thousands (q x 100: the running max keeps exp finite)."""
    from course_utils.attention import tiled_attention
    from solutions.ch07_long_sequences import EX_7_6

    for case in EX_7_6.cases():
        q, k, v, block_q, block_k, *causal = case.args
        causal = bool(causal and causal[0])
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        rtol, atol = case.tolerances.get(q.dtype, (1e-5, 1e-5) if q.dtype == torch.float32 else (1e-10, 1e-10))
        torch.testing.assert_close(tiled_attention(q, k, v, block_q, block_k, causal), expected, rtol=rtol, atol=atol,
                                   msg=case.name)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 45, 16, generator=g) for _ in range(3))
    for causal in (False, True):
        for block_q, block_k in ((1, 1), (4, 16), (16, 4), (7, 9), (45, 45), (64, 32)):
            for scale, tol in ((1.0, 1e-5), (100.0, 1e-3)):  # float32 scores of ~1e3 carry ~1e-4 rounding
                got = tiled_attention(q * scale, k, v, block_q, block_k, causal)
                torch.testing.assert_close(got, F.scaled_dot_product_attention(q * scale, k, v, is_causal=causal),
                                           rtol=tol, atol=tol, msg=f"{causal}, {block_q} x {block_k}, q x {scale}")


@pytest.mark.slow
@needs_triton
def test_chapter7_forward_shared_memory_is_q_plus_stages_of_kv():
    """sm_90: 24, 40, 56 KiB at d = 64 and 48, 80, 112 at d = 128 for 1, 2, 3 stages = Q + s (K + V) exactly;
    sm_80/sm_89: 16, 24, 40 and 40, 56, 88, below the estimate and one K+V pair per stage from 2 stages on. With one
    stage the d = 64 forward uses 16 KiB: no room for a 16 KiB float32 score tile next to any tile, so the scores are
    in registers."""
    from course_utils.attention import flash_kernels_compiled

    shared = {}
    for stages in (1, 2, 3):
        for r in flash_kernels_compiled(num_stages=stages, kernels=("flash_fwd",)):
            assert r["error"] is None, r
            shared[r["head_dim"], r["target"], stages] = r["shared KiB"]
    for d in (64, 128):
        tile = 2 * 64 * d / 1024
        assert [shared[d, "sm_90", s] for s in (1, 2, 3)] == [tile * (1 + 2 * s) for s in (1, 2, 3)]
        for target in ("sm_80", "sm_89"):
            got = [shared[d, target, s] for s in (1, 2, 3)]
            assert all(g <= tile * (1 + 2 * s) for g, s in zip(got, (1, 2, 3))), (d, target, got)
            assert got[2] - got[1] == 2 * tile, (d, target, got)
    assert shared[64, "sm_80", 1] == 16 and shared[64, "sm_89", 1] == 16
