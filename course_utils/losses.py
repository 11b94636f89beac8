"""Measurements behind chapter 4 (loss functions): perplexity of simple byte-level predictors,
a byte-level chat template with role-tagged tokens, label smoothing's target and optimum, and the
memory autograd keeps for the backward pass of a loss.

Used by chapter 4.
"""
from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from course_utils.plotting import COLORS, MUTED_TEXT, subplots

# ------------------------------------------------------------------------------------ perplexity


def byte_perplexities(train: str, test: str, alpha: float = 0.1) -> dict[str, float]:
    """Perplexity on ``test`` of three byte-level predictors fitted on ``train`` (add-alpha smoothing):
    uniform over 256 bytes, unigram (byte frequencies), bigram (next byte given the previous one)."""
    tr, te = train.encode("utf-8"), test.encode("utf-8")
    uni = torch.full((256,), alpha)
    for b, c in Counter(tr).items():
        uni[b] += c
    uni = uni / uni.sum()
    bi = torch.full((256, 256), alpha)
    for (a, b), c in Counter(zip(tr, tr[1:])).items():
        bi[a, b] += c
    bi = bi / bi.sum(dim=1, keepdim=True)
    prev, nxt = torch.tensor(list(te[:-1])), torch.tensor(list(te[1:]))
    return {
        "uniform over 256 bytes": 256.0,
        "unigram (byte frequencies)": math.exp(float(-torch.log(uni[nxt]).mean())),
        "bigram (previous byte)": math.exp(float(-torch.log(bi[prev, nxt]).mean())),
    }


# ------------------------------------------------------------------------ chat template and masks

SPECIAL_TOKENS = {"<|system|>": 256, "<|user|>": 257, "<|assistant|>": 258, "<|end|>": 259}
VOCAB_SIZE = 260  # 256 bytes + 4 special tokens


def render_chat(messages: list[dict]) -> tuple[torch.Tensor, list[str]]:
    """Byte-level tokens of a conversation and the role each token belongs to.

    Template, per message: ``<|role|>`` then the UTF-8 bytes of the content then ``<|end|>``. The role
    header is tagged "template" (the model never has to predict which speaker comes next); the content
    and its ``<|end|>`` carry the message's role. Returns ``(ids (T,) int64, roles (list of T strings))``.
    """
    ids, roles = [], []
    for message in messages:
        role, content = message["role"], message["content"]
        if f"<|{role}|>" not in SPECIAL_TOKENS:
            raise ValueError(f"unknown role {role!r}; expected system, user or assistant")
        ids.append(SPECIAL_TOKENS[f"<|{role}|>"])
        roles.append("template")
        body = list(content.encode("utf-8")) + [SPECIAL_TOKENS["<|end|>"]]
        ids += body
        roles += [role] * len(body)
    return torch.tensor(ids, dtype=torch.long), roles


def token_text(token: int) -> str:
    names = {v: k for k, v in SPECIAL_TOKENS.items()}
    if token in names:
        return names[token]
    return bytes([token]).decode("utf-8", errors="replace")


def labels_html(ids: torch.Tensor, labels: torch.Tensor) -> str:
    """HTML of the tokens, green where the label counts, grey and struck through where it is -100."""
    spans = []
    for token, label in zip(ids.tolist(), labels.tolist()):
        text = html.escape(token_text(token)).replace("\n", "⏎")
        # both colours set where the background is (readable in light and dark themes); the muted text uses
        # JupyterLab's own secondary text colour, with a fallback that passes WCAG AA on white
        style = ("background:#c7e9c0;color:#000000" if label != -100
                 else f"color:{MUTED_TEXT};text-decoration:line-through")
        spans.append(f'<span style="{style}">{text}</span>')
    return ('<div style="font-family:monospace;line-height:1.8;white-space:pre-wrap">' + "".join(spans)
            + "</div><div>green: in the loss; grey: label -100</div>")


# ------------------------------------------------------------------------------ label smoothing

def smoothed_target(n_classes: int, target: int, eps: float) -> torch.Tensor:
    """PyTorch's label-smoothing target: (1 - eps) on the target plus eps / V on every class."""
    q = torch.full((n_classes,), eps / n_classes)
    q[target] += 1 - eps
    return q


def optimal_logit_gap(n_classes: int, eps: float) -> float:
    """Target logit minus any other logit at the minimum of the smoothed loss (where softmax = target):
    log((1 - eps + eps/V) / (eps/V)); infinite at eps = 0 (plain cross-entropy never stops pushing)."""
    if eps <= 0:
        return math.inf
    return math.log((1 - eps + eps / n_classes) / (eps / n_classes))


def figure_label_smoothing(eps: float = 0.1, n_classes: int = 10):
    fig, (ax_q, ax_g) = subplots(2, width=10)
    q = smoothed_target(n_classes, 3, eps)
    ax_q.bar(range(n_classes), q.numpy(), color=[COLORS["safe"] if i == 3 else "grey" for i in range(n_classes)])
    ax_q.set(xlabel="class (target = 3)", ylabel="target probability", ylim=(0, 1.05),
             title=f"smoothed target, eps = {eps:.3g}, V = {n_classes}")
    eps_grid = torch.linspace(0.01, 0.5, 50).tolist()
    ax_g.plot(eps_grid, [optimal_logit_gap(n_classes, e) for e in eps_grid], color=COLORS["safe"])
    if eps > 0:
        ax_g.plot([eps], [optimal_logit_gap(n_classes, eps)], "o", color=COLORS["naive"])
    ax_g.set(xlabel="eps", ylabel="target logit − other logit", title="logit gap at the optimum (∞ at eps = 0)")
    return fig


# ------------------------------------------------------------------------ memory kept for backward

def fit_label_smoothed(weight, bias, x_train, y_train, eps, *, checkpoints, lr: float = 3e-3, at_checkpoint=None):
    """The training loop of the label-smoothing runs: full-batch Adam steps, in place, on K linear softmax models at
    once (weight (K, features, classes), bias (K, 1, classes), x_train (K, n, features), y_train (K, n), eps (K, 1)
    model k's smoothing), up to the last of ``checkpoints``, calling ``at_checkpoint(step)`` after each of them. Adam
    is per element and the summed loss gives each model its own gradient, so each follows exactly its own
    full-batch trajectory; with a constant learning rate, the models at step 200 of a 3000-step run are those of a
    200-step run."""
    opt = torch.optim.Adam([weight, bias], lr=lr)
    for step in range(1, max(checkpoints) + 1):
        log_p = torch.baddbmm(bias, x_train, weight).log_softmax(dim=-1)  # (K, n, classes)
        nll = -log_p.gather(-1, y_train[..., None])[..., 0]  # (K, n)
        # F.cross_entropy(label_smoothing=eps): (1 - eps) * CE + eps * mean_j(-log p_j), mean over the rows
        loss = ((1 - eps) * nll + eps * (-log_p.mean(dim=-1))).mean(dim=1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints and at_checkpoint is not None:
            at_checkpoint(step)


def _scores(weight, bias, tests) -> list[dict[str, float]]:
    """Accuracy, mean confidence, ECE (15 bins) and test loss of each stacked model k on its test set tests[k]."""
    results = []
    with torch.no_grad():
        for k, (x_test, y_test) in enumerate(tests):
            logits = x_test @ weight[k] + bias[k]
            confidence, predicted = logits.softmax(dim=-1).max(dim=-1)
            correct = (predicted == y_test).float()
            edges = torch.linspace(0, 1, 16)
            ece = 0.0
            for lo, hi in zip(edges[:-1], edges[1:]):
                in_bin = (confidence > lo) & (confidence <= hi)
                if in_bin.any():
                    ece += float(in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs())
            results.append({"accuracy": float(correct.mean()), "confidence": float(confidence.mean()), "ece": ece,
                            "test_loss": float(F.cross_entropy(logits, y_test))})
    return results


def _smoothing_checkpoints(configs, *, checkpoints, n_train: int, lr: float = 3e-3) -> dict[int, list[dict]]:
    """One run of ``smoothing_calibration`` per (eps, seed) in ``configs``, all trained at once (the K linear models
    stacked into one (K, 20, 10) weight, trained by :func:`fit_label_smoothed`) and scored after each of
    ``checkpoints`` steps: {step: [scores per config]}."""
    n_features, n_classes = 20, 10
    xs, ys, tests, weights, biases = [], [], [], [], []
    for _, seed in configs:
        gen = torch.Generator().manual_seed(seed)
        teacher = torch.randn(n_features, n_classes, generator=gen)

        def examples(n, gen=gen, teacher=teacher):
            x = torch.randn(n, n_features, generator=gen)
            return x, (x @ teacher + 1.5 * torch.randn(n, n_classes, generator=gen)).argmax(dim=1)

        (x_train, y_train), test = examples(n_train), examples(4096)
        xs.append(x_train)
        ys.append(y_train)
        tests.append(test)
        torch.manual_seed(seed)
        linear = torch.nn.Linear(n_features, n_classes)
        weights.append(linear.weight.detach().T)
        biases.append(linear.bias.detach()[None])
    x_train, y_train = torch.stack(xs), torch.stack(ys)  # (K, n_train, 20), (K, n_train)
    weight = torch.stack(weights).clone().requires_grad_()  # (K, 20, 10)
    bias = torch.stack(biases).clone().requires_grad_()  # (K, 1, 10)
    eps = torch.tensor([e for e, _ in configs])[:, None]  # (K, 1)
    scored = {}
    fit_label_smoothed(weight, bias, x_train, y_train, eps, checkpoints=set(checkpoints), lr=lr,
                       at_checkpoint=lambda step: scored.update({step: _scores(weight, bias, tests)}))
    return scored


def _smoothing_runs(configs, *, steps: int, n_train: int, lr: float = 3e-3) -> list[dict[str, float]]:
    """:func:`_smoothing_checkpoints` scored after ``steps`` steps only: one result per (eps, seed) of ``configs``."""
    return _smoothing_checkpoints(configs, checkpoints=(steps,), n_train=n_train, lr=lr)[steps]


def smoothing_calibration(eps: float, *, steps: int = 1000, n_train: int = 256, seed: int = 0,
                          lr: float = 3e-3) -> dict[str, float]:
    """Label smoothing on a small classifier that can overfit: a linear softmax model on ``n_train`` noisy
    examples of a 10-class problem (labels = argmax of a random linear teacher plus noise, so no predictor is
    always right), trained full-batch with Adam (learning rate ``lr``) for ``steps`` steps, scored on 4096 fresh
    examples. Returns accuracy, mean confidence (the top probability), expected calibration error (15 equal-width
    bins of confidence) and the test cross-entropy (nats)."""
    return _smoothing_runs([(eps, seed)], steps=steps, n_train=n_train, lr=lr)[0]


def smoothing_loss_floor(transitions: torch.Tensor, stationary: torch.Tensor, eps: float) -> float:
    """The lowest loss on *unsmoothed* data that a model trained with label smoothing ``eps`` can reach, minus
    the data's entropy rate, for a Markov chain (transitions (V, V), stationary (V,)). The smoothed loss is
    minimised by q = (1 - eps) p + eps / V, so the floor is the cross-entropy of p against that q."""
    p = transitions.double()
    q = (1 - eps) * p + eps / p.shape[-1]
    weights = stationary.double()[:, None] * p
    return float((weights * (-q.log())).sum() - (weights * (-p.log())).sum())


# (full-batch Adam steps, training examples): early (200 steps) on a small and a large set, fitted (1000 steps) on a
# small and a medium one, and the small set overfitted (3000 steps)
SMOOTHING_SETTINGS = ((200, 256), (200, 4096), (1000, 256), (1000, 1024), (3000, 256))


def smoothing_over_seeds(eps: float = 0.1, *, settings=SMOOTHING_SETTINGS, seeds=(0, 1, 2), lr: float = 3e-3) -> dict:
    """``smoothing_calibration`` with and without label smoothing ``eps``, per (steps, n_train) setting and seed.

    Returns {(steps, n_train): {metric: (values at eps 0 per seed, values at eps per seed)}} for the metrics
    accuracy, confidence, ece and test_loss; the same seed gives both runs the same data and initial weights, so
    the per-seed differences are paired. Settings with the same n_train share one run, scored at each of their step
    counts (the learning rate is constant, so step 200 of a longer run is a 200-step run)."""
    configs = [(e, seed) for e in (0.0, eps) for seed in seeds]
    flat = {}
    for n_train in dict.fromkeys(n for _, n in settings):
        checkpoints = [steps for steps, n in settings if n == n_train]
        for steps, scores in _smoothing_checkpoints(configs, checkpoints=checkpoints, n_train=n_train, lr=lr).items():
            flat[(steps, n_train)] = scores
    out = {}
    for setting in settings:
        runs = [flat[setting][:len(seeds)], flat[setting][len(seeds):]]
        out[setting] = {key: tuple([r[key] for r in per_eps] for per_eps in runs)
                        for key in ("accuracy", "confidence", "ece", "test_loss")}
    return out


# the long runs, too slow for the notebook (minutes): 3000 steps on 1024 and on 4096 examples, where the plain model
# is fitted; eps -> the settings run with it (eps 0.03 only where 0.1 over-corrects)
SMOOTHING_LONG_GRID = {0.1: ((3000, 1024), (3000, 4096)), 0.03: ((3000, 1024),)}
SMOOTHING_LONG_CACHE = Path(__file__).resolve().parent / "data_files" / "ch04_smoothing_long.json"


def smoothing_long_runs(grid=SMOOTHING_LONG_GRID, *, seeds=(0, 1, 2), lr: float = 3e-3) -> dict:
    """:func:`smoothing_over_seeds` for each eps of ``grid`` on its settings: {eps: {(steps, n_train): {metric:
    (values at eps 0 per seed, values at eps per seed)}}}. Stored by :func:`save_smoothing_long_runs`; the notebook
    reads the stored result (:func:`load_smoothing_long_runs`) and tests/test_claims_ch04.py recomputes it."""
    return {eps: smoothing_over_seeds(eps, settings=settings, seeds=seeds, lr=lr) for eps, settings in grid.items()}


def save_smoothing_long_runs(result: dict, path=SMOOTHING_LONG_CACHE) -> None:
    data = {str(eps): {f"{steps},{n_train}": {key: [list(v) for v in values] for key, values in metrics.items()}
                       for (steps, n_train), metrics in runs.items()} for eps, runs in result.items()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_smoothing_long_runs(path=SMOOTHING_LONG_CACHE) -> dict:
    """The stored result of ``smoothing_long_runs()``, in its shape (eps and (steps, n_train) keys, tuples)."""
    data = json.loads(Path(path).read_text())
    return {float(eps): {tuple(int(x) for x in setting.split(",")): {key: tuple(values) for key, values in m.items()}
                         for setting, m in runs.items()} for eps, runs in data.items()}


def paired_change(before: list[float], after: list[float]) -> tuple[float, float, float]:
    """(mean, smallest, largest) of the per-seed differences after - before."""
    diffs = [b - a for a, b in zip(before, after)]
    return sum(diffs) / len(diffs), min(diffs), max(diffs)


def backward_allocated_bytes(loss: torch.Tensor, inputs: torch.Tensor) -> int:
    """Bytes of new tensor storage that ``torch.autograd.grad(loss, inputs)`` allocates: every ATen op's output
    whose storage is none of that op's inputs' (an in-place ``mul_`` counts 0, an out-of-place ``mul`` its
    result's size). Runs the backward pass once."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class NewStorage(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            seen = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                    if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                    self.bytes += t.untyped_storage().nbytes()
            return out

    with NewStorage() as counter:
        torch.autograd.grad(loss, inputs)
    return counter.bytes


def lm_head_memory(loss_fn, *, n: int = 128, v: int = 32768, d: int = 8, seed: int = 0) -> dict[str, int]:
    """Tensor memory of a loss on an LM head's logits, in bytes, from forward to backward.

    Runs ``logits = h @ W`` ((n, d) @ (d, v), only ``h`` requires a gradient, so the head's own backward writes
    just (n, d)), ``loss = loss_fn(logits, target)``, drops the Python reference to the logits (in a real model
    they are dead after the loss unless the loss keeps them), then ``loss.backward()``. Every storage that an ATen
    op creates is counted from its creation until it is freed (the logits included; views and in-place results,
    which reuse an input's storage, add nothing). Returns the peak of live bytes during the forward pass
    ("forward_peak"), the bytes still alive when the backward pass starts ("held"), and the peak during the
    backward pass ("backward_peak"); ``h``, ``W`` and the target, made before, are not counted."""
    import gc
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveStorage(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live, self.peak, self.alive = 0, 0, set()

        def _free(self, ptr, nbytes):
            self.alive.discard(ptr)
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
                if ptr and ptr not in inputs and ptr not in self.alive:
                    self.alive.add(ptr)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, ptr, storage.nbytes())
            return out

    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=gen).requires_grad_()
    weight = torch.randn(d, v, generator=gen)
    target = torch.randint(0, v, (n,), generator=gen)
    with LiveStorage() as mode:
        logits = h @ weight
        loss = loss_fn(logits, target)
        forward_peak = mode.peak
        del logits
        gc.collect()
        held = mode.live
        mode.peak = mode.live
        loss.backward()
        backward_peak = mode.peak
    return {"forward_peak": forward_peak, "held": held, "backward_peak": backward_peak}
