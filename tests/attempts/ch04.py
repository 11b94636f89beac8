"""Attempts at chapter 4: cross-entropy, label smoothing, loss masks, the masked mean, the loss kernel, the
loss's gradient."""
import torch
import torch.nn.functional as F

from course_utils.runtime import import_triton

triton, tl = import_triton()


# ------------------------------------------------------------------------------------------------ 4.1

def ce_index_with_target_only(logits, target):
    """Slip: logits[:, target] picks every target's column for every row (an (N, N) matrix), not one per row."""
    return (torch.logsumexp(logits, dim=1) - logits[:, target]).mean()


def ce_log_softmax_over_rows(logits, target):
    """Slip: log_softmax over dim 0 (the batch) instead of the vocabulary."""
    return -F.log_softmax(logits, dim=0).gather(1, target[:, None]).mean()


def ce_one_hot(logits, target):
    """Correct: log_softmax against a one-hot target."""
    return -(F.log_softmax(logits, dim=-1) * F.one_hot(target, logits.shape[-1])).sum(dim=-1).mean()


# ------------------------------------------------------------------------------------------------ 4.2

def ls_sum_over_classes(logits, target, eps):
    """Slip: the uniform term sums -log p over the V classes instead of averaging."""
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    return ((1 - eps) * nll - eps * log_p.sum(dim=1)).mean()


def ls_eps_ignored(logits, target, eps):
    """Slip: plain cross-entropy, the smoothing argument unused."""
    return F.cross_entropy(logits, target)


def ls_functional(logits, target, eps):
    """Correct: PyTorch's own label smoothing."""
    return F.cross_entropy(logits, target, label_smoothing=eps)


# ------------------------------------------------------------------------------------------------ 4.3

def labels_shifted_here(ids, roles):
    """Slip: shifts the labels for next-token prediction here, which the loss does later."""
    keep = torch.tensor([role == "assistant" for role in roles], dtype=torch.bool)
    labels = torch.where(keep, ids, torch.full_like(ids, -100))
    return torch.cat([labels[1:], torch.tensor([-100])])


def labels_masked_with_zero(ids, roles):
    """Slip: masks with 0 (a real token id) instead of -100."""
    keep = torch.tensor([role == "assistant" for role in roles], dtype=torch.bool)
    return torch.where(keep, ids, torch.zeros_like(ids))


def labels_in_place(ids, roles):
    """Slip: writes -100 into the caller's ids."""
    keep = torch.tensor([role == "assistant" for role in roles], dtype=torch.bool)
    ids[~keep] = -100
    return ids


def labels_masked_fill(ids, roles):
    """Correct: masked_fill with the complement of the assistant mask."""
    assistant = torch.tensor([r == "assistant" for r in roles])
    return ids.masked_fill(~assistant, -100)


# ------------------------------------------------------------------------------------------------ 4.4

def masked_mean_clamped_count(logits, labels):
    """Slip: clamps the count to at least 1, so an all-ignored batch gives 0 instead of NaN."""
    keep = labels != -100
    safe = torch.where(keep, labels, torch.zeros_like(labels))
    per_token = torch.logsumexp(logits, dim=1) - logits.gather(1, safe[:, None])[:, 0]
    return (per_token * keep).sum() / keep.sum().clamp(min=1)


def masked_mean_gather_minus_100(logits, labels):
    """Slip: gathers with the raw labels, -100 included."""
    keep = labels != -100
    per_token = torch.logsumexp(logits, dim=1) - logits.gather(1, labels[:, None])[:, 0]
    return (per_token * keep).sum() / keep.sum()


def masked_mean_boolean_index(logits, labels):
    """Correct: select the counted rows, then take an ordinary mean (NaN for none)."""
    keep = labels != -100
    return F.cross_entropy(logits[keep], labels[keep]) if keep.any() else torch.tensor(float("nan"))


# ------------------------------------------------------------------------------------------------ 4.5

@triton.jit
def ce_kernel_max_not_added_back(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                                 BLOCK: tl.constexpr):
    """Slip: subtracts the row max before exp but forgets to add it back to the log."""
    row = tl.program_id(0)
    target = tl.load(target_ptr + row)
    if target == ignore_index:
        tl.store(loss_ptr + row, 0.0)
    else:
        cols = tl.arange(0, BLOCK)
        z = tl.load(logits_ptr + row * row_stride + cols, mask=cols < n_vocab, other=-float("inf")).to(tl.float32)
        m = tl.max(z, axis=0)
        lse = tl.log(tl.sum(tl.exp(z - m), axis=0))
        z_target = tl.load(logits_ptr + row * row_stride + target).to(tl.float32)
        tl.store(loss_ptr + row, lse - z_target)


@triton.jit
def ce_kernel_n_vocab_as_stride(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                                BLOCK: tl.constexpr):
    """Slip: finds row i at i * n_vocab, as if the rows were packed, instead of i * row_stride."""
    row = tl.program_id(0)
    target = tl.load(target_ptr + row)
    if target == ignore_index:
        tl.store(loss_ptr + row, 0.0)
    else:
        cols = tl.arange(0, BLOCK)
        z = tl.load(logits_ptr + row * n_vocab + cols, mask=cols < n_vocab, other=-float("inf")).to(tl.float32)
        m = tl.max(z, axis=0)
        lse = m + tl.log(tl.sum(tl.exp(z - m), axis=0))
        z_target = tl.load(logits_ptr + row * n_vocab + target).to(tl.float32)
        tl.store(loss_ptr + row, lse - z_target)


# ------------------------------------------------------------------------------------------------ 4.6

def ce_grad_target_minus_softmax(logits, target, label_smoothing=0.0, ignore_index=-100):
    """Slip: q - softmax, the sign of the gradient flipped (the direction of descent, not of the gradient)."""
    keep = target != ignore_index
    n_classes = logits.shape[1]
    safe = torch.where(keep, target, torch.zeros_like(target))
    q = (1 - label_smoothing) * F.one_hot(safe, n_classes).to(logits.dtype) + label_smoothing / n_classes
    return (q - torch.softmax(logits, dim=1)) * keep[:, None] / keep.sum().clamp(min=1)


def ce_grad_one_hot_of_raw_target(logits, target, label_smoothing=0.0, ignore_index=-100):
    """Slip: F.one_hot of the raw targets, -100 included, before masking the ignored rows."""
    keep = target != ignore_index
    n_classes = logits.shape[1]
    q = (1 - label_smoothing) * F.one_hot(target, n_classes).to(logits.dtype) + label_smoothing / n_classes
    return (torch.softmax(logits, dim=1) - q) * keep[:, None] / keep.sum().clamp(min=1)


def ce_grad_exp_unshifted(logits, target, label_smoothing=0.0, ignore_index=-100):
    """Slip: the softmax as exp(z) / sum(exp(z)) without subtracting the row max, which overflows."""
    keep = target != ignore_index
    n_classes = logits.shape[1]
    safe = torch.where(keep, target, torch.zeros_like(target))
    q = (1 - label_smoothing) * F.one_hot(safe, n_classes).to(logits.dtype) + label_smoothing / n_classes
    e = logits.exp()
    return (e / e.sum(dim=1, keepdim=True) - q) * keep[:, None] / keep.sum().clamp(min=1)


def ce_grad_scatter_on_counted_rows(logits, target, label_smoothing=0.0, ignore_index=-100):
    """Correct: the counted rows only, exp(z - logsumexp(z)) minus the smoothed target put in with scatter_add_."""
    grad = torch.zeros_like(logits)
    keep = target != ignore_index
    n = int(keep.sum())
    if n == 0:
        return grad
    z, t = logits[keep], target[keep]
    p = (z - torch.logsumexp(z, dim=1, keepdim=True)).exp() - label_smoothing / z.shape[1]
    p.scatter_add_(1, t[:, None], torch.full((n, 1), -(1 - label_smoothing), dtype=z.dtype))
    grad[keep] = p / n
    return grad


ATTEMPTS = [
    ("4.1", ce_index_with_target_only, "logits[:, target] instead of one entry per row", ("logits[:, target] takes",)),
    ("4.1", ce_log_softmax_over_rows, "log_softmax over the batch", ()),
    ("4.1", ce_one_hot, None, ()),
    ("4.2", ls_sum_over_classes, "uniform term summed over classes", ("the mean over the V classes, not the sum",)),
    ("4.2", ls_eps_ignored, "eps ignored", ()),
    ("4.2", ls_functional, None, ()),
    ("4.3", labels_shifted_here, "labels shifted by one", ("shifted by one position along dimension 0",)),
    ("4.3", labels_masked_with_zero, "masked with 0, not -100", ("the answer has -100 and you have 0",)),
    ("4.3", labels_in_place, "ids modified in place", ("modified its input `ids`",)),
    ("4.3", labels_masked_fill, None, ()),
    ("4.4", masked_mean_clamped_count, "0 instead of NaN when nothing counts",
     ("case 'all ignored': expected nan, got 0",)),
    ("4.4", masked_mean_gather_minus_100, "gather with -100", ("index -100 is out of bounds",)),
    ("4.4", masked_mean_boolean_index, None, ()),
    ("4.5", ce_kernel_max_not_added_back, "max not added back", ()),
    ("4.5", ce_kernel_n_vocab_as_stride, "n_vocab used as the row stride", ("not from the number of columns",)),
    ("4.6", ce_grad_target_minus_softmax, "q - softmax: sign flipped", ("the answer with its sign flipped",)),
    ("4.6", ce_grad_one_hot_of_raw_target, "one_hot of -100",
     ("Class values must be non-negative", "F.one_hot(target, n_classes)")),
    ("4.6", ce_grad_exp_unshifted, "softmax without the max shift", ("case 'huge logits (~1e4)': NaN",)),
    ("4.6", ce_grad_scatter_on_counted_rows, None, ()),
]
