"""Attempts at chapter 6: top-k, top-p, min-p, the repetition penalty, beam search, the Gumbel-max kernel,
the KV cache."""
import math

import torch

from course_utils.runtime import import_triton

triton, tl = import_triton()

NEG = float("-inf")


# ------------------------------------------------------------------------------------------------ 6.1

def top_k_drops_the_kth(logits, k):
    """Slip: masks logits <= the k-th largest, so the k-th itself goes too (k - 1 kept)."""
    if k < 1:
        raise ValueError(k)
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG)


def top_k_no_validation(logits, k):
    """Slip: no check of k, so k = 0 does not raise (it fails deeper, with an IndexError)."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG)


def top_k_in_place(logits, k):
    """Slip: masked_fill_ on the caller's logits."""
    if k < 1:
        raise ValueError(k)
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, NEG)


def top_k_by_sorting(logits, k):
    """Correct: the k-th largest from a descending sort, ties with it kept."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    kth = logits.sort(dim=-1, descending=True).values[..., min(k, logits.shape[-1]) - 1, None]
    return torch.where(logits >= kth, logits, torch.full_like(logits, NEG))


# ------------------------------------------------------------------------------------------------ 6.2

def top_p_at_most_p_before(logits, p):
    """Slip: keeps a token while the mass before it is <= p (one token too many when the mass meets p)."""
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep_sorted = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) <= p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG)


def top_p_softmax_over_batch(logits, p):
    """Slip: softmax over dim 0, which for a batch normalises each token over the rows."""
    if p >= 1:
        return logits.clone()
    probs = torch.softmax(logits.double(), dim=0)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep_sorted = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG)


def top_p_gather_back(logits, p):
    """Correct: filters the sorted logits, then scatters them back to their positions."""
    if p >= 1:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    remove = (probs.cumsum(dim=-1) - probs) >= p
    remove[..., 0] = False
    return torch.empty_like(logits).scatter(-1, order, sorted_logits.masked_fill(remove, NEG))


# ------------------------------------------------------------------------------------------------ 6.3

def min_p_log10(logits, min_p):
    """Slip: math.log10 where the logits are natural logarithms."""
    if min_p <= 0:
        return logits.clone()
    threshold = logits.max(dim=-1, keepdim=True).values + math.log10(min_p)
    return logits.masked_fill(logits < threshold, NEG)


def min_p_global_max(logits, min_p):
    """Slip: the max over the whole batch, not each row's."""
    if min_p <= 0:
        return logits.clone()
    return logits.masked_fill(logits < logits.max() + math.log(min_p), NEG)


def min_p_in_probabilities(logits, min_p):
    """Correct: the rule on probabilities, p_i >= min_p * p_max."""
    probs = torch.softmax(logits.double(), dim=-1)
    keep = probs >= min_p * probs.max(dim=-1, keepdim=True).values
    return torch.where(keep, logits, torch.full_like(logits, NEG))


# ------------------------------------------------------------------------------------------------ 6.4

def penalty_signs_swapped(logits, previous, penalty):
    """Slip: multiplies positive logits and divides negative ones, the opposite of the rule."""
    seen = torch.unique(previous)
    z = logits[seen]
    out = logits.clone()
    out[seen] = torch.where(z > 0, z * penalty, z / penalty)
    return out


def penalty_every_token(logits, previous, penalty):
    """Slip: forgets to index: penalises every token, not only those already in the text."""
    return torch.where(logits > 0, logits / penalty, logits * penalty)


def penalty_fancy_index(logits, previous, penalty):
    """Correct: assigns through the raw ids; a repeated id is written twice with the same value."""
    out = logits.clone()
    z = logits[previous]
    out[previous] = torch.where(z > 0, z / penalty, z * penalty)
    return out


# ------------------------------------------------------------------------------------------------ 6.5

def beam_prompt_in_length(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    """Slip: normalises by the length of prompt + continuation instead of the continuation's."""
    alive, finished = [([], 0.0)], []
    for _ in range(steps):
        if not alive:
            break
        log_probs = next_log_probs([list(prompt) + c for c, _ in alive]).double()
        vocab = log_probs.shape[-1]
        totals = torch.tensor([s for _, s in alive], dtype=torch.float64)[:, None] + log_probs
        order = torch.sort(totals.flatten(), descending=True, stable=True).indices[:beam_width]
        candidates = [(alive[i // vocab][0] + [i % vocab], float(totals.flatten()[i])) for i in order.tolist()]
        alive = []
        for c, s in candidates:
            (finished if eos_id is not None and c[-1] == eos_id else alive).append((c, s))
    n = len(prompt)
    best = max(finished + alive, key=lambda cs: cs[1] / (n + len(cs[0])) ** length_penalty)
    return best[0], best[1] / (n + len(best[0])) ** length_penalty


def beam_returns_prompt_too(next_log_probs, prompt, beam_width, steps, eos_id=None, length_penalty=1.0):
    """Slip: returns the prompt followed by the continuation, not the continuation alone."""
    from course_utils.sampling import beam_search

    best, score = beam_search(next_log_probs, prompt, beam_width, steps, eos_id, length_penalty)
    return list(prompt) + best, score


# ------------------------------------------------------------------------------------------------ 6.6

@triton.jit
def gumbel_same_noise_every_row(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed, BLOCK: tl.constexpr):
    """Slip: tl.rand(seed, cols): every row draws the same noise, not the contract's row * n_cols + col."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    z = tl.load(logits_ptr + row * row_stride + cols, mask=valid, other=0.0).to(tl.float32)
    u = tl.rand(seed, cols)
    score = tl.where(valid, z * inv_temperature - tl.log(-tl.log(u)), -float("inf"))
    tl.store(out_ptr + row, tl.argmax(score, axis=0))


@triton.jit
def gumbel_divides_by_inv_temperature(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, seed,
                                      BLOCK: tl.constexpr):
    """Slip: z / inv_temperature, i.e. multiplies by T instead of dividing."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < n_cols
    z = tl.load(logits_ptr + row * row_stride + cols, mask=valid, other=0.0).to(tl.float32)
    u = tl.rand(seed, row * n_cols + cols)
    score = tl.where(valid, z / inv_temperature - tl.log(-tl.log(u)), -float("inf"))
    tl.store(out_ptr + row, tl.argmax(score, axis=0))


# ------------------------------------------------------------------------------------------------ 6.7

def _kv_block_qkv(model, block, x, positions):
    """One block's rotated q, k and its v, each (B, n_head, T, head_size), as the model's forward makes them."""
    from course_utils.rope import rope_rotate

    B, T, C = x.shape
    attn = block.attn
    q, k, v = attn.qkv(block.ln1(x)).split(C, dim=2)
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
    q = rope_rotate(q, positions, model.rope_inv_freq) * model.rope_factor
    k = rope_rotate(k, positions, model.rope_inv_freq) * model.rope_factor
    return q, k, v


@torch.no_grad()
def kv_no_context_check(model, ids, cache):
    """Slip: never checks L + T against model.config.block_size, so it reads past the context without complaint."""
    B, T = ids.shape
    L = cache[0][0].shape[2] if cache else 0
    positions = torch.arange(L, L + T)
    mask = torch.arange(L + T)[None, :] <= positions[:, None]
    x, new_cache = model.tok_emb(ids), []
    for i, block in enumerate(model.blocks):
        q, k, v = _kv_block_qkv(model, block, x, positions)
        if cache:
            k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
        new_cache.append((k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.norm_f(x)), new_cache


@torch.no_grad()
def kv_cache_of_new_tokens_only(model, ids, cache):
    """Slip: attends to cached + new keys, but returns a cache holding only the new tokens' keys and values."""
    B, T = ids.shape
    L = cache[0][0].shape[2] if cache else 0
    if L + T > model.config.block_size:
        raise ValueError("past the context")
    positions = torch.arange(L, L + T)
    mask = torch.arange(L + T)[None, :] <= positions[:, None]
    x, new_cache = model.tok_emb(ids), []
    for i, block in enumerate(model.blocks):
        q, k, v = _kv_block_qkv(model, block, x, positions)
        new_cache.append((k, v))
        if cache:
            k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.norm_f(x)), new_cache


@torch.no_grad()
def kv_final_norm_forgotten(model, ids, cache):
    """Slip: the logits from model.lm_head(x), the final norm model.norm_f left out."""
    B, T = ids.shape
    L = cache[0][0].shape[2] if cache else 0
    if L + T > model.config.block_size:
        raise ValueError("past the context")
    positions = torch.arange(L, L + T)
    mask = torch.arange(L + T)[None, :] <= positions[:, None]
    x, new_cache = model.tok_emb(ids), []
    for i, block in enumerate(model.blocks):
        q, k, v = _kv_block_qkv(model, block, x, positions)
        if cache:
            k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
        new_cache.append((k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(x), new_cache


@torch.no_grad()
def kv_attention_by_hand(model, ids, cache):
    """Correct: softmax(q k^T / sqrt(d)) v written out, the future scored -inf with masked_fill."""
    B, T = ids.shape
    L = 0 if not cache else cache[0][0].shape[-2]
    if L + T > model.config.block_size:
        raise ValueError(f"{L + T} > block_size")
    positions = L + torch.arange(T)
    future = torch.arange(L + T)[None, :] > positions[:, None]  # (T, L + T), True where hidden
    x, new_cache = model.tok_emb(ids), []
    for i, block in enumerate(model.blocks):
        q, k, v = _kv_block_qkv(model, block, x, positions)
        if L:
            k, v = torch.cat((cache[i][0], k), dim=-2), torch.cat((cache[i][1], v), dim=-2)
        new_cache.append((k, v))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(future, NEG)
        y = scores.softmax(dim=-1) @ v
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.norm_f(x)), new_cache


ATTEMPTS = [
    ("6.1", top_k_drops_the_kth, "<= drops the k-th largest", ("you set 1 to -inf where the answer keeps a value",)),
    ("6.1", top_k_no_validation, "k = 0 not rejected", ("the contract says: ValueError",)),
    ("6.1", top_k_in_place, "logits modified in place", ("modified its input `logits`",)),
    ("6.1", top_k_by_sorting, None, ()),
    ("6.2", top_p_at_most_p_before, "mass before <= p", ("you keep 1 that the answer sets to -inf",)),
    ("6.2", top_p_softmax_over_batch, "softmax over the batch", ("you set 19 to -inf where the answer keeps a value",)),
    ("6.2", top_p_gather_back, None, ()),
    ("6.3", min_p_log10, "log10 instead of ln", ("you set 1 to -inf where the answer keeps a value",)),
    ("6.3", min_p_global_max, "max over the whole batch", ("you set 3 to -inf where the answer keeps a value",)),
    ("6.3", min_p_in_probabilities, None, ()),
    ("6.4", penalty_signs_swapped, "multiply and divide swapped", ()),
    ("6.4", penalty_every_token, "every token penalised", ()),
    ("6.4", penalty_fancy_index, None, ()),
    ("6.5", beam_prompt_in_length, "prompt counted in the length", ("2/3 times the answer",)),
    ("6.5", beam_returns_prompt_too, "prompt returned with the continuation",
     ("expected 2 values [2, 3], got 3 [0, 2, 3]",)),
    ("6.6", gumbel_same_noise_every_row, "same noise in every row", ()),
    ("6.6", gumbel_divides_by_inv_temperature, "multiplied by T", ()),
    ("6.7", kv_no_context_check, "L + T not checked against block_size", ("must raise ValueError here",)),
    ("6.7", kv_cache_of_new_tokens_only, "new cache without the old positions",
     ("new_cache[0][0]: expected shape (3, 4, 10, 24), got (3, 4, 1, 24)", "Right: logits")),
    ("6.7", kv_final_norm_forgotten, "final norm left out", ()),
    ("6.7", kv_attention_by_hand, None, ()),
]
