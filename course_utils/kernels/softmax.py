"""Row softmax in Triton: a one-pass *online* normaliser forward and its backward.

Forward, per row (one program each), reading the row in blocks of BLOCK columns:
  pass 1 (statistics, online): running max m and running sum d = sum(exp(x - m)); when a block
      raises the max, the old sum is rescaled by exp(m_old - m_new). One read of x.
  pass 2 (output): y = exp(x - m) / d. One more read of x, one write of y.
The "safe" softmax (max, then sum, then normalise) reads x three times; the online form reads it
twice, and a row that fits one block is read once from memory (the second read hits cache).

Backward: dx = y * (dy - sum(y * dy)), one pass for the dot product, one for dx.
Rows that are entirely -inf give NaN, exactly as ``torch.softmax`` does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import as_rows, block_and_warps

MAX_BLOCK = 4096  # columns per loop iteration; longer rows loop


@triton.jit
def _softmax_fwd_kernel(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    """y = softmax(x) along one row (one program per row): the online softmax in chunks of BLOCK columns.

    Pass 1 keeps the running max m and the running sum d = sum exp(x - m); a chunk with a larger max m'
    rescales d by exp(m - m'). Pass 2 writes y = exp(x - m) / d. So rows of any length work with a fixed
    BLOCK. Pass 1 exponentiates against 0 while the max is still -inf, so leading -inf chunks give no NaN; a row
    that is -inf throughout has no softmax and comes out NaN in pass 2 (exp(-inf - -inf)), as in torch.
    x_ptr, y_ptr: 2-D with row strides x_row_stride, y_row_stride; n_cols: row length.
    """
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * x_row_stride
    y_row = y_ptr + row.to(tl.int64) * y_row_stride
    offsets = tl.arange(0, BLOCK)
    m = -float("inf")  # running max
    d = 0.0  # running sum of exp(x - m)
    for start in range(0, n_cols, BLOCK):
        mask = start + offsets < n_cols
        x = tl.load(x_row + start + offsets, mask=mask, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # while every value so far is -inf, exponentiate against 0 instead (exp(-inf - -inf) is NaN)
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        d = d * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0)
        m = m_new
    for start in range(0, n_cols, BLOCK):
        mask = start + offsets < n_cols
        x = tl.load(x_row + start + offsets, mask=mask, other=-float("inf")).to(tl.float32)
        y = tl.exp(x - m) / d
        tl.store(y_row + start + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(y_ptr, dy_ptr, dx_ptr, y_row_stride, dy_row_stride, dx_row_stride, n_cols,
                        BLOCK: tl.constexpr):
    row = tl.program_id(0)
    y_row = y_ptr + row.to(tl.int64) * y_row_stride
    dy_row = dy_ptr + row.to(tl.int64) * dy_row_stride
    dx_row = dx_ptr + row.to(tl.int64) * dx_row_stride
    offsets = tl.arange(0, BLOCK)
    dot = 0.0  # sum(y * dy) over the row
    for start in range(0, n_cols, BLOCK):
        mask = start + offsets < n_cols
        y = tl.load(y_row + start + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + start + offsets, mask=mask, other=0.0).to(tl.float32)
        dot += tl.sum(y * dy, axis=0)
    for start in range(0, n_cols, BLOCK):
        mask = start + offsets < n_cols
        y = tl.load(y_row + start + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + start + offsets, mask=mask, other=0.0).to(tl.float32)
        dx = y * (dy - dot)
        tl.store(dx_row + start + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def softmax_forward(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of ``x`` (any shape, float16/bfloat16/float32)."""
    x2 = as_rows(x)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    if x2.numel():
        block, warps = block_and_warps(x2.shape[1], MAX_BLOCK)
        _softmax_fwd_kernel[(x2.shape[0],)](x2, y, x2.stride(0), y.stride(0), x2.shape[1],
                                            BLOCK=block, num_warps=warps)
    return y.view(x.shape)


def softmax_backward(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Gradient of softmax: ``dx = y * (dy - sum(y * dy, -1))``; same shapes as ``y``."""
    y2, dy2 = as_rows(y), as_rows(dy)
    dx = torch.empty(y2.shape, dtype=y.dtype, device=y.device)
    if y2.numel():
        block, warps = block_and_warps(y2.shape[1], MAX_BLOCK)
        _softmax_bwd_kernel[(y2.shape[0],)](y2, dy2, dx, y2.stride(0), dy2.stride(0), dx.stride(0),
                                            y2.shape[1], BLOCK=block, num_warps=warps)
    return dx.view(y.shape)


class SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = softmax_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return softmax_backward(y, dy)


def softmax_triton(x: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(x, dim=-1)`` computed by the Triton kernels, differentiable."""
    return SoftmaxFunction.apply(x)
