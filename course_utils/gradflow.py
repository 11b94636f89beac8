"""Measurements of gradient flow through a Transformer stack at initialisation.

Plain functions (unit-tested) behind chapter 1's plots and sliders: per-layer gradient norms and
residual-stream scale for a stack without residuals, with Post-LN and with Pre-LN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_utils.data import MarkovChain
from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.plotting import log_scale, series, subplots

# The wirings chapter 1 compares; keys double as plot labels and colour keys.
ARCHITECTURES = {
    "no residual, no norm": dict(norm_position="none", residual=False),  # x <- F(x)
    "no residual": dict(norm_position="pre", residual=False),  # x <- F(LN(x))
    "post": dict(norm_position="post"),  # x <- LN(x + F(x))
    "pre": dict(norm_position="pre"),  # x <- x + F(LN(x))
}


def stack_config(arch: str, depth: int, *, d_model: int = 64, init_std: float = 0.02,
                 **overrides) -> TransformerConfig:
    """The small config chapter 1 uses for ``arch`` (a key of ARCHITECTURES) at ``depth`` blocks."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")
    fields = dict(vocab_size=32, block_size=16, n_layer=depth, n_head=4, d_model=d_model,
                  init_std=init_std, **ARCHITECTURES[arch])
    fields.update(overrides)
    return TransformerConfig(**fields)


@dataclass
class LayerStats:
    input_grad_norm: list[float]  # per block l: ||dL/dx_l||, x_l the residual stream entering block l
    param_grad_norm: list[float]  # per block l: L2 norm of the gradient of all its parameters
    stream_rms: list[float]  # per block l: RMS of the residual stream *leaving* block l
    output_grad_norm: float  # ||dL/dx_L||, x_L the stream leaving the last block (the final norm's input)
    embedding_cosine: list[float]  # per block l: cosine of the stream leaving block l with the embedding x_0,
    #                                mean over positions (how much of the input the skip path still carries)
    loss: float


def layer_stats(arch: str, depth: int, *, seed: int = 0, batch: int = 4, **config_overrides) -> LayerStats:
    """Forward and backward one batch of Markov-chain tokens through a fresh model at init."""
    torch.manual_seed(seed)
    config = stack_config(arch, depth, **config_overrides)
    model = TinyTransformer(config)
    tokens = MarkovChain(config.vocab_size).sample(batch, config.block_size,
                                                   torch.Generator().manual_seed(seed))
    x = x_0 = model.embed(tokens[:, :-1])
    inputs, outputs = [], []
    for block in model.blocks:
        x.retain_grad()
        inputs.append(x)
        x = block(x)
        outputs.append(x.detach())
    x.retain_grad()
    logits = model.lm_head(model.norm_f(x))
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
    loss.backward()
    return LayerStats(
        input_grad_norm=[float(t.grad.norm()) for t in inputs],
        output_grad_norm=float(x.grad.norm()),
        param_grad_norm=[float(torch.sqrt(sum((p.grad ** 2).sum() for p in b.parameters() if p.grad is not None)))
                         for b in model.blocks],
        stream_rms=[float(o.pow(2).mean().sqrt()) for o in outputs],
        embedding_cosine=[float(F.cosine_similarity(o, x_0.detach(), dim=-1).mean()) for o in outputs],
        loss=loss.item(),
    )


def depth_sweep(arch: str, depths: list[int], *, seed: int = 0, **config_overrides) -> dict[str, list[float]]:
    """For each depth: variance of the final residual stream and gradient norm of the last and
    first blocks' parameters, and ||dL/dx_L|| (the gradient the final norm passes back).
    Keys: depth, output_var, last_block_grad, first_block_grad, output_grad."""
    out = {"depth": [], "output_var": [], "last_block_grad": [], "first_block_grad": [], "output_grad": []}
    for depth in depths:
        stats = layer_stats(arch, depth, seed=seed, **config_overrides)
        out["depth"].append(depth)
        out["output_var"].append(stats.stream_rms[-1] ** 2)
        out["last_block_grad"].append(stats.param_grad_norm[-1])
        out["first_block_grad"].append(stats.param_grad_norm[0])
        out["output_grad"].append(stats.output_grad_norm)
    return out


def depth_sweep_over_seeds(arch: str, depths: list[int], *, seeds=range(3),
                           **config_overrides) -> dict[str, list[float]]:
    """:func:`depth_sweep` for each seed, combined by the geometric mean (the sweep's quantities are scales,
    compared on log axes). Same keys as depth_sweep."""
    sweeps = [depth_sweep(arch, depths, seed=seed, **config_overrides) for seed in seeds]
    combined = {"depth": list(depths)}
    for key in sweeps[0]:
        if key != "depth":
            combined[key] = [math.exp(sum(math.log(s[key][i]) for s in sweeps) / len(sweeps))
                             for i in range(len(depths))]
    return combined


def layernorm_jacobian(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The Jacobian of LayerNorm without gain at one vector x (d,), from the formula

        d LN(x) / dx = (I - 1 1^T / d - y y^T / d) / sqrt(sigma^2 + eps),   y = LN(x).

    The bracket is the orthogonal projection onto the vectors orthogonal to 1 and to y (y is orthogonal
    to 1 and |y|^2 = d), so the Jacobian's largest singular value is exactly 1 / sqrt(sigma^2 + eps):
    LayerNorm divides every gradient through it by its input's RMS (about sigma, for a mean near 0)."""
    d = x.numel()
    sigma2 = x.var(unbiased=False)
    y = (x - x.mean()) / torch.sqrt(sigma2 + eps)
    eye = torch.eye(d, dtype=x.dtype)
    return (eye - torch.ones(d, d, dtype=x.dtype) / d - torch.outer(y, y) / d) / torch.sqrt(sigma2 + eps)


def warmup_comparison(*, depth: int = 6, steps: int = 120, lr: float = 1e-2, warmup_steps: int = 40,
                      seeds=(0, 1, 2)) -> tuple[dict[str, list["TrainResult"]], MarkovChain]:  # noqa: F821
    """Chapter 1's warmup experiment: Post-LN and Pre-LN stacks of ``depth`` blocks, each trained with and
    without a linear warmup of ``warmup_steps`` on the same Markov chain, once per seed (the seed sets the
    init and the batches). Returns (runs by label, one TrainResult per seed in ``seeds`` order; chain);
    labels are "post-LN, no warmup", "post-LN, warmup 40", "pre-LN, ...". Deterministic."""
    from course_utils.training import train_markov_lm

    chain = MarkovChain(vocab_size=32)
    runs = {}
    for arch in ("post", "pre"):
        for warmup in (0, warmup_steps):
            label = f"{arch}-LN, " + (f"warmup {warmup}" if warmup else "no warmup")
            config = stack_config(arch, depth=depth, block_size=16)
            runs[label] = [train_markov_lm(config, steps=steps, lr=lr, warmup_steps=warmup, chain=chain, seed=seed,
                                           progress=False) for seed in seeds]
    return runs, chain


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p in y ∝ x^p."""
    lx, ly = torch.log(torch.tensor(xs, dtype=torch.float64)), torch.log(torch.tensor(ys, dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def jacobian_product_norms(depth: int, sigma: float, *, d: int = 64, residual: bool, seed: int = 0) -> list[float]:
    """||g J_L ... J_1|| (or with I + J_k per layer when ``residual``) after each of ``depth`` layers.

    Each J_k is a random (d, d) matrix with entries N(0, sigma^2 / d), a stand-in for a block's
    Jacobian; g is a unit-norm upstream gradient. Index l holds the norm after l + 1 layers.
    """
    g_ = torch.Generator().manual_seed(seed)
    grad = torch.randn(d, generator=g_, dtype=torch.float64)
    grad = grad / grad.norm()
    norms = []
    for _ in range(depth):
        J = sigma / math.sqrt(d) * torch.randn(d, d, generator=g_, dtype=torch.float64)
        grad = grad + grad @ J if residual else grad @ J
        norms.append(float(grad.norm()))
    return norms


def swiglu_scale_sweep(scales: list[float], *, n: int = 4096, seed: int = 0) -> dict[str, list[float]]:
    """RMS of h = silu(s*a) * (s*b) and of its gradients d gate, d up for each scale s (dL/dh = 1).

    Keys: scale, output, grad_gate, grad_up. Large s: output grows like s^2, each gradient like s.
    """
    g_ = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, generator=g_, dtype=torch.float64), torch.randn(n, generator=g_, dtype=torch.float64)
    out = {"scale": [], "output": [], "grad_gate": [], "grad_up": []}
    for s in scales:
        gate, up = (s * a).requires_grad_(), (s * b).requires_grad_()
        h = F.silu(gate) * up
        h.sum().backward()
        out["scale"].append(s)
        out["output"].append(float(h.detach().pow(2).mean().sqrt()))
        out["grad_gate"].append(float(gate.grad.pow(2).mean().sqrt()))
        out["grad_up"].append(float(up.grad.pow(2).mean().sqrt()))
    return out


@dataclass
class SpikeRun:
    losses: list[float]  # loss on a fixed clean evaluation batch after each step
    grad_norms: list[float]  # global gradient norm at each step, before clipping


def swiglu_spike_run(spike_scale: float, clip: float | None, *, steps: int = 80, spike_step: int = 30,
                     lr: float = 0.05, seed: int = 0, clip_fn=None) -> SpikeRun:
    """Train a SwiGLU MLP regressor with SGD; at ``spike_step`` the batch's inputs are multiplied by
    ``spike_scale`` (a bad batch). With ``clip`` set, gradients are clipped to that global norm by
    ``clip_fn(grads, max_norm) -> (clipped, norm)`` (default: the course's clip_grad_norm)."""
    from course_utils.training import clip_grad_norm

    clip_fn = clip_fn or clip_grad_norm
    g_ = torch.Generator().manual_seed(seed)
    d, hidden = 16, 32
    teacher = torch.randn(d, 1, generator=g_) / math.sqrt(d)
    w_in = (torch.randn(d, 2 * hidden, generator=g_) / math.sqrt(d)).requires_grad_()
    w_out = (torch.randn(hidden, 1, generator=g_) / math.sqrt(hidden)).requires_grad_()
    params = [w_in, w_out]

    def predict(x):
        gate, up = (x @ w_in).chunk(2, dim=-1)  # (B, hidden) each
        return (F.silu(gate) * up) @ w_out

    x_eval = torch.randn(256, d, generator=g_)
    y_eval = torch.tanh(x_eval @ teacher)
    losses, norms = [], []
    for step in range(steps):
        x = torch.randn(32, d, generator=g_)
        y = torch.tanh(x @ teacher)
        if step == spike_step:
            x = spike_scale * x
        loss = F.mse_loss(predict(x), y)
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
        if clip is not None:
            grads, _ = clip_fn(list(grads), clip)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= lr * gr
            losses.append(float(F.mse_loss(predict(x_eval), y_eval)))
        norms.append(float(norm))
    return SpikeRun(losses, norms)


# ------------------------------------------------------------------------- figures (chapter 1)

def figure_jacobian_products(depth: int = 24, sigma: float = 0.5):
    """Gradient norm after each layer: products of J_k (no residual) vs of (I + J_k) (residual)."""
    fig, ax = subplots()
    layers = list(range(1, depth + 1))
    ax.plot(layers, jacobian_product_norms(depth, sigma, residual=False), **series("no residual"),
            label="no residual: g J_L ... J_1")
    ax.plot(layers, jacobian_product_norms(depth, sigma, residual=True), **series("pre"),
            label="residual: g (I+J_L) ... (I+J_1)")
    log_scale(ax)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set(xlabel="layers back-propagated through", ylabel="gradient norm (start = 1)",
           title=f"random Jacobians with entry std sigma/sqrt(d), sigma = {sigma:.3g}")
    ax.legend()
    return fig


def figure_layer_stats(depth: int = 12, init: str = "fan_in", init_std: float = 0.02):
    """Per-block parameter-gradient norm and residual-stream RMS at init, for every wiring.
    ``init`` is "fan_in" (unit scale) or "gpt" (every weight N(0, init_std^2))."""
    fig, (ax_g, ax_s) = subplots(2, width=10)
    for arch in ARCHITECTURES:
        stats = layer_stats(arch, depth, init=init, init_std=init_std)
        layers = list(range(1, depth + 1))
        ax_g.plot(layers, stats.param_grad_norm, **series(arch), label=arch)
        ax_s.plot(layers, stats.stream_rms, **series(arch), label=arch)
    log_scale(ax_g)
    log_scale(ax_s)
    setting = "fan-in init" if init == "fan_in" else f"GPT init, std {init_std:.3g}"
    ax_g.set(xlabel="block (1 = next to the embedding)", ylabel="||dL/dθ_block||",
             title=f"parameter gradients at init, depth {depth}, {setting}")
    ax_s.set(xlabel="block", ylabel="RMS of the residual stream", title="residual stream after each block")
    ax_s.legend(loc="lower left")
    return fig


def figure_depth_sweep(sweeps: dict[str, dict[str, list[float]]]):
    """Final-stream variance and last-block gradient norm against depth (log-log), per wiring."""
    fig, (ax_v, ax_g) = subplots(2, width=10)
    for arch, sweep in sweeps.items():
        ax_v.plot(sweep["depth"], sweep["output_var"], **series(arch), label=f"{arch}-LN")
        ax_g.plot(sweep["depth"], sweep["last_block_grad"], **series(arch), label=f"{arch}-LN")
    for ax in (ax_v, ax_g):
        log_scale(ax, "xy")
        depths = next(iter(sweeps.values()))["depth"]
        ax.set_xticks(depths, labels=[str(d) for d in depths])
    ax_v.set(xlabel="depth L", ylabel="Var(x_L)", title="variance of the last residual stream")
    ax_g.set(xlabel="depth L", ylabel="||dL/dθ|| of block L", title="gradient of the last block's parameters")
    ax_v.legend()
    return fig


def figure_training_curves(runs: dict[str, list["TrainResult"]], floor: float):  # noqa: F821
    """Loss curves of several runs (several seeds per label, one line each), with the entropy rate as the floor."""
    fig, ax = subplots()
    for label, seed_runs in runs.items():
        arch = "post" if label.startswith("post") else "pre"
        for i, run in enumerate(seed_runs):
            style = {**series(arch, markevery=20), "linestyle": "-" if "no warmup" in label else "--"}
            ax.plot(run.losses, **style, lw=1.2, alpha=0.8,
                    label=f"{label} ({len(seed_runs)} seeds)" if i == 0 else None)
    ax.axhline(floor, color="k", lw=0.8, ls=":", label=f"entropy rate {floor:.2f} (best possible)")
    ax.set(xlabel="step", ylabel="training loss (nats)", title="AdamW, lr 1e-2, 6 blocks")
    ax.legend()
    return fig


def figure_swiglu_scale(sweep: dict[str, list[float]]):
    fig, ax = subplots()
    ax.plot(sweep["scale"], sweep["output"], "o-", label="RMS of h = silu(s·a)·(s·b)")
    ax.plot(sweep["scale"], sweep["grad_gate"], "s-", label="RMS of dL/d gate")
    ax.plot(sweep["scale"], sweep["grad_up"], "^--", label="RMS of dL/d up")
    log_scale(ax, "xy")
    ax.set(xlabel="activation scale s", ylabel="RMS", title="SwiGLU: output ∝ s², each gradient ∝ s")
    ax.legend()
    return fig


def figure_spike(spike_scale: float = 10.0, clip: float = 1.0, clip_fn=None):
    """Evaluation loss of the SwiGLU regressor through a bad batch, without and with clipping."""
    fig, ax = subplots()
    for label, max_norm, key in [("no clipping", None, "naive"), (f"clip to {clip:.3g}", clip, "safe")]:
        run = swiglu_spike_run(spike_scale, max_norm, clip_fn=clip_fn)
        losses = torch.tensor(run.losses).nan_to_num(nan=1e30).clamp(max=1e30)
        ax.plot(losses, **series(key, markevery=10), label=label)
    log_scale(ax)
    ax.axvline(30, color="k", lw=0.8, ls=":")
    ax.set(xlabel="step", ylabel="eval loss (1e30 = NaN/overflow)",
           title=f"one bad batch (inputs × {spike_scale:.3g}) at step 30")
    ax.legend()
    return fig


# ----------------------------------------------------------- what backprop keeps (chapters 4 and 7)

def saved_for_backward_bytes(loss_fn, logits: torch.Tensor, *args) -> int:
    """Bytes of tensors autograd saves for the backward pass of ``loss_fn(logits, *args)``, not counting
    memory that already belongs to ``logits`` (so a gradient written over the logits counts as 0)."""
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(logits, *args)
    storages.pop(logits.untyped_storage().data_ptr(), None)
    return sum(storages.values())
