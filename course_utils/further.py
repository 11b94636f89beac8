"""Chapter 8: the study note's four further questions as experiments, and the capstone training run.

The capstone trains the course's TinyTransformer on the byte data of chapter 6 with the pieces built
in earlier chapters: GPT-2 initialisation (2.3), weight-decay groups (5.2), gradient accumulation
(5.3), AdamW (5.1), global-norm clipping (1.6) and a warmup + cosine schedule (8.1). Each piece is
passed in, so the notebook can hand over the learner's own versions where they passed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_utils.models import TinyTransformer, TransformerConfig

# ------------------------------------------------------------------------------- Q1: depth

def depth_effects(depth: int, variant: str, *, init_std: float = 0.1, seed: int = 0) -> dict:
    """For a Pre-LN TinyTransformer at init (``normalization.PRE_LN_VARIANTS``): the std of the logits,
    the largest softmax probability (saturation), the loss and the global gradient norm on random tokens."""
    from course_utils.normalization import PRE_LN_VARIANTS

    torch.manual_seed(seed)
    model = TinyTransformer(TransformerConfig(vocab_size=64, block_size=16, n_layer=depth, d_model=64, n_head=4,
                                              init_std=init_std, **PRE_LN_VARIANTS[variant]))
    tokens = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(seed))
    logits, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    logits = logits.detach()
    return {"logit_std": float(logits.std()), "max_prob": float(torch.softmax(logits, -1).max(-1).values.mean()),
            "loss": float(loss.detach()), "grad_norm": float(grad_norm)}


# ------------------------------------------------------------------- 8.4 spike detector

def grad_norm_spikes(norms, window, factor):
    """Steps whose gradient norm jumps: the indices i >= window with norms[i] > factor * median of the
    ``window`` norms before it (norms[i - window : i], not including step i). For an even window the median
    is the mean of the two middle values (as statistics.median; torch.median takes the lower one). The
    median, unlike the mean, is not dragged up by an earlier spike in the window. Returns a list of ints, ascending.
    """
    flagged = []
    for i in range(window, len(norms)):
        recent = sorted(norms[i - window: i])
        mid = len(recent) // 2
        median = recent[mid] if len(recent) % 2 else 0.5 * (recent[mid - 1] + recent[mid])
        if norms[i] > factor * median:
            flagged.append(i)
    return flagged


# ------------------------------------------------------------------- 8.2 decay over a run

def remaining_after_decay(lrs, weight_decay):
    """What fraction of a weight that gets no gradient survives AdamW's decoupled decay over a run.

    lrs: the learning rate of each step (a list of floats); each step multiplies the weight by
    (1 - lr * weight_decay). Returns the product over all steps (a float; 1.0 for no steps).
    """
    remaining = 1.0
    for lr in lrs:
        remaining *= 1 - lr * weight_decay
    return remaining


# ---------------------------------------------------------------------------- capstone

CAPSTONE_CONFIG = TransformerConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=64,
                                    norm="rmsnorm", mlp="swiglu", position="rope")


@dataclass
class Pieces:
    """The building blocks a capstone run uses; the notebook fills them with ``use``/``from_progress``."""
    init: Callable  # 2.3: gpt_init_(model, std, depth_scaled)
    groups: Callable  # 5.2: weight_decay_groups(model, weight_decay) -> param groups
    accumulate: Callable  # 5.3: accumulate_gradients(model, micro_batches)
    adamw: Callable  # 5.1: adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay) -> (p, m, v)
    clip: Callable  # 1.6: clip_grad_norm(grads, max_norm) -> (clipped, total_norm)
    schedule: Callable  # 8.1: warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr)


def reference_pieces() -> Pieces:
    """The course's own building blocks, which are also the answers to those exercises (solutions re-exports them)."""
    from course_utils.models import gpt_init_
    from course_utils.optim import adamw_update, weight_decay_groups
    from course_utils.training import accumulate_gradients, clip_grad_norm, warmup_cosine_lr

    return Pieces(init=gpt_init_, groups=weight_decay_groups, accumulate=accumulate_gradients,
                  adamw=adamw_update, clip=clip_grad_norm, schedule=warmup_cosine_lr)


@dataclass
class CapstoneResult:
    losses: list[float] = field(default_factory=list)  # training loss per step (mean over micro-batches)
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm before clipping
    lrs: list[float] = field(default_factory=list)
    diverged: bool = False
    model: TinyTransformer | None = None


def capstone_run(pieces: Pieces, *, config: TransformerConfig = CAPSTONE_CONFIG, steps: int = 150,
                 micro_batches: int = 2, micro_batch_size: int = 8, max_lr: float = 3e-3, warmup_steps: int = 15,
                 weight_decay: float = 0.1, clip: float | None = 1.0, bad_batch_step: int | None = None,
                 seed: int = 0, progress: bool = True, on_step: Callable | None = None) -> CapstoneResult:
    """Train a TinyTransformer on the byte data with the given pieces; deterministic for a seed.

    Each step accumulates ``micro_batches`` micro-batches, clips the global norm to ``clip`` (None:
    no clipping), and applies AdamW with the scheduled lr to two groups (decay / no decay).
    ``bad_batch_step``: at that step the inputs are replaced by one byte repeated (a corrupt batch).
    ``on_step(step, result)`` is called after every step (for a live plot).
    """
    from course_utils import charlm

    torch.manual_seed(seed)
    model = TinyTransformer(config)
    pieces.init(model, 0.02, True)
    groups = [dict(g) for g in pieces.groups(model, weight_decay)]
    state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}
    train_data, _ = charlm.split(charlm.encode(charlm.training_text()))
    gen = torch.Generator().manual_seed(seed + 1)
    result = CapstoneResult(model=model)
    for step in tqdm(range(steps), disable=not progress, desc=f"{config.norm_position}-LN, warmup {warmup_steps}"):
        batches = []
        for _ in range(micro_batches):
            x = charlm.batch(train_data, micro_batch_size, gen, config.block_size)
            if step == bad_batch_step:
                x = torch.full_like(x, 0x41)  # "AAAA...": a corrupt batch
            batches.append((x[:, :-1], x[:, 1:]))
        pieces.accumulate(model, batches)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model(i)[0].flatten(0, 1), t.flatten()))
                       for i, t in batches) / len(batches)
        params = [p for g in groups for p in g["params"]]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        clipped, total = pieces.clip(grads, clip if clip else math.inf)
        if not (math.isfinite(loss) and math.isfinite(float(total))):
            result.diverged = True
            break
        lr = pieces.schedule(step, max_lr, warmup_steps, steps, max_lr / 10)
        new_grads = iter(clipped)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    m, v = state[id(p)]
                    new_p, m, v = pieces.adamw(p.detach(), next(new_grads), m, v, step + 1, lr, 0.9, 0.95, 1e-8,
                                               group["weight_decay"])
                    p.copy_(new_p)
                    state[id(p)] = (m, v)
        result.losses.append(loss)
        result.grad_norms.append(float(total))
        result.lrs.append(lr)
        if on_step is not None:
            on_step(step, result)
    return result


def norm_warmup_comparison(pieces: Pieces, *, n_layer: int = 4, steps: int = 100, warmup_steps: int = 20,
                           max_lr: float = 1e-2) -> dict[tuple[str, int], CapstoneResult]:
    """Chapter 1's question on the capstone model: Pre-LN and Post-LN with ``n_layer`` blocks, each trained
    ``steps`` steps (one micro-batch per step) with no warmup and with ``warmup_steps``. Keys: (norm position,
    warmup steps)."""
    results = {}
    for norm_position in ("pre", "post"):
        for warmup in (0, warmup_steps):
            config = dataclasses.replace(CAPSTONE_CONFIG, norm_position=norm_position, n_layer=n_layer)
            results[(norm_position, warmup)] = capstone_run(pieces, config=config, steps=steps, warmup_steps=warmup,
                                                            max_lr=max_lr, micro_batches=1, progress=False)
    return results


def clipping_by_learning_rate(lrs=(3e-2, 3e-3, 1e-3), *, steps: int = 120, clip: float = 1.0, depth: int = 2,
                              seed: int = 0) -> dict[float, dict[str, float]]:
    """Q4's "gradient norm always near max_norm -> lower the lr", tested: chapter 1's Pre-LN model of ``depth``
    blocks trained on the Markov chain with AdamW, clipping at ``clip``, once per learning rate. For each lr:
    "clipped" (fraction of the steps after the first third whose norm reached ``clip``), "median_norm" (their
    median gradient norm) and "loss" (mean training loss of the last 20 steps)."""
    from course_utils.gradflow import stack_config
    from course_utils.training import train_markov_lm

    out = {}
    for lr in lrs:
        run = train_markov_lm(stack_config("pre", depth), steps=steps, lr=lr, clip=clip, seed=seed, progress=False)
        late = run.grad_norms[steps // 3:]
        out[lr] = {"clipped": sum(n >= clip for n in late) / len(late), "median_norm": sorted(late)[len(late) // 2],
                   "loss": run.final_loss}
    return out
