"""Attempts at chapter 1: residual gradient, safe softmax, online softmax, the softmax kernel, SwiGLU, clipping."""
import torch
import torch.nn.functional as F

from course_utils.runtime import import_triton

triton, tl = import_triton()


# ------------------------------------------------------------------------------------------------ 1.1

def residual_column_vectors(grad_out, jacobian):
    """Slip: treats the gradients as column vectors, J @ g, so the product has the wrong order."""
    return grad_out + jacobian @ grad_out


def residual_einsum_wrong_output(grad_out, jacobian):
    """Slip: an einsum that keeps index i in the output, so it sums J's rows instead of contracting with g."""
    return grad_out + torch.einsum("bi,ij->bi", grad_out, jacobian)


def residual_in_place(grad_out, jacobian):
    """Slip: `grad_out += ...` changes the caller's gradient."""
    grad_out += grad_out @ jacobian
    return grad_out


def residual_identity_matrix(grad_out, jacobian):
    """Correct: g (I + J) with the identity written out."""
    return grad_out @ (torch.eye(jacobian.shape[0], dtype=jacobian.dtype) + jacobian)


# ------------------------------------------------------------------------------------------------ 1.2

def softmax_max_namedtuple(x):
    """Slip: x.max(dim=...) returns (values, indices), not a tensor."""
    e = torch.exp(x - x.max(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_no_keepdim(x):
    """Slip: the row max without keepdim=True does not broadcast against the rows."""
    e = torch.exp(x - x.amax(dim=-1))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_global_sum(x):
    """Slip: divides by the sum over the whole tensor, not each row's."""
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum()


def softmax_logsumexp(x):
    """Correct: exp(x - logsumexp(x)), as stable as subtracting the max."""
    return torch.exp(x - torch.logsumexp(x, dim=-1, keepdim=True))


# ------------------------------------------------------------------------------------------------ 1.3

def online_outputs_swapped(m, d, block):
    """Slip: returns (d_new, m_new), the two outputs in the wrong order."""
    m_new = torch.maximum(m, block.amax(dim=-1))
    m_safe = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
    d_new = d * torch.exp(m - m_safe) + torch.exp(block - m_safe[:, None]).sum(dim=-1)
    return d_new, m_new


def online_block_against_old_max(m, d, block):
    """Slip: the new block is exponentiated against the old max m, not against m_new."""
    m_new = torch.maximum(m, block.amax(dim=-1))
    m_safe = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
    return m_new, d * torch.exp(m - m_safe) + torch.exp(block - m[:, None]).sum(dim=-1)


def online_sum_over_rows(m, d, block):
    """Slip: sums the block's exponentials over dim 0 (the rows) instead of the last dimension."""
    m_new = torch.maximum(m, block.amax(dim=-1))
    m_safe = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
    return m_new, d * torch.exp(m - m_safe) + torch.exp(block - m_safe[:, None]).sum(dim=0)


def online_nan_to_num(m, d, block):
    """Correct: computes against m_new and turns the NaN of all -inf rows (0 * NaN) into 0 afterwards."""
    m_new = torch.maximum(m, block.amax(dim=-1))
    d_new = d * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=-1)
    return m_new, torch.nan_to_num(d_new, nan=0.0)


# ------------------------------------------------------------------------------------------------ 1.4

@triton.jit
def softmax_kernel_x_stride_for_y(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    """Slip: stores row i at y_ptr + i * x_row_stride (the input's stride for the output)."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=-float("inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * x_row_stride + cols, e / tl.sum(e, axis=0), mask=mask)


@triton.jit
def softmax_kernel_not_normalised(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    """Slip: stores exp(x - max) and forgets to divide by the row's sum."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=-float("inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * y_row_stride + cols, e, mask=mask)


# ------------------------------------------------------------------------------------------------ 1.5

def swiglu_silu_prime_misfactored(gate, up, grad_h):
    """Slip: silu'(g) = s + g s (1 - s) factored wrongly as s (1 + g) (1 - s)."""
    s = torch.sigmoid(gate)
    return grad_h * up * s * (1 + gate) * (1 - s), grad_h * gate * s


def swiglu_grad_up_without_grad_h(gate, up, grad_h):
    """Slip: grad_up forgets the upstream gradient grad_h."""
    s = torch.sigmoid(gate)
    return grad_h * up * s * (1 + gate * (1 - s)), gate * s


def swiglu_in_place(gate, up, grad_h):
    """Slip: grad_h.mul_(...) reuses the caller's tensor as scratch space."""
    s = torch.sigmoid(gate)
    grad_up = grad_h * gate * s
    return grad_h.mul_(up * s * (1 + gate * (1 - s))), grad_up


def swiglu_with_silu(gate, up, grad_h):
    """Correct: silu'(g) written as s + silu(g) (1 - s)."""
    s = torch.sigmoid(gate)
    silu = F.silu(gate)
    return grad_h * up * (s + silu * (1 - s)), grad_h * silu


# ------------------------------------------------------------------------------------------------ 1.6

def clip_norm_as_float(grads, max_norm):
    """Slip: returns the total norm as a Python float (.item()), not a 0-d tensor."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * scale for g in grads], total.item()


def clip_in_place(grads, max_norm):
    """Slip: scales the caller's gradients in place (g.mul_), as torch's clip_grad_norm_ does to .grad."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g.mul_(scale) for g in grads], total


def clip_norm_after_clipping(grads, max_norm):
    """Slip: returns the norm of the clipped gradients instead of the norm before clipping."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    clipped = [g * torch.clamp(max_norm / (total + 1e-6), max=1.0) for g in grads]
    return clipped, torch.sqrt(sum((g ** 2).sum() for g in clipped))


def clip_concatenated(grads, max_norm):
    """Correct: the global norm of all entries concatenated."""
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads], total


ATTEMPTS = [
    ("1.1", residual_column_vectors, "J @ g (column-vector order)", ("`return grad_out + jacobian @ grad_out`",)),
    ("1.1", residual_einsum_wrong_output, "einsum keeps i in the output", ()),
    ("1.1", residual_in_place, "grad_out modified in place", ("modified its input `grad_out`",)),
    ("1.1", residual_identity_matrix, None, ()),
    ("1.2", softmax_max_namedtuple, "x.max(dim) is a (values, indices) pair", ("torch.return_types.max",)),
    ("1.2", softmax_no_keepdim, "row max without keepdim", ("`e = torch.exp(x - x.amax(dim=-1))`",)),
    ("1.2", softmax_global_sum, "divided by the sum of the whole tensor",
     ("Each row (along the last dimension) is the answer times a factor of its own",)),
    ("1.2", softmax_logsumexp, None, ()),
    ("1.3", online_outputs_swapped, "returns (d_new, m_new)", ("the outputs in the wrong order?",)),
    ("1.3", online_block_against_old_max, "block exponentiated against the old max",
     ("infinite where the answer is finite", "Right: output[0].")),
    ("1.3", online_sum_over_rows, "block summed over rows", (".sum(dim=0)`",)),
    ("1.3", online_nan_to_num, None, ()),
    ("1.4", softmax_kernel_x_stride_for_y, "x_row_stride used for y",
     ("the row stride of x", "use y's own row stride for y")),
    ("1.4", softmax_kernel_not_normalised, "not divided by the row sum",
     ("Each row (along the last dimension) is the answer times a factor",)),
    ("1.5", swiglu_silu_prime_misfactored, "silu' factored wrongly", ()),
    ("1.5", swiglu_grad_up_without_grad_h, "grad_up without grad_h", ()),
    ("1.5", swiglu_in_place, "grad_h modified in place", ("modified its input `grad_h`",)),
    ("1.5", swiglu_with_silu, None, ()),
    ("1.6", clip_norm_as_float, "total norm returned as a float", ("output[1]: expected a torch.Tensor, got float",)),
    ("1.6", clip_in_place, "gradients scaled in place", ("modified its input `grads`",)),
    ("1.6", clip_norm_after_clipping, "norm after clipping returned", ("from *before* clipping",)),
    ("1.6", clip_concatenated, None, ()),
]
