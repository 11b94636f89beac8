"""FlashAttention forward in Triton: tiles of Q stay on chip while K and V stream past (chapter 7).

For one (batch, head) and one block of BLOCK_M queries, the kernel loops over blocks of BLOCK_N keys,
computes the scores S = Q K^T * scale for that tile only, and folds them into running row statistics
with the online-softmax update of chapter 1:

    m_new = max(m, rowmax(S));  alpha = exp(m - m_new);  P = exp(S - m_new)
    l = alpha * l + rowsum(P);  acc = alpha * acc + P V;  m = m_new

and finally O = acc / l and LSE = m + log l (saved for the backward pass and for merging partial
results, as ring attention does). The N x N score matrix never exists in memory. Causal masking skips
the key blocks after the query block entirely and masks the diagonal block.

With ``count_bytes=True`` the kernel adds the bytes every load and store requests to a counter
(atomic adds), counted as it runs. On a GPU, caches may serve some repeated K/V reads, so the traffic
that reaches HBM can be lower than this count.
The backward pass (``flash_attention_backward``) recomputes P from the saved LSE, FlashAttention's recomputation, in
two more kernels: one per key block for dK and dV, one per query block for dQ.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _flash_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, count_ptr, n_ctx, head_dim, scale,
                      CAUSAL: tl.constexpr, COUNT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """FlashAttention forward for BLOCK_M queries of one (batch, head): O = softmax(Q K^T * scale) V, and
    the row log-sum-exp L of the scores (saved for the backward pass).

    Streams K and V in tiles of BLOCK_N keys and keeps, per query row, the running max m, the running sum
    l = sum exp(s - m) and the unnormalised output acc. A new tile with max m' rescales both by
    exp(m - m'): l = l exp(m - m') + sum exp(s - m'), acc = acc exp(m - m') + exp(s - m') V. At the end
    O = acc / l and L = m + log l. The (N, N) score matrix never exists in memory.
    q/k/v/o_ptr: (B*H, n_ctx, head_dim) contiguous; lse_ptr: (B*H, n_ctx) float32; grid (cdiv(n_ctx, BLOCK_M),
    B*H). CAUSAL: query i sees keys j <= i (tiles past the diagonal are skipped); BLOCK_D: head_dim padded to
    a power of two, at least 16 (tl.dot's smallest); COUNT: add the bytes of every load and store to count_ptr;
    PRECISION: tl.dot's input precision ("ieee" for float32).
    """
    start_m = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1).to(tl.int64)  # index over batch * heads; q, k, v, o are (B*H, N, D) contiguous
    base = head * n_ctx * head_dim
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < n_ctx
    d_ok = offs_d < head_dim
    q = tl.load(q_ptr + base + offs_m[:, None] * head_dim + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                other=0.0)
    elt = q.dtype.primitive_bitwidth // 8
    if COUNT:
        tl.atomic_add(count_ptr, tl.sum(row_ok.to(tl.int64)) * head_dim * elt)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end = tl.minimum(n_ctx, start_m + BLOCK_M) if CAUSAL else n_ctx
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < n_ctx
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + base + offs_n[:, None] * head_dim + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + base + offs_n[:, None] * head_dim + offs_d[None, :], mask=kv_mask, other=0.0)
        if COUNT:
            tl.atomic_add(count_ptr, 2 * tl.sum(col_ok.to(tl.int64)) * head_dim * elt)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_M, BLOCK_N) scores of this tile
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= offs_n[None, :])
        s = tl.where(keep, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # rows with nothing visible yet (padding)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(o_ptr + base + offs_m[:, None] * head_dim + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + head * n_ctx + offs_m, m_i + tl.log(l_safe), mask=row_ok)
    if COUNT:
        tl.atomic_add(count_ptr, tl.sum(row_ok.to(tl.int64)) * (head_dim * elt + 4))


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                            scale: float | None = None, block_m: int = 32, block_n: int = 32,
                            count_bytes: bool = False):
    """Attention of q, k, v (B, H, N, D) (same N: self-attention); returns (o (B, H, N, D), lse (B, H, N) float32,
    bytes moved or None). scale defaults to 1/sqrt(D)."""
    from course_utils.runtime import device

    if not (q.shape == k.shape == v.shape) or q.dim() != 4:
        raise ValueError(f"q, k, v must share one (B, H, N, D) shape, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, N, D = q.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = (t.to(device()).contiguous() for t in (q, k, v))
    o = torch.empty_like(q)
    lse = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    counter = torch.zeros(1, dtype=torch.int64, device=q.device)
    if q.numel():
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        _flash_fwd_kernel[(triton.cdiv(N, block_m), B * H)](
            q, k, v, o, lse, counter, N, D, scale, CAUSAL=causal, COUNT=count_bytes, BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)), PRECISION=precision)
    return o, lse, (int(counter.item()) if count_bytes else None)


@triton.jit
def _load_rows(ptr, base, offs, offs_d, n_ctx, head_dim):
    """The (len(offs), BLOCK_D) tile of rows ``offs`` of a contiguous (N, head_dim) matrix at ``ptr + base``; rows at
    or past n_ctx and columns at or past head_dim read as 0."""
    mask = (offs < n_ctx)[:, None] & (offs_d < head_dim)[None, :]
    return tl.load(ptr + base + offs[:, None] * head_dim + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def _recompute_p(q, k, lse, offs_m, offs_n, n_ctx, scale, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """P = exp(Q K^T * scale - LSE) for one (query block, key block) pair, recomputed from the forward's saved row
    LSE; 0 where masked (padding rows and columns, and above the diagonal when causal). (BLOCK_M, BLOCK_N)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    keep = (offs_m < n_ctx)[:, None] & (offs_n < n_ctx)[None, :]
    if CAUSAL:
        keep = keep & (offs_m[:, None] >= offs_n[None, :])
    return tl.where(keep, tl.exp(s - lse[:, None]), 0.0)


@triton.jit
def _flash_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, count_ptr, n_ctx, head_dim,
                           scale, CAUSAL: tl.constexpr, COUNT: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """dK and dV of one block of BLOCK_N keys of one (batch, head), streaming the query blocks that see them:
    dV += P^T dO, then dS = P * (dO V^T - delta) with delta = rowsum(dO * O), and dK += dS^T Q * scale (P from
    :func:`_recompute_p`; dS is formed after dV: with dP computed first, the compiled tier measured spills at
    head_dim 64 on sm_90). Causal: query blocks that end before this key block starts see none of it and are
    skipped. COUNT adds the bytes every load and store requests to count_ptr, as the forward does.
    """
    start_n = tl.program_id(0) * BLOCK_N
    head = tl.program_id(1).to(tl.int64)  # q, k, v, do, dk, dv are (B*H, N, D) contiguous; lse, delta (B*H, N)
    base = head * n_ctx * head_dim
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_rows(k_ptr, base, offs_n, offs_d, n_ctx, head_dim)
    v = _load_rows(v_ptr, base, offs_n, offs_d, n_ctx, head_dim)
    elt = k.dtype.primitive_bitwidth // 8
    if COUNT:  # K and V read once here, dK and dV written once at the end
        tl.atomic_add(count_ptr, 4 * tl.sum((offs_n < n_ctx).to(tl.int64)) * head_dim * elt)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    rows_seen = tl.zeros([BLOCK_M], tl.int64)  # with COUNT: per lane, how many query rows this program loaded
    first = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
    for start_m in range(first, n_ctx, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_rows(q_ptr, base, offs_m, offs_d, n_ctx, head_dim)
        do = _load_rows(do_ptr, base, offs_m, offs_d, n_ctx, head_dim)
        lse = tl.load(lse_ptr + head * n_ctx + offs_m, mask=offs_m < n_ctx, other=0.0)
        delta = tl.load(delta_ptr + head * n_ctx + offs_m, mask=offs_m < n_ctx, other=0.0)
        if COUNT:
            rows_seen += (offs_m < n_ctx).to(tl.int64)
        p = _recompute_p(q, k, lse, offs_m, offs_n, n_ctx, scale, CAUSAL, PRECISION)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION) * scale
    if COUNT:  # Q, dO and the two float32 row statistics of every query block streamed past
        tl.atomic_add(count_ptr, tl.sum(rows_seen) * (2 * head_dim * elt + 8))
    kv_mask = (offs_n < n_ctx)[:, None] & (offs_d < head_dim)[None, :]
    tl.store(dk_ptr + base + offs_n[:, None] * head_dim + offs_d[None, :], dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + base + offs_n[:, None] * head_dim + offs_d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _flash_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, count_ptr, n_ctx, head_dim, scale,
                         CAUSAL: tl.constexpr, COUNT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """dQ of one block of BLOCK_M queries of one (batch, head), streaming the key blocks it sees:
    dS = P * (dO V^T - delta), dQ += dS K * scale (P from :func:`_recompute_p`). Causal: key blocks after the query
    block are skipped, as in the forward."""
    start_m = tl.program_id(0) * BLOCK_M
    head = tl.program_id(1).to(tl.int64)
    base = head * n_ctx * head_dim
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_rows(q_ptr, base, offs_m, offs_d, n_ctx, head_dim)
    do = _load_rows(do_ptr, base, offs_m, offs_d, n_ctx, head_dim)
    lse = tl.load(lse_ptr + head * n_ctx + offs_m, mask=offs_m < n_ctx, other=0.0)
    delta = tl.load(delta_ptr + head * n_ctx + offs_m, mask=offs_m < n_ctx, other=0.0)
    elt = q.dtype.primitive_bitwidth // 8
    if COUNT:  # Q, dO, the row statistics, and dQ written at the end
        tl.atomic_add(count_ptr, tl.sum((offs_m < n_ctx).to(tl.int64)) * (3 * head_dim * elt + 8))
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    cols_seen = tl.zeros([BLOCK_N], tl.int64)  # with COUNT: per lane, how many key rows this program loaded
    end = tl.minimum(n_ctx, start_m + BLOCK_M) if CAUSAL else n_ctx
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, base, offs_n, offs_d, n_ctx, head_dim)
        v = _load_rows(v_ptr, base, offs_n, offs_d, n_ctx, head_dim)
        if COUNT:
            cols_seen += (offs_n < n_ctx).to(tl.int64)
        p = _recompute_p(q, k, lse, offs_m, offs_n, n_ctx, scale, CAUSAL, PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION) * scale
    if COUNT:  # K and V of every key block streamed past
        tl.atomic_add(count_ptr, 2 * tl.sum(cols_seen) * head_dim * elt)
    q_mask = (offs_m < n_ctx)[:, None] & (offs_d < head_dim)[None, :]
    tl.store(dq_ptr + base + offs_m[:, None] * head_dim + offs_d[None, :], dq.to(dq_ptr.dtype.element_ty), mask=q_mask)


def flash_attention_backward(q, k, v, o, lse, do, *, causal: bool, scale: float, block_m: int = 32, block_n: int = 32,
                             count_bytes: bool = False):
    """(dq, dk, dv, bytes moved or None) of ``softmax(q k^T * scale) v`` for (B, H, N, D) tensors, from the forward's
    output ``o`` and row ``lse`` (B, H, N): two Triton kernels (dK and dV per key block, dQ per query block)
    recompute P from the LSE, so the N x N matrix never exists. ``delta = rowsum(dO * O)`` (= rowsum(P * dP)) is
    one PyTorch reduction, counted as reading dO and O and writing delta."""
    B, H, N, D = q.shape
    q, k, v, o, do = (t.contiguous() for t in (q, k, v, o, do))
    delta = (do.float() * o.float()).sum(-1).contiguous()  # (B, H, N) float32
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    counter = torch.zeros(1, dtype=torch.int64, device=q.device)
    if q.numel():
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        # float32 tiles multiply on the FMA units, not the tensor cores, and need twice the threads to stay in
        # registers (the compiled tier: 4 warps spill 296 bytes a thread at head_dim 32 on sm_90, 8 warps none)
        meta = dict(CAUSAL=causal, COUNT=count_bytes, BLOCK_M=block_m, BLOCK_N=block_n,
                    BLOCK_D=max(16, triton.next_power_of_2(D)), PRECISION=precision,
                    num_warps=8 if q.dtype == torch.float32 else 4)
        _flash_bwd_dkdv_kernel[(triton.cdiv(N, block_n), B * H)](q, k, v, do, lse, delta, dk, dv, counter, N, D, scale,
                                                                  **meta)
        _flash_bwd_dq_kernel[(triton.cdiv(N, block_m), B * H)](q, k, v, do, lse, delta, dq, counter, N, D, scale,
                                                               **meta)
    moved = int(counter.item()) + B * H * N * (2 * D * q.element_size() + 4) if count_bytes else None
    return dq, dk, dv, moved


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        o, lse, _ = flash_attention_forward(q, k, v, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv, _ = flash_attention_backward(q, k, v, o, lse, do.to(q.device), causal=ctx.causal, scale=ctx.scale)
        return dq, dk, dv, None, None


def flash_attention_triton(q, k, v, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Drop-in for F.scaled_dot_product_attention(q, k, v, is_causal=causal) on (B, H, N, D)."""
    return FlashAttentionFunction.apply(q, k, v, causal, 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
