"""A fused AdamW step: one pass over p, g, m, v per parameter tensor.

PyTorch's single-tensor AdamW runs about ten elementwise kernels per parameter (decay, two moment
updates, sqrt, division, ...), each reading and writing whole tensors. Fused, every element of
p, g, m, v is read once and p, m, v written once: 4 reads + 3 writes = 28 bytes per float32
parameter per step, the minimum for this update. (``torch.optim.AdamW(fused=True)`` on a GPU does
the same in CUDA; the benchmark compares the two.)

Bias corrections are computed on the host and passed in (``1 - beta**step``): Triton's interpreter
has no ``pow`` for scalars, and it is one number per step anyway.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import require_triton_kernel

BLOCK = 1024


@triton.jit
def adamw_kernel(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                 bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    """One AdamW step, in place, on elements [pid * BLOCK, (pid + 1) * BLOCK) of flat float32 p, g, m, v.

    bias_correction1 = 1 - beta1**step and bias_correction2 = 1 - beta2**step (computed on the host).
    Same rule as torch.optim.AdamW: p *= 1 - lr * weight_decay; m = beta1 m + (1 - beta1) g;
    v = beta2 v + (1 - beta2) g^2; p -= lr / bias_correction1 * m / (sqrt(v / bias_correction2) + eps)
    (the decay uses p before the Adam update). Lanes at or beyond n_elements must not be touched.
    """
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    p = tl.load(p_ptr + offsets, mask=mask)
    g = tl.load(g_ptr + offsets, mask=mask)
    m = tl.load(m_ptr + offsets, mask=mask)
    v = tl.load(v_ptr + offsets, mask=mask)
    p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = tl.sqrt(v) / tl.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    tl.store(p_ptr + offsets, p, mask=mask)
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(v_ptr + offsets, v, mask=mask)


def adamw_step_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, *,
                lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.01, kernel=adamw_kernel) -> None:
    """Update p, m, v in place with one AdamW step (float32, contiguous, same shape, same device).

    ``kernel`` may be a learner's kernel with :func:`adamw_kernel`'s signature.
    """
    require_triton_kernel(kernel)
    for name, t in (("p", p), ("g", g), ("m", m), ("v", v)):
        if t.dtype != torch.float32 or not t.is_contiguous() or t.shape != p.shape:
            raise ValueError(f"{name} must be a contiguous float32 tensor of shape {tuple(p.shape)}, "
                             f"got {t.dtype} {tuple(t.shape)} (contiguous: {t.is_contiguous()})")
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    n = p.numel()
    if n:
        kernel[(triton.cdiv(n, BLOCK),)](p, g, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                         1 - beta1 ** step, 1 - beta2 ** step, BLOCK=BLOCK)


class TritonAdamW(torch.optim.Optimizer):
    """AdamW with the fused Triton step, for float32 parameters; same defaults as torch.optim.AdamW."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                adamw_step_(p, p.grad.contiguous(), state["exp_avg"], state["exp_avg_sq"], state["step"],
                            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                            weight_decay=group["weight_decay"])
        return loss
