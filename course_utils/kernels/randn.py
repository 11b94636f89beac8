"""Seeded normal initialisation on the device with Triton's counter-based random numbers.

``tl.randn(seed, offsets)`` is a pure function of (seed, offset): Philox turns the pair into random
bits, and a Box-Muller step into a normal sample. So element i of the result is the same whatever
BLOCK size, grid or GPU computed it, and a weight can be re-created from (seed, shape, std) alone,
without storing it or replaying a sequential generator. torch's generator, by contrast, hands out
numbers in sequence, so the values depend on everything drawn before.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _normal_init_kernel(out_ptr, n, seed, std, BLOCK: tl.constexpr):
    """out[i] = std * z_i for i in this program's block of BLOCK elements, z_i ~ N(0, 1) from ``tl.randn``.

    z_i is a function of (seed, i) alone (Philox counter-based), so the same weight comes out whatever
    BLOCK or grid computed it.
    out_ptr: flat output of n elements (any float dtype); n: element count; seed: int; std: float.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    z = tl.randn(seed, offsets)  # N(0, 1), a function of (seed, offset) only
    tl.store(out_ptr + offsets, (z * std).to(out_ptr.dtype.element_ty), mask=mask)


def normal_init_triton(shape: tuple, std: float, seed: int, *, dtype=torch.float32, device=None,
                       block: int = 1024) -> torch.Tensor:
    """A new tensor of ``shape`` with N(0, std^2) entries, determined by ``seed`` alone
    (on the course's device, the GPU when there is one, unless ``device`` says otherwise)."""
    from course_utils.runtime import device as default_device

    out = torch.empty(shape, dtype=dtype, device=device or default_device())
    n = out.numel()
    if n:
        _normal_init_kernel[(triton.cdiv(n, block),)](out, n, seed, std, BLOCK=block)
    return out
