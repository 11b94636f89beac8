"""Attempts at chapter 8: the schedule, decay over a run, softmax with temperature, the spike detector,
the capstone loop."""
import math
import statistics

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------ 8.1

def schedule_progress_over_total(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Slip: progress = (step - warmup) / total_steps, so the cosine never reaches min_lr at the end."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / total_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_no_clamp_after_end(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Slip: no min(1, progress): past total_steps the cosine climbs back up."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_cosine_without_pi(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Slip: cos(progress) instead of cos(pi * progress)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(progress))


def schedule_as_cosine_of_half_angle(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Correct: (1 + cos(pi t)) / 2 written as cos(pi t / 2)**2."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * math.cos(math.pi * t / 2) ** 2


# ------------------------------------------------------------------------------------------------ 8.2

def decay_exponential(lrs, weight_decay):
    """Slip: exp(-wd * sum(lr)), the small-step approximation, taken as exact."""
    return math.exp(-weight_decay * sum(lrs))


def decay_precedence(lrs, weight_decay):
    """Slip: (1 - lr) * wd, a precedence slip, instead of 1 - lr * wd."""
    remaining = 1.0
    for lr in lrs:
        remaining *= (1 - lr) * weight_decay
    return remaining


def decay_math_prod(lrs, weight_decay):
    """Correct: math.prod over the steps."""
    return math.prod(1 - lr * weight_decay for lr in lrs)


# ------------------------------------------------------------------------------------------------ 8.3

def temperature_floored(logits, temperature):
    """Slip: avoids T = 0 with max(T, 1e-8), which also lets a negative T through."""
    t = max(temperature, 1e-8)
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.softmax((z - z.max(dim=-1, keepdim=True).values) / t, dim=-1)


def temperature_always_float32(logits, temperature):
    """Slip: computes and returns float32 whatever the input's dtype."""
    if temperature < 0:
        raise ValueError(temperature)
    z = logits.float()
    if temperature == 0:
        top = z == z.max(dim=-1, keepdim=True).values
        return top.float() / top.sum(dim=-1, keepdim=True)
    return torch.softmax((z - z.max(dim=-1, keepdim=True).values) / temperature, dim=-1)


def temperature_no_keepdim_at_zero(logits, temperature):
    """Slip: at T = 0 divides the one-hot of the maxima by a count without keepdim."""
    if temperature < 0:
        raise ValueError(temperature)
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature == 0:
        top = (z == z.max(dim=-1, keepdim=True).values).to(z.dtype)
        return top / top.sum(dim=-1)
    return torch.softmax((z - z.max(dim=-1, keepdim=True).values) / temperature, dim=-1)


def temperature_log_softmax(logits, temperature):
    """Correct: exp of log_softmax of the shifted logits; T = 0 as the limit."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    shifted = z - z.max(dim=-1, keepdim=True).values
    if temperature == 0 or float(torch.tensor(temperature, dtype=z.dtype)) == 0:
        top = (shifted == 0).to(z.dtype)
        return top / top.sum(dim=-1, keepdim=True)
    return torch.log_softmax(shifted / temperature, dim=-1).exp()


# ------------------------------------------------------------------------------------------------ 8.4

def spikes_at_least(norms, window, factor):
    """Slip: >= instead of >, so exactly factor x median counts as a spike."""
    return [i for i in range(window, len(norms)) if norms[i] >= factor * statistics.median(norms[i - window: i])]


def spikes_window_one_late(norms, window, factor):
    """Slip: an off-by-one in the slice: the window ends one step before the previous step."""
    return [i for i in range(window + 1, len(norms))
            if norms[i] > factor * statistics.median(norms[i - window - 1: i - 1])]


def spikes_statistics_median(norms, window, factor):
    """Correct: statistics.median of the window before each step."""
    return [i for i in range(window, len(norms)) if norms[i] > factor * statistics.median(norms[i - window: i])]


# ------------------------------------------------------------------------------------------------ 8.5

def loop_clip_result_unused(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr,
                            warmup_steps, min_lr, clip, evaluate=None, eval_every=0, on_step=None):
    """Slip: measures the norm with pieces.clip but hands AdamW the unclipped p.grad."""
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}
    for step in range(steps):
        batches = [next_batch(step) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()))
                       for x, y in batches) / len(batches)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for g in groups for p in g["params"]]
        _, norm = pieces.clip(grads, clip if clip is not None else math.inf)
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            result.diverged = True
            break
        lr = pieces.schedule(step, max_lr, warmup_steps, steps, min_lr)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    grad = p.grad if p.grad is not None else torch.zeros_like(p)
                    new_p, *moments[id(p)] = pieces.adamw(p.detach(), grad, *moments[id(p)], step + 1, lr, 0.9, 0.95,
                                                          1e-8, group["weight_decay"])
                    p.copy_(new_p)
        result.losses.append(loss)
        result.grad_norms.append(float(norm))
        result.lrs.append(lr)
        if eval_every and (step + 1) % eval_every == 0:
            result.evals[step + 1] = evaluate(model)
        if on_step is not None:
            on_step(step, result)


def loop_no_divergence_check(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr,
                             warmup_steps, min_lr, clip, evaluate=None, eval_every=0, on_step=None):
    """Slip: never checks the loss and the norm, so a diverged run carries on recording NaN."""
    params = [p for g in groups for p in g["params"]]
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    for step in range(steps):
        batches = [next_batch(step) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()))
                       for x, y in batches) / len(batches)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        clipped, norm = pieces.clip(grads, clip if clip is not None else math.inf)
        lr = pieces.schedule(step, max_lr, warmup_steps, steps, min_lr)
        new_grads = iter(clipped)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    new_p, *moments[id(p)] = pieces.adamw(p.detach(), next(new_grads), *moments[id(p)], step + 1, lr,
                                                          0.9, 0.95, 1e-8, group["weight_decay"])
                    p.copy_(new_p)
        result.losses.append(loss)
        result.grad_norms.append(float(norm))
        result.lrs.append(lr)
        if eval_every and (step + 1) % eval_every == 0:
            result.evals[step + 1] = evaluate(model)
        if on_step is not None:
            on_step(step, result)


def loop_adam_step_from_zero(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr,
                             warmup_steps, min_lr, clip, evaluate=None, eval_every=0, on_step=None):
    """Slip: passes the 0-based step to AdamW, whose bias correction wants t = step + 1 (1 - beta^0 = 0)."""
    params = [p for g in groups for p in g["params"]]
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    for step in range(steps):
        batches = [next_batch(step) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()))
                       for x, y in batches) / len(batches)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        clipped, norm = pieces.clip(grads, clip if clip is not None else math.inf)
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            result.diverged = True
            break
        lr = pieces.schedule(step, max_lr, warmup_steps, steps, min_lr)
        new_grads = iter(clipped)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    new_p, *moments[id(p)] = pieces.adamw(p.detach(), next(new_grads), *moments[id(p)], step, lr,
                                                          0.9, 0.95, 1e-8, group["weight_decay"])
                    p.copy_(new_p)
        result.losses.append(loss)
        result.grad_norms.append(float(norm))
        result.lrs.append(lr)
        if eval_every and (step + 1) % eval_every == 0:
            result.evals[step + 1] = evaluate(model)
        if on_step is not None:
            on_step(step, result)


def loop_with_zip_and_lists(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr,
                            warmup_steps, min_lr, clip, evaluate=None, eval_every=0, on_step=None):
    """Correct: a flat list of (parameter, weight decay) zipped with the clipped gradients; moments in two lists."""
    flat = [(p, g["weight_decay"]) for g in groups for p in g["params"]]
    ms = [torch.zeros_like(p) for p, _ in flat]
    vs = [torch.zeros_like(p) for p, _ in flat]
    max_norm = math.inf if clip is None else clip
    for t in range(1, steps + 1):
        batches = [next_batch(t - 1) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)
        with torch.no_grad():
            losses = torch.stack([F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()) for x, y in batches])
        loss = losses.double().mean().item()
        clipped, norm = pieces.clip([torch.zeros_like(p) if p.grad is None else p.grad for p, _ in flat], max_norm)
        norm = float(norm)
        if math.isnan(loss) or math.isinf(loss) or math.isnan(norm) or math.isinf(norm):
            result.diverged = True
            return
        lr = pieces.schedule(t - 1, max_lr, warmup_steps, steps, min_lr)
        with torch.no_grad():
            for i, ((p, wd), g) in enumerate(zip(flat, clipped)):
                new_p, ms[i], vs[i] = pieces.adamw(p.detach(), g, ms[i], vs[i], t, lr, 0.9, 0.95, 1e-8, wd)
                p.copy_(new_p)
        result.losses.append(loss)
        result.grad_norms.append(norm)
        result.lrs.append(lr)
        if eval_every and t % eval_every == 0:
            result.evals[t] = evaluate(model)
        if on_step:
            on_step(t - 1, result)


ATTEMPTS = [
    ("8.1", schedule_progress_over_total, "progress divided by total_steps", ()),
    ("8.1", schedule_no_clamp_after_end, "no clamp after total_steps", ("step 150 of 100",)),
    ("8.1", schedule_cosine_without_pi, "cos without pi", ()),
    ("8.1", schedule_as_cosine_of_half_angle, None, ()),
    ("8.2", decay_exponential, "exponential approximation", ("only approximates the product",)),
    ("8.2", decay_precedence, "(1 - lr) * wd", ()),
    ("8.2", decay_math_prod, None, ()),
    ("8.3", temperature_floored, "max(T, 1e-8) lets T < 0 through", ("must raise ValueError here",)),
    ("8.3", temperature_always_float32, "float32 returned for float64",
     ("expected dtype torch.float64, got torch.float32",)),
    ("8.3", temperature_no_keepdim_at_zero, "count without keepdim at T = 0", ("`return top / top.sum(dim=-1)`",)),
    ("8.3", temperature_log_softmax, None, ()),
    ("8.4", spikes_at_least, ">= instead of >", ("exactly factor x median is not a spike", "got 2 [3, 4]")),
    ("8.4", spikes_window_one_late, "window shifted one step back", ("got 3 [4, 5, 6]",)),
    ("8.4", spikes_statistics_median, None, ()),
    ("8.5", loop_clip_result_unused, "unclipped gradients given to AdamW", ()),
    ("8.5", loop_no_divergence_check, "no stop on a NaN loss",
     ("the run stops (diverged)': losses: expected shape (2,), got (8,)",)),
    ("8.5", loop_adam_step_from_zero, "AdamW's step from 0", ("ZeroDivisionError", "*moments[id(p)], step, lr")),
    ("8.5", loop_with_zip_and_lists, None, ()),
]
