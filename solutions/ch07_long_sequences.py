"""Notebook 07: long sequences. RoPE, its scalings, the partial-attention merge and tiled attention are building
blocks: they live in course_utils (rope.py, attention.py) and are re-exported here."""
import functools
import math

import torch
from torch.overrides import TorchFunctionMode

from course_utils.attention import merge_partial_attention, tiled_attention
from course_utils.harness.errors import ContractError
from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.harness.launchers import launch_attention_kernel
from course_utils.rope import llama3_scaled_inv_freq, ntk_scaled_inv_freq, rope_inv_freq, rope_rotate
from course_utils.runtime import import_triton

triton, tl = import_triton()

CHAPTER = "7. Long sequences (긴 시퀀스 학습)"

__all__ = ["rope_rotate", "ntk_scaled_inv_freq", "llama3_scaled_inv_freq", "merge_partial_attention",
           "attention_kernel", "tiled_attention"]


# ------------------------------------------------------------------------------------- 7.1 RoPE

def _rope_interleaved(x, positions, inv_freq):  # pairs (2i, 2i+1), Meta's Llama / GPT-J: another convention
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def _rope_backwards(x, positions, inv_freq):  # rotates by -angle
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * cos + b * sin, -a * sin + b * cos], dim=-1)


def _rope_no_position(x, positions, inv_freq):  # the same angle at every position
    cos, sin = inv_freq.cos(), inv_freq.sin()
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def _rope_cases():
    g = torch.Generator().manual_seed(71)
    return [
        Case("one head, 5 positions, d = 8", (torch.randn(5, 8, generator=g), torch.arange(5), rope_inv_freq(8))),
        Case("(2, 3, 7, 16): batch and heads",
             (torch.randn(2, 3, 7, 16, generator=g), torch.arange(7), rope_inv_freq(16))),
        Case("positions 1000-1003", (torch.randn(4, 8, generator=g), torch.arange(1000, 1004), rope_inv_freq(8))),
        Case("interpolated positions 0, 0.5, 1",
             (torch.randn(3, 4, generator=g), torch.tensor([0.0, 0.5, 1.0]), rope_inv_freq(4))),
        Case("base 500000 (Llama 3), d = 16, positions 0-99",
             (torch.randn(100, 16, generator=g), torch.arange(100), rope_inv_freq(16, base=500000.0))),
        Case("scaled frequencies (every one divided by 4, as PI does)",
             (torch.randn(6, 8, generator=g), torch.arange(6), rope_inv_freq(8) / 4)),
    ]


EX_7_1 = Exercise(
    id="7.1", title="rotary position embedding", reference=rope_rotate, cases=_rope_cases,
    mistakes=(
        Mistake("interleaved pairs", _rope_interleaved,
                "The contract pairs feature i with feature i + d/2 (\"rotate half\", as GPT-NeoX and Hugging "
                "Face's Llama do), not (2i, 2i+1) as Meta's reference Llama and GPT-J do; both pairings work, but "
                "weights trained with one need the same one."),
        Mistake("rotated backwards", _rope_backwards,
                "The rotation by t maps (a, b) to (a cos t - b sin t, a sin t + b cos t)."),
        Mistake("angle without the position", _rope_no_position,
                "The angle is position * inv_freq[i]: every position gets its own rotation."),
        Mistake("inv_freq recomputed", lambda x, positions, inv_freq: rope_rotate(
            x, positions, rope_inv_freq(x.shape[-1])),
                "Use the inv_freq you are given: scaled RoPE (PI, NTK, YaRN, Llama 3.1) and other bases (Llama 3 "
                "uses 500000) differ only in it; recomputing base-10000 frequencies ignores them."),
    ),
)


# -------------------------------------------------------------------------------- 7.2 NTK-aware

def _ntk_base_times_factor(inv_freq, factor):  # base * factor, without the d / (d - 2) exponent
    d = 2 * inv_freq.shape[-1]
    i = torch.arange(inv_freq.shape[-1], dtype=torch.float64)
    return (inv_freq.double() * factor ** (-2 * i / d)).to(inv_freq.dtype)


def _ntk_like_pi(inv_freq, factor):
    return inv_freq / factor


def _ntk_cases():
    return [
        Case("d = 8, factor 4", (rope_inv_freq(8), 4.0)),
        Case("d = 128, factor 8", (rope_inv_freq(128), 8.0)),
        Case("d = 64, base 500000, factor 2", (rope_inv_freq(64, 500000.0), 2.0)),
        Case("factor 1 changes nothing", (rope_inv_freq(16), 1.0)),
    ]


EX_7_2 = Exercise(
    id="7.2", title="NTK-aware RoPE scaling", reference=ntk_scaled_inv_freq, cases=_ntk_cases,
    hints=("Write the new inverse frequency of pair i as (b * s)^(-2i/d) with s = factor^(d/(d-2)), and compare it "
           "with the old b^(-2i/d): their ratio does not depend on b.",
           "The ratio is factor^(-2i/(d-2)): 1 at i = 0, 1/factor at i = d/2 - 1.",
           "i = torch.arange(len(inv_freq)); return inv_freq * factor ** (-2 * i / (d - 2)) (compute in float64, "
           "return in inv_freq's dtype)."),
    mistakes=(
        Mistake("base times factor", _ntk_base_times_factor,
                "The new base is base * factor^(d / (d - 2)), chosen so that the *lowest* frequency is divided "
                "by exactly factor; base * factor divides it by a little less."),
        Mistake("every frequency divided", _ntk_like_pi,
                "Dividing every frequency by factor is position interpolation; NTK-aware scaling leaves the "
                "highest frequency alone and stretches the low ones most."),
    ),
)


# -------------------------------------------------------------------------------- 7.3 Llama 3.1

def _llama3_no_2pi(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    wavelength = 1 / inv_freq
    smooth = ((original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def _llama3_blend_reversed(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    wavelength = 2 * math.pi / inv_freq
    smooth = ((original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return smooth * inv_freq / factor + (1 - smooth) * inv_freq


def _llama3_all_interpolated(inv_freq, factor, original_context, low_freq_factor=1.0, high_freq_factor=4.0):
    return inv_freq / factor


def _llama3_cases():
    return [
        Case("Llama 3.1: d = 128, base 500000, factor 8, context 8192", (rope_inv_freq(128, 500000.0), 8.0, 8192)),
        Case("d = 24, base 10000, factor 4, context 96", (rope_inv_freq(24), 4.0, 96)),
        Case("factors 2 and 8 (low, high), context 2048", (rope_inv_freq(64), 16.0, 2048, 2.0, 8.0)),
        Case("factor 1 changes nothing", (rope_inv_freq(32), 1.0, 512)),
    ]


EX_7_3 = Exercise(
    id="7.3", title="Llama 3.1 RoPE scaling", reference=llama3_scaled_inv_freq, cases=_llama3_cases,
    hints=("Compute each frequency's wavelength 2*pi / inv_freq and compare it with the two thresholds "
           "original_context / high_freq_factor and original_context / low_freq_factor.",
           "In between, a weight s = (original_context / wavelength - low_freq_factor) / (high_freq_factor - "
           "low_freq_factor) runs from 0 at the long threshold to 1 at the short one.",
           "Between the thresholds: (1 - s) * inv_freq / factor + s * inv_freq; torch.where picks the three "
           "regimes."),
    mistakes=(
        Mistake("wavelength without 2 pi", _llama3_no_2pi,
                "A frequency's wavelength (positions per full turn) is 2 * pi / inv_freq."),
        Mistake("blend reversed", _llama3_blend_reversed,
                "s grows with the number of turns in the context: s = 1 keeps the frequency, s = 0 divides it "
                "by factor: (1 - s) * inv_freq / factor + s * inv_freq."),
        Mistake("every frequency divided", _llama3_all_interpolated,
                "High frequencies (wavelength below original_context / high_freq_factor) stay unchanged."),
    ),
)


# -------------------------------------------------------------------- 7.4 merging partial attention

def _merge_plain_average(o1, lse1, o2, lse2):
    return (o1 + o2) / 2, torch.logaddexp(lse1, lse2)


def _merge_lse_max(o1, lse1, o2, lse2):  # keeps the larger part's LSE
    lse = torch.maximum(lse1, lse2)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.exp(lse1 - safe)[..., None] * o1 + torch.exp(lse2 - safe)[..., None] * o2, lse


def _merge_unguarded(o1, lse1, o2, lse2):  # NaN where both parts are empty
    lse = torch.logaddexp(lse1, lse2)
    return torch.exp(lse1 - lse)[..., None] * o1 + torch.exp(lse2 - lse)[..., None] * o2, lse


def _merge_cases():
    from course_utils.attention import attention_with_lse

    g = torch.Generator().manual_seed(74)

    def parts(n_q, n_k1, n_k2, d, scale=1.0):
        q = scale * torch.randn(n_q, d, generator=g)
        k, v = torch.randn(n_k1 + n_k2, d, generator=g), torch.randn(n_k1 + n_k2, d, generator=g)
        return (*attention_with_lse(q, k[:n_k1], v[:n_k1]), *attention_with_lse(q, k[n_k1:], v[n_k1:]))

    empty_o, empty_lse = torch.zeros(3, 4), torch.full((3,), float("-inf"))
    o, lse, _, _ = parts(3, 5, 1, 4)
    return [
        Case("4 queries, keys split 6 + 10", parts(4, 6, 10, 8)),
        Case("(batch 2, 3 heads, 1 query), keys split 1 + 1",
             tuple(t.reshape(2, 3, 1, *t.shape[1:]) for t in parts(6, 1, 1, 4))),
        Case("sharp scores (queries x 30)", parts(5, 7, 3, 8, scale=30.0)),
        Case("second part saw no key", (o, lse, empty_o, empty_lse)),
        Case("both parts empty", (empty_o, empty_lse, empty_o.clone(), empty_lse.clone())),
    ]


EX_7_4 = Exercise(
    id="7.4", title="merging partial attention with log-sum-exp", reference=merge_partial_attention,
    cases=_merge_cases,
    mistakes=(
        Mistake("plain average", _merge_plain_average,
                "Each part is normalised over its own keys: weight it by its share of the total mass, "
                "exp(lse_part - lse), not 1/2."),
        Mistake("max instead of logaddexp", _merge_lse_max,
                "The merged LSE is log(e^lse1 + e^lse2) = torch.logaddexp(lse1, lse2), not their max."),
        Mistake("no guard for empty parts", _merge_unguarded,
                "Where both parts saw no key, lse is -inf and exp(-inf - -inf) is NaN: subtract 0 there instead."),
    ),
)


# ----------------------------------------------------------------- 7.5 Triton attention forward

# = kernels/flash_attention._flash_fwd_kernel for one head in float32: no (batch, head) grid axis, no causal mask,
# no LSE output or byte counter, HEAD_DIM a power of two (no padding mask), and no guards for a row that sees no
# key (without a causal mask every row sees one).
@triton.jit
def attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     HEAD_DIM: tl.constexpr):
    """Non-causal attention for one head, FlashAttention style: O = softmax(Q K^T * scale) V.

    q, k, v, o: (n_ctx, HEAD_DIM) float32, contiguous; HEAD_DIM a power of two >= 16. Program i
    handles queries [i * BLOCK_M, (i + 1) * BLOCK_M): it keeps its Q tile, loops over key blocks of
    BLOCK_N and folds each score tile S into running max m, sum l and accumulator acc (online
    softmax), then stores acc / l. Keys at or beyond n_ctx must get no weight; rows beyond n_ctx
    must not be stored. The result must match float32 attention within 1e-5: pass input_precision="ieee" to
    tl.dot (on a GPU tl.dot multiplies in TF32 by default, about 1e-3 relative).
    """
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
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc / l_i[:, None], mask=offs_m[:, None] < n_ctx)


@triton.jit
def _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       HEAD_DIM: tl.constexpr, NO_RESCALE: tl.constexpr = False,
                       PADDING_SCORES_ZERO: tl.constexpr = False, UNNORMALISED: tl.constexpr = False,
                       UNMASKED_KV_LOADS: tl.constexpr = False, UNMASKED_STORE: tl.constexpr = False):
    """attention_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes below."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < n_ctx, other=0.0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, n_ctx, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if UNMASKED_KV_LOADS:
            k = tl.load(k_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :])
            v = tl.load(v_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :])
        else:
            k = tl.load(k_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
            v = tl.load(v_ptr + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_ctx, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        if not PADDING_SCORES_ZERO:
            s = tl.where(offs_n[None, :] < n_ctx, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if NO_RESCALE:
            acc = acc + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    if not UNNORMALISED:
        acc = acc / l_i[:, None]
    if UNMASKED_STORE:
        tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc)
    else:
        tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=offs_m[:, None] < n_ctx)


@triton.jit
def _attention_no_rescale(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          HEAD_DIM: tl.constexpr):
    _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM,
                       NO_RESCALE=True)


@triton.jit
def _attention_padding_scores_zero(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr,
                                   BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM,
                       PADDING_SCORES_ZERO=True)


@triton.jit
def _attention_unnormalised(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            HEAD_DIM: tl.constexpr):
    _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM,
                       UNNORMALISED=True)


@triton.jit
def _attention_unmasked_kv(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           HEAD_DIM: tl.constexpr):
    _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM,
                       UNMASKED_KV_LOADS=True)


@triton.jit
def _attention_unmasked_store(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              HEAD_DIM: tl.constexpr):
    _attention_variant(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM,
                       UNMASKED_STORE=True)


def _attention_cases():
    g = torch.Generator().manual_seed(75)

    def qkv(n, d, scale=1.0):
        return tuple(s * torch.randn(n, d, generator=g) for s in (scale, 1.0, 1.0))

    return [
        Case("N = 37, D = 16 (3 blocks, the last partial)", qkv(37, 16)),
        Case("N = 16, D = 32 (one full block)", qkv(16, 32)),
        Case("sharp scores (q x 20), N = 40", qkv(40, 16, 20.0)),
        Case("N = 5 (one partial block)", qkv(5, 16)),
        Case("scale 0.5 instead of 1/sqrt(D), N = 20", qkv(20, 16), {"scale": 0.5}),
    ]


EX_7_5 = Exercise(
    id="7.5", title="Triton FlashAttention forward", reference=attention_kernel, cases=_attention_cases,
    call=launch_attention_kernel,
    tolerances={torch.float32: (1e-5, 1e-5)},  # blockwise sums in another order than the reference
    mistakes=(
        Mistake("accumulator not rescaled", _attention_no_rescale,
                "When the running max rises, the old accumulator was computed with the old max: multiply it by "
                "alpha = exp(m_old - m_new) before adding P V, as l is."),
        Mistake("padding keys scored 0", _attention_padding_scores_zero,
                "Keys at or beyond n_ctx must score -inf (tl.where(offs_n < n_ctx, s, -inf)); with score 0 they "
                "take softmax weight."),
        Mistake("not divided by l", _attention_unnormalised,
                "Divide the accumulator by the running sum l at the end."),
        Mistake("K and V loaded without a mask", _attention_unmasked_kv,
                "The last key block runs past n_ctx: load K and V with mask=offs_n[:, None] < n_ctx, other=0.0. "
                "Scoring those keys -inf is not enough: P @ V still multiplies 0 by whatever lies past the end."),
        Mistake("store without a mask", _attention_unmasked_store,
                "Rows at or beyond n_ctx must not be stored: mask the store with offs_m[:, None] < n_ctx."),
    ),
)


# ------------------------------------------------------------ 7.6 tiled attention in PyTorch

def _tiled_variant(q, k, v, block_q=16, block_k=16, causal=False, *, bug=""):
    """tiled_attention with one realistic bug (``bug`` names it; "" is the correct loop), for the mistakes below."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 if bug == "unscaled" else 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(q.shape, dtype=dtype)
    for qs in range(0, q.shape[-2], block_q):
        qt = q[..., qs:qs + block_q, :].to(dtype)
        rows = torch.arange(qs, qs + qt.shape[-2])
        m = torch.full(qt.shape[:-1], float("-inf"), dtype=dtype)
        total = torch.zeros(qt.shape[:-1], dtype=dtype)
        acc = torch.zeros(qt.shape, dtype=dtype)
        for ks in range(0, k.shape[-2], block_k):
            kt, vt = k[..., ks:ks + block_k, :].to(dtype), v[..., ks:ks + block_k, :].to(dtype)
            s = (qt @ kt.transpose(-2, -1)) * scale
            if causal and bug == "tile mask":  # the mask of a tile on the diagonal, wherever the tile lies
                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
            elif causal:
                s = s.masked_fill(torch.arange(ks, ks + kt.shape[-2]) > rows[:, None], float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            correction = torch.exp(m - m_new)
            total = (total if bug == "sum not rescaled" else total * correction) + p.sum(dim=-1)
            acc = (acc if bug == "output not rescaled" else acc * correction[..., None]) + p @ vt
            m = m_new
        out[..., qs:qs + block_q, :] = acc / total[..., None]
    return out.to(q.dtype)


_PRODUCTS = frozenset({"matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "einsum", "linear", "tensordot", "inner"})


class _ScoreWatch(TorchFunctionMode):
    """Records the first matrix product whose last two dimensions hold more than one tile's worth of scores, and any
    call of scaled_dot_product_attention: what 7.6's contract rules out ("no score tensor larger than (..., block_q,
    block_k)"). A value tile's product p @ v, (Bq, D), and the tile-sized score products stay under ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.found = limit, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if self.found is None and name == "scaled_dot_product_attention":
            self.found = "it calls scaled_dot_product_attention, which computes all the scores at once"
        elif (self.found is None and name in _PRODUCTS and isinstance(out, torch.Tensor) and out.dim() >= 2
              and out.shape[-2] * out.shape[-1] > self.limit):
            self.found = f"it forms a {tuple(out.shape[-2:])} product with {name}"
        return out


def _one_tile_at_a_time(candidate, q, k, v, block_q=16, block_k=16, causal=False):
    """Runs a 7.6 answer and rejects it when it computes more than one tile of scores at a time (recorded, not raised
    inside the learner's code, so that an ``except`` there cannot hide it)."""
    d = q.shape[-1]
    watch = _ScoreWatch(limit=max(block_q * block_k, block_q * d, block_k * d))
    with watch:
        out = candidate(q, k, v, block_q, block_k, causal)
    if watch.found:
        raise ContractError(f"{watch.found}; the exercise is the loop over tiles of {block_q} queries x {block_k} "
                            "keys with the online softmax, so no score tensor larger than one tile may be formed.")
    return out


def _tiled_cases():
    g = torch.Generator().manual_seed(76)

    def qkv(shape_q, n_k=None, scale=1.0, dtype=torch.float32):
        *lead, n_q, d = shape_q
        n_k = n_q if n_k is None else n_k
        return (scale * torch.randn(*lead, n_q, d, generator=g, dtype=dtype),
                torch.randn(*lead, n_k, d, generator=g, dtype=dtype),
                torch.randn(*lead, n_k, d, generator=g, dtype=dtype))

    return [
        Case("(2 heads, 37 positions, D = 16), tiles of 16 x 16, the last ones partial", (*qkv((2, 37, 16)), 16, 16)),
        Case("causal, (1, 2, 37, 16), tiles of 8 queries x 16 keys", (*qkv((1, 2, 37, 16)), 8, 16, True)),
        Case("causal, 23 positions, D = 8, tiles of 16 queries x 5 keys", (*qkv((23, 8)), 16, 5, True)),
        Case("5 queries, 50 keys, one query tile, key tiles of 7", (*qkv((5, 16), 50), 8, 7)),
        Case("causal, scores in the hundreds (q x 30), tiles of 4 x 4", (*qkv((2, 30, 16), scale=30.0), 4, 4, True),
             tolerances={torch.float32: (1e-4, 1e-4)}),  # scores of ~100 carry ~1e-5 rounding, exp amplifies it
        Case("causal, one tile larger than the sequence (64 x 64), 10 positions", (*qkv((10, 16)), 64, 64, True)),
        Case("causal, tiles of 1 x 1, 6 positions", (*qkv((6, 4)), 1, 1, True)),
        Case("float64, tiles of 3 queries x 7 keys, 20 positions", (*qkv((20, 8), dtype=torch.float64), 3, 7)),
    ]


EX_7_6 = Exercise(
    id="7.6", title="tiled attention with the online softmax", reference=tiled_attention, cases=_tiled_cases,
    call=_one_tile_at_a_time,
    tolerances={torch.float32: (1e-5, 1e-5)},  # sums over the keys in another order than the reference
    hints=("Take one query tile at a time. For it, keep per query row the running max m (start -inf), the running "
           "sum l of exp(s - m) (start 0) and an unnormalised output acc (start 0): the online softmax of 1.3, with "
           "the weighted sum of the values carried along.",
           "For each key tile: scores s = q_tile @ k_tile^T / sqrt(D), shape (..., Bq, Bk); m_new = max(m, "
           "s.amax(-1)); c = exp(m - m_new); l = l * c + exp(s - m_new).sum(-1); acc = acc * c + exp(s - m_new) @ "
           "v_tile; m = m_new. After the last key tile the query tile's output is acc / l.",
           "Causal: mask with the tiles' positions in the sequence, not inside the tile: key ks + j is in the future "
           "of query qs + i when ks + j > qs + i (set those scores to -inf). Key tiles that start after the query "
           "tile's last row can be skipped. Compute in torch.promote_types(q.dtype, torch.float32) and return in "
           "q.dtype."),
    mistakes=(
        Mistake("causal mask in tile coordinates", functools.partial(_tiled_variant, bug="tile mask"),
                "Mask with positions in the whole sequence: key ks + j is masked for query qs + i when "
                "ks + j > qs + i. A triangle built inside every tile masks keys the query may see (tiles left of the "
                "diagonal) and keeps future ones (tiles right of it)."),
        Mistake("output not rescaled", functools.partial(_tiled_variant, bug="output not rescaled"),
                "When a key tile raises a row's running max, everything accumulated so far was weighted by exp(s - "
                "m_old): multiply acc by exp(m_old - m_new) before adding exp(s - m_new) @ v, as for the sum l."),
        Mistake("sum not rescaled", functools.partial(_tiled_variant, bug="sum not rescaled"),
                "The running sum l was accumulated under the old max too: l = l * exp(m_old - m_new) + the new tile's "
                "sum."),
        Mistake("no 1/sqrt(D)", functools.partial(_tiled_variant, bug="unscaled"),
                "Scaled dot-product attention divides the scores by sqrt(D), D = q.shape[-1], before the softmax."),
    ),
)


EXERCISES = [EX_7_1, EX_7_2, EX_7_3, EX_7_4, EX_7_5, EX_7_6]
