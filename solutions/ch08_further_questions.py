"""Notebook 08: further questions and the capstone. The answers live in course_utils (training.py for the
schedule, further.py, sampling.py) because the capstone and the widgets use them."""
import functools
import math

import torch
import torch.nn.functional as F

from course_utils.further import (
    CapstoneResult,
    capstone_loop,
    grad_norm_spikes,
    reference_pieces,
    remaining_after_decay,
)
from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.sampling import softmax_with_temperature
from course_utils.training import warmup_cosine_lr

CHAPTER = "8. Further questions (Further Questions)"

__all__ = ["warmup_cosine_lr", "softmax_with_temperature", "grad_norm_spikes", "remaining_after_decay",
           "capstone_loop"]


# ------------------------------------------------------------------------------ 8.1 schedule

def _schedule_starts_at_zero(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr)


def _schedule_cosine_from_zero(step, max_lr, warmup_steps, total_steps, min_lr=0.0):  # cosine clock ignores warmup
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, step / total_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _schedule_no_floor(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    return warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, 0.0)


def _schedule_cases():
    return [Case(f"step {s} of 100, warmup 10, min_lr 1e-4", (s, 1e-3, 10, 100, 1e-4))
            for s in (0, 9, 10, 32, 55, 100, 150)] + [
        Case("no warmup, step 0", (0, 3e-4, 0, 50, 0.0)),
        # warmup longer than the run: the warmup rule wins below warmup_steps, min_lr after warmup_steps
        *(Case(f"step {s}, warmup 20 longer than total_steps 10", (s, 1e-3, 20, 10, 1e-4)) for s in (15, 21)),
    ]


EX_8_1 = Exercise(
    id="8.1", title="warmup + cosine learning-rate schedule", reference=warmup_cosine_lr, cases=_schedule_cases,
    mistakes=(
        Mistake("warmup starts at 0", _schedule_starts_at_zero,
                "A convention, not a bug: max_lr * step / warmup_steps (lr 0 at step 0, as Hugging Face's "
                "get_cosine_schedule_with_warmup does) is common too. This exercise's contract is that of Karpathy's "
                "build-nanogpt (train_gpt2.py): max_lr * (step + 1) / warmup_steps, so step 0 already trains and the "
                "warmup ends at max_lr."),
        Mistake("cosine counted from step 0", _schedule_cosine_from_zero,
                "The cosine starts after the warmup: progress = (step - warmup_steps) / "
                "(total_steps - warmup_steps)."),
        Mistake("no floor", _schedule_no_floor, "The cosine goes from max_lr down to min_lr, not to 0."),
    ),
)


# ----------------------------------------------------------------- 8.2 decay over a run

def _decay_summed(lrs, weight_decay):
    return 1 - sum(lr * weight_decay for lr in lrs)


def _decay_at_peak_lr(lrs, weight_decay):
    return (1 - max(lrs, default=0.0) * weight_decay) ** len(lrs)


def _decay_without_lr(lrs, weight_decay):
    return (1 - weight_decay) ** len(lrs)


def _decay_exponential(lrs, weight_decay):
    return math.exp(-weight_decay * sum(lrs))


def _decay_cases():
    cosine = [warmup_cosine_lr(s, 3e-4, 100, 2000, 3e-5) for s in range(2000)]
    return [
        Case("constant lr 1e-3, 500 steps, wd 0.1", ([1e-3] * 500, 0.1)),
        Case("warmup + cosine, 2000 steps, wd 0.1", (cosine, 0.1)),
        Case("three steps", ([0.5, 0.25, 0.1], 0.2)),
        Case("no steps", ([], 0.1)),
        Case("large lr x wd", ([0.5] * 10, 1.0)),
    ]


EX_8_2 = Exercise(
    id="8.2", title="what decoupled decay leaves of a weight whose gradient is zero",
    reference=remaining_after_decay, cases=_decay_cases,
    hints=("A weight whose gradient is zero gets no Adam step (its m and v stay 0), so only the decay moves it. "
           "Write what one AdamW step with learning rate lr does to such a weight w.",
           "One step: w <- w * (1 - lr * weight_decay), with that step's own lr. After the run w_T = w_0 * the product "
           "of those factors, so the fraction left, w_T / w_0, does not depend on w_0.",
           "remaining = 1.0; for lr in lrs: remaining *= 1 - lr * weight_decay; return remaining (math.prod of the "
           "factors does the same; an empty run leaves 1.0)."),
    mistakes=(
        Mistake("summed instead of multiplied", _decay_summed,
                "Each step multiplies by (1 - lr * wd): take the product, not 1 - the sum."),
        Mistake("peak lr at every step", _decay_at_peak_lr,
                "Use each step's own learning rate: the schedule changes how much decay the run applies."),
        Mistake("decay without the lr", _decay_without_lr,
                "PyTorch's AdamW multiplies by (1 - lr * weight_decay): the decay per step scales with the lr."),
        Mistake("exponential approximation", _decay_exponential,
                "exp(-weight_decay * sum(lrs)) only approximates the product (close while every lr * wd is small): "
                "each step multiplies by exactly (1 - lr * weight_decay)."),
    ),
)


# ------------------------------------------------------------------------ 8.3 temperature

def _tempered_naive(logits, temperature):
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def _tempered_argmax_at_zero(logits, temperature):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, dim=-1)


def _tempered_times_t(logits, temperature):
    return torch.softmax(logits * temperature, dim=-1) if temperature > 0 else softmax_with_temperature(logits, 0)


def _tempered_divide_first(logits, temperature):
    if temperature == 0:
        return softmax_with_temperature(logits, 0.0)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)


def _tempered_negative_accepted(logits, temperature):
    if temperature == 0:
        return softmax_with_temperature(logits, 0.0)
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)


def _temperature_cases():
    g = torch.Generator().manual_seed(82)
    return [
        Case("T = -1 (the contract: ValueError)", (torch.randn(2, 5, generator=g), -1.0), raises=ValueError),
        Case("T = 1, batch of 3", (torch.randn(3, 10, generator=g), 1.0)),
        Case("T = 0.5", (2 * torch.randn(12, generator=g), 0.5)),
        Case("T = 0.01, logits around 5 (exp overflows naively)", (5 + torch.randn(2, 8, generator=g), 0.01)),
        Case("T = 0, a tie at the top", (torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 1.0, 1.0]]), 0.0)),
        # z / T overflows float32 here (|z| / 1e-40 > 3.4e38): only subtracting the max before dividing survives
        Case("T = 1e-40, float32 (z / T overflows; a tie in row 1, negative logits in row 2)",
             (torch.tensor([[10.0, 9.0, 10.0, 0.0], [-10.0, -9.0, -30.0, -9.5]]), 1e-40)),
        Case("T = 50, float64", (torch.randn(6, generator=g, dtype=torch.float64), 50.0)),
        # 1e-46 is below float32's smallest subnormal: T is 0 in the dtype, so (z - max) / T would be 0 / 0
        Case("T = 1e-46, float32 (T rounds to 0 in float32: the T = 0 limit)",
             (torch.tensor([[10.0, 9.0, 10.0, 0.0], [-10.0, -9.0, -30.0, -9.5]]), 1e-46)),
    ]


EX_8_3 = Exercise(
    id="8.3", title="softmax with temperature, down to T = 0", reference=softmax_with_temperature,
    cases=_temperature_cases,
    mistakes=(
        Mistake("exp without the max", _tempered_naive,
                "exp(z / T) overflows for small T (z / T > 88.7 in float32): subtract the row max first, then "
                "divide by T."),
        Mistake("divided by T before subtracting the max", _tempered_divide_first,
                "z / T itself overflows float32 to +-inf when |z| / T > 3.4e38 (z = 10 at T = 1e-40), and "
                "softmax returns NaN (inf - inf): subtract the row max first, (z - max) / T is 0 at the maxima "
                "and <= 0 elsewhere."),
        Mistake("argmax at T = 0", _tempered_argmax_at_zero,
                "The limit T -> 0 of softmax(z / T) splits the mass equally between tied maxima; "
                "argmax picks one."),
        Mistake("multiplied by T", _tempered_times_t,
                "Divide the logits by T: small T sharpens, large T flattens."),
        Mistake("negative T accepted", _tempered_negative_accepted,
                "A negative temperature turns the ranking upside down (the least likely token becomes the most "
                "likely): the contract says raise ValueError for T < 0."),
    ),
)


# --------------------------------------------------------------------- 8.4 spike detector

def _spikes_window_includes_current(norms, window, factor):
    out = []
    for i in range(window, len(norms)):
        recent = sorted(norms[i - window + 1: i + 1])
        mid = len(recent) // 2
        median = recent[mid] if len(recent) % 2 else 0.5 * (recent[mid - 1] + recent[mid])
        if norms[i] > factor * median:
            out.append(i)
    return out


def _spikes_mean(norms, window, factor):
    return [i for i in range(window, len(norms)) if norms[i] > factor * sum(norms[i - window: i]) / window]


def _spikes_from_start(norms, window, factor):
    out = []
    for i in range(1, len(norms)):
        recent = sorted(norms[max(0, i - window): i])
        mid = len(recent) // 2
        median = recent[mid] if len(recent) % 2 else 0.5 * (recent[mid - 1] + recent[mid])
        if norms[i] > factor * median:
            out.append(i)
    return out


def _spikes_lower_median(norms, window, factor):  # torch.median: the lower of the two middle values
    return [i for i in range(window, len(norms))
            if norms[i] > factor * float(torch.tensor(norms[i - window: i]).median())]


def _spikes_upper_median(norms, window, factor):  # the upper of the two middle values for an even count
    found = []
    for i in range(window, len(norms)):
        recent = sorted(norms[i - window: i])
        if norms[i] > factor * recent[len(recent) // 2]:
            found.append(i)
    return found


def _spike_cases():
    flat = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 9.0, 1.0, 1.1]
    two = [1.0] * 6 + [12.0, 1.0, 1.2, 11.0, 1.0, 0.9]
    early = [1.0, 20.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    return [
        Case("one spike at step 7, window 4, factor 3", (flat, 4, 3.0)),
        Case("window 2, factor 3: a 5x spike", ([1.0, 1.0, 1.0, 5.0, 1.0], 2, 3.0)),
        Case("two spikes 3 steps apart, window 5, factor 4", (two, 5, 4.0)),
        Case("a spike before a full window", (early, 3, 3.0)),
        Case("a steady decline, window 2, factor 1.5", ([4.0, 3.0, 2.5, 2.0, 1.8, 1.7], 2, 1.5)),
        Case("rising trend, window 3, factor 1.2", ([1.0, 1.1, 1.3, 1.6, 2.0, 2.6, 3.4], 3, 1.2)),
        Case("the level drops, then a 4x jump: only the window knows", ([10.0] * 6 + [1.0] * 6 + [4.0], 4, 3.0)),
        Case("exactly factor x median is not a spike", ([1.0, 1.0, 1.0, 3.0, 3.1], 3, 3.0)),
        Case("one small and one large value in the window", ([1.0, 1.0, 1.0, 6.0, 1.0, 2.5, 1.0], 3, 2.0)),
        Case("an even window: the median of [1, 3] is 2", ([1.0, 3.0, 5.0], 2, 3.0)),
        # 7 > 3 x 2 is a spike for the median 2; the upper middle value (3) would miss it, the lower (1) not
        Case("an even window: 7 after [1, 3] is a spike (3 x 2 = 6)", ([1.0, 3.0, 7.0], 2, 3.0)),
    ]


EX_8_4 = Exercise(
    id="8.4", title="gradient-norm spike detector", reference=grad_norm_spikes, cases=_spike_cases,
    mistakes=(
        Mistake("window includes the current step", _spikes_window_includes_current,
                "Compare step i with the window *before* it, norms[i - window : i]; a spike in its own window "
                "raises the median it is compared with."),
        Mistake("mean instead of median", _spikes_mean,
                "Use the median: one earlier spike inside the window drags the mean up and hides the next spike."),
        Mistake("flags before a full window", _spikes_from_start,
                "Start at i = window: with fewer steps behind it there is no full window to compare with."),
        Mistake("upper median", _spikes_upper_median,
                "For an even count the median is the mean of the two middle values (as statistics.median): 2 for "
                "[1, 3], not the upper one, 3."),
        Mistake("lower median", _spikes_lower_median,
                "torch.median returns the lower of the two middle values for an even count; the contract's "
                "median is their mean (as statistics.median): 2 for [1, 3], not 1."),
    ),
)


# ------------------------------------------------------------------- 8.5 the capstone's training loop

def _loop_with_bug(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr, warmup_steps, min_lr,
                   clip, evaluate=None, eval_every=0, on_step=None, bug=""):
    """capstone_loop with one realistic bug (``bug`` names it; "" is the correct loop), for the mistakes below."""
    params = [p for group in groups for p in group["params"]]
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    for step in range(steps):
        if bug == "moments reset":
            moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
        batches = [next_batch(step) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)

        def mean_loss():
            with torch.no_grad():
                return sum(float(F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten()))
                           for inputs, targets in batches) / len(batches)

        loss = mean_loss()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        clipped, norm = pieces.clip(grads, clip if clip is not None else math.inf)
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            result.diverged = True
            break
        lr = pieces.schedule(step + 1 if bug == "schedule" else step, max_lr, warmup_steps, steps, min_lr)
        new_grads = iter(clipped)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    m, v = moments[id(p)]
                    new_p, m, v = pieces.adamw(p.detach(), next(new_grads), m, v, step + 1, lr, 0.9, 0.95, 1e-8,
                                               group["weight_decay"])
                    p.copy_(new_p)
                    moments[id(p)] = (m, v)
        if bug == "loss after update":
            loss = mean_loss()
        if bug == "clipped norm":
            norm = torch.sqrt(sum((g ** 2).sum() for g in clipped))
        result.losses.append(loss)
        result.grad_norms.append(float(norm))
        result.lrs.append(lr)
        if bug == "evaluation" and eval_every and step % eval_every == 0:
            result.evals[step] = evaluate(model)
        elif bug != "evaluation" and eval_every and (step + 1) % eval_every == 0:
            result.evals[step + 1] = evaluate(model)
        if on_step is not None:
            on_step(step, result)


@functools.lru_cache(maxsize=1)
def _loop_text():
    from course_utils import charlm

    return charlm.split(charlm.encode(charlm.training_text()[:50_000]))


def _run_loop(loop, steps, micro_batches, max_lr, warmup_steps, min_lr, clip, eval_every, seed=0):
    """Run a training loop on a tiny byte model (2 blocks of width 16, 16-byte windows, micro-batches of 4, GPT-2
    init, decay 0.1 on Linear weights) with the reference pieces; what it recorded, as named tensors."""
    from course_utils import charlm
    from course_utils.models import TinyTransformer, TransformerConfig

    config = TransformerConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, d_model=16, norm="rmsnorm",
                               mlp="swiglu", position="rope")
    pieces = reference_pieces()
    torch.manual_seed(seed)
    model = TinyTransformer(config)
    pieces.init(model, 0.02, True)
    train, held_out = _loop_text()
    gen = torch.Generator().manual_seed(seed + 1)

    def next_batch(step):
        x = charlm.batch(train, 4, gen, config.block_size)
        return x[:, :-1], x[:, 1:]

    calls, result = [], CapstoneResult(model=model)
    loop(model, pieces.groups(model, 0.1), pieces, next_batch, result, steps=steps, micro_batches=micro_batches,
         max_lr=max_lr, warmup_steps=warmup_steps, min_lr=min_lr, clip=clip,
         evaluate=lambda m: charlm.evaluate(m, held_out, batches=1, size=4, length=config.block_size),
         eval_every=eval_every, on_step=lambda s, r: calls.append((s, len(r.losses))))
    return {"losses": torch.tensor(result.losses, dtype=torch.float64),
            "gradient norms": torch.tensor(result.grad_norms, dtype=torch.float64),
            "learning rates": torch.tensor(result.lrs, dtype=torch.float64),
            "evaluated after steps": torch.tensor(list(result.evals), dtype=torch.int64),
            "evaluations": torch.tensor(list(result.evals.values()), dtype=torch.float64),
            "diverged": result.diverged, "on_step calls (step, steps recorded)": torch.tensor(calls).reshape(-1, 2)}


def _loop_cases():
    return [
        Case("8 steps of 2 micro-batches, warmup 2, clip 1.0, evaluated every 3 steps", (8, 2, 1e-2, 2, 1e-3, 1.0, 3)),
        Case("no clipping (clip=None), 1 micro-batch, no warmup, evaluated every 2 steps",
             (6, 1, 3e-3, 0, 3e-4, None, 2)),
        Case("clip 0.05: every step clipped; 3 micro-batches, seed 1, no evaluation",
             (5, 3, 1e-2, 3, 0.0, 0.05, 0), {"seed": 1}),
        Case("max_lr 1e4: the loss becomes NaN at step 2 and the run stops (diverged)", (8, 2, 1e4, 2, 1e3, 1.0, 3)),
    ]


EX_8_5 = Exercise(
    id="8.5", title="the capstone's training loop", reference=capstone_loop, cases=_loop_cases, call=_run_loop,
    tolerances={torch.float64: (1e-6, 1e-6)},  # the loss may be summed in another order; the training is the same
    hints=("Before the loop: the parameters in the groups' order, and zero moments (torch.zeros_like(p), twice) per "
           "parameter, kept across steps. In each step draw the micro-batches "
           "with next_batch(step), hand them to pieces.accumulate, and measure their mean loss under torch.no_grad().",
           "Then grads = [p.grad, or zeros where it is None]; clipped, norm = pieces.clip(grads, clip if clip is not "
           "None else math.inf). If the loss or the norm is not finite, set result.diverged and break before updating. "
           "lr = pieces.schedule(step, max_lr, warmup_steps, steps, min_lr): the step counts from 0 here.",
           "Under torch.no_grad(), for each group and each p in it: new_p, m, v = pieces.adamw(p.detach(), g, m, v, "
           "step + 1, lr, 0.9, 0.95, 1e-8, group['weight_decay']); p.copy_(new_p); keep m, v. Then append loss, "
           "float(norm) and lr to result.losses, result.grad_norms and result.lrs; if eval_every and (step + 1) % "
           "eval_every == 0: result.evals[step + 1] = evaluate(model); then on_step(step, result) if given."),
    mistakes=(
        Mistake("moments reset every step", functools.partial(_loop_with_bug, bug="moments reset"),
                "Adam's m and v carry over from step to step: create them once, before the loop, and keep the ones "
                "pieces.adamw returns. Started at zero every step, Adam's bias correction at step t > 1 divides "
                "fresh moments by (1 - beta^t) < 1 and the steps come out wrong."),
        Mistake("schedule one step ahead", functools.partial(_loop_with_bug, bug="schedule"),
                "The schedule counts steps from 0 (8.1: step 0 trains at max_lr / warmup_steps): pass step, not "
                "step + 1. Adam's step count is the one that starts at 1."),
        Mistake("norm recorded after clipping", functools.partial(_loop_with_bug, bug="clipped norm"),
                "Record the norm pieces.clip returns, measured before clipping: the norm of the clipped gradients is "
                "never above the threshold, so a spike would not show in the log."),
        Mistake("loss measured after the update", functools.partial(_loop_with_bug, bug="loss after update"),
                "Measure the step's loss on its micro-batches before the AdamW update, as the gradient was: after it, "
                "the loss already includes what the step learned from these very batches."),
        Mistake("evaluated one step early", functools.partial(_loop_with_bug, bug="evaluation"),
                "Evaluate after the update of every eval_every-th step, (step + 1) % eval_every == 0, and key it by "
                "the number of steps done, step + 1: not at step 0, before any training."),
    ),
)


EXERCISES = [EX_8_1, EX_8_2, EX_8_3, EX_8_4, EX_8_5]
