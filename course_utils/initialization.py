"""Measurements behind chapter 2 (initialisation): signal propagation through deep MLPs at init,
PyTorch's default initialisers, residual-stream growth with and without depth scaling, weight tying,
and a learning-rate × width sweep under standard parameterisation and μP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.plotting import COLORS, log_scale, series, subplots

ACTIVATIONS = {"linear": lambda x: x, "tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid}


def signal_propagation(depth: int, gain: float, activation: str = "tanh", *, width: int = 256,
                       batch: int = 256, seed: int = 0) -> dict[str, list[float]]:
    """Forward and backward through ``depth`` layers h <- act(h W), W ~ N(0, gain^2 / width).

    Returns {"activation_std": std of each layer's output, "gradient_std": std of dL/dh at each
    layer's input}, with L = sum(output * r) for a fixed random r, so dL/d(output) has unit scale.
    """
    g = torch.Generator().manual_seed(seed)
    act = ACTIVATIONS[activation]
    h = torch.randn(batch, width, generator=g)
    inputs, outputs = [], []
    for _ in range(depth):
        h = h.detach().requires_grad_()
        inputs.append(h)
        W = gain / math.sqrt(width) * torch.randn(width, width, generator=g)
        h = act(h @ W)
        outputs.append(h)
    # backward layer by layer, so that each layer's input gradient is kept
    grad = torch.randn(batch, width, generator=g)
    grads = []
    for x, y in zip(reversed(inputs), reversed(outputs)):
        (grad,) = torch.autograd.grad(y, x, grad)
        grads.append(float(grad.std()))
    return {"activation_std": [float(o.detach().std()) for o in outputs], "gradient_std": grads[::-1]}


def figure_signal_propagation(depth: int = 20, gain: float = 1.0, activation: str = "tanh"):
    """Per-layer activation and gradient std on a log scale, with explode/vanish bands."""
    stats = signal_propagation(depth, gain, activation)
    fig, ax = subplots()
    layers = list(range(1, depth + 1))
    ax.plot(layers, stats["activation_std"], **series("pre"), label="activation std (forward)")
    ax.plot(layers, stats["gradient_std"], **series("post"), label="gradient std (backward)")
    ax.axhspan(10, 1e30, color=COLORS["naive"], alpha=0.08)
    ax.axhspan(1e-30, 0.1, color=COLORS["safe"], alpha=0.08)
    values = [v for v in stats["activation_std"] + stats["gradient_std"] if v > 0 and math.isfinite(v)]
    ax.set_ylim(max(min(values + [0.05]) / 2, 1e-30), min(max(values + [20.0]) * 2, 1e30))
    log_scale(ax)
    ax.text(0.99, 0.97, "explodes (std > 10)", transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.text(0.99, 0.03, "vanishes (std < 0.1)", transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    ax.set(xlabel="layer", ylabel="std",
           title=f"{activation}, W ~ N(0, gain²/fan_in), gain {gain:.3g}, width 256")
    ax.legend(loc="center left")
    return fig


def default_init_report(fan_in: int = 512, fan_out: int = 256, vocab: int = 1000, seed: int = 0) -> dict[str, float]:
    """What PyTorch's default initialisers actually give, measured on fresh modules."""
    torch.manual_seed(seed)
    linear, emb = nn.Linear(fan_in, fan_out), nn.Embedding(vocab, fan_out)
    weight, bias = linear.weight.detach(), linear.bias.detach()
    return {
        "linear_weight_std_x_sqrt_fan_in": float(weight.std()) * math.sqrt(fan_in),
        "linear_weight_max_x_sqrt_fan_in": float(weight.abs().max()) * math.sqrt(fan_in),
        "linear_bias_max_x_sqrt_fan_in": float(bias.abs().max()) * math.sqrt(fan_in),
        "embedding_std": float(emb.weight.detach().std()),
        "he_normal_std_x_sqrt_fan_in": math.sqrt(2.0),
    }


def tied_head_initial_loss(embedding_std: float, *, d_model: int = 256, vocab: int = 512, seed: int = 0) -> float:
    """Cross-entropy at init of logits = E[x] @ E^T (a tied LM head on the raw embeddings)
    against random targets; ln(vocab) is what a calibrated untrained model scores."""
    g = torch.Generator().manual_seed(seed)
    E = embedding_std * torch.randn(vocab, d_model, generator=g)
    tokens = torch.randint(vocab, (256,), generator=g)
    targets = torch.randint(vocab, (256,), generator=g)
    return float(F.cross_entropy(F.layer_norm(E[tokens], (d_model,)) @ E.T, targets))


# ------------------------------------------------------------------------------------------ μP

class WidthMLP(nn.Module):
    """input (d_in -> width) -> ReLU -> hidden (width -> width) -> ReLU -> output (width -> classes).

    Weights only (no biases), initialised N(0, 1/fan_in); ``zero_output`` starts the readout at 0
    (μP's choice, so the initial function does not depend on width)."""

    def __init__(self, width: int, d_in: int = 16, classes: int = 8, zero_output: bool = False):
        super().__init__()
        self.width = width
        self.input = nn.Linear(d_in, width, bias=False)
        self.hidden = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, classes, bias=False)
        for layer in (self.input, self.hidden, self.output):
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
        if zero_output:
            nn.init.zeros_(self.output.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(F.relu(self.hidden(F.relu(self.input(x)))))


def standard_param_groups(model: WidthMLP, base_lr: float, base_width: int) -> list[dict]:
    """Standard parameterisation: one learning rate for every weight, whatever the width."""
    return [{"params": list(model.parameters()), "lr": base_lr}]


def train_width_mlp(width: int, lr: float, param_groups, *, zero_output: bool, steps: int = 80,
                    base_width: int = 32, seed: int = 0) -> float:
    """Mean training loss over the last 20 of ``steps`` Adam steps on a fixed noisy teacher task.
    ``param_groups(model, lr, base_width)`` builds the optimizer groups (SP or μP). NaN if diverged."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(16, 8, generator=g)
    torch.manual_seed(seed)
    model = WidthMLP(width, zero_output=zero_output)
    opt = torch.optim.Adam(param_groups(model, lr, base_width))
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 16, generator=g)
        y = (x @ teacher + 0.5 * torch.randn(32, 8, generator=g)).argmax(-1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tail = sum(losses[-20:]) / 20
    return tail if math.isfinite(tail) else math.nan


@dataclass
class WidthSweep:
    widths: list[int]
    lrs: list[float]
    losses: dict[int, list[float]]  # width -> final loss per learning rate

    def best_lr(self, width: int) -> float:
        row = self.losses[width]
        finite = [(v, lr) for v, lr in zip(row, self.lrs) if math.isfinite(v)]
        return min(finite)[1]


def width_sweep(param_groups, *, zero_output: bool, widths=(32, 128, 512),
                lrs=tuple(10 ** (k / 2) for k in range(-7, 0)), progress: bool = True) -> WidthSweep:
    from tqdm.auto import tqdm

    losses = {}
    bar = tqdm(total=len(widths) * len(lrs), disable=not progress, leave=False, desc="width × lr")
    for width in widths:
        row = []
        for lr in lrs:
            row.append(train_width_mlp(width, lr, param_groups, zero_output=zero_output))
            bar.update()
        losses[width] = row
    bar.close()
    return WidthSweep(list(widths), list(lrs), losses)


def figure_width_sweeps(sweeps: dict[str, WidthSweep]):
    """Final loss against learning rate, one line per width, one panel per parameterisation."""
    fig, axes = subplots(len(sweeps), width=5 * len(sweeps), sharey=True)
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]
    for ax, (name, sweep) in zip(axes, sweeps.items()):
        for shade, width in zip(shades, sweep.widths):
            ax.plot(sweep.lrs, sweep.losses[width], "o-", color=shade, label=f"width {width}")
            best = sweep.best_lr(width)
            ax.plot([best], [sweep.losses[width][sweep.lrs.index(best)]], "*", ms=14, color=shade,
                    markeredgecolor="k")
        log_scale(ax, "x")
        ax.set(xlabel="Adam learning rate", title=f"{name}: ★ = best learning rate per width")
    axes[0].set_ylabel("training loss after 80 steps")
    axes[0].legend()
    return fig
