"""Notebook 04: loss functions."""
import math

import torch
import torch.nn.functional as F

from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.harness.launchers import launch_ce_row_kernel
from course_utils.runtime import import_triton

triton, tl = import_triton()

CHAPTER = "4. Loss functions (손실 함수)"

__all__ = ["cross_entropy", "label_smoothed_cross_entropy", "masked_mean_cross_entropy",
           "assistant_only_labels", "cross_entropy_row_kernel", "cross_entropy_grad"]


def _ce_cases(smoothing: bool = False):
    """Cases for 4.1, and for 4.2 with a different eps in each case (so that eps cannot be ignored)."""
    g = torch.Generator().manual_seed(40)
    eps = iter([0.1, 0.0, 0.3, 1.0, 0.05, 0.2])

    def extra():
        return (next(eps),) if smoothing else ()

    return [
        Case("8 rows, vocabulary 5", (torch.randn(8, 5, generator=g),
                                      torch.randint(0, 5, (8,), generator=g), *extra())),
        Case("one row", (torch.randn(1, 7, generator=g), torch.tensor([6]), *extra())),
        Case("large logits (~100)", (100 + torch.randn(4, 6, generator=g),
                                     torch.randint(0, 6, (4,), generator=g), *extra())),
        Case("huge logits (~1e4)", (1e4 * torch.randn(4, 6, generator=g),
                                    torch.randint(0, 6, (4,), generator=g), *extra())),
        Case("vocabulary 1000", (3 * torch.randn(5, 1000, generator=g),
                                 torch.randint(0, 1000, (5,), generator=g), *extra())),
        Case("confident and right", (torch.tensor([[20.0, 0.0, 0.0]]), torch.tensor([0]), *extra())),
    ]


# --------------------------------------------------------------------------- 4.1 cross-entropy

def cross_entropy(logits, target):
    """Mean cross-entropy of logits (N, V) against integer targets (N,), as F.cross_entropy.

    For each row: -log softmax(logits)[target] = logsumexp(logits) - logits[target], computed from the
    logits with log-sum-exp so that huge logits neither overflow nor give log(0). Returns a 0-d tensor,
    the mean over the N rows. Inputs are not modified.
    """
    picked = logits.gather(1, target[:, None])[:, 0]
    return (torch.logsumexp(logits, dim=1) - picked).mean()


def _ce_naive(logits, target):
    return -torch.log(torch.softmax(logits, dim=1).gather(1, target[:, None])).mean()


def _ce_no_max(logits, target):
    picked = logits.gather(1, target[:, None])[:, 0]
    return (torch.log(torch.exp(logits).sum(dim=1)) - picked).mean()


def _ce_sum(logits, target):
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, target[:, None])[:, 0]).sum()


def _ce_unnormalised(logits, target):
    return -logits.gather(1, target[:, None]).mean()


def _ce_column_per_target(logits, target):
    return (torch.logsumexp(logits, dim=1) - logits[:, target]).mean()


EX_4_1 = Exercise(
    id="4.1", title="cross-entropy from logits", reference=cross_entropy, cases=_ce_cases,
    mistakes=(
        Mistake("exp without the max", _ce_no_max,
                "log(sum(exp(z))) overflows once a logit passes 88.7 (float32): subtract the row max first "
                "and add it back, or use torch.logsumexp."),
        Mistake("log of softmax", _ce_naive,
                "log(softmax(z)) underflows to log(0) = -inf when one logit dominates: use "
                "logsumexp(z) - z[target] (or log_softmax)."),
        Mistake("sum instead of mean", _ce_sum, "Average over the rows (.mean()), as F.cross_entropy does."),
        Mistake("no normaliser", _ce_unnormalised,
                "-z[target] alone ignores every other logit: subtract it from logsumexp(z)."),
        Mistake("logits[:, target]", _ce_column_per_target,
                "logits[:, target] takes, in every row, the columns of *all* N targets (an (N, N) matrix); take one "
                "entry per row: logits.gather(1, target[:, None]) or logits[torch.arange(N), target]."),
    ),
)


# ---------------------------------------------------------------------------- 4.2 label smoothing

def label_smoothed_cross_entropy(logits, target, eps):
    """Cross-entropy against PyTorch's smoothed target, as F.cross_entropy(..., label_smoothing=eps).

    The target distribution puts (1 - eps) on the right class and spreads eps uniformly over *all* V
    classes (the right one included): q = (1 - eps) * onehot + eps / V. Loss per row: the cross-entropy of
    softmax(logits) against q, computed from the logits as stably as exercise 4.1. Returns the mean over rows.
    """
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    uniform = -log_p.mean(dim=1)
    return ((1 - eps) * nll + eps * uniform).mean()


def _ls_v_minus_one(logits, target, eps):  # the study note's [eps/(V-1), ..., 1-eps, ...]
    log_p = torch.log_softmax(logits, dim=1)
    V = logits.shape[1]
    q = torch.full_like(log_p, eps / max(V - 1, 1)).scatter(1, target[:, None], 1 - eps)
    return -(q * log_p).sum(dim=1).mean()


def _ls_entropy_of_uniform(logits, target, eps):  # the note's "(1-eps) CE + eps H(uniform)", read literally
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    return ((1 - eps) * nll + eps * math.log(logits.shape[1])).mean()


def _ls_uniform_summed(logits, target, eps):
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    return ((1 - eps) * nll + eps * -log_p.sum(dim=1)).mean()


def _ls_swapped(logits, target, eps):
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    return (eps * nll + (1 - eps) * -log_p.mean(dim=1)).mean()


EX_4_2 = Exercise(
    id="4.2", title="label smoothing like PyTorch", reference=label_smoothed_cross_entropy,
    cases=lambda: _ce_cases(smoothing=True),
    mistakes=(
        Mistake("eps / (V - 1) off the target", _ls_v_minus_one,
                "That is the study note's target [eps/(V-1), ..., 1-eps, ...]; PyTorch spreads eps over all V "
                "classes, the target included: q = (1 - eps) onehot + eps / V."),
        Mistake("entropy of the uniform", _ls_entropy_of_uniform,
                "eps * H(uniform) = eps * ln V is a constant with no gradient: the smoothing term is the "
                "cross-entropy against the uniform, eps * mean_j(-log p_j)."),
        Mistake("weights swapped", _ls_swapped, "The target's term gets (1 - eps), the uniform term eps."),
        Mistake("uniform term summed", _ls_uniform_summed,
                "The uniform target puts eps / V on each class, so its term is eps * mean_j(-log p_j): the mean over "
                "the V classes, not the sum."),
    ),
)


# ----------------------------------------------------------------------------- 4.3 loss masking

def assistant_only_labels(ids, roles):
    """Labels for instruction tuning: the token id where the token belongs to the assistant, else -100.

    ids: (T,) int64 token ids; roles: list of T strings ("system", "user", "assistant" or "template"
    for the role headers). Mask the role headers, but keep the assistant's end-of-turn token <|end|>
    (render_chat tags it "assistant"): the model must learn when to stop. Returns a new (T,) int64
    tensor. Shifting for next-token prediction is done later, by the loss (logits[:-1] against labels[1:]).
    """
    keep = torch.tensor([role == "assistant" for role in roles], dtype=torch.bool)
    return torch.where(keep, ids, torch.full_like(ids, -100))


def _mask_cases():
    from course_utils.losses import render_chat

    chats = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}],
        [{"role": "user", "content": "Only a question"}],
        [{"role": "assistant", "content": "Only an answer"}],
    ]
    names = ["system, user, assistant", "two turns", "no assistant", "assistant only"]
    return [Case(name, render_chat(chat)) for name, chat in zip(names, chats)]


def _labels_inverted(ids, roles):
    keep = torch.tensor([role != "assistant" for role in roles], dtype=torch.bool)
    return torch.where(keep, ids, torch.full_like(ids, -100))


def _labels_keep_system(ids, roles):
    keep = torch.tensor([role in ("assistant", "system") for role in roles], dtype=torch.bool)
    return torch.where(keep, ids, torch.full_like(ids, -100))


def _labels_end_masked(ids, roles):
    from course_utils.losses import SPECIAL_TOKENS

    keep = torch.tensor([role == "assistant" for role in roles], dtype=torch.bool) & (ids != SPECIAL_TOKENS["<|end|>"])
    return torch.where(keep, ids, torch.full_like(ids, -100))


def _labels_with_headers(ids, roles):
    keep = torch.tensor([role in ("assistant", "template") for role in roles], dtype=torch.bool)
    return torch.where(keep, ids, torch.full_like(ids, -100))


EX_4_3 = Exercise(
    id="4.3", title="assistant-only labels", reference=assistant_only_labels, cases=_mask_cases,
    mistakes=(
        Mistake("inverted", _labels_inverted,
                "It is the assistant's tokens that the model learns to write: keep those, mask the rest."),
        Mistake("system kept", _labels_keep_system,
                "Mask the system prompt too: only the assistant's tokens count."),
        Mistake("headers kept", _labels_with_headers,
                "Role headers are template, not something the model should learn to produce: mask them."),
        Mistake("end-of-turn masked", _labels_end_masked,
                "Keep the assistant's <|end|>: it is a template token, but it is how the model learns to stop "
                "(masking it is the classic SFT bug of a model that never ends its answer)."),
    ),
)


# --------------------------------------------------------------------- 4.4 mean over counted tokens

def masked_mean_cross_entropy(logits, labels):
    """Mean cross-entropy over the positions whose label is not -100, as F.cross_entropy(logits, labels).

    logits: (N, V); labels: (N,) with class indices or -100 (ignored). Ignored positions add nothing
    and do not count in the denominator. If every label is -100 the result is NaN (0 / 0), as in PyTorch.
    """
    keep = labels != -100
    safe = torch.where(keep, labels, torch.zeros_like(labels))
    per_token = torch.logsumexp(logits, dim=1) - logits.gather(1, safe[:, None])[:, 0]
    return (per_token * keep).sum() / keep.sum()


def _per_token_with_ignored_as_zero(logits, labels):
    """Per-token losses, scoring ignored positions as if their label were token 0 (for the mistakes)."""
    safe = torch.where(labels != -100, labels, torch.zeros_like(labels))
    return torch.logsumexp(logits, dim=1) - logits.gather(1, safe[:, None])[:, 0]


def _masked_mean_over_all(logits, labels):
    return (_per_token_with_ignored_as_zero(logits, labels) * (labels != -100)).mean()


def _masked_as_token_zero(logits, labels):
    return _per_token_with_ignored_as_zero(logits, labels).mean()


def _masked_cases():
    g = torch.Generator().manual_seed(43)

    def labels(n, v, ignored):
        y = torch.randint(0, v, (n,), generator=g)
        y[ignored] = -100
        return y

    return [
        Case("half of 8 ignored", (torch.randn(8, 5, generator=g), labels(8, 5, slice(0, 4)))),
        Case("none ignored", (torch.randn(6, 4, generator=g), labels(6, 4, slice(0, 0)))),
        Case("one counted among 10", (torch.randn(10, 7, generator=g), labels(10, 7, slice(1, 10)))),
        Case("all ignored", (torch.randn(3, 4, generator=g), labels(3, 4, slice(0, 3)))),
    ]


EX_4_4 = Exercise(
    id="4.4", title="mean over the counted tokens", reference=masked_mean_cross_entropy, cases=_masked_cases,
    mistakes=(
        Mistake("mean over all positions", _masked_mean_over_all,
                "Divide by the number of counted tokens, not by all positions: ignored ones must not dilute "
                "the mean."),
        Mistake("ignored as token 0", _masked_as_token_zero,
                "Positions labelled -100 must drop out of the loss, not be scored as token 0."),
    ),
)


# -------------------------------------------------------------------- 4.5 Triton loss per row

# = the loss half of kernels/cross_entropy._cross_entropy_kernel: the whole row in one block instead of the online
# loop over blocks, no gradient pass, no label smoothing, lse formed as m + log(sum), no int64 row offset.
@triton.jit
def cross_entropy_row_kernel(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                             BLOCK: tl.constexpr):
    """Cross-entropy of one row per program; BLOCK >= n_vocab, so one block holds the whole row.

    Program i reads logits[i, :n_vocab] (row start logits_ptr + i * row_stride) and target[i]; it
    stores loss[i] = logsumexp(row) - row[target] (float32), or 0.0 when target[i] == ignore_index
    (then row[target] must not be read). Lanes at or beyond n_vocab must not change the result.
    """
    row = tl.program_id(0)
    target = tl.load(target_ptr + row)
    if target == ignore_index:
        tl.store(loss_ptr + row, 0.0)
    else:
        cols = tl.arange(0, BLOCK)
        z = tl.load(logits_ptr + row * row_stride + cols, mask=cols < n_vocab, other=-float("inf")).to(tl.float32)
        m = tl.max(z, axis=0)
        lse = m + tl.log(tl.sum(tl.exp(z - m), axis=0))
        z_target = tl.load(logits_ptr + row * row_stride + target).to(tl.float32)
        tl.store(loss_ptr + row, lse - z_target)


@triton.jit
def _ce_variant(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK: tl.constexpr,
                PAD_WITH_ZERO: tl.constexpr = False, NO_MAX: tl.constexpr = False,
                UNMASKED_LOAD: tl.constexpr = False, READS_IGNORED_TARGET: tl.constexpr = False):
    """cross_entropy_row_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes
    below."""
    row = tl.program_id(0)
    target = tl.load(target_ptr + row)
    if READS_IGNORED_TARGET:  # compute every row, then pick 0.0 for ignored ones: reads row[ignore_index]
        cols = tl.arange(0, BLOCK)
        z = tl.load(logits_ptr + row * row_stride + cols, mask=cols < n_vocab, other=-float("inf")).to(tl.float32)
        m = tl.max(z, axis=0)
        lse = m + tl.log(tl.sum(tl.exp(z - m), axis=0))
        z_target = tl.load(logits_ptr + row * row_stride + target).to(tl.float32)
        tl.store(loss_ptr + row, tl.where(target == ignore_index, 0.0, lse - z_target))
    elif target == ignore_index:
        tl.store(loss_ptr + row, 0.0)
    else:
        cols = tl.arange(0, BLOCK)
        pad = 0.0 if PAD_WITH_ZERO else -float("inf")
        if UNMASKED_LOAD:
            z = tl.load(logits_ptr + row * row_stride + cols).to(tl.float32)
        else:
            z = tl.load(logits_ptr + row * row_stride + cols, mask=cols < n_vocab, other=pad).to(tl.float32)
        if NO_MAX:
            lse = tl.log(tl.sum(tl.exp(z), axis=0))
        else:
            m = tl.max(z, axis=0)
            lse = m + tl.log(tl.sum(tl.exp(z - m), axis=0))
        z_target = tl.load(logits_ptr + row * row_stride + target).to(tl.float32)
        tl.store(loss_ptr + row, lse - z_target)


@triton.jit
def _ce_kernel_pads_with_zero(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                              BLOCK: tl.constexpr):
    _ce_variant(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK=BLOCK, PAD_WITH_ZERO=True)


@triton.jit
def _ce_kernel_no_max(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK: tl.constexpr):
    _ce_variant(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK=BLOCK, NO_MAX=True)


@triton.jit
def _ce_kernel_unmasked_load(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                             BLOCK: tl.constexpr):
    _ce_variant(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK=BLOCK, UNMASKED_LOAD=True)


@triton.jit
def _ce_kernel_reads_ignored_target(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                                    BLOCK: tl.constexpr):
    _ce_variant(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK=BLOCK,
                READS_IGNORED_TARGET=True)


def _kernel_cases():
    g = torch.Generator().manual_seed(45)
    with_ignored = torch.randint(0, 100, (6,), generator=g)
    with_ignored[::2] = -100
    return [
        Case("5 rows, vocabulary 123", (torch.randn(5, 123, generator=g), torch.randint(0, 123, (5,), generator=g))),
        Case("all-negative logits, vocabulary 50", (-5 - torch.rand(3, 50, generator=g),
                                                    torch.randint(0, 50, (3,), generator=g))),
        Case("huge logits (x300)", (300 * torch.randn(4, 37, generator=g), torch.randint(0, 37, (4,), generator=g))),
        Case("every other row ignored", (torch.randn(6, 100, generator=g), with_ignored)),
        Case("ignore_index = 3, a class id (rows with target 3 are ignored)",
             (torch.randn(5, 20, generator=g), torch.tensor([3, 0, 3, 19, 7])), {"ignore_index": 3}),
        Case("vocabulary 1", (torch.randn(2, 1, generator=g), torch.zeros(2, dtype=torch.long))),
    ]


EX_4_5 = Exercise(
    id="4.5", title="Triton loss kernel", reference=cross_entropy_row_kernel, cases=_kernel_cases,
    call=launch_ce_row_kernel,
    tolerances={torch.float32: (1e-5, 1e-5)},  # logsumexp of 1000-ish values summed in another order
    mistakes=(
        Mistake("padding loaded as 0", _ce_kernel_pads_with_zero,
                "Masked lanes must load -inf: with 0.0 they enter the max and add exp(0 - max) to the sum."),
        Mistake("no max subtraction", _ce_kernel_no_max,
                "Subtract the row max before tl.exp (and add it back to the log): large logits overflow "
                "otherwise."),
        Mistake("row[target] read for ignored rows", _ce_kernel_reads_ignored_target,
                "tl.where picks 0.0 for an ignored row only after row[target] was loaded, and target = "
                "ignore_index (-100) points before the row: branch first (if target == ignore_index: store 0.0) "
                "and load row[target] only for counted rows."),
        Mistake("load without a mask", _ce_kernel_unmasked_load,
                "Lanes at or beyond n_vocab lie outside the row: load with mask=cols < n_vocab, other=-inf, so "
                "they neither win the max nor add to the sum."),
    ),
)


# ---------------------------------------------------------------- 4.6 the gradient of the loss by hand

def cross_entropy_grad(logits, target, label_smoothing=0.0, ignore_index=-100):
    """The gradient of F.cross_entropy(logits, target, label_smoothing=..., ignore_index=...) (mean reduction)
    with respect to the logits, derived by hand: extend the one-row result above to smoothing and to the mean.

    logits: (N, V) float; target: (N,) int64 class ids, where a row whose target equals ignore_index does not
    count (ignore_index may also be a valid class id: rows with that target are still ignored). Smoothing is
    PyTorch's: a counted row's target distribution is (1 - label_smoothing) * onehot(target) + label_smoothing / V,
    and the loss is the mean over the counted rows. Returns dL/dlogits, shaped and typed like logits, equal to what
    autograd gives through F.cross_entropy, also when every row is ignored (your prediction 4.c): never NaN.
    No autograd; huge logits must not overflow. Inputs are not modified.
    """
    keep = target != ignore_index  # (N,)
    n_classes = logits.shape[1]
    counted_target = torch.where(keep, target, torch.zeros_like(target))  # a valid index on every row
    q = (1 - label_smoothing) * F.one_hot(counted_target, n_classes).to(logits.dtype) + label_smoothing / n_classes
    grad = (torch.softmax(logits, dim=1) - q) * keep[:, None]
    return grad / keep.sum().clamp(min=1)


def _ce_grad_cases():
    g = torch.Generator().manual_seed(46)

    def targets(n, v, ignored=slice(0, 0)):
        y = torch.randint(0, v, (n,), generator=g)
        y[ignored] = -100
        return y

    return [
        Case("8 rows, vocabulary 5, none ignored", (torch.randn(8, 5, generator=g), targets(8, 5))),
        Case("half of 8 rows ignored, smoothing 0.1",
             (2 * torch.randn(8, 6, generator=g), targets(8, 6, slice(0, 8, 2)), 0.1)),
        Case("one counted row among 10, smoothing 0.3",
             (torch.randn(10, 7, generator=g), targets(10, 7, slice(1, 10)), 0.3)),
        Case("ignore_index = 3, a class id (rows with target 3 are ignored)",
             (torch.randn(5, 8, generator=g), torch.tensor([3, 0, 3, 7, 1]), 0.1, 3)),
        Case("huge logits (~1e4)", (1e4 * torch.randn(4, 6, generator=g), targets(4, 6))),
        Case("one row, vocabulary 1000, float64, smoothing 0.2",
             (3 * torch.randn(1, 1000, generator=g, dtype=torch.float64), targets(1, 1000), 0.2)),
        Case("every row ignored (torch: loss NaN, gradient zeros)",
             (torch.randn(3, 4, generator=g), targets(3, 4, slice(0, 3)), 0.1)),
    ]


def _ce_grad_parts(logits, target, label_smoothing, ignore_index, v_minus_one=False):
    """softmax(logits), the smoothed target q (over all V classes, or fairseq's V - 1) and the counted rows."""
    keep = target != ignore_index
    n_classes = logits.shape[1]
    onehot = F.one_hot(torch.where(keep, target, torch.zeros_like(target)), n_classes).to(logits.dtype)
    if v_minus_one:
        q = (1 - label_smoothing) * onehot + label_smoothing / max(n_classes - 1, 1) * (1 - onehot)
    else:
        q = (1 - label_smoothing) * onehot + label_smoothing / n_classes
    return torch.softmax(logits, dim=1), q, keep


def _ce_grad_over_all_rows(logits, target, label_smoothing=0.0, ignore_index=-100):
    p, q, keep = _ce_grad_parts(logits, target, label_smoothing, ignore_index)
    return (p - q) * keep[:, None] / logits.shape[0]


def _ce_grad_ignored_rows_kept(logits, target, label_smoothing=0.0, ignore_index=-100):
    p, q, keep = _ce_grad_parts(logits, target, label_smoothing, ignore_index)
    return (p - q) / keep.sum().clamp(min=1)


def _ce_grad_no_smoothing(logits, target, label_smoothing=0.0, ignore_index=-100):
    p, q, keep = _ce_grad_parts(logits, target, 0.0, ignore_index)
    return (p - q) * keep[:, None] / keep.sum().clamp(min=1)


def _ce_grad_v_minus_one(logits, target, label_smoothing=0.0, ignore_index=-100):
    p, q, keep = _ce_grad_parts(logits, target, label_smoothing, ignore_index, v_minus_one=True)
    return (p - q) * keep[:, None] / keep.sum().clamp(min=1)


def _ce_grad_nan_when_all_ignored(logits, target, label_smoothing=0.0, ignore_index=-100):
    p, q, keep = _ce_grad_parts(logits, target, label_smoothing, ignore_index)
    return (p - q) * keep[:, None] / keep.sum()


EX_4_6 = Exercise(
    id="4.6", title="the cross-entropy gradient by hand", reference=cross_entropy_grad, cases=_ce_grad_cases,
    hints=("Differentiate one row's loss, logsumexp(z) - sum_j q_j z_j: the first term gives softmax(z), the "
           "second -q (q sums to 1, so the two together sum to 0).",
           "The mean divides each counted row's gradient by n, the number of rows whose target is not "
           "ignore_index; an ignored row adds nothing to the loss, so its gradient row is 0.",
           "Build q without indexing by ignore_index (-100 is no class): replace ignored targets by 0 "
           "(torch.where), build q, then zero those rows with the mask. With no counted row return zeros, as "
           "torch does: divide by max(n, 1).",
           "grad = (logits.softmax(dim=1) - q) * keep[:, None] / keep.sum().clamp(min=1), with "
           "q = (1 - label_smoothing) * one_hot(target) + label_smoothing / V."),
    mistakes=(
        Mistake("mean over all rows", _ce_grad_over_all_rows,
                "Divide by the number of counted rows, not by all N: F.cross_entropy's mean skips the ignored "
                "rows."),
        Mistake("ignored rows not zeroed", _ce_grad_ignored_rows_kept,
                "A row whose target is ignore_index adds nothing to the loss, so its gradient row is 0: multiply "
                "by the mask."),
        Mistake("smoothing left out", _ce_grad_no_smoothing,
                "label_smoothing changes the target, so it changes the gradient: softmax minus "
                "q = (1 - eps) * onehot + eps / V."),
        Mistake("eps / (V - 1) off the target", _ce_grad_v_minus_one,
                "PyTorch spreads eps over all V classes, the target included: q = (1 - eps) * onehot + eps / V "
                "(eps / (V - 1) on the others and 1 - eps on the target is fairseq's convention)."),
        Mistake("NaN when every row is ignored", _ce_grad_nan_when_all_ignored,
                "With no counted row torch's loss is 0 / 0 = NaN, but its gradient is all zeros: divide by "
                "max(n, 1), or return zeros."),
    ),
)


EXERCISES = [EX_4_1, EX_4_2, EX_4_3, EX_4_4, EX_4_5, EX_4_6]
