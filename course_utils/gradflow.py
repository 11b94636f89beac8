"""Measurements of gradient flow through a Transformer stack at initialisation.

Plain functions (unit-tested) behind chapter 1's plots and sliders: per-layer gradient norms and
residual-stream scale for a stack without residuals, with Post-LN and with Pre-LN.

Used by chapters 1, 2, 5 and 8.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

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
    first blocks' parameters, ||dL/dx_L|| (the gradient the final norm passes back), and the gradient of the
    residual stream entering the first and the last block, ||dL/dx_1|| and ||dL/dx_L|| over x_1, x_L the streams
    *entering* blocks 1 and L (their ratio is what a vanishing gradient along depth would shrink).
    Keys: depth, output_var, last_block_grad, first_block_grad, output_grad, first_stream_grad, last_stream_grad."""
    out = {"depth": [], "output_var": [], "last_block_grad": [], "first_block_grad": [], "output_grad": [],
           "first_stream_grad": [], "last_stream_grad": []}
    for depth in depths:
        stats = layer_stats(arch, depth, seed=seed, **config_overrides)
        out["depth"].append(depth)
        out["output_var"].append(stats.stream_rms[-1] ** 2)
        out["last_block_grad"].append(stats.param_grad_norm[-1])
        out["first_block_grad"].append(stats.param_grad_norm[0])
        out["output_grad"].append(stats.output_grad_norm)
        out["first_stream_grad"].append(stats.input_grad_norm[0])
        out["last_stream_grad"].append(stats.input_grad_norm[-1])
    return out


def depth_sweep_over_seeds(arch: str, depths: list[int], *, seeds=range(3), return_seeds: bool = False,
                           **config_overrides) -> dict[str, list[float]]:
    """:func:`depth_sweep` for each seed, combined by the geometric mean (the sweep's quantities are scales,
    compared on log axes). Same keys as depth_sweep. With ``return_seeds``, returns (combined, the list of
    per-seed sweeps) so that a caller can show the seed spread."""
    sweeps = [depth_sweep(arch, depths, seed=seed, **config_overrides) for seed in seeds]
    combined = {"depth": list(depths)}
    for key in sweeps[0]:
        if key != "depth":
            combined[key] = [math.exp(sum(math.log(s[key][i]) for s in sweeps) / len(sweeps))
                             for i in range(len(depths))]
    return (combined, sweeps) if return_seeds else combined


POST_LN_SEEDS_CACHE = Path(__file__).resolve().parent / "data_files" / "ch01_post_ln_seeds.json"
POST_LN_SEEDS_GRID = dict(depths=(4, 16, 64), seeds=tuple(range(40)))  # the settings of the stored study


def post_ln_seed_study(*, depths=POST_LN_SEEDS_GRID["depths"], seeds=POST_LN_SEEDS_GRID["seeds"],
                       init: str = "fan-in") -> dict:
    """Does Post-LN's stream gradient vanish at init? One :func:`layer_stats` run of the Post-LN stack per depth and
    seed, at the initialisation named ``init`` (a key of INITS). Returns {"depths": [...], "seeds": [...],
    str(depth): {key: [one value per seed]}} with keys
    "stream_ratio": ||dL/dx_1|| / ||dL/dx_L|| (the streams entering blocks 1 and L),
    "param_ratio": block 1's parameter-gradient norm over block L's,
    "quarter_ratio": the bottom quarter's parameter-gradient norms over the top quarter's (geometric means over the
    quarter's blocks; depth >= 4),
    "factor_min", "factor_max": the smallest and largest factor ||dL/dx_l|| / ||dL/dx_{l+1}|| one block applies to
    the stream gradient (the geometric mean of those factors is stream_ratio ** (1 / (depth - 1))).
    Deterministic for a given arithmetic order. Stored in ``data_files/ch01_post_ln_seeds.json``
    (:func:`load_post_ln_seed_study`): the 120 runs take about 30 s."""
    def geomean(values):
        return math.exp(sum(math.log(v) for v in values) / len(values))

    out = {"depths": list(depths), "seeds": list(seeds)}
    for depth in depths:
        rows = out[str(depth)] = {k: [] for k in ("stream_ratio", "param_ratio", "quarter_ratio", "factor_min",
                                                  "factor_max")}
        q = depth // 4
        for seed in seeds:
            r = layer_stats("post", depth, seed=seed, **init_fields(init))
            g, p = r.input_grad_norm, r.param_grad_norm
            factors = [g[i] / g[i + 1] for i in range(depth - 1)]
            rows["stream_ratio"].append(g[0] / g[-1])
            rows["param_ratio"].append(p[0] / p[-1])
            rows["quarter_ratio"].append(geomean(p[:q]) / geomean(p[-q:]))
            rows["factor_min"].append(min(factors))
            rows["factor_max"].append(max(factors))
    return out


def load_post_ln_seed_study() -> dict:
    """The stored :func:`post_ln_seed_study` at POST_LN_SEEDS_GRID (fan-in init, 40 seeds, 4, 16 and 64 blocks),
    computed on the course CPU; tests/test_claims_ch01.py recomputes it and compares."""
    return json.loads(POST_LN_SEEDS_CACHE.read_text())


def layernorm_jacobian(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The Jacobian of LayerNorm without gain at one vector x (d,), from the formula

        d LN(x) / dx = (I - 1 1^T / d - y y^T / d) / sqrt(sigma^2 + eps),   y = LN(x).

    The bracket is the orthogonal projection onto the vectors orthogonal to 1 and to y (y is orthogonal
    to 1 and |y|^2 = d), so the Jacobian's largest singular value is exactly 1 / sqrt(sigma^2 + eps):
    LayerNorm divides every gradient through it by its input's centred standard deviation (plus eps), which is
    the input's RMS only when the input's mean is 0."""
    d = x.numel()
    sigma2 = x.var(unbiased=False)
    y = (x - x.mean()) / torch.sqrt(sigma2 + eps)
    eye = torch.eye(d, dtype=x.dtype)
    return (eye - torch.ones(d, d, dtype=x.dtype) / d - torch.outer(y, y) / d) / torch.sqrt(sigma2 + eps)


# The course's initialisations, by the names the prose uses (DESIGN.md's one vocabulary), as TransformerConfig fields.
INITS = {
    "fan-in": dict(init="fan_in"),  # every Linear N(0, 1/fan_in): Xiong et al. (2020)'s setting
    "fixed 0.02": dict(init="gpt", init_std=0.02),  # every weight N(0, 0.02^2): GPT-2 without its residual scaling
    "GPT-2": dict(init="gpt", init_std=0.02, depth_scaled_init=True),  # fixed 0.02, attn.proj/mlp.down / sqrt(2L)
}


def init_fields(init: str) -> dict:
    """The TransformerConfig fields of the initialisation named ``init`` (a key of INITS)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    return dict(INITS[init])


def warmup_comparison(*, depth: int = 6, steps: int = 120, lr: float = 1e-2, warmup_steps: int = 40,
                      seeds=(0, 1, 2), init: str = "fixed 0.02",
                      d_model: int = 64) -> tuple[dict[str, list["TrainResult"]], MarkovChain]:  # noqa: F821
    """Chapter 1's warmup experiment: Post-LN and Pre-LN stacks of ``depth`` blocks, each trained with and
    without a linear warmup of ``warmup_steps`` on the same Markov chain, once per seed (the seed sets the
    init and the batches), at the initialisation named ``init`` (a key of INITS). Returns (runs by label, one
    TrainResult per seed in ``seeds`` order; chain); labels are "post-LN, no warmup", "post-LN, warmup 40",
    "pre-LN, ...". Deterministic."""
    from course_utils.training import train_markov_lm

    chain = MarkovChain(vocab_size=32)
    runs = {}
    for arch in ("post", "pre"):
        for warmup in (0, warmup_steps):
            label = f"{arch}-LN, " + (f"warmup {warmup}" if warmup else "no warmup")
            config = stack_config(arch, depth=depth, block_size=16, d_model=d_model, **init_fields(init))
            runs[label] = [train_markov_lm(config, steps=steps, lr=lr, warmup_steps=warmup, chain=chain, seed=seed,
                                           progress=False) for seed in seeds]
    return runs, chain


def _warmup_cell(args):
    init, lr, arch, warmup, seed, depth, steps = args
    from course_utils.training import train_markov_lm

    config = stack_config(arch, depth=depth, block_size=16, **init_fields(init))
    run = train_markov_lm(config, steps=steps, lr=lr, warmup_steps=warmup, chain=MarkovChain(vocab_size=32),
                          seed=seed, progress=False)
    return float("inf") if run.diverged else run.final_loss


def warmup_grid(*, inits=tuple(INITS), lrs=(1e-3, 3e-3, 1e-2), seeds=(0, 1, 2), depth: int = 6, steps: int = 120,
                warmup_steps: int = 40, processes: int = 1, archs=("post", "pre"),
                warmups=None) -> dict[tuple, list[float]]:
    """The warmup experiment over init x learning rate: for each (init, lr, arch, warmup) with arch in ``archs`` and
    warmup in ``warmups`` (default: 0 and ``warmup_steps``), the final loss (mean of the last 20 steps; inf if it
    diverged) of one run of ``steps`` steps per seed, in ``seeds`` order. ``processes`` > 1 spreads the runs over
    worker processes of one thread each. Deterministic for a given arithmetic order (CPU and thread count).

    This is what :data:`WARMUP_GRID` and :data:`LONG_WARMUP_GRID` store (the notebook reads the stored tables: their
    runs take minutes); tests/test_claims_ch01.py re-runs them and checks the stored numbers and the verdicts drawn
    from them."""
    warmups = (0, warmup_steps) if warmups is None else tuple(warmups)
    keys = [(init, lr, arch, warmup) for init in inits for lr in lrs for arch in archs for warmup in warmups]
    jobs = [(*key, seed, depth, steps) for key in keys for seed in seeds]
    if processes > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes, initializer=torch.set_num_threads,
                                                        initargs=(1,)) as pool:
            finals = pool.map(_warmup_cell, jobs)
    else:
        finals = [_warmup_cell(job) for job in jobs]
    return {key: finals[i * len(seeds):(i + 1) * len(seeds)] for i, key in enumerate(keys)}


# What warmup_grid(processes=2) returned on the course CPU (torch 2.13, one thread per run, 2026-12-05):
# (init, lr, arch, warmup steps) -> final loss (mean of the last 20 of 120 steps) for seeds 0, 1, 2. Chapter 1
# reads it, since the 108 runs take minutes; tests/test_claims_ch01.py re-runs the grid and asserts the claims the
# chapter draws from this table on the fresh runs too. Some lr 1e-2 runs sit at the edge of stability: their
# final loss moves by up to 0.3 with the arithmetic order (another CPU or thread count), so the claims have margins.
WARMUP_GRID: dict[tuple, list[float]] = {
    ('fan-in', 0.001, 'post', 0): [3.230, 3.037, 2.976],
    ('fan-in', 0.001, 'post', 40): [3.154, 3.041, 3.004],
    ('fan-in', 0.001, 'pre', 0): [2.747, 2.729, 2.718],
    ('fan-in', 0.001, 'pre', 40): [2.793, 2.779, 2.768],
    ('fan-in', 0.003, 'post', 0): [3.434, 3.442, 3.439],
    ('fan-in', 0.003, 'post', 40): [3.444, 3.157, 2.876],
    ('fan-in', 0.003, 'pre', 0): [2.701, 2.680, 2.663],
    ('fan-in', 0.003, 'pre', 40): [2.711, 2.693, 2.673],
    ('fan-in', 0.01, 'post', 0): [3.438, 3.444, 3.437],
    ('fan-in', 0.01, 'post', 40): [3.441, 3.448, 3.438],
    ('fan-in', 0.01, 'pre', 0): [2.723, 2.714, 2.687],
    ('fan-in', 0.01, 'pre', 40): [2.707, 2.684, 2.671],
    ('fixed 0.02', 0.001, 'post', 0): [2.692, 2.681, 2.677],
    ('fixed 0.02', 0.001, 'post', 40): [2.723, 2.716, 2.713],
    ('fixed 0.02', 0.001, 'pre', 0): [2.774, 2.755, 2.755],
    ('fixed 0.02', 0.001, 'pre', 40): [2.788, 2.777, 2.774],
    ('fixed 0.02', 0.003, 'post', 0): [2.665, 2.640, 2.644],
    ('fixed 0.02', 0.003, 'post', 40): [2.681, 2.654, 2.656],
    ('fixed 0.02', 0.003, 'pre', 0): [2.765, 2.747, 2.746],
    ('fixed 0.02', 0.003, 'pre', 40): [2.748, 2.744, 2.725],
    ('fixed 0.02', 0.01, 'post', 0): [2.708, 2.690, 2.949],
    ('fixed 0.02', 0.01, 'post', 40): [2.742, 2.724, 2.703],
    ('fixed 0.02', 0.01, 'pre', 0): [3.037, 2.939, 2.984],
    ('fixed 0.02', 0.01, 'pre', 40): [2.764, 2.751, 2.755],
    ('GPT-2', 0.001, 'post', 0): [2.692, 2.680, 2.678],
    ('GPT-2', 0.001, 'post', 40): [2.725, 2.716, 2.715],
    ('GPT-2', 0.001, 'pre', 0): [2.764, 2.747, 2.744],
    ('GPT-2', 0.001, 'pre', 40): [2.778, 2.768, 2.763],
    ('GPT-2', 0.003, 'post', 0): [2.655, 2.632, 2.636],
    ('GPT-2', 0.003, 'post', 40): [2.670, 2.646, 2.648],
    ('GPT-2', 0.003, 'pre', 0): [2.756, 2.759, 2.754],
    ('GPT-2', 0.003, 'pre', 40): [2.749, 2.733, 2.716],
    ('GPT-2', 0.01, 'post', 0): [2.713, 2.690, 2.667],
    ('GPT-2', 0.01, 'post', 40): [2.739, 2.737, 2.700],
    ('GPT-2', 0.01, 'pre', 0): [2.953, 3.211, 2.865],
    ('GPT-2', 0.01, 'pre', 40): [2.759, 2.743, 2.734],
}


# What warmup_grid(inits=("fan-in",), lrs=(3e-3, 1e-2), archs=("post",), warmups=(0, 40, 100), steps=300, processes=2)
# returned on the course CPU (torch 2.13, one thread per run, 2026-12-06): chapter 1's longer Post-LN runs at fan-in
# init, where the 120-step grid leaves Post-LN stalled; does a longer warmup rescue it? Same keys as WARMUP_GRID, final
# losses (mean of the last 20 of 300 steps) for seeds 0, 1, 2. tests/test_claims_ch01.py re-runs it (slow, rerun).
LONG_WARMUP_GRID: dict[tuple, list[float]] = {
    ('fan-in', 0.003, 'post', 0): [3.436, 3.424, 3.440],
    ('fan-in', 0.003, 'post', 40): [3.429, 2.674, 2.656],
    ('fan-in', 0.003, 'post', 100): [2.681, 2.642, 2.659],
    ('fan-in', 0.01, 'post', 0): [3.425, 3.420, 3.431],
    ('fan-in', 0.01, 'post', 40): [3.427, 3.420, 3.432],
    ('fan-in', 0.01, 'post', 100): [3.428, 3.418, 3.434],
}


def unigram_entropy(chain: MarkovChain) -> float:
    """Nats per token of the chain's stationary distribution: the loss of a model that predicts token frequencies
    and ignores the context (what a stalled run reaches)."""
    pi = chain.stationary()
    return float(-(pi * torch.log(pi)).sum())


def warmup_verdicts(grid: dict[tuple, list[float]], margin: float = 0.1) -> dict[tuple, dict[str, dict]]:
    """For each (init, lr) of a :func:`warmup_grid` result and each arch ("post", "pre"): the warmup gain per seed
    ``diffs`` (final loss without warmup minus with, paired by seed: the two runs of a seed share the init and the
    batches, so the pairing removes the between-seed variation; > 0 means warmup helped), their mean ``effect``, the
    seed ``spread`` (the larger max - min over seeds of the two arms, shown beside the effect), the arms' means, and
    the verdict, judged seed by seed: "helps" when every seed's gain exceeds ``margin``, "hurts" when every seed loses
    more than ``margin``, "small" when no seed's gain or loss exceeds it, otherwise "mixed" (the seeds disagree).
    The default margin, 0.1 nats, is about a tenth of the way from the unigram entropy (3.42, a stalled run) to the
    entropy rate (2.49) of chapter 1's Markov chain: a consistent change smaller than that counts as "small"."""
    out = {}
    for init, lr, arch, warmup in grid:
        if warmup == 0:
            continue
        cold, warm = grid[(init, lr, arch, 0)], grid[(init, lr, arch, warmup)]
        diffs = [c - w for c, w in zip(cold, warm)]
        effect = sum(diffs) / len(diffs)
        spread = max(max(cold) - min(cold), max(warm) - min(warm))
        if all(d > margin for d in diffs):
            verdict = "helps"
        elif all(d < -margin for d in diffs):
            verdict = "hurts"
        elif all(abs(d) <= margin for d in diffs):
            verdict = "small"
        else:
            verdict = "mixed"
        out.setdefault((init, lr), {})[arch] = dict(effect=effect, spread=spread, verdict=verdict, diffs=diffs,
                                                    no_warmup=sum(cold) / len(cold), warmup=sum(warm) / len(warm))
    return out


def figure_warmup_grid(grid: dict[tuple, list[float]], floor: float, unigram: float):
    """Final loss (mean over seeds, bars = min to max) of each wiring with and without warmup, one panel per init,
    learning rates along x."""
    inits = list(dict.fromkeys(k[0] for k in grid))
    lrs = list(dict.fromkeys(k[1] for k in grid))
    warmups = sorted(dict.fromkeys(k[3] for k in grid))
    fig, axes = subplots(len(inits), width=4.0 * len(inits), sharey=True)
    axes = list(axes) if len(inits) > 1 else [axes]
    for ax, init in zip(axes, inits):
        for j, (arch, warmup) in enumerate((a, w) for a in ("post", "pre") for w in warmups):
            xs = [i + (j - 1.5) * 0.12 for i in range(len(lrs))]
            finals = [grid[(init, lr, arch, warmup)] for lr in lrs]
            means = [sum(f) / len(f) for f in finals]
            err = [[m - min(f) for m, f in zip(means, finals)], [max(f) - m for m, f in zip(means, finals)]]
            style = series(arch)
            ax.errorbar(xs, means, yerr=err, color=style["color"], fmt="o" if warmup == 0 else "s",
                        mfc="white" if warmup else style["color"], capsize=3, ms=5,
                        label=f"{arch}-LN, " + (f"warmup {warmup}" if warmup else "no warmup"))
        ax.axhline(floor, color="k", lw=0.8, ls=":")
        ax.axhline(unigram, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(lrs)), labels=[f"{lr:g}" for lr in lrs])
        ax.set(xlabel="peak learning rate", title=f"{init} init")
    axes[0].set_ylabel("final loss (nats), mean and seed range")
    axes[0].text(0.02, floor + 0.02, "entropy rate", transform=axes[0].get_yaxis_transform(), fontsize=8)
    axes[0].text(0.02, unigram + 0.02, "unigram entropy", transform=axes[0].get_yaxis_transform(), fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 0.0), fontsize=9)
    return fig


# parameter groups of a TinyTransformer block stack, by the suffix of the parameter's name
PARAM_GROUPS = {"embeddings": ("tok_emb.weight", "pos_emb.weight"), "attn qkv": ("attn.qkv.weight",),
                "attn out-proj": ("attn.proj.weight",), "MLP up": ("mlp.up.weight",),
                "MLP down": ("mlp.down.weight",), "LM head": ("lm_head.weight",)}


def update_to_data_ratios(arch: str, init: str, *, lr: float = 1e-2, steps: int = 1, depth: int = 6,
                          seed: int = 0) -> dict[str, float]:
    """The update-to-data ratio ||theta_t - theta_0|| / ||theta_0|| of each parameter group (PARAM_GROUPS) after
    ``steps`` AdamW steps (betas 0.9, 0.95, no decay, no warmup, as in chapter 1's warmup runs) from the init named
    ``init``, on Markov-chain batches of 16. At step 1 Adam moves every entry by about ``lr`` whatever its gradient,
    so the ratio is about lr / (the group's init std): what the init decides about the first steps."""
    torch.manual_seed(seed)
    config = stack_config(arch, depth=depth, block_size=16, **init_fields(init))
    model = TinyTransformer(config)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    chain, data_gen = MarkovChain(vocab_size=config.vocab_size), torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        tokens = chain.sample(16, config.block_size, data_gen)
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ratios = {}
    for group, suffixes in PARAM_GROUPS.items():
        names = [n for n in start if n.endswith(suffixes)]
        moved = math.sqrt(sum(float((dict(model.named_parameters())[n].detach() - start[n]).pow(2).sum())
                              for n in names))
        size = math.sqrt(sum(float(start[n].pow(2).sum()) for n in names))
        ratios[group] = moved / size
    return ratios


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


def swiglu_first_grad_norms(seed: int = 0, init_scale: float = 1.0) -> dict[str, float]:
    """Gradient norms on the first training batch of :func:`swiglu_spike_run` (the same model, batch and MSE loss), per
    parameter ("W_in", "W_out") and together ("global", what ``swiglu_spike_run(...).grad_norms[0]`` records)."""
    teacher, params, predict, _, g_ = swiglu_regressor(seed, init_scale)
    x = torch.randn(32, teacher.shape[0], generator=g_)
    grads = torch.autograd.grad(F.mse_loss(predict(x), torch.tanh(x @ teacher)), params)
    norms = {name: float(gr.norm()) for name, gr in zip(("W_in", "W_out"), grads)}
    return {**norms, "global": math.sqrt(sum(n ** 2 for n in norms.values()))}


@dataclass
class SpikeRun:
    losses: list[float]  # loss on a fixed clean evaluation batch after each step
    grad_norms: list[float]  # global gradient norm at each step, before clipping


def swiglu_regressor(seed: int = 0, init_scale: float = 1.0, d: int = 16, hidden: int = 32):
    """The bad-batch demo's task and model, drawn from one generator seeded with ``seed``: a teacher ``(d, 1)`` whose
    target is tanh(x @ teacher), the SwiGLU MLP's weights ``[W_in (d, 2 hidden): gate and up side by side, W_out
    (hidden, 1)]`` at the fan-in init (W_in times ``init_scale``), its forward ``predict(x)``, a fixed evaluation
    batch ``(x_eval (256, d), y_eval)``, and the generator, which then draws the training batches."""
    g_ = torch.Generator().manual_seed(seed)
    teacher = torch.randn(d, 1, generator=g_) / math.sqrt(d)
    w_in = (init_scale * torch.randn(d, 2 * hidden, generator=g_) / math.sqrt(d)).requires_grad_()
    w_out = (torch.randn(hidden, 1, generator=g_) / math.sqrt(hidden)).requires_grad_()

    def predict(x):
        gate, up = (x @ w_in).chunk(2, dim=-1)  # (B, hidden) each
        return (F.silu(gate) * up) @ w_out

    x_eval = torch.randn(256, d, generator=g_)
    return teacher, [w_in, w_out], predict, (x_eval, torch.tanh(x_eval @ teacher)), g_


@torch.no_grad()
def adam_update_(params, grads, moments, step: int, lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8) -> None:
    """One bias-corrected Adam step, in place: ``moments`` is (list of m, list of v), one tensor per parameter;
    ``step`` counts from 0 (so the corrections are 1 - beta ** (step + 1))."""
    for p, gr, m, v in zip(params, grads, moments[0], moments[1]):
        m.mul_(betas[0]).add_((1 - betas[0]) * gr)
        v.mul_(betas[1]).add_((1 - betas[1]) * gr * gr)
        m_hat, v_hat = m / (1 - betas[0] ** (step + 1)), v / (1 - betas[1] ** (step + 1))
        p -= lr * m_hat / (v_hat.sqrt() + eps)


def swiglu_spike_run(spike_scale: float, clip: float | None, *, steps: int = 80, spike_step: int = 30,
                     lr: float = 0.05, seed: int = 0, clip_fn=None, optimizer: str = "sgd",
                     betas: tuple[float, float] = (0.9, 0.95), init_scale: float = 1.0) -> SpikeRun:
    """Train :func:`swiglu_regressor` with SGD (or ``optimizer="adam"``: :func:`adam_update_` with ``betas``); at
    ``spike_step`` the batch's inputs are multiplied by ``spike_scale`` (a bad batch). With ``clip`` set, gradients
    are clipped to that global norm by ``clip_fn(grads, max_norm) -> (clipped, norm)`` (default: the course's
    clip_grad_norm). ``init_scale`` multiplies W_in at init (a mis-scaled init; 1.0 is the fan-in init)."""
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    from course_utils.training import clip_grad_norm

    clip_fn = clip_fn or clip_grad_norm
    teacher, params, predict, (x_eval, y_eval), g_ = swiglu_regressor(seed, init_scale)
    moments = ([torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params])
    losses, norms = [], []
    for step in range(steps):
        x = torch.randn(32, teacher.shape[0], generator=g_)
        y = torch.tanh(x @ teacher)
        if step == spike_step:
            x = spike_scale * x  # the bad batch
        grads = torch.autograd.grad(F.mse_loss(predict(x), y), params)
        norms.append(float(torch.sqrt(sum((gr ** 2).sum() for gr in grads))))  # before clipping
        if clip is not None:
            grads, _ = clip_fn(list(grads), clip)
        with torch.no_grad():
            if optimizer == "adam":
                adam_update_(params, grads, moments, step, lr, betas)
            else:
                for p, gr in zip(params, grads):
                    p -= lr * gr
            losses.append(float(F.mse_loss(predict(x_eval), y_eval)))
    return SpikeRun(losses, norms)


def spike_study(*, seeds=(0, 1, 2), spike_scale: float = 10.0, spike_step: int = 30,
                thresholds=(None, 1.0, 5.0)) -> dict[tuple, list[dict]]:
    """The bad-batch run of :func:`swiglu_spike_run` under SGD (lr 0.05) and Adam (lr 1e-2, betas 0.9, 0.95), for
    each clipping threshold in ``thresholds`` (None: no clipping) and seed. Per (optimizer, threshold), one dict per
    seed: ``before`` (eval loss after the step before the spike), ``after`` (10 steps after it), ``final``,
    ``blew_up`` (a loss above 1e3 or not finite), ``median_norm`` (median global gradient norm of the clean steps
    before the spike) and ``clipped`` (fraction of those clean steps whose norm exceeds the threshold)."""
    out = {}
    for optimizer, lr in (("sgd", 0.05), ("adam", 1e-2)):
        for clip in thresholds:
            rows = []
            for seed in seeds:
                run = swiglu_spike_run(spike_scale, clip, lr=lr, seed=seed, optimizer=optimizer,
                                       spike_step=spike_step)
                clean = sorted(run.grad_norms[:spike_step])
                rows.append(dict(before=run.losses[spike_step - 1], after=run.losses[spike_step + 10],
                                 final=run.losses[-1],
                                 blew_up=not all(math.isfinite(v) and v < 1e3 for v in run.losses),
                                 median_norm=clean[len(clean) // 2],
                                 clipped=0.0 if clip is None else sum(v > clip for v in clean) / len(clean)))
            out[(optimizer, clip)] = rows
    return out


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


def figure_layer_stats(depth: int = 12, init: str = "fan_in", init_std: float = 0.02, seed: int = 0):
    """Per-block parameter-gradient norm and residual-stream RMS at init, for every wiring (:func:`layer_stats` with
    ``seed``). ``init`` is "fan_in" (unit scale) or "gpt" (every weight N(0, init_std^2): "fixed 0.02" at the default
    std, GPT-2's init without its residual scaling)."""
    fig, (ax_g, ax_s) = subplots(2, width=10)
    for arch in ARCHITECTURES:
        stats = layer_stats(arch, depth, seed=seed, init=init, init_std=init_std)
        layers = list(range(1, depth + 1))
        ax_g.plot(layers, stats.param_grad_norm, **series(arch), label=arch)
        ax_s.plot(layers, stats.stream_rms, **series(arch), label=arch)
    log_scale(ax_g)
    log_scale(ax_s)
    setting = "fan-in init" if init == "fan_in" else f"fixed-std init, std {init_std:.3g}"
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
    """RMS of SwiGLU's output and of its two input gradients against the activation scale s (log-log), from
    :func:`swiglu_scale_sweep`."""
    fig, ax = subplots()
    ax.plot(sweep["scale"], sweep["output"], **series("safe"), label="RMS of h = silu(s·a)·(s·b)")
    ax.plot(sweep["scale"], sweep["grad_gate"], **series("naive"), label="RMS of dL/d gate")
    ax.plot(sweep["scale"], sweep["grad_up"], **series("online"), label="RMS of dL/d up")
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
