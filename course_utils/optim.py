"""Optimizers from scratch (chapter 5): Adam/AdamW, weight-decay groups, Adafactor, state sizes.

Each update is a pure function on tensors (new tensors out, inputs untouched), written in the same
order of operations as ``torch.optim`` so that many steps stay within float32 rounding of it. The
chapter's tests run them against ``torch.optim.Adam``, ``AdamW`` and ``Adafactor`` step for step.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step on one tensor, as torch.optim.AdamW; returns new ``(p, m, v)``.

    p, g, m, v: tensors of one shape (parameter, gradient, first and second moment; m = v = 0
    before step 1). step: the step number, 1 for the first update (bias correction uses it).
    Decoupled decay: p is multiplied by (1 - lr * weight_decay) *before* the Adam update, so the
    decay never passes through m or v. With weight_decay = 0 this is Adam. Inputs are not modified.

        m = beta1 m + (1 - beta1) g             v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^step)            v_hat = v / (1 - beta2^step)
        p = p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)
    """
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = v.sqrt() / math.sqrt(bias_correction2) + eps
    p = p * (1 - lr * weight_decay) - (lr / bias_correction1) * m / denom
    return p, m, v


def adam_l2_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One step of Adam with L2 regularisation, as torch.optim.Adam(weight_decay=...): the decay
    term weight_decay * p is added to the *gradient*, so it is rescaled by 1/sqrt(v) like the rest."""
    return adamw_update(p, g + weight_decay * p, m, v, step, lr, beta1, beta2, eps, 0.0)


def run_from_scratch(update, params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]], **hyper):
    """Apply ``update`` for each step's gradients; returns the parameters after every step.

    params: initial tensors; grads_per_step[t][i]: gradient of parameter i at step t + 1.
    """
    p = [t.detach().clone() for t in params]
    m = [torch.zeros_like(t) for t in p]
    v = [torch.zeros_like(t) for t in p]
    history = []
    for step, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            p[i], m[i], v[i] = update(p[i], g, m[i], v[i], step, **hyper)
        history.append([t.clone() for t in p])
    return history


def run_torch(optimizer_class, params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]], **kwargs):
    """The same as :func:`run_from_scratch` with a ``torch.optim`` optimizer."""
    p = [t.detach().clone().requires_grad_() for t in params]
    opt = optimizer_class(p, **kwargs)
    history = []
    for grads in grads_per_step:
        for t, g in zip(p, grads):
            t.grad = g.clone()
        opt.step()
        history.append([t.detach().clone() for t in p])
    return history


# ------------------------------------------------------------------------- Adam + L2 vs AdamW

def decay_comparison(lr: float, weight_decay: float, *, steps: int = 400, size: int = 256,
                     grad_scales: tuple[float, float] = (10.0, 1e-3), seed: int = 0, statistic: str = "rms") -> dict:
    """RMS (or mean) of two parameter sets over time under Adam + L2 and under AdamW (torch's own optimizers).

    Both sets start at 1 and receive pure-noise gradients (zero mean: the loss does not care where
    they sit), with standard deviation ``grad_scales`` = (large, small). Only the decay moves them on
    average, so the curves show how strongly each optimizer decays a parameter with large or small
    gradients. Returns {"Adam + L2": (large, small), "AdamW": (...)}, each a list per step of the
    parameters' RMS (``statistic="rms"``, which includes the random walk of the noisy steps) or
    mean (``"mean"``: the walk averages out, what is left is the decay).
    """
    reduce = {"rms": lambda t: float(t.pow(2).mean().sqrt()), "mean": lambda t: float(t.mean())}[statistic]
    g = torch.Generator().manual_seed(seed)
    noise = [[torch.randn(size, generator=g) * s for s in grad_scales] for _ in range(steps)]
    start = [torch.ones(size) for _ in grad_scales]
    out = {}
    for name, cls in (("Adam + L2", torch.optim.Adam), ("AdamW", torch.optim.AdamW)):
        history = run_torch(cls, start, noise, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
        out[name] = tuple([reduce(step[i]) for step in history] for i in range(len(grad_scales)))
    return out


# ------------------------------------------------------------------------------ decay groups

def weight_decay_groups(model, weight_decay):
    """Two parameter groups for torch.optim.AdamW: decay the weights of Linear layers, nothing else.

    Returns [{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}].
    The first holds the ``weight`` of every nn.Linear; the second everything else: biases, norm
    weights (LayerNorm/RMSNorm), embeddings. Every parameter appears exactly once, also when two
    modules share one tensor (a tied LM head is the embedding: it follows the embedding's rule,
    because the module that registered it first is the embedding).
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            (decay if isinstance(module, torch.nn.Linear) and name == "weight" else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


_UNSTATED = {"weight_decay": ": torch.optim.AdamW would give it its default, 0.01; say 0.0 (or the value) explicitly",
             "lr": ": torch.optim would give it the optimizer's default learning rate; state it"}


def value_per_parameter(model: nn.Module, groups, key: str) -> dict[str, float]:
    """The ``key`` (``"lr"``, ``"weight_decay"``) that each of ``model``'s parameters gets from the optimizer
    ``groups``, by parameter name in the model's order (a tied tensor under its first name).

    ``groups`` as torch.optim takes them: a list of dicts whose ``"params"`` is a tensor or an iterable of
    tensors. Raises ValueError when a group is not such a dict or does not state ``key``, or when a parameter
    is missing, appears twice, or is not the model's. The one validator of parameter groups in the course.
    """
    names = {}
    for name, param in model.named_parameters():  # tied tensors: the first name only
        names.setdefault(id(param), name)
    if not isinstance(groups, (list, tuple)):
        raise ValueError(f"expected a list of dicts with 'params' and '{key}', got {type(groups).__name__}")
    values = {}
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise ValueError(f"group {i} is a {type(group).__name__}, not a dict with 'params' and '{key}'")
        if "params" not in group or key not in group:
            missing = [k for k in ("params", key) if k not in group]
            why = _UNSTATED.get(key, "") if key in missing else ""
            raise ValueError(f"group {i} has no {' and no '.join(repr(k) for k in missing)} "
                             f"(its keys: {sorted(map(str, group))}){why}")
        params = group["params"]
        for param in [params] if isinstance(params, torch.Tensor) else params:  # torch.optim accepts both
            if id(param) not in names:
                raise ValueError(f"group {i} holds a tensor that is not one of the model's parameters")
            if names[id(param)] in values:
                raise ValueError(f"parameter {names[id(param)]} is in more than one group "
                                 "(torch.optim refuses that; a tied weight is one tensor)")
            values[names[id(param)]] = float(group[key])
    missing = [n for n in names.values() if n not in values]
    if missing:
        raise ValueError(f"parameter {missing[0]} is in no group ({len(missing)} missing): it would never be trained")
    return {n: values[n] for n in names.values()}


def describe_groups(model: nn.Module, groups: list[dict]) -> tuple[str, ...]:
    """One line per parameter, ``"name: weight_decay w"``, sorted by name (for checking and printing).
    Raises ValueError as :func:`value_per_parameter` does."""
    return tuple(sorted(f"{name}: weight_decay {wd:g}"
                        for name, wd in value_per_parameter(model, groups, "weight_decay").items()))


# --------------------------------------------------------------------------------- Adafactor

def factored_second_moment(grad, row_var, col_var, beta2_t, eps1):
    """Adafactor's second moment for a matrix gradient, as torch.optim.Adafactor keeps it.

    grad: (n, m); row_var: (n,) running mean over columns of g^2; col_var: (m,) running mean over
    rows of g^2; beta2_t: this step's decay (torch: 1 - step^-0.8; step 1 gives 0, i.e. no memory).
    Returns new ``(row_var, col_var, v_hat)``:

        row_var = beta2_t row_var + (1 - beta2_t) mean_j g_ij^2
        col_var = beta2_t col_var + (1 - beta2_t) mean_i g_ij^2
        v_hat   = outer(row_var, col_var) / max(mean(row_var), eps1)       (n, m)

    The rank-1 estimate keeps n + m numbers instead of n * m. Inputs are not modified.
    """
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), 1 - beta2_t)
    v_hat = torch.outer(row_var, col_var) / row_var.mean().clamp(min=eps1)
    return row_var, col_var, v_hat


def adafactor_update(p, g, state: dict, step: int, *, lr: float = 1e-2, beta2_decay: float = -0.8,
                     eps1: float | None = None, eps2: float = 1e-3, d: float = 1.0, weight_decay: float = 0.0,
                     second_moment=factored_second_moment):
    """One step of torch.optim.Adafactor on one tensor (no first moment); returns ``(p, state)``.

    state: {} before step 1, then {"row_var", "col_var"} for a matrix or {"variance"} for a vector.
    Relative step size: alpha = max(eps2, RMS(p)) * min(lr, 1/sqrt(step)); the update
    g / sqrt(v_hat) is clipped to RMS <= d; decoupled decay multiplies p by (1 - lr * weight_decay).
    """
    eps1 = torch.finfo(p.dtype).eps if eps1 is None else eps1
    beta2_t = 1 - step ** beta2_decay
    alpha = max(eps2, p.norm().item() / math.sqrt(p.numel())) * min(lr, 1 / math.sqrt(step))
    p = p * (1 - lr * weight_decay)
    if g.dim() == 2:
        row = state.get("row_var", torch.zeros(g.shape[0], dtype=g.dtype))
        col = state.get("col_var", torch.zeros(g.shape[1], dtype=g.dtype))
        row, col, v_hat = second_moment(g, row, col, beta2_t, eps1)
        state = {"row_var": row, "col_var": col}
    elif g.dim() <= 1:
        v_hat = torch.lerp(state.get("variance", torch.zeros_like(g)), g * g, 1 - beta2_t)
        state = {"variance": v_hat}
    else:
        raise ValueError("this from-scratch Adafactor handles vectors and matrices only")
    update = g * v_hat.clamp(min=eps1 * eps1).rsqrt()
    clip = max(1.0, update.norm().item() / (math.sqrt(update.numel()) * d))
    return p - (alpha / clip) * update, state


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in ``optimizer.state`` (every tensor, step counters included), after a step."""
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def figure_decay_comparison(lr: float = 1e-2, weight_decay: float = 0.1, steps: int = 400):
    """Two panels, Adam + L2 and AdamW: RMS of the large- and small-gradient parameters per step."""
    from course_utils.plotting import series, subplots

    runs = decay_comparison(lr, weight_decay, steps=steps)
    fig, axes = subplots(2, width=10, sharey=True)
    for ax, (name, (large, small)) in zip(axes, runs.items()):
        ax.plot(large, **series("post", markevery=40), label="large gradients (std 10)")
        ax.plot(small, **series("pre", markevery=40), label="small gradients (std 1e-3)")
        ax.plot([(1 - lr * weight_decay) ** t for t in range(1, steps + 1)], **series("reference"),
                lw=1, label="(1 − lr·wd)^t")
        ax.set(xlabel="step", title=f"{name}: lr {lr:.2g}, wd {weight_decay:.2g}", ylim=(0, 1.1))
    axes[0].set_ylabel("parameter RMS (starts at 1)")
    axes[1].legend(loc="lower left")
    return fig


def adafactor_against_adam(lrs=(3e-3, 3e-2), warmups=(0, 30), *, steps: int = 120, depth: int = 2,
                           seed: int = 0) -> dict[tuple[str, float, int], float]:
    """Adafactor (torch.optim.Adafactor) and AdamW on the same model and data: chapter 1's Pre-LN stack of
    ``depth`` blocks on the Markov chain, for each learning rate and warmup length. Returns
    {(optimizer, lr, warmup): mean training loss of the last 20 steps} (NaN if the run diverged)."""
    from course_utils.gradflow import stack_config
    from course_utils.training import train_markov_lm

    out = {}
    for optimizer in ("adamw", "adafactor"):
        for lr in lrs:
            for warmup in warmups:
                run = train_markov_lm(stack_config("pre", depth), steps=steps, lr=lr, warmup_steps=warmup, seed=seed,
                                      progress=False, optimizer=optimizer)
                out[(optimizer, lr, warmup)] = float("nan") if run.diverged else run.final_loss
    return out
