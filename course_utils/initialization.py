"""Measurements behind chapter 2 (initialisation): signal propagation through deep MLPs at init,
PyTorch's default initialisers, residual-stream growth with and without depth scaling, weight tying,
and a learning-rate × width sweep under standard parameterisation and μP.

Used by chapter 2.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.plotting import COLORS, log_scale, series, subplots

ACTIVATIONS = {"linear": lambda x: x, "tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid}


def signal_propagation(depth: int, gain: float, activation: str = "tanh", *, width: int = 256,
                       batch: int = 256, seed: int = 0) -> dict[str, list[float]]:
    """Forward and backward through ``depth`` layers h <- act(h W), W ~ N(0, gain^2 / width).

    Returns {"activation_std": std of each layer's output, "gradient_std": std of dL/dh at each
    layer's input, "inf_count" and "nan_count": how many of each layer's outputs are inf and NaN}, with
    L = sum(output * r) for a fixed random r, so dL/d(output) has unit scale.
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
        grads.append(float(grad.double().std()))
    # std in float64: squaring a finite float32 activation of 1e37 would overflow and report inf
    return {"activation_std": [float(o.detach().double().std()) for o in outputs], "gradient_std": grads[::-1],
            "inf_count": [int(torch.isinf(o).sum()) for o in outputs],
            "nan_count": [int(torch.isnan(o).sum()) for o in outputs]}


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


def pytorch_default_relu_stack(depth: int = 20, width: int = 512, batch: int = 256, *, bias: bool = True,
                               weight_std: float | None = None, seed: int = 0) -> dict[str, float]:
    """``depth`` x (``nn.Linear(width, width, bias=bias)`` then ReLU) on unit-normal inputs, at PyTorch's default
    init, or with the weights redrawn from N(0, weight_std^2) (e.g. He's sqrt(2 / width)); biases keep PyTorch's.

    Returns {"output_std": std of all final activations, "input_dependent_std": the per-feature std across the
    batch, averaged over features (what still depends on the input), "input_dependent_ratio": the two's ratio,
    "output_mean_abs": mean |activation|}. Without bias a ReLU stack is positively homogeneous, so the weight scale
    only rescales the output and leaves the ratio alone; with the default bias, U(+-1/sqrt(fan_in)), at the default
    weight scale the output is a bias-made constant: large std, tiny input-dependent part."""
    torch.manual_seed(seed)
    layers = [nn.Linear(width, width, bias=bias) for _ in range(depth)]
    if weight_std is not None:
        with torch.no_grad():
            for layer in layers:
                layer.weight.normal_(0.0, weight_std)
    h = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for layer in layers:
            h = F.relu(layer(h))
    output_std, input_dependent = float(h.std()), float(h.std(dim=0).mean())
    return {"output_std": output_std, "input_dependent_std": input_dependent,
            "input_dependent_ratio": input_dependent / output_std, "output_mean_abs": float(h.abs().mean())}


def swiglu_block_ratios(gate_up_std: float, down_std: float, *, gains=(1.0, 1.0, 1.0), d: int = 256,
                        hidden: int = 1024, batch: int = 2048, seed: int = 0,
                        backward: bool = True) -> dict[str, float]:
    """One SwiGLU block out = (silu(x W_gate) * (x W_up)) W_down, d -> hidden -> d, in float64, with
    W_gate, W_up ~ N(0, gate_up_std^2), W_down ~ N(0, down_std^2), each then multiplied by its entry of
    ``gains`` (gate, up, down). Returns {"forward": E[out^2] / E[x^2] on unit-normal x, "backward":
    E[(dL/dx)^2] / E[(dL/dout)^2] for a unit-normal dL/dout (NaN with ``backward=False``)}: 1 keeps the scale."""
    g = torch.Generator().manual_seed(seed)
    w_gate = gains[0] * gate_up_std * torch.randn(d, hidden, generator=g, dtype=torch.float64)
    w_up = gains[1] * gate_up_std * torch.randn(d, hidden, generator=g, dtype=torch.float64)
    w_down = gains[2] * down_std * torch.randn(hidden, d, generator=g, dtype=torch.float64)
    x = torch.randn(batch, d, generator=g, dtype=torch.float64).requires_grad_(backward)
    out = (F.silu(x @ w_gate) * (x @ w_up)) @ w_down
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ratio = math.nan
    if backward:
        (grad_x,) = torch.autograd.grad(out, x, grad_out)
        ratio = float(grad_x.pow(2).mean() / grad_out.pow(2).mean())
    x, out = x.detach(), out.detach()
    return {"forward": float(out.pow(2).mean() / x.pow(2).mean()), "backward": ratio}


SWIGLU_INITS = {  # (std of W_gate and W_up, std of W_down) for a d -> hidden -> d block
    "He fan_out": lambda d, hidden: (math.sqrt(2 / hidden), math.sqrt(2 / d)),
    "He fan_in": lambda d, hidden: (math.sqrt(2 / d), math.sqrt(2 / hidden)),
    "fan-in": lambda d, hidden: (math.sqrt(1 / d), math.sqrt(1 / hidden)),
}


# The course's one table of initialisations, by name (TransformerConfig fields in brackets):
#   "fan-in"      every Linear N(0, 1/fan_in), embeddings N(0, 1/2)           [init="fan_in"]
#   "fixed 0.02"  every Linear and Embedding weight N(0, 0.02^2)             [init="gpt", depth_scaled_init=False]
#   "GPT-2"       fixed 0.02, and N(0, (0.02/sqrt(2L))^2) on attn.proj and mlp.down
#                                                                           [init="gpt", depth_scaled_init=True]
#   "muP"         fan-in init, zero readout, Adam lr x base_width/width on hidden and output layers (WidthMLP here)
INIT_RECIPES = {
    "fan-in": dict(init="fan_in"),
    "fixed 0.02": dict(init="gpt", init_std=0.02, depth_scaled_init=False),
    "GPT-2": dict(init="gpt", init_std=0.02, depth_scaled_init=True),
}
RECIPE_LAYERS = ("attn.qkv", "attn.proj", "mlp.up", "mlp.down", "lm_head")


def init_recipe_table(d_model: int = 64, n_layer: int = 4, *, batch: int = 4096, seed: int = 0) -> dict:
    """For each recipe of INIT_RECIPES, the forward variance factor Var(x W^T) / Var(x) of each kind of layer of a
    TinyTransformer (block 0's attn.qkv, attn.proj, mlp.up, mlp.down, and the lm_head), measured on unit-normal
    inputs. Returns {recipe: {layer: factor}}; a factor 1 keeps the signal's scale, fan_in * std^2 in general."""
    from course_utils.models import TinyTransformer, TransformerConfig

    table = {}
    for name, fields in INIT_RECIPES.items():
        torch.manual_seed(seed)
        model = TinyTransformer(TransformerConfig(vocab_size=64, block_size=16, n_layer=n_layer, d_model=d_model,
                                                  n_head=4, **fields))
        modules = dict(model.named_modules())
        row = {}
        for layer in RECIPE_LAYERS:
            module = modules[layer if layer == "lm_head" else f"blocks.0.{layer}"]
            x = torch.randn(batch, module.in_features, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                row[layer] = float(module(x).var() / x.var())
        table[name] = row
    return table


def residual_stream_growth(depths=(2, 4, 8, 16, 32), *, depth_scaled_init: bool = False, seed: int = 0,
                           arch: str = "pre") -> dict[str, list[float]]:
    """Mean square of the residual stream at init, for the course's depth-sweep model (gradflow.stack_config):
    {"embedding": E[x_0^2] (token + position embeddings), "final": E[x_L^2], "blocks": their difference, what the
    L blocks added}, one entry per depth. Fixed 0.02 by default, GPT-2 with ``depth_scaled_init``."""
    from course_utils.data import MarkovChain
    from course_utils.gradflow import stack_config
    from course_utils.models import TinyTransformer

    out = {"depth": list(depths), "embedding": [], "final": [], "blocks": []}
    for depth in depths:
        torch.manual_seed(seed)
        config = stack_config(arch, depth, depth_scaled_init=depth_scaled_init)
        model = TinyTransformer(config)
        tokens = MarkovChain(config.vocab_size).sample(4, config.block_size, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            x = x_0 = model.embed(tokens[:, :-1])
            for block in model.blocks:
                x = block(x)
        e, f = float(x_0.pow(2).mean()), float(x.pow(2).mean())
        out["embedding"].append(e)
        out["final"].append(f)
        out["blocks"].append(f - e)
    return out


def tied_head_initial_loss(embedding_std: float, *, d_model: int = 256, vocab: int = 512, seed: int = 0,
                           head_scale: float = 1.0) -> float:
    """Cross-entropy at init of logits = head_scale * LN(E[x]) @ E^T (a tied LM head on the layer-normed
    embeddings) against random targets; ln(vocab) is what a calibrated untrained model scores. T5 ties with an
    N(0, 1) embedding and head_scale = d_model ** -0.5."""
    g = torch.Generator().manual_seed(seed)
    E = embedding_std * torch.randn(vocab, d_model, generator=g)
    tokens = torch.randint(vocab, (256,), generator=g)
    targets = torch.randint(vocab, (256,), generator=g)
    return float(F.cross_entropy(head_scale * F.layer_norm(E[tokens], (d_model,)) @ E.T, targets))


def tied_head_loss_through_blocks(n_layer: int, blocks_init: str, *, d_model: int = 256, vocab: int = 512,
                                  seed: int = 0) -> dict[str, float]:
    """The tied-head check with ``n_layer`` blocks between the embedding and the head: PaLM's setting (N(0, 1)
    embedding, shared with the head, logits scaled by d_model ** -0.5) on a TinyTransformer with RMSNorm, SwiGLU
    and RoPE whose block weights are ``blocks_init`` ("fan-in": N(0, 1/fan_in), as PaLM; "fixed 0.02").

    Returns {"loss": initial cross-entropy on random tokens and targets (8 x 32), "embedding_share": the
    embedding's mean square over the final residual stream's}. With 0 blocks the share is 1 and the loss is
    ``tied_head_initial_loss``'s limit (under RMSNorm instead of LayerNorm). The global RNG is left as it was."""
    from course_utils.models import TinyTransformer, TransformerConfig

    if blocks_init not in ("fan-in", "fixed 0.02"):
        raise ValueError(f"blocks_init must be 'fan-in' or 'fixed 0.02', got {blocks_init!r}")
    config = TransformerConfig(vocab_size=vocab, d_model=d_model, n_layer=n_layer, n_head=4, block_size=32,
                               norm="rmsnorm", mlp="swiglu", position="rope",
                               init="fan_in" if blocks_init == "fan-in" else "gpt")
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        model = TinyTransformer(config)
        model.tok_emb.weight.normal_(0.0, 1.0)
        model.lm_head.weight = model.tok_emb.weight  # tied
        tokens, targets = torch.randint(vocab, (8, 32)), torch.randint(vocab, (8, 32))
        x = model.embed(tokens)
        rope = (model.rope_inv_freq, model.rope_factor)
        for block in model.blocks:
            x = block(x, rope)
        logits = d_model ** -0.5 * model.lm_head(model.norm_f(x))
        return {"loss": float(F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))),
                "embedding_share": float(model.tok_emb(tokens).pow(2).mean() / x.pow(2).mean())}


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
    from course_utils.training import final_loss

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
    tail = final_loss(losses)
    return tail if math.isfinite(tail) else math.nan


@dataclass
class WidthSweep:
    widths: list[int]
    lrs: list[float]
    losses: dict[int, list[list[float]]]  # width -> per seed, the final loss at each learning rate
    seeds: tuple = (0,)

    def best_lr(self, width: int, seed_index: int | None = None) -> float:
        """The learning rate with the lowest final loss: of one seed, or of the loss averaged over seeds."""
        rows = self.losses[width] if seed_index is None else [self.losses[width][seed_index]]
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(len(self.lrs))]
        finite = [(v, lr) for v, lr in zip(mean, self.lrs) if math.isfinite(v)]
        return min(finite)[1]

    def best_lrs(self, width: int) -> list[float]:
        """The best learning rate of each seed."""
        return [self.best_lr(width, i) for i in range(len(self.seeds))]

    def mean_losses(self, width: int) -> list[float]:
        rows = self.losses[width]
        return [sum(r[i] for r in rows) / len(rows) for i in range(len(self.lrs))]


def _layer_lr_factors(param_groups, width: int, base_width: int) -> dict[str, float]:
    """The learning rate that ``param_groups`` gives each layer of a WidthMLP, relative to the base rate."""
    model = WidthMLP(width)
    lr_of = {}
    for group in param_groups(model, 1.0, base_width):
        for p in group["params"]:
            lr_of[id(p)] = group.get("lr", 1.0)
    return {name: lr_of[id(getattr(model, name).weight)] for name in ("input", "hidden", "output")}


def train_width_mlp_batched(width: int, lrs, param_groups, *, zero_output: bool, steps: int = 80,
                            base_width: int = 32, seeds=(0, 1, 2)) -> list[list[float]]:
    """``train_width_mlp`` for every (seed, lr) at once: the len(seeds) x len(lrs) networks are stacked along a
    leading dimension and trained by one batched Adam (the same update as torch.optim.Adam, elementwise, with each
    layer's rate from ``param_groups``). Returns losses[seed index][lr index], the mean of the last 20 steps."""
    factors = _layer_lr_factors(param_groups, width, base_width)
    weights, data = {name: [] for name in factors}, []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        teacher = torch.randn(16, 8, generator=g)
        torch.manual_seed(seed)
        model = WidthMLP(width, zero_output=zero_output)  # the same draws as train_width_mlp
        for name in factors:
            weights[name] += [getattr(model, name).weight.detach()] * len(lrs)
        batches = []
        for _ in range(steps):
            x = torch.randn(32, 16, generator=g)
            y = (x @ teacher + 0.5 * torch.randn(32, 8, generator=g)).argmax(-1)
            batches.append((x, y))
        data.append(batches)
    n = len(seeds) * len(lrs)
    params = {name: torch.stack(ws).clone().requires_grad_() for name, ws in weights.items()}  # (n, out, in)
    rate = {name: torch.tensor([lr * f for _ in seeds for lr in lrs]).view(n, 1, 1) for name, f in factors.items()}
    m = {name: torch.zeros_like(p) for name, p in params.items()}
    v = {name: torch.zeros_like(p) for name, p in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    losses = []
    for t in range(1, steps + 1):
        x = torch.stack([data[i][t - 1][0] for i in range(len(seeds)) for _ in lrs])  # (n, 32, 16)
        y = torch.stack([data[i][t - 1][1] for i in range(len(seeds)) for _ in lrs])  # (n, 32)
        h = F.relu(x @ params["input"].transpose(1, 2))
        h = F.relu(h @ params["hidden"].transpose(1, 2))
        logits = h @ params["output"].transpose(1, 2)  # (n, 32, classes)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(n, -1)
        loss = loss.mean(1)  # (n,): each network's own mean loss
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        losses.append(loss.detach())
        with torch.no_grad():
            for (name, p), grad in zip(params.items(), grads):
                m[name].mul_(beta1).add_(grad, alpha=1 - beta1)
                v[name].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v[name].sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
                p.sub_(rate[name] / (1 - beta1 ** t) * m[name] / denom)
    tail = torch.stack(losses[-20:]).mean(0).view(len(seeds), len(lrs))
    return [[v if math.isfinite(v) else math.nan for v in row] for row in tail.tolist()]


def width_sweep(param_groups, *, zero_output: bool, widths=(32, 128, 512),
                lrs=tuple(10 ** (k / 4) for k in range(-14, -1)), seeds=(0, 1, 2),
                progress: bool = True) -> WidthSweep:
    """Final loss of ``train_width_mlp`` for every width x lr x seed (batched over lr and seed per width)."""
    from tqdm.auto import tqdm

    losses = {}
    for width in tqdm(widths, disable=not progress, leave=False, desc="widths (all lrs and seeds at once)"):
        losses[width] = train_width_mlp_batched(width, lrs, param_groups, zero_output=zero_output, seeds=seeds)
    return WidthSweep(list(widths), list(lrs), losses, tuple(seeds))


WIDTH_SWEEP_CACHE = Path(__file__).resolve().parent / "data_files" / "ch02_width_sweeps.json"


def compute_width_sweeps(mup_groups=None, *, progress: bool = True) -> dict[str, WidthSweep]:
    """The notebook's two sweeps, SP and μP, over widths (32, 128, 512) x 13 learning rates x seeds 0, 1, 2.
    ``mup_groups`` defaults to the reference answer of exercise 2.5. About a minute and a half on 2 cores."""
    if mup_groups is None:
        from solutions.ch02_initialization import mup_param_groups as mup_groups
    return {"standard (SP)": width_sweep(standard_param_groups, zero_output=False, progress=progress),
            "μP": width_sweep(mup_groups, zero_output=True, progress=progress)}


MAIN_SWEEPS = ("standard (SP)", "μP")
ABLATION_SWEEPS = ("μP rates, fan-in readout", "SP rates, zero readout")


def compute_readout_ablation(mup_groups=None, *, progress: bool = True) -> dict[str, WidthSweep]:
    """μP changes two things at once, the per-layer learning rates and the zero readout; these two sweeps change one
    each: μP's rates with the fan-in readout, and SP's single rate with the zero readout, at widths 32 and 512
    (13 learning rates, seeds 0, 1, 2). About two minutes on 2 cores; stored next to the main sweeps."""
    if mup_groups is None:
        from solutions.ch02_initialization import mup_param_groups as mup_groups
    return {ABLATION_SWEEPS[0]: width_sweep(mup_groups, zero_output=False, widths=(32, 512), progress=progress),
            ABLATION_SWEEPS[1]: width_sweep(standard_param_groups, zero_output=True, widths=(32, 512),
                                            progress=progress)}


def save_width_sweeps(sweeps: dict[str, WidthSweep], path=WIDTH_SWEEP_CACHE) -> None:
    """Store ``sweeps`` in ``path``, keeping the sweeps already stored there under other names."""
    path = Path(path)
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.update({name: {"widths": sw.widths, "lrs": sw.lrs, "seeds": list(sw.seeds),
                           "losses": {str(w): rows for w, rows in sw.losses.items()}} for name, sw in sweeps.items()})
    path.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")


def load_width_sweeps(path=WIDTH_SWEEP_CACHE, names=MAIN_SWEEPS) -> dict[str, WidthSweep]:
    """The stored result of ``compute_width_sweeps()`` (``names=ABLATION_SWEEPS``: of ``compute_readout_ablation()``;
    tests/test_claims_ch02.py recomputes both and checks that they agree), so that the notebook does not spend two
    and a half minutes on them."""
    payload = json.loads(Path(path).read_text())
    return {name: WidthSweep(payload[name]["widths"], payload[name]["lrs"],
                             {int(w): rows for w, rows in payload[name]["losses"].items()},
                             tuple(payload[name]["seeds"])) for name in names}


def figure_width_sweeps(sweeps: dict[str, WidthSweep]):
    """Final loss against learning rate, one line per width (mean over seeds, band = min to max over seeds),
    one panel per parameterisation; stars mark the best rate of the seed-mean curve."""
    fig, axes = subplots(len(sweeps), width=5 * len(sweeps), sharey=True)
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]
    for ax, (name, sweep) in zip(axes, sweeps.items()):
        for shade, width in zip(shades, sweep.widths):
            rows = sweep.losses[width]
            mean = sweep.mean_losses(width)
            low = [min(r[i] for r in rows) for i in range(len(sweep.lrs))]
            high = [max(r[i] for r in rows) for i in range(len(sweep.lrs))]
            ax.plot(sweep.lrs, mean, "o-", ms=3, color=shade, label=f"width {width}")
            ax.fill_between(sweep.lrs, low, high, color=shade, alpha=0.3, lw=0)
            best = sweep.best_lr(width)
            ax.plot([best], [mean[sweep.lrs.index(best)]], "*", ms=14, color=shade, markeredgecolor="k")
        log_scale(ax, "x")
        ax.set(xlabel="Adam learning rate", ylim=(None, 2.2),
               title=f"{name}: ★ = best rate (mean of {len(sweep.seeds)} seeds)")
    axes[0].set_ylabel("training loss after 80 steps (band: seed range)")
    axes[0].legend()
    return fig
