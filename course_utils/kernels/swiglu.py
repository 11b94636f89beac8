"""SwiGLU in Triton: ``h = silu(gate) * up``, elementwise, fused forward and backward.

Forward reads gate and up and writes h (3 tensors of N elements). Backward recomputes silu(gate)
instead of storing it, and uses
    d gate = dh * up * silu'(gate),   silu'(g) = s + g * s * (1 - s),  s = sigmoid(g)
    d up   = dh * silu(gate)
so each branch's gradient is scaled by the *other* branch's activation: a large ``up`` makes a
large gradient for ``gate`` and vice versa. Reads gate, up, dh and writes d gate, d up (5 × N).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _swiglu_fwd_kernel(gate_ptr, up_ptr, h_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    gate = tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    h = gate * tl.sigmoid(gate) * up
    tl.store(h_ptr + offsets, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(gate_ptr, up_ptr, dh_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
    """SwiGLU backward on BLOCK elements: h = silu(gate) * up, so with s = sigmoid(gate)
        d gate = dh * up * (s + gate * s * (1 - s))      d up = dh * silu(gate)
    silu(gate) is recomputed, not stored. gate, up, dh, dgate, dup: flat, n elements each.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    gate = tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dh = tl.load(dh_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(gate)
    silu = gate * s
    dgate = dh * up * (s + silu * (1.0 - s))
    dup = dh * silu
    tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)
    tl.store(dup_ptr + offsets, dup.to(dup_ptr.dtype.element_ty), mask=mask)


def _check_pair(gate: torch.Tensor, up: torch.Tensor) -> None:
    if gate.shape != up.shape or gate.dtype != up.dtype or gate.device != up.device:
        raise ValueError(f"gate and up must match: {tuple(gate.shape)} {gate.dtype} vs "
                         f"{tuple(up.shape)} {up.dtype}")


def swiglu_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` for two tensors of the same shape and dtype."""
    _check_pair(gate, up)
    gate_c, up_c = gate.contiguous(), up.contiguous()
    h = torch.empty_like(gate_c)
    n = h.numel()
    if n:
        _swiglu_fwd_kernel[(triton.cdiv(n, BLOCK),)](gate_c, up_c, h, n, BLOCK=BLOCK)
    return h


def swiglu_backward(gate: torch.Tensor, up: torch.Tensor, dh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d gate, d up)`` for upstream gradient ``dh``; all four tensors share one shape."""
    gate_c, up_c, dh_c = gate.contiguous(), up.contiguous(), dh.contiguous()
    dgate, dup = torch.empty_like(gate_c), torch.empty_like(up_c)
    n = gate_c.numel()
    if n:
        _swiglu_bwd_kernel[(triton.cdiv(n, BLOCK),)](gate_c, up_c, dh_c, dgate, dup, n, BLOCK=BLOCK)
    return dgate, dup


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return swiglu_forward(gate, up)

    @staticmethod
    def backward(ctx, dh: torch.Tensor):
        gate, up = ctx.saved_tensors
        return swiglu_backward(gate, up, dh)


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up`` computed by the Triton kernels, differentiable in both inputs."""
    return SwiGLUFunction.apply(gate, up)
