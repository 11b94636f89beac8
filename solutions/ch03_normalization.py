"""Notebook 03: normalisation."""
import math

import torch

from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.harness.launchers import launch_rmsnorm_fwd
from course_utils.normalization import rms_norm
from course_utils.runtime import import_triton

triton, tl = import_triton()

CHAPTER = "3. Normalization (정규화 기법)"

__all__ = ["layer_norm", "rms_norm", "rmsnorm_fwd_kernel", "soft_cap", "qk_norm_scores", "layer_norm_backward"]


def _norm_cases(with_bias: bool):
    g = torch.Generator().manual_seed(30)

    def params(n):
        w = torch.randn(n, generator=g)
        return (w, torch.randn(n, generator=g)) if with_bias else (w,)

    return [
        Case("random 4x16", (torch.randn(4, 16, generator=g), *params(16))),
        Case("3-D (2, 5, 7)", (torch.randn(2, 5, 7, generator=g), *params(7))),
        Case("offset and scaled rows (mean 100, std 10)", (100 + 10 * torch.randn(3, 32, generator=g), *params(32))),
        Case("a constant row (variance 0)", (torch.full((2, 8), 3.0), *params(8))),
        Case("one feature", (torch.randn(5, 1, generator=g), *params(1))),
        Case("single row", (torch.randn(1, 64, generator=g), *params(64))),
        Case("tiny values (~1e-3) with eps = 1e-2", (1e-3 * torch.randn(3, 16, generator=g), *params(16)),
             {"eps": 1e-2}),
        # float32 keeps ~7 digits: at mean 1000 two correct answers differ by ~1e-4, while E[x²] - E[x]²
        # (a difference of two numbers near 10^6) is off by ~0.3
        Case("rows of mean 1000, std 1 (float32)", (1000 + torch.randn(4, 64, generator=g), *params(64)),
             tolerances={torch.float32: (1e-3, 3e-3)}),
    ]


# ------------------------------------------------------------------------------ 3.1 LayerNorm

def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last dimension, as F.layer_norm(x, (N,), weight, bias, eps).

    x: (..., N) float tensor; weight, bias: (N,). For each position, with mean and *biased* variance
    (divide by N) over the N features: (x - mean) / sqrt(var + eps) * weight + bias.
    Stays accurate in float32 for rows whose mean is large against their spread (e.g. mean 1000, std 1).
    Returns a tensor shaped like x; inputs are not modified.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _ln_moment_variance(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = (x * x).mean(dim=-1, keepdim=True) - mean ** 2
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _ln_unbiased(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) * weight + bias


def _ln_eps_outside(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    std = ((x - mean) ** 2).mean(dim=-1, keepdim=True).sqrt()
    return (x - mean) / (std + eps) * weight + bias


def _ln_no_affine(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)


def _ln_wrong_axis(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=0, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


EX_3_1 = Exercise(
    id="3.1", title="LayerNorm from scratch", reference=layer_norm, cases=lambda: _norm_cases(True),
    mistakes=(
        Mistake("unbiased variance", _ln_unbiased,
                "LayerNorm uses the biased variance (divide by N, not N - 1): x.var(dim=-1, unbiased=False) "
                "or ((x - mean)**2).mean(dim=-1)."),
        Mistake("eps outside the root", _ln_eps_outside,
                "eps goes inside the square root: (x - mean) / sqrt(var + eps)."),
        Mistake("wrong axis", _ln_wrong_axis,
                "Normalise each position over its features (dim=-1); dim=0 is what BatchNorm does."),
        Mistake("variance as E[x²] - E[x]²", _ln_moment_variance,
                "E[x²] - E[x]² subtracts two numbers near mean² (10^6 here): float32 keeps 7 digits, so the "
                "variance of 1 comes out wrong. Subtract the mean first: ((x - mean)**2).mean(dim=-1)."),
        Mistake("weight and bias not applied", _ln_no_affine,
                "After normalising, apply the learned affine map: (x - mean) / sqrt(var + eps) * weight + bias."),
    ),
)


# -------------------------------------------------------------------------------- 3.2 RMSNorm
# The answer, rms_norm, lives in course_utils.normalization (norm_speed times it too); these are its mistakes.

def _rms_centred(x, weight, eps=1e-6):
    xc = x - x.mean(dim=-1, keepdim=True)
    return xc * torch.rsqrt((xc * xc).mean(dim=-1, keepdim=True) + eps) * weight


def _rms_eps_outside(x, weight, eps=1e-6):
    return x / ((x * x).mean(dim=-1, keepdim=True).sqrt() + eps) * weight


def _rms_l2(x, weight, eps=1e-6):
    return x / ((x * x).sum(dim=-1, keepdim=True) + eps).sqrt() * weight


EX_3_2 = Exercise(
    id="3.2", title="RMSNorm from scratch", reference=rms_norm, cases=lambda: _norm_cases(False),
    mistakes=(
        Mistake("centred", _rms_centred, "RMSNorm does not subtract the mean: x / sqrt(mean(x²) + eps)."),
        Mistake("eps outside the root", _rms_eps_outside,
                "eps goes inside the square root: x / sqrt(mean(x²) + eps)."),
        Mistake("L2 norm", _rms_l2,
                "That divides by the L2 norm (a sum); RMS uses the *mean* of x², so the output has RMS 1, "
                "not norm 1."),
    ),
)


# ------------------------------------------------------------------ 3.3 Triton RMSNorm forward

# = kernels/rmsnorm._rmsnorm_fwd_kernel without the int64 row offset and the output cast.
@triton.jit
def rmsnorm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                       BLOCK: tl.constexpr):
    """RMSNorm of one row per program; BLOCK >= n_cols, so one block holds the whole row.

    Program i reads x[i, :n_cols] (row start x_ptr + i * x_row_stride) and weight[:n_cols], stores
    rstd[i] = 1 / sqrt(mean(x^2) + eps) (mean over n_cols values, in float32) and
    y[i, :] = x * rstd * weight. Lanes at or beyond n_cols are neither read nor written.
    """
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * y_row_stride + cols, x * rstd * w, mask=mask)


@triton.jit
def _rmsnorm_variant(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK: tl.constexpr,
                     MEAN_OVER_BLOCK: tl.constexpr = False, EPS_OUTSIDE: tl.constexpr = False,
                     STORE_RMS: tl.constexpr = False, UNMASKED_STORE: tl.constexpr = False):
    """rmsnorm_fwd_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes below."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    mean_sq = tl.sum(x * x, axis=0) / (BLOCK if MEAN_OVER_BLOCK else n_cols)
    rstd = 1.0 / (tl.sqrt(mean_sq) + eps) if EPS_OUTSIDE else 1.0 / tl.sqrt(mean_sq + eps)
    if STORE_RMS:
        tl.store(rstd_ptr + row, 1.0 / rstd)
    else:
        tl.store(rstd_ptr + row, rstd)
    if UNMASKED_STORE:
        tl.store(y_ptr + row * y_row_stride + cols, x * rstd * w)
    else:
        tl.store(y_ptr + row * y_row_stride + cols, x * rstd * w, mask=mask)


@triton.jit
def _kernel_mean_over_block(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                            BLOCK: tl.constexpr):
    _rmsnorm_variant(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK=BLOCK,
                     MEAN_OVER_BLOCK=True)


@triton.jit
def _kernel_eps_outside(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                        BLOCK: tl.constexpr):
    _rmsnorm_variant(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK=BLOCK,
                     EPS_OUTSIDE=True)


@triton.jit
def _kernel_stores_rms(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK: tl.constexpr):
    _rmsnorm_variant(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK=BLOCK,
                     STORE_RMS=True)


@triton.jit
def _kernel_unmasked_store(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                           BLOCK: tl.constexpr):
    _rmsnorm_variant(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK=BLOCK,
                     UNMASKED_STORE=True)


def _kernel_cases():
    g = torch.Generator().manual_seed(33)
    return [
        Case("5x123 (row not a power of two)", (torch.randn(5, 123, generator=g), torch.randn(123, generator=g), 1e-6)),
        Case("4x64", (torch.randn(4, 64, generator=g), torch.randn(64, generator=g), 1e-6)),
        Case("tiny values, eps 1e-2", (1e-3 * torch.randn(3, 40, generator=g), torch.ones(40), 1e-2)),
        Case("1x1", (torch.randn(1, 1, generator=g), torch.randn(1, generator=g), 1e-6)),
        Case("strided rows", (torch.randn(8, 30, generator=g)[::2], torch.randn(30, generator=g), 1e-6)),
    ]


EX_3_3 = Exercise(
    id="3.3", title="Triton RMSNorm forward kernel", reference=rmsnorm_fwd_kernel, cases=_kernel_cases,
    call=launch_rmsnorm_fwd,
    mistakes=(
        Mistake("mean over the padded block", _kernel_mean_over_block,
                "Divide the sum of squares by n_cols, not BLOCK: the padded lanes are not part of the row."),
        Mistake("eps outside the root", _kernel_eps_outside,
                "rstd = 1 / sqrt(mean(x²) + eps): eps inside the root."),
        Mistake("rstd holds the RMS", _kernel_stores_rms,
                "rstd is the reciprocal: 1 / sqrt(mean(x²) + eps), the factor y = x * rstd * weight uses "
                "(the backward pass reads it back)."),
        Mistake("store without a mask", _kernel_unmasked_store,
                "Lanes at or beyond n_cols would write past the end of the row: store y with mask=cols < n_cols."),
    ),
    output_names=("y", "rstd"),
)


# ----------------------------------------------------------------------------------- 3.4 QK-norm

def qk_norm_scores(q, k, eps=1e-6):
    """Attention logits with QK-norm: RMS-normalise each query and key vector, then scale dot products.

    q: (..., Tq, d), k: (..., Tk, d). q_hat = q / sqrt(mean(q^2, over d) + eps), likewise k_hat
    (no learnable gain here). Returns q_hat @ k_hat^T / sqrt(d), shape (..., Tq, Tk): every logit then
    lies in [-sqrt(d), sqrt(d)] whatever the scale of q and k.
    """
    d = q.shape[-1]
    q_hat = q * torch.rsqrt((q * q).mean(dim=-1, keepdim=True) + eps)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-1, keepdim=True) + eps)
    return q_hat @ k_hat.transpose(-2, -1) / math.sqrt(d)


def _qk_cases():
    g = torch.Generator().manual_seed(35)
    return [
        Case("(5, 8) x (7, 8)", (torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g))),
        Case("heads (2, 3, 4, 16)", (torch.randn(2, 3, 4, 16, generator=g), torch.randn(2, 3, 6, 16, generator=g))),
        Case("huge activations (x1000)", (1000 * torch.randn(4, 32, generator=g),
                                          1000 * torch.randn(4, 32, generator=g))),
        Case("d = 1", (torch.randn(3, 1, generator=g), torch.randn(2, 1, generator=g))),
        Case("tiny vectors (~1e-3) with eps = 1e-2", (1e-3 * torch.randn(4, 8, generator=g),
                                                      1e-3 * torch.randn(5, 8, generator=g)),
             {"eps": 1e-2}),
    ]


def _qk_cosine(q, k, eps=1e-6):
    q_hat = q / (q.norm(dim=-1, keepdim=True) + eps)
    k_hat = k / (k.norm(dim=-1, keepdim=True) + eps)
    return q_hat @ k_hat.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _qk_wrong_axis(q, k, eps=1e-6):
    q_hat = q * torch.rsqrt((q * q).mean(dim=-2, keepdim=True) + eps)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-2, keepdim=True) + eps)
    return q_hat @ k_hat.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _qk_no_scale(q, k, eps=1e-6):
    q_hat = q * torch.rsqrt((q * q).mean(dim=-1, keepdim=True) + eps)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-1, keepdim=True) + eps)
    return q_hat @ k_hat.transpose(-2, -1)


EX_3_4 = Exercise(
    id="3.4", title="QK-norm attention logits", reference=qk_norm_scores, cases=_qk_cases,
    tolerances={torch.float32: (1e-5, 1e-5)},  # rsqrt vs sqrt-then-divide round differently
    mistakes=(
        Mistake("cosine (L2) normalisation", _qk_cosine,
                "This exercise's contract is RMS normalisation of each head's vectors (divide by sqrt(mean(q²)), "
                "as Gemma 3 and Qwen 3 do per head). L2 normalisation (Henry et al.) needs a learned scale in "
                "place of 1/sqrt(d); "
                "without it the logits are cosines / sqrt(d), d times too small."),
        Mistake("wrong axis", _qk_wrong_axis,
                "Normalise each query/key vector over its d features (dim=-1), not over positions."),
        Mistake("no 1/sqrt(d)", _qk_no_scale, "Keep the 1/sqrt(d) scaling of dot-product attention."),
    ),
)


# ------------------------------------------------------------------------ 3.5 logit soft-capping

def soft_cap(logits, cap):
    """Gemma-2's logit soft-capping: cap * tanh(logits / cap).

    logits: any float tensor; cap > 0. About the identity for |logits| << cap, and never beyond
    ±cap (strictly inside in exact arithmetic; tanh rounds to ±1 in float32 for huge inputs).
    Returns a new tensor shaped like logits.
    """
    return cap * torch.tanh(logits / cap)


def _cap_cases():
    g = torch.Generator().manual_seed(34)
    return [
        Case("large logits, cap 30", (100 * torch.randn(4, 10, generator=g), 30.0)),
        Case("small logits, cap 30", (torch.randn(4, 10, generator=g), 30.0)),
        Case("cap 1", (3 * torch.randn(16, generator=g), 1.0)),
        Case("huge and infinite logits, cap 50", (torch.tensor([1e30, -1e30, math.inf, -math.inf, 0.0]), 50.0)),
    ]


EX_3_5 = Exercise(
    id="3.5", title="logit soft-capping", reference=soft_cap, cases=_cap_cases,
    mistakes=(
        Mistake("no division by cap", lambda logits, cap: cap * torch.tanh(logits),
                "Divide before the tanh: cap * tanh(logits / cap) has slope 1 at 0, so small logits pass "
                "unchanged."),
        Mistake("hard clamp", lambda logits, cap: logits.clamp(-cap, cap),
                "A clamp has zero gradient beyond the cap; soft-capping uses tanh, smooth everywhere."),
        Mistake("identity below the cap", lambda logits, cap: torch.where(logits.abs() < cap, logits,
                                                                          cap * torch.tanh(logits / cap)),
                "cap * tanh(z / cap) bends every logit, not only those beyond the cap (30 -> 22.8 with cap 30): "
                "apply it everywhere, which also keeps the function smooth at ±cap."),
    ),
)


# ------------------------------------------------------------------- 3.6 LayerNorm backward by hand

def layer_norm_backward(x, gamma, dy, eps=1e-5):
    """LayerNorm's backward pass by hand: the vector-Jacobian products of y = gamma * x_hat + beta.

    x: (..., N) float tensor, the forward's input; gamma: (N,); dy: shaped like x, the gradient of the loss
    with respect to y; eps as in the forward. Per position, x_hat = (x - mean) / sqrt(var + eps) with the
    mean and the *biased* variance over its N features (exercise 3.1's LayerNorm). Returns (dx, dgamma, dbeta):
    dx shaped like x, the gradient with respect to x (the mean and the variance depend on x too); dgamma and
    dbeta shaped (N,), summed over every position (all leading dimensions). Beta enters none of them. No
    autograd, and never the N x N Jacobian: per-row means and sums only. Same dtype as x; a constant row
    (variance 0) is fine, eps keeps the root positive. Inputs are not modified.
    """
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)  # 1 / sqrt(var + eps)
    x_hat = (x - mean) * rstd
    g = dy * gamma  # the gradient reaching x_hat
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    return dx, (dy * x_hat).reshape(-1, n).sum(dim=0), dy.reshape(-1, n).sum(dim=0)


def _ln_backward_cases():
    g = torch.Generator().manual_seed(36)

    def args(x):
        n = x.shape[-1]
        return x, torch.randn(n, generator=g, dtype=x.dtype), torch.randn(x.shape, generator=g, dtype=x.dtype)

    constant_row = torch.randn(3, 8, generator=g)
    constant_row[1] = 3.0
    return [
        Case("random 4x16", args(torch.randn(4, 16, generator=g))),
        Case("3-D (2, 5, 7): dgamma and dbeta sum over both leading dimensions",
             args(torch.randn(2, 5, 7, generator=g))),
        Case("rows of mean 100, std 10", args(100 + 10 * torch.randn(3, 32, generator=g))),
        Case("a constant row (variance 0) among random ones, eps = 1e-2", args(constant_row), {"eps": 1e-2}),
        Case("one feature (N = 1), eps = 1e-2", args(torch.randn(5, 1, generator=g)), {"eps": 1e-2}),
        Case("a single 1-D row of 50 features, float64, eps = 1e-3",
             args(3 * torch.randn(50, generator=g, dtype=torch.float64) + 1), {"eps": 1e-3}),
    ]


def _lnb_parts(x, gamma, dy, eps):
    """x_hat, rstd = 1 / sqrt(var + eps) and g = dy * gamma, for the mistakes below."""
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    return (x - mean) * rstd, rstd, dy * gamma


def _lnb_sums(x_hat, dy):
    n = dy.shape[-1]
    return (dy * x_hat).reshape(-1, n).sum(dim=0), dy.reshape(-1, n).sum(dim=0)


def _lnb_no_mean_term(x, gamma, dy, eps=1e-5):
    x_hat, rstd, g = _lnb_parts(x, gamma, dy, eps)
    return (rstd * (g - x_hat * (g * x_hat).mean(dim=-1, keepdim=True)), *_lnb_sums(x_hat, dy))


def _lnb_std_held_constant(x, gamma, dy, eps=1e-5):
    x_hat, rstd, g = _lnb_parts(x, gamma, dy, eps)
    return (rstd * (g - g.mean(dim=-1, keepdim=True)), *_lnb_sums(x_hat, dy))


def _lnb_gamma_forgotten(x, gamma, dy, eps=1e-5):
    x_hat, rstd, _ = _lnb_parts(x, gamma, dy, eps)
    dx = rstd * (dy - dy.mean(dim=-1, keepdim=True) - x_hat * (dy * x_hat).mean(dim=-1, keepdim=True))
    return (dx, *_lnb_sums(x_hat, dy))


def _lnb_times_std(x, gamma, dy, eps=1e-5):
    x_hat, rstd, g = _lnb_parts(x, gamma, dy, eps)
    dx = (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True)) / rstd
    return (dx, *_lnb_sums(x_hat, dy))


def _lnb_dgamma_from_x(x, gamma, dy, eps=1e-5):
    x_hat, rstd, g = _lnb_parts(x, gamma, dy, eps)
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    return (dx, *_lnb_sums(x, dy))


EX_3_6 = Exercise(
    id="3.6", title="LayerNorm backward by hand", reference=layer_norm_backward, cases=_ln_backward_cases,
    tolerances={torch.float32: (1e-5, 1e-5)},  # the same sums in another order (autograd's differ by ~1e-6)
    output_names=("dx", "dgamma", "dbeta"),
    hints=("Name the forward's pieces: mean, rstd = 1 / sqrt(var + eps), x_hat = (x - mean) * rstd, "
           "y = gamma * x_hat + beta. The last line alone gives dgamma and dbeta: sums over every position "
           "(flatten to (-1, N), sum over the rows).",
           "For dx, start from g = dy * gamma, the gradient reaching x_hat. x_hat depends on x three ways: "
           "directly, through the mean and through rstd; each gives one term.",
           "Chapter 1's Jacobian of x_hat is rstd * (I - 11^T / N - x_hat x_hat^T / N): multiply g by it. "
           "1^T g / N is the row mean of g, x_hat^T g / N the row mean of g * x_hat.",
           "dx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))."),
    mistakes=(
        Mistake("mean term dropped", _lnb_no_mean_term,
                "The mean depends on every x_j too: differentiating x - mean adds -mean(g) to every feature "
                "(the term RMSNorm's backward does not have)."),
        Mistake("std held constant", _lnb_std_held_constant,
                "The std depends on x as well: differentiating 1 / sqrt(var + eps) adds "
                "-x_hat * mean(g * x_hat) inside the bracket."),
        Mistake("gamma forgotten", _lnb_gamma_forgotten,
                "y = gamma * x_hat + beta, so the gradient that reaches x_hat is g = dy * gamma, not dy."),
        Mistake("multiplied by the std", _lnb_times_std,
                "x_hat = (x - mean) / sqrt(var + eps): the chain rule brings the reciprocal of the std, "
                "rstd = 1 / sqrt(var + eps), not the std itself."),
        Mistake("dgamma from x, not x_hat", _lnb_dgamma_from_x,
                "gamma multiplies the normalised x_hat: dgamma = sum over positions of dy * x_hat, not dy * x."),
    ),
)


EXERCISES = [EX_3_1, EX_3_2, EX_3_3, EX_3_4, EX_3_5, EX_3_6]
