"""Rotary position embeddings (RoPE) and the ways to stretch them past the training context (chapter 7).

Convention: "rotate half" (GPT-NeoX, and Hugging Face's Llama): feature i of a head is paired with feature
i + d/2 and the pair is rotated by the angle position * inv_freq[i], with inv_freq[i] = base^(-2i/d), i < d/2.
Meta's reference Llama code pairs adjacent features (2i, 2i + 1) instead (GPT-J does too); Hugging Face's
conversion script permutes the q and k projection rows so that rotate-half gives the same attention. Both pairings
make scores depend on relative position only, but they are not interchangeable on trained weights.
Each scaling method returns new inverse frequencies (and, for YaRN, a factor on the attention
logits); it changes nothing else in the model, which is why it can be applied to a trained one.

Used by chapters 6 and 7.
"""
from __future__ import annotations

import math

import torch

METHODS = ("none", "pi", "ntk", "yarn", "llama3")


def rope_inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """(head_dim // 2,) float32 inverse frequencies base^(-2i/head_dim); head_dim must be even."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim).float()


def rope_rotate(x, positions, inv_freq):
    """Rotate each feature pair of x by its position's angle (RoPE, "rotate half" pairing).

    x: (..., T, d) with d even; positions: (T,) float or int; inv_freq: (d/2,) float32. Feature i is
    paired with feature i + d/2 and the pair (a, b) becomes (a cos t - b sin t, a sin t + b cos t) with
    t = positions[p] * inv_freq[i], the angle computed in float32 (as Hugging Face's Llama does; chapter 7
    measures what that costs at long positions). Returns a new tensor of x's shape and dtype.
    """
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def ntk_scaled_inv_freq(inv_freq, factor):
    """NTK-aware RoPE scaling (bloc97, 2023, "NTK-Aware Scaled RoPE"): the frequencies RoPE would have with
    its base b raised to b * factor^(d / (d - 2)), d = 2 * len(inv_freq), where inv_freq[i] = b^(-2i/d).

    inv_freq: a float (d/2,) tensor; factor: the context extension (> 0). Returns a new (d/2,) tensor of the
    same dtype; inv_freq is not modified. Two properties pin it down: the highest frequency (i = 0) is
    unchanged, and the lowest (i = d/2 - 1) is divided by exactly ``factor``. hint("7.2") derives it.
    """
    d = 2 * inv_freq.shape[-1]
    i = torch.arange(inv_freq.shape[-1], dtype=torch.float64)
    return (inv_freq.double() * factor ** (-2 * i / (d - 2))).to(inv_freq.dtype)


def llama3_scaled_inv_freq(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    """Llama 3.1's RoPE scaling (Meta, July 2024; Hugging Face's rope_type "llama3"), per frequency, by its
    wavelength 2*pi / inv_freq.

    Wavelengths shorter than original_context / high_freq_factor are kept (many turns inside the original
    context); wavelengths longer than original_context / low_freq_factor are divided by ``factor``, as
    position interpolation does; in between, the scaled inverse frequency moves linearly, in the ratio
    original_context / wavelength, from inv_freq / factor (at the long end) to inv_freq (at the short end),
    so the rule is continuous. No attention scaling. inv_freq: a float tensor; returns a new tensor of the
    same shape and dtype. hint("7.3") gives the formula.
    """
    wavelength = 2 * math.pi / inv_freq
    smooth = ((original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def yarn_correction_range(head_dim: int, base: float, original_context: int, beta_fast: float = 32.0,
                          beta_slow: float = 1.0) -> tuple[int, int]:
    """The pair indices between which YaRN's reference code ramps (YaRN's repository,
    ``_yarn_find_correction_range``; Hugging Face's ``_compute_yarn_parameters``, ``truncate=True``).

    The pair that makes exactly r turns in ``original_context`` has the fractional index
    head_dim * ln(original_context / (2 pi r)) / (2 ln base); the ramp starts at the floor of that index for
    ``beta_fast`` turns and ends at the ceiling of the index for ``beta_slow`` turns, clamped to [0, head_dim - 1]
    (the reference code clamps with the head dimension, not the number of pairs)."""
    def index(turns):
        return head_dim * math.log(original_context / (turns * 2 * math.pi)) / (2 * math.log(base))

    return max(math.floor(index(beta_fast)), 0), min(math.ceil(index(beta_slow)), head_dim - 1)


def yarn_scaled_inv_freq(inv_freq, factor, original_context, alpha=1.0, beta=32.0, temperature=True, ramp="turns",
                         base=None):
    """YaRN's "NTK-by-parts" frequencies and its attention factor (Peng et al., 2023).

    r = original_context / wavelength counts the turns a frequency makes inside the training context.
    ``ramp="turns"`` (the default) is the paper's formula: gamma = clamp((r - alpha) / (beta - alpha), 0, 1);
    new = (1 - gamma) * inv_freq / factor + gamma * inv_freq: frequencies with many turns (r > beta) are kept,
    those with less than alpha turns are interpolated, and gamma is linear in r in between.
    ``ramp="index"`` is what the reference code runs (YaRN's repository, Hugging Face's rope_type "yarn",
    DeepSeek-V3): gamma is linear in the pair *index* i between the rounded bounds of
    :func:`yarn_correction_range` (beta = beta_fast, alpha = beta_slow), i.e. linear in log r, and the rounding
    widens the band of kept frequencies; it needs the RoPE ``base`` (default: read off inv_freq[1]).
    Returns (new inv_freq, attention factor 0.1 ln(factor) + 1), the factor multiplying q and k
    (so the logits by its square) to keep the attention's entropy; 1.0 with ``temperature=False``.
    The published defaults alpha = 1, beta = 32 were chosen for contexts of thousands of tokens.
    """
    attention_factor = 0.1 * math.log(factor) + 1.0 if temperature else 1.0
    if ramp == "turns":
        r = original_context * inv_freq / (2 * math.pi)
        gamma = ((r - alpha) / (beta - alpha)).clamp(0, 1)
        return (1 - gamma) * inv_freq / factor + gamma * inv_freq, attention_factor
    if ramp != "index":
        raise ValueError(f"ramp must be 'turns' (the paper's formula) or 'index' (the reference code), not {ramp!r}")
    pairs = inv_freq.shape[-1]
    if base is None:  # inv_freq[i] = base^(-2i/d): inv_freq[1] = base^(-2/d)
        base = float(inv_freq[1].double()) ** (-pairs)
    low, high = yarn_correction_range(2 * pairs, base, original_context, beta_fast=beta, beta_slow=alpha)
    if low == high:
        high += 0.001  # as the reference code does
    index = torch.arange(pairs, dtype=torch.float64)
    gamma = (1 - ((index - low) / (high - low)).clamp(0, 1)).to(inv_freq.dtype)  # 1 = keep the frequency
    return (1 - gamma) * inv_freq / factor + gamma * inv_freq, attention_factor


def scaled_inv_freq(inv_freq: torch.Tensor, method: str, factor: float, original_context: int,
                    **options) -> tuple[torch.Tensor, float]:
    """(inverse frequencies, attention factor on q and k) for a scaling method of ``METHODS``; ``options`` go to
    the method's function (YaRN's alpha, beta, temperature, ramp, base; Llama 3.1's low_freq_factor,
    high_freq_factor)."""
    if method == "none" or factor == 1.0:
        return inv_freq, 1.0
    if method == "pi":
        return inv_freq / factor, 1.0
    if method == "ntk":
        return ntk_scaled_inv_freq(inv_freq, factor), 1.0
    if method == "llama3":
        return llama3_scaled_inv_freq(inv_freq, factor, original_context, **options), 1.0
    if method == "yarn":
        return yarn_scaled_inv_freq(inv_freq, factor, original_context, **options)
    raise ValueError(f"unknown RoPE scaling {method!r}; choose one of {METHODS}")


def figure_scaling(factor: float = 8.0, head_dim: int = 128, base: float = 500000.0, original_context: int = 8192):
    """Per-frequency factor by which each method divides RoPE's frequencies, against the wavelength
    (Llama-3-like defaults: head_dim 128, base 500000, trained at 8192 tokens). YaRN is drawn twice, with the
    published defaults (alpha 1, beta 32): the paper's ramp in turns and the reference code's ramp in pair index."""
    from course_utils.plotting import log_scale, series, subplots

    inv = rope_inv_freq(head_dim, base)
    wavelength = (2 * math.pi / inv).tolist()
    fig, ax = subplots(1, width=8, height=3.6)
    variants = [("pi", "pi", {}, series("pi")), ("ntk", "ntk", {}, series("ntk")),
                ("yarn, paper's γ(r)", "yarn", {}, series("yarn")),
                ("yarn, reference code", "yarn", {"ramp": "index", "base": base}, {**series("yarn"), "linestyle": "-"}),
                ("llama3", "llama3", {}, series("llama3"))]
    for name, method, options, style in variants:
        new, attention = scaled_inv_freq(inv, method, factor, original_context, **options)
        label = name + (f" (q, k × {attention:.2f})" if attention != 1.0 else "")
        ax.plot(wavelength, (inv / new).tolist(), **style, label=label)
    ax.axvline(original_context, color="grey", lw=1, ls=":")
    ax.text(original_context, factor * 1.02, " training context", color="grey", va="bottom", fontsize=8)
    log_scale(ax, "xy")
    ax.set(xlabel="wavelength of the frequency (positions per turn)", ylabel="frequency divided by",
           title=f"how each method stretches RoPE, factor {factor:g}", ylim=(0.9, factor * 1.3))
    ax.legend(loc="upper left")
    return fig
