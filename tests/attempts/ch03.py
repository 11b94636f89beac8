"""Attempts at chapter 3: LayerNorm, RMSNorm, the RMSNorm kernel, QK-norm, soft-capping, LayerNorm's backward."""
import math

import torch
import torch.nn.functional as F

from course_utils.runtime import import_triton

triton, tl = import_triton()


# ------------------------------------------------------------------------------------------------ 3.1

def layer_norm_no_affine(x, weight, bias, eps=1e-5):
    """Slip: normalises but forgets to apply weight and bias."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def layer_norm_no_keepdim(x, weight, bias, eps=1e-5):
    """Slip: the mean without keepdim=True does not broadcast against the rows."""
    mean = x.mean(dim=-1)
    var = ((x - mean) ** 2).mean(dim=-1)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_eps_ignored(x, weight, bias, eps=1e-5):
    """Slip: writes the default 1e-5 instead of using the eps argument."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def layer_norm_var_mean(x, weight, bias, eps=1e-5):
    """Correct: torch.var_mean with the biased variance (correction=0)."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


# ------------------------------------------------------------------------------------------------ 3.2

def rms_norm_no_weight(x, weight, eps=1e-6):
    """Slip: forgets the gain."""
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def rms_norm_mean_abs(x, weight, eps=1e-6):
    """Slip: divides by the mean absolute value instead of the root mean square."""
    return x / (x.abs().mean(dim=-1, keepdim=True) + eps) * weight


def rms_norm_whole_tensor(x, weight, eps=1e-6):
    """Slip: one mean of x² over the whole tensor (no dim), not one per row."""
    return x * torch.rsqrt((x * x).mean() + eps) * weight


def rms_norm_functional(x, weight, eps=1e-6):
    """Correct: PyTorch's F.rms_norm."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


# ------------------------------------------------------------------------------------------------ 3.3

@triton.jit
def rmsnorm_kernel_no_weight(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                             BLOCK: tl.constexpr):
    """Slip: stores x * rstd and forgets the weight."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * y_row_stride + cols, x * rstd, mask=mask)


@triton.jit
def rmsnorm_kernel_x_stride_for_y(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                                  BLOCK: tl.constexpr):
    """Slip: stores row i of y at y_ptr + i * x_row_stride."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * x_row_stride + cols, x * rstd * w, mask=mask)


# ------------------------------------------------------------------------------------------------ 3.4

def qk_norm_k_times_q(q, k, eps=1e-6):
    """Slip: k_hat @ q_hat^T, the score matrix the other way round (Tk, Tq)."""
    q_hat = q * torch.rsqrt((q * q).mean(dim=-1, keepdim=True) + eps)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-1, keepdim=True) + eps)
    return k_hat @ q_hat.transpose(-2, -1) / math.sqrt(q.shape[-1])


def qk_norm_divided_by_d(q, k, eps=1e-6):
    """Slip: divides the dot products by d instead of sqrt(d)."""
    q_hat = q * torch.rsqrt((q * q).mean(dim=-1, keepdim=True) + eps)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-1, keepdim=True) + eps)
    return q_hat @ k_hat.transpose(-2, -1) / q.shape[-1]


def qk_norm_eps_ignored(q, k, eps=1e-6):
    """Slip: hard-codes eps = 1e-6 instead of using the argument."""
    q_hat = q * torch.rsqrt((q * q).mean(dim=-1, keepdim=True) + 1e-6)
    k_hat = k * torch.rsqrt((k * k).mean(dim=-1, keepdim=True) + 1e-6)
    return q_hat @ k_hat.transpose(-2, -1) / math.sqrt(q.shape[-1])


def qk_norm_functional(q, k, eps=1e-6):
    """Correct: F.rms_norm for both, .mT for the transpose."""
    d = q.shape[-1]
    return F.rms_norm(q, (d,), eps=eps) @ F.rms_norm(k, (d,), eps=eps).mT / math.sqrt(d)


# ------------------------------------------------------------------------------------------------ 3.5

def soft_cap_not_rescaled(logits, cap):
    """Slip: tanh(logits / cap) without multiplying back by cap."""
    return torch.tanh(logits / cap)


def soft_cap_sigmoid(logits, cap):
    """Slip: squashes with 2 * sigmoid - 1 of logits / cap, which is tanh(logits / (2 cap))."""
    return cap * (2 * torch.sigmoid(logits / cap) - 1)


def soft_cap_in_place(logits, cap):
    """Slip: div_/tanh_/mul_ on the caller's logits."""
    return logits.div_(cap).tanh_().mul_(cap)


def soft_cap_tanh_method(logits, cap):
    """Correct: the same formula with tensor methods."""
    return (logits / cap).tanh() * cap


# ------------------------------------------------------------------------------------------------ 3.6

def lnb_unbiased_variance(x, gamma, dy, eps=1e-5):
    """Slip: Bessel's correction, the variance divided by N - 1; LayerNorm's is biased (divided by N)."""
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).sum(dim=-1, keepdim=True) / (n - 1) + eps)
    x_hat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    return dx, (dy * x_hat).reshape(-1, n).sum(dim=0), dy.reshape(-1, n).sum(dim=0)


def lnb_dbeta_from_g(x, gamma, dy, eps=1e-5):
    """Slip: dgamma and dbeta summed from g = dy * gamma, the gradient reaching x_hat, instead of from dy."""
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    x_hat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    return dx, (g * x_hat).reshape(-1, n).sum(dim=0), g.reshape(-1, n).sum(dim=0)


def lnb_sums_not_means(x, gamma, dy, eps=1e-5):
    """Slip: the Jacobian's 11^T / N and x_hat x_hat^T / N applied without the 1 / N (sums instead of means)."""
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    x_hat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.sum(dim=-1, keepdim=True) - x_hat * (g * x_hat).sum(dim=-1, keepdim=True))
    return dx, (dy * x_hat).reshape(-1, n).sum(dim=0), dy.reshape(-1, n).sum(dim=0)


def lnb_staged_chain_rule(x, gamma, dy, eps=1e-5):
    """Correct: the staged chain rule through var and mean (dvar, then dmean), as in cs231n."""
    n = x.shape[-1]
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(dim=-1, keepdim=True)
    inv = 1.0 / torch.sqrt(var + eps)
    x_hat = xc * inv
    dx_hat = dy * gamma
    dvar = (dx_hat * xc).sum(dim=-1, keepdim=True) * -0.5 * inv ** 3
    dmu = -(dx_hat * inv).sum(dim=-1, keepdim=True) - 2.0 * dvar * xc.mean(dim=-1, keepdim=True)
    dx = dx_hat * inv + dvar * 2.0 * xc / n + dmu / n
    flat = dy.reshape(-1, n)
    return dx, (flat * x_hat.reshape(-1, n)).sum(dim=0), flat.sum(dim=0)


ATTEMPTS = [
    ("3.1", layer_norm_no_affine, "weight and bias not applied", ("* weight + bias",)),
    ("3.1", layer_norm_no_keepdim, "mean without keepdim", ("`var = ((x - mean) ** 2).mean(dim=-1)`",)),
    ("3.1", layer_norm_eps_ignored, "eps argument ignored", ("with eps = 1e-2",)),
    ("3.1", layer_norm_var_mean, None, ()),
    ("3.2", rms_norm_no_weight, "weight not applied",
     ("Each column (the last index) is the answer times a factor of its own",)),
    ("3.2", rms_norm_mean_abs, "mean |x| instead of the RMS",
     ("Each row (along the last dimension) is the answer times a factor",)),
    ("3.2", rms_norm_whole_tensor, "mean over the whole tensor",
     ("Each row (along the last dimension) is the answer times a factor",)),
    ("3.2", rms_norm_functional, None, ()),
    ("3.3", rmsnorm_kernel_no_weight, "weight not applied",
     ("Each column (the last index) is the answer times a factor", "Right: rstd.")),
    ("3.3", rmsnorm_kernel_x_stride_for_y, "x_row_stride used for y",
     ("the row stride of x", "use y's own row stride for y")),
    ("3.4", qk_norm_k_times_q, "k @ q^T", ("the last two dimensions swapped",)),
    ("3.4", qk_norm_divided_by_d, "divided by d, not sqrt(d)", ("0.3536 (= √(1/8)) times the answer",)),
    ("3.4", qk_norm_eps_ignored, "eps argument ignored", ("with eps = 1e-2",)),
    ("3.4", qk_norm_functional, None, ()),
    ("3.5", soft_cap_not_rescaled, "not multiplied by cap", ("Every value is 0.03333 times the answer",)),
    ("3.5", soft_cap_sigmoid, "2 sigmoid - 1 instead of tanh", ()),
    ("3.5", soft_cap_in_place, "logits modified in place", ("modified its input `logits`",)),
    ("3.5", soft_cap_tanh_method, None, ()),
    ("3.6", lnb_unbiased_variance, "unbiased variance", ()),
    ("3.6", lnb_dbeta_from_g, "dgamma and dbeta from dy * gamma",
     ("dgamma: 16 of 16", "Also wrong: dbeta. Right: dx.")),
    ("3.6", lnb_sums_not_means, "sums instead of means in dx", ()),
    ("3.6", lnb_staged_chain_rule, None, ()),
]
