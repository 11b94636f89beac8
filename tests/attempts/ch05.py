"""Attempts at chapter 5: the AdamW step, decay groups, accumulation, Adafactor's moment, the AdamW kernel."""
import math

import torch
import torch.nn.functional as F

from course_utils.runtime import import_triton

triton, tl = import_triton()


# ------------------------------------------------------------------------------------------------ 5.1

def adamw_v_from_g(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Slip: the second moment averages g instead of g**2."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g
    denom = v.sqrt() / math.sqrt(1 - beta2 ** step) + eps
    return p * (1 - lr * weight_decay) - lr / (1 - beta1 ** step) * m / denom, m, v


def adamw_step_from_zero(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Slip: bias corrections with step - 1, as if step counted from 0 (1 - beta**0 = 0 at the first step)."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = v.sqrt() / math.sqrt(1 - beta2 ** (step - 1)) + eps
    return p * (1 - lr * weight_decay) - lr / (1 - beta1 ** (step - 1)) * m / denom, m, v


def adamw_in_place(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Slip: updates the moments in place (mul_/add_), as torch's optimizer does to its state."""
    m.mul_(beta1).add_((1 - beta1) * g)
    v.mul_(beta2).add_((1 - beta2) * g * g)
    denom = v.sqrt() / math.sqrt(1 - beta2 ** step) + eps
    return p * (1 - lr * weight_decay) - lr / (1 - beta1 ** step) * m / denom, m.clone(), v.clone()


def adamw_with_addcdiv(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Correct: lerp for the moments and addcdiv for the step."""
    m = torch.lerp(m, g, 1 - beta1)
    v = torch.lerp(v, g * g, 1 - beta2)
    denom = (v / (1 - beta2 ** step)).sqrt() + eps
    return torch.addcdiv(p * (1 - lr * weight_decay), m, denom, value=-lr / (1 - beta1 ** step)), m, v


# ------------------------------------------------------------------------------------------------ 5.2

def groups_weight_in_name(model, weight_decay):
    """Slip: decays every parameter named "...weight", norm gains and embeddings included."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            (decay if name.endswith("weight") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_tied_twice(model, weight_decay):
    """Slip: walks the modules without remembering which tensors it has seen: a tied weight lands in both groups."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, torch.nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_by_module_type(model, weight_decay):
    """Correct: the Linear weights by identity, minus any that an embedding registered first."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)} - embedded
    params = list(dict.fromkeys(model.parameters()))
    return [{"params": [p for p in params if id(p) in linear], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in linear], "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------------ 5.3

def accumulate_over_all_positions(model, micro_batches):
    """Slip: divides by every position, ignored ones included, instead of the counted tokens."""
    model.zero_grad(set_to_none=True)
    total = sum(labels.numel() for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        logits, _ = model(inputs)
        (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / total).backward()


def accumulate_one_big_batch(model, micro_batches):
    """Slip: concatenates the micro-batches and runs one big batch, which accumulation exists to avoid."""
    model.zero_grad(set_to_none=True)
    inputs = torch.cat([i for i, _ in micro_batches])
    labels = torch.cat([lab for _, lab in micro_batches])
    logits, _ = model(inputs)
    F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()


def accumulate_zeroed_every_micro_batch(model, micro_batches):
    """Slip: zero_grad inside the loop, so only the last micro-batch's gradient remains."""
    total = sum(int((labels != -100).sum()) for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        model.zero_grad(set_to_none=True)
        logits, _ = model(inputs)
        (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / total).backward()


def accumulate_weighted_means(model, micro_batches):
    """Correct: each micro-batch's mean weighted by its share of the counted tokens."""
    model.zero_grad(set_to_none=True)
    counts = [int((labels != -100).sum()) for _, labels in micro_batches]
    for (inputs, labels), count in zip(micro_batches, counts):
        if count == 0:
            continue
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        (loss * count / sum(counts)).backward()


# ------------------------------------------------------------------------------------------------ 5.4

def factored_axes_swapped(grad, row_var, col_var, beta2_t, eps1):
    """Slip: averages over the wrong axes (dim=0 for the rows, dim=1 for the columns)."""
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=0), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=1), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / row_var.mean().clamp(min=eps1)


def factored_sums(grad, row_var, col_var, beta2_t, eps1):
    """Slip: keeps sums, as the paper does, where the contract (and torch) keep means."""
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.sum(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.sum(dim=0), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / row_var.mean().clamp(min=eps1)


def factored_clamp_max(grad, row_var, col_var, beta2_t, eps1):
    """Slip: clamp(max=eps1) where a floor is clamp(min=eps1)."""
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / row_var.mean().clamp(max=eps1)


def factored_explicit_ema(grad, row_var, col_var, beta2_t, eps1):
    """Correct: the moving averages written out, the floor with max()."""
    sq = grad.pow(2)
    row = beta2_t * row_var + (1 - beta2_t) * sq.mean(dim=-1)
    col = beta2_t * col_var + (1 - beta2_t) * sq.mean(dim=-2)
    return row, col, row[:, None] * col[None, :] / max(float(row.mean()), eps1)


# ------------------------------------------------------------------------------------------------ 5.5

@triton.jit
def adamw_kernel_v_correction_not_rooted(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps,
                                         weight_decay, bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    """Slip: divides sqrt(v) by bias_correction2 instead of sqrt(bias_correction2)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    p = tl.load(p_ptr + offsets, mask=mask)
    g = tl.load(g_ptr + offsets, mask=mask)
    m = tl.load(m_ptr + offsets, mask=mask)
    v = tl.load(v_ptr + offsets, mask=mask)
    p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - (lr / bias_correction1) * m / (tl.sqrt(v) / bias_correction2 + eps)
    tl.store(p_ptr + offsets, p, mask=mask)
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(v_ptr + offsets, v, mask=mask)


@triton.jit
def adamw_kernel_m_stored_as_v(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                               bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    """Slip: a copy-pasted store writes m into v_ptr too."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    p = tl.load(p_ptr + offsets, mask=mask)
    g = tl.load(g_ptr + offsets, mask=mask)
    m = tl.load(m_ptr + offsets, mask=mask)
    v = tl.load(v_ptr + offsets, mask=mask)
    p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - (lr / bias_correction1) * m / (tl.sqrt(v) / tl.sqrt(bias_correction2) + eps)
    tl.store(p_ptr + offsets, p, mask=mask)
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(v_ptr + offsets, m, mask=mask)


ATTEMPTS = [
    ("5.1", adamw_v_from_g, "v averages g, not g**2", ("Also wrong: v. Right: m.",)),
    ("5.1", adamw_step_from_zero, "bias corrections with step - 1", ("ZeroDivisionError", "beta1 ** (step - 1)")),
    ("5.1", adamw_in_place, "moments updated in place", ("modified its input `m`",)),
    ("5.1", adamw_with_addcdiv, None, ()),
    ("5.2", groups_weight_in_name, "every '...weight' decayed", ("Norm weights (LayerNorm/RMSNorm gains)",)),
    ("5.2", groups_tied_twice, "tied weight in both groups", ("tok_emb.weight is in more than one group",)),
    ("5.2", groups_by_module_type, None, ()),
    ("5.3", accumulate_over_all_positions, "divided by all positions", ("0.5833 (= 7/12) times the answer",)),
    ("5.3", accumulate_one_big_batch, "one big batch", ("run the micro-batches one at a time",)),
    ("5.3", accumulate_zeroed_every_micro_batch, "zeroed inside the loop",
     ("Zero the gradients once, before the loop",)),
    ("5.3", accumulate_weighted_means, None, ()),
    ("5.4", factored_axes_swapped, "means over the wrong axes", ("sq.mean(dim=0)",)),
    ("5.4", factored_sums, "sums instead of means", ("Every value is 3 times the answer",)),
    ("5.4", factored_clamp_max, "clamp(max=eps1)", ("v_hat: 15 of 15 values differ", "Right: row_var, col_var.")),
    ("5.4", factored_explicit_ema, None, ()),
    ("5.5", adamw_kernel_v_correction_not_rooted, "bias_correction2 without the square root", ()),
    ("5.5", adamw_kernel_m_stored_as_v, "m stored into v", ("Your v is the answer's m.",)),
]
