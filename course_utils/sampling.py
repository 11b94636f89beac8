"""Decoding (chapter 6): temperature, top-k, top-p, min-p, repetition penalty, greedy, beam search, best-of-N.

Filters take logits (..., V) and return new logits with the removed tokens at -inf, so they chain
(temperature, then filters, then softmax and a draw), as in Hugging Face's logits processors.
``generate`` works with any ``next_logits(sequences) -> (len(sequences), V)`` (raw logits: the
repetition penalty and temperature act on them) and ``beam_search`` with its log-softmax
(:func:`log_probs_of`); :func:`model_logits` builds ``next_logits`` from a course model.
"""
from __future__ import annotations

import html
import math
from typing import Callable

import torch

NEG_INF = -math.inf


# ----------------------------------------------------------------------------------- temperature

def softmax_with_temperature(logits, temperature):
    """Probabilities softmax(logits / T) over the last dim, stable for any T >= 0; returns a new tensor.

    logits: (..., V) float (float32 or float64; the result has the same dtype). Tiny T must not
    overflow (no exp of huge numbers). T = 0 is the limit T -> 0: the probability is split equally
    between the tied maxima of each row (one-hot when the maximum is unique). T < 0 raises ValueError.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if temperature == 0:
        top = logits == logits.max(dim=-1, keepdim=True).values
        return top.to(dtype) / top.sum(dim=-1, keepdim=True)
    return torch.softmax(logits.to(dtype) / temperature, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dim (0 log 0 = 0)."""
    return -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(dim=-1)


# --------------------------------------------------------------------------------------- filters

def top_k_filter(logits, k):
    """Keep the k largest logits of each row (last dim), set the rest to -inf; returns a new tensor.

    A token tied with the k-th largest logit is kept too (so ties at the boundary may keep more than
    k). k >= V keeps everything; k must be at least 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability sums to >= p.

    Per row (last dim): sort the probabilities softmax(logits) in descending order (ties: lower token
    id first) and keep a token if the mass of the tokens *before* it is < p; so the token that crosses
    p is kept, and the most likely token always is. Others become -inf. 0 < p <= 1. Returns a new tensor.
    """
    if p >= 1:
        return logits.clone()  # everything: a float cumulative sum can reach 1 before the last token
    probs = torch.softmax(logits.double(), dim=-1)  # float64 sums: rounding cannot move the boundary
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def min_p_filter(logits, min_p):
    """Keep tokens whose probability is at least min_p times the top token's; the rest -inf.

    In logits: p_i >= min_p * p_max  <=>  z_i >= z_max + ln(min_p), so no softmax is needed.
    0 <= min_p <= 1 (0 keeps everything, 1 keeps only the tied maxima). Returns a new tensor.
    """
    if min_p <= 0:
        return logits.clone()
    threshold = logits.max(dim=-1, keepdim=True).values + math.log(min_p)
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_repetition_penalty(logits, previous, penalty):
    """The repetition penalty as Hugging Face's transformers applies it, on raw logits; returns new logits.

    logits: (V,); previous: (N,) int64 ids already in the text. For every *distinct* id in previous:
    a positive logit is divided by penalty, a negative one multiplied by it, so that with penalty > 1
    the token always becomes less likely (dividing a negative logit would raise it). penalty = 1 changes nothing.
    (CTRL's original rule divides every penalised logit; the sign-aware form is Hugging Face's fix.)
    """
    if logits.dim() != 1:
        raise ValueError(f"expected logits of one position (V,), got shape {tuple(logits.shape)}")
    seen = torch.unique(previous)
    z = logits[seen]
    out = logits.clone()
    out[seen] = torch.where(z > 0, z / penalty, z * penalty)
    return out


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p (each when given), as in Hugging Face's default order."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    z = logits.float() / temperature if temperature > 0 else logits.float()
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    if min_p is not None:
        z = min_p_filter(z, min_p)
    return z


# ------------------------------------------------------------------------------------ decoding

Scorer = Callable[[list[list[int]]], torch.Tensor]  # sequences (equal lengths) -> (len, V) scores


def model_logits(model) -> Scorer:
    """next_logits for a course model: the raw logits at its last position, context cut to block_size."""
    block = model.config.block_size

    @torch.inference_mode()
    def next_logits(sequences: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor([s[-block:] for s in sequences], dtype=torch.long)
        logits, _ = model(ids)
        return logits[:, -1].float()

    return next_logits


def log_probs_of(next_logits: Scorer) -> Scorer:
    """The log-softmax of a logits scorer (what beam search and likelihoods need)."""
    return lambda sequences: torch.log_softmax(next_logits(sequences), dim=-1)


def generate(next_logits: Scorer, prompt: list[int], n_new: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
             repetition_penalty: float = 1.0, seed: int = 0) -> list[int]:
    """``n_new`` tokens after ``prompt``; temperature 0 is greedy (first of tied maxima). Seeded.
    The repetition penalty (on the prompt and everything generated) acts on the raw logits."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    gen = torch.Generator().manual_seed(seed)
    seq = list(prompt)
    for _ in range(n_new):
        z = next_logits([seq])[0]
        if repetition_penalty != 1.0 and seq:
            z = apply_repetition_penalty(z, torch.tensor(seq, dtype=torch.long), repetition_penalty)
        if temperature == 0:
            seq.append(int(z.argmax()))
            continue
        z = process_logits(z, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        seq.append(int(torch.multinomial(torch.softmax(z, dim=-1), 1, generator=gen)))
    return seq[len(prompt):]


def beam_search(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    """Beam search; returns (best continuation as a list of ids, its score).

    next_log_probs(sequences) -> (len(sequences), V) log-probabilities of the next token, for a list
    of equal-length id lists. Each step expands every alive beam by every token and keeps the
    beam_width candidates with the highest total log-probability *over all beams together* (ties: the
    earlier beam, then the lower token id). A kept candidate that ends in eos_id is finished: it
    leaves the beam (which shrinks) and grows no more. Stop after ``steps`` steps or when no beam is
    alive. Score of a continuation c (finished or alive at the end): sum of its log-probs / len(c)**length_penalty;
    return the best one.
    """
    if beam_width < 1 or steps < 1:
        raise ValueError(f"beam_width and steps must be at least 1, got {beam_width}, {steps}")
    alive = [([], 0.0)]  # (continuation, total log-prob)
    finished = []
    for _ in range(steps):
        if not alive:
            break
        log_probs = next_log_probs([list(prompt) + c for c, _ in alive])
        vocab = log_probs.shape[-1]
        totals = torch.tensor([s for _, s in alive], dtype=torch.float64)[:, None] + log_probs.double()
        order = torch.sort(totals.flatten(), descending=True, stable=True).indices[:beam_width]
        candidates = [(alive[i // vocab][0] + [i % vocab], float(totals.flatten()[i])) for i in order.tolist()]
        alive = []
        for c, s in candidates:
            (finished if eos_id is not None and c[-1] == eos_id else alive).append((c, s))
    best = max(finished + alive, key=lambda cs: cs[1] / len(cs[0]) ** length_penalty)
    return best[0], best[1] / len(best[0]) ** length_penalty


def sequence_log_likelihood(next_logits: Scorer, prompt: list[int], continuation: list[int]) -> float:
    """Sum of log p(continuation[i] | prompt + continuation[:i]) under the model."""
    total, seq = 0.0, list(prompt)
    for token in continuation:
        total += float(torch.log_softmax(next_logits([seq])[0], dim=-1)[token])
        seq.append(token)
    return total


def best_of_n(next_logits: Scorer, prompt: list[int], n_new: int, n: int, *, temperature: float = 1.0,
              seed: int = 0, **filters) -> tuple[list[int], list[float]]:
    """Draw ``n`` samples (seeds seed..seed+n-1) and return (the one with the highest mean log-likelihood
    under the model itself, every sample's mean log-likelihood)."""
    if n < 1 or n_new < 1:
        raise ValueError(f"n and n_new must be at least 1, got {n}, {n_new}")
    samples = [generate(next_logits, prompt, n_new, temperature=temperature, seed=seed + i, **filters)
               for i in range(n)]
    scores = [sequence_log_likelihood(next_logits, prompt, s) / n_new for s in samples]
    return samples[max(range(n), key=scores.__getitem__)], scores


def distinct_ngram_fraction(ids: list[int], n: int = 4) -> float:
    """Distinct n-grams / all n-grams of a sequence: 1.0 means no repeated n-gram, low means loops."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


# ------------------------------------------------------------------------------- display helpers

def token_label(token: int) -> str:
    """A byte id as a visible label: printable ASCII as is, space as ␣, newline as ⏎, others as hex."""
    if token == 32:
        return "␣"
    if token == 10:
        return "⏎"
    return chr(token) if 33 <= token < 127 else f"\\x{token:02x}"


def distribution_html(probs: torch.Tensor, *, top: int = 12, title: str = "", extra: str = "") -> str:
    """The ``top`` most likely tokens of a (V,) distribution as HTML bars (cheap to redraw: no image)."""
    values, ids = torch.sort(probs, descending=True, stable=True)
    rows = []
    for p, t in zip(values[:top].tolist(), ids[:top].tolist()):
        rows.append(f"<tr><td style='font-family:monospace;text-align:right;padding-right:6px'>"
                    f"{html.escape(token_label(t))}</td><td style='width:320px'><div style='background:#1b9e77;"
                    f"height:12px;width:{max(p, 0) * 100:.1f}%'></div></td>"
                    f"<td style='padding-left:6px'>{p:.3f}</td></tr>")
    return (f"<div class='course-view'><b>{html.escape(title)}</b>"
            f"<table style='border-collapse:collapse'>{''.join(rows)}</table>{extra}</div>")


def temperature_view(next_logits: Scorer, prompt: list[int], temperature: float, *, n_new: int = 32,
                     seed: int = 0, top: int = 10) -> str:
    """HTML for the temperature slider: the next-token distribution after ``prompt`` at this temperature,
    its entropy against the two limits (greedy: 0, uniform: ln V), and a seeded continuation."""
    from course_utils.charlm import decode
    from course_utils.plotting import MUTED_TEXT

    logits = next_logits([prompt])[0]
    probs = softmax_with_temperature(logits, temperature)
    h = float(entropy(probs))
    text = decode(generate(next_logits, prompt, n_new, temperature=temperature, seed=seed))
    extra = (f"<div style='margin-top:6px'>entropy {h:.2f} nats &nbsp;(greedy, T&rarr;0: 0; uniform, "
             f"T&rarr;&infin;: ln {len(probs)} = {math.log(len(probs)):.2f})</div>"
             f"<pre style='margin-top:6px;white-space:pre-wrap'><span style='color:{MUTED_TEXT}'>"
             f"{html.escape(decode(prompt))}</span>{html.escape(text)}</pre>")
    return distribution_html(probs, top=top, title=f"next byte at T = {temperature:.2f}", extra=extra)


def filters_view(next_logits: Scorer, prompt: list[int], *, top_k: int, top_p: float, min_p: float,
                 repetition_penalty: float, n_new: int = 32, seed: int = 0, top: int = 10) -> str:
    """HTML for the filter sliders: the next-byte distribution after the repetition penalty (on the
    prompt's bytes) and top-k, top-p, min-p at T = 1, renormalised, and a continuation decoded with them."""
    from course_utils.charlm import decode
    from course_utils.plotting import MUTED_TEXT

    z = apply_repetition_penalty(next_logits([prompt])[0], torch.tensor(prompt, dtype=torch.long), repetition_penalty)
    kept = process_logits(z, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = torch.softmax(kept, dim=-1)
    text = decode(generate(next_logits, prompt, n_new, top_k=top_k, top_p=top_p, min_p=min_p,
                           repetition_penalty=repetition_penalty, seed=seed))
    extra = (f"<div style='margin-top:6px'>{int(torch.isfinite(kept).sum())} of {len(kept)} bytes kept</div>"
             f"<pre style='margin-top:6px;white-space:pre-wrap'><span style='color:{MUTED_TEXT}'>"
             f"{html.escape(decode(prompt))}</span>{html.escape(text)}</pre>")
    return distribution_html(probs, top=top, title=f"top-k {top_k}, top-p {top_p:.2f}, min-p {min_p:.2f}, "
                             f"repetition penalty {repetition_penalty:.2f}", extra=extra)


@torch.inference_mode()
def next_token_distributions(model, data: torch.Tensor, windows: int = 4, seed: int = 1) -> torch.Tensor:
    """(windows * block_size, V) next-token probabilities of the model at every position of
    ``windows`` fixed random windows of ``data`` (for statistics over many contexts)."""
    from course_utils.charlm import batch

    x = batch(data, windows, torch.Generator().manual_seed(seed))
    logits, _ = model(x[:, :-1])
    return torch.softmax(logits.flatten(0, 1).float(), dim=-1)
