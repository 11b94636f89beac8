"""Attempts at chapter 7: RoPE, NTK-aware and Llama 3.1 scaling, merging partial attention, the attention
kernel, tiled attention."""
import math

import torch

from course_utils.runtime import import_triton

triton, tl = import_triton()


# ------------------------------------------------------------------------------------------------ 7.1

def rope_halves_swapped(x, positions, inv_freq):
    """Slip: concatenates the two rotated halves in the wrong order."""
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * sin + b * cos, a * cos - b * sin], dim=-1)


def rope_outer_transposed(x, positions, inv_freq):
    """Slip: the angle table built as (d/2, T) instead of (T, d/2)."""
    angles = inv_freq[:, None] * positions.to(torch.float32)[None, :]
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rope_integer_positions(x, positions, inv_freq):
    """Slip: casts the positions to int64, which truncates interpolated positions (0.5 -> 0)."""
    angles = positions.long().to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rope_complex(x, positions, inv_freq):
    """Correct: the pair (a, b) as the complex number a + ib, multiplied by e^{it}."""
    half = x.shape[-1] // 2
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1)


# ------------------------------------------------------------------------------------------------ 7.2

def ntk_float64_returned(inv_freq, factor):
    """Slip: computes in float64 and returns float64."""
    d = 2 * inv_freq.shape[-1]
    i = torch.arange(inv_freq.shape[-1], dtype=torch.float64)
    return inv_freq.double() * factor ** (-2 * i / (d - 2))


def ntk_d_is_the_length(inv_freq, factor):
    """Slip: takes d = len(inv_freq), forgetting that inv_freq has d / 2 entries."""
    d = inv_freq.shape[-1]
    i = torch.arange(inv_freq.shape[-1], dtype=torch.float64)
    return (inv_freq.double() * factor ** (-2 * i / (d - 2))).to(inv_freq.dtype)


def ntk_new_base_from_10000(inv_freq, factor):
    """Slip: rebuilds the frequencies from base 10000 instead of scaling the ones given."""
    d = 2 * inv_freq.shape[-1]
    base = 10000.0 * factor ** (d / (d - 2))
    i = torch.arange(inv_freq.shape[-1], dtype=torch.float64)
    return (base ** (-2 * i / d)).to(inv_freq.dtype)


def ntk_by_position_in_range(inv_freq, factor):
    """Correct: the exponent as i / (d/2 - 1), the same as 2i / (d - 2)."""
    n = inv_freq.shape[-1]
    t = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    return (inv_freq.double() / factor ** t).to(inv_freq.dtype)


# ------------------------------------------------------------------------------------------------ 7.3

def llama3_no_clamp(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    """Slip: the blend weight without .clamp(0, 1), so it runs past 0 and 1 outside the band."""
    wavelength = 2 * math.pi / inv_freq
    smooth = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def llama3_factors_swapped(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    """Slip: uses high_freq_factor where low_freq_factor belongs and the reverse."""
    wavelength = 2 * math.pi / inv_freq
    smooth = ((original_context / wavelength - high_freq_factor) / (low_freq_factor - high_freq_factor)).clamp(0, 1)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def llama3_three_regimes(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    """Correct: Hugging Face's form, three regimes picked with torch.where."""
    wavelength = 2 * math.pi / inv_freq
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    scaled = torch.where(wavelength > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    medium = (wavelength >= high_wavelen) & (wavelength <= low_wavelen)
    return torch.where(medium, blended, scaled)


# ------------------------------------------------------------------------------------------------ 7.4

def merge_weights_not_broadcast(o1, lse1, o2, lse2):
    """Slip: the (..., N) weights multiply the (..., N, D) outputs without [..., None]."""
    lse = torch.logaddexp(lse1, lse2)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.exp(lse1 - safe) * o1 + torch.exp(lse2 - safe) * o2, lse


def merge_lse_summed(o1, lse1, o2, lse2):
    """Slip: adds the two log-sum-exps (that multiplies the sums) instead of logaddexp."""
    lse = lse1 + lse2
    total = torch.logaddexp(lse1, lse2)
    safe = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    return torch.exp(lse1 - safe)[..., None] * o1 + torch.exp(lse2 - safe)[..., None] * o2, lse


def merge_softmax_of_lses(o1, lse1, o2, lse2):
    """Correct: the weights as a softmax over the two parts' LSEs; rows with no key get weight 0."""
    weights = torch.softmax(torch.stack([lse1, lse2]), dim=0).nan_to_num(0.0)
    return weights[0][..., None] * o1 + weights[1][..., None] * o2, torch.logaddexp(lse1, lse2)


# ------------------------------------------------------------------------------------------------ 7.5

@triton.jit
def attention_kernel_fixed_scale(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr,
                                 BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Slip: multiplies the scores by 1 / sqrt(HEAD_DIM) instead of the scale argument."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < n_ctx, other=0.0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, n_ctx, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = tl.load(k_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
        v = tl.load(v_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") / tl.sqrt(HEAD_DIM * 1.0)
        s = tl.where(offs_n[None, :] < n_ctx, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc / l_i[:, None], mask=offs_m[:, None] < n_ctx)


@triton.jit
def attention_kernel_sum_not_rescaled(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr,
                                      BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Slip: rescales the accumulator by alpha but not the running sum l."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < n_ctx, other=0.0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, n_ctx, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = tl.load(k_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
        v = tl.load(v_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        s = tl.where(offs_n[None, :] < n_ctx, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc / l_i[:, None], mask=offs_m[:, None] < n_ctx)


# ------------------------------------------------------------------------------------------------ 7.6

def tiled_attention_float32(q, k, v, block_q=16, block_k=16, causal=False):
    """Slip: computes and returns float32 whatever q's dtype (the contract: promote to at least float32)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(q.shape, dtype=torch.float32)
    for qs in range(0, q.shape[-2], block_q):
        qt = q[..., qs:qs + block_q, :].float()
        rows = torch.arange(qs, qs + qt.shape[-2])
        m = torch.full(qt.shape[:-1], float("-inf"))
        total = torch.zeros(qt.shape[:-1])
        acc = torch.zeros(qt.shape)
        for ks in range(0, k.shape[-2], block_k):
            kt, vt = k[..., ks:ks + block_k, :].float(), v[..., ks:ks + block_k, :].float()
            s = qt @ kt.transpose(-2, -1) * scale
            if causal:
                s = s.masked_fill(torch.arange(ks, ks + kt.shape[-2]) > rows[:, None], float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            c = torch.exp(m - m_new)
            total, acc, m = total * c + p.sum(dim=-1), acc * c[..., None] + p @ vt, m_new
        out[..., qs:qs + block_q, :] = acc / total[..., None]
    return out


def tiled_attention_tile_max_only(q, k, v, block_q=16, block_k=16, causal=False):
    """Slip: m_new = the tile's own max, not max(m, the tile's max): a causal tile row that sees no key gives NaN."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(q.shape, dtype=dtype)
    for qs in range(0, q.shape[-2], block_q):
        qt = q[..., qs:qs + block_q, :].to(dtype)
        rows = torch.arange(qs, qs + qt.shape[-2])
        m = torch.full(qt.shape[:-1], float("-inf"), dtype=dtype)
        total = torch.zeros(qt.shape[:-1], dtype=dtype)
        acc = torch.zeros(qt.shape, dtype=dtype)
        for ks in range(0, k.shape[-2], block_k):
            kt, vt = k[..., ks:ks + block_k, :].to(dtype), v[..., ks:ks + block_k, :].to(dtype)
            s = qt @ kt.transpose(-2, -1) * scale
            if causal:
                s = s.masked_fill(torch.arange(ks, ks + kt.shape[-2]) > rows[:, None], float("-inf"))
            m_new = s.amax(dim=-1)
            p = torch.exp(s - m_new[..., None])
            c = torch.exp(m - m_new)
            total, acc, m = total * c + p.sum(dim=-1), acc * c[..., None] + p @ vt, m_new
        out[..., qs:qs + block_q, :] = acc / total[..., None]
    return out.to(q.dtype)


def tiled_attention_mask_with_zero(q, k, v, block_q=16, block_k=16, causal=False):
    """Slip: the future keys' scores set to 0 (masked_fill(..., 0)), which still gives them weight exp(0 - m)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(q.shape, dtype=dtype)
    for qs in range(0, q.shape[-2], block_q):
        qt = q[..., qs:qs + block_q, :].to(dtype)
        rows = torch.arange(qs, qs + qt.shape[-2])
        m = torch.full(qt.shape[:-1], float("-inf"), dtype=dtype)
        total = torch.zeros(qt.shape[:-1], dtype=dtype)
        acc = torch.zeros(qt.shape, dtype=dtype)
        for ks in range(0, k.shape[-2], block_k):
            kt, vt = k[..., ks:ks + block_k, :].to(dtype), v[..., ks:ks + block_k, :].to(dtype)
            s = qt @ kt.transpose(-2, -1) * scale
            if causal:
                s = s.masked_fill(torch.arange(ks, ks + kt.shape[-2]) > rows[:, None], 0.0)
            m_new = torch.maximum(m, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            c = torch.exp(m - m_new)
            total, acc, m = total * c + p.sum(dim=-1), acc * c[..., None] + p @ vt, m_new
        out[..., qs:qs + block_q, :] = acc / total[..., None]
    return out.to(q.dtype)


def tiled_attention_merging_lse(q, k, v, block_q=16, block_k=16, causal=False):
    """Correct: each key tile's attention with its log-sum-exp, merged into the running one as in 7.4."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    outs = []
    for qs in range(0, q.shape[-2], block_q):
        qt = q[..., qs:qs + block_q, :].to(dtype) / math.sqrt(q.shape[-1])
        rows = torch.arange(qs, qs + qt.shape[-2])[:, None]
        o, lse = torch.zeros(qt.shape, dtype=dtype), torch.full(qt.shape[:-1], float("-inf"), dtype=dtype)
        for ks in range(0, k.shape[-2], block_k):
            kt, vt = k[..., ks:ks + block_k, :].to(dtype), v[..., ks:ks + block_k, :].to(dtype)
            s = qt @ kt.mT
            if causal:
                if ks > rows.max():
                    break
                s = torch.where(torch.arange(ks, ks + kt.shape[-2]) <= rows, s, float("-inf"))
            tile_lse = torch.logsumexp(s, dim=-1)
            new_lse = torch.logaddexp(lse, tile_lse)
            tile_o = torch.softmax(s, dim=-1).nan_to_num(0.0) @ vt
            o = (lse - new_lse).exp()[..., None] * o + (tile_lse - new_lse).exp().nan_to_num(0.0)[..., None] * tile_o
            lse = new_lse
        outs.append(o)
    return torch.cat(outs, dim=-2).to(q.dtype)


def tiled_attention_by_sdpa(q, k, v, block_q=16, block_k=16, causal=False):
    """Slip (of purpose): PyTorch's attention in one call, right to rounding but no tiles at all."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    out = torch.nn.functional.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=causal)
    return out.to(q.dtype)


def tiled_attention_full_scores(q, k, v, block_q=16, block_k=16, causal=False):
    """Slip (of purpose): the whole (Nq, Nk) score matrix and one softmax, the memory FlashAttention avoids."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    s = q.to(dtype) @ k.to(dtype).mT / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, dim=-1) @ v.to(dtype)).to(q.dtype)


ATTEMPTS = [
    ("7.1", rope_halves_swapped, "rotated halves concatenated in the wrong order",
     ("two halves of dimension 1 swapped",)),
    ("7.1", rope_outer_transposed, "angle table (d/2, T)", ()),
    ("7.1", rope_integer_positions, "positions truncated to integers",
     ("interpolated positions 0, 0.5, 1", "Only 1 of 3 rows are wrong")),
    ("7.1", rope_complex, None, ()),
    ("7.2", ntk_float64_returned, "float64 returned", ("expected dtype torch.float32, got torch.float64",)),
    ("7.2", ntk_d_is_the_length, "d = len(inv_freq)", ()),
    ("7.2", ntk_new_base_from_10000, "base 10000 assumed", ("base 500000",)),
    ("7.2", ntk_by_position_in_range, None, ()),
    ("7.3", llama3_no_clamp, "blend weight not clamped", ()),
    ("7.3", llama3_factors_swapped, "low and high factors swapped", ("s = 1 keeps the frequency",)),
    ("7.3", llama3_three_regimes, None, ()),
    ("7.4", merge_weights_not_broadcast, "weights not broadcast over D", ("`return torch.exp(lse1 - safe) * o1",)),
    ("7.4", merge_lse_summed, "lse1 + lse2", ()),
    ("7.4", merge_softmax_of_lses, None, ()),
    ("7.5", attention_kernel_fixed_scale, "1/sqrt(D) instead of scale", ("scale 0.5 instead of 1/sqrt(D)",)),
    ("7.5", attention_kernel_sum_not_rescaled, "running sum not rescaled",
     ("Each row (along the last dimension) is the answer times a factor",)),
    ("7.6", tiled_attention_float32, "float32 whatever the input dtype",
     ("expected dtype torch.float64, got torch.float32",)),
    ("7.6", tiled_attention_tile_max_only, "running max not carried", ()),
    ("7.6", tiled_attention_mask_with_zero, "future scored 0, not -inf", ()),
    ("7.6", tiled_attention_merging_lse, None, ()),
    ("7.6", tiled_attention_by_sdpa, "no tiles: scaled_dot_product_attention", ("calls scaled_dot_product_attention",)),
    ("7.6", tiled_attention_full_scores, "no tiles: the full score matrix", ("forms a (37, 37) product",)),
]
