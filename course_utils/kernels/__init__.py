"""Triton kernels, one module per kernel family (softmax, swiglu, ...).

Each module follows the same triple: ``_x_fwd_kernel`` / ``_x_bwd_kernel`` (``@triton.jit``) ->
launcher ``x_forward(...)`` (flattens, picks BLOCK and warps, allocates, launches) ->
``XFunction(torch.autograd.Function)`` plus a user-facing ``x_triton(...)``.
Importing a kernel module needs Triton; check ``course_utils.runtime.triton_status()`` first.
"""
import course_utils  # noqa: F401  (switches on the interpreter before triton is imported)
