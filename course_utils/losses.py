"""Measurements behind chapter 4 (loss functions): perplexity of simple byte-level predictors,
a byte-level chat template with role-tagged tokens, label smoothing's target and optimum, and the
memory autograd keeps for the backward pass of a loss."""
from __future__ import annotations

import html
import math
from collections import Counter

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

def smoothing_calibration(eps: float, *, steps: int = 1000, n_train: int = 256, seed: int = 0) -> dict[str, float]:
    """Label smoothing on a small classifier that can overfit: a linear softmax model on 256 noisy examples of a
    10-class problem (labels = argmax of a random linear teacher plus noise, so no predictor is always right),
    trained full-batch with Adam for ``steps`` steps, scored on 4096 fresh examples. Returns accuracy, mean
    confidence (the top probability), expected calibration error (15 equal-width bins of confidence) and the
    test cross-entropy (nats)."""
    gen = torch.Generator().manual_seed(seed)
    n_features, n_classes = 20, 10
    teacher = torch.randn(n_features, n_classes, generator=gen)

    def examples(n):
        x = torch.randn(n, n_features, generator=gen)
        return x, (x @ teacher + 1.5 * torch.randn(n, n_classes, generator=gen)).argmax(dim=1)

    (x_train, y_train), (x_test, y_test) = examples(n_train), examples(4096)
    torch.manual_seed(seed)
    model = torch.nn.Linear(n_features, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = F.cross_entropy(model(x_train), y_train, label_smoothing=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model(x_test)
        confidence, predicted = logits.softmax(dim=-1).max(dim=-1)
        correct = (predicted == y_test).float()
        edges = torch.linspace(0, 1, 16)
        ece = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = (confidence > lo) & (confidence <= hi)
            if in_bin.any():
                ece += float(in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs())
        return {"accuracy": float(correct.mean()), "confidence": float(confidence.mean()), "ece": ece,
                "test_loss": float(F.cross_entropy(logits, y_test))}


def smoothing_loss_floor(transitions: torch.Tensor, stationary: torch.Tensor, eps: float) -> float:
    """The lowest loss on *unsmoothed* data that a model trained with label smoothing ``eps`` can reach, minus
    the data's entropy rate, for a Markov chain (transitions (V, V), stationary (V,)). The smoothed loss is
    minimised by q = (1 - eps) p + eps / V, so the floor is the cross-entropy of p against that q."""
    p = transitions.double()
    q = (1 - eps) * p + eps / p.shape[-1]
    weights = stationary.double()[:, None] * p
    return float((weights * (-q.log())).sum() - (weights * (-p.log())).sum())
