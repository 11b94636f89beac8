"""Launchers that run a learner's Triton kernel for an exercise's checker, one per Triton exercise.

Each takes the learner's kernel and the case's tensors, puts inputs and outputs in guarded buffers
(:mod:`course_utils.harness.guards`: NaN or a winning value around the inputs, a sentinel around the outputs),
launches, and turns a read or write out of bounds into a :class:`ContractError` message instead of a crash.
The production kernels these exercises rebuild live in :mod:`course_utils.kernels`; this module imports them
(for their block limits) only when a launch runs, so the solutions import it where Triton is absent.
"""
from __future__ import annotations

import math

import torch

from course_utils.harness.errors import ContractError
from course_utils.harness.guards import SENTINEL, check_untouched, check_written, guarded, watch_accesses
from course_utils.runtime import device


def _triton_for(kernel):
    """Triton itself, after checking that ``kernel`` is a Triton kernel (a launcher runs only where Triton does)."""
    import triton

    from course_utils.kernels.common import require_triton_kernel

    require_triton_kernel(kernel)
    return triton


def launch_row_kernel(kernel, x: torch.Tensor) -> torch.Tensor:
    """Launch a learner's single-block row-softmax kernel on 2-D ``x`` (one program per row).

    The kernel's signature is ``(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK)`` with
    ``BLOCK = next_power_of_2(n_cols)``, so one block covers a whole row. x and y lie in guarded buffers
    (:mod:`course_utils.harness.guards`) with row strides of their own: a missing mask is a message, not a crash.
    """
    triton = _triton_for(kernel)
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor (rows, n_cols), got shape {tuple(x.shape)}")
    n_rows, n_cols = x.shape
    block = triton.next_power_of_2(n_cols)
    margin = block + 16
    # NaN around the input spoils any unmasked read; x and y get different row strides (a kernel that uses
    # x_row_stride for y is caught too)
    xg = guarded(x, float("nan"), margin=margin, row_pad=block - n_cols + 3, device=device())
    yg = guarded((n_rows, n_cols), SENTINEL, margin=margin, row_pad=block - n_cols + 5, dtype=x.dtype, device=device())
    with watch_accesses(loads={"x": xg}, stores={"y": yg}) as accesses:
        kernel[(n_rows,)](xg.view, yg.view, xg.view.stride(0), yg.view.stride(0), n_cols, BLOCK=block)
    accesses.check()
    check_untouched(yg, "y", "Mask the store: tl.store(..., mask=cols < n_cols), and use y_row_stride for y.")
    check_written(yg, "y", "Every y[row, :n_cols] must be stored (one program per row, BLOCK >= n_cols lanes).")
    return yg.view.contiguous().cpu()


def launch_rmsnorm_fwd(kernel, x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6):
    """Launch a learner's forward kernel with ``_rmsnorm_fwd_kernel``'s signature on 2-D ``x``; returns
    (y, rstd) on the CPU. The tensors lie in guarded buffers (:mod:`course_utils.harness.guards`): inputs surrounded
    by NaN, outputs by a sentinel that is checked afterwards."""
    triton = _triton_for(kernel)
    from course_utils.kernels.common import check_row_params
    from course_utils.kernels.rmsnorm import MAX_COLS

    check_row_params(x, MAX_COLS, weight=weight)
    shape, x = x.shape, x.reshape(-1, x.shape[-1])  # (rows, n_cols); a 2-D x keeps its row stride
    n_rows, n_cols = x.shape
    block = triton.next_power_of_2(n_cols)
    margin = block + 16
    xg = guarded(x, float("nan"), margin=margin, row_pad=block - n_cols + 3, device=device())
    wg = guarded(weight, float("nan"), margin=margin, device=device())
    yg = guarded((n_rows, n_cols), SENTINEL, margin=margin, row_pad=block - n_cols + 5, dtype=x.dtype, device=device())
    rg = guarded((n_rows,), SENTINEL, margin=margin, dtype=torch.float32, device=device())
    with watch_accesses(loads={"x": xg, "weight": wg}, stores={"y": yg, "rstd": rg}) as accesses:
        kernel[(n_rows,)](xg.view, wg.view, yg.view, rg.view, xg.view.stride(0), yg.view.stride(0), n_cols, eps,
                          BLOCK=block)
    accesses.check()
    check_untouched(yg, "y", "Mask the store: tl.store(..., mask=cols < n_cols), and use y_row_stride for y.")
    check_untouched(rg, "rstd", "Store one value per row: tl.store(rstd_ptr + row, rstd).")
    check_written(yg, "y", "Every y[row, :n_cols] must be stored.")
    check_written(rg, "rstd", "Every row stores its rstd = 1 / sqrt(mean(x²) + eps).")
    return yg.view.contiguous().cpu().view(shape), rg.view.cpu().clone()


def launch_ce_row_kernel(kernel, logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Launch a learner's single-block loss kernel: one program per row, BLOCK >= V; returns (N,) losses
    on the CPU. Signature: ``(logits_ptr, target_ptr, loss_ptr, row_stride, n_vocab, ignore_index, BLOCK)``.

    The logits lie in a NaN-guarded buffer whose margin also covers a read of ``row[ignore_index]``, the
    losses in a sentinel-filled one that is checked afterwards (:mod:`course_utils.harness.guards`).
    """
    triton = _triton_for(kernel)
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}")
    n_rows, n_vocab = logits.shape
    block = triton.next_power_of_2(n_vocab)
    margin = max(block, abs(ignore_index)) + 16
    zg = guarded(logits, float("nan"), margin=margin, row_pad=block - n_vocab + 3, device=device())
    target = target.to(zg.view.device).contiguous()
    lg = guarded((n_rows,), SENTINEL, margin=margin, dtype=torch.float32, device=device())
    with watch_accesses(loads={"logits": zg, "target": target}, stores={"loss": lg}) as accesses:
        kernel[(n_rows,)](zg.view, target, lg.view, zg.view.stride(0), n_vocab, ignore_index, BLOCK=block)
    accesses.check()
    check_untouched(lg, "loss", "Store one value per row: tl.store(loss_ptr + row, ...).")
    check_written(lg, "loss", "Every row stores its loss (0.0 for an ignored row).")
    return lg.view.cpu().clone()


def launch_adamw_kernel(kernel, p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Run a learner's kernel (``adamw_kernel``'s signature) on flat copies of p, g, m, v in guarded buffers
    (:mod:`course_utils.harness.guards`); returns the new (p, m, v) on the CPU, shaped like p.

    Each buffer has a margin of more than a block on both sides, filled with a value of its own (so an
    update computed from the margin differs from it): a store past n_elements is reported, never a crash.
    """
    triton = _triton_for(kernel)
    from course_utils.kernels.adamw import BLOCK

    n = p.numel()
    margin = BLOCK + 16
    fills = {"p": 7.0, "g": -3.0, "m": 0.5, "v": 2.0}
    bufs = {name: guarded(t.detach().reshape(-1).float(), fills[name], margin=margin, device=device())
            for name, t in zip(fills, (p, g, m, v))}
    with watch_accesses(loads=bufs, stores={name: bufs[name] for name in ("p", "m", "v")}) as accesses:
        kernel[(triton.cdiv(n, BLOCK),)](*(b.view for b in bufs.values()), n, lr, beta1, beta2, eps, weight_decay,
                                         1 - beta1 ** step, 1 - beta2 ** step, BLOCK=BLOCK)
    accesses.check()
    for name in ("p", "m", "v", "g"):
        check_untouched(bufs[name], name, "Lanes at or beyond n_elements must not be touched: "
                                          "store with mask=offsets < n_elements.")
    return tuple(bufs[name].view.view(p.shape).cpu().clone() for name in ("p", "m", "v"))


def launch_gumbel_kernel(kernel, logits: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """Launch a learner's one-block kernel with :func:`solutions.ch06_token_prediction.gumbel_max_kernel`'s
    signature on logits (rows, V); returns (rows,) int64 on the CPU.

    The rows lie in a guarded buffer (:mod:`course_utils.harness.guards`) whose padding holds +inf, a value that
    wins every argmax: a lane at or beyond V that is not excluded is drawn, and reported as a token that
    does not exist.
    """
    triton = _triton_for(kernel)
    from course_utils.kernels.gumbel_sampling import MAX_BLOCK

    if logits.dim() != 2 or logits.shape[1] > MAX_BLOCK:
        raise ValueError(f"expected logits (rows, V) with V <= {MAX_BLOCK}, got {tuple(logits.shape)}")
    n_rows, n_cols = logits.shape
    block = triton.next_power_of_2(n_cols)
    margin = block + 16
    zg = guarded(logits.float(), float("inf"), margin=margin, row_pad=block - n_cols + 3, device=device())
    og = guarded((n_rows,), -1, margin=margin, dtype=torch.int64, device=device())
    with watch_accesses(loads={"logits": zg}, stores={"out": og}) as accesses:
        kernel[(n_rows,)](zg.view, og.view, zg.view.stride(0), n_cols, 1.0 / temperature, seed, BLOCK=block)
    accesses.check()
    check_untouched(og, "out", "Store one token id per row: tl.store(out_ptr + row, ...).")
    check_written(og, "out", "Every row stores the argmax of its scores.")
    ids = og.view.cpu().clone()
    bad = ((ids < 0) | (ids >= n_cols)).nonzero()
    if len(bad):
        row = int(bad[0, 0])
        raise ContractError(f"row {row} drew token id {int(ids[row])}, but the vocabulary has {n_cols} tokens (ids 0 "
                            f"to {n_cols - 1}): a lane at or beyond n_cols won the argmax.")
    return ids


ATTENTION_BLOCK = 16  # BLOCK_M = BLOCK_N for exercise 7.5: the smallest tile tl.dot takes


def launch_attention_kernel(kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            scale: float | None = None) -> torch.Tensor:
    """Launch a learner's non-causal kernel with the signature of the exercise's ``attention_kernel`` on
    one head in tiles of ``ATTENTION_BLOCK``: q, k, v (N, D) with D a power of two >= 16, scores scaled by
    ``scale`` (default 1/sqrt(D)); returns o (N, D) on the CPU.

    q, k, v and o lie in guarded buffers (:mod:`course_utils.harness.guards`) with a margin of a whole block of rows
    on both sides: NaN around the inputs, so a load without a mask spoils the output, and a sentinel around
    o, so a row stored at or beyond n_ctx is reported instead of overwriting memory.
    """
    triton = _triton_for(kernel)
    if q.dim() != 2 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"expected q, k, v of one (N, D) shape, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n, d = q.shape
    block = ATTENTION_BLOCK
    margin = (block + 1) * d  # a whole block of rows: the farthest an unmasked tile reaches past the end
    qg, kg, vg = (guarded(t.float().contiguous().view(-1), float("nan"), margin=margin, device=device())
                  for t in (q, k, v))
    og = guarded((n * d,), SENTINEL, margin=margin, dtype=torch.float32, device=device())
    with watch_accesses(loads={"q": qg, "k": kg, "v": vg}, stores={"o": og}) as accesses:
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        kernel[(triton.cdiv(n, block),)](qg.view, kg.view, vg.view, og.view, n, scale,
                                         BLOCK_M=block, BLOCK_N=block, HEAD_DIM=d)
    accesses.check()
    check_untouched(og, "o", "Rows at or beyond n_ctx must not be stored: mask the store with offs_m[:, None] < n_ctx.")
    check_written(og, "o", "Every row of o below n_ctx must be stored.")
    return og.view.view(n, d).cpu().clone()
