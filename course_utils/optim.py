"""Optimizers from scratch (chapter 5): Adam/AdamW, weight-decay groups, Adafactor, state sizes.

Each update is a pure function on tensors (new tensors out, inputs untouched), written in the same
order of operations as ``torch.optim`` so that many steps stay within float32 rounding of it. The
chapter's tests run them against ``torch.optim.Adam``, ``AdamW`` and ``Adafactor`` step for step.

Used by chapters 5 and 8.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One step of AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization") on one tensor,
    exactly as torch.optim.AdamW computes it with amsgrad=False; returns the new ``(p, m, v)``.

    p, g, m, v: float tensors of one shape (parameter, gradient, first and second moment; m = v = 0 before
    step 1). step: the number of this update, 1 for the first (Adam's bias correction depends on it). lr,
    beta1, beta2, eps, weight_decay: as torch.optim.AdamW's arguments (eps is added to the square root of the
    bias-corrected second moment). The decay is decoupled: it shrinks p directly and never enters m or v; with
    weight_decay = 0 this is Adam. Inputs are not modified; outputs have the inputs' shape and dtype.
    hint("5.1") gives the formulas, one step per call.
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
    The first holds the ``weight`` of every nn.Linear, except a tensor that an earlier module
    registered first; the second everything else: biases, norm weights (LayerNorm/RMSNorm),
    embeddings. Every parameter appears exactly once, also when two modules share one tensor: the
    module that registered it first decides, so a tied LM head (the embedding's tensor) goes into
    the second group with the embedding.
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
    """Adafactor's factored second moment for a matrix gradient (Shazeer & Stern 2018, "Adafactor: Adaptive
    Learning Rates with Sublinear Memory Cost", Algorithm 4), as torch.optim.Adafactor keeps it.

    grad: (n, m). row_var: (n,), a running mean over columns of grad**2; col_var: (m,), a running mean over
    rows of grad**2 (means, as torch keeps them, where the paper keeps sums). beta2_t: this step's decay, the
    weight of the *old* statistics (torch: 1 - step^-0.8, so step 1 gives 0: no memory). eps1: a floor for
    the normaliser. Returns new ``(row_var, col_var, v_hat)``: the updated running means, and v_hat (n, m),
    the rank-1 estimate of the second moment built from them, normalised by the mean of row_var floored at
    eps1 (so that a rank-1 grad**2 is reproduced exactly). It keeps n + m numbers instead of n * m. Inputs
    are not modified. hint("5.4") gives the formulas, one step per call.
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


# ------------------------------------------------------------ Adafactor against AdamW, over seeds and a grid

ADAFACTOR_GRID = {  # the grid the notebook's fact check states its verdicts for
    "optimizers": ("adamw", "adafactor"),
    "inits": ("fixed 0.02", "fan-in"),  # names of gradflow.INITS, the course's one vocabulary of initialisations
    # per optimizer, each reaching 10 to 33x past its own best rate, so that "warmup does not help" is tested where
    # warmup could help: AdamW's usual 3e-3 and torch.optim.Adafactor's default 1e-2 (the paper's cap) are on both
    "lrs": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "adafactor": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)},
    "warmups": (0, 30),
    "seeds": (0, 1, 2),
    "steps": 120,
    "depth": 2,
}
ADAFACTOR_GRID_FILE = "adafactor_grid.json"
ADAFACTOR_CURVES_FILE = "adafactor_grid_curves.json"  # the same runs' per-step losses, rounded to 4 decimals


def _grid_key(optimizer: str, init: str, lr: float, warmup: int) -> str:
    return f"{optimizer}|{init}|{lr:g}|{warmup}"


def _grid_keys() -> list[tuple[str, str, float, int]]:
    g = ADAFACTOR_GRID
    return [(o, i, lr, w) for o in g["optimizers"] for i in g["inits"] for lr in g["lrs"][o] for w in g["warmups"]]


def adafactor_grid(*, recompute: bool = False, progress: bool = False,
                   curves: bool = False) -> dict[tuple[str, str, float, int], list]:
    """Adafactor and AdamW on chapter 1's Pre-LN stack (2 blocks, Markov chain, 120 steps) over ADAFACTOR_GRID:
    {(optimizer, init, lr, warmup): [mean training loss of the last 20 steps, one per seed]} (NaN if diverged).
    ``curves=True``: the training loss at every step instead, ``[[loss per step] per seed]`` (a run that diverged
    stops before its first non-finite loss, so its list is shorter than ``steps``).

    132 runs take over a minute on one CPU core, more than a notebook may spend, so the results are stored in
    ``data_files/adafactor_grid.json`` (final losses) and ``adafactor_grid_curves.json`` (per-step losses, 4
    decimals) and read from there; ``recompute=True`` runs the grid again (tests/test_claims_ch05.py does, and
    checks the stored files against it)."""
    import json
    from pathlib import Path

    from course_utils.gradflow import init_fields, stack_config
    from course_utils.training import train_markov_lm

    path = Path(__file__).parent / "data_files" / (ADAFACTOR_CURVES_FILE if curves else ADAFACTOR_GRID_FILE)
    g = ADAFACTOR_GRID
    if not recompute and path.exists():
        stored = json.loads(path.read_text())
        return {key: stored[_grid_key(*key)] for key in _grid_keys()}
    out = {}
    for optimizer, init, lr, warmup in _grid_keys():
        config = stack_config("pre", g["depth"], **init_fields(init))
        runs = [train_markov_lm(config, steps=g["steps"], lr=lr, warmup_steps=warmup, seed=seed, progress=False,
                                optimizer=optimizer) for seed in g["seeds"]]
        out[(optimizer, init, lr, warmup)] = runs
        if progress:
            print(optimizer, init, lr, warmup, [round(r.final_loss, 3) for r in runs], flush=True)
    if curves:
        return {key: [r.losses for r in runs] for key, runs in out.items()}
    return {key: [float("nan") if r.diverged else r.final_loss for r in runs] for key, runs in out.items()}


def grid_finals(curves: dict) -> dict:
    """The final losses (mean of the last 20 steps; NaN for a run shorter than ``steps``) of :func:`adafactor_grid`'s
    per-step curves."""
    steps = ADAFACTOR_GRID["steps"]
    return {key: [sum(c[-20:]) / 20 if len(c) == steps else float("nan") for c in runs] for key, runs in curves.items()}


def loss_rise(curve: list[float]) -> float:
    """How far a run's per-step training loss climbs above its first step's: max over later steps of
    loss_t - loss_1 (> 0: a spike above where training started; noise alone moves the loss by about 0.1 here)."""
    return max(curve[1:]) - curve[0]


def write_adafactor_grid() -> None:
    """Recompute the grid and store it (maintainers: after changing the model, the data or the training loop)."""
    import json
    from pathlib import Path

    curves = adafactor_grid(recompute=True, progress=True, curves=True)
    folder = Path(__file__).parent / "data_files"
    finals = {_grid_key(*key): values for key, values in grid_finals(curves).items()}
    (folder / ADAFACTOR_GRID_FILE).write_text(json.dumps(finals, indent=1) + "\n")
    rounded = {_grid_key(*key): [[round(x, 4) for x in c] for c in runs] for key, runs in curves.items()}
    (folder / ADAFACTOR_CURVES_FILE).write_text(json.dumps(rounded, separators=(",", ":")) + "\n")


def adam_step_on_noise(beta2: float, checkpoints=(1, 10, 100, 300), *, size: int = 10_000, seed: int = 0,
                       beta1: float = 0.9) -> dict[int, float]:
    """Mean |update| / lr of torch.optim.Adam fed pure N(0, 1) gradients (no signal), at the given steps.

    At step 1 every coordinate moves by lr exactly; afterwards m averages noise towards 0 while v does not, so
    the step falls well below lr: "Adam moves every weight by about lr" holds for consistent gradients only."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.zeros(size, requires_grad=True)
    lr = 1.0
    opt = torch.optim.Adam([p], lr=lr, betas=(beta1, beta2))
    out = {}
    for step in range(1, max(checkpoints) + 1):
        before = p.detach().clone()
        p.grad = torch.randn(size, generator=gen)
        opt.step()
        if step in checkpoints:
            out[step] = float((p.detach() - before).abs().mean() / lr)
    return out


def figure_adafactor_grid(grid: dict | None = None):
    """One panel per init: final loss against the learning rate for AdamW and Adafactor, with and without warmup;
    the markers are the mean over the seeds, the bars span the smallest to the largest seed."""
    from course_utils.plotting import OKABE_ITO, log_scale, subplots

    grid = adafactor_grid() if grid is None else grid
    g = ADAFACTOR_GRID
    fig, axes = subplots(len(g["inits"]), width=10, sharey=True)
    styles = {("adamw", 0): ("blue", "-", "o"), ("adamw", 30): ("sky blue", "--", "o"),
              ("adafactor", 0): ("vermillion", "-", "s"), ("adafactor", 30): ("orange", "--", "s")}
    for ax, init in zip(axes, g["inits"]):
        for (optimizer, warmup), (colour, linestyle, marker) in styles.items():
            runs = [grid[(optimizer, init, lr, warmup)] for lr in g["lrs"][optimizer]]
            mean = [sum(r) / len(r) for r in runs]
            low = [m - min(r) for m, r in zip(mean, runs)]
            high = [max(r) - m for m, r in zip(mean, runs)]
            ax.errorbar(g["lrs"][optimizer], mean, yerr=[low, high], color=OKABE_ITO[colour], linestyle=linestyle,
                        marker=marker, markersize=4, capsize=3, label=f"{optimizer}, warmup {warmup}")
        log_scale(ax, "x")
        ax.set(xlabel="learning rate", title=f"init {init}: {len(g['seeds'])} seeds, min to max")
    axes[0].set_ylabel(f"mean loss of the last 20 of {g['steps']} steps")
    axes[-1].legend(loc="upper left")
    return fig


def figure_adafactor_curves(curves: dict | None = None, cells=(("adamw", 0.1), ("adafactor", 1.0), ("adafactor", 0.3)),
                            warmup: int = 0):
    """One panel per init: the per-step training loss of the grid's runs at the given (optimizer, lr) cells, every
    seed drawn, against the chain's unigram entropy and its entropy rate (the best a model can reach)."""
    from course_utils.data import MarkovChain
    from course_utils.plotting import OKABE_ITO, subplots

    curves = adafactor_grid(curves=True) if curves is None else curves
    g = ADAFACTOR_GRID
    chain = MarkovChain(32)  # train_markov_lm's chain for the grid's 32-token stack
    pi = chain.stationary()
    unigram = float(-(pi * pi.log()).sum())
    colours = ("blue", "vermillion", "orange", "bluish green")
    fig, axes = subplots(len(g["inits"]), width=10, sharey=True)
    for ax, init in zip(axes, g["inits"]):
        for (optimizer, lr), colour in zip(cells, colours):
            for seed, curve in zip(g["seeds"], curves[(optimizer, init, lr, warmup)]):
                ax.plot(range(1, len(curve) + 1), curve, color=OKABE_ITO[colour], lw=1,
                        label=f"{optimizer}, lr {lr:g}" if seed == g["seeds"][0] else None)
        ax.axhline(unigram, color=OKABE_ITO["grey"], ls="--", lw=1, label=f"unigram entropy {unigram:.2f}")
        ax.axhline(chain.entropy_rate(), color=OKABE_ITO["black"], ls=":", lw=1,
                   label=f"entropy rate {chain.entropy_rate():.2f}")
        ax.set(xlabel="step", title=f"init {init}, warmup {warmup}: every seed")
    axes[0].set_ylabel("training loss (nats)")
    axes[-1].legend(loc="upper right", fontsize=8)
    return fig


def rare_token_steps(beta2: float, quiet: int, *, size: int = 1000, seed: int = 0, history: int = 200,
                     after: int = 100, beta1: float = 0.9, eps: float = 1e-8) -> tuple[float, float]:
    """A rare token's embedding row under Adam (lr 1, torch.optim.Adam's rule): ``history`` steps of N(0, 1)
    gradients, then ``quiet`` steps of zero gradient (the token absent), then one gradient of 1 (it appears), then
    ``after`` zero steps. Returns (mean |step| / lr of the step where it appears, mean |total move| / lr over that
    step and the ``after`` steps that follow), over ``size`` coordinates. The first step approaches
    (1-b1)/sqrt(1-b2) once v has decayed; momentum then keeps moving the row, k steps later by (b1/sqrt(b2))^k
    times the first step. A zero gradient only multiplies m by b1 and v by b2, so the quiet spell is one
    multiplication (tests/test_optim.py checks this against torch.optim.Adam)."""
    gen = torch.Generator().manual_seed(seed)
    m, v = torch.zeros(size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64)
    p, t = torch.zeros(size, dtype=torch.float64), 0

    def step(g):
        nonlocal m, v, p, t
        t += 1
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        p = p - (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps)

    for _ in range(history):
        step(torch.randn(size, generator=gen).double())
    m, v, t = m * beta1 ** quiet, v * beta2 ** quiet, t + quiet  # the quiet spell moves p by m_hat / sqrt(v_hat)
    start = p.clone()
    step(torch.ones(size, dtype=torch.float64))
    first = float((p - start).abs().mean())
    for _ in range(after):
        step(torch.zeros(size, dtype=torch.float64))
    return first, float((p - start).abs().mean())


def sgd_momentum_decay(*, lr: float = 1e-2, weight_decay: float = 0.1, momentum: float = 0.9, steps: int = 400,
                       size: int = 256, seed: int = 0, noise: float = 0.01) -> tuple[float, float]:
    """SGD with momentum on parameters starting at 1 with zero-mean N(0, noise^2) gradients: mean parameter after
    ``steps`` with L2 (torch.optim.SGD's weight_decay, which goes through the momentum buffer) and with decoupled
    decay (SGDW, Loshchilov & Hutter 2019 Algorithm 1: theta (1 - lr wd) outside the buffer). ``noise=0`` gives the
    noise-free recursions, i.e. what the decay alone does."""
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(size, generator=gen) * noise for _ in range(steps)]
    p = torch.nn.Parameter(torch.ones(size))
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
    for g in noise:
        p.grad = g.clone()
        opt.step()
    q, buf = torch.ones(size), torch.zeros(size)
    for g in noise:
        buf = momentum * buf + g
        q = q * (1 - lr * weight_decay) - lr * buf
    return float(p.detach().mean()), float(q.mean())


def spike_step(beta2: float, spike: float, *, steady: int = 3000, beta1: float = 0.9) -> float:
    """|step| / lr of Adam (bias-corrected, eps 0) at one gradient of size ``spike`` after ``steady`` steps of a
    constant gradient 1. A huge spike steps by about (1-b1)/sqrt(1-b2); no spike steps by more than about
    max(1, (1-b1)/sqrt(1-b2)) (Kingma & Ba 2015, section 2.1)."""
    m = v = 0.0
    for _ in range(steady):
        m, v = beta1 * m + (1 - beta1), beta2 * v + (1 - beta2)
    t = steady + 1
    m, v = beta1 * m + (1 - beta1) * spike, beta2 * v + (1 - beta2) * spike * spike
    return (m / (1 - beta1 ** t)) / math.sqrt(v / (1 - beta2 ** t))


def jump_response(beta2: float, jump: int, *, after: int = 200, factor: float = 10.0,
                  beta1: float = 0.9) -> list[float]:
    """|step| / lr of Adam (bias-corrected, eps 0) at each of the ``after`` steps that follow a jump of the gradient:
    a constant gradient 1 for ``jump`` steps, then ``factor``. An early jump (small ``jump``) still sees the bias
    correction 1 / (1 - beta2^t) enlarge each new g^2's weight in v-hat, which a late one (1 - beta2^t ~ 1) does not."""
    m = v = 0.0
    steps = []
    for t in range(1, jump + after + 1):
        g = 1.0 if t <= jump else factor
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        if t > jump:
            steps.append((m / (1 - beta1 ** t)) / math.sqrt(v / (1 - beta2 ** t)))
    return steps
