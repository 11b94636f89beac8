"""Chapter 8: the study note's four further questions as experiments, and the capstone training run.

The capstone trains the course's TinyTransformer on the byte data of chapter 6 with the pieces built
in earlier chapters: GPT-2 initialisation (2.3), weight-decay groups (5.2), gradient accumulation
(5.3), AdamW (5.1), global-norm clipping (1.6) and a warmup + cosine schedule (8.1). Each piece is
passed in, so the notebook can hand over the learner's own versions where they passed; the training loop that runs
them is exercise 8.5 (``capstone_loop``).

Used by chapter 8.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_utils.models import CAPSTONE_CONFIG, TinyTransformer, TransformerConfig

# ------------------------------------------------------------------------------- Q1: depth

# The initialisations Q1 runs over, by the course's names: "fixed 0.1" / "fixed 0.02" (every weight N(0, std^2)),
# and "fan-in" (std 1/sqrt(fan_in)). "+ depth-scaled init" adds GPT-2's 1/sqrt(2L) on the residual projections.
DEPTH_INITS = {"fixed 0.1": dict(init_std=0.1), "fixed 0.02": dict(init_std=0.02), "fan-in": dict(init="fan_in")}


def depth_effects(depth: int, variant: str, *, init_std: float = 0.1, seed: int = 0, init: str | None = None) -> dict:
    """For a Pre-LN TinyTransformer at init (``normalization.PRE_LN_VARIANTS``) on random tokens: the std of the
    logits, the largest softmax probability (saturation), the loss, the global gradient norm ("grad_norm", over all
    parameters: it grows with their number), the gradient norm of the first, middle and last block's parameters
    ("grad_first", "grad_middle", "grad_last"), and "out_grad": the mean over positions of |p - y|, the gradient of
    each position's own loss with respect to its logits (between 0 and sqrt(2)); "out_coherence": the norm of the mean
    over positions of p - y over the mean of their norms (0: the positions' output gradients cancel when they are
    summed into a shared weight; 1: they all point the same way); "out_grad_argmax": the same mean |p - y| with y the
    one-hot of the model's own argmax instead of the random next token (a confident prediction that is right; on
    random targets it is wrong 63 times in 64, so E|p - y|^2 = 1 - 2/V + sum p^2 can only rise with saturation);
    "share_first", "share_later", "share_head": the
    fractions of the squared global norm in the first block, in the blocks after it and in the LM head (the rest is in
    the embeddings and the final norm). ``init``: a key of DEPTH_INITS (overrides ``init_std``)."""
    from course_utils.normalization import PRE_LN_VARIANTS

    torch.manual_seed(seed)
    init_fields = DEPTH_INITS[init] if init is not None else dict(init_std=init_std)
    model = TinyTransformer(TransformerConfig(vocab_size=64, block_size=16, n_layer=depth, d_model=64, n_head=4,
                                              **init_fields, **PRE_LN_VARIANTS[variant]))
    tokens = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(seed))
    logits, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()

    def norm(params):
        return math.sqrt(sum(float((p.grad.detach() ** 2).sum()) for p in params))

    logits = logits.detach()
    probs = torch.softmax(logits, -1)
    diff = probs - F.one_hot(tokens[:, 1:], 64).to(probs.dtype)  # (B, T, V): p - y per position
    out_grad = diff.norm(dim=-1)  # (B, T): |p - y| per position
    diff = diff.flatten(0, 1)
    coherence = float(diff.mean(0).norm() / diff.norm(dim=-1).mean())  # 1: all positions' p - y point the same way
    return {"out_coherence": coherence, "logit_std": float(logits.std()),
            "max_prob": float(probs.max(-1).values.mean()),
            "loss": float(loss.detach()), "grad_norm": norm(model.parameters()),
            "grad_first": norm(model.blocks[0].parameters()),
            "grad_middle": norm(model.blocks[depth // 2].parameters()),
            "grad_last": norm(model.blocks[-1].parameters()), "out_grad": float(out_grad.mean()),
            "out_grad_argmax": float((probs - F.one_hot(probs.argmax(-1), 64).to(probs.dtype)).norm(dim=-1).mean()),
            "share_first": norm(model.blocks[0].parameters()) ** 2 / norm(model.parameters()) ** 2,
            "share_later": norm(model.blocks[1:].parameters()) ** 2 / norm(model.parameters()) ** 2,
            "share_head": norm(model.lm_head.parameters()) ** 2 / norm(model.parameters()) ** 2}


def depth_table(depths=(4, 16, 64), variants=None, inits=("fixed 0.1",), seeds=(0, 1, 2)) -> dict:
    """Q1 over seeds: {(init, variant, depth): {statistic: (mean, min, max) over seeds}} of ``depth_effects``.
    ``variants``: keys of ``normalization.PRE_LN_VARIANTS`` (default: all)."""
    from course_utils.normalization import PRE_LN_VARIANTS

    table = {}
    for init in inits:
        for variant in variants or PRE_LN_VARIANTS:
            for depth in depths:
                runs = [depth_effects(depth, variant, init=init, seed=seed) for seed in seeds]
                table[(init, variant, depth)] = {k: (sum(r[k] for r in runs) / len(runs), min(r[k] for r in runs),
                                                     max(r[k] for r in runs)) for k in runs[0]}
    return table


def pm(stat, digits: int = 2) -> str:
    """A (mean, min, max) over seeds as "mean±half-range"."""
    mean, lo, hi = stat
    return f"{mean:.{digits}f}±{(hi - lo) / 2:.{digits}f}"


def figure_depth_gradients(table: dict):
    """Q1: the last block's gradient norm against depth (log-log, mean and min-max over seeds) for every
    (init, variant) of a ``depth_table``, with a 1/sqrt(L) guide through the first final-norm point."""
    import matplotlib.pyplot as plt

    from course_utils.plotting import OKABE_ITO, subplots

    fig, ax = subplots(1, width=7, height=3.4)
    keys = sorted({(init, variant) for init, variant, _ in table}, key=lambda k: ("final" not in k[1], k))
    colours = ["blue", "bluish green", "orange", "vermillion", "reddish purple", "grey"]
    markers = ["o", "s", "^", "v", "D", "x"]
    guide = None
    labels = {"Pre-LN, no final norm": "no final norm", "+ depth-scaled init": "no final norm, depth-scaled init",
              "+ final norm": "final norm"}
    for (init, variant), colour, marker in zip(keys, colours, markers):
        depths = sorted(d for i, v, d in table if (i, v) == (init, variant))
        stats = [table[(init, variant, d)]["grad_last"] for d in depths]
        mean = [m for m, _, _ in stats]
        err = [[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]]
        ax.errorbar(depths, mean, yerr=err, color=OKABE_ITO[colour], marker=marker, markersize=4, capsize=3,
                    ls="-" if "final" in variant else "--", label=f"{init}, {labels[variant]}")
        if guide is None and "final" in variant:
            guide = [mean[0] * math.sqrt(depths[0] / d) for d in depths]
            ax.plot(depths, guide, color="black", ls=":", label=r"$\propto 1/\sqrt{L}$")
    ax.set(xscale="log", yscale="log", xlabel="depth L (blocks)", ylabel="last block's gradient norm",
           title="at init, mean and min-max over 3 seeds")
    ax.set_xticks(sorted({d for _, _, d in table}), [str(d) for d in sorted({d for _, _, d in table})])
    ax.minorticks_off()
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    plt.close(fig)
    return fig


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
    """The fraction of a weight whose gradient is zero at every step (so its Adam step is 0 and only the decay moves
    it) left after a run of decoupled weight decay, applied at every step as PyTorch's AdamW applies it (your AdamW
    of exercise 5.1 does the same), with that step's lr. (torch.optim.AdamW skips a parameter whose .grad is None:
    that one is not decayed at all.)

    lrs: the learning rate of every step of the run, in order (a list of floats, possibly empty); weight_decay: a
    float >= 0. Returns a number (a float; a 0-d tensor is accepted too): the fraction left, exactly, step by step
    (not a continuous-time approximation of it); 1.0 for a run of no steps. Nothing is modified.
    """
    remaining = 1.0
    for lr in lrs:
        remaining *= 1 - lr * weight_decay
    return remaining


# ---------------------------------------------------------------------------- capstone

@dataclass
class Pieces:
    """The building blocks a capstone run uses; the notebook fills them with ``use``/``from_progress``."""
    init: Callable  # 2.3: gpt_init_(model, std, depth_scaled)
    groups: Callable  # 5.2: weight_decay_groups(model, weight_decay) -> param groups
    accumulate: Callable  # 5.3: accumulate_gradients(model, micro_batches)
    adamw: Callable  # 5.1: adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay) -> (p, m, v)
    clip: Callable  # 1.6: clip_grad_norm(grads, max_norm) -> (clipped, total_norm)
    schedule: Callable  # 8.1: warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr)
    loop: Callable | None = None  # 8.5: capstone_loop(model, groups, pieces, next_batch, result, ...); None: ours


def reference_pieces() -> Pieces:
    """The course's own building blocks, which are also the answers to those exercises (solutions re-exports them)."""
    from course_utils.models import gpt_init_
    from course_utils.optim import adamw_update, weight_decay_groups
    from course_utils.training import accumulate_gradients, clip_grad_norm, warmup_cosine_lr

    return Pieces(init=gpt_init_, groups=weight_decay_groups, accumulate=accumulate_gradients,
                  adamw=adamw_update, clip=clip_grad_norm, schedule=warmup_cosine_lr, loop=capstone_loop)


@dataclass
class CapstoneResult:
    losses: list[float] = field(default_factory=list)  # training loss per step (mean over micro-batches)
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm before clipping
    lrs: list[float] = field(default_factory=list)
    diverged: bool = False
    model: TinyTransformer | None = None
    evals: dict[int, float] = field(default_factory=dict)  # steps done -> evaluate(model) at that point


def capstone_loop(model, groups, pieces, next_batch, result, *, steps, micro_batches, max_lr, warmup_steps, min_lr,
                  clip, evaluate=None, eval_every=0, on_step=None):
    """Train ``model`` in place for ``steps`` AdamW steps, each on ``micro_batches`` accumulated micro-batches, with
    the global gradient norm clipped and the learning rate scheduled, recording the run into ``result``.

    model: model(inputs) returns (logits (B, T, V), anything). groups: [{"params": [...], "weight_decay": float}, ...]
    (5.2). pieces: a ``Pieces``; its accumulate (5.3), clip (1.6), schedule (8.1) and adamw (5.1) do those four things
    here: accumulate(model, batches) leaves the step's gradient in each .grad (5.3's contract); clip(grads, max_norm)
    returns (clipped grads, the total norm before clipping); schedule(...) returns the learning rate; adamw(p, g, m, v,
    t, lr, beta1, beta2, eps, weight_decay) returns (new p, new m, new v). next_batch(s) -> (inputs, targets), int64 (B,
    T): the next micro-batch of step s; called exactly ``micro_batches`` times per step. result: a ``CapstoneResult``
    with empty lists and evals, to record into. clip: the max norm, or None (measure the norm, clip nothing).
    evaluate(model) -> float, run every ``eval_every`` steps (0: never). on_step(s, result): called after each step, or
    None.

    Step s (0-based) is defined by its gradient, pieces.accumulate over its micro-batches in the order drawn, then
    pieces.clip of every parameter's .grad in the groups' order (zeros for a None .grad) to ``clip`` (math.inf for
    None); its learning rate pieces.schedule(s, max_lr, warmup_steps, steps, min_lr); and its update
    pieces.adamw(p, clipped g, m, v, s + 1, lr, 0.9, 0.95, 1e-8, the group's weight_decay) of every parameter in
    place, with Adam's moments m, v per parameter starting at zeros.

    What it records, per step: result.losses[s], the mean over its micro-batches of F.cross_entropy(logits.flatten(0,
    1), targets.flatten()) before its update (no gradient); result.grad_norms[s], the norm before clipping (a float);
    result.lrs[s]; result.evals[s + 1] = evaluate(model) after the update of each step s + 1 that is a multiple of
    eval_every, then on_step(s, result). A step whose loss or norm is not finite stops the run before its update,
    unrecorded, with result.diverged = True. Returns nothing.
    """
    params = [p for group in groups for p in group["params"]]
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    for step in range(steps):
        batches = [next_batch(step) for _ in range(micro_batches)]
        pieces.accumulate(model, batches)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten()))
                       for inputs, targets in batches) / len(batches)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        clipped, norm = pieces.clip(grads, clip if clip is not None else math.inf)
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            result.diverged = True
            break
        lr = pieces.schedule(step, max_lr, warmup_steps, steps, min_lr)
        new_grads = iter(clipped)
        with torch.no_grad():
            for group in groups:
                for p in group["params"]:
                    m, v = moments[id(p)]
                    new_p, m, v = pieces.adamw(p.detach(), next(new_grads), m, v, step + 1, lr, 0.9, 0.95, 1e-8,
                                               group["weight_decay"])
                    p.copy_(new_p)
                    moments[id(p)] = (m, v)
        result.losses.append(loss)
        result.grad_norms.append(float(norm))
        result.lrs.append(lr)
        if eval_every and (step + 1) % eval_every == 0:
            result.evals[step + 1] = evaluate(model)
        if on_step is not None:
            on_step(step, result)


def capstone_run(pieces: Pieces, *, config: TransformerConfig = CAPSTONE_CONFIG, steps: int = 150,
                 micro_batches: int = 2, micro_batch_size: int = 8, max_lr: float = 3e-3, warmup_steps: int = 15,
                 weight_decay: float = 0.1, clip: float | None = 1.0, bad_batch_step: int | None = None,
                 seed: int = 0, progress: bool = True, on_step: Callable | None = None,
                 init: str = "GPT-2", eval_every: int = 0) -> CapstoneResult:
    """Train a TinyTransformer on the byte data with the given pieces; deterministic for a seed.

    Builds and initialises the model, its decay groups and the data, then runs ``pieces.loop`` (8.5;
    ``capstone_loop`` when None): each step accumulates ``micro_batches`` micro-batches of ``micro_batch_size``
    windows, clips the global norm to ``clip`` (None: no clipping), and applies AdamW with the scheduled lr (warmup,
    then cosine to max_lr / 10) to two groups (decay / no decay).
    ``bad_batch_step``: at that step the inputs are replaced by one byte repeated (a corrupt batch).
    ``on_step(step, result)`` is called after every step (for a live plot). ``eval_every``: every that many steps
    the held-out loss (windows of 64 bytes, ``charlm.evaluate``) goes into ``result.evals`` (0: never).
    ``init``: "GPT-2" (the learner's 2.3: fixed 0.02 plus 1/sqrt(2L) on the residual projections) or "fan-in"
    (std 1/sqrt(fan_in), ``fan_in_init_``).
    """
    from course_utils import charlm
    from course_utils.models import fan_in_init_

    if init not in ("GPT-2", "fan-in"):
        raise ValueError(f"init must be 'GPT-2' or 'fan-in', got {init!r}")
    torch.manual_seed(seed)
    model = TinyTransformer(config)
    if init == "GPT-2":
        pieces.init(model, 0.02, True)
    else:
        fan_in_init_(model)
    groups = [dict(g) for g in pieces.groups(model, weight_decay)]
    train_data, held_out = charlm.split(charlm.encode(charlm.training_text()))
    gen = torch.Generator().manual_seed(seed + 1)

    def next_batch(step):
        x = charlm.batch(train_data, micro_batch_size, gen, config.block_size)
        if step == bad_batch_step:
            x = torch.full_like(x, 0x41)  # "AAAA...": a corrupt batch
        return x[:, :-1], x[:, 1:]

    bar = tqdm(total=steps, disable=not progress, desc=f"{config.norm_position}-LN, warmup {warmup_steps}")

    def after_step(step, result):
        bar.update(1)
        if on_step is not None:
            on_step(step, result)

    result = CapstoneResult(model=model)
    try:
        (pieces.loop or capstone_loop)(
            model, groups, pieces, next_batch, result, steps=steps, micro_batches=micro_batches, max_lr=max_lr,
            warmup_steps=warmup_steps, min_lr=max_lr / 10, clip=clip, eval_every=eval_every,
            evaluate=lambda m: float(charlm.evaluate(m, held_out, length=64)), on_step=after_step)
    finally:
        bar.close()
    return result


def norm_warmup_comparison(pieces: Pieces, *, n_layer: int = 4, steps: int = 100, warmup_steps: int = 20,
                           max_lr: float = 1e-2, seed: int = 0, init: str = "GPT-2",
                           ) -> dict[tuple[str, int], CapstoneResult]:
    """Chapter 1's question on the capstone model: Pre-LN and Post-LN with ``n_layer`` blocks, each trained
    ``steps`` steps (one micro-batch per step) with no warmup and with ``warmup_steps``. Keys: (norm position,
    warmup steps)."""
    results = {}
    for norm_position in ("pre", "post"):
        for warmup in (0, warmup_steps):
            config = dataclasses.replace(CAPSTONE_CONFIG, norm_position=norm_position, n_layer=n_layer)
            results[(norm_position, warmup)] = capstone_run(pieces, config=config, steps=steps, warmup_steps=warmup,
                                                            max_lr=max_lr, micro_batches=1, progress=False,
                                                            seed=seed, init=init)
    return results


def clipping_by_learning_rate(lrs=(3e-2, 3e-3, 1e-3), *, steps: int = 120, clip: float = 1.0, depth: int = 2,
                              seed: int = 0, init: str = "fixed 0.02") -> dict[float, dict[str, float]]:
    """Q4's "gradient norm always near max_norm -> lower the lr", tested: chapter 1's Pre-LN model of ``depth``
    blocks trained on the Markov chain with AdamW, clipping at ``clip``, once per learning rate. For each lr:
    "clipped" (fraction of the steps after the first third whose norm reached ``clip``), "median_norm" (their
    median gradient norm) and "loss" (mean training loss of the last 20 steps). ``init``: "fixed 0.02" (chapter 1's
    default) or "fan-in"."""
    from course_utils.gradflow import stack_config
    from course_utils.training import train_markov_lm

    overrides = {"fixed 0.02": {}, "fan-in": {"init": "fan_in"}}[init]
    out = {}
    for lr in lrs:
        run = train_markov_lm(stack_config("pre", depth, **overrides), steps=steps, lr=lr, clip=clip, seed=seed,
                              progress=False)
        late = run.grad_norms[steps // 3:]
        out[lr] = {"clipped": sum(n >= clip for n in late) / len(late), "median_norm": sorted(late)[len(late) // 2],
                   "loss": run.final_loss}
    return out


# ------------------------------------------------------------- Q4 and the Pre/Post-LN question over seeds and a grid
# Each verdict of Q4 and of the Pre-/Post-LN comparison is drawn from 3 seeds on a small grid of init x learning rate.
# The full grid takes minutes on a CPU, so the notebook prints SEED_GRIDS, the stored result of ``seed_grids()``;
# tests/test_claims_ch08.py re-runs ``seed_grids()``, checks it against SEED_GRIDS and asserts the verdicts on it.

GRID_SEEDS = (0, 1, 2)
BAD_BATCH_GRID = dict(inits=("GPT-2", "fan-in"), lrs=(3e-3, 1e-2), steps=100, bad_batch_step=60)
CLIPPING_GRID = dict(inits=("fixed 0.02", "fan-in"), lrs=(3e-2, 3e-3, 1e-3), steps=120)
NORM_WARMUP_GRID = dict(inits=("GPT-2", "fan-in"), lrs=(1e-2, 3e-3), n_layer=4, steps=100, warmup_steps=20)


def bad_batch_runs(pieces: Pieces, *, init: str, lr: float, seed: int, steps: int = 100,
                   bad_batch_step: int = 60) -> dict[str, dict[str, float]]:
    """The capstone model (one micro-batch per step) with a corrupt batch at ``bad_batch_step``, clipped at 1.0 and
    not clipped. Per run: "spike" (the bad step's gradient norm over the median of the 20 before), "jump" (loss one
    step after minus one step before), "end" (mean loss of the last 10 steps), "flagged" (1.0 if the 8.4 detector,
    window 10 and factor 3, flags the bad step), "diverged" (1.0 or 0.0)."""
    import statistics

    out = {}
    for name, clip in (("clip 1.0", 1.0), ("no clipping", None)):
        r = capstone_run(pieces, steps=steps, micro_batches=1, max_lr=lr, clip=clip, bad_batch_step=bad_batch_step,
                         seed=seed, init=init, progress=False)
        b = bad_batch_step
        if r.diverged:
            out[name] = {"spike": math.nan, "jump": math.nan, "end": math.nan, "flagged": 0.0, "diverged": 1.0}
            continue
        out[name] = {"spike": r.grad_norms[b] / statistics.median(r.grad_norms[b - 20: b]),
                     "jump": r.losses[b + 1] - r.losses[b - 1], "end": sum(r.losses[-10:]) / 10,
                     "flagged": float(b in grad_norm_spikes(r.grad_norms, 10, 3.0)), "diverged": 0.0}
    return out


def seed_grids(pieces: Pieces | None = None, seeds=GRID_SEEDS) -> dict:
    """Every run behind the Q4 and Pre/Post-LN verdicts, rounded to 3 decimals: {"bad_batch": {(init, lr, seed):
    {clip: stats}}, "clipping": {(init, lr, seed): stats}, "norm_warmup": {(init, lr, seed): {"pre, warmup 0":
    {"loss": last-20 mean, "peak": largest grad norm, "diverged": 0/1}, ...}}}. Takes a few minutes."""
    pieces = pieces or reference_pieces()

    def rounded(d):
        return {k: round(float(v), 3) for k, v in d.items()}

    grids = {"bad_batch": {}, "clipping": {}, "norm_warmup": {}}
    g = BAD_BATCH_GRID
    for init in g["inits"]:
        for lr in g["lrs"]:
            for seed in seeds:
                runs = bad_batch_runs(pieces, init=init, lr=lr, seed=seed, steps=g["steps"],
                                      bad_batch_step=g["bad_batch_step"])
                grids["bad_batch"][(init, lr, seed)] = {k: rounded(v) for k, v in runs.items()}
    g = CLIPPING_GRID
    for init in g["inits"]:
        for seed in seeds:
            for lr, r in clipping_by_learning_rate(g["lrs"], steps=g["steps"], seed=seed, init=init).items():
                grids["clipping"][(init, lr, seed)] = rounded(r)
    g = NORM_WARMUP_GRID
    for init in g["inits"]:
        for lr in g["lrs"]:
            for seed in seeds:
                runs = norm_warmup_comparison(pieces, n_layer=g["n_layer"], steps=g["steps"],
                                              warmup_steps=g["warmup_steps"], max_lr=lr, seed=seed, init=init)
                grids["norm_warmup"][(init, lr, seed)] = {
                    f"{norm}, warmup {warmup}": rounded({"loss": sum(r.losses[-20:]) / 20 if r.losses else math.nan,
                                                         "peak": max(r.grad_norms) if r.grad_norms else math.nan,
                                                         "diverged": r.diverged})
                    for (norm, warmup), r in runs.items()}
    return grids


LONGER_GRID = dict(steps=(150, 600), seeds=(0, 1, 2))


def capstone_longer(pieces: Pieces | None = None, steps=LONGER_GRID["steps"], seeds=LONGER_GRID["seeds"]) -> dict:
    """The capstone's config trained for each number of ``steps`` (its schedule stretched to the run), per seed:
    {(steps, seed): held-out loss (nats/byte, windows of 64 bytes), rounded to 3 decimals}. Minutes on a CPU;
    the notebook prints LONGER_RUNS, its stored result, which tests/test_claims_ch08.py checks."""
    from course_utils import charlm

    pieces = pieces or reference_pieces()
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    out = {}
    for n in steps:
        for seed in seeds:
            run = capstone_run(pieces, steps=n, seed=seed, progress=False)
            out[(n, seed)] = round(float(charlm.evaluate(run.model, held_out, length=64)), 3)
    return out


# the stored result of seed_grids() (reference pieces), checked by tests/test_claims_ch08.py
SEED_GRIDS = {
    'bad_batch': {
        ('GPT-2', 0.003, 0): {
            'clip 1.0': {'spike': 20.151, 'jump': -0.251, 'end': 2.727, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 26.775, 'jump': -0.214, 'end': 2.796, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('GPT-2', 0.003, 1): {
            'clip 1.0': {'spike': 18.701, 'jump': -0.096, 'end': 2.788, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 19.328, 'jump': -0.076, 'end': 2.862, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('GPT-2', 0.003, 2): {
            'clip 1.0': {'spike': 26.894, 'jump': -0.239, 'end': 2.714, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 14.201, 'jump': -0.236, 'end': 2.76, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('GPT-2', 0.01, 0): {
            'clip 1.0': {'spike': 36.594, 'jump': -0.107, 'end': 2.85, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 16.209, 'jump': -0.166, 'end': 2.848, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('GPT-2', 0.01, 1): {
            'clip 1.0': {'spike': 24.74, 'jump': -0.096, 'end': 2.865, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 12.769, 'jump': -0.033, 'end': 2.943, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('GPT-2', 0.01, 2): {
            'clip 1.0': {'spike': 16.881, 'jump': -0.271, 'end': 3.027, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 88.524, 'jump': -0.27, 'end': 2.968, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 0): {
            'clip 1.0': {'spike': 33.815, 'jump': -0.242, 'end': 2.501, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 29.389, 'jump': -0.242, 'end': 2.535, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 1): {
            'clip 1.0': {'spike': 25.088, 'jump': -0.166, 'end': 2.467, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 24.039, 'jump': -0.161, 'end': 2.528, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 2): {
            'clip 1.0': {'spike': 25.481, 'jump': -0.242, 'end': 2.506, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 24.885, 'jump': -0.246, 'end': 2.54, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 0): {
            'clip 1.0': {'spike': 23.987, 'jump': -0.228, 'end': 2.391, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 27.828, 'jump': -0.248, 'end': 2.431, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 1): {
            'clip 1.0': {'spike': 27.271, 'jump': -0.169, 'end': 2.368, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 54.649, 'jump': -0.167, 'end': 2.438, 'flagged': 1.0, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 2): {
            'clip 1.0': {'spike': 37.624, 'jump': -0.263, 'end': 2.389, 'flagged': 1.0, 'diverged': 0.0},
            'no clipping': {'spike': 30.113, 'jump': -0.308, 'end': 2.43, 'flagged': 1.0, 'diverged': 0.0},
        },
    },
    'clipping': {
        ('fixed 0.02', 0.03, 0): {'clipped': 0.0, 'median_norm': 0.308, 'loss': 3.07},
        ('fixed 0.02', 0.003, 0): {'clipped': 0.312, 'median_norm': 0.968, 'loss': 2.698},
        ('fixed 0.02', 0.001, 0): {'clipped': 1.0, 'median_norm': 1.38, 'loss': 2.732},
        ('fixed 0.02', 0.03, 1): {'clipped': 0.013, 'median_norm': 0.272, 'loss': 3.164},
        ('fixed 0.02', 0.003, 1): {'clipped': 0.338, 'median_norm': 0.968, 'loss': 2.671},
        ('fixed 0.02', 0.001, 1): {'clipped': 1.0, 'median_norm': 1.356, 'loss': 2.715},
        ('fixed 0.02', 0.03, 2): {'clipped': 0.0, 'median_norm': 0.25, 'loss': 3.213},
        ('fixed 0.02', 0.003, 2): {'clipped': 0.25, 'median_norm': 0.941, 'loss': 2.668},
        ('fixed 0.02', 0.001, 2): {'clipped': 1.0, 'median_norm': 1.375, 'loss': 2.71},
        ('fan-in', 0.03, 0): {'clipped': 0.0, 'median_norm': 0.265, 'loss': 2.761},
        ('fan-in', 0.003, 0): {'clipped': 0.0, 'median_norm': 0.727, 'loss': 2.671},
        ('fan-in', 0.001, 0): {'clipped': 0.113, 'median_norm': 0.943, 'loss': 2.745},
        ('fan-in', 0.03, 1): {'clipped': 0.0, 'median_norm': 0.271, 'loss': 2.782},
        ('fan-in', 0.003, 1): {'clipped': 0.0, 'median_norm': 0.704, 'loss': 2.653},
        ('fan-in', 0.001, 1): {'clipped': 0.025, 'median_norm': 0.888, 'loss': 2.738},
        ('fan-in', 0.03, 2): {'clipped': 0.0, 'median_norm': 0.285, 'loss': 2.768},
        ('fan-in', 0.003, 2): {'clipped': 0.0, 'median_norm': 0.716, 'loss': 2.65},
        ('fan-in', 0.001, 2): {'clipped': 0.013, 'median_norm': 0.895, 'loss': 2.729},
    },
    'norm_warmup': {
        ('GPT-2', 0.01, 0): {
            'pre, warmup 0': {'loss': 2.927, 'peak': 7.716, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.947, 'peak': 2.968, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.25, 'peak': 4.069, 'diverged': 0.0},
            'post, warmup 20': {'loss': 3.252, 'peak': 1.947, 'diverged': 0.0},
        },
        ('GPT-2', 0.01, 1): {
            'pre, warmup 0': {'loss': 2.982, 'peak': 4.779, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.978, 'peak': 5.26, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.298, 'peak': 3.198, 'diverged': 0.0},
            'post, warmup 20': {'loss': 3.188, 'peak': 8.682, 'diverged': 0.0},
        },
        ('GPT-2', 0.01, 2): {
            'pre, warmup 0': {'loss': 3.01, 'peak': 6.157, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.708, 'peak': 7.56, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.249, 'peak': 1.833, 'diverged': 0.0},
            'post, warmup 20': {'loss': 3.249, 'peak': 6.202, 'diverged': 0.0},
        },
        ('GPT-2', 0.003, 0): {
            'pre, warmup 0': {'loss': 2.698, 'peak': 28.426, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.748, 'peak': 5.322, 'diverged': 0.0},
            'post, warmup 0': {'loss': 2.759, 'peak': 33.718, 'diverged': 0.0},
            'post, warmup 20': {'loss': 3.25, 'peak': 24.241, 'diverged': 0.0},
        },
        ('GPT-2', 0.003, 1): {
            'pre, warmup 0': {'loss': 2.717, 'peak': 9.551, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.71, 'peak': 4.208, 'diverged': 0.0},
            'post, warmup 0': {'loss': 2.629, 'peak': 8.023, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.781, 'peak': 62.304, 'diverged': 0.0},
        },
        ('GPT-2', 0.003, 2): {
            'pre, warmup 0': {'loss': 2.685, 'peak': 8.958, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.686, 'peak': 18.934, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.243, 'peak': 173.79, 'diverged': 0.0},
            'post, warmup 20': {'loss': 3.246, 'peak': 45.86, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 0): {
            'pre, warmup 0': {'loss': 2.453, 'peak': 3.311, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.412, 'peak': 4.065, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.253, 'peak': 5.749, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.567, 'peak': 5.388, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 1): {
            'pre, warmup 0': {'loss': 2.417, 'peak': 3.666, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.408, 'peak': 4.309, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.045, 'peak': 5.524, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.468, 'peak': 5.237, 'diverged': 0.0},
        },
        ('fan-in', 0.01, 2): {
            'pre, warmup 0': {'loss': 2.422, 'peak': 3.981, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.367, 'peak': 3.981, 'diverged': 0.0},
            'post, warmup 0': {'loss': 3.248, 'peak': 4.878, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.415, 'peak': 4.878, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 0): {
            'pre, warmup 0': {'loss': 2.508, 'peak': 3.311, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.504, 'peak': 4.048, 'diverged': 0.0},
            'post, warmup 0': {'loss': 2.521, 'peak': 4.068, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.559, 'peak': 5.258, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 1): {
            'pre, warmup 0': {'loss': 2.496, 'peak': 3.711, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.509, 'peak': 4.454, 'diverged': 0.0},
            'post, warmup 0': {'loss': 2.543, 'peak': 4.745, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.514, 'peak': 5.67, 'diverged': 0.0},
        },
        ('fan-in', 0.003, 2): {
            'pre, warmup 0': {'loss': 2.447, 'peak': 3.981, 'diverged': 0.0},
            'pre, warmup 20': {'loss': 2.498, 'peak': 3.981, 'diverged': 0.0},
            'post, warmup 0': {'loss': 2.484, 'peak': 5.529, 'diverged': 0.0},
            'post, warmup 20': {'loss': 2.515, 'peak': 4.878, 'diverged': 0.0},
        },
    },
}


# ------------------------------------------------------------------------------------ printing the stored grids

def _spread(values) -> tuple[float, float, float]:
    values = list(values)
    return sum(values) / len(values), min(values), max(values)


def bad_batch_table(grids: dict | None = None) -> str:
    """Q4's bad batch over the grid: per (init, lr) and clipping, mean±half-range over seeds of the spike ratio, the
    loss jump across the bad step and the final loss; how many seeds the detector flagged and how many diverged."""
    grids = grids or SEED_GRIDS
    runs = grids["bad_batch"]
    lines = [f"{'init':<7} {'lr':>6} {'clipping':<12} {'norm / median':>13} {'loss jump':>11} {'final loss':>11} "
             f"{'flagged':>8} {'diverged':>8}"]
    for init in BAD_BATCH_GRID["inits"]:
        for lr in BAD_BATCH_GRID["lrs"]:
            seeds = [runs[(init, lr, seed)] for seed in GRID_SEEDS]
            for clip in ("clip 1.0", "no clipping"):
                r = [s[clip] for s in seeds]
                ok = [x for x in r if not x["diverged"]]
                cells = [pm(_spread(x[k] for x in ok), d) if ok else "-" for k, d in
                         (("spike", 0), ("jump", 2), ("end", 2))]
                lines.append(f"{init:<7} {lr:>6g} {clip:<12} {cells[0]:>13} {cells[1]:>11} {cells[2]:>11} "
                             f"{sum(x['flagged'] for x in r):>6.0f}/3 {sum(x['diverged'] for x in r):>6.0f}/3")
    return "\n".join(lines)


def clipping_table(grids: dict | None = None) -> str:
    """Q4's "near max_norm -> lower the lr" over the grid: per (init, lr), mean±half-range over seeds of the fraction
    of late steps at max_norm, the median norm and the last-20-step loss."""
    grids = grids or SEED_GRIDS
    runs = grids["clipping"]
    lines = [f"{'init':<10} {'lr':>6} {'at max_norm':>12} {'median norm':>12} {'last-20 loss':>13}"]
    for init in CLIPPING_GRID["inits"]:
        for lr in CLIPPING_GRID["lrs"]:
            r = [runs[(init, lr, seed)] for seed in GRID_SEEDS]
            lines.append(f"{init:<10} {lr:>6g} {pm(_spread(x['clipped'] for x in r)):>12} "
                         f"{pm(_spread(x['median_norm'] for x in r)):>12} {pm(_spread(x['loss'] for x in r)):>13}")
    return "\n".join(lines)


def _run_label(name: str) -> str:
    """"pre, warmup 0" -> "Pre-LN, warmup 0"."""
    norm, rest = name.split(", ")
    return f"{norm.capitalize()}-LN, {rest}"


def norm_warmup_table(grids: dict | None = None) -> str:
    """Pre-LN against Post-LN, with and without warmup, over the grid: per (init, lr) and run, mean±half-range over
    seeds of the last-20-step loss and the largest gradient norm; how many seeds diverged."""
    grids = grids or SEED_GRIDS
    runs = grids["norm_warmup"]
    lines = [f"{'init':<7} {'lr':>6} {'run':<19} {'last-20 loss':>13} {'largest norm':>13} {'diverged':>8}"]
    for init in NORM_WARMUP_GRID["inits"]:
        for lr in NORM_WARMUP_GRID["lrs"]:
            seeds = [runs[(init, lr, seed)] for seed in GRID_SEEDS]
            for name in seeds[0]:
                r = [s[name] for s in seeds]
                ok = [x for x in r if not x["diverged"]]
                loss = pm(_spread(x["loss"] for x in ok)) if ok else "-"
                peak = pm(_spread(x["peak"] for x in ok), 1) if ok else "-"
                lines.append(f"{init:<7} {lr:>6g} {_run_label(name):<19} {loss:>13} {peak:>13} "
                             f"{sum(x['diverged'] for x in r):>6.0f}/3")
    return "\n".join(lines)


def figure_norm_warmup(grids: dict | None = None):
    """The last-20-step loss of the four runs (Pre/Post-LN, warmup 0/20) per (init, lr): mean and min-max over seeds."""
    import matplotlib.pyplot as plt

    from course_utils.plotting import COLORS, subplots

    grids = grids or SEED_GRIDS
    runs = grids["norm_warmup"]
    fig, ax = subplots(1, width=7, height=3.2)
    cells = [(init, lr) for init in NORM_WARMUP_GRID["inits"] for lr in NORM_WARMUP_GRID["lrs"]]
    names = list(runs[(*cells[0], GRID_SEEDS[0])])
    for j, name in enumerate(names):
        xs, means, errs = [], [], [[], []]
        for i, cell in enumerate(cells):
            vals = [runs[(*cell, seed)][name]["loss"] for seed in GRID_SEEDS
                    if not runs[(*cell, seed)][name]["diverged"]]
            if not vals:
                continue
            m, lo, hi = _spread(vals)
            xs.append(i + (j - 1.5) * 0.15)
            means.append(m)
            errs[0].append(m - lo)
            errs[1].append(hi - m)
        norm = name.split(",")[0]
        ax.errorbar(xs, means, yerr=errs, ls="none", marker="o" if "warmup 0" in name else "s", capsize=3,
                    color=COLORS[norm], mfc="white" if "warmup 0" in name else COLORS[norm], label=_run_label(name))
    ax.set_xticks(range(len(cells)), [f"{init}, lr {lr:g}" for init, lr in cells])
    ax.set(ylabel="last-20-step loss", title="4 blocks, 100 steps: mean and min-max over 3 seeds")
    ax.legend(fontsize=7)
    plt.close(fig)
    return fig


# the stored result of capstone_longer() (reference pieces), checked by tests/test_claims_ch08.py
LONGER_RUNS = {(150, 0): 2.094, (150, 1): 2.193, (150, 2): 2.141, (600, 0): 1.447, (600, 1): 1.46, (600, 2): 1.479}


def longer_table(longer: dict | None = None) -> str:
    """The capstone config's held-out loss after each number of steps, mean±half-range over the seeds."""
    longer = longer or LONGER_RUNS
    lines = []
    for n in LONGER_GRID["steps"]:
        vals = [longer[(n, seed)] for seed in LONGER_GRID["seeds"]]
        lines.append(f"capstone config, {n:>3} steps ({n * 2 * 8 * 64:>7,} bytes read): held-out loss "
                     f"{pm(_spread(vals))} (seeds {', '.join(str(s) for s in LONGER_GRID['seeds'])}: "
                     f"{', '.join(f'{v:.2f}' for v in vals)})")
    return "\n".join(lines)


# ------------------------------------------------- Q4's bad batch, paired with a clean run of the same seed
# capstone_run draws its batches from Generator(seed + 1) whatever the init, lr or clipping, and the bad step draws
# its batch before overwriting it, so a run with the bad batch and one without see the same batches at every other
# step. The bad batch's effect on the loss is then the paired difference (bad run minus clean run at the same step);
# "loss after minus loss before" within one run measures how hard the two neighbouring batches are instead.

BAD_BATCH_AFTER = 5  # steps after the bad one over which the paired rise is reported


def bad_batch_paired(pieces: Pieces, *, init: str, lr: float, seed: int, steps: int = 100,
                     bad_batch_step: int = 60, after: int = BAD_BATCH_AFTER) -> dict[str, dict[str, float]]:
    """Per clipping setting ("clip 1.0", "no clipping"), one run with the corrupt batch at ``bad_batch_step`` and one
    without (same seed, hence the same batches elsewhere): "rise_1" and "rise_max" (bad minus clean loss one step
    after the bad one, and the largest such difference over the ``after`` steps after it), "rise_end" (bad minus clean,
    mean loss of the last 10 steps), "end_clean" (the clean run's last-10 mean), "jump_clean" (the clean run's loss one
    step after minus one step before: what the within-run "loss jump" gives without any bad batch), "diverged" (1.0 if
    either run diverged)."""
    out = {}
    b = bad_batch_step
    for name, clip in (("clip 1.0", 1.0), ("no clipping", None)):
        clean, bad = (capstone_run(pieces, steps=steps, micro_batches=1, max_lr=lr, clip=clip, bad_batch_step=s,
                                   seed=seed, init=init, progress=False) for s in (None, b))
        if clean.diverged or bad.diverged:
            out[name] = {k: math.nan for k in ("rise_1", "rise_max", "rise_end", "end_clean", "jump_clean")}
            out[name]["diverged"] = 1.0
            continue
        rises = [bad.losses[b + k] - clean.losses[b + k] for k in range(1, after + 1)]
        out[name] = {"rise_1": rises[0], "rise_max": max(rises),
                     "rise_end": sum(bad.losses[-10:]) / 10 - sum(clean.losses[-10:]) / 10,
                     "end_clean": sum(clean.losses[-10:]) / 10,
                     "jump_clean": clean.losses[b + 1] - clean.losses[b - 1], "diverged": 0.0}
    return out


def bad_batch_paired_grid(pieces: Pieces | None = None, seeds=GRID_SEEDS) -> dict:
    """bad_batch_paired over BAD_BATCH_GRID, rounded to 3 decimals: {(init, lr, seed): {clip: stats}}. Minutes on a
    CPU; the notebook prints BAD_BATCH_PAIRED, its stored result, which tests/test_claims_ch08.py checks."""
    pieces = pieces or reference_pieces()
    g = BAD_BATCH_GRID
    out = {}
    for init in g["inits"]:
        for lr in g["lrs"]:
            for seed in seeds:
                runs = bad_batch_paired(pieces, init=init, lr=lr, seed=seed, steps=g["steps"],
                                        bad_batch_step=g["bad_batch_step"])
                out[(init, lr, seed)] = {c: {k: round(float(v), 3) for k, v in r.items()} for c, r in runs.items()}
    return out


# ------------------------------------------------------------------ Q2: Adam + L2 against AdamW over seeds

DECAY_SEEDS = (0, 1, 2, 3, 4)


def decay_over_seeds(lrs=(1e-3, 1e-2, 1e-1), *, weight_decay: float = 0.1, steps: int = 400,
                     seeds=DECAY_SEEDS, budget: float = 0.4) -> dict:
    """optim.decay_comparison (mean of 256 weights that start at 1 and get zero-mean noise gradients, std 10 or 1e-3)
    per lr and seed: {lr: {"Adam + L2 large": [final mean per seed], "Adam + L2 small": [...], "AdamW large": [...],
    "AdamW small": [...], "L2 small below 0.1": [first step below 0.1 per seed, or None],
    "formula": (1 - lr wd)^steps, "steps": steps, "budget steps": round(budget / lr), "Adam + L2 small at budget":
    [mean after that many steps, per seed], "AdamW small at budget": [...]}}. The "at budget" values compare the lrs
    at the same lr x steps (``budget``, at most lrs[0] x steps), where neither optimizer has removed everything yet.
    About a second on a CPU."""
    from course_utils import optim

    out = {}
    for lr in lrs:
        at = round(budget / lr)
        if not 1 <= at <= steps:
            raise ValueError(f"budget {budget} at lr {lr} is {at} steps, outside 1..{steps}")
        row = {k: [] for k in ("Adam + L2 large", "Adam + L2 small", "AdamW large", "AdamW small",
                               "L2 small below 0.1", "Adam + L2 small at budget", "AdamW small at budget")}
        for seed in seeds:
            runs = optim.decay_comparison(lr, weight_decay, steps=steps, statistic="mean", seed=seed)
            for name in ("Adam + L2", "AdamW"):
                for size, curve in zip(("large", "small"), runs[name]):
                    row[f"{name} {size}"].append(curve[-1])
                row[f"{name} small at budget"].append(runs[name][1][at - 1])  # curve[t]: after t + 1 steps
            row["L2 small below 0.1"].append(next((t for t, v in enumerate(runs["Adam + L2"][1]) if v < 0.1), None))
        row["formula"] = (1 - lr * weight_decay) ** steps
        row["steps"], row["budget steps"] = steps, at
        out[lr] = row
    return out


def decay_removed_ratio(row: dict, when: str = "end") -> float:
    """What Adam + L2 removed from the small-gradient weights over what AdamW removed, seed means, from a row of
    ``decay_over_seeds``: after all its steps (``when="end"``) or at the lr x steps budget (``"budget"``)."""
    suffix = "" if when == "end" else " at budget"
    l2, w = (_spread(row[f"{name} small{suffix}"])[0] for name in ("Adam + L2", "AdamW"))
    return (1 - l2) / (1 - w)


def decay_removed_ratios_per_seed(row: dict, when: str = "end") -> list[float]:
    """decay_removed_ratio seed by seed (one ratio per seed of the row), to show how far the seeds scatter."""
    suffix = "" if when == "end" else " at budget"
    return [(1 - l2) / (1 - w) for l2, w in zip(row[f"Adam + L2 small{suffix}"], row[f"AdamW small{suffix}"])]


def decay_table(table: dict) -> str:
    """decay_over_seeds as text: final means, mean±half-range over seeds, and the fraction each optimizer removed
    from the small-gradient weights, after all the steps and at the same lr x steps."""
    first = next(iter(table.items()))
    n, steps, budget = len(first[1]["AdamW small"]), first[1]["steps"], first[0] * first[1]["budget steps"]
    lines = [f"mean of 256 weights after {steps} steps, mean±half-range over {n} seeds (start 1.0; noise gradients, "
             f"std 10 'large' or 1e-3 'small')",
             f"{'lr':>6} {'L2 large':>12} {'L2 small':>12} {'AdamW large':>12} {'AdamW small':>12} "
             f"{f'(1-lr wd)^{steps}':>14} {'removed from small: L2 / AdamW':>31}  {'L2 small < 0.1':<22}"
             f"same lr x steps = {budget:g}: steps, removed L2 / AdamW (per seed)"]
    for lr, row in table.items():
        cells = [pm(_spread(row[k]), 3) for k in ("Adam + L2 large", "Adam + L2 small", "AdamW large", "AdamW small")]
        l2_removed = 1 - _spread(row["Adam + L2 small"])[0]
        w_removed = 1 - _spread(row["AdamW small"])[0]
        below = sorted(set(row["L2 small below 0.1"]), key=lambda x: (x is None, x))
        below = "never" if below == [None] else "after " + ", ".join(str(b) for b in below) + " steps"
        early = [1 - _spread(row[f"{name} small at budget"])[0] for name in ("Adam + L2", "AdamW")]
        per_seed = decay_removed_ratios_per_seed(row, "budget")
        lines.append(f"{lr:>6g} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} {cells[3]:>12} {row['formula']:>14.3f} "
                     f"{l2_removed:>9.3f} / {w_removed:.3f} = {decay_removed_ratio(row):>4.1f}x  {below:<22}"
                     f"{row['budget steps']:>3}: {early[0]:.3f} / {early[1]:.3f} = "
                     f"{decay_removed_ratio(row, 'budget'):.1f}x ({min(per_seed):.1f}-{max(per_seed):.1f}x)")
    return "\n".join(lines)


# the stored result of bad_batch_paired_grid() (reference pieces), checked by tests/test_claims_ch08.py
BAD_BATCH_PAIRED = {('GPT-2', 0.003, 0): {'clip 1.0': {'rise_1': 0.01,
                                    'rise_max': 0.015,
                                    'rise_end': 0.002,
                                    'end_clean': 2.725,
                                    'jump_clean': -0.261,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': 0.059,
                                       'rise_max': 0.103,
                                       'rise_end': 0.047,
                                       'end_clean': 2.749,
                                       'jump_clean': -0.274,
                                       'diverged': 0.0}},
 ('GPT-2', 0.003, 1): {'clip 1.0': {'rise_1': 0.0,
                                    'rise_max': 0.019,
                                    'rise_end': 0.01,
                                    'end_clean': 2.778,
                                    'jump_clean': -0.096,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': 0.005,
                                       'rise_max': 0.068,
                                       'rise_end': 0.015,
                                       'end_clean': 2.847,
                                       'jump_clean': -0.081,
                                       'diverged': 0.0}},
 ('GPT-2', 0.003, 2): {'clip 1.0': {'rise_1': 0.007,
                                    'rise_max': 0.021,
                                    'rise_end': 0.003,
                                    'end_clean': 2.711,
                                    'jump_clean': -0.246,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': 0.004,
                                       'rise_max': 0.024,
                                       'rise_end': 0.013,
                                       'end_clean': 2.747,
                                       'jump_clean': -0.24,
                                       'diverged': 0.0}},
 ('GPT-2', 0.01, 0): {'clip 1.0': {'rise_1': 0.007,
                                   'rise_max': 0.012,
                                   'rise_end': 0.01,
                                   'end_clean': 2.84,
                                   'jump_clean': -0.115,
                                   'diverged': 0.0},
                      'no clipping': {'rise_1': 0.041,
                                      'rise_max': 0.045,
                                      'rise_end': 0.015,
                                      'end_clean': 2.834,
                                      'jump_clean': -0.208,
                                      'diverged': 0.0}},
 ('GPT-2', 0.01, 1): {'clip 1.0': {'rise_1': 0.008,
                                   'rise_max': 0.008,
                                   'rise_end': 0.002,
                                   'end_clean': 2.864,
                                   'jump_clean': -0.104,
                                   'diverged': 0.0},
                      'no clipping': {'rise_1': 0.018,
                                      'rise_max': 0.044,
                                      'rise_end': 0.025,
                                      'end_clean': 2.917,
                                      'jump_clean': -0.052,
                                      'diverged': 0.0}},
 ('GPT-2', 0.01, 2): {'clip 1.0': {'rise_1': 0.006,
                                   'rise_max': 0.023,
                                   'rise_end': -0.001,
                                   'end_clean': 3.028,
                                   'jump_clean': -0.276,
                                   'diverged': 0.0},
                      'no clipping': {'rise_1': -0.003,
                                      'rise_max': 0.003,
                                      'rise_end': 0.045,
                                      'end_clean': 2.923,
                                      'jump_clean': -0.267,
                                      'diverged': 0.0}},
 ('fan-in', 0.003, 0): {'clip 1.0': {'rise_1': 0.001,
                                     'rise_max': 0.005,
                                     'rise_end': 0.002,
                                     'end_clean': 2.498,
                                     'jump_clean': -0.243,
                                     'diverged': 0.0},
                        'no clipping': {'rise_1': 0.0,
                                        'rise_max': 0.012,
                                        'rise_end': 0.014,
                                        'end_clean': 2.521,
                                        'jump_clean': -0.242,
                                        'diverged': 0.0}},
 ('fan-in', 0.003, 1): {'clip 1.0': {'rise_1': -0.0,
                                     'rise_max': 0.008,
                                     'rise_end': 0.002,
                                     'end_clean': 2.465,
                                     'jump_clean': -0.166,
                                     'diverged': 0.0},
                        'no clipping': {'rise_1': -0.0,
                                        'rise_max': 0.017,
                                        'rise_end': 0.017,
                                        'end_clean': 2.511,
                                        'jump_clean': -0.16,
                                        'diverged': 0.0}},
 ('fan-in', 0.003, 2): {'clip 1.0': {'rise_1': 0.005,
                                     'rise_max': 0.006,
                                     'rise_end': 0.002,
                                     'end_clean': 2.504,
                                     'jump_clean': -0.247,
                                     'diverged': 0.0},
                        'no clipping': {'rise_1': 0.003,
                                        'rise_max': 0.005,
                                        'rise_end': 0.008,
                                        'end_clean': 2.532,
                                        'jump_clean': -0.249,
                                        'diverged': 0.0}},
 ('fan-in', 0.01, 0): {'clip 1.0': {'rise_1': 0.007,
                                    'rise_max': 0.014,
                                    'rise_end': 0.002,
                                    'end_clean': 2.389,
                                    'jump_clean': -0.236,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': 0.006,
                                       'rise_max': 0.018,
                                       'rise_end': 0.019,
                                       'end_clean': 2.412,
                                       'jump_clean': -0.254,
                                       'diverged': 0.0}},
 ('fan-in', 0.01, 1): {'clip 1.0': {'rise_1': 0.0,
                                    'rise_max': 0.012,
                                    'rise_end': 0.003,
                                    'end_clean': 2.364,
                                    'jump_clean': -0.17,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': -0.009,
                                       'rise_max': 0.032,
                                       'rise_end': 0.026,
                                       'end_clean': 2.411,
                                       'jump_clean': -0.158,
                                       'diverged': 0.0}},
 ('fan-in', 0.01, 2): {'clip 1.0': {'rise_1': 0.008,
                                    'rise_max': 0.01,
                                    'rise_end': 0.006,
                                    'end_clean': 2.383,
                                    'jump_clean': -0.272,
                                    'diverged': 0.0},
                       'no clipping': {'rise_1': 0.009,
                                       'rise_max': 0.017,
                                       'rise_end': 0.026,
                                       'end_clean': 2.404,
                                       'jump_clean': -0.317,
                                       'diverged': 0.0}}}


def bad_batch_paired_table(grids: dict | None = None, paired: dict | None = None) -> str:
    """Q4's bad batch over the grid, paired with clean runs: per (init, lr) and clipping, mean±half-range over seeds
    of the spike ratio (SEED_GRIDS), the paired rise (bad minus clean loss) one step after the bad one, its largest
    value over the next BAD_BATCH_AFTER steps and at the end (last 10 steps); the clean run's own "loss after minus
    loss before"; how many seeds the detector flagged and how many diverged."""
    grids = grids or SEED_GRIDS
    paired = paired or BAD_BATCH_PAIRED
    lines = [f"{'init':<7} {'lr':>6} {'clipping':<12} {'norm/median':>11} {'rise +1':>11} {'max rise +1..+5':>15} "
             f"{'rise at end':>11} {'clean: after-before':>19} {'flagged':>7} {'diverged':>8}"]
    for init in BAD_BATCH_GRID["inits"]:
        for lr in BAD_BATCH_GRID["lrs"]:
            for clip in ("clip 1.0", "no clipping"):
                r = [grids["bad_batch"][(init, lr, s)][clip] for s in GRID_SEEDS]
                p = [paired[(init, lr, s)][clip] for s in GRID_SEEDS]
                cells = [pm(_spread(x["spike"] for x in r), 0)]
                cells += [pm(_spread(x[k] for x in p), 3) for k in ("rise_1", "rise_max", "rise_end")]
                cells.append(pm(_spread(x["jump_clean"] for x in p), 2))
                diverged = sum(x["diverged"] for x in r) + sum(x["diverged"] for x in p)
                lines.append(f"{init:<7} {lr:>6g} {clip:<12} {cells[0]:>11} {cells[1]:>11} {cells[2]:>15} "
                             f"{cells[3]:>11} {cells[4]:>19} {sum(x['flagged'] for x in r):>5.0f}/3 "
                             f"{diverged:>6.0f}/6")
    return "\n".join(lines)


def clipping_gain_table(grids: dict | None = None, paired: dict | None = None) -> str:
    """What clipping at 1.0 changes in the final loss (last 10 steps; clipped minus unclipped, paired by seed), with
    the bad batch (SEED_GRIDS) and without it (the clean runs of BAD_BATCH_PAIRED), per (init, lr) and seed."""
    grids = grids or SEED_GRIDS
    paired = paired or BAD_BATCH_PAIRED
    lines = [f"{'init':<7} {'lr':>6} {'with the bad batch: seeds 0, 1, 2 (mean)':>42} "
             f"{'without it: seeds 0, 1, 2 (mean)':>36}"]
    for init in BAD_BATCH_GRID["inits"]:
        for lr in BAD_BATCH_GRID["lrs"]:
            runs = [grids["bad_batch"][(init, lr, s)] for s in GRID_SEEDS]
            bad = [r["clip 1.0"]["end"] - r["no clipping"]["end"] for r in runs]
            clean = [paired[(init, lr, s)]["clip 1.0"]["end_clean"] - paired[(init, lr, s)]["no clipping"]["end_clean"]
                     for s in GRID_SEEDS]
            cols = [", ".join(f"{v:+.3f}" for v in vals) + f" ({sum(vals) / len(vals):+.3f})" for vals in (bad, clean)]
            lines.append(f"{init:<7} {lr:>6g} {cols[0]:>42} {cols[1]:>36}")
    return "\n".join(lines)


def adam_spike_push(spike: float, *, steps: int = 200, spike_step: int = 60, betas=(0.9, 0.95), size: int = 10_000,
                    seed: int = 0, after=(1, 40, 80, 120)) -> dict:
    """Adam (no weight decay, lr 1) on ``size`` coordinates whose gradients are N(0, 1), with ``spike`` added to every
    coordinate's gradient at ``spike_step``; the same noise without the spike as the baseline. Returns "at_spike"
    (the mean update at the spike step, in units of lr), "total" (the mean extra displacement the spike caused by
    the end, in units of lr), "muted" ({k: the std over coordinates of the update k steps after the spike, over the
    same in the baseline}, for k in ``after``: how much of the noise-driven update is left while the spike sits in v)
    and "v_steps" (how many steps after the spike the spike's excess in the mean of v stays above the baseline's mean
    v; None if it outlasts the run)."""
    b1, b2 = betas
    grads = torch.randn(steps, size, generator=torch.Generator().manual_seed(seed))
    out = {}
    for name, extra in (("clean", 0.0), ("spike", spike)):
        m, v, p = torch.zeros(size), torch.zeros(size), torch.zeros(size)
        out[f"{name}_v"], out[f"{name}_std"] = [], {}
        for t in range(steps):
            g = grads[t] + (extra if t == spike_step else 0.0)
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            u = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + 1e-8)
            p = p - u
            out[f"{name}_v"].append(float(v.mean()))
            if t == spike_step:
                out[f"{name}_at_spike"] = u
            if t - spike_step in after:
                out[f"{name}_std"][t - spike_step] = float(u.std())
        out[name] = p
    clean_v, spike_v = out["clean_v"], out["spike_v"]
    v_steps = next((k for k in range(1, steps - spike_step)
                    if spike_v[spike_step + k] - clean_v[spike_step + k] < clean_v[spike_step + k]), None)
    return {"at_spike": float(out["spike_at_spike"].mean()), "total": float((out["clean"] - out["spike"]).mean()),
            "muted": {k: out["spike_std"][k] / out["clean_std"][k] for k in out["spike_std"]}, "v_steps": v_steps}
