"""RMSNorm in Triton: ``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dimension.

Forward, one program per row, the whole row in one block (rows up to MAX_COLS):
  reads x (N) and weight (N), writes y (N) and rstd = 1/sqrt(mean(x^2) + eps) (1 value per row).
Backward, with x_hat = x * rstd and g = dy * weight:
  dx = rstd * (g - x_hat * mean(g * x_hat))         (per row)
  dweight = sum over rows of dy * x_hat              (a reduction over rows)
Each backward program walks a strided set of rows and keeps a partial dweight row in registers;
the partials (programs × N, float32) are summed with torch afterwards. Reads x, dy, weight and
rstd, writes dx and the partials.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import as_rows, block_and_warps, check_row_params, reduction_programs

MAX_COLS = 65536


@triton.jit
def _rmsnorm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, x_row_stride, y_row_stride, n_cols, eps,
                        BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)  # padded lanes are 0: no effect
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * y_row_stride + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rmsnorm_bwd_kernel(x_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dw_partial_ptr,
                        x_row_stride, dy_row_stride, dx_row_stride, n_rows, n_cols,
                        BLOCK: tl.constexpr):
    """RMSNorm backward over rows pid, pid + n_programs, ... (a persistent grid): dx per row, and this
    program's partial sum of dw.

    With x_hat = x * rstd (rstd = 1 / sqrt(mean(x^2) + eps), saved by the forward) and g = dy * w:
        dx = rstd * (g - x_hat * mean(g * x_hat))      dw = sum over rows of dy * x_hat
    dw_partial_ptr: (n_programs, n_cols) float32, summed over programs afterwards by torch (dw_partial.sum(0)).
    x, dy, dx: 2-D with row strides of their own; w: (n_cols,); BLOCK >= n_cols (one block holds a whole row).
    """
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(pid, n_rows, n_programs):
        row64 = tl.cast(row, tl.int64)
        x = tl.load(x_ptr + row64 * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row64 * dy_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row64)
        x_hat = x * rstd
        g = dy * w
        dx = rstd * (g - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))
        tl.store(dx_ptr + row64 * dx_row_stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(dw_partial_ptr + pid * n_cols + cols, dw, mask=mask)


def rmsnorm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6):
    """``(y, rstd)``: y like x, rstd (rows,) float32, normalising over the last dimension."""
    check_row_params(x, MAX_COLS, weight=weight)
    x2 = as_rows(x)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)
    if x2.numel():
        block, warps = block_and_warps(x2.shape[1], MAX_COLS)
        _rmsnorm_fwd_kernel[(x2.shape[0],)](x2, weight, y, rstd, x2.stride(0), y.stride(0), x2.shape[1], eps,
                                            BLOCK=block, num_warps=warps)
    return y.view(x.shape), rstd


def rmsnorm_backward(x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor):
    """``(dx, dweight)`` for upstream gradient ``dy`` (shaped like x)."""
    x2, dy2 = as_rows(x), as_rows(dy)
    n_rows, n_cols = x2.shape
    dx = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    programs = reduction_programs(n_rows)
    dw_partial = torch.zeros(programs, n_cols, dtype=torch.float32, device=x.device)
    if x2.numel():
        block, warps = block_and_warps(n_cols, MAX_COLS)
        _rmsnorm_bwd_kernel[(programs,)](x2, weight, dy2, rstd, dx, dw_partial, x2.stride(0), dy2.stride(0),
                                         dx.stride(0), n_rows, n_cols, BLOCK=block, num_warps=warps)
    return dx.view(x.shape), dw_partial.sum(0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        y, rstd = rmsnorm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        dx, dweight = rmsnorm_backward(x, weight, rstd, dy)
        return dx, dweight, None


def rmsnorm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``F.rms_norm(x, (N,), weight, eps)`` computed by the Triton kernels, differentiable in x and weight."""
    return RMSNormFunction.apply(x, weight, eps)
