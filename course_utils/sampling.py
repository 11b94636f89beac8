"""Decoding (chapter 6): temperature, top-k, top-p, min-p, repetition penalty, greedy, beam search, best-of-N.

Filters take logits (..., V) and return new logits with the removed tokens at -inf, so they chain
(temperature, then filters, then softmax and a draw), as in Hugging Face's logits processors.
``generate`` works with any ``next_logits(sequences) -> (len(sequences), V)`` (raw logits: the
repetition penalty and temperature act on them) and ``beam_search`` with its log-softmax
(:func:`log_probs_of`); :func:`model_logits` builds ``next_logits`` from a course model.

Used by chapters 6 and 8.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Callable

import torch

NEG_INF = -math.inf


# ----------------------------------------------------------------------------------- temperature

def softmax_with_temperature(logits, temperature):
    """Probabilities softmax(logits / T) over the last dim, stable for any T >= 0; returns a new tensor.

    logits: (..., V) float (float32 or float64; the result has the same dtype). Tiny T must not
    overflow (no exp of huge numbers). T = 0 is the limit T -> 0: the probability is split equally
    between the tied maxima of each row (one-hot when the maximum is unique); a T that is 0 in the logits'
    dtype (e.g. 1e-46 for float32) counts as T = 0. T < 0 raises ValueError.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if temperature == 0 or torch.tensor(temperature, dtype=dtype) == 0:  # also a T that is 0 in the dtype (1e-300)
        top = logits == logits.max(dim=-1, keepdim=True).values
        return top.to(dtype) / top.sum(dim=-1, keepdim=True)
    # Subtract the row max BEFORE dividing by T: (z - max) / T is 0 at the maxima and <= 0 elsewhere, so a tiny T
    # (down to float32's 1e-38 and below, where z / T alone overflows to inf and softmax returns NaN) gives the
    # T -> 0 limit, ties split, instead of inf - inf.
    shifted = logits.to(dtype)
    shifted = shifted - shifted.max(dim=-1, keepdim=True).values
    return torch.softmax(shifted / temperature, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dim (0 log 0 = 0)."""
    return -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(dim=-1)


# --------------------------------------------------------------------------------------- filters

def top_k_filter(logits, k):
    """Keep the k largest logits of each row (last dim), set the rest to -inf; returns a new tensor.

    A token tied with the k-th largest logit is kept too (so ties at the boundary may keep more than
    k). k >= V keeps everything; k < 1 raises ValueError.
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
    # float64 makes the sum exact enough that only the probabilities themselves decide; it cannot undo the rounding
    # of float32 logits (section 6.3 shows 0.75 coming out as 0.7500000006)
    probs = torch.softmax(logits.double(), dim=-1)
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
    the token's logit always falls (dividing a negative logit would raise it). Its probability need not fall: when
    other penalised tokens with larger logits lose more than it does (the top token, say), part of the mass they lose
    goes to it. penalty = 1 changes nothing.
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
    leaves the beam and grows no more. It holds its slot only in the step that finished it: the next
    step expands fewer beams but again keeps beam_width candidates from them. Stop after ``steps``
    steps or when no beam is alive. Score of a continuation c (finished or alive at the end): sum of
    its log-probs / len(c)**length_penalty, len(c) counting the end token; return the best one.
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


# ------------------------------------------------------------------ key/value cache, batched decoding

def cached_forward(model, ids, cache):
    """The new tokens ``ids`` (B, T) through a pre-LN rotary course model (the byte model of ``charlm``), reading
    and extending a key/value cache; returns ``(logits, new_cache)``.

    cache: ``[]`` before anything is read; else a list with one ``(keys, values)`` pair per block, each
    (B, n_head, L, head_size): the keys (already rotated and multiplied by ``model.rope_factor``, as the new ones
    are) and the values of the L positions read so far.
    The new tokens sit at positions L, ..., L + T - 1: their queries and keys are rotated by those positions
    (``course_utils.rope.rope_rotate(x, positions, model.rope_inv_freq) * model.rope_factor``, as the model's
    forward does), and the query at position L + t attends to the keys at positions 0, ..., L + t, cached and
    new together (causal). Returns logits (B, T, vocab_size) in the model's dtype, the model's own at the new
    positions (``model(all ids so far)[0][:, L:]`` up to rounding), and new_cache in the same layout with
    L + T positions, the cached ones first. cache is not modified. L + T > model.config.block_size raises
    ValueError.
    """
    from course_utils.rope import rope_rotate  # inside: a learner's passing copy is reloaded as this one function

    with torch.no_grad():  # decoding: no graph (the KV cache would otherwise chain every step's)
        B, T = ids.shape
        L = cache[0][0].shape[2] if cache else 0
        if L + T > model.config.block_size:
            raise ValueError(f"{L + T} positions exceed the model's context {model.config.block_size}")
        positions = torch.arange(L, L + T, device=ids.device)
        mask = torch.arange(L + T, device=ids.device)[None, :] <= positions[:, None]  # (T, L + T): L + t sees <= L + t
        x, new_cache = model.tok_emb(ids), []  # (B, T, C)
        for i, block in enumerate(model.blocks):
            attn, C = block.attn, x.shape[-1]
            q, k, v = attn.qkv(block.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
            q = rope_rotate(q, positions, model.rope_inv_freq) * model.rope_factor
            k = rope_rotate(k, positions, model.rope_inv_freq) * model.rope_factor
            if cache:  # a cached key never changes: its rotation depends on its own position only
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            new_cache.append((k, v))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln2(x))
        return model.lm_head(model.norm_f(x)), new_cache


class KVCacheDecoder:
    """Incremental decoding for a pre-LN rotary course model (``charlm``'s), with a key/value cache.

    The full forward re-reads the whole context at every step (what ``model_logits`` does). Here each
    block keeps the keys and values of the positions already seen, (B, nh, T, hs), so a step feeds only the
    new tokens (:func:`cached_forward`, exercise 6.7). ``prefill(ids (B, T))`` reads the prompts, ``step(ids (B,))``
    one token per row; both return the next-token logits (B, V). ``reorder(index)`` keeps rows ``index`` of every
    cache (beam search's survivors).
    """

    def __init__(self, model):
        config = model.config
        if config.position != "rope" or config.norm_position != "pre" or not config.residual:
            raise ValueError("KVCacheDecoder handles pre-LN rotary models with residuals (the course's byte model)")
        self.model, self.cache = model.eval(), []

    @property
    def length(self) -> int:
        """Positions read so far."""
        return self.cache[0][0].shape[2] if self.cache else 0

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits, self.cache = cached_forward(self.model, ids, self.cache)
        return logits[:, -1].float()  # (B, V)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        return self._forward(ids)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self._forward(ids[:, None])

    def reorder(self, index: torch.Tensor) -> None:
        self.cache = [(k[index], v[index]) for k, v in self.cache]


class CroppedDecoder:
    """The ``prefill`` / ``step`` interface of :class:`KVCacheDecoder` without a cache: every call re-reads the last
    ``block_size`` tokens of each row, as :func:`model_logits` (and so :func:`generate`) does. For continuations that
    run past the model's context, where a cache of keys computed from a longer context would give other numbers."""

    def __init__(self, model):
        self.model, self.ids = model.eval(), None

    @torch.inference_mode()
    def _forward(self) -> torch.Tensor:
        logits, _ = self.model(self.ids[:, -self.model.config.block_size:])
        return logits[:, -1].float()

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids
        return self._forward()

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, ids[:, None]], dim=1)
        return self._forward()


def decode_batch(model, prompts: list[list[int]], n_new: int, *, temperature: float = 0.0, top_p: float | None = None,
                 min_p: float | None = None, repetition_penalty: float = 1.0, penalise_prompt: bool = True,
                 samples: int = 1, seed: int = 0, return_loglik: bool = False):
    """``samples`` continuations of ``n_new`` tokens for each prompt (all prompts of one length), all rows in one
    batch with a key/value cache: ``out[prompt][sample]``. Temperature 0 is greedy (first of tied maxima);
    otherwise temperature, then top-p, then min-p, then a draw (one torch.Generator seeded with ``seed`` for the
    batch). ``repetition_penalty``: Hugging Face's sign-aware penalty on the raw logits of every distinct token in the
    row so far, prompt included, as :func:`generate` applies it (``penalise_prompt=False``: the generated tokens
    only). Prompt + continuation longer than the model's context: no cache, each step re-reads the last
    ``block_size`` tokens (:class:`CroppedDecoder`), as :func:`generate` does. ``return_loglik``: also return each
    continuation's mean log-likelihood per token under the model itself (T = 1, unfiltered, no penalty),
    ``loglik[prompt][sample]``, collected as it decodes."""
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("decode_batch needs prompts of one length")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.tensor(prompts, dtype=torch.long).repeat_interleave(samples, dim=0)  # (P * samples, T)
    fits = rows.shape[1] + n_new - 1 <= model.config.block_size
    decoder = KVCacheDecoder(model) if fits else CroppedDecoder(model)
    seen = torch.zeros(len(rows), model.config.vocab_size, dtype=torch.bool)
    if penalise_prompt:
        seen.scatter_(1, rows, True)
    z, out, total = decoder.prefill(rows), [], torch.zeros(len(rows), dtype=torch.float64)
    for i in range(n_new):
        zp = z
        if repetition_penalty != 1.0:
            zp = torch.where(seen, torch.where(z > 0, z / repetition_penalty, z * repetition_penalty), z)
        if temperature == 0:
            nxt = zp.argmax(dim=-1)
        else:
            probs = torch.softmax(process_logits(zp, temperature=temperature, top_p=top_p, min_p=min_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        out.append(nxt)
        seen[torch.arange(len(rows)), nxt] = True
        total += torch.log_softmax(z, dim=-1).gather(-1, nxt[:, None])[:, 0].double()
        if i < n_new - 1:
            z = decoder.step(nxt)
    ids = torch.stack(out, dim=1).view(len(prompts), samples, n_new).tolist()
    if return_loglik:
        return ids, (total / n_new).view(len(prompts), samples).tolist()
    return ids


def beam_search_batch(model, prompts: list[list[int]], beam_width: int,
                      steps: int) -> list[list[tuple[list[int], float]]]:
    """Beam search for many prompts at once (no end token, so every beam has ``steps`` tokens and the length
    normalisation of exercise 6.5 divides all scores alike): per prompt, the final beams as (continuation, total
    log-probability), best first. Same rule as exercise 6.5 (expand every beam by every token, keep the best
    ``beam_width`` over all of them; ties: earlier beam, then lower token id), with a key/value cache."""
    decoder = KVCacheDecoder(model)
    log_probs = torch.log_softmax(decoder.prefill(torch.tensor(prompts, dtype=torch.long)), dim=-1).double()
    beams = [[([], 0.0)] for _ in prompts]
    for step in range(steps):
        keep_rows, next_tokens, row = [], [], 0
        for p, alive in enumerate(beams):
            vocab = log_probs.shape[-1]
            scores = torch.tensor([s for _, s in alive], dtype=torch.float64)[:, None]
            totals = scores + log_probs[row: row + len(alive)]
            order = torch.sort(totals.flatten(), descending=True, stable=True).indices[:beam_width].tolist()
            beams[p] = [(alive[i // vocab][0] + [i % vocab], float(totals.flatten()[i])) for i in order]
            keep_rows += [row + i // vocab for i in order]
            next_tokens += [i % vocab for i in order]
            row += len(alive)
        if step == steps - 1:
            break
        decoder.reorder(torch.tensor(keep_rows))
        log_probs = torch.log_softmax(decoder.step(torch.tensor(next_tokens)), dim=-1).double()
    return beams


@torch.inference_mode()
def continuation_log_probs(model, prompts: list[list[int]], continuations: list[list[int]],
                           temperature: float = 1.0) -> torch.Tensor:
    """(len(prompts), n_new) log p_T(continuation[i] | prompt + continuation[:i]) for each pair (equal lengths),
    p_T = softmax(logits / temperature), from one teacher-forced forward pass (the whole sequence must fit the
    model's context)."""
    seqs = torch.tensor([p + c for p, c in zip(prompts, continuations)], dtype=torch.long)
    logits, _ = model.eval()(seqs[:, :-1])
    n_new = len(continuations[0])
    lp = torch.log_softmax(logits[:, -n_new:].float() / temperature, dim=-1)
    return lp.gather(-1, seqs[:, -n_new:, None])[..., 0]


# ------------------------------------------------------------------------- decoding over many prompts

def ngram_set(ids: list[int], n: int = 4) -> set:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


def pairwise_ngram_diversity(outputs: list[list[int]], n: int = 4) -> float:
    """Diversity *across* outputs for one prompt: 1 - the mean Jaccard overlap |A & B| / |A | B| of the n-gram sets
    of every pair of outputs (0: the outputs share all their n-grams, 1: no n-gram in common). Needs 2+ outputs."""
    sets = [ngram_set(o, n) for o in outputs]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return 1.0 - sum(len(a & b) / max(len(a | b), 1) for a, b in pairs) / len(pairs)


_WORD = None


def corpus_words() -> set:
    """The set of words (letter runs of 2+ letters, lower case) of the byte model's whole corpus
    (``charlm.training_text()``: the part it trained on and the held-out part the chapter's prompts come from)."""
    global _WORD
    if _WORD is None:
        import re

        from course_utils.charlm import training_text

        _WORD = {w.lower() for w in re.findall(r"[A-Za-z]{2,}", training_text())}
    return _WORD


def word_validity(ids: list[int], no_word: float = math.nan) -> float:
    """Fraction of the continuation's complete words (letter runs of 2+ letters, not touching either end, since
    those may be cut) that occur in the corpus (:func:`corpus_words`): a judge of "invented words" that is not the
    model's likelihood. ``no_word`` when the text has no complete word (nan by default; the chapter's evaluations pass
    0, the worst score, so that a run of spaces counts as a failure instead of dropping out of a mean)."""
    words = complete_words(ids)
    return sum(w in corpus_words() for w in words) / len(words) if words else no_word


def complete_words(ids: list[int]) -> list[str]:
    """The words :func:`word_validity` judges: letter runs of 2+ letters, lower case, not touching either end."""
    import re

    text = bytes(ids).decode("latin-1")
    words = [m for m in re.finditer(r"[A-Za-z]+", text) if m.start() > 0 and m.end() < len(text)]
    return [m.group().lower() for m in words if len(m.group()) >= 2]


def words_score(ids: list[int]) -> float:
    """The evaluations' judge: :func:`word_validity` with a text that has no complete word scored 0 (worst)."""
    return word_validity(ids, no_word=0.0)


def _letters(ids) -> int:
    return sum(65 <= b <= 90 or 97 <= b <= 122 for b in ids)


def evaluation_windows(data: torch.Tensor, n: int = 24, length: int = 24, continuation: int = 40, seed: int = 0,
                       min_letters: int = 12) -> tuple[list[list[int]], list[list[int]]]:
    """``n`` prose prompts of ``length`` bytes from ``data`` (held-out text) and the text's own next ``continuation``
    bytes after each (the reference), at seeded random places after a space, so that a prompt begins at a word.

    Prose only: a prompt needs at least ``min_letters`` ASCII letters, and neither it nor its reference may contain
    "|" (the help text's ASCII tables, whose true continuation is a border that a repetition metric scores as a loop).
    The windows (prompt + reference) do not overlap, so no two prompts share text."""
    gen, prompts, refs, taken = torch.Generator().manual_seed(seed), [], [], []
    span = length + continuation
    spaces = (data[:-span - 1] == 32).nonzero()[:, 0]
    for i in torch.randperm(len(spaces), generator=gen).tolist():
        start = int(spaces[i]) + 1
        window = data[start: start + span].tolist()
        if _letters(window[:length]) < min_letters or 124 in window or any(abs(start - t) < span for t in taken):
            continue
        taken.append(start)
        prompts.append(window[:length])
        refs.append(window[length:])
        if len(prompts) == n:
            break
    if len(prompts) < n:
        raise ValueError(f"only {len(prompts)} prose windows of {span} bytes in the data, {n} asked")
    return prompts, refs


def evaluation_prompts(data: torch.Tensor, n: int = 24, length: int = 24, seed: int = 0,
                       min_letters: int | None = None) -> list[list[int]]:
    """``n`` prompts of ``length`` bytes from ``data`` (held-out text) at seeded random places after a space.

    ``min_letters`` given: the prose prompts of :func:`evaluation_windows` (at least that many letters, no table, no
    overlap). Without it (the earlier behaviour), any place after a space: in this help text that includes ASCII
    tables and indentation, which do not begin with a word."""
    if min_letters is not None:
        return evaluation_windows(data, n, length, seed=seed, min_letters=min_letters)[0]
    gen, prompts = torch.Generator().manual_seed(seed), []
    spaces = (data[:-length - 1] == 32).nonzero()[:, 0]
    for i in torch.randperm(len(spaces), generator=gen)[:n].tolist():
        start = int(spaces[i]) + 1
        prompts.append(data[start: start + length].tolist())
    return prompts


def _nanmean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _mean_sd(values) -> tuple[float, float]:
    t = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    return float(t.mean()), float(t.std())


def decoding_evaluation(model, prompts: list[list[int]], *, n_new: int = 40, beam_width: int = 4, samples: int = 8,
                        temperatures=(0.7, 1.0, 1.2), seed: int = 0, references: list[list[int]] | None = None) -> dict:
    """Greedy, beam search and sampling at each temperature on every prompt (batched, key/value cache).

    Returns {"per_prompt": {method: {metric: [value per prompt]}}, "best_of": {N: {metric: [...]}}, "texts": {method:
    [first output per prompt]}}. Metrics: ``loglik`` (mean log-likelihood per byte under the model), ``distinct4``
    (distinct 4-grams within one text: low = loops), ``words`` (:func:`words_score`), ``diversity``
    (:func:`pairwise_ngram_diversity` of ``beam_width`` outputs for the prompt: the final beams, or the first
    ``beam_width`` samples; greedy has one output, so 0). A method's value for a prompt is its best beam for beam
    search and the mean over the ``samples`` samples for sampling. ``best_of[N]``: best-of-N by the model's own
    likelihood among the T = 1.0 samples, averaged over the ``samples // N`` disjoint groups of N (an estimate of
    what a best-of-N pick is worth, not a max over nested prefixes). ``references`` (the held-out text's own
    continuations): ``reference`` holds their ``distinct4`` and ``words``, the values the right answer scores.
    ``seconds``: wall time of the greedy and the beam search decode (all prompts in one batch each)."""
    import time

    P = len(prompts)
    outputs, lls, seconds = {}, {}, {}
    start = time.perf_counter()
    outputs["greedy"], lls["greedy"] = decode_batch(model, prompts, n_new, temperature=0, return_loglik=True)
    seconds["greedy"] = time.perf_counter() - start
    start = time.perf_counter()
    beams = beam_search_batch(model, prompts, beam_width, n_new)
    seconds[f"beam {beam_width}"] = time.perf_counter() - start
    outputs[f"beam {beam_width}"] = [[c for c, _ in b] for b in beams]
    lls[f"beam {beam_width}"] = [[s / n_new for _, s in b] for b in beams]
    for t in temperatures:
        outputs[f"sample T={t:g}"], lls[f"sample T={t:g}"] = decode_batch(
            model, prompts, n_new, temperature=t, samples=samples, seed=seed, return_loglik=True)
    per_prompt = {}
    for m, outs in outputs.items():
        use = [o[:1] if m.startswith(("greedy", "beam")) else o for o in outs]
        per_prompt[m] = {
            "loglik": [sum(x[:len(u)]) / len(u) for x, u in zip(lls[m], use)],
            "distinct4": [sum(distinct_ngram_fraction(s) for s in u) / len(u) for u in use],
            "words": [_nanmean([words_score(s) for s in u]) for u in use],
            "diversity": [0.0 if len(o) == 1 else pairwise_ngram_diversity(o[:beam_width]) for o in outs],
        }
    best_of = best_of_groups(outputs["sample T=1"], lls["sample T=1"]) if "sample T=1" in outputs else {}
    texts = {m: [o[0] for o in outs] for m, outs in outputs.items()}
    result = {"per_prompt": per_prompt, "best_of": best_of, "texts": texts, "prompts": P, "outputs": outputs,
              "seconds": seconds}
    if references is not None:
        result["reference"] = {"distinct4": [distinct_ngram_fraction(r) for r in references],
                               "words": [words_score(r) for r in references]}
    return result


LOOP = 0.5  # a text with fewer than this fraction of distinct 4-grams is a loop (the held-out text's lowest: 0.54)


def best_of_groups(outputs: list[list[list[int]]], scores: list[list[float]], sizes=(1, 2, 4, 8)) -> dict:
    """Best-of-N by the model's own likelihood: ``outputs[prompt][sample]`` and their ``scores`` (mean log-likelihood
    per token). For each N in ``sizes`` (up to the number of samples), the pick of each of the disjoint groups of N
    samples, averaged over the groups: ``{N: {"loglik" | "distinct4" | "words" | "loops": [per prompt]}}``, with
    ``loops`` the number of the prompt's picks (of ``samples // N``) whose distinct 4-grams are below :data:`LOOP`."""
    samples, best_of = len(outputs[0]), {}
    for n in sizes:
        if n > samples:
            break
        metrics = {"loglik": [], "distinct4": [], "words": [], "loops": []}
        for outs, score in zip(outputs, scores):
            picks = [max(range(g, g + n), key=score.__getitem__) for g in range(0, samples - n + 1, n)]
            metrics["loglik"].append(sum(score[i] for i in picks) / len(picks))
            metrics["distinct4"].append(sum(distinct_ngram_fraction(outs[i]) for i in picks) / len(picks))
            metrics["words"].append(_nanmean([words_score(outs[i]) for i in picks]))
            metrics["loops"].append(sum(distinct_ngram_fraction(outs[i]) < LOOP for i in picks))
        best_of[n] = metrics
    return best_of


SEED_POOLED_CACHE = Path(__file__).resolve().parent / "data_files" / "ch06_seed_pooled.json"
SEED_POOLED = dict(seeds=(0, 1, 2, 3, 4), samples=8, n_new=40, hot=1.5, top_p=(0.9, 0.75, 0.8), min_p=0.1)


def seed_pooled_evaluation(model, prompts: list[list[int]], *, seeds=SEED_POOLED["seeds"],
                           samples: int = SEED_POOLED["samples"], n_new: int = SEED_POOLED["n_new"],
                           hot: float = SEED_POOLED["hot"], top_p: tuple = SEED_POOLED["top_p"],
                           min_p: float = SEED_POOLED["min_p"]) -> dict:
    """The chapter's verdicts that depend on the sampling seed, per seed: ``{"seeds": [...], "filters": {name:
    [per seed [per prompt words]]}, "best_of": {N: {metric: [per seed [per prompt]]}}}``. ``filters``: the words
    score (:func:`words_score`, mean over ``samples`` samples) of top-p (each of ``top_p``) and min-p at temperature
    ``hot`` (:func:`filter_evaluation`); ``best_of``: :func:`best_of_groups` of ``samples`` samples at T = 1. Each
    seed draws as ``seed`` does in those functions, so seed 0 is the notebook's own evaluation. Average a metric over
    the seeds with :func:`pool_seeds`. Stored in ``data_files/ch06_seed_pooled.json`` (:func:`load_seed_pooled`)."""
    out = {"seeds": list(seeds), "filters": {}, "best_of": {}}
    for seed in seeds:
        runs = filter_evaluation(model, prompts, temperatures=(hot,), top_p=tuple(top_p), min_p=min_p, n_new=n_new,
                                 samples=samples, seed=seed)[hot]
        for name, metrics in runs.items():
            out["filters"].setdefault(name, []).append(metrics["words"])
        ids, lls = decode_batch(model, prompts, n_new, temperature=1.0, samples=samples, seed=seed, return_loglik=True)
        for n, metrics in best_of_groups(ids, lls).items():
            for metric, values in metrics.items():
                out["best_of"].setdefault(str(n), {}).setdefault(metric, []).append(values)
    return out


def pool_seeds(per_seed: list[list[float]]) -> list[float]:
    """Per prompt, the mean over seeds of ``per_seed[seed][prompt]`` (a metric of :func:`seed_pooled_evaluation`)."""
    return [sum(values) / len(values) for values in zip(*per_seed)]


def save_seed_pooled(result: dict, path=SEED_POOLED_CACHE) -> None:
    def rounded(x):
        return round(x, 6) if isinstance(x, float) else [rounded(v) for v in x] if isinstance(x, list) else (
            {k: rounded(v) for k, v in x.items()} if isinstance(x, dict) else x)

    Path(path).write_text(json.dumps(rounded(result)) + "\n")


def load_seed_pooled(path=SEED_POOLED_CACHE) -> dict:
    """The stored result of ``seed_pooled_evaluation`` on the chapter's 24 prompts; tests/test_claims_ch06.py
    recomputes it and checks it."""
    return json.loads(Path(path).read_text())


def same_as_greedy(evaluation: dict, method: str) -> list[int]:
    """Per prompt, how many of ``method``'s outputs are byte for byte the greedy text."""
    outs, greedy = evaluation["outputs"][method], evaluation["outputs"]["greedy"]
    return [sum(o == g[0] for o in os) for os, g in zip(outs, greedy)]


def greedy_reproduction(model, prompts: list[list[int]], evaluation: dict, temperature: float = 0.1) -> dict:
    """How often a sample at ``temperature`` should reproduce the greedy text, exactly: by the chain rule the chance
    that a sample of prompt i is its greedy text is the product of p_T(greedy's byte) along greedy's own path, so the
    expected number of such samples is a sum of those products (no independence assumption). Returns ``expected``
    (of all the samples of :func:`decoding_evaluation` at that T), ``measured``, ``leave`` (the mean chance of
    leaving greedy's byte along greedy's path), ``spaces`` (prompts whose greedy text is only spaces) with
    ``from_spaces`` (the measured samples equal to greedy there) and the same count on the other prompts."""
    method = f"sample T={temperature:g}"
    greedy = [o[0] for o in evaluation["outputs"]["greedy"]]
    samples = len(evaluation["outputs"][method][0])
    lp = continuation_log_probs(model, prompts, greedy, temperature=temperature)  # (P, n_new)
    same = same_as_greedy(evaluation, method)
    spaces = [i for i, g in enumerate(greedy) if set(g) == {32}]
    others = [i for i in range(len(greedy)) if i not in spaces]
    return {"expected": samples * float(lp.sum(dim=1).exp().sum()), "measured": sum(same),
            "samples": samples * len(greedy), "leave": float(1 - lp.exp().mean()), "spaces": spaces,
            "from_spaces": sum(same[i] for i in spaces), "other_same": sum(same[i] for i in others),
            "other_samples": samples * len(others)}


def within_prompt_sd(evaluation: dict, method: str, metric: str = "words") -> list[float]:
    """Per prompt, the sample sd of ``metric`` (``words`` or ``distinct4``) across that prompt's samples: how much
    the quality varies from one sample to the next for one prompt (nan with fewer than 2 defined values)."""
    fn = words_score if metric == "words" else distinct_ngram_fraction
    result = []
    for outs in evaluation["outputs"][method]:
        values = [v for v in map(fn, outs) if not math.isnan(v)]
        result.append(float(torch.tensor(values, dtype=torch.float64).std()) if len(values) >= 2 else math.nan)
    return result


def independent_errors_sd(evaluation: dict, method: str) -> list[float]:
    """Per prompt, the sd of the words score across ``method``'s samples that independent errors would give: every
    complete word wrong with the prompt's own rate, sqrt(p (1 - p) / n), p the prompt's mean :func:`words_score` and n
    its mean number of complete words per sample (at least 1). Set beside :func:`within_prompt_sd`."""
    result = []
    for outs in evaluation["outputs"][method]:
        p = sum(map(words_score, outs)) / len(outs)
        n = max(sum(len(complete_words(s)) for s in outs) / len(outs), 1.0)
        result.append(math.sqrt(p * (1 - p) / n))
    return result


def repetition_penalty_evaluation(model, prompts: list[list[int]], *, lengths=(40, 150), penalty: float = 1.3) -> dict:
    """Greedy with and without the repetition penalty on every prompt, for each continuation length:
    ``{n_new: {"greedy": {metric: [per prompt]}, f"penalty {penalty:g}": {...},
    f"penalty {penalty:g}, generated only": {...}}}``, metrics ``distinct4``, ``words`` (:func:`words_score`) and
    ``texts``. ``penalty θ`` penalises every byte of the row, prompt included (Hugging Face's rule);
    ``..., generated only`` only the bytes generated so far (the note's "tokens already generated"). Batched
    (continuations past the model's context re-read the last ``block_size`` bytes, as :func:`generate` does)."""
    result = {}
    for n_new in lengths:
        result[n_new] = {}
        for name, pen, prompt_too in (("greedy", 1.0, True), (f"penalty {penalty:g}", penalty, True),
                                      (f"penalty {penalty:g}, generated only", penalty, False)):
            outs = [o[0] for o in decode_batch(model, prompts, n_new, temperature=0, repetition_penalty=pen,
                                               penalise_prompt=prompt_too)]
            result[n_new][name] = {"distinct4": [distinct_ngram_fraction(o) for o in outs],
                                   "words": [words_score(o) for o in outs], "texts": outs}
    return result


PENALTY_SWEEP_CACHE = Path(__file__).resolve().parent / "data_files" / "ch06_penalty_sweep.json"


def repetition_penalty_sweep(model, prompts: list[list[int]], *, lengths=(40, 72),
                             penalties=(1.3, 1.5, 2.0)) -> dict:
    """:func:`repetition_penalty_evaluation` at each penalty θ, without the texts:
    ``{"penalties": [θ...], "lengths": [n_new...], "runs": {str(n_new): {"greedy" | f"penalty {θ:g}" |
    f"penalty {θ:g}, generated only": {"distinct4": [per prompt], "words": [per prompt],
    "no_word": [prompts whose continuation has no complete word]}}}}``. Stored in
    ``data_files/ch06_penalty_sweep.json`` (:func:`load_penalty_sweep`); greedy is deterministic, so a rerun gives
    the same bytes unless a near-tie flips with the CPU's arithmetic order."""
    runs = {}
    for theta in penalties:
        for n_new, by_name in repetition_penalty_evaluation(model, prompts, lengths=lengths, penalty=theta).items():
            for name, metrics in by_name.items():
                runs.setdefault(str(n_new), {})[name] = {
                    "distinct4": [round(v, 6) for v in metrics["distinct4"]],
                    "words": [round(v, 6) for v in metrics["words"]],
                    "no_word": [i for i, ids in enumerate(metrics["texts"]) if not complete_words(ids)]}
    return {"penalties": list(penalties), "lengths": list(lengths), "runs": runs}


def save_penalty_sweep(result: dict, path=PENALTY_SWEEP_CACHE) -> None:
    Path(path).write_text(json.dumps(result) + "\n")


def load_penalty_sweep(path=PENALTY_SWEEP_CACHE) -> dict:
    """The stored result of :func:`repetition_penalty_sweep` on the chapter's 24 prompts; tests/test_claims_ch06.py
    recomputes it and checks it."""
    return json.loads(Path(path).read_text())


def penalty_sweep_table(sweep: dict) -> str:
    """Per length and θ, each rule minus greedy in distinct 4-grams (mean, standard error over prompts, prompts
    the other way, and the mean and se again without the prompts where greedy writes no complete word, the runs of
    spaces that a penalty on the prompt's bytes breaks) and words in corpus (mean, se), and the prompts with no
    complete word, as text."""
    lines = []
    for n_new in sweep["lengths"]:
        runs = sweep["runs"][str(n_new)]
        wordless = runs["greedy"]["no_word"]
        lines.append(f"{n_new} bytes (greedy: no complete word on prompts {wordless})")
        for theta in sweep["penalties"]:
            for rule, suffix in (("Hugging Face's", ""), ("generated only", ", generated only")):
                run = runs[f"penalty {theta:g}{suffix}"]
                d4 = paired_difference(run["distinct4"], runs["greedy"]["distinct4"])
                keep = [i for i in range(len(run["distinct4"])) if i not in wordless]
                rest = paired_difference([run["distinct4"][i] for i in keep],
                                         [runs["greedy"]["distinct4"][i] for i in keep])
                w = paired_difference(run["words"], runs["greedy"]["words"])
                lines.append(f"  θ = {theta:<4g} {rule:<15} distinct 4-grams {d4['mean']:+.2f} (se {d4['se']:.2f}, "
                             f"other way on {d4['reversed']:>2}; without {wordless}: {rest['mean']:+.2f}, se "
                             f"{rest['se']:.2f}), words {w['mean']:+.2f} (se {w['se']:.2f}), "
                             f"no complete word on {run['no_word']}")
    return "\n".join(lines)


def filter_evaluation(model, prompts: list[list[int]], *, temperatures=(1.0, 1.5), top_p: float | tuple = 0.9,
                      min_p: float = 0.1, n_new: int = 40, samples: int = 8, diversity_of: int = 4,
                      seed: int = 0) -> dict:
    """Top-p against min-p when sampling: ``{T: {"top-p 0.9" | "min-p 0.1": {metric: [per prompt]}}}``, metrics
    ``words`` (mean over the samples, :func:`words_score`), ``distinct4`` and ``diversity`` (across the first
    ``diversity_of`` samples). ``top_p`` may be a tuple of values, each evaluated (``"top-p 0.75"``, ...). Every
    filter draws with the same seed, each in one batch with a key/value cache."""
    filters = [(f"top-p {p:g}", {"top_p": p}) for p in (top_p if isinstance(top_p, tuple) else (top_p,))]
    filters.append((f"min-p {min_p:g}", {"min_p": min_p}))
    result = {}
    for t in temperatures:
        result[t] = {}
        for name, kw in filters:
            outs = decode_batch(model, prompts, n_new, temperature=t, samples=samples, seed=seed, **kw)
            result[t][name] = {"words": [_nanmean([words_score(s) for s in o]) for o in outs],
                               "distinct4": [sum(map(distinct_ngram_fraction, o)) / len(o) for o in outs],
                               "diversity": [pairwise_ngram_diversity(o[:diversity_of]) for o in outs]}
    return result


def kept_sizes(probs: torch.Tensor, temperature: float = 1.0, *, top_p: float | None = None,
               min_p: float | None = None) -> torch.Tensor:
    """Per row of ``probs`` (positions, V), how many tokens top-p or min-p keeps once the temperature has
    reshaped the distribution (the filters act after it, as in :func:`process_logits`)."""
    z = process_logits(probs.log(), temperature=temperature, top_p=top_p, min_p=min_p)
    return torch.isfinite(z).sum(dim=-1)


def matched_top_p(probs: torch.Tensor, temperature: float, min_p: float,
                  candidates=tuple(round(0.5 + 0.05 * i, 2) for i in range(10))) -> float:
    """The top-p among ``candidates`` whose mean kept size over the rows of ``probs`` at ``temperature`` is closest
    to min-p's: a top-p of the same strength, for a comparison of the two rules rather than of two strengths."""
    target = kept_sizes(probs, temperature, min_p=min_p).double().mean()
    return min(candidates, key=lambda p: abs(kept_sizes(probs, temperature, top_p=p).double().mean() - target))


@torch.no_grad()
def sampled_next_token_distributions(model, prompts: list[list[int]], temperature: float, *, n_new: int = 40,
                                     samples: int = 8, seed: int = 0, **filters) -> torch.Tensor:
    """(prompts * samples * n_new, V) next-token probabilities of the model (T = 1, unfiltered) at every step of its
    own continuations, sampled as :func:`decode_batch` samples them (``temperature``, ``filters`` such as
    ``min_p=0.1``, ``seed``): the contexts a filter meets when it decodes, unlike the held-out text of
    :func:`next_token_distributions`. Prompt + continuation must fit the model's context."""
    ids = decode_batch(model, prompts, n_new, temperature=temperature, samples=samples, seed=seed, **filters)
    rows = torch.tensor([p + o for p, outs in zip(prompts, ids) for o in outs], dtype=torch.long)
    logits, _ = model.eval()(rows[:, :-1])
    return torch.softmax(logits[:, len(prompts[0]) - 1:].flatten(0, 1).float(), dim=-1)


def bracketing_top_p(probs: torch.Tensor, temperature: float, min_p: float,
                     candidates=tuple(round(0.5 + 0.05 * i, 2) for i in range(10))) -> tuple[float, float]:
    """The two neighbouring ``candidates`` whose mean kept sizes over the rows of ``probs`` at ``temperature``
    bracket min-p's: (the largest top-p that keeps at most as many tokens, the smallest that keeps at least as many).
    A comparison of the two rules at "the same strength" runs against both: a grid point lands on one side or the
    other of min-p's strength, and the side can decide the sign of a small gap."""
    target = kept_sizes(probs, temperature, min_p=min_p).double().mean()
    size = {p: kept_sizes(probs, temperature, top_p=p).double().mean() for p in candidates}
    below = [p for p in candidates if size[p] <= target]
    above = [p for p in candidates if size[p] >= target]
    if not below or not above:
        raise ValueError("min-p's kept size lies outside the candidates' range")
    return max(below), min(above)


def bracketed_verdict(*differences: dict) -> str:
    """Prediction 6.b's rule: given :func:`paired_difference` results of min-p minus each top-p that brackets its
    strength (:func:`bracketing_top_p`), "min-p keeps more real words" or "top-p keeps more real words" only if that
    side wins every comparison, each by at least 2 standard errors, else "neither side wins both comparisons" (one
    comparison alone may be detectable)."""
    if all(d["mean"] >= 2 * d["se"] for d in differences):
        return "min-p keeps more real words"
    if all(d["mean"] <= -2 * d["se"] for d in differences):
        return "top-p keeps more real words"
    return "neither side wins both comparisons"


def mean_sd(values) -> tuple[float, float]:
    """(mean, sample standard deviation) over prompts, ignoring nan."""
    return _mean_sd(values)


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Per-prompt differences a - b: mean, sample sd across prompts, standard error of the mean, and the number of
    prompts where the difference has the opposite sign to the mean ("reversed"), ignoring prompts where either is
    nan."""
    d = [x - y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    mean, sd = _mean_sd(d)
    return {"mean": mean, "sd": sd, "se": sd / math.sqrt(len(d)), "n": len(d),
            "reversed": sum(x * mean < 0 for x in d)}


def evaluation_table(evaluation: dict) -> str:
    """The per-method means ± sd over prompts of :func:`decoding_evaluation`, as text."""
    lines = [f"{'mean ± sd over ' + str(evaluation['prompts']) + ' prompts':<26} {'log-lik/byte':>13} "
             f"{'distinct 4-grams':>17} {'words in corpus':>22} {'diversity across outputs':>25}"]
    def cell(values):
        defined = sum(not math.isnan(v) for v in values)
        text = "{:.2f} ± {:.2f}".format(*mean_sd(values))
        return text if defined == len(values) else f"{text} (n={defined})"

    for method, metrics in evaluation["per_prompt"].items():
        cells = [cell(metrics[k]) for k in ("loglik", "distinct4", "words")]
        div = "0 (one output)" if method == "greedy" else "{:.2f} ± {:.2f}".format(*mean_sd(metrics["diversity"]))
        lines.append(f"{method:<26} {cells[0]:>13} {cells[1]:>17} {cells[2]:>22} {div:>25}")
    if "reference" in evaluation:
        ref = evaluation["reference"]
        lines.append(f"{'held-out text (the answer)':<26} {'':>13} {cell(ref['distinct4']):>17} "
                     f"{cell(ref['words']):>22}".rstrip())
    return "\n".join(lines)


def describe_difference(label: str, diff: dict, unit: str = "", digits: int = 2) -> str:
    """One line: the mean paired difference ± its sd across prompts, the standard error, and the reversals."""
    return (f"{label}: {diff['mean']:+.{digits}f}{unit} ± {diff['sd']:.{digits}f} (sd over prompts; standard error "
            f"{diff['se']:.{digits}f}); the other way on {diff['reversed']} of {diff['n']} prompts")


def figure_decoding(evaluation: dict):
    """Likelihood per byte against diversity across outputs, mean ± sd over prompts, one point per method."""
    from course_utils.plotting import COLORS, subplots

    fig, ax = subplots(1, width=6, height=3.4)
    colors = list(dict.fromkeys(COLORS[k] for k in ("reference", "pre", "online", "ntk", "post", "no residual")))
    for i, (method, metrics) in enumerate(evaluation["per_prompt"].items()):
        (x, dx), (y, dy) = mean_sd(metrics["diversity"]), mean_sd(metrics["loglik"])
        ax.errorbar(x, y, xerr=0 if method == "greedy" else dx, yerr=dy, fmt="o", capsize=3,
                    color=colors[i % len(colors)], label=method)
    ax.set(xlabel="diversity across 4 outputs for one prompt (1 - 4-gram overlap)",
           ylabel="log-likelihood per byte", title=f"decoding over {evaluation['prompts']} prompts (mean ± sd)")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def apply_presence_penalty(logits, previous, presence: float = 0.0, frequency: float = 0.0):
    """Additive penalties (the presence_penalty and frequency_penalty of OpenAI's API): subtract ``presence`` from
    the logit of every distinct token in ``previous`` and ``frequency`` times its count. Adding a constant to every
    logit changes neither softmax nor this penalty's effect, unlike the multiplicative repetition penalty.
    logits: (V,); previous: (N,) int64. Returns new logits."""
    counts = torch.bincount(previous, minlength=logits.shape[-1]).to(logits.dtype)
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, tied values sharing the mean of their ranks (as Spearman's rho needs)."""
    order = torch.sort(x.double(), stable=True)
    values, ranks = order.values, torch.empty(len(x), dtype=torch.float64)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order.indices[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson's correlation of two 1-D tensors (linear: one outlier can move it)."""
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks, ties shared): monotone, not only linear,
    and robust to a single outlier."""
    return pearson(_average_ranks(a), _average_ranks(b))
