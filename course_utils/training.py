"""Small training utilities shared by the chapters: global-norm clipping, warmup, gradient
accumulation, a CPU train loop, and the final loss the chapters compare runs by.

Used by chapters 1, 5 and 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_utils.data import MarkovChain
from course_utils.models import TinyTransformer, TransformerConfig


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float):
    """Scale a list of gradients so that their *global* L2 norm is at most ``max_norm``.

    grads: tensors of any shapes (the gradients of all parameters); max_norm > 0.
    Returns ``(clipped, total_norm)``: new tensors (the inputs are not modified) scaled by
    min(1, max_norm / (total_norm + 1e-6)), and the norm before clipping as a 0-d float32 tensor,
    total_norm = sqrt(sum over all tensors of sum(g**2)). Same rule as torch.nn.utils.clip_grad_norm_.
    """
    if not grads:
        return [], torch.tensor(0.0)
    total_norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    return [g * scale.to(g.dtype) for g in grads], total_norm


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup: the learning-rate multiplier at ``step`` (0-based), reaching 1 after warmup."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Learning rate at ``step`` (0-based) for linear warmup then cosine decay.

    Steps 0 .. warmup_steps - 1: max_lr * (step + 1) / warmup_steps (never 0, reaches max_lr at the
    last warmup step). Then, with progress = (step - warmup_steps) / (total_steps - warmup_steps):
    min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2, so max_lr right after warmup and
    min_lr at step total_steps. Steps beyond total_steps stay at min_lr. If warmup_steps >= total_steps,
    the warmup rule wins for steps below warmup_steps (even past total_steps) and the denominator is taken
    as 1: max_lr at step warmup_steps, min_lr after it (this case overrides the two sentences before it).
    Returns a number (a float; a 0-d tensor is accepted
    too).
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def accumulate_gradients(model, micro_batches):
    """Gradient accumulation that equals one big batch, whatever each micro-batch counts.

    model(inputs) returns (logits (B, T, V), anything); micro_batches: list of (inputs (B, T),
    labels (B, T)) with label -100 where a position is not counted (padding, prompt). Afterwards
    every parameter's .grad is the gradient of the mean cross-entropy over *all counted tokens of
    all micro-batches*, with one backward per micro-batch. Whatever .grad held before must not
    count. Each micro-batch's summed loss is divided by the total count, not by len(micro_batches).
    """
    model.zero_grad(set_to_none=True)
    total = sum(int((labels != -100).sum()) for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        logits, _ = model(inputs)
        loss_sum = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        (loss_sum / total).backward()


def final_loss(losses: list[float]) -> float:
    """The mean of the last 20 of a run's per-step ``losses``: what the chapters compare runs by, since one step's
    loss is too noisy. A run of fewer than 20 steps still has its sum divided by 20."""
    return sum(losses[-20:]) / 20


@dataclass
class TrainResult:
    losses: list[float]  # training loss per step
    grad_norms: list[float]  # global gradient norm per step (before any clipping)
    diverged: bool  # a loss became NaN/inf and training stopped

    @property
    def final_loss(self) -> float:
        """:func:`final_loss` of this run's losses: the mean of the last 20 recorded steps."""
        return final_loss(self.losses)


def train_markov_lm(config: TransformerConfig, *, steps: int = 150, lr: float = 3e-3,
                    warmup_steps: int = 0, batch: int = 16, clip: float | None = None,
                    seed: int = 0, chain: MarkovChain | None = None, progress: bool = True,
                    optimizer: str = "adamw", make_model=None) -> TrainResult:
    """Train a TinyTransformer on Markov-chain text; deterministic for a given seed. ``optimizer`` is "adamw"
    (betas 0.9, 0.95, no decay) or "adafactor" (``torch.optim.Adafactor`` with its defaults: no momentum, factored
    second moment, steps relative to each parameter's RMS). ``make_model(config)`` builds the model instead of
    ``TinyTransformer(config)`` (a variant, e.g. chapter 3's stream with a shared offset), after the same seeding."""
    if optimizer not in ("adamw", "adafactor"):
        raise ValueError(f"optimizer must be 'adamw' or 'adafactor', got {optimizer!r}")
    torch.manual_seed(seed)
    chain = chain or MarkovChain(vocab_size=config.vocab_size)
    model = (make_model or TinyTransformer)(config)
    if optimizer == "adafactor":
        opt = torch.optim.Adafactor(model.parameters(), lr=lr)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_factor(s, warmup_steps))
    data_gen = torch.Generator().manual_seed(seed + 1)
    losses, norms = [], []
    bar = tqdm(range(steps), disable=not progress, leave=False,
               desc=f"{config.norm_position}-LN, warmup {warmup_steps}")
    for _ in bar:
        tokens = chain.sample(batch, config.block_size, data_gen)
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        if not math.isfinite(loss.item()):
            return TrainResult(losses, norms, diverged=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else math.inf)
        losses.append(loss.item())
        norms.append(float(total))
        opt.step()
        sched.step()
    return TrainResult(losses, norms, diverged=False)


def triton_step_agreement(config: TransformerConfig, *, steps: int = 3, batch: int = 2, length: int | None = None,
                          lr: float = 1e-2, seed: int = 0) -> list[dict]:
    """One model trained twice on the same random batches (``batch`` windows of ``length`` tokens, default the block
    size) for ``steps`` AdamW steps: with PyTorch's ops and
    ``torch.optim.AdamW`` (the reference run), and with every hot op in the course's Triton kernels
    (``config.kernels="triton"``: norms, SwiGLU, attention forward and backward, fused cross-entropy) and the fused
    ``TritonAdamW`` step. Each part is compared from the same inputs: before each step the Triton model takes the
    reference's weights and optimizer state, and ``TritonAdamW`` steps on the reference's gradients. (Adam divides
    by sqrt(v): at step 1 an entry whose gradient is smaller than the rounding difference between two backward passes
    moves by up to lr either way, which would say nothing about either kernel.)

    Returns one dict per step: both losses; the largest gradient difference over all parameters, relative to that
    parameter's largest gradient entry (the forward and backward kernels); the largest parameter difference after
    the two optimizer steps (the AdamW kernel). Needs Triton.
    """
    from dataclasses import replace

    from course_utils.kernels.adamw import TritonAdamW

    torch.manual_seed(seed)
    reference = TinyTransformer(replace(config, kernels="torch"))
    fused = TinyTransformer(replace(config, kernels="triton"))
    reference_opt, fused_opt = torch.optim.AdamW(reference.parameters(), lr=lr), TritonAdamW(fused.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for step in range(1, steps + 1):
        fused.load_state_dict(reference.state_dict())
        for p_ref, p_fused in zip(reference.parameters(), fused.parameters()):
            state = reference_opt.state.get(p_ref)
            if state:
                fused_opt.state[p_fused] = {"step": int(state["step"]), "exp_avg": state["exp_avg"].clone(),
                                            "exp_avg_sq": state["exp_avg_sq"].clone()}
        tokens = torch.randint(config.vocab_size, (batch, (length or config.block_size) + 1), generator=generator)
        losses = []
        for model, optimizer in ((reference, reference_opt), (fused, fused_opt)):
            optimizer.zero_grad()
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
            loss.backward()
            losses.append(loss.item())
        pairs = list(zip(reference.parameters(), fused.parameters()))
        grad_gap = max(((a.grad - b.grad).abs().max() / a.grad.abs().max().clamp_min(1e-30)).item() for a, b in pairs)
        for a, b in pairs:
            b.grad = a.grad.clone()
        reference_opt.step()
        fused_opt.step()
        rows.append({"step": step, "torch loss": losses[0], "triton loss": losses[1],
                     "loss gap": abs(losses[0] - losses[1]),
                     "grad gap": grad_gap, "param gap": max((a - b).abs().max().item() for a, b in pairs)})
    return rows
