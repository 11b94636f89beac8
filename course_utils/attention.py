"""Attention pieces for chapter 7: partial attention with its log-sum-exp, merging partials, ring attention.

Softmax attention over a set of keys can be computed in parts: each part gives an output O_j
(normalised over its own keys) and the log-sum-exp L_j of its scores. Two parts merge exactly:

    L = logaddexp(L_1, L_2);  O = exp(L_1 - L) O_1 + exp(L_2 - L) O_2

FlashAttention does this across key blocks inside one kernel; ring attention does it across
processes, each holding one block of the sequence while the K/V blocks travel around a ring.

Used by chapter 7.
"""
from __future__ import annotations

import math

import torch


def future_keys(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """The causal mask, (n_q, n_k) bool, True where key j lies after query i (j > i): the scores to set to -inf.
    The Triton kernels build the same mask per tile as ``offs_m[:, None] >= offs_n[None, :]`` (the keys kept)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).triu(1)


def attention_with_lse(q, k, v, *, causal: bool = False, scale: float | None = None):
    """softmax(q k^T * scale) v and the row log-sum-exp of the scores, for q (..., Nq, D), k, v (..., Nk, D).

    causal: query i sees keys j <= i (Nq == Nk, same positions). A row that sees no key gets O = 0 and
    LSE = -inf, so that merging it with another part leaves the other part unchanged.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.float() @ k.float().transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(future_keys(*s.shape[-2:], device=q.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    return (p @ v.float()).to(q.dtype), lse


def merge_partial_attention(o1, lse1, o2, lse2):
    """Merge two partial attention results over disjoint key sets into the result over their union.

    o1, o2: (..., N, D) outputs, each normalised over its own keys; lse1, lse2: (..., N) log-sum-exp of
    each part's scores (-inf where a part saw no key). Returns (o, lse) with lse = logaddexp(lse1, lse2)
    and o = exp(lse1 - lse) * o1 + exp(lse2 - lse) * o2; rows where both are -inf give o = 0, lse = -inf.
    """
    lse = torch.logaddexp(lse1, lse2)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w1 = torch.exp(lse1 - safe)[..., None]
    w2 = torch.exp(lse2 - safe)[..., None]
    return w1 * o1 + w2 * o2, lse


def tiled_attention(q, k, v, block_q: int = 16, block_k: int = 16, causal: bool = False):
    """Scaled dot-product attention, softmax(q k^T / sqrt(D)) v, computed tile by tile with the online softmax: the
    loop of FlashAttention's forward pass (exercise 7.6; 7.5 writes it as a Triton kernel).

    q: (..., Nq, D); k, v: (..., Nk, D) with the same leading dimensions, Nk >= 1. Queries are taken in tiles of
    ``block_q`` rows and keys and values in tiles of ``block_k`` rows (both >= 1; the last tile of each may be
    shorter), and no score tensor larger than (..., block_q, block_k) is formed. causal: query i sees the keys
    j <= i only (requires Nq == Nk). Returns a new tensor of q's shape and dtype, computed in float32 or wider
    (torch.promote_types(q.dtype, torch.float32)); it equals
    torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal) to rounding, also where the scores
    run into the thousands (nothing overflows). The inputs are not modified.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1])
    n_q, n_k = q.shape[-2], k.shape[-2]
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    for qs in range(0, n_q, block_q):
        qt = q[..., qs:qs + block_q, :].to(dtype)  # (..., Bq, D): one query tile
        rows = torch.arange(qs, qs + qt.shape[-2], device=q.device)
        m = torch.full(qt.shape[:-1], float("-inf"), dtype=dtype, device=q.device)  # (..., Bq) running max
        total = torch.zeros(qt.shape[:-1], dtype=dtype, device=q.device)  # (..., Bq) running sum of exp(s - m)
        acc = torch.zeros(qt.shape, dtype=dtype, device=q.device)  # (..., Bq, D) unnormalised output
        for ks in range(0, qs + qt.shape[-2] if causal else n_k, block_k):  # causal: no tile wholly in the future
            kt, vt = k[..., ks:ks + block_k, :].to(dtype), v[..., ks:ks + block_k, :].to(dtype)  # (..., Bk, D)
            s = (qt @ kt.transpose(-2, -1)) * scale  # (..., Bq, Bk): one score tile
            if causal:
                s = s.masked_fill(torch.arange(ks, ks + kt.shape[-2], device=q.device) > rows[:, None], float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: every row saw key 0 in the first tile
            p = torch.exp(s - m_new[..., None])
            correction = torch.exp(m - m_new)  # rescales what was summed under the old max
            total = total * correction + p.sum(dim=-1)
            acc = acc * correction[..., None] + p @ vt
            m = m_new
        out[..., qs:qs + block_q, :] = acc / total[..., None]
    return out.to(q.dtype)


def ring_attention_simulated(q, k, v, world_size: int, *, causal: bool = True):
    """Ring attention in one process, for checking the multi-process version: split the sequence into
    ``world_size`` blocks; rank r merges its queries' attention over the K/V block it holds at each
    step (block (r - step) mod P), skipping blocks after its own when causal. Returns (o, lse)."""
    qs, ks, vs = (t.chunk(world_size, dim=-2) for t in (q, k, v))
    outs, lses = [], []
    for rank in range(world_size):
        o = torch.zeros_like(qs[rank])
        lse = torch.full(qs[rank].shape[:-1], float("-inf"))
        for step in range(world_size):
            src = (rank - step) % world_size
            if causal and src > rank:
                continue
            part = attention_with_lse(qs[rank], ks[src], vs[src], causal=causal and src == rank)
            o, lse = merge_partial_attention(o, lse, *part)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


def naive_attention(q, k, v, *, causal: bool = False):
    """The textbook version: materialise the (N, N) scores and probabilities, then multiply by V."""
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(future_keys(*s.shape[-2:], device=q.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


FLASH_COMPILE_SETTINGS = [(64, 64), (128, 64)]  # (head_dim, rows per query and per key block)


def flash_kernels_compiled(settings=FLASH_COMPILE_SETTINGS, dtype=torch.float16, n_ctx: int = 4096,
                           num_stages: int | None = None, kernels: tuple[str, ...] | None = None) -> list[dict]:
    """The course's FlashAttention kernels as Triton's compiler builds them for each NVIDIA target
    (:mod:`course_utils.harness.compiled`), causal, in ``dtype``, for each ``(head_dim, block)`` of ``settings``:
    the forward, and the backward's dK/dV and dQ kernels. One dict per kernel, setting and target: shared memory
    (KiB), registers a thread, spilled bytes. Needs Triton (not a GPU).

    ``num_stages``: compile every launch with this software-pipelining depth instead of the launch's own (Triton's
    default, 3): the K/V tiles of that many loop iterations are buffered in shared memory. ``kernels``: keep only
    the launches with these names (``"flash_fwd"``, ``"flash_bwd_dkdv"``, ``"flash_bwd_dq"``)."""
    import dataclasses

    from course_utils.harness.compiled import compile_launches, recording_launches
    from course_utils.kernels.flash_attention import flash_attention_backward, flash_attention_forward

    def name(launch):
        return launch.name.strip("_").replace("_kernel", "")

    def walk():
        for head_dim, block in settings:
            q = torch.empty(1, 1, n_ctx, head_dim, dtype=dtype)
            lse = torch.empty(1, 1, n_ctx)
            flash_attention_forward(q, q, q, causal=True, block_m=block, block_n=block)
            flash_attention_backward(q, q, q, q, lse, q, causal=True, scale=head_dim ** -0.5, block_m=block,
                                     block_n=block)

    with recording_launches(execute=False) as launches:
        walk()
    launches = [launch if num_stages is None else dataclasses.replace(launch, num_stages=num_stages)
                for launch in launches if kernels is None or name(launch) in kernels]
    rows = []
    for report in compile_launches(launches):
        constants = dict(report.launch.constexprs)
        rows.append({"kernel": name(report.launch), "head_dim": constants["BLOCK_D"],
                     "stages": report.launch.num_stages,
                     "block": constants["BLOCK_M"], "target": report.target.name, "error": report.error,
                     "shared KiB": None if report.error else report.shared_bytes / 1024,
                     "fits": not report.problems(), "registers": report.registers, "spilled": report.spilled_bytes})
    return rows
