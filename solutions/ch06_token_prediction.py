"""Notebook 06: token prediction. The filters and beam search are building blocks: they live in
course_utils.sampling and are re-exported here."""
import math

import torch

from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.harness.launchers import launch_gumbel_kernel
from course_utils.runtime import import_triton
from course_utils.sampling import (
    apply_repetition_penalty,
    beam_search,
    cached_forward,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)

triton, tl = import_triton()

CHAPTER = "6. Token prediction (토큰 예측의 이해)"

__all__ = ["top_k_filter", "top_p_filter", "min_p_filter", "apply_repetition_penalty", "beam_search",
           "gumbel_max_kernel", "cached_forward"]

NEG = float("-inf")


def _log(probs):
    """Logits whose softmax is ``probs`` up to rounding: the logarithms are rounded to float32, so a cumulative mass
    can land just off a threshold the probabilities meet exactly (the checks settle decisions within 1e-6 of it)."""
    return torch.tensor(probs, dtype=torch.float32).log()


# A token whose probability lies within rounding of a filter's threshold is decided by the arithmetic, not by
# the rule: float32 and float64, logits and probabilities round differently. Such decisions (distance to the
# threshold not exactly 0, at most NEAR_THRESHOLD) are accepted either way; exact ties are not.
NEAR_THRESHOLD = 1e-6


def _settle_near_threshold(reference, distance):
    """A call adapter: the candidate's output, with the decisions on tokens within rounding of the threshold
    taken from the reference (either is right there)."""
    def call(fn, logits, threshold):
        out = fn(logits, threshold)
        if isinstance(out, torch.Tensor) and out.shape == logits.shape and out.dtype == logits.dtype:
            d = distance(logits, threshold).to(out.device)
            near = (d != 0) & (d.abs() <= NEAR_THRESHOLD)
            if bool(near.any()):
                out = torch.where(near, reference(logits, threshold).to(out.device), out)
        return out
    return call


# ------------------------------------------------------------------------------------- 6.1 top-k

def _top_k_by_index(logits, k):  # exactly k tokens: a tie at the boundary is cut arbitrarily
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(
        -1, torch.topk(logits, min(k, logits.shape[-1]), dim=-1).indices, True)
    return logits.masked_fill(~keep, NEG)


def _top_k_probabilities_zeroed(logits, k):  # returns probabilities with zeros, not logits
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return torch.softmax(logits, dim=-1).masked_fill(logits < kth, 0.0)


def _top_k_smallest(logits, k):  # keeps the k least likely
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, NEG)


def _top_k_cases():
    g = torch.Generator().manual_seed(61)
    return [
        Case("k = 3 of 10", (torch.randn(10, generator=g), 3)),
        Case("batch of 4 rows, k = 5", (torch.randn(4, 50, generator=g), 5)),
        Case("tie at the boundary: [3, 2, 2, 1], k = 2", (torch.tensor([3.0, 2.0, 2.0, 1.0]), 2)),
        Case("k larger than the vocabulary", (torch.randn(6, generator=g), 10)),
        Case("k = 1", (torch.randn(2, 7, generator=g), 1)),
        Case("k = 0 (the contract says: ValueError)", (torch.randn(5, generator=g), 0), raises=ValueError),
    ]


EX_6_1 = Exercise(
    id="6.1", title="top-k filter", reference=top_k_filter, cases=_top_k_cases,
    mistakes=(
        Mistake("exactly k by index", _top_k_by_index,
                "torch.topk's indices pick k tokens and cut a tie at the boundary arbitrarily: keep every logit "
                ">= the k-th largest value instead (ties with it included)."),
        Mistake("probabilities instead of logits", _top_k_probabilities_zeroed,
                "Return logits with the removed tokens at -inf (so that temperature and softmax can follow), "
                "not probabilities with zeros."),
        Mistake("the k smallest", _top_k_smallest,
                "Keep the k *largest* logits (torch.topk's default, largest=True)."),
    ),
)


# ------------------------------------------------------------------------------------- 6.2 top-p

def _top_p_drops_crossing_token(logits, p):  # keeps only tokens whose cumulative mass is <= p
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep_sorted = torch.cumsum(sorted_probs, dim=-1) <= p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG)


def _top_p_float32_sum(logits, p):  # the float32 cumulative sum reaches 1 before the last token
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep_sorted = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG)


def _top_p_ties_to_higher_ids(logits, p):  # Hugging Face's form: ascending sort, drop mass <= 1 - p
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=False, stable=True)
    remove_sorted = torch.cumsum(sorted_probs, dim=-1) <= 1 - p
    remove_sorted[..., -1] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG)


def _top_p_unsorted(logits, p):  # cumulative mass in token-id order
    probs = torch.softmax(logits.float(), dim=-1)
    keep = (torch.cumsum(probs, dim=-1) - probs) < p
    return logits.masked_fill(~keep, NEG)


def _top_p_on_logits(logits, p):  # cumulative sum of raw logits instead of probabilities
    sorted_z, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    keep_sorted = (torch.cumsum(sorted_z, dim=-1) - sorted_z) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG)


def _top_p_distance(logits, p):
    """(..., V) float64: for each token, the probability mass before it (descending, ties by id) minus p."""
    if p >= 1:
        return torch.zeros_like(logits, dtype=torch.float64)
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    return torch.zeros_like(before).scatter(-1, order, before - p)


def _top_p_cases():
    g = torch.Generator().manual_seed(62)
    return [
        Case("p = 0.75 on a boundary up to rounding: [1/8, 1/2, 1/8, 1/4]", (_log([0.125, 0.5, 0.125, 0.25]), 0.75)),
        Case("p = 0.7 between boundaries", (_log([0.125, 0.5, 0.125, 0.25]), 0.7)),
        Case("one dominant token (0.97)", (_log([0.01, 0.97, 0.01, 0.01]), 0.9)),
        Case("uniform ties, p = 0.5: lower ids first", (_log([0.25, 0.25, 0.25, 0.25]), 0.5)),
        Case("batch of 3 random rows, p = 0.9", (2 * torch.randn(3, 20, generator=g), 0.9)),
        Case("p = 1 keeps everything", (torch.randn(8, generator=g), 1.0)),
        Case("p = 1 over 50,000 tokens", (3 * torch.randn(50_000, generator=g), 1.0)),
    ]


EX_6_2 = Exercise(
    id="6.2", title="top-p (nucleus) filter", reference=top_p_filter, cases=_top_p_cases,
    call=_settle_near_threshold(top_p_filter, _top_p_distance),
    mistakes=(
        Mistake("the crossing token dropped", _top_p_drops_crossing_token,
                "Keeping tokens while the cumulative sum is <= p leaves a set with mass < p. Keep a token when the "
                "mass *before* it is < p: the token that crosses p belongs to the nucleus."),
        Mistake("ties kept from the higher ids", _top_p_ties_to_higher_ids,
                "Ties at the boundary: this contract keeps the lower token ids first (a stable descending sort). "
                "Hugging Face's ascending form keeps the higher ones; both are valid, one rule makes results "
                "reproducible."),
        Mistake("float32 sum at p = 1", _top_p_float32_sum,
                "A float32 cumulative sum over many tokens reaches 1.0 before the last token, so p = 1 cut the "
                "tail: keep everything when p >= 1 (and sum in float64)."),
        Mistake("cumulative sum in id order", _top_p_unsorted,
                "Sort the probabilities in descending order before the cumulative sum (stable, so ties keep "
                "lower ids first), then map the decision back to the original positions."),
        Mistake("cumulative sum of logits", _top_p_on_logits,
                "Accumulate probabilities (softmax of the logits), not raw logits."),
    ),
)


# ------------------------------------------------------------------------------------- 6.3 min-p

def _min_p_absolute(logits, min_p):  # threshold on the probability itself
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p, NEG)


def _min_p_scaled_logits(logits, min_p):  # threshold min_p * max logit
    return logits.masked_fill(logits < min_p * logits.max(dim=-1, keepdim=True).values, NEG)


def _min_p_strict(logits, min_p):  # > instead of >=: drops a token exactly at min_p * p_max
    if min_p <= 0:
        return logits.clone()
    return logits.masked_fill(logits <= logits.max(dim=-1, keepdim=True).values + math.log(min_p), NEG)


def _min_p_distance(logits, min_p):
    """(..., V) float64: z_i - z_max - ln(min_p), the log-probability ratio's distance to the threshold."""
    if min_p <= 0:
        return torch.zeros_like(logits, dtype=torch.float64)
    z = logits.double()
    return z - z.max(dim=-1, keepdim=True).values - math.log(min_p)


def _min_p_cases():
    g = torch.Generator().manual_seed(63)
    return [
        Case("min_p = 0.25 on [1/2, 1/4, 1/8, 1/8] (1/8 is on the threshold up to rounding: either is accepted)",
             (_log([0.5, 0.25, 0.125, 0.125]), 0.25)),
        Case("min_p = 1 keeps exactly the tied maxima",
             (torch.tensor([[2.0, 5.0, 5.0, 1.0], [0.0, -1.0, 0.0, 0.0]]), 1.0)),
        Case("min_p = 0.1, a flat-ish batch", (0.3 * torch.randn(3, 30, generator=g), 0.1)),
        Case("min_p = 0.05, a peaked row", (4 * torch.randn(40, generator=g), 0.05)),
        Case("min_p = 0 keeps everything", (torch.randn(5, generator=g), 0.0)),
        Case("negative logits, min_p = 0.5", (-5 - torch.rand(2, 6, generator=g), 0.5)),
    ]


EX_6_3 = Exercise(
    id="6.3", title="min-p filter", reference=min_p_filter, cases=_min_p_cases,
    call=_settle_near_threshold(min_p_filter, _min_p_distance),
    mistakes=(
        Mistake("absolute threshold", _min_p_absolute,
                "min-p is relative: keep p_i >= min_p * p_max, not p_i >= min_p."),
        Mistake("threshold on logits times min_p", _min_p_scaled_logits,
                "Scaling a logit is not scaling a probability: p_i >= min_p * p_max means "
                "z_i >= z_max + ln(min_p)."),
        Mistake("strict inequality", _min_p_strict,
                "\"At least min_p times the top token's\" includes equality: with min_p = 1 the tied maxima stay "
                "(>=, not >)."),
    ),
)


# -------------------------------------------------------------------------- 6.4 repetition penalty

def _penalty_always_divides(logits, previous, penalty):
    seen = torch.unique(previous)
    out = logits.clone()
    out[seen] = logits[seen] / penalty
    return out


def _penalty_per_occurrence(logits, previous, penalty):
    out = logits.clone()
    for t in previous.tolist():
        out[t] = out[t] / penalty if out[t] > 0 else out[t] * penalty
    return out


def _penalty_subtracted(logits, previous, penalty):
    seen = torch.unique(previous)
    out = logits.clone()
    out[seen] = logits[seen] - penalty
    return out


def _penalty_cases():
    g = torch.Generator().manual_seed(64)
    return [
        Case("positive and negative logits, penalty 1.3", (torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0]),
                                                           torch.tensor([0, 1]), 1.3)),
        Case("a token repeated three times", (torch.randn(8, generator=g), torch.tensor([2, 2, 2, 5]), 1.5)),
        Case("penalty 1 changes nothing", (torch.randn(6, generator=g), torch.tensor([0, 3]), 1.0)),
        Case("a negative logit repeated", (torch.tensor([1.0, -2.0, 0.3]), torch.tensor([1, 1, 2]), 2.0)),
    ]


EX_6_4 = Exercise(
    id="6.4", title="repetition penalty", reference=apply_repetition_penalty, cases=_penalty_cases,
    mistakes=(
        Mistake("always divides", _penalty_always_divides,
                "Dividing a negative logit by penalty > 1 moves it towards 0 and makes the token *more* likely: "
                "multiply negative logits by the penalty, divide positive ones."),
        Mistake("once per occurrence", _penalty_per_occurrence,
                "Apply the penalty once per distinct token (torch.unique), not once per occurrence."),
        Mistake("subtracted", _penalty_subtracted,
                "The penalty is multiplicative: z / penalty for z > 0, z * penalty for z <= 0."),
    ),
)


# ---------------------------------------------------------------------------------- 6.5 beam search

def _markov_scorer(table):
    """next_log_probs for a first-order table: row = last token of each sequence (log-probs)."""
    def next_log_probs(sequences):
        return torch.stack([table[s[-1]] for s in sequences])
    return next_log_probs


def _beam_greedy_per_beam(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    """Keeps each beam's own top continuations (beam_width per beam, then the first beam_width overall)."""
    alive, finished = [([], 0.0)], []
    for _ in range(steps):
        if not alive:
            break
        log_probs = next_log_probs([list(prompt) + c for c, _ in alive])
        candidates = []
        for (c, s), row in zip(alive, log_probs):
            top = torch.topk(row.double(), beam_width)
            candidates += [(c + [int(t)], s + float(v)) for v, t in zip(top.values, top.indices)]
        alive = []
        for c, s in candidates[:beam_width]:
            (finished if eos_id is not None and c[-1] == eos_id else alive).append((c, s))
    best = max(finished + alive, key=lambda cs: cs[1] / len(cs[0]) ** length_penalty)
    return best[0], best[1] / len(best[0]) ** length_penalty


def _beam_no_length_penalty(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    return beam_search(next_log_probs, prompt, beam_width, steps, eos_id, 0.0)


def _beam_finished_keep_growing(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    return beam_search(next_log_probs, prompt, beam_width, steps, None, length_penalty)


def _beam_search_variant(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0, *,
                         shrink_for_good=False, eos_in_len=True):
    """The reference's loop with one of two misreadings of its contract switched on (tests/test_claims_ch06.py checks
    that the last two cases of 6.5 tell each from the reference)."""
    alive, finished, width = [([], 0.0)], [], beam_width
    for _ in range(steps):
        if not alive or width < 1:
            break
        log_probs = next_log_probs([list(prompt) + c for c, _ in alive])
        vocab = log_probs.shape[-1]
        totals = torch.tensor([s for _, s in alive], dtype=torch.float64)[:, None] + log_probs.double()
        order = torch.sort(totals.flatten(), descending=True, stable=True).indices[:width]
        candidates = [(alive[i // vocab][0] + [i % vocab], float(totals.flatten()[i])) for i in order.tolist()]
        alive = []
        for c, s in candidates:
            if eos_id is not None and c[-1] == eos_id:
                finished.append((c, s))
                width -= shrink_for_good
            else:
                alive.append((c, s))

    def length(c):
        return max(len(c) - (not eos_in_len and eos_id is not None and c[-1] == eos_id), 1)

    best = max(finished + alive, key=lambda cs: cs[1] / length(cs[0]) ** length_penalty)
    return best[0], best[1] / length(best[0]) ** length_penalty


def _beam_shrinks_for_good(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    return _beam_search_variant(next_log_probs, prompt, beam_width, steps, eos_id, length_penalty,
                                shrink_for_good=True)


def _beam_eos_not_counted(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    return _beam_search_variant(next_log_probs, prompt, beam_width, steps, eos_id, length_penalty, eos_in_len=False)


def _beam_cases():
    g = torch.Generator().manual_seed(65)

    def table(v, sharp=2.0):
        return torch.log_softmax(sharp * torch.randn(v, v, generator=g), dim=-1)

    # greedy takes token 1 (0.6) but then meets a flat row; token 2 (0.4) leads to a certain next token
    trap = torch.full((4, 4), math.log(0.25))
    trap[0] = torch.tensor([0.0, 0.6, 0.4, 0.0]).clamp(min=1e-9).log()
    trap[2] = torch.tensor([0.0, 0.0, 0.0, 1.0]).clamp(min=1e-9).log()
    return [
        Case("greedy trap (beam 2, 2 steps)", (_markov_scorer(trap), [0], 2, 2)),
        Case("6 tokens, eos = 5, beam 3, 6 steps, length penalty 1", (_markov_scorer(table(6)), [0], 3, 6, 5, 1.0)),
        Case("8 tokens, no eos, beam 4, 5 steps", (_markov_scorer(table(8)), [1, 2], 4, 5)),
        Case("5 tokens, eos = 0, beam 2, 8 steps, length penalty 0.6",
             (_markov_scorer(table(5, 1.0)), [3], 2, 8, 0, 0.6)),
        Case("beam 1 is greedy", (_markov_scorer(table(6)), [0], 1, 4)),
        # token 0 ends: after [0] finishes in step 1, step 2 keeps 2 candidates again ([1, 2] and [1, 3]),
        # and only [1, 3] leads on to a certain token: the best, at -0.505 per token against [0]'s -0.80
        Case("a beam finishes at step 1, the next step keeps 2 again (eos = 0, beam 2, 3 steps)",
             (_markov_scorer(_refill_table()), [4], 2, 3, 0, 1.0)),
        # the best is the finished [1, 0]: its length counts the end token (2), so its score is ln(0.81) / 2
        Case("the best is finished, len counts the end token (eos = 0, beam 2, 3 steps)",
             (_markov_scorer(_finish_table()), [4], 2, 3, 0, 1.0)),
    ]


def _probability_table(rows):
    """Log-probabilities of a first-order table from {token: {next token: probability}}, the rest of each row
    spread evenly (rows not given are uniform); 5 tokens."""
    table = torch.full((5, 5), 0.2, dtype=torch.float64)
    for token, row in rows.items():
        rest = (1 - sum(row.values())) / (5 - len(row))
        table[token] = torch.tensor([row.get(t, rest) for t in range(5)], dtype=torch.float64)
    return table.clamp(min=1e-9).log().float()


def _refill_table():
    return _probability_table({4: {0: 0.45, 1: 0.55, 2: 0.0, 3: 0.0}, 1: {2: 0.6, 3: 0.4, 0: 0.0, 4: 0.0},
                               3: {4: 1.0, 0: 0.0, 1: 0.0, 2: 0.0}})


def _finish_table():
    return _probability_table({4: {1: 0.9, 0: 0.0, 3: 0.0, 4: 0.0}, 1: {0: 0.9}})


EX_6_5 = Exercise(
    id="6.5", title="beam search with length normalisation", reference=beam_search, cases=_beam_cases,
    mistakes=(
        Mistake("top-k per beam", _beam_greedy_per_beam,
                "Choose the beam_width best candidates over *all* beams together (flatten beams × vocabulary), "
                "not each beam's own best."),
        Mistake("no length normalisation", _beam_no_length_penalty,
                "Score each continuation by its total log-prob divided by len**length_penalty: a raw sum favours "
                "short sequences."),
        Mistake("finished beams keep growing", _beam_finished_keep_growing,
                "A candidate that ends in eos_id is finished: move it out of the beam; it grows no more."),
    ),
)


# ------------------------------------------------------------------------ 6.6 Triton Gumbel-max

# = kernels/gumbel_sampling._sample_kernel without min-p (no first pass for the row max), with the whole row in
# one block instead of a loop over chunks that keeps a running argmax.
@triton.jit
def gumbel_max_kernel(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    """One draw from softmax(logits / T) per row, by the Gumbel-max trick; BLOCK >= n_cols.

    Program `row` reads logits[row, :n_cols] (start logits_ptr + row * row_stride), draws
    u = tl.rand(seed, row * n_cols + col) for each column, adds Gumbel noise g = -log(-log(u)) to
    z * inv_temperature and stores the argmax (int64) at out_ptr + row. Lanes at or beyond n_cols
    must never win.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    z = tl.load(logits_ptr + row * row_stride + cols, mask=valid, other=0.0).to(tl.float32)
    u = tl.rand(seed, row * n_cols + cols)
    score = tl.where(valid, z * inv_temperature - tl.log(-tl.log(u)), -float("inf"))
    tl.store(out_ptr + row, tl.argmax(score, axis=0))


@triton.jit
def _gumbel_variant(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr,
                    NO_TEMPERATURE: tl.constexpr = False, LOG_U: tl.constexpr = False,
                    PADDING_CAN_WIN: tl.constexpr = False, UNMASKED_LOAD: tl.constexpr = False):
    """gumbel_max_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes below."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    if UNMASKED_LOAD:
        z = tl.load(logits_ptr + row * row_stride + cols).to(tl.float32)
    else:
        z = tl.load(logits_ptr + row * row_stride + cols, mask=valid, other=0.0).to(tl.float32)
    if not NO_TEMPERATURE:
        z = z * inv_temperature
    u = tl.rand(seed, row * n_cols + cols)
    if LOG_U:
        score = z + tl.log(u)
    else:
        score = z - tl.log(-tl.log(u))
    if not PADDING_CAN_WIN:
        score = tl.where(valid, score, -float("inf"))
    tl.store(out_ptr + row, tl.argmax(score, axis=0))


@triton.jit
def _gumbel_no_temperature(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    _gumbel_variant(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK=BLOCK, NO_TEMPERATURE=True)


@triton.jit
def _gumbel_log_u(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    _gumbel_variant(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK=BLOCK, LOG_U=True)


@triton.jit
def _gumbel_padding_wins(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    _gumbel_variant(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK=BLOCK, PADDING_CAN_WIN=True)


@triton.jit
def _gumbel_unmasked(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    _gumbel_variant(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK=BLOCK, PADDING_CAN_WIN=True,
                    UNMASKED_LOAD=True)


def _gumbel_cases():
    g = torch.Generator().manual_seed(66)
    return [
        Case("8 rows, vocabulary 10, T = 1", (torch.randn(8, 10, generator=g), 1.0, 0)),
        Case("6 rows, vocabulary 37, T = 0.3", (2 * torch.randn(6, 37, generator=g), 0.3, 1)),
        Case("very negative logits, vocabulary 5 (padding is 0)", (-50 - torch.rand(16, 5, generator=g), 1.0, 2)),
        Case("high temperature T = 20", (torch.randn(8, 16, generator=g), 20.0, 3)),
    ]


EX_6_6 = Exercise(
    id="6.6", title="Triton Gumbel-max sampling kernel", reference=gumbel_max_kernel, cases=_gumbel_cases,
    call=launch_gumbel_kernel,
    mistakes=(
        Mistake("temperature ignored", _gumbel_no_temperature,
                "Scale the logits by inv_temperature before adding the noise."),
        Mistake("log(u) instead of Gumbel noise", _gumbel_log_u,
                "Gumbel noise is -log(-log(u)); log(u) alone does not give draws from the softmax."),
        Mistake("padding lanes can win", _gumbel_padding_wins,
                "Lanes at or beyond n_cols must score -inf (tl.where(cols < n_cols, score, -inf)), or the "
                "argmax can land on a column that does not exist."),
        Mistake("load without a mask, padding not excluded", _gumbel_unmasked,
                "Lanes at or beyond n_cols read whatever lies past the row: load with mask=cols < n_cols and give "
                "those lanes the score -inf (tl.where(cols < n_cols, score, -inf)) so they never win."),
    ),
)


# ------------------------------------------------------------------------------ 6.7 key/value cache

@torch.no_grad()
def _cached_forward_variant(model, ids, cache, *, positions_from_zero=False, mask="causal", attend_cache=True):
    """cached_forward with the bug each keyword names (the defaults give the right answer), for the mistakes below."""
    from course_utils.rope import rope_rotate

    B, T = ids.shape
    L = cache[0][0].shape[2] if cache else 0
    if L + T > model.config.block_size:
        raise ValueError(f"{L + T} positions exceed the model's context {model.config.block_size}")
    positions = torch.arange(0, T) if positions_from_zero else torch.arange(L, L + T)
    x, new_cache = model.tok_emb(ids), []
    for i, block in enumerate(model.blocks):
        attn, C = block.attn, x.shape[-1]
        q, k, v = attn.qkv(block.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
        q = rope_rotate(q, positions, model.rope_inv_freq) * model.rope_factor
        k = rope_rotate(k, positions, model.rope_inv_freq) * model.rope_factor
        k_all, v_all = (k, v) if not cache else (torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2))
        new_cache.append((k_all, v_all))
        if not attend_cache:
            k_all, v_all = k, v
        if mask == "is_causal":  # torch's triangle is aligned to the top left: query t sees keys 0..t
            y = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        elif mask == "none":
            y = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all)
        else:
            seen = torch.arange(k_all.shape[2])[None, :] <= torch.arange(k_all.shape[2] - T, k_all.shape[2])[:, None]
            y = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, attn_mask=seen)
        x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.norm_f(x)), new_cache


def _kv_positions_from_zero(model, ids, cache):
    return _cached_forward_variant(model, ids, cache, positions_from_zero=True)


def _kv_is_causal(model, ids, cache):
    return _cached_forward_variant(model, ids, cache, mask="is_causal")


def _kv_no_mask(model, ids, cache):
    return _cached_forward_variant(model, ids, cache, mask="none")


def _kv_new_keys_only(model, ids, cache):
    return _cached_forward_variant(model, ids, cache, attend_cache=False)


def _kv_model(seed, *, n_head, d_model, vocab_size=37, block_size=12, n_layer=2, scaling=None):
    """A small rotary pre-LN model at fan-in init (logits of order 1), built without touching the global RNG."""
    from course_utils.models import TinyTransformer, TransformerConfig

    config = TransformerConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                               d_model=d_model, position="rope", init="fan_in")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyTransformer(config).eval()
    if scaling:
        model.set_rope_scaling(*scaling)
    return model


def _kv_cases():
    from course_utils import charlm

    g = torch.Generator().manual_seed(67)
    byte_model = charlm.load()
    one_head = _kv_model(0, n_head=1, d_model=8)
    four_heads = _kv_model(1, n_head=4, d_model=16)
    yarn = _kv_model(2, n_head=2, d_model=16, scaling=("yarn", 2.0))  # YaRN: model.rope_factor != 1

    def ids(model, b, t):
        return torch.randint(0, model.config.vocab_size, (b, t), generator=g)

    def read(model, b, t):  # a cache of t positions, as the answer builds it
        return cached_forward(model, ids(model, b, t), [])[1]

    return [
        Case("the byte model, no cache yet: 2 prompts of 7 bytes", (byte_model, ids(byte_model, 2, 7), [])),
        Case("the byte model, one new byte per row after 9 cached positions (batch 3)",
             (byte_model, ids(byte_model, 3, 1), read(byte_model, 3, 9))),
        Case("a chunk of 4 new tokens after 5 cached positions (1 head of size 8)",
             (one_head, ids(one_head, 2, 4), read(one_head, 2, 5))),
        Case("the context filled exactly: 11 cached + 1 new = block_size 12 (4 heads of size 4, batch 1)",
             (four_heads, ids(four_heads, 1, 1), read(four_heads, 1, 11))),
        Case("RoPE stretched by YaRN (model.rope_factor != 1): 3 new tokens after 6 cached",
             (yarn, ids(yarn, 2, 3), read(yarn, 2, 6))),
        Case("past the context: 12 cached + 1 new > block_size 12 (the contract says: ValueError)",
             (four_heads, ids(four_heads, 1, 1), read(four_heads, 1, 12)), raises=ValueError),
    ]


EX_6_7 = Exercise(
    id="6.7", title="key/value cache for incremental decoding", reference=cached_forward, cases=_kv_cases,
    # Two right answers (torch's fused attention, or softmax(q k^T / sqrt(d)) v by hand) differ by up to ~1e-5 in the
    # byte model's logits (of size ~10) after 4 blocks; every listed mistake is off by more than 0.1.
    tolerances={torch.float32: (1e-4, 1e-4)},
    output_names=("logits", "new_cache"),
    hints=("Follow TinyTransformer.forward and CausalSelfAttention.forward (shown above) layer by layer: the same "
           "modules in the same order. Only two things change: where the new tokens sit, and which keys they "
           "attend to.",
           "L = cache[0][0].shape[2] (0 for the empty cache []). The new tokens sit at positions L, ..., L + T - 1: "
           "rotate q and k by torch.arange(L, L + T), then put k and v after the cached ones (torch.cat along dim "
           "2). A cached key never needs rotating again: its angle depends on its own position only.",
           "Query t of the chunk sits at position L + t and may see keys 0, ..., L + t: a boolean (T, L + T) mask, "
           "True where allowed, passed as attn_mask. is_causal=True would align the triangle to the top left, as if "
           "the chunk started the text; with no mask at all, a chunk of several tokens would see its own future.",
           "Per block: q, k, v = attn.qkv(block.ln1(x)).split(C, 2), each viewed as (B, n_head, T, head_size); "
           "rotate; k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2); "
           "mask = torch.arange(L + T)[None, :] <= torch.arange(L, L + T)[:, None]; "
           "y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask); "
           "x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C)); x = x + block.mlp(block.ln2(x)). "
           "Finally logits = model.lm_head(model.norm_f(x))."),
    mistakes=(
        Mistake("positions restart at 0", _kv_positions_from_zero,
                "The new tokens are not at the start of the text: rotate their queries and keys by their own "
                "positions L, ..., L + T - 1 (L = positions already cached), not by 0, ..., T - 1."),
        Mistake("is_causal=True with a cache", _kv_is_causal,
                "scaled_dot_product_attention(is_causal=True) aligns its triangle to the top left: with L cached "
                "positions, the new token then sees only key 0. Build the (T, L + T) mask yourself: query t sees "
                "keys 0, ..., L + t."),
        Mistake("no causal mask", _kv_no_mask,
                "With one new token, attending to every key is right; with a chunk of several (the prompt), each "
                "token would see the ones after it. Mask key j for query t when j > L + t."),
        Mistake("attends to the new keys only", _kv_new_keys_only,
                "The cache is there to be read: attend to the cached keys and values followed by the new ones "
                "(L + T of them), not to the new tokens alone."),
    ),
)


EXERCISES = [EX_6_1, EX_6_2, EX_6_3, EX_6_4, EX_6_5, EX_6_6, EX_6_7]
