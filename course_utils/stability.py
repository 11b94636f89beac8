"""Softmax three ways, in plain PyTorch: naive, safe (max-subtracted) and online (one pass).

These are the building blocks of chapter 1's numerical-stability part and of FlashAttention in
chapter 7. All work over the last dimension and keep the input's shape.

Used by chapter 1.
"""
from __future__ import annotations

import math

import torch


def naive_softmax(x: torch.Tensor) -> torch.Tensor:
    """``exp(x) / sum(exp(x))`` as written in textbooks: overflows once exp(x) exceeds the dtype's max."""
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def safe_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of ``x``, stable for any finite or -inf logits.

    x: (..., n) floating tensor; entries may be -inf (masked) but every row has a finite entry.
    Returns a tensor of the same shape and dtype; ``x`` is not modified.
    Subtracting the row max leaves the result unchanged (softmax(x) = softmax(x - c)) and makes
    the largest exponent exp(0) = 1, so nothing overflows.
    """
    shifted = x - x.amax(dim=-1, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=-1, keepdim=True)


def online_softmax_update(m: torch.Tensor, d: torch.Tensor, block: torch.Tensor):
    """One step of the online softmax normaliser: fold a new block of logits into (m, d).

    m: (R,) running max of each row so far (-inf before any value was seen)
    d: (R,) running sum of exp(x - m) over the values seen so far (0 before any)
    block: (R, B) the next B logits of each row; entries may be -inf
    Returns ``(m_new, d_new)``, both (R,): m_new = max(m, max(block)) and
    d_new = d * exp(m - m_new) + sum(exp(block - m_new)). Rows whose values so far are all -inf
    keep m_new = -inf and d_new = 0 (no NaN). Inputs are not modified.
    """
    m_new = torch.maximum(m, block.amax(dim=-1))
    # exponentiate against 0 where everything so far is -inf: exp(-inf - (-inf)) would be NaN
    m_safe = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
    d_new = d * torch.exp(m - m_safe) + torch.exp(block - m_safe[:, None]).sum(dim=-1)
    return m_new, d_new


def online_softmax(x: torch.Tensor, block_size: int = 4, update=online_softmax_update) -> torch.Tensor:
    """Softmax of 2-D ``x`` (R, n) computing its statistics in one pass over blocks of columns.

    ``update(m, d, block) -> (m, d)`` folds in one block (pass your own to try it).
    """
    rows = x.shape[0]
    m = torch.full((rows,), -math.inf, dtype=x.dtype)
    d = torch.zeros(rows, dtype=x.dtype)
    for start in range(0, x.shape[1], block_size):
        m, d = update(m, d, x[:, start:start + block_size])
    return torch.exp(x - m[:, None]) / d[:, None]


def exp_overflow_threshold(dtype: torch.dtype) -> float:
    """The largest x with finite exp(x) in ``dtype``: ln(finfo.max) (88.72 fp32, 11.09 fp16)."""
    return math.log(torch.finfo(dtype).max)


def softmax_under_shift(max_logit: float, dtype: torch.dtype, n: int = 8) -> dict:
    """Softmax of logits ``max_logit + linspace(-3, 0, n)`` in ``dtype``: naive vs safe.

    Shifting every logit by the same amount does not change the true softmax, so the float64
    reference is the same for every ``max_logit``; naive turns to NaN once ``max_logit`` passes
    ln(max) of the dtype. Returns {"logits", "naive", "safe", "reference"} as float64 tensors.
    """
    offsets = torch.linspace(-3.0, 0.0, n, dtype=torch.float64)
    logits = (max_logit + offsets).to(dtype)
    return {
        "logits": logits.double(),
        "naive": naive_softmax(logits).double(),
        "safe": safe_softmax(logits).double(),
        "reference": torch.softmax(offsets, dim=-1),
    }


def attention_score_max(activation_scale: float, d_k: int = 64, n: int = 256, seed: int = 0,
                        qk_norm: bool = False) -> float:
    """Largest |q.k| / sqrt(d_k) over an (n, n) score matrix when q and k are N(0, scale^2) vectors.

    With unit-variance q and k each score has variance 1 after the 1/sqrt(d_k) scaling, so the
    largest of n^2 scores is about 4 to 5; scaling q and k by s scales scores by s^2. With
    ``qk_norm`` each q and k is first RMS-normalised over d_k (QK-norm, chapter 3), which bounds
    every score by sqrt(d_k) whatever the scale.
    """
    g = torch.Generator().manual_seed(seed)
    q = activation_scale * torch.randn(n, d_k, generator=g, dtype=torch.float64)
    k = activation_scale * torch.randn(n, d_k, generator=g, dtype=torch.float64)
    if qk_norm:
        q = q * torch.rsqrt(q.pow(2).mean(dim=-1, keepdim=True))
        k = k * torch.rsqrt(k.pow(2).mean(dim=-1, keepdim=True))
    return float((q @ k.T / math.sqrt(d_k)).abs().max())


def figure_softmax_under_shift(max_logit: float = 50.0, dtype: str = "float32"):
    """Bars: naive and safe softmax in ``dtype`` against the float64 reference (see softmax_under_shift)."""
    from course_utils.plotting import COLORS, subplots

    torch_dtype = getattr(torch, dtype)
    r = softmax_under_shift(max_logit, torch_dtype)
    n = len(r["logits"])
    fig, ax = subplots()
    xs = torch.arange(n, dtype=torch.float64).numpy()
    ax.bar(xs - 0.2, r["safe"].nan_to_num(0.0).numpy(), width=0.4, color=COLORS["safe"], label="safe")
    ax.bar(xs + 0.2, r["naive"].nan_to_num(0.0).numpy(), width=0.4, color=COLORS["naive"], label="naive")
    for i in torch.nonzero(r["naive"].isnan()).flatten().tolist():
        ax.text(i + 0.2, 0.02, "NaN", color=COLORS["naive"], ha="center", rotation=90)
    ax.plot(xs, r["reference"].numpy(), "k_", ms=14, label="float64 reference")
    limit = exp_overflow_threshold(torch_dtype)
    ax.set(xlabel="token", ylabel="probability", ylim=(0, 0.5),
           title=f"{dtype}: max logit {max_logit:.3g}; exp overflows above {limit:.2f}")
    ax.legend(loc="upper left")
    return fig
