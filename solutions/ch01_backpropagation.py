"""Notebook 01: backpropagation, gradient flow and numerical stability."""
import math

import torch

from course_utils.harness.exercises import Case, Exercise, Mistake
from course_utils.harness.launchers import launch_row_kernel
from course_utils.runtime import import_triton
from course_utils.stability import naive_softmax, online_softmax_update, safe_softmax
from course_utils.training import clip_grad_norm

triton, tl = import_triton()

CHAPTER = "1. Backpropagation (역전파)"

__all__ = ["residual_input_grad", "safe_softmax", "online_softmax_update", "softmax_row_kernel",
           "swiglu_grads", "clip_grad_norm"]


# ----------------------------------------------------------------------------- 1.1 residual gradient

def residual_input_grad(grad_out, jacobian):
    """Gradient of the loss with respect to the input of a residual block x_out = x_in + F(x_in).

    grad_out: (B, d), dL/dx_out for each of B examples (row vectors).
    jacobian: (d, d), jacobian[i, j] = dF_i / dx_in_j at the current input.
    Returns (B, d): dL/dx_in = dL/dx_out (I + dF/dx_in). Inputs are not modified.
    """
    return grad_out + grad_out @ jacobian


def _residual_cases():
    g = torch.Generator().manual_seed(1)
    return [
        Case("B=4, d=3", (torch.randn(4, 3, generator=g), torch.randn(3, 3, generator=g))),
        Case("B=1, d=1", (torch.randn(1, 1, generator=g), torch.randn(1, 1, generator=g))),
        Case("B=2, d=7, non-symmetric F", (torch.randn(2, 7, generator=g), torch.randn(7, 7, generator=g).triu())),
        Case("F with zero Jacobian", (torch.randn(3, 5, generator=g), torch.zeros(5, 5))),
    ]


EX_1_1 = Exercise(
    id="1.1", title="gradient through a residual connection", reference=residual_input_grad,
    cases=_residual_cases,
    mistakes=(
        Mistake("no identity", lambda g, J: g @ J,
                "The skip path x_in -> x_out contributes the identity: dL/dx_in = g (I + J) = g + g @ J."),
        Mistake("transposed Jacobian", lambda g, J: g + g @ J.T,
                "For row vectors g, the chain rule is g @ J with J[i, j] = dF_i/dx_j (not J.T)."),
        Mistake("Jacobian only, transposed", lambda g, J: g @ J.T,
                "Two things: the skip path adds g itself, and the product is g @ J, not g @ J.T."),
    ),
)


# ------------------------------------------------------------------------------- 1.2 safe softmax

def _softmax_cases():
    g = torch.Generator().manual_seed(2)
    masked = torch.randn(4, 6, generator=g)
    masked[:, ::2] = -math.inf
    two_scales = torch.stack([torch.randn(8, generator=g), 1000 + torch.randn(8, generator=g)])
    return [
        Case("random 4x10", (torch.randn(4, 10, generator=g),)),
        Case("3-D input 2x3x5", (torch.randn(2, 3, 5, generator=g),)),
        Case("one column", (torch.randn(6, 1, generator=g),)),
        Case("very negative logits (~-1e4)", (-1e4 + torch.randn(3, 7, generator=g),)),
        Case("huge logits (~1e4)", (1e4 * torch.randn(3, 7, generator=g),)),
        Case("-inf (masked) entries", (masked,)),
        Case("rows on different scales (0 and 1000)", (two_scales,)),
    ]


def _softmax_global_max(x):
    return torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(dim=-1, keepdim=True)


def _softmax_minus_mean(x):
    e = torch.exp(x - x.mean(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


EX_1_2 = Exercise(
    id="1.2", title="safe softmax", reference=safe_softmax, cases=_softmax_cases,
    # exp(x - logsumexp(x)) is just as stable, but at |x| ~ 1e4 float32 rounding of the
    # logsumexp shifts the result by ~4e-4 relative: accept that, reject NaN/0 and wrong axes
    tolerances={torch.float32: (1e-3, 1e-6)},
    mistakes=(
        Mistake("naive softmax", naive_softmax,
                "exp of a large logit overflows to inf (inf/inf = NaN), of a very negative one underflows "
                "to 0 (0/0). Subtract each row's max before exp."),
        Mistake("global max", _softmax_global_max,
                "Subtract the max of each row (dim=-1, keepdim=True), not of the whole tensor: a row far "
                "below the global max underflows to 0/0."),
        Mistake("mean instead of max", _softmax_minus_mean,
                "Subtracting the mean still lets exp overflow; only the max makes every exponent <= 0."),
        Mistake("wrong dimension", lambda x: torch.softmax(x, dim=0),
                "Normalise over the last dimension (dim=-1): each row must sum to 1."),
    ),
)


# --------------------------------------------------------------------- 1.3 online softmax update

def _online_cases():
    g = torch.Generator().manual_seed(3)
    inf = math.inf
    start = (torch.full((3,), -inf), torch.zeros(3))
    block = torch.randn(3, 4, generator=g)
    m1, d1 = online_softmax_update(*start, block)
    masked = torch.tensor([[-inf, -inf], [0.5, -inf], [-inf, -inf]])
    return [
        Case("first block (m=-inf, d=0)", (*start, block)),
        Case("new block raises the max", (m1, d1, block + 3.0)),
        Case("new block below the max", (m1, d1, block - 3.0)),
        Case("block of width 1", (m1, d1, torch.randn(3, 1, generator=g))),
        Case("all -inf so far, then all -inf again", (*start, masked)),
        Case("running max already large", (m1 + 50.0, d1, block + 49.0)),
    ]


def _online_no_rescale(m, d, block):
    m_new = torch.maximum(m, block.amax(dim=-1))
    return m_new, d + torch.exp(block - m_new[:, None]).sum(dim=-1)


def _online_rescale_inverted(m, d, block):
    m_new = torch.maximum(m, block.amax(dim=-1))
    return m_new, d * torch.exp(m_new - m) + torch.exp(block - m_new[:, None]).sum(dim=-1)


def _online_no_inf_guard(m, d, block):
    m_new = torch.maximum(m, block.amax(dim=-1))
    return m_new, d * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=-1)


EX_1_3 = Exercise(
    id="1.3", title="online softmax update", reference=online_softmax_update, cases=_online_cases,
    mistakes=(
        Mistake("no -inf guard", _online_no_inf_guard,
                "While a row has seen only -inf, m_new is -inf and exp(-inf - (-inf)) is NaN; subtract 0 "
                "instead of m_new for those rows (torch.where)."),
        Mistake("no rescale", _online_no_rescale,
                "When the max grows, the old sum was computed against the old max: multiply d by "
                "exp(m - m_new) before adding the new block."),
        Mistake("inverted rescale", _online_rescale_inverted,
                "The factor is exp(m_old - m_new) (<= 1), not exp(m_new - m_old)."),
    ),
)


# ------------------------------------------------------------------ 1.4 Triton row softmax kernel

# = kernels/softmax._softmax_fwd_kernel with the whole row in one block (max, then sum, instead of the online
# loop over blocks), and without the int64 row offset, the float32 arithmetic and the output cast.
@triton.jit
def softmax_row_kernel(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    """Safe softmax of one row per program; BLOCK >= n_cols, so one block holds the whole row.

    Program i reads x[i, :n_cols] (row start x_ptr + i * x_row_stride, columns contiguous) and
    writes softmax of it to y[i, :n_cols]. Lanes at or beyond n_cols must not be read or written,
    and must not change the max or the sum.
    """
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=-float("inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * y_row_stride + cols, e / tl.sum(e, axis=0), mask=mask)


@triton.jit
def _softmax_variant(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr,
                     PAD_WITH_ZERO: tl.constexpr = False, NO_MAX: tl.constexpr = False,
                     UNMASKED_LOAD: tl.constexpr = False, UNMASKED_STORE: tl.constexpr = False):
    """softmax_row_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes below."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    if UNMASKED_LOAD:
        x = tl.load(x_ptr + row * x_row_stride + cols)
    elif PAD_WITH_ZERO:
        x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0)
    else:
        x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=-float("inf"))
    if NO_MAX:
        e = tl.exp(x)
    else:
        e = tl.exp(x - tl.max(x, axis=0))
    if UNMASKED_STORE:
        tl.store(y_ptr + row * y_row_stride + cols, e / tl.sum(e, axis=0))
    else:
        tl.store(y_ptr + row * y_row_stride + cols, e / tl.sum(e, axis=0), mask=mask)


@triton.jit
def _kernel_pads_with_zero(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    _softmax_variant(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK=BLOCK, PAD_WITH_ZERO=True)


@triton.jit
def _kernel_no_max(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    _softmax_variant(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK=BLOCK, NO_MAX=True)


@triton.jit
def _kernel_unmasked_load(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    _softmax_variant(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK=BLOCK, UNMASKED_LOAD=True)


@triton.jit
def _kernel_unmasked_store(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    _softmax_variant(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK=BLOCK, UNMASKED_STORE=True)


def _kernel_cases():
    g = torch.Generator().manual_seed(4)
    return [
        Case("5x123 (row not a power of two)", (torch.randn(5, 123, generator=g),)),
        Case("1x1", (torch.randn(1, 1, generator=g),)),
        Case("4x64 (exact power of two)", (torch.randn(4, 64, generator=g),)),
        Case("all-negative rows, 3x50", (-5.0 - torch.rand(3, 50, generator=g),)),
        Case("huge logits, 3x37", (300.0 * torch.randn(3, 37, generator=g),)),
        Case("strided rows (every other row of 10x40)", (torch.randn(10, 40, generator=g)[::2],)),
    ]


EX_1_4 = Exercise(
    id="1.4", title="Triton row-softmax kernel", reference=softmax_row_kernel, cases=_kernel_cases,
    call=launch_row_kernel,
    mistakes=(
        Mistake("padding loaded as 0", _kernel_pads_with_zero,
                "Masked lanes load `other=...`: with 0.0 they join the max and add exp(0 - max) to the sum. "
                "Load them as -inf so they vanish."),
        Mistake("no max subtraction", _kernel_no_max,
                "Subtract the row max (tl.max(x, axis=0)) before tl.exp, or large logits overflow."),
        Mistake("load without a mask", _kernel_unmasked_load,
                "Lanes at or beyond n_cols lie outside the row: load with mask=cols < n_cols and "
                "other=-float('inf'), so they neither win the max nor add to the sum."),
        Mistake("store without a mask", _kernel_unmasked_store,
                "Lanes at or beyond n_cols would write past the end of the row (into the next row, or out of "
                "the tensor): store with mask=cols < n_cols."),
    ),
)


# --------------------------------------------------------------------------- 1.5 SwiGLU gradients

def swiglu_grads(gate, up, grad_h):
    """Gradients of h = silu(gate) * up with respect to gate and up, by hand (no autograd).

    gate, up, grad_h: float tensors of one shape; grad_h is dL/dh.
    Returns (grad_gate, grad_up), each the shape of gate, where silu(g) = g * sigmoid(g) (its derivative is part
    of the exercise). Inputs are not modified.
    """
    s = torch.sigmoid(gate)
    grad_gate = grad_h * up * s * (1 + gate * (1 - s))
    grad_up = grad_h * gate * s
    return grad_gate, grad_up


def _swiglu_cases():
    g = torch.Generator().manual_seed(5)
    return [
        Case("random 4x6", tuple(torch.randn(4, 6, generator=g) for _ in range(3))),
        Case("single element", tuple(torch.randn(1, generator=g) for _ in range(3))),
        Case("3-D 2x3x5", tuple(torch.randn(2, 3, 5, generator=g) for _ in range(3))),
        Case("large activations (x30)", tuple(30 * torch.randn(8, generator=g) for _ in range(3))),
        Case("gate = 0", (torch.zeros(5), torch.randn(5, generator=g), torch.ones(5))),
    ]


def _swiglu_no_other_branch(gate, up, grad_h):
    s = torch.sigmoid(gate)
    return grad_h * s * (1 + gate * (1 - s)), grad_h * gate * s


def _swiglu_sigmoid_derivative(gate, up, grad_h):
    s = torch.sigmoid(gate)
    return grad_h * up * s, grad_h * gate * s


def _swiglu_swapped(gate, up, grad_h):
    s = torch.sigmoid(gate)
    return grad_h * gate * s, grad_h * up * s * (1 + gate * (1 - s))


EX_1_5 = Exercise(
    id="1.5", title="SwiGLU gradients by hand", reference=swiglu_grads, cases=_swiglu_cases,
    tolerances={torch.float32: (1e-5, 1e-5)},  # silu' written two ways rounds differently at |x|~30
    mistakes=(
        Mistake("other branch missing", _swiglu_no_other_branch,
                "h = silu(gate) * up, so dh/dgate = up * silu'(gate): the gradient of one branch is "
                "scaled by the other branch's activation."),
        Mistake("sigmoid as silu'", _swiglu_sigmoid_derivative,
                "silu'(g) is not sigmoid(g): by the product rule it is s + g * s * (1 - s), s = sigmoid(g)."),
        Mistake("gradients swapped", _swiglu_swapped,
                "Return (grad_gate, grad_up) in that order."),
    ),
)


# ----------------------------------------------------------------------- 1.6 global-norm clipping

def _clip_cases():
    g = torch.Generator().manual_seed(6)
    several = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g), torch.randn(2, 2, 2, generator=g)]
    return [
        Case("several tensors, norm above max", (several, 1.0)),
        Case("norm below max (no change)", ([0.01 * t for t in several], 1.0)),
        Case("one tensor", ([torch.randn(7, generator=g)], 0.5)),
        Case("all-zero gradients", ([torch.zeros(3), torch.zeros(2, 2)], 1.0)),
        Case("one exploding tensor", ([torch.randn(4, generator=g), 1e4 * torch.randn(4, generator=g)], 5.0)),
    ]


def _clip_per_tensor(grads, max_norm):
    out = [g * torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0) for g in grads]
    return out, torch.sqrt(sum((g ** 2).sum() for g in grads))


def _clip_without_clamp(grads, max_norm):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * (max_norm / (total + 1e-6)) for g in grads], total


def _clip_sum_of_norms(grads, max_norm):
    total = sum(g.norm() for g in grads)
    return [g * torch.clamp(max_norm / (total + 1e-6), max=1.0) for g in grads], total


def _clip_norm_after_clipping(grads, max_norm):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    clipped = [g * torch.clamp(max_norm / (total + 1e-6), max=1.0) for g in grads]
    return clipped, torch.sqrt(sum((g ** 2).sum() for g in clipped))


EX_1_6 = Exercise(
    id="1.6", title="gradient clipping by global norm", reference=clip_grad_norm, cases=_clip_cases,
    mistakes=(
        Mistake("per-tensor clipping", _clip_per_tensor,
                "Clip by the *global* norm sqrt(sum of all squares) with one scale for every tensor; "
                "per-tensor clipping changes the gradient's direction."),
        Mistake("always rescaled", _clip_without_clamp,
                "Only shrink: the scale is min(1, max_norm / (norm + 1e-6)); small gradients stay as they are."),
        Mistake("sum of norms", _clip_sum_of_norms,
                "The global norm is sqrt(sum of squared entries), not the sum of the tensors' norms."),
        Mistake("norm after clipping", _clip_norm_after_clipping,
                "Return the total norm from *before* clipping (as torch.nn.utils.clip_grad_norm_ does): it says how "
                "large the gradients were; after clipping it is at most max_norm."),
    ),
)


EXERCISES = [EX_1_1, EX_1_2, EX_1_3, EX_1_4, EX_1_5, EX_1_6]
