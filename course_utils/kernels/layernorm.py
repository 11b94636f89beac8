"""LayerNorm in Triton: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension
(var is the biased variance, as in ``F.layer_norm``).

Forward, one program per row, the whole row in one block: reads x, weight, bias (3 × N), writes y
(N) and mean, rstd (2 values per row). Backward, with x_hat = (x - mean) * rstd and g = dy * weight:
  dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))      (per row)
  dweight = sum over rows of dy * x_hat,   dbias = sum over rows of dy
The row reductions go through per-program partial rows summed with torch afterwards, as in rmsnorm.py.
Compared with RMSNorm the forward has one more reduction (the mean) and one more vector to read (bias).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import as_rows, block_and_warps, check_row_params, reduction_programs

MAX_COLS = 65536


@triton.jit
def _layernorm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, x_row_stride, y_row_stride,
                          n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    centred = tl.where(mask, x - mean, 0.0)  # padded lanes must not add (0 - mean)^2
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * y_row_stride + cols, (centred * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layernorm_bwd_kernel(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_partial_ptr, db_partial_ptr,
                          x_row_stride, dy_row_stride, dx_row_stride, n_rows, n_cols, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(pid, n_rows, n_programs):
        row64 = tl.cast(row, tl.int64)
        x = tl.load(x_ptr + row64 * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row64 * dy_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + row64)
        rstd = tl.load(rstd_ptr + row64)
        x_hat = tl.where(mask, (x - mean) * rstd, 0.0)
        g = dy * w
        dx = rstd * (g - tl.sum(g, axis=0) / n_cols - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))
        tl.store(dx_ptr + row64 * dx_row_stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        db += dy
    tl.store(dw_partial_ptr + pid * n_cols + cols, dw, mask=mask)
    tl.store(db_partial_ptr + pid * n_cols + cols, db, mask=mask)


def layernorm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5):
    """``(y, mean, rstd)``: y like x; mean and rstd (rows,) float32."""
    check_row_params(x, MAX_COLS, weight=weight, bias=bias)
    x2 = as_rows(x)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    mean = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    if x2.numel():
        block, warps = block_and_warps(x2.shape[1], MAX_COLS)
        _layernorm_fwd_kernel[(x2.shape[0],)](x2, weight, bias, y, mean, rstd, x2.stride(0), y.stride(0),
                                              x2.shape[1], eps, BLOCK=block, num_warps=warps)
    return y.view(x.shape), mean, rstd


def layernorm_backward(x, weight, mean, rstd, dy):
    """``(dx, dweight, dbias)`` for upstream gradient ``dy`` (shaped like x)."""
    x2, dy2 = as_rows(x), as_rows(dy)
    n_rows, n_cols = x2.shape
    dx = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    programs = reduction_programs(n_rows)
    dw_partial = torch.zeros(programs, n_cols, dtype=torch.float32, device=x.device)
    db_partial = torch.zeros_like(dw_partial)
    if x2.numel():
        block, warps = block_and_warps(n_cols, MAX_COLS)
        _layernorm_bwd_kernel[(programs,)](x2, weight, dy2, mean, rstd, dx, dw_partial, db_partial,
                                           x2.stride(0), dy2.stride(0), dx.stride(0), n_rows, n_cols,
                                           BLOCK=block, num_warps=warps)
    return dx.view(x.shape), dw_partial.sum(0).to(weight.dtype), db_partial.sum(0).to(weight.dtype)


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float = 1e-5):
        y, mean, rstd = layernorm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias = layernorm_backward(x, weight, mean, rstd, dy)
        return dx, dweight, dbias, None


def layernorm_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.layer_norm(x, (N,), weight, bias, eps)`` by the Triton kernels, differentiable in x, weight, bias."""
    return LayerNormFunction.apply(x, weight, bias, eps)
