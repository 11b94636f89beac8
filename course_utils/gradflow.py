"""Measurements of gradient flow through a Transformer stack at initialisation.

Plain functions (unit-tested) behind chapter 1's plots and sliders: per-layer gradient norms and
residual-stream scale for a stack without residuals, with Post-LN and with Pre-LN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_utils.data import MarkovChain
from course_utils.models import TinyTransformer, TransformerConfig

# The three wirings chapter 1 compares; keys double as plot labels and colour keys.
ARCHITECTURES = {
    "no residual": dict(norm_position="pre", residual=False),
    "post": dict(norm_position="post"),
    "pre": dict(norm_position="pre"),
}


def stack_config(arch: str, depth: int, *, d_model: int = 64, init_std: float = 0.02,
                 **overrides) -> TransformerConfig:
    """The small config chapter 1 uses for ``arch`` (a key of ARCHITECTURES) at ``depth`` blocks."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")
    fields = dict(vocab_size=32, block_size=32, n_layer=depth, n_head=4, d_model=d_model,
                  init_std=init_std, **ARCHITECTURES[arch])
    fields.update(overrides)
    return TransformerConfig(**fields)


@dataclass
class LayerStats:
    input_grad_norm: list[float]  # per block l: ||dL/dx_l||, x_l the residual stream entering block l
    param_grad_norm: list[float]  # per block l: L2 norm of the gradient of all its parameters
    stream_rms: list[float]  # per block l: RMS of the residual stream *leaving* block l
    loss: float


def layer_stats(arch: str, depth: int, *, seed: int = 0, batch: int = 8, **config_overrides) -> LayerStats:
    """Forward and backward one batch of Markov-chain tokens through a fresh model at init."""
    torch.manual_seed(seed)
    config = stack_config(arch, depth, **config_overrides)
    model = TinyTransformer(config)
    tokens = MarkovChain(config.vocab_size).sample(batch, config.block_size,
                                                   torch.Generator().manual_seed(seed))
    x = model.embed(tokens[:, :-1])
    inputs, outputs = [], []
    for block in model.blocks:
        x.retain_grad()
        inputs.append(x)
        x = block(x)
        outputs.append(x.detach())
    logits = model.lm_head(model.norm_f(x))
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
    loss.backward()
    return LayerStats(
        input_grad_norm=[float(t.grad.norm()) for t in inputs],
        param_grad_norm=[float(torch.sqrt(sum((p.grad ** 2).sum() for p in b.parameters())))
                         for b in model.blocks],
        stream_rms=[float(o.pow(2).mean().sqrt()) for o in outputs],
        loss=loss.item(),
    )


def depth_sweep(arch: str, depths: list[int], *, seed: int = 0, **config_overrides) -> dict[str, list[float]]:
    """For each depth: variance of the final residual stream and gradient norm of the last and
    first blocks' parameters. Keys: depth, output_var, last_block_grad, first_block_grad."""
    out = {"depth": [], "output_var": [], "last_block_grad": [], "first_block_grad": []}
    for depth in depths:
        stats = layer_stats(arch, depth, seed=seed, **config_overrides)
        out["depth"].append(depth)
        out["output_var"].append(stats.stream_rms[-1] ** 2)
        out["last_block_grad"].append(stats.param_grad_norm[-1])
        out["first_block_grad"].append(stats.param_grad_norm[0])
    return out


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p in y ∝ x^p."""
    lx, ly = torch.log(torch.tensor(xs, dtype=torch.float64)), torch.log(torch.tensor(ys, dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())
