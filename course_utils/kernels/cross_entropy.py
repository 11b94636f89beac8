"""Fused cross-entropy in Triton: loss and gradient of the logits in one pass family, with
``ignore_index`` and label smoothing, mean over the non-ignored rows, any vocabulary size.

Per row i (one program each), reading the V logits in blocks of BLOCK:
  pass 1: online log-sum-exp: running max m and sum d = sum_j exp(z_j - m) (as in softmax.py)
  pass 2: the gradient d loss_i / d z_j = softmax_j - (1 - eps) * [j == y] - eps / V, times
          1 / n_valid for the mean, written over the logits (in place) or into a new tensor, and
          the sum of (z_j - m) for label smoothing; then
          loss_i = lse - (1 - eps) z_y - (eps/V) sum_j z_j, written as
                   log d + (1 - eps)(m - z_y) - (eps/V) sum_j (z_j - m)
          so that nothing cancels when the logits are large and close together (m + log d would
          round away log d at |m| ~ 1e5 in float32).
Ignored rows (target == ignore_index) get loss 0 and gradient 0. With the gradient computed in the
forward pass, autograd keeps no (N, V) softmax for backward; written in place it also needs no new
(N, V) buffer at all (the logits are dead after the loss in an LM head).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import as_rows

BLOCK_V = 4096  # vocabulary entries per loop iteration: large vocabularies are read in chunks


@triton.jit
def _cross_entropy_kernel(logits_ptr, grad_ptr, target_ptr, loss_ptr, logits_row_stride, grad_row_stride,
                          n_vocab, ignore_index, label_smoothing, inv_n_valid, BLOCK: tl.constexpr):
    """Loss and gradient of one row (one program per row) of softmax cross-entropy with label smoothing.

    With z the row's V logits, target t and smoothing eps, m = max z and d = sum_j exp(z_j - m):
        loss = log d + (1 - eps) (m - z_t) - (eps / V) sum_j (z_j - m)   (= lse - (1-eps) z_t - eps mean z)
        grad_j = (softmax(z)_j - eps / V - (1 - eps) [j == t]) * inv_n_valid
    Pass 1 streams the row in chunks of BLOCK for m and d (the online softmax), pass 2 writes the gradient.
    A row whose target is ignore_index gets loss 0 and a zero gradient.
    logits_ptr, grad_ptr: (N, V) with row strides logits_row_stride, grad_row_stride (grad may alias logits);
    target_ptr: (N,) int; loss_ptr: (N,) float32; inv_n_valid: 1 / (number of rows not ignored).
    """
    row = tl.program_id(0).to(tl.int64)
    z_row = logits_ptr + row * logits_row_stride
    g_row = grad_ptr + row * grad_row_stride
    target = tl.load(target_ptr + row)
    offsets = tl.arange(0, BLOCK)
    if target == ignore_index:
        for start in range(0, n_vocab, BLOCK):
            tl.store(g_row + start + offsets, tl.zeros([BLOCK], dtype=tl.float32).to(grad_ptr.dtype.element_ty),
                     mask=start + offsets < n_vocab)
        tl.store(loss_ptr + row, 0.0)
    else:
        m = -float("inf")
        d = 0.0
        for start in range(0, n_vocab, BLOCK):
            mask = start + offsets < n_vocab
            z = tl.load(z_row + start + offsets, mask=mask, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(z, axis=0))
            m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a block of -inf logits: no NaN
            d = d * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe), axis=0)
            m = m_new
        log_d = tl.log(d)  # lse = m + log_d, never formed: m + log_d rounds when |m| >> log_d
        z_target = tl.load(z_row + target).to(tl.float32)  # before pass 2: the gradient may overwrite the logits
        shifted_sum = 0.0  # sum over the row of (z - m), for label smoothing
        for start in range(0, n_vocab, BLOCK):
            cols = start + offsets
            mask = cols < n_vocab
            z = tl.load(z_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
            shifted = z - m
            shifted_sum += tl.sum(tl.where(mask, shifted, 0.0), axis=0)
            grad = (tl.exp(shifted - log_d) - label_smoothing / n_vocab
                    - tl.where(cols == target, 1.0 - label_smoothing, 0.0))
            tl.store(g_row + cols, (grad * inv_n_valid).to(grad_ptr.dtype.element_ty), mask=mask)
        # lse - (1-eps) z_t - (eps/V) sum z  ==  log_d + (1-eps)(m - z_t) - (eps/V) sum (z - m);
        # without smoothing the last term is skipped (a -inf logit would make it 0 * -inf = NaN)
        smooth = tl.where(label_smoothing > 0, label_smoothing / n_vocab * shifted_sum, 0.0)
        tl.store(loss_ptr + row, log_d + (1.0 - label_smoothing) * (m - z_target) - smooth)


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                          label_smoothing: float = 0.0, inplace_grad: bool = False):
    """``(mean loss (0-d float32), grad (N, V) like logits)`` for logits (N, V) and targets (N,).

    With ``inplace_grad`` the gradient overwrites ``logits`` (which must then be contiguous rows).
    All rows ignored: the loss is NaN (0/0), as in F.cross_entropy, and the gradient 0.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}")
    z = as_rows(logits)
    if inplace_grad and z.data_ptr() != logits.data_ptr():
        raise ValueError("inplace_grad needs logits with unit column stride")
    grad = z if inplace_grad else torch.empty_like(z)
    target = target.contiguous()
    valid = target != ignore_index
    n_valid = int(valid.sum())
    bad = valid & ((target < 0) | (target >= z.shape[1]))
    if bool(bad.any()):
        raise ValueError(f"target values must be in [0, {z.shape[1]}) or ignore_index={ignore_index}")
    losses = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
    if z.numel():
        block = min(triton.next_power_of_2(z.shape[1]), BLOCK_V)
        _cross_entropy_kernel[(z.shape[0],)](z, grad, target, losses, z.stride(0), grad.stride(0), z.shape[1],
                                             ignore_index, float(label_smoothing), 1.0 / max(n_valid, 1),
                                             BLOCK=block, num_warps=8 if block >= 2048 else 4)
    loss = losses.sum() / n_valid if n_valid else torch.tensor(float("nan"), device=z.device)
    return loss, grad


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index=-100, label_smoothing=0.0, inplace_grad=False):
        loss, grad = cross_entropy_forward(logits.detach(), target, ignore_index, label_smoothing, inplace_grad)
        ctx.save_for_backward(grad)  # (N, V), already divided by the number of counted rows
        ctx.inplace_grad = inplace_grad
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        # Scale the buffer in place in both modes: it is the kernel's own (the logits' memory with inplace_grad,
        # else the one the forward allocated) and nothing else reads it, so no new (N, V) tensor is allocated here.
        # A second backward (retain_graph=True) finds the saved buffer modified and autograd raises, rather than
        # scaling it twice.
        return grad.mul_(grad_loss), None, None, None, None


def cross_entropy_triton(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                         label_smoothing: float = 0.0, inplace_grad: bool = False) -> torch.Tensor:
    """``F.cross_entropy(logits, target, ignore_index=..., label_smoothing=...)`` (mean over the counted
    rows) by the fused Triton kernel. ``inplace_grad=True`` overwrites the logits with their gradient:
    use it only when nothing else reads the logits afterwards."""
    return CrossEntropyFunction.apply(logits, target, ignore_index, label_smoothing, inplace_grad)
