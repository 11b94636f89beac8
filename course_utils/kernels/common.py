"""Launcher helpers shared by the row-wise kernels (softmax, layernorm, rmsnorm)."""
from __future__ import annotations

import math

import torch
import triton


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """View ``t`` as (rows, n_cols) with unit column stride, copying only when it must.
    A 0-d tensor is one row of one column; an empty last dimension gives zero columns."""
    if t.dim() == 0:
        return t.reshape(1, 1)
    t2 = t.reshape(math.prod(t.shape[:-1]), t.shape[-1]) if t.dim() != 2 else t
    return t2 if t2.stride(-1) == 1 or t2.numel() == 0 else t2.contiguous()


def block_and_warps(n_cols: int, max_block: int) -> tuple[int, int]:
    """BLOCK = next power of two >= n_cols (at most ``max_block``) and a warp count that fits it."""
    block = min(triton.next_power_of_2(max(n_cols, 1)), max_block)
    return block, (4 if block <= 1024 else 8 if block <= 4096 else 16)


def reduction_programs(n_rows: int) -> int:
    """How many programs share the rows in a backward pass that also reduces dweight over rows.

    Each program keeps a partial dweight row; the partials are summed afterwards. On a GPU, a few
    programs per SM; in the interpreter (which runs programs one after another), few programs.
    """
    if torch.cuda.is_available():
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        return max(1, min(n_rows, 4 * sms))
    return max(1, min(n_rows, 8))


def is_triton_kernel(obj) -> bool:
    """True for a ``@triton.jit`` function, compiled or interpreted."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    return isinstance(obj, (JITFunction, InterpretedFunction))


def require_triton_kernel(obj) -> None:
    """Raise a clear TypeError when a learner passes something other than a ``@triton.jit`` kernel."""
    if not is_triton_kernel(obj):
        raise TypeError(f"expected a @triton.jit kernel, got {type(obj).__name__} "
                        "(is the @triton.jit decorator missing?)")


def check_row_params(x: torch.Tensor, max_cols: int, **params: torch.Tensor) -> None:
    """Each named parameter must be a vector of x's last-dimension size; rows at most ``max_cols``."""
    for name, t in params.items():
        if t.dim() != 1 or t.shape[0] != x.shape[-1]:
            raise ValueError(f"{name} must have shape ({x.shape[-1]},), got {tuple(t.shape)}")
    if x.shape[-1] > max_cols:
        raise ValueError(f"rows longer than {max_cols} are not supported by this one-block kernel")
